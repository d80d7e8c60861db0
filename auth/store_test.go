package auth

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tidings/storage"
	"tidings/storage/postgres"
	"tidings/storage/postgres/pgtest"
	"tidings/storage/sqlite"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type driver struct {
	name string
	open func(t *testing.T) storage.Store
}

// drivers open a fresh, migrated store each.
func drivers() []driver {
	return []driver{
		{"sqlite", func(t *testing.T) storage.Store {
			t.Helper()
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "tidings.db")
			if err := sqlite.Migrate(ctx, path, nil); err != nil {
				t.Fatalf("sqlite.Migrate: %v", err)
			}
			s, err := sqlite.Open(ctx, path, storage.Options{})
			if err != nil {
				t.Fatalf("sqlite.Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"postgres", func(t *testing.T) storage.Store {
			t.Helper()
			ctx := context.Background()
			url := pgtest.NewDatabase(t)
			if err := postgres.Migrate(ctx, url, nil); err != nil {
				t.Fatalf("postgres.Migrate: %v", err)
			}
			s, err := postgres.Open(ctx, url, storage.Options{})
			if err != nil {
				t.Fatalf("postgres.Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
	}
}

// forEachStore runs fn as a subtest per driver.
func forEachStore(t *testing.T, fn func(t *testing.T, s storage.Store)) {
	t.Helper()
	for _, drv := range drivers() {
		t.Run(drv.name, func(t *testing.T) { fn(t, drv.open(t)) })
	}
}

// logBuffer collects log output for assertions on the auth failed line.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 3, 4, 10, 30, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type fixture struct {
	d     *Directory
	s     storage.Store
	log   *logBuffer
	clock *clock
}

func newFixture(t *testing.T, s storage.Store, cfg Config) *fixture {
	t.Helper()
	f := &fixture{s: s, log: &logBuffer{}, clock: newClock()}
	if cfg.Argon2 == (Argon2Params{}) {
		cfg.Argon2 = cheap
	}
	if cfg.Now == nil {
		cfg.Now = f.clock.Now
	}
	f.d = New(s, cfg, slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return f
}

func (f *fixture) domain(t *testing.T, name string) storage.Domain {
	t.Helper()
	d, err := f.d.AddDomain(context.Background(), name)
	if err != nil {
		t.Fatalf("AddDomain(%q): %v", name, err)
	}
	return d
}

func (f *fixture) user(t *testing.T, addr, pw string) storage.Account {
	t.Helper()
	a, err := f.d.AddUser(context.Background(), addr, pw, UserOptions{})
	if err != nil {
		t.Fatalf("AddUser(%q): %v", addr, err)
	}
	return a
}

func TestDomainsAndUsers(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{})
		dom := f.domain(t, "Bücher.Example")
		if dom.Name != "xn--bcher-kva.example" || dom.Display != "bücher.example" {
			t.Errorf("AddDomain(%q) = %q/%q; want xn--bcher-kva.example/bücher.example", "Bücher.Example", dom.Name, dom.Display)
		}
		als, err := f.d.Aliases(ctx, "bücher.example")
		if err != nil {
			t.Fatalf("Aliases: %v", err)
		}
		var names []string
		for _, a := range als {
			names = append(names, a.Key)
		}
		if got, want := strings.Join(names, ","), "abuse@xn--bcher-kva.example,postmaster@xn--bcher-kva.example"; !sameSet(got, want) {
			t.Errorf("Aliases after AddDomain = %s; want %s", got, want)
		}
		acct, err := f.d.AddUser(ctx, "JÖRG@Bücher.Example", "pw", UserOptions{DisplayName: "Jörg", QuotaBytes: 1 << 20})
		if err != nil {
			t.Fatalf("AddUser: %v", err)
		}
		if acct.Key != "jörg@xn--bcher-kva.example" || acct.QuotaBytes != 1<<20 || acct.DisplayName != "Jörg" {
			t.Errorf("AddUser() = %+v; want key jörg@xn--bcher-kva.example, quota 1MiB, name Jörg", acct)
		}
		mbs, err := s.Mailboxes(ctx, storage.System, acct.ID)
		if err != nil {
			t.Fatalf("Mailboxes: %v", err)
		}
		got := map[string]string{}
		for _, m := range mbs {
			if !m.Subscribed {
				t.Errorf("mailbox %q not subscribed", m.Name)
			}
			got[m.Name] = m.SpecialUse
		}
		want := map[string]string{"INBOX": "", "Sent": `\Sent`, "Drafts": `\Drafts`, "Trash": `\Trash`, "Junk": `\Junk`, "Archive": `\Archive`}
		for n, u := range want {
			if g, ok := got[n]; !ok || g != u {
				t.Errorf("mailbox %q special-use = %q (present %v); want %q", n, g, ok, u)
			}
		}
		if len(got) != len(want) {
			t.Errorf("AddUser created %d mailboxes %v; want %d", len(got), got, len(want))
		}

		errTests := []struct {
			name    string
			fn      func() error
			msg     string
			wantErr error
		}{
			{"unserved domain", func() error { _, err := f.d.AddUser(ctx, "a@x.test", "pw", UserOptions{}); return err },
				`domain "x.test" is not served here; add it with: tidings domain add x.test`, ErrUnknownDomain},
			{"duplicate user", func() error { _, err := f.d.AddUser(ctx, "jörg@bücher.example", "pw", UserOptions{}); return err },
				`user "jörg@bücher.example" already exists`, storage.ErrExists},
			{"malformed", func() error { _, err := f.d.AddUser(ctx, "foo", "pw", UserOptions{}); return err },
				`malformed address "foo": missing @`, ErrBadAddress},
			{"user over alias", func() error {
				_, err := f.d.AddUser(ctx, "postmaster@bücher.example", "pw", UserOptions{})
				return err
			}, `address "postmaster@bücher.example" is already an alias`, storage.ErrExists},
			{"duplicate domain", func() error { _, err := f.d.AddDomain(ctx, "BÜCHER.example"); return err },
				`domain "xn--bcher-kva.example" already exists`, storage.ErrExists},
			{"remove domain with users", func() error { return f.d.RemoveDomain(ctx, "bücher.example") },
				`domain "xn--bcher-kva.example" still has 1 account(s)`, storage.ErrNotEmpty},
			{"set password unknown", func() error { return f.d.SetPassword(ctx, "nobody@bücher.example", "x") },
				`user "nobody@bücher.example" does not exist`, storage.ErrNotFound},
			{"alias without targets", func() error { return f.d.AddAlias(ctx, "empty@bücher.example", nil) },
				`alias "empty@bücher.example" needs at least one target`, storage.ErrInvalid},
			{"remove unknown alias", func() error { return f.d.RemoveAlias(ctx, "nope@bücher.example") },
				`alias "nope@bücher.example" does not exist`, storage.ErrNotFound},
		}
		for _, tt := range errTests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.fn()
				if !errors.Is(err, tt.wantErr) || err == nil || !strings.HasPrefix(err.Error(), tt.msg) {
					t.Errorf("%s = %v; want %q wrapping %v", tt.name, err, tt.msg, tt.wantErr)
				}
				if err != nil && strings.Contains(err.Error(), "\n") {
					t.Errorf("%s error has more than one line: %q", tt.name, err)
				}
			})
		}

		us, err := f.d.Users(ctx, "xn--bcher-kva.example")
		if err != nil || len(us) != 1 {
			t.Fatalf("Users() = %d, %v; want 1 user", len(us), err)
		}
		if err := f.d.RemoveUser(ctx, "jörg@bücher.example"); err != nil {
			t.Fatalf("RemoveUser: %v", err)
		}
		if on, err := f.d.Enabled(ctx, acct.ID); on || err != nil {
			t.Errorf("Enabled(removed) = %v, %v; want false, nil", on, err)
		}
		if us, err := f.d.Users(ctx, ""); err != nil || len(us) != 0 {
			t.Errorf("Users() after RemoveUser = %d, %v; want 0", len(us), err)
		}
		if err := f.d.RemoveDomain(ctx, "bücher.example"); err != nil {
			t.Errorf("RemoveDomain after removing users = %v; want nil", err)
		}
		if ds, err := f.d.Domains(ctx); err != nil || len(ds) != 0 {
			t.Errorf("Domains() after RemoveDomain = %v, %v; want none", ds, err)
		}
	})
}

func sameSet(a, b string) bool {
	as, bs := strings.Split(a, ","), strings.Split(b, ",")
	if len(as) != len(bs) {
		return false
	}
	m := map[string]int{}
	for _, x := range as {
		m[x]++
	}
	for _, x := range bs {
		m[x]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}
