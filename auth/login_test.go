package auth

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"tidings/storage"
)

func TestAuthenticate(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{})
		f.domain(t, "x.test")
		alice := f.user(t, "Alice@x.test", "alice-pw")
		f.user(t, "off@x.test", "off-pw")
		f.user(t, "nopw@x.test", "")
		if err := f.d.SetEnabled(ctx, "off@x.test", false); err != nil {
			t.Fatalf("SetEnabled: %v", err)
		}
		ip := netip.MustParseAddr("192.0.2.1")
		tests := []struct {
			name   string
			l      Login
			want   error
			reason string
		}{
			{"ok", Login{Proto: "imap", IP: ip, User: "alice@x.test", Password: "alice-pw"}, nil, ""},
			{"ok folded", Login{Proto: "imap", IP: ip, User: "ALICE@X.TEST", Password: "alice-pw"}, nil, ""},
			{"ok authzid same", Login{Proto: "smtp", IP: ip, User: "alice@x.test", Password: "alice-pw", AuthzID: "Alice@X.test"}, nil, ""},
			{"authzid other", Login{Proto: "smtp", IP: ip, User: "alice@x.test", Password: "alice-pw", AuthzID: "off@x.test"}, ErrAuthFailed, "authzid"},
			{"bad password", Login{Proto: "imap", IP: ip, User: "alice@x.test", Password: "wrong"}, ErrAuthFailed, "bad password"},
			{"unknown user", Login{Proto: "imap", IP: ip, User: "nobody@x.test", Password: "alice-pw"}, ErrAuthFailed, "unknown user"},
			{"unknown domain", Login{Proto: "imap", IP: ip, User: "alice@y.test", Password: "alice-pw"}, ErrAuthFailed, "unknown user"},
			{"malformed user", Login{Proto: "imap", IP: ip, User: "alice", Password: "alice-pw"}, ErrAuthFailed, "unknown user"},
			{"disabled", Login{Proto: "pop3", IP: ip, User: "off@x.test", Password: "off-pw"}, ErrAuthFailed, "disabled"},
			{"no password", Login{Proto: "pop3", IP: ip, User: "nopw@x.test", Password: ""}, ErrAuthFailed, "no password"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				f.log.Reset()
				acct, err := f.d.Authenticate(ctx, tt.l)
				if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Fatalf("Authenticate(%q, %q) = %v; want %v", tt.l.User, tt.l.Password, err, tt.want)
				}
				if tt.want == nil {
					if acct.ID != alice.ID {
						t.Errorf("Authenticate(%q) account = %d; want %d", tt.l.User, acct.ID, alice.ID)
					}
					return
				}
				if err.Error() != ErrAuthFailed.Error() {
					t.Errorf("Authenticate(%q) error text = %q; want exactly %q", tt.l.User, err, ErrAuthFailed)
				}
				line := `level=WARN msg="auth failed" proto=` + tt.l.Proto + " ip=" + ip.String() + " user=" + tt.l.User + " reason=" + logValue(tt.reason)
				if got := f.log.String(); !strings.Contains(got, line) {
					t.Errorf("Authenticate(%q) log = %q; want line containing %q", tt.l.User, got, line)
				}
			})
		}
	})
}

