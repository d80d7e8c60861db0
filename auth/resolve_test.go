package auth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"tidings/storage"
)

// routeString renders a resolution compactly: local accounts by key,
// externals as ext:addr, relays as relay:host:addr; '*' marks ViaAlias.
func routeString(r Resolution) string {
	var out []string
	for _, rt := range r.Recipients {
		var s string
		switch {
		case rt.Account != nil:
			s = rt.Account.Key
		case rt.Relay != "":
			s = "relay:" + rt.Relay + ":" + rt.External
		default:
			s = "ext:" + rt.External
		}
		if rt.ViaAlias {
			s += "*"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestResolve(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{MaxDepth: 4, MaxExpansion: 5})
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		f.domain(t, "x.test")
		f.domain(t, "y.test")
		f.domain(t, "empty.test")
		f.domain(t, "r.test")
		f.user(t, "alice@x.test", "pw") // the oldest user
		f.user(t, "bob@x.test", "pw")
		f.user(t, "carol@x.test", "pw")
		f.user(t, "dave+exact@x.test", "pw")
		f.user(t, "yuri@y.test", "pw")
		f.user(t, "off@x.test", "pw")
		must(f.d.SetEnabled(ctx, "off@x.test", false))
		must(f.d.AddAlias(ctx, "sales@x.test", []string{"bob@x.test", "Partner@Other.Example"}))
		must(f.d.AddAlias(ctx, "loop1@x.test", []string{"loop2@x.test"}))
		must(f.d.AddAlias(ctx, "loop2@x.test", []string{"loop1@x.test", "carol@x.test"}))
		must(f.d.AddAlias(ctx, "ring1@x.test", []string{"ring2@x.test"}))
		must(f.d.AddAlias(ctx, "ring2@x.test", []string{"ring1@x.test"}))
		must(f.d.AddAlias(ctx, "deep0@x.test", []string{"deep1@x.test"}))
		must(f.d.AddAlias(ctx, "deep1@x.test", []string{"deep2@x.test"}))
		must(f.d.AddAlias(ctx, "deep2@x.test", []string{"deep3@x.test"}))
		must(f.d.AddAlias(ctx, "deep3@x.test", []string{"deep4@x.test"}))
		must(f.d.AddAlias(ctx, "deep4@x.test", []string{"alice@x.test"}))
		must(f.d.AddAlias(ctx, "shallow@x.test", []string{"deep2@x.test"}))
		must(f.d.AddAlias(ctx, "dangling@x.test", []string{"nobody@x.test"}))
		must(f.d.AddAlias(ctx, "tooff@x.test", []string{"off@x.test"}))
		must(f.d.AddGroup(ctx, "team@x.test", []string{"alice@x.test", "bob@x.test", "sales@x.test", "ALICE@x.test"}))
		must(f.d.AddGroup(ctx, "big@x.test", []string{"a1@other.example", "a2@other.example", "a3@other.example", "a4@other.example", "a5@other.example", "a6@other.example"}))
		must(f.d.AddAlias(ctx, "toyuri@x.test", []string{"yuri+tag@y.test"}))
		must(f.d.SetCatchAll(ctx, "y.test", "yuri@y.test"))
		must(f.d.SetRelay(ctx, "r.test", "mx.r.test:25"))
		must(f.d.AddAlias(ctx, "listed@r.test", nil))
		must(f.d.AddAlias(ctx, "fwd@x.test", []string{"listed@r.test", "unlisted@r.test"}))

		tests := []struct {
			addr string
			want string // routeString, or "" with err
			err  error
		}{
			{"alice@x.test", "alice@x.test", nil},
			{"ALICE@X.Test", "alice@x.test", nil},
			{"alice+news@x.test", "alice@x.test", nil},
			{"alice+a+b@x.test", "alice@x.test", nil},
			{"dave+exact@x.test", "dave+exact@x.test", nil},
			{"dave@x.test", "", ErrUnknownRecipient},
			{"sales@x.test", "bob@x.test* ext:Partner@other.example*", nil},
			{"sales+q3@x.test", "bob@x.test* ext:Partner@other.example*", nil},
			{"team@x.test", "alice@x.test* bob@x.test* ext:Partner@other.example*", nil},
			{"loop1@x.test", "carol@x.test*", nil},
			{"ring1@x.test", "", ErrUnknownRecipient},
			{"shallow@x.test", "alice@x.test*", nil},
			{"deep0@x.test", "", ErrExpansion},
			{"big@x.test", "", ErrExpansion},
			{"dangling@x.test", "", ErrUnknownRecipient},
			{"nobody@x.test", "", ErrUnknownRecipient},
			{"off@x.test", "", ErrUnknownRecipient},
			{"tooff@x.test", "", ErrUnknownRecipient},
			{"postmaster@x.test", "alice@x.test*", nil},
			{"Abuse@X.test", "alice@x.test*", nil},
			{"postmaster@y.test", "yuri@y.test*", nil},
			{"abuse@empty.test", "alice@x.test*", nil},
			{"postmaster@r.test", "alice@x.test*", nil},
			{"postmaster", "alice@x.test*", nil},
			{"whoever@y.test", "yuri@y.test*", nil},
			{"toyuri@x.test", "yuri@y.test*", nil},
			{"listed@r.test", "relay:mx.r.test:25:listed@r.test", nil},
			{"listed+tag@r.test", "relay:mx.r.test:25:listed+tag@r.test", nil},
			{"unlisted@r.test", "", ErrUnknownRecipient},
			{"fwd@x.test", "relay:mx.r.test:25:listed@r.test*", nil},
			{"someone@elsewhere.example", "", ErrUnknownDomain},
			{"a%b@x.test", "", ErrBadAddress},
		}
		for _, tt := range tests {
			t.Run(tt.addr, func(t *testing.T) {
				r, err := f.d.Resolve(ctx, tt.addr)
				if tt.err != nil {
					if !errors.Is(err, tt.err) {
						t.Errorf("Resolve(%q) = %q, %v; want %v", tt.addr, routeString(r), err, tt.err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Resolve(%q) = %v; want %s", tt.addr, err, tt.want)
				}
				if got := routeString(r); got != tt.want {
					t.Errorf("Resolve(%q) = %s; want %s", tt.addr, got, tt.want)
				}
				for _, rt := range r.Recipients {
					if rt.Original != tt.addr {
						t.Errorf("Resolve(%q) route Original = %q; want the address as given", tt.addr, rt.Original)
					}
				}
			})
		}
		if !errors.Is(ErrExpansion, storage.ErrLimit) {
			t.Errorf("ErrExpansion does not wrap storage.ErrLimit")
		}
	})
}

func TestResolveNoSubaddress(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{SubaddressSeparator: NoSubaddress})
		f.domain(t, "x.test")
		f.user(t, "alice@x.test", "pw")
		if _, err := f.d.Resolve(ctx, "alice+tag@x.test"); !errors.Is(err, ErrUnknownRecipient) {
			t.Errorf("Resolve(alice+tag) without subaddressing = %v; want ErrUnknownRecipient", err)
		}
	})
}

