package storage

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Fold returns the comparison form of s: NFC, then Unicode simple case
// folding (to lower case, through upper case so that variants such as the
// Kelvin sign and long s meet their letters). Addresses, mailbox names and
// search text are stored folded beside their display form, and the database
// compares the folded bytes (DESIGN.md §Text, case and time).
func Fold(s string) string {
	s = norm.NFC.String(s)
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		b.WriteRune(unicode.ToLower(unicode.ToUpper(r)))
	}
	return norm.NFC.String(b.String())
}

// DomainASCII returns the lower-case A-label form of a domain name, the form
// in which domains are stored and compared.
func DomainASCII(domain string) (string, error) {
	d := strings.TrimSuffix(domain, ".")
	if d == "" {
		return "", fmt.Errorf("empty domain: %w", ErrInvalid)
	}
	if !utf8.ValidString(d) {
		return "", fmt.Errorf("domain %q: not valid UTF-8: %w", domain, ErrInvalid)
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("domain %q: %v: %w", domain, err, ErrInvalid)
	}
	a = strings.ToLower(a)
	// The mapping can empty a label ("xn--"); an A-label must also map
	// back, or the same domain would have two keys.
	if a == "" || strings.Contains(a, "..") || strings.HasSuffix(a, ".") {
		return "", fmt.Errorf("domain %q: empty label: %w", domain, ErrInvalid)
	}
	if _, err := idna.Lookup.ToUnicode(a); err != nil {
		return "", fmt.Errorf("domain %q: %v: %w", domain, err, ErrInvalid)
	}
	return a, nil
}

// DomainUnicode returns the U-label (display) form of a domain name. Invalid
// input is returned unchanged.
func DomainUnicode(domain string) string {
	u, err := idna.Display.ToUnicode(domain)
	if err != nil {
		return domain
	}
	return u
}

// FoldAddress returns the comparison key of an address: the folded local part
// and the A-label domain, split at the last '@'. It does not strip
// subaddresses; that is routing's business.
func FoldAddress(addr string) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", fmt.Errorf("address %q: missing local part or domain: %w", addr, ErrInvalid)
	}
	if !utf8.ValidString(addr[:at]) {
		return "", fmt.Errorf("address %q: local part is not valid UTF-8: %w", addr, ErrInvalid)
	}
	d, err := DomainASCII(addr[at+1:])
	if err != nil {
		return "", err
	}
	return Fold(addr[:at]) + "@" + d, nil
}