// TestCacheKeyedByGeneration: a password cached as valid stops working the
// moment it is changed.
func TestCacheKeyedByGeneration(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{HashWorkers: 1, HashQueueTimeout: time.Millisecond})
		f.domain(t, "x.test")
		f.user(t, "a@x.test", "old")
		login := func(pw string) error {
			_, err := f.d.Authenticate(ctx, Login{Proto: "imap", User: "a@x.test", Password: pw})
			return err
		}
		if err := login("old"); err != nil {
			t.Fatalf("Authenticate(old) = %v; want nil", err)
		}
		// With the only hash worker taken, only a cached result can answer.
		f.d.sem <- struct{}{}
		if err := login("old"); err != nil {
			t.Errorf("Authenticate(old) cached = %v; want nil (from the cache)", err)
		}
		if err := login("uncached"); !errors.Is(err, ErrTemporary) {
			t.Errorf("Authenticate(uncached) with hash queue full = %v; want ErrTemporary", err)
		}
		<-f.d.sem

		if err := f.d.SetPassword(ctx, "a@x.test", "new"); err != nil {
			t.Fatalf("SetPassword: %v", err)
		}
		tests := []struct {
			pw   string
			want error
		}{
			{"old", ErrAuthFailed},
			{"new", nil},
		}
		for _, tt := range tests {
			t.Run(tt.pw, func(t *testing.T) {
				if err := login(tt.pw); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Errorf("Authenticate(%q) after SetPassword = %v; want %v", tt.pw, err, tt.want)
				}
			})
		}
	})
}

// TestUnknownUserHashes: an unknown user goes through the same argon2 work
// as a real one (it needs a hash worker), and reads the same.
func TestUnknownUserHashes(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{HashWorkers: 1, HashQueueTimeout: time.Millisecond})
		f.domain(t, "x.test")
		f.d.sem <- struct{}{}
		_, err := f.d.Authenticate(ctx, Login{Proto: "imap", User: "ghost@x.test", Password: "pw"})
		<-f.d.sem
		if !errors.Is(err, ErrTemporary) {
			t.Errorf("Authenticate(unknown) with hash queue full = %v; want ErrTemporary (dummy hash checked)", err)
		}
		_, err = f.d.Authenticate(ctx, Login{Proto: "imap", User: "ghost@x.test", Password: "pw"})
		if err == nil || err.Error() != ErrAuthFailed.Error() {
			t.Errorf("Authenticate(unknown) = %v; want %v", err, ErrAuthFailed)
		}
	})
}

func TestLimiter(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{MaxFailuresIP: 3, MaxFailuresAccount: 3, FailWindow: time.Minute})
		f.domain(t, "x.test")
		f.user(t, "a@x.test", "pw")
		f.user(t, "b@x.test", "pw")
		auth := func(proto, ip, user, pw string) error {
			_, err := f.d.Authenticate(ctx, Login{Proto: proto, IP: netip.MustParseAddr(ip), User: user, Password: pw})
			return err
		}

		t.Run("account across protocols", func(t *testing.T) {
			for i, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
				if err := auth("imap", ip, "a@x.test", "wrong"); !errors.Is(err, ErrAuthFailed) {
					t.Fatalf("failure %d = %v; want ErrAuthFailed", i, err)
				}
			}
			f.log.Reset()
			if err := auth("pop3", "198.51.100.9", "a@x.test", "pw"); !errors.Is(err, ErrRateLimited) {
				t.Errorf("Authenticate(pop3, right password) after 3 imap failures = %v; want ErrRateLimited", err)
			}
			if !strings.Contains(f.log.String(), `reason="rate limited (account)"`) {
				t.Errorf("log = %q; want rate limited (account)", f.log.String())
			}
			f.clock.Advance(2 * time.Minute)
			if err := auth("pop3", "198.51.100.9", "a@x.test", "pw"); err != nil {
				t.Errorf("Authenticate after the window = %v; want nil", err)
			}
		})

		t.Run("ipv6 /64", func(t *testing.T) {
			f.clock.Advance(2 * time.Minute)
			for i, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"} {
				if err := auth("smtp", ip, "nobody"+string(rune('0'+i))+"@x.test", "x"); !errors.Is(err, ErrAuthFailed) {
					t.Fatalf("failure %d = %v; want ErrAuthFailed", i, err)
				}
			}
			tests := []struct {
				ip   string
				want error
			}{
				{"2001:db8:1:2::99", ErrRateLimited},
				{"2001:db8:1:3::1", nil},
				{"192.0.2.200", nil},
			}
			for _, tt := range tests {
				t.Run(tt.ip, func(t *testing.T) {
					err := auth("http", tt.ip, "b@x.test", "pw")
					if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
						t.Errorf("Authenticate(from %s) = %v; want %v", tt.ip, err, tt.want)
					}
				})
			}
		})

		t.Run("success clears account", func(t *testing.T) {
			f.clock.Advance(2 * time.Minute)
			ips := []string{"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"}
			for _, ip := range ips[:2] {
				auth("imap", ip, "b@x.test", "wrong")
			}
			if err := auth("imap", ips[2], "b@x.test", "pw"); err != nil {
				t.Fatalf("Authenticate(right) = %v; want nil", err)
			}
			for _, ip := range ips[3:] {
				auth("imap", ip, "b@x.test", "wrong")
			}
			if err := auth("imap", "203.0.113.6", "b@x.test", "pw"); err != nil {
				t.Errorf("Authenticate after 2+2 failures split by a success = %v; want nil", err)
			}
		})
	})
}

