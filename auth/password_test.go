package auth

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"tidings/storage"
)

// cheap are the test argon2 parameters (the defaults take ~100 ms a hash).
var cheap = Argon2Params{Time: 1, Memory: 1024, Threads: 1}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("correct horse", cheap)
	if err != nil {
		t.Fatalf("HashPassword: %v", err)
	}
	if want := "$argon2id$v=19$m=1024,t=1,p=1$"; !strings.HasPrefix(h, want) {
		t.Errorf("HashPassword() = %q; want prefix %q", h, want)
	}
	h2, _ := HashPassword("correct horse", cheap)
	if h == h2 {
		t.Errorf("HashPassword twice gave the same string %q; want distinct salts", h)
	}
	tests := []struct {
		name, hash, pw string
		ok, err        bool
	}{
		{"right", h, "correct horse", true, false},
		{"wrong", h, "correct horsE", false, false},
		{"empty", h, "", false, false},
		{"bcrypt", "$2a$10$abcdefghijklmnopqrstuv", "x", false, true},
		{"garbage", "nope", "x", false, true},
		{"missing param", "$argon2id$v=19$m=1024,t=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "x", false, true},
		{"huge memory", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "x", false, true},
		{"old version", strings.Replace(h, "v=19", "v=16", 1), "correct horse", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := CheckPassword(tt.hash, tt.pw)
			if ok != tt.ok || (err != nil) != tt.err {
				t.Errorf("CheckPassword(%q, %q) = %v, %v; want %v, error %v", tt.hash, tt.pw, ok, err, tt.ok, tt.err)
			}
		})
	}
}

func TestHashPasswordBadParams(t *testing.T) {
	for _, p := range []Argon2Params{{}, {Time: 1, Memory: 4, Threads: 1}, {Time: 1, Memory: 1024}} {
		if _, err := HashPassword("x", p); err == nil {
			t.Errorf("HashPassword(%+v) = nil error; want one", p)
		}
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		p := GeneratePassword()
		if len(p) != 20 {
			t.Fatalf("GeneratePassword() = %q; want 20 characters", p)
		}
		if strings.ContainsAny(p, "0O1lIo") {
			t.Errorf("GeneratePassword() = %q; contains an ambiguous character", p)
		}
		if seen[p] {
			t.Errorf("GeneratePassword() repeated %q", p)
		}
		seen[p] = true
	}
}

func TestVerifyCache(t *testing.T) {
	c := newVerifyCache([]byte("k"), 3)
	k1 := c.cacheKey(1, 1, "", "pw")
	tests := []struct {
		name string
		k    [32]byte
	}{
		{"other generation", c.cacheKey(1, 2, "", "pw")},
		{"other account", c.cacheKey(2, 1, "", "pw")},
		{"other password", c.cacheKey(1, 1, "", "pw2")},
		{"unknown user", c.cacheKey(0, 0, "a@x.test", "pw")},
		{"other unknown user", c.cacheKey(0, 0, "b@x.test", "pw")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.k == k1 {
				t.Errorf("cacheKey(%s) = cacheKey(1, 1, pw); want distinct", tt.name)
			}
		})
	}
	if other := newVerifyCache([]byte("other"), 3).cacheKey(1, 1, "", "pw"); other == k1 {
		t.Errorf("cacheKey with another process key is equal; want distinct")
	}
	c.put(k1, true)
	if v, ok := c.get(k1); !v || !ok {
		t.Errorf("get(k1) = %v, %v; want true, true", v, ok)
	}
	for i := 0; i < 5; i++ {
		c.put(c.cacheKey(9, int64(i), "", "x"), false)
	}
	if n := c.len(); n != 3 {
		t.Errorf("cache len = %d; want bound 3", n)
	}
	if _, ok := c.get(k1); ok {
		t.Errorf("get(k1) after eviction = hit; want miss")
	}
}

