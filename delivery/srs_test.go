package delivery

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"tidings/storage"
)

func TestSRSRoundTrip(t *testing.T) {
	s := NewSRS([]byte("secret"), "fwd.example.org")
	tests := []struct {
		sender string
		same   bool // returned unchanged
	}{
		{"", true},
		{"alice@origin.example", false},
		{"Bob.Smith+tag@Origin.Example", false},
		{"weird=local=part@origin.example", false},
		{"someone@fwd.example.org", true},
	}
	for _, tt := range tests {
		t.Run(tt.sender, func(t *testing.T) {
			fwd, err := s.Forward(tt.sender)
			if err != nil {
				t.Fatalf("Forward(%q) = %v; want nil", tt.sender, err)
			}
			if tt.same {
				if fwd != tt.sender {
					t.Errorf("Forward(%q) = %q; want it unchanged", tt.sender, fwd)
				}
				return
			}
			if !strings.HasPrefix(fwd, "SRS0=") || !strings.HasSuffix(fwd, "@fwd.example.org") {
				t.Fatalf("Forward(%q) = %q; want SRS0=...@fwd.example.org", tt.sender, fwd)
			}
			for _, form := range []string{fwd, strings.ToLower(fwd)} {
				back, err := s.Reverse(form)
				if err != nil || !strings.EqualFold(back, tt.sender) {
					t.Errorf("Reverse(%q) = %q, %v; want %q", form, back, err, tt.sender)
				}
			}
		})
	}
}

func TestSRSRefusesTampering(t *testing.T) {
	s := NewSRS([]byte("secret"), "fwd.example.org")
	fwd, err := s.Forward("alice@origin.example")
	if err != nil {
		t.Fatal(err)
	}
	local := strings.TrimSuffix(fwd, "@fwd.example.org")
	parts := strings.SplitN(local, "=", 5) // SRS0, hash, ts, domain, local
	flip := func(s string) string {
		if s[0] == 'A' {
			return "B" + s[1:]
		}
		return "A" + s[1:]
	}
	old := NewSRS([]byte("secret"), "fwd.example.org")
	old.now = func() time.Time { return time.Now().Add(-30 * 24 * time.Hour) }
	stale, _ := old.Forward("alice@origin.example")
	other, _ := NewSRS([]byte("other secret"), "fwd.example.org").Forward("alice@origin.example")
	tests := []struct{ name, addr string }{
		{"hash", "SRS0=" + flip(parts[1]) + "=" + parts[2] + "=" + parts[3] + "=" + parts[4] + "@fwd.example.org"},
		{"domain", "SRS0=" + parts[1] + "=" + parts[2] + "=evil.example=" + parts[4] + "@fwd.example.org"},
		{"local", "SRS0=" + parts[1] + "=" + parts[2] + "=" + parts[3] + "=mallory@fwd.example.org"},
		{"timestamp", "SRS0=" + parts[1] + "=" + flip(parts[2]) + "=" + parts[3] + "=" + parts[4] + "@fwd.example.org"},
		{"other domain", strings.Replace(fwd, "@fwd.example.org", "@elsewhere.example", 1)},
		{"other secret", other},
		{"expired", stale},
		{"not srs", "alice@fwd.example.org"},
		{"truncated", "SRS0=abc@fwd.example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := s.Reverse(tt.addr); !errors.Is(err, ErrSRS) {
				t.Errorf("Reverse(%q) = %q, %v; want %v", tt.addr, got, err, ErrSRS)
			}
		})
	}
}

// Reverse reads addresses from the internet (bounces to SRS0= addresses):
// it never panics and accepts only what Forward made.
func FuzzSRSReverse(f *testing.F) {
	s := NewSRS([]byte("secret"), "fwd.example.org")
	good, _ := s.Forward("alice@origin.example")
	for _, seed := range []string{good, "SRS0=x=y=z=w@fwd.example.org", "SRS0=@fwd.example.org", "srs0====@FWD.example.org", "a@b", "@", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		orig, err := s.Reverse(addr)
		if err != nil {
			return
		}
		again, ferr := s.Forward(orig)
		if ferr != nil {
			t.Fatalf("Reverse(%q) = %q, but Forward of it fails: %v", addr, orig, ferr)
		}
		if back, err := s.Reverse(again); err != nil || back != orig {
			t.Fatalf("Reverse(Forward(%q)) = %q, %v; want it back", orig, back, err)
		}
	})
}

// Two nodes loading SRS from one store rewrite alike: one reverses what
// the other forwarded.
func TestLoadSRSSharedSecret(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		ctx := context.Background()
		a, err := LoadSRS(ctx, open(t), "fwd.example.org")
		if err != nil {
			t.Fatalf("LoadSRS(node a) = %v", err)
		}
		b, err := LoadSRS(ctx, open(t), "fwd.example.org")
		if err != nil {
			t.Fatalf("LoadSRS(node b) = %v", err)
		}
		fwd, _ := a.Forward("alice@origin.example")
		if got, err := b.Reverse(fwd); err != nil || got != "alice@origin.example" {
			t.Errorf("node b Reverse(node a's %q) = %q, %v; want alice@origin.example", fwd, got, err)
		}
	})
}