func TestPolicy(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{}) // clock: Wednesday 10:30 UTC
		f.domain(t, "x.test")
		f.user(t, "a@x.test", "pw")
		ip := netip.MustParseAddr("192.0.2.1")
		tests := []struct {
			name  string
			p     storage.Policy
			proto string
			want  error
		}{
			{"none", storage.Policy{}, "imap", nil},
			{"protocol", storage.Policy{Protocols: []string{"imap"}}, "pop3", ErrAuthFailed},
			{"network ok", storage.Policy{Networks: []string{"192.0.2.0/24"}}, "imap", nil},
			{"network", storage.Policy{Networks: []string{"10.0.0.0/8"}}, "imap", ErrAuthFailed},
			{"hours ok", storage.Policy{Hours: "08:00-18:00", Days: "mon-fri"}, "imap", nil},
			{"hours", storage.Policy{Hours: "12:00-18:00"}, "imap", ErrAuthFailed},
			{"days", storage.Policy{Days: "sat-sun"}, "imap", ErrAuthFailed},
			{"expired", storage.Policy{NotAfter: f.clock.Now().Add(-time.Hour).UnixMicro()}, "imap", ErrAuthFailed},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := f.d.SetPolicy(ctx, "a@x.test", tt.p); err != nil {
					t.Fatalf("SetPolicy(%+v): %v", tt.p, err)
				}
				f.log.Reset()
				_, err := f.d.Authenticate(ctx, Login{Proto: tt.proto, IP: ip, User: "a@x.test", Password: "pw"})
				if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Fatalf("Authenticate with policy %+v = %v; want %v", tt.p, err, tt.want)
				}
				if tt.want != nil && !strings.Contains(f.log.String(), `reason=policy`) {
					t.Errorf("log = %q; want reason=policy", f.log.String())
				}
			})
		}
		if err := f.d.SetPolicy(ctx, "a@x.test", storage.Policy{Hours: "9-5"}); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("SetPolicy(Hours 9-5) = %v; want ErrInvalid", err)
		}
	})
}

// logValue quotes a value the way slog's text handler does for ours.
func logValue(s string) string {
	if strings.ContainsAny(s, " ()") {
		return `"` + s + `"`
	}
	return s
}

// TestAuthenticateConcurrent: parallel logins of several protocols share
// the cache, semaphore and limiter without races.
func TestAuthenticateConcurrent(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{HashWorkers: 2})
		f.domain(t, "x.test")
		f.user(t, "a@x.test", "pw")
		protos := []string{"imap", "pop3", "smtp", "http"}
		errs := make(chan error, 16)
		for i := range 16 {
			go func() {
				_, err := f.d.Authenticate(ctx, Login{Proto: protos[i%4], IP: netip.MustParseAddr("192.0.2.1"), User: "a@x.test", Password: "pw"})
				errs <- err
			}()
		}
		for range 16 {
			if err := <-errs; err != nil {
				t.Errorf("concurrent Authenticate = %v; want nil", err)
			}
		}
	})
}
