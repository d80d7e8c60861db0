package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Certs is the server's certificate set: the [[tls.certificate]] pairs, or
// the self-signed certificate when none is configured. Every TLS listener
// shares one Certs, so a reload (SIGHUP) reaches them all.
type Certs struct {
	pairs      []Certificate
	minVersion uint16
	cur        atomic.Pointer[[]*tls.Certificate]
}

// Self-signed certificate files inside Config.TLSDir.
const (
	SelfSignedCert = "cert.pem"
	SelfSignedKey  = "key.pem"
)

// LoadCertificates loads the configured pairs. With none configured it
// makes (once) and loads the self-signed certificate in c.TLSDir(); created
// reports that it was made now.
func LoadCertificates(c *Config) (certs *Certs, created bool, err error) {
	s := &Certs{pairs: c.TLS.Certificates, minVersion: tls.VersionTLS12}
	if c.TLS.MinVersion == "1.3" {
		s.minVersion = tls.VersionTLS13
	}
	if len(s.pairs) == 0 {
		cert, key, made, err := SelfSigned(c.TLSDir(), c.Hostname)
		if err != nil {
			return nil, false, err
		}
		created = made
		s.pairs = []Certificate{{CertFile: cert, KeyFile: key}}
	}
	if err := s.Reload(); err != nil {
		return nil, false, err
	}
	return s, created, nil
}

// Reload reads the certificate files again. On error the previous set stays
// in use.
func (s *Certs) Reload() error {
	set := make([]*tls.Certificate, 0, len(s.pairs))
	for _, p := range s.pairs {
		c, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
		if err != nil {
			return fmt.Errorf("config: tls.certificate %s: %v", p.CertFile, oneLine(err.Error()))
		}
		set = append(set, &c)
	}
	s.cur.Store(&set)
	return nil
}

// Certificates returns the certificates currently in use.
func (s *Certs) Certificates() []*tls.Certificate { return *s.cur.Load() }

// TLSConfig returns a server configuration that picks the certificate by
// SNI (the first one the client supports, else the first) and enforces the
// configured minimum version.
func (s *Certs) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: s.minVersion,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			set := *s.cur.Load()
			for _, c := range set {
				if hello.SupportsCertificate(c) == nil {
					return c, nil
				}
			}
			if len(set) == 0 {
				return nil, errors.New("no certificate")
			}
			return set[0], nil
		},
	}
}

// SelfSigned returns the self-signed certificate and key files in dir,
// making them first if they do not exist: ECDSA P-256, valid for
// localhost, 127.0.0.1, ::1 and hostname. The key file is 0600. They are
// made once and kept, so clients that pinned the certificate keep working
// across restarts.
func SelfSigned(dir, hostname string) (certFile, keyFile string, created bool, err error) {
	certFile, keyFile = filepath.Join(dir, SelfSignedCert), filepath.Join(dir, SelfSignedKey)
	_, cerr := os.Stat(certFile)
	_, kerr := os.Stat(keyFile)
	if cerr == nil && kerr == nil {
		return certFile, keyFile, false, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", false, fmt.Errorf("config: self-signed certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", false, fmt.Errorf("config: self-signed certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", "", false, fmt.Errorf("config: self-signed certificate: %w", err)
	}
	names := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if ip := net.ParseIP(hostname); ip != nil {
		ips = append(ips, ip)
	} else if hostname != "" && hostname != "localhost" {
		names = append(names, hostname)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hostname, Organization: []string{"Tidings self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", false, fmt.Errorf("config: self-signed certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", false, fmt.Errorf("config: self-signed certificate: %w", err)
	}
	// Key first, certificate last: the certificate's presence says the pair
	// is complete. Each is written to a temporary file and renamed, so a
	// crash never leaves half a file.
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", false, err
	}
	if err := writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", false, err
	}
	return certFile, keyFile, true, nil
}

func writeFileAtomic(name string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("config: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("config: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := os.Rename(f.Name(), name); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}
