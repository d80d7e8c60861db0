package delivery

// Test harness of the outbound half: stores on both drivers, a receiving
// go-smtp server, and an in-process DNS server (never the machine's
// resolver).

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"tidings/auth"
	"tidings/storage"
	"tidings/storage/postgres"
	"tidings/storage/postgres/pgtest"
	"tidings/storage/sqlite"
)

// obDriver opens a fresh migrated database and returns an opener of store
// instances on it (two instances = two nodes).
type obDriver struct {
	name  string
	newDB func(t *testing.T) func(t *testing.T) storage.Store
}

func obDrivers() []obDriver {
	return []obDriver{
		{"sqlite", func(t *testing.T) func(t *testing.T) storage.Store {
			path := filepath.Join(t.TempDir(), "tidings.db")
			if err := sqlite.Migrate(context.Background(), path, nil); err != nil {
				t.Fatalf("sqlite.Migrate = %v", err)
			}
			return func(t *testing.T) storage.Store {
				s, err := sqlite.Open(context.Background(), path, storage.Options{})
				if err != nil {
					t.Fatalf("sqlite.Open = %v", err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
		}},
		{"postgres", func(t *testing.T) func(t *testing.T) storage.Store {
			url := pgtest.NewDatabase(t)
			if err := postgres.Migrate(context.Background(), url, nil); err != nil {
				t.Fatalf("postgres.Migrate = %v", err)
			}
			return func(t *testing.T) storage.Store {
				s, err := postgres.Open(context.Background(), url, storage.Options{})
				if err != nil {
					t.Fatalf("postgres.Open = %v", err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
		}},
	}
}

// forEachDriver runs fn per driver with a fresh database.
func forEachDriver(t *testing.T, fn func(t *testing.T, open func(t *testing.T) storage.Store)) {
	for _, d := range obDrivers() {
		t.Run(d.name, func(t *testing.T) { fn(t, d.newDB(t)) })
	}
}

// ---- receiving SMTP server ----

type sinkMsg struct {
	tls      bool   // the transaction ran under TLS
	user     string // AUTH PLAIN user, "" = none
	from     string
	mail     smtp.MailOptions
	rcpts    []string
	rcptOpts []smtp.RcptOptions
	data     []byte
}

// sink is a receiving SMTP server that records every accepted message.
type sink struct {
	addr string
	host string
	port int

	mu     sync.Mutex
	msgs   []sinkMsg
	wire   bytes.Buffer
	rcptFn func(to string) error // nil: accept
}

type sinkOptions struct {
	noDSN, noUTF8 bool
	tls           *tls.Config // offer STARTTLS with it
	password      string      // accept AUTH PLAIN with any user and this password
}

func newSink(t *testing.T, o sinkOptions) *sink {
	t.Helper()
	sk := &sink{}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sk: sk, conn: c, password: o.password}, nil
	}))
	s.TLSConfig = o.tls
	s.Domain = "sink.test"
	s.EnableDSN = !o.noDSN
	s.EnableSMTPUTF8 = !o.noUTF8
	s.AllowInsecureAuth = true
	s.Debug = lockedWriter{sk}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	sk.addr = ln.Addr().String()
	sk.port = ln.Addr().(*net.TCPAddr).Port
	return sk
}

type lockedWriter struct{ sk *sink }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.sk.mu.Lock()
	defer w.sk.mu.Unlock()
	return w.sk.wire.Write(p)
}

func (sk *sink) messages() []sinkMsg {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	return append([]sinkMsg(nil), sk.msgs...)
}

func (sk *sink) wireBytes() []byte {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	return bytes.Clone(sk.wire.Bytes())
}

func (sk *sink) setRcpt(fn func(to string) error) {
	sk.mu.Lock()
	sk.rcptFn = fn
	sk.mu.Unlock()
}

type sinkSession struct {
	sk       *sink
	conn     *smtp.Conn
	password string
	user     string
	cur      sinkMsg
}

func (s *sinkSession) AuthMechanisms() []string {
	if s.password == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *sinkSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if password != s.password {
			return errors.New("bad password")
		}
		s.user = username
		return nil
	}), nil
}

func (s *sinkSession) Reset()        { s.cur = sinkMsg{} }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(from string, opts *smtp.MailOptions) error {
	if s.password != "" && s.user == "" {
		return smtp.ErrAuthRequired
	}
	_, tlsOn := s.conn.TLSConnectionState()
	s.cur = sinkMsg{from: from, tls: tlsOn, user: s.user}
	if opts != nil {
		s.cur.mail = *opts
	}
	return nil
}
func (s *sinkSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.sk.mu.Lock()
	fn := s.sk.rcptFn
	s.sk.mu.Unlock()
	if fn != nil {
		if err := fn(to); err != nil {
			return err
		}
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	if opts != nil {
		s.cur.rcptOpts = append(s.cur.rcptOpts, *opts)
	} else {
		s.cur.rcptOpts = append(s.cur.rcptOpts, smtp.RcptOptions{})
	}
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = b
	s.sk.mu.Lock()
	s.sk.msgs = append(s.sk.msgs, s.cur)
	s.sk.mu.Unlock()
	return nil
}

// ---- DNS ----

// testDNS is an in-process authoritative DNS server for the test zones.
type testDNS struct {
	mu  sync.Mutex
	mx  map[string][]*dns.MX
	a   map[string][]string
	txt map[string][]string
	res *net.Resolver
}

func newTestDNS(t *testing.T) *testDNS {
	t.Helper()
	d := &testDNS{mx: map[string][]*dns.MX{}, a: map[string][]string{}, txt: map[string][]string{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve)}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	addr := pc.LocalAddr().String()
	d.res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, "udp", addr)
	}}
	return d
}

