package delivery

import (
	"context"
	"errors"
	"testing"

	"tidings/auth"
	"tidings/storage"
)

func newLocalEnv(t *testing.T, st storage.Store) (*Local, *auth.Directory, storage.Account) {
	t.Helper()
	ctx := context.Background()
	dir := auth.New(st, auth.Config{Argon2: auth.Argon2Params{Time: 1, Memory: 64, Threads: 1}}, nil)
	if _, err := dir.AddDomain(ctx, "example.test"); err != nil {
		t.Fatalf("AddDomain = %v", err)
	}
	alice, err := dir.AddUser(ctx, "alice@example.test", "pw", auth.UserOptions{})
	if err != nil {
		t.Fatalf("AddUser = %v", err)
	}
	if _, err := dir.AddUser(ctx, "bob@example.test", "pw", auth.UserOptions{}); err != nil {
		t.Fatalf("AddUser = %v", err)
	}
	if err := st.CreateAlias(ctx, storage.Alias{Address: "sales@example.test", Targets: []string{"bob@example.test"}, SendAs: []storage.AccountID{alice.ID}}); err != nil {
		t.Fatalf("CreateAlias = %v", err)
	}
	if err := dir.AddAlias(ctx, "info@example.test", []string{"bob@example.test"}); err != nil {
		t.Fatalf("AddAlias = %v", err)
	}
	return NewLocal(LocalConfig{}, LocalDeps{Store: st, Dir: dir}), dir, alice
}

func TestLocalOwns(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		l, _, alice := newLocalEnv(t, open(t))
		tests := []struct {
			addr string
			want bool
		}{
			{"alice@example.test", true},
			{"ALICE@EXAMPLE.TEST", true},
			{"alice+news@example.test", true},
			{"sales@example.test", true},    // SendAs lists alice
			{"sales+x@example.test", true},  // subaddress of an alias she may use
			{"info@example.test", false},    // an alias without SendAs
			{"bob@example.test", false},     // someone else
			{"alice@elsewhere.test", false}, // another domain
			{"alice%x@example.test", false}, // relay trick
			{"", false},
		}
		for _, tt := range tests {
			got, err := l.Owns(context.Background(), alice, tt.addr)
			if err != nil || got != tt.want {
				t.Errorf("Owns(alice, %q) = %v, %v; want %v", tt.addr, got, err, tt.want)
			}
		}
	})
}

func TestLocalRoute(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		l, dir, _ := newLocalEnv(t, open(t))
		ctx := context.Background()
		if err := dir.SetQuota(ctx, "alice@example.test", 0, 1); err != nil {
			t.Fatalf("SetQuota = %v", err)
		}
		if _, err := l.deps.Store.Deliver(ctx, storage.BytesSource("Subject: x\r\n\r\nx\r\n"), []storage.DeliveryTarget{{Owner: mustAcct(t, l, "alice@example.test"), Message: storage.NewMessage{Analysis: &storage.Analysis{Version: storage.AnalysisVersion, HeaderLen: 13, Size: 16}}}}); err != nil {
			t.Fatalf("Deliver = %v", err)
		}
		tests := []struct {
			rcpt string
			want error
		}{
			{"bob@example.test", nil},
			{"info@example.test", nil},
			{"alice@example.test", storage.ErrOverQuota},
			{"nobody@example.test", auth.ErrUnknownRecipient},
			{"x@elsewhere.test", auth.ErrUnknownDomain},
			{"x%y@example.test", auth.ErrBadAddress},
		}
		for _, tt := range tests {
			_, err := l.Route(ctx, tt.rcpt)
			if !errors.Is(err, tt.want) && !(err == nil && tt.want == nil) {
				t.Errorf("Route(%q) = %v; want %v", tt.rcpt, err, tt.want)
			}
		}
		r, err := l.RemoteRoute("Friend@Elsewhere.Test")
		if err != nil || !r.Remote || r.Domain != "elsewhere.test" {
			t.Errorf("RemoteRoute = %+v, %v; want remote to elsewhere.test", r, err)
		}
	})
}

func mustAcct(t *testing.T, l *Local, addr string) storage.AccountID {
	t.Helper()
	a, err := l.deps.Store.AccountByAddress(context.Background(), addr)
	if err != nil {
		t.Fatalf("AccountByAddress(%q) = %v", addr, err)
	}
	return a.ID
}

func TestEntryPrefix(t *testing.T) {
	tests := []struct {
		name, from, to, orig string
		via                  bool
		want                 string
	}{
		{"direct", "a@b.test", "alice@example.test", "alice@example.test", false,
			"Return-Path: <a@b.test>\r\nDelivered-To: alice@example.test\r\nX: y\r\n"},
		{"alias", "a@b.test", "alice@example.test", "team@example.test", true,
			"Return-Path: <a@b.test>\r\nDelivered-To: alice@example.test\r\nX-Original-To: team@example.test\r\nX: y\r\n"},
		{"null sender", "", "alice@example.test", "alice@example.test", false,
			"Return-Path: <>\r\nDelivered-To: alice@example.test\r\nX: y\r\n"},
		{"no header injection", "a@b.test\r\nBcc: x", "alice@example.test", "alice@example.test", false,
			"Return-Path: <a@b.testBcc: x>\r\nDelivered-To: alice@example.test\r\nX: y\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(entryPrefix(tt.from, tt.to, tt.orig, tt.via, []byte("X: y\r\n")))
			if got != tt.want {
				t.Errorf("entryPrefix(%q, %q, %q, %v) = %q; want %q", tt.from, tt.to, tt.orig, tt.via, got, tt.want)
			}
		})
	}
}