func TestResolvePostmasterNobody(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{})
		for _, addr := range []string{"postmaster", "postmaster@x.test"} {
			if addr != "postmaster" {
				f.domain(t, "x.test")
			}
			if _, err := f.d.Resolve(ctx, addr); !errors.Is(err, ErrUnknownRecipient) {
				t.Errorf("Resolve(%q) with no accounts = %v; want ErrUnknownRecipient", addr, err)
			}
		}
	})
}

func TestAuthorize(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{})
		f.domain(t, "x.test")
		alice := f.user(t, "alice@x.test", "pw")
		bob := f.user(t, "bob@x.test", "pw")
		inbox, err := s.Mailbox(ctx, storage.System, alice.ID, "INBOX")
		if err != nil {
			t.Fatalf("Mailbox(INBOX): %v", err)
		}
		obj := storage.ACLObject{Kind: "mailbox", ID: int64(inbox.ID)}
		if err := s.SetRights(ctx, storage.Grant{Object: obj, Grantee: bob.ID, Rights: "lr"}); err != nil {
			t.Fatalf("SetRights: %v", err)
		}
		tests := []struct {
			name      string
			principal storage.AccountID
			right     storage.Right
			ok        bool
		}{
			{"owner write", alice.ID, 'w', true},
			{"owner admin", alice.ID, 'a', true},
			{"system", storage.System, 'x', true},
			{"granted read", bob.ID, 'r', true},
			{"not granted write", bob.ID, 'w', false},
			{"stranger", 9999, 'r', false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := f.d.Authorize(ctx, tt.principal, obj, tt.right)
				if (err == nil) != tt.ok || (!tt.ok && !errors.Is(err, storage.ErrDenied)) {
					t.Errorf("Authorize(%d, %v, %q) = %v; want ok %v", tt.principal, obj, tt.right, err, tt.ok)
				}
			})
		}
		if err := f.d.SetEnabled(ctx, "alice@x.test", false); err != nil {
			t.Fatal(err)
		}
		if err := f.d.Authorize(ctx, alice.ID, obj, 'r'); !errors.Is(err, storage.ErrDenied) {
			t.Errorf("Authorize(disabled owner) = %v; want ErrDenied", err)
		}
	})
}