func (d *testDNS) addMX(domain, host string, pref uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mx[dns.Fqdn(domain)] = append(d.mx[dns.Fqdn(domain)], &dns.MX{Hdr: dns.RR_Header{Name: dns.Fqdn(domain), Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60}, Preference: pref, Mx: dns.Fqdn(host)})
}

func (d *testDNS) addA(host, ip string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.a[dns.Fqdn(host)] = append(d.a[dns.Fqdn(host)], ip)
}

func (d *testDNS) addTXT(name, value string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txt[dns.Fqdn(name)] = append(d.txt[dns.Fqdn(name)], value)
}

func (d *testDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	d.mu.Lock()
	mxs, as, txts := d.mx[name], d.a[name], d.txt[name]
	d.mu.Unlock()
	if mxs == nil && as == nil && txts == nil {
		m.Rcode = dns.RcodeNameError
		w.WriteMsg(m)
		return
	}
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
	switch q.Qtype {
	case dns.TypeMX:
		for _, mx := range mxs {
			m.Answer = append(m.Answer, mx)
		}
	case dns.TypeA:
		for _, ip := range as {
			h := hdr
			h.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: h, A: net.ParseIP(ip)})
		}
	case dns.TypeTXT:
		for _, v := range txts {
			h := hdr
			h.Rrtype = dns.TypeTXT
			var parts []string
			for len(v) > 255 {
				parts, v = append(parts, v[:255]), v[255:]
			}
			m.Answer = append(m.Answer, &dns.TXT{Hdr: h, Txt: append(parts, v)})
		}
	}
	w.WriteMsg(m)
}

// ---- environment ----

// obEnv is one store with a local domain (example.org, user@example.org),
// a sink and the test DNS.
type obEnv struct {
	t     *testing.T
	ctx   context.Context
	open  func(t *testing.T) storage.Store
	store storage.Store
	dir   *auth.Directory
	sink  *sink
	dns   *testDNS
	user  storage.Account
	log   *logLines
	seq   int
}

func newObEnv(t *testing.T, open func(t *testing.T) storage.Store, so sinkOptions) *obEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &obEnv{t: t, ctx: ctx, open: open, store: open(t), sink: newSink(t, so), dns: newTestDNS(t), log: &logLines{}}
	e.dir = auth.New(e.store, auth.Config{}, nil)
	if _, err := e.dir.AddDomain(ctx, "example.org"); err != nil {
		t.Fatalf("AddDomain = %v", err)
	}
	u, err := e.dir.AddUser(ctx, "user@example.org", "", auth.UserOptions{})
	if err != nil {
		t.Fatalf("AddUser = %v", err)
	}
	e.user = u
	return e
}

// runner returns a Runner through the sink as smarthost (cfg may override).
func (e *obEnv) runner(cfg RunnerConfig, now func() time.Time) *Runner {
	if cfg.Hostname == "" {
		cfg.Hostname = "mail.example.org"
	}
	if cfg.Smarthost == "" && cfg.Port == 0 {
		cfg.Smarthost = e.sink.addr
		cfg.SmarthostTLS = "none"
	}
	if cfg.Resolver == nil {
		cfg.Resolver = e.dns.res
	}
	if cfg.Poll == 0 {
		cfg.Poll = 50 * time.Millisecond
	}
	return NewRunner(cfg, RunnerDeps{Store: e.store, Dir: e.dir, Logger: slog.New(slog.NewTextHandler(e.log, nil)), Now: now})
}

// message returns unique message bytes.
func (e *obEnv) message(extra string) storage.BytesSource {
	e.seq++
	return storage.BytesSource(fmt.Sprintf("From: sender@origin.example\r\nTo: far@example.net\r\nSubject: test %d\r\n"+
		"Message-ID: <%d.%d@origin.example>\r\n%s\r\nbody %d\r\n", e.seq, e.seq, time.Now().UnixNano(), extra, e.seq))
}

// remote is a QueueRemote message to example.net.
func remote(from string, rcpts ...string) storage.QueueMessage {
	m := storage.QueueMessage{Kind: storage.QueueRemote, From: from, Destination: "example.net",
		ENVID: "env-42", RET: "HDRS", Prefix: []byte("Received: from test by mail.example.org\r\n")}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, storage.QueueRecipient{Address: r, ORCPT: "rfc822;" + r, Notify: "FAILURE,DELAY"})
	}
	return m
}

func (e *obEnv) enqueue(src storage.BytesSource, m storage.QueueMessage) string {
	e.t.Helper()
	ids, err := e.store.Enqueue(e.ctx, src, []storage.QueueMessage{m})
	if err != nil || len(ids) != 1 {
		e.t.Fatalf("Enqueue = %v, %v; want one id", ids, err)
	}
	return ids[0]
}

func (e *obEnv) drain(r *Runner) {
	e.t.Helper()
	if _, err := r.drain(e.ctx); err != nil {
		e.t.Fatalf("drain = %v; want nil", err)
	}
}

func (e *obEnv) queue() []storage.QueueMessage {
	e.t.Helper()
	ms, err := e.store.QueueList(e.ctx, storage.QueueFilter{})
	if err != nil {
		e.t.Fatalf("QueueList = %v", err)
	}
	return ms
}

// logLines collects log output.
type logLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// waitFor polls cond until it holds or the test's patience ends (no timing
// assertion: only a bound on a hang).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testCert makes a self-signed certificate for host (and 127.0.0.1) and
// a pool that trusts it.
func testCert(t *testing.T, host string) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}
