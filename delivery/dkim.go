package delivery

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"tidings/storage"
)

// DKIM algorithms as stored in storage.DKIMKey.Algorithm (RFC 6376 §3.3,
// RFC 8463).
const (
	DKIMEd25519 = "ed25519-sha256"
	DKIMRSA     = "rsa-sha256"
)

// dkimHeaders are the fields signed (RFC 6376 §5.4.1's recommended set).
// From is listed twice: a signed-but-absent occurrence stops anyone adding
// a second From below the signature (RFC 6376 §8.15, over-signing).
var dkimHeaders = []string{
	"From", "From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "Content-Disposition", "List-Id",
	"List-Unsubscribe", "List-Unsubscribe-Post",
}

// Signer makes DKIM-Signature fields with the keys the store holds for a
// domain, so every node signs with the same keys (DESIGN.md
// §Configuration).
type Signer struct {
	keys storage.Keys
	log  *slog.Logger
	now  func() time.Time
}

// NewSigner returns a Signer reading keys from keys. log may be nil.
func NewSigner(keys storage.Keys, log *slog.Logger) *Signer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Signer{keys: keys, log: log, now: time.Now}
}

// Sign reads the whole message from r and returns the DKIM-Signature
// header fields to put above it, one per key of domain, each ending in
// CRLF; nil, nil when the domain has no key. Signing is relaxed/relaxed
// (RFC 6376 §3.4.2, §3.4.4), which survives the header folding and
// whitespace changes of ordinary relays.
func (s *Signer) Sign(ctx context.Context, domain string, r io.Reader) ([]byte, error) {
	if domain == "" {
		return nil, nil
	}
	keys, err := s.keys.DKIMKeys(ctx, domain)
	if err != nil {
		return nil, fmt.Errorf("dkim keys of %s: %w", domain, err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	var signers []*dkim.Signer
	var writers []io.Writer
	for _, k := range keys {
		priv, err := ParseDKIMKey(k.PrivatePEM)
		if err != nil {
			s.log.Error("dkim key unusable", "domain", k.Domain, "selector", k.Selector, "err", err)
			continue
		}
		ds, err := dkim.NewSigner(&dkim.SignOptions{
			Domain:                 k.Domain,
			Selector:               k.Selector,
			Signer:                 priv,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             dkimHeaders,
		})
		if err != nil {
			return nil, fmt.Errorf("dkim signer %s/%s: %w", k.Domain, k.Selector, err)
		}
		signers = append(signers, ds)
		writers = append(writers, ds)
	}
	if len(signers) == 0 {
		return nil, nil
	}
	if _, err := io.Copy(io.MultiWriter(writers...), r); err != nil {
		for _, ds := range signers {
			ds.Close()
		}
		return nil, fmt.Errorf("dkim sign: %w", err)
	}
	var out []byte
	for _, ds := range signers {
		if err := ds.Close(); err != nil {
			return nil, fmt.Errorf("dkim sign: %w", err)
		}
		out = append(out, ds.Signature()...)
	}
	return out, nil
}

// ParseDKIMKey reads a PKCS#8 PEM private key (ed25519 or RSA).
func ParseDKIMKey(pemBytes []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		if rk, err2 := x509.ParsePKCS1PrivateKey(b.Bytes); err2 == nil {
			return rk, nil
		}
		return nil, err
	}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", k)
}

// GenerateDKIMKey makes a new key: algorithm "ed25519" (RFC 8463) or "rsa"
// (2048 bits, what every verifier understands).
func GenerateDKIMKey(domain, selector, algorithm string) (storage.DKIMKey, error) {
	var priv crypto.Signer
	var alg string
	switch strings.ToLower(algorithm) {
	case "ed25519", DKIMEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return storage.DKIMKey{}, err
		}
		priv, alg = k, DKIMEd25519
	case "rsa", DKIMRSA:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return storage.DKIMKey{}, err
		}
		priv, alg = k, DKIMRSA
	default:
		return storage.DKIMKey{}, fmt.Errorf("unknown DKIM algorithm %q (want ed25519 or rsa)", algorithm)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return storage.DKIMKey{}, err
	}
	return storage.DKIMKey{
		Domain: domain, Selector: selector, Algorithm: alg,
		PrivatePEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		Created:    time.Now(),
	}, nil
}

// DKIMRecord returns the TXT record value publishing k's public key at
// <selector>._domainkey.<domain> (RFC 6376 §3.6.1): for ed25519 the raw
// 32-byte key (RFC 8463 §4.2), for RSA the SubjectPublicKeyInfo.
func DKIMRecord(k storage.DKIMKey) (string, error) {
	priv, err := ParseDKIMKey(k.PrivatePEM)
	if err != nil {
		return "", err
	}
	switch pub := priv.Public().(type) {
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	}
	return "", fmt.Errorf("unsupported key type %T", priv.Public())
}
