package storage

import (
	"errors"
	"testing"
)

func TestFold(t *testing.T) {
	tests := []struct{ in, want string }{
		{"INBOX", "inbox"},
		{"ÜBER", "über"},
		{"U\u0308ber", "über"}, // decomposed input is composed first
		{"\u212a", "k"},        // Kelvin sign meets k
		{"ſ", "s"},             // long s meets s
		{"ΣΑΣ", "σασ"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Fold(tt.in); got != tt.want {
				t.Errorf("Fold(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestFoldAddress(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"JÖRG@bücher.example", "jörg@xn--bcher-kva.example", false},
		{"jörg@xn--bcher-kva.example", "jörg@xn--bcher-kva.example", false},
		{"JÖRG@BÜCHER.EXAMPLE.", "jörg@xn--bcher-kva.example", false},
		{"a@b@c.example", "a@b@c.example", false}, // split at the last @
		{"nodomain", "", true},
		{"@example.org", "", true},
		{"user@", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := FoldAddress(tt.in)
			if tt.err {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("FoldAddress(%q) error = %v; want ErrInvalid", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("FoldAddress(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
	if u := DomainUnicode("xn--bcher-kva.example"); u != "bücher.example" {
		t.Errorf("DomainUnicode = %q; want bücher.example", u)
	}
}

func FuzzFoldAddress(f *testing.F) {
	for _, s := range []string{"JÖRG@bücher.example", "a@b", "@", "x@xn--", "\xff@\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := FoldAddress(s)
		if err != nil {
			return
		}
		// Folding is idempotent: a key folds to itself.
		if k2, err := FoldAddress(k); err != nil || k2 != k {
			t.Errorf("FoldAddress(FoldAddress(%q)) = %q, %v; want %q", s, k2, err, k)
		}
	})
}
