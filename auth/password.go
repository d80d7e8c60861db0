package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the argon2id cost parameters (RFC 9106 §4).
type Argon2Params struct {
	Time    uint32 // passes
	Memory  uint32 // KiB
	Threads uint8  // lanes
}

// DefaultArgon2 is RFC 9106 §4's second recommended option with 2 lanes
// (memory-constrained: t=3, m=64 MiB).
var DefaultArgon2 = Argon2Params{Time: 3, Memory: 64 << 10, Threads: 2}

const (
	saltLen = 16
	keyLen  = 32
	// maxArgon2Memory bounds what a stored hash may ask for (4 GiB), so a
	// corrupted or hostile hash string cannot exhaust memory.
	maxArgon2Memory = 4 << 20
)

var b64 = base64.RawStdEncoding

// HashPassword returns the PHC string of an argon2id hash of pw:
// $argon2id$v=19$m=<KiB>,t=<time>,p=<threads>$<salt>$<hash> (unpadded
// standard base64, as the reference implementation writes it).
func HashPassword(pw string, p Argon2Params) (string, error) {
	if p.Time == 0 || p.Memory == 0 || p.Threads == 0 {
		return "", fmt.Errorf("argon2 parameters t=%d m=%d p=%d: all must be positive", p.Time, p.Memory, p.Threads)
	}
	if p.Memory < 8*uint32(p.Threads) {
		return "", fmt.Errorf("argon2 memory %d KiB is below 8 KiB per thread", p.Memory)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	h := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(h)), nil
}

// CheckPassword reports whether pw matches the PHC argon2id hash. The
// comparison is constant-time. An error means the hash string itself is
// unusable.
func CheckPassword(hash, pw string) (bool, error) {
	p, salt, want, err := parsePHC(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// parsePHC splits $argon2id$v=19$m=..,t=..,p=..$salt$hash.
func parsePHC(s string) (Argon2Params, []byte, []byte, error) {
	var p Argon2Params
	bad := func(why string) (Argon2Params, []byte, []byte, error) {
		return p, nil, nil, fmt.Errorf("password hash: %s", why)
	}
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" {
		return bad("not a PHC string")
	}
	if f[1] != "argon2id" {
		return bad(fmt.Sprintf("algorithm %q is not argon2id", f[1]))
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad(fmt.Sprintf("unsupported version %q", f[2]))
	}
	seen := 0
	for _, kv := range strings.Split(f[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return bad("malformed parameters")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return bad(fmt.Sprintf("parameter %s=%q", k, v))
		}
		switch k {
		case "m":
			p.Memory = uint32(n)
			seen |= 1
		case "t":
			p.Time = uint32(n)
			seen |= 2
		case "p":
			if n > 255 {
				return bad("parallelism above 255")
			}
			p.Threads = uint8(n)
			seen |= 4
		default:
			return bad(fmt.Sprintf("unknown parameter %q", k))
		}
	}
	if seen != 7 {
		return bad("missing parameters")
	}
	if p.Memory > maxArgon2Memory || p.Memory < 8*uint32(p.Threads) {
		return bad("memory parameter out of range")
	}
	salt, err := b64.DecodeString(f[4])
	if err != nil || len(salt) < 8 {
		return bad("salt")
	}
	h, err := b64.DecodeString(f[5])
	if err != nil || len(h) < 16 {
		return bad("hash value")
	}
	return p, salt, h, nil
}

// passwordAlphabet leaves out look-alikes (0/O/o, 1/l/I) so a generated
// password survives being read aloud or retyped.
const passwordAlphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// GeneratePassword returns 20 characters drawn uniformly from an
// unambiguous alphabet with crypto/rand (about 116 bits).
func GeneratePassword() string {
	const n = 20
	out := make([]byte, 0, n)
	buf := make([]byte, 32)
	// Rejection sampling keeps the distribution uniform: bytes at or above
	// the largest multiple of the alphabet size are dropped.
	limit := byte(256 - 256%len(passwordAlphabet))
	for len(out) < n {
		rand.Read(buf) // never fails (crypto/rand since Go 1.24)
		for _, b := range buf {
			if b < limit && len(out) < n {
				out = append(out, passwordAlphabet[int(b)%len(passwordAlphabet)])
			}
		}
	}
	return string(out)
}