func TestIPLimitKey(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"192.0.2.7", "ip:192.0.2.7"},
		{"::ffff:192.0.2.7", "ip:192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "ip:2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "ip:2001:db8:1:2::/64"},
		{"fe80::1%eth0", "ip:fe80::/64"},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			if got := ipLimitKey(netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Errorf("ipLimitKey(%q) = %q; want %q", tt.ip, got, tt.want)
			}
		})
	}
	if got := ipLimitKey(netip.Addr{}); got != "" {
		t.Errorf("ipLimitKey(zero) = %q; want \"\"", got)
	}
}

func TestCheckPolicy(t *testing.T) {
	// Wednesday 2026-03-04 10:30 UTC = 11:30 in Europe/Berlin.
	wed := time.Date(2026, 3, 4, 10, 30, 0, 0, time.UTC)
	ip := netip.MustParseAddr("192.0.2.7")
	ip6 := netip.MustParseAddr("2001:db8::7")
	tests := []struct {
		name  string
		p     storage.Policy
		proto string
		ip    netip.Addr
		ok    bool
	}{
		{"empty", storage.Policy{}, "imap", ip, true},
		{"protocol allowed", storage.Policy{Protocols: []string{"imap", "smtp"}}, "IMAP", ip, true},
		{"protocol refused", storage.Policy{Protocols: []string{"imap"}}, "pop3", ip, false},
		{"network in", storage.Policy{Networks: []string{"192.0.2.0/24"}}, "imap", ip, true},
		{"network single", storage.Policy{Networks: []string{"192.0.2.7"}}, "imap", ip, true},
		{"network out", storage.Policy{Networks: []string{"198.51.100.0/24"}}, "imap", ip, false},
		{"network v6", storage.Policy{Networks: []string{"10.0.0.0/8", "2001:db8::/32"}}, "imap", ip6, true},
		{"network unknown ip", storage.Policy{Networks: []string{"0.0.0.0/0"}}, "imap", netip.Addr{}, false},
		{"network malformed", storage.Policy{Networks: []string{"nonsense"}}, "imap", ip, false},
		{"hours in", storage.Policy{Hours: "08:00-18:00"}, "imap", ip, true},
		{"hours out", storage.Policy{Hours: "11:00-18:00"}, "imap", ip, false},
		{"hours zone in", storage.Policy{Hours: "11:00-18:00", Zone: "Europe/Berlin"}, "imap", ip, true},
		{"hours end exclusive", storage.Policy{Hours: "08:00-10:30"}, "imap", ip, false},
		{"hours wrap", storage.Policy{Hours: "22:00-11:00"}, "imap", ip, true},
		{"hours list", storage.Policy{Hours: "06:00-07:00, 10:00-11:00"}, "imap", ip, true},
		{"hours malformed", storage.Policy{Hours: "8-18"}, "imap", ip, false},
		{"days in", storage.Policy{Days: "mon-fri"}, "imap", ip, true},
		{"days out", storage.Policy{Days: "sat,sun"}, "imap", ip, false},
		{"days wrap", storage.Policy{Days: "fri-wed"}, "imap", ip, true},
		{"days malformed", storage.Policy{Days: "weekdays"}, "imap", ip, false},
		{"zone unknown", storage.Policy{Days: "mon-sun", Zone: "Mars/Olympus"}, "imap", ip, false},
		{"not before", storage.Policy{NotBefore: wed.Add(time.Hour).UnixMicro()}, "imap", ip, false},
		{"not after", storage.Policy{NotAfter: wed.Add(-time.Hour).UnixMicro()}, "imap", ip, false},
		{"within dates", storage.Policy{NotBefore: wed.Add(-time.Hour).UnixMicro(), NotAfter: wed.Add(time.Hour).UnixMicro()}, "imap", ip, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := checkPolicy(tt.p, Login{Proto: tt.proto, IP: tt.ip}, wed)
			if (why == "") != tt.ok {
				t.Errorf("checkPolicy(%+v, %s, %v) = %q; want allowed %v", tt.p, tt.proto, tt.ip, why, tt.ok)
			}
		})
	}
}
