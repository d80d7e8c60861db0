package smtpd

import (
	"bytes"
	"strings"
	"testing"

	"tidings/auth"
)

// FuzzFilter feeds arbitrary DATA through the filter in two writes and
// checks its promises: a bare CR or LF is always refused, a clean message
// keeps every byte except the fields it drops, and none of our
// Authentication-Results survives.
func FuzzFilter(f *testing.F) {
	seeds := []string{
		"From: a@b\r\nSubject: x\r\n\r\nbody\r\n",
		"Return-Path: <x@y>\r\nAuthentication-Results: mx.test; spf=pass\r\nReceived: from a\r\n\tby b\r\n\r\n",
		"Authentication-Results: (comment) mx.test (c);\r\n dkim=pass\r\nX: y\r\n\r\nz\r\n",
		"no header line\r\n\r\nbody\r\n",
		"Subject: a\nb\r\n",
		"Subject: a\r\rb\r\n",
		"\r\n",
		"",
	}
	for _, s := range seeds {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, data string, cut int) {
		var out bytes.Buffer
		fl := newFilter(&out, "mx.test")
		if cut < 0 || cut > len(data) {
			cut = len(data) / 2
		}
		_, err1 := fl.Write([]byte(data[:cut]))
		var err2 error
		if err1 == nil {
			_, err2 = fl.Write([]byte(data[cut:]))
		}
		err := err1
		if err == nil {
			err = err2
		}
		if err == nil {
			err = fl.finish()
		}
		bare := strings.Contains(strings.ReplaceAll(data, "\r\n", ""), "\r") || strings.Contains(strings.ReplaceAll(data, "\r\n", ""), "\n")
		if bare != (err != nil) {
			t.Fatalf("filter(%q) error = %v; bare CR/LF = %v", data, err, bare)
		}
		if err != nil {
			return
		}
		if out.Len() > len(data) {
			t.Fatalf("filter(%q) wrote %d bytes; more than its input", data, out.Len())
		}
		// The header is the lines up to the empty line or the first line
		// that is neither a field nor a continuation.
		field := false
		for _, l := range strings.Split(out.String(), "\r\n") {
			name, v, ok := strings.Cut(l, ":")
			cont := l != "" && (l[0] == ' ' || l[0] == '\t')
			if l == "" || (cont && !field) || (!ok && !cont) {
				break
			}
			if cont {
				continue
			}
			field = true
			if ok && strings.EqualFold(strings.TrimSpace(name), "authentication-results") && strings.EqualFold(authServID(v), "mx.test") && len(l) < maxFieldBuffer/2 {
				t.Fatalf("filter(%q) kept our Authentication-Results: %q", data, out.String())
			}
		}
	})
}

// FuzzParseAddress checks the address parser smtpd relies on for relay
// protection: whatever it accepts has no routing characters in the local
// part and splits back at its last '@'.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"alice@example.test", "a%b@c", "b!a@c", `"a@b"@c`, "@a:b@c", "jörg@bücher.test", `"a b"@c`, "a+tag@c", "postmaster"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := auth.ParseAddress(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(a.Local, "%!@") {
			t.Fatalf("ParseAddress(%q) = %+v; local part with a routing character", s, a)
		}
		if a.Domain == "" || strings.ContainsAny(a.Domain, "@:[] ") {
			t.Fatalf("ParseAddress(%q) = %+v; bad domain", s, a)
		}
	})
}
