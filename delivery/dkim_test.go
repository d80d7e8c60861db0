package delivery

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"tidings/storage"
)

// Sign with ed25519 and RSA keys from the store; go-msgauth's verifier,
// reading the published records from the in-process DNS, accepts both.
func TestSignerVerifies(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		ctx := context.Background()
		s := open(t)
		d := newTestDNS(t)
		for _, k := range []struct{ sel, alg string }{{"ed", "ed25519"}, {"rsa", "rsa"}} {
			key, err := GenerateDKIMKey("example.org", k.sel, k.alg)
			if err != nil {
				t.Fatalf("GenerateDKIMKey(%s) = %v", k.alg, err)
			}
			if err := s.PutDKIMKey(ctx, key); err != nil {
				t.Fatalf("PutDKIMKey = %v", err)
			}
			rec, err := DKIMRecord(key)
			if err != nil {
				t.Fatalf("DKIMRecord = %v", err)
			}
			d.addTXT(k.sel+"._domainkey.example.org", rec)
		}
		signer := NewSigner(s, nil)
		msg := []byte("From: User <user@example.org>\r\nTo: far@example.net\r\nSubject: signed\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHello,\r\nworld.\r\n")
		sig, err := signer.Sign(ctx, "EXAMPLE.org", bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("Sign = %v; want nil", err)
		}
		if n := strings.Count(string(sig), "DKIM-Signature:"); n != 2 || !bytes.HasSuffix(sig, []byte("\r\n")) {
			t.Fatalf("Sign = %q; want two DKIM-Signature fields ending in CRLF", sig)
		}
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(append(sig, msg...)), &dkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) { return d.res.LookupTXT(ctx, name) },
		})
		if err != nil || len(vs) != 2 {
			t.Fatalf("Verify = %d results, %v; want 2", len(vs), err)
		}
		for _, v := range vs {
			if v.Err != nil || v.Domain != "example.org" {
				t.Errorf("verification = domain %q, err %v; want example.org, nil", v.Domain, v.Err)
			}
		}
		// Tampering breaks it.
		bad := bytes.Replace(append(sig, msg...), []byte("world"), []byte("WORLD"), 1)
		vs, _ = dkim.VerifyWithOptions(bytes.NewReader(bad), &dkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) { return d.res.LookupTXT(ctx, name) },
		})
		for _, v := range vs {
			if v.Err == nil {
				t.Errorf("tampered body verified for selector in %v; want failure", v.HeaderKeys)
			}
		}
		if sig, err := signer.Sign(ctx, "nokey.example", bytes.NewReader(msg)); sig != nil || err != nil {
			t.Errorf("Sign(no key) = %q, %v; want nil, nil", sig, err)
		}
	})
}
