package auth

import (
	"errors"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in      string
		key     string // "" = expect ErrBadAddress
		display string
	}{
		{"user@example.com", "user@example.com", "user@example.com"},
		{"User@Example.COM", "user@example.com", "User@example.com"},
		{"JÖRG@Bücher.Example", "jörg@xn--bcher-kva.example", "JÖRG@bücher.example"},
		{"jörg@xn--bcher-kva.example", "jörg@xn--bcher-kva.example", "jörg@bücher.example"},
		{"a+tag@x.test", "a+tag@x.test", "a+tag@x.test"},
		{`"john"@x.test`, "john@x.test", "john@x.test"},
		{`"john doe"@x.test`, `"john doe"@x.test`, `"john doe"@x.test`},
		{"first.last@x.test.", "first.last@x.test", "first.last@x.test"},
		{"foo", "", ""},
		{"@x.test", "", ""},
		{"a@", "", ""},
		{"a b@x.test", "", ""},
		{"a\x00b@x.test", "", ""},
		{"a\r\n@x.test", "", ""},
		{"@relay.example:user@x.test", "", ""},
		{"@a.example,@b.example:user@x.test", "", ""},
		{"user%other.example@x.test", "", ""},
		{"other.example!user@x.test", "", ""},
		{`"user@other.example"@x.test`, "", ""},
		{`"user%other"@x.test`, "", ""},
		{"user@[192.0.2.1]", "", ""},
		{"a<b@x.test", "", ""},
		{"user@exa mple.com", "", ""},
		{"user@-bad-.test", "", ""},
		{string(make([]byte, 65)) + "@x.test", "", ""},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.test", "", ""},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.test", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.test", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.test"},
		{"\xff@x.test", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := ParseAddress(tt.in)
			if tt.key == "" {
				if !errors.Is(err, ErrBadAddress) {
					t.Fatalf("ParseAddress(%q) = %+v, %v; want ErrBadAddress", tt.in, a, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAddress(%q) error %v", tt.in, err)
			}
			if got := a.Key(); got != tt.key {
				t.Errorf("ParseAddress(%q).Key() = %q; want %q", tt.in, got, tt.key)
			}
			if got := a.String(); got != tt.display {
				t.Errorf("ParseAddress(%q).String() = %q; want %q", tt.in, got, tt.display)
			}
		})
	}
}

func TestParseAddressMessage(t *testing.T) {
	_, err := ParseAddress("foo")
	if got, want := err.Error(), `malformed address "foo": missing @`; got != want {
		t.Errorf("ParseAddress(%q) error = %q; want %q", "foo", got, want)
	}
	if !errors.Is(err, ErrBadAddress) {
		t.Errorf("ParseAddress(%q) error = %v; want it to wrap ErrBadAddress", "foo", err)
	}
}

func TestStripSubaddress(t *testing.T) {
	tests := []struct {
		local, sep, want string
		ok               bool
	}{
		{"user+tag", "+", "user", true},
		{"user+a+b", "+", "user", true},
		{"+tag", "+", "+tag", false},
		{"user", "+", "user", false},
		{"user-tag", "-", "user", true},
		{"user+tag", "", "user+tag", false},
	}
	for _, tt := range tests {
		t.Run(tt.local+tt.sep, func(t *testing.T) {
			got, ok := stripSubaddress(tt.local, tt.sep)
			if got != tt.want || ok != tt.ok {
				t.Errorf("stripSubaddress(%q, %q) = %q, %v; want %q, %v", tt.local, tt.sep, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"a@b.c", "JÖRG@Bücher.Example", `"x y"@z.test`, "@a:b@c", "a%b@c", "a!b@c", `"a@b"@c`, "a@[1.2.3.4]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("ParseAddress(%q) error %v does not wrap ErrBadAddress", s, err)
			}
			return
		}
		// The display form must parse again to the same key.
		b, err := ParseAddress(a.String())
		if err != nil {
			t.Fatalf("ParseAddress(%q) of display form %q: %v", s, a.String(), err)
		}
		if a.Key() != b.Key() {
			t.Fatalf("ParseAddress(%q).Key() = %q, reparsed %q", s, a.Key(), b.Key())
		}
	})
}
