package delivery

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"tidings/storage"
)

// ErrSRS is returned by SRS.Reverse for an address that is not a valid,
// current SRS0 address of ours (forged, tampered or expired).
var ErrSRS = errors.New("not a valid SRS address")

// SRS rewrites the envelope sender of forwarded mail (the Sender Rewriting
// Scheme, SRS0 form), so the next hop's SPF check sees our domain and
// bounces still find their way back:
//
//	SRS0=HHHHHHHH=TT=orig.domain=orig-local@forward.domain
//
// HH is an HMAC-SHA256 over (TT, domain, local), base32 and truncated to
// 8 characters (40 bits); TT is the day number modulo 1024 in two base32
// characters. Both are compared case-insensitively, since some MTAs fold
// local parts. Unlike the libsrs2 convention the hash is base32, not
// base64: base64's '+' and '/' collide with subaddressing and some
// filters.
type SRS struct {
	secret []byte
	domain string
	maxAge int // days
	now    func() time.Time
}

// SRSMaxAge is how long a rewritten address is accepted back (libsrs2's
// default of 21 days).
const SRSMaxAge = 21

const srsHashLen = 8

var srsB32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewSRS returns an SRS for our forwarding domain (A-label) with secret.
func NewSRS(secret []byte, domain string) *SRS {
	return &SRS{secret: secret, domain: strings.ToLower(strings.TrimSuffix(domain, ".")), maxAge: SRSMaxAge, now: time.Now}
}

func (s *SRS) hash(ts, domain, local string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(strings.ToLower(ts + "\x00" + domain + "\x00" + local)))
	return srsB32.EncodeToString(m.Sum(nil))[:srsHashLen]
}

func srsDay(t time.Time) int { return int(t.Unix()/86400) % 1024 }

func srsStamp(day int) string {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	return string([]byte{alpha[(day>>5)&31], alpha[day&31]})
}

func srsUnstamp(ts string) (int, bool) {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	if len(ts) != 2 {
		return 0, false
	}
	ts = strings.ToUpper(ts)
	hi, lo := strings.IndexByte(alpha, ts[0]), strings.IndexByte(alpha, ts[1])
	if hi < 0 || lo < 0 {
		return 0, false
	}
	return hi<<5 | lo, true
}

// splitAddr splits at the last '@' (a quoted local part may contain '@').
func splitAddr(addr string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", false
	}
	return addr[:i], addr[i+1:], true
}

// Forward returns the rewritten sender. The null sender stays null
// (bounces are never rewritten or bounced), and a sender already in our
// domain needs no rewriting.
func (s *SRS) Forward(sender string) (string, error) {
	if sender == "" {
		return "", nil
	}
	local, domain, ok := splitAddr(sender)
	if !ok {
		return "", fmt.Errorf("srs: sender %q has no domain", sender)
	}
	if strings.EqualFold(strings.TrimSuffix(domain, "."), s.domain) {
		return sender, nil
	}
	ts := srsStamp(srsDay(s.now()))
	return "SRS0=" + s.hash(ts, domain, local) + "=" + ts + "=" + domain + "=" + local + "@" + s.domain, nil
}

// IsSRS reports whether addr looks like one of our SRS0 addresses (a
// cheap test before Reverse).
func (s *SRS) IsSRS(addr string) bool {
	local, domain, ok := splitAddr(addr)
	return ok && strings.EqualFold(domain, s.domain) && len(local) > 5 && strings.EqualFold(local[:5], "SRS0=")
}

// Reverse recovers the original sender from an SRS0 address of ours, for
// a bounce coming back. A forged, tampered or expired address is refused
// with ErrSRS, so the rewriting cannot be used as an open relay.
func (s *SRS) Reverse(addr string) (string, error) {
	if !s.IsSRS(addr) {
		return "", fmt.Errorf("%q: %w", addr, ErrSRS)
	}
	local, _, _ := splitAddr(addr)
	parts := strings.SplitN(local[5:], "=", 4)
	if len(parts) != 4 || parts[2] == "" || parts[3] == "" {
		return "", fmt.Errorf("%q: malformed: %w", addr, ErrSRS)
	}
	h, ts, odomain, olocal := parts[0], parts[1], parts[2], parts[3]
	want := s.hash(ts, odomain, olocal)
	if !hmac.Equal([]byte(strings.ToUpper(h)), []byte(want)) {
		return "", fmt.Errorf("%q: bad hash: %w", addr, ErrSRS)
	}
	day, ok := srsUnstamp(ts)
	if !ok {
		return "", fmt.Errorf("%q: bad timestamp: %w", addr, ErrSRS)
	}
	age := (srsDay(s.now()) - day + 1024) % 1024
	if age > s.maxAge {
		return "", fmt.Errorf("%q: expired %d days ago: %w", addr, age, ErrSRS)
	}
	return olocal + "@" + odomain, nil
}

// SRSSecretName is the store secret (storage.Keys.Secret) that keys SRS,
// the same on every node.
const SRSSecretName = "srs"

// LoadSRS returns an SRS for domain keyed by the store's shared secret,
// creating the secret (32 random bytes) on first use.
func LoadSRS(ctx context.Context, keys storage.Keys, domain string) (*SRS, error) {
	secret, err := keys.Secret(ctx, SRSSecretName, func() ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("srs secret: %w", err)
	}
	return NewSRS(secret, domain), nil
}
