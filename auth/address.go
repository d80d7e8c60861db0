package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"tidings/storage"
)

// Address is a parsed mail address.
type Address struct {
	// Local is the local part as given (quotes removed when the content is
	// a plain dot-atom, so "john"@x and john@x are the same address).
	Local string
	// Domain is the lower-case A-label, the form domains are stored in.
	Domain string
	// DomainDisplay is the U-label form, for people.
	DomainDisplay string
}

// String returns the display form: local part as given, U-label domain.
func (a Address) String() string { return a.Local + "@" + a.DomainDisplay }

// ASCII returns the local part with the A-label domain (the form to use on
// the wire to a peer without SMTPUTF8 when the local part is ASCII).
func (a Address) ASCII() string { return a.Local + "@" + a.Domain }

// Key returns the comparison key (storage.FoldAddress form): folded local
// part, A-label domain.
func (a Address) Key() string { return storage.Fold(a.Local) + "@" + a.Domain }

// maxLocal is the local-part limit of RFC 5321 §4.5.3.1.1.
const maxLocal = 64

// maxAddress bounds the whole address (RFC 5321 §4.5.3.1.3 path limit).
const maxAddress = 254

// ParseAddress parses a mailbox address "local@domain". It splits at the
// last '@', folds nothing (see Key) and converts the domain to its A-label.
//
// Besides malformed input it refuses, with ErrBadAddress, the forms that
// have been used to turn mail servers into open relays: source routes
// (RFC 5321 §4.1.1.3 "@a,@b:user@c"), the %-hack ("user%other@us") and
// UUCP bang paths ("host!user@us"), and quoted local parts hiding an '@'.
// Address literals ("user@[192.0.2.1]") are not local-delivery forms either.
func ParseAddress(s string) (Address, error) {
	bad := func(why string) (Address, error) {
		return Address{}, lineErrorf(ErrBadAddress, "malformed address %q: %s", s, why)
	}
	if s == "" {
		return bad("empty")
	}
	if !utf8.ValidString(s) {
		return bad("not valid UTF-8")
	}
	if len(s) > maxAddress {
		return bad(fmt.Sprintf("longer than %d octets", maxAddress))
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return bad("control character")
		}
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return bad("missing @")
	}
	local, domain := s[:at], s[at+1:]
	if local == "" {
		return bad("empty local part")
	}
	if domain == "" {
		return bad("missing domain")
	}
	if strings.HasPrefix(local, "@") || (strings.Contains(local, ":") && strings.Contains(local, "@")) {
		return bad("source route")
	}
	if strings.HasPrefix(domain, "[") {
		return bad("address literal")
	}
	local, err := parseLocal(local)
	if err != nil {
		return bad(err.Error())
	}
	if len(local) > maxLocal {
		return bad(fmt.Sprintf("local part longer than %d octets", maxLocal))
	}
	a, err := storage.DomainASCII(domain)
	if err != nil || strings.ContainsAny(a, " _") {
		return bad("invalid domain")
	}
	return Address{Local: local, Domain: a, DomainDisplay: storage.DomainUnicode(a)}, nil
}

// specials are the RFC 5322 §3.2.3 characters not allowed in an atom.
const specials = "()<>[]:;@\\,\" "

// parseLocal checks a local part (dot-atom or quoted string; RFC 5322
// §3.4.1, with UTF-8 allowed by RFC 6531 §3.3) and returns its canonical form.
func parseLocal(l string) (string, error) {
	if strings.HasPrefix(l, `"`) {
		if len(l) < 2 || !strings.HasSuffix(l, `"`) {
			return "", errors.New("unterminated quoted local part")
		}
		var content strings.Builder
		in := l[1 : len(l)-1]
		for i := 0; i < len(in); i++ {
			c := in[i]
			switch c {
			case '\\':
				i++
				if i == len(in) {
					return "", errors.New("unterminated quoted local part")
				}
				content.WriteByte(in[i])
			case '"':
				return "", errors.New("stray quote in local part")
			default:
				content.WriteByte(c)
			}
		}
		c := content.String()
		if c == "" {
			return "", errors.New("empty local part")
		}
		if strings.Contains(c, "@") {
			return "", errors.New("quoted local part contains @")
		}
		if err := relayForms(c); err != nil {
			return "", err
		}
		if isDotAtom(c) {
			return c, nil
		}
		return l, nil
	}
	if err := relayForms(l); err != nil {
		return "", err
	}
	if strings.ContainsAny(l, " \t") {
		return "", errors.New("space in local part (quote it)")
	}
	if strings.ContainsAny(l, specials) {
		return "", errors.New("special character in local part")
	}
	return l, nil
}

// relayForms refuses the %-hack and bang paths, which some MTAs still
// route to another host; accepting them for local delivery would let a
// downstream system relay on our behalf.
func relayForms(l string) error {
	if strings.Contains(l, "%") {
		return errors.New("%-hack routing not accepted")
	}
	if strings.Contains(l, "!") {
		return errors.New("bang path routing not accepted")
	}
	return nil
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	return !strings.ContainsAny(s, specials+"\t")
}

// stripSubaddress returns the local part without its subaddress
// ("user+tag" → "user") and whether there was one. A local part that
// starts with the separator is left alone (no empty user).
func stripSubaddress(local, sep string) (string, bool) {
	if sep == "" {
		return local, false
	}
	i := strings.Index(local, sep)
	if i <= 0 {
		return local, false
	}
	return local[:i], true
}
