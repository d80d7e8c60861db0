package pop3d

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"tidings/auth"
	"tidings/config"
	"tidings/internal/drivertest"
	"tidings/message"
	"tidings/storage"
	"tidings/storage/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	testDomain = "example.test"
	alice      = "alice@example.test"
	alicePass  = "correct horse battery"
)

// cheapArgon2 keeps logins fast in tests; the cost parameters are not
// what is under test here.
var cheapArgon2 = auth.Argon2Params{Time: 1, Memory: 64, Threads: 1}

// driver is one of the two storage drivers every test runs on.
type driver = drivertest.Driver

func drivers() []driver { return drivertest.Drivers() }

func forEachDriver(t *testing.T, fn func(t *testing.T, d driver)) { drivertest.Each(t, fn) }

// testCerts returns a server TLS config with a self-signed certificate and
// its PEM file (for clients that want a CA file).
func testCerts(t testing.TB) (*tls.Config, string) {
	t.Helper()
	dir := t.TempDir()
	cert, key, _, err := config.SelfSigned(dir, "localhost")
	if err != nil {
		t.Fatalf("config.SelfSigned = %v", err)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatalf("tls.LoadX509KeyPair = %v", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, cert
}

// env is one running server with an account and a few messages.
type env struct {
	t       testing.TB
	store   storage.Store
	dir     *auth.Directory
	srv     *Server
	plain   string // address of the STLS-capable listener
	implied string // address of the implicit-TLS listener
	certPEM string
	acct    storage.Account
	inbox   storage.Mailbox
	raw     [][]byte // what each seeded message's RETR must carry (prefix + blob)
}

type envOpts struct {
	cfg      Config
	authCfg  auth.Config
	store    storage.Store // reuse (second node); nil = new
	noSeed   bool
	trashcan bool
}

// seedMessages are the maildrop of every test: a Delivered-To prefix, a
// body with lines that need byte-stuffing, and a longer body for TOP.
func seedMessages() []struct{ prefix, body string } {
	return []struct{ prefix, body string }{
		{"Delivered-To: bob@example.test\r\n", "From: Carol <carol@example.org>\r\nTo: bob@example.test\r\nSubject: first\r\nMessage-ID: <1@example.org>\r\n\r\nHello Bob.\r\n"},
		{"Delivered-To: alice@example.test\r\n", "From: Dave <dave@example.org>\r\nTo: alice@example.test\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"},
		{"", "From: Erin <erin@example.org>\r\nTo: alice@example.test\r\nSubject: long\r\n\r\nline 1\r\nline 2\r\nline 3\r\nline 4\r\nline 5\r\n"},
	}
}

func newEnv(t testing.TB, d driver, o envOpts) *env {
	t.Helper()
	st := o.store
	if st == nil {
		st = d.NewDB(t)(t)
	}
	return startEnv(t, st, o)
}

func startEnv(t testing.TB, st storage.Store, o envOpts) *env {
	t.Helper()
	ctx := context.Background()
	tlsCfg, certPEM := testCerts(t)
	ac := o.authCfg
	ac.Argon2 = cheapArgon2
	var logger *slog.Logger
	if os.Getenv("POP3D_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	dir := auth.New(st, ac, logger)
	e := &env{t: t, store: st, dir: dir, certPEM: certPEM}
	if o.store == nil {
		if _, err := dir.AddDomain(ctx, testDomain); err != nil {
			t.Fatalf("AddDomain = %v", err)
		}
		a, err := dir.AddUser(ctx, alice, alicePass, auth.UserOptions{})
		if err != nil {
			t.Fatalf("AddUser = %v", err)
		}
		if o.trashcan {
			if err := st.SetPolicy(ctx, a.ID, storage.Policy{Trashcan: true}); err != nil {
				t.Fatalf("SetPolicy = %v", err)
			}
		}
	}
	a, err := st.AccountByAddress(ctx, alice)
	if err != nil {
		t.Fatalf("AccountByAddress = %v", err)
	}
	e.acct = a
	e.inbox, err = st.Mailbox(ctx, a.ID, a.ID, "INBOX")
	if err != nil {
		t.Fatalf("Mailbox(INBOX) = %v", err)
	}
	if o.store == nil && !o.noSeed {
		for _, m := range seedMessages() {
			e.appendMsg(m.prefix, m.body)
		}
	}
	cfg := o.cfg
	cfg.TLS = tlsCfg
	if cfg.Hostname == "" {
		cfg.Hostname = "pop.example.test"
	}
	e.srv = New(cfg, Deps{Store: st, Dir: dir, Logger: logger})
	for _, implicit := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen = %v", err)
		}
		if implicit {
			e.implied = ln.Addr().String()
			go e.srv.ServeTLS(ln)
		} else {
			e.plain = ln.Addr().String()
			go e.srv.Serve(ln)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if n := e.srv.Panics(); n != 0 {
			t.Errorf("Panics() = %d; want 0", n)
		}
	})
	return e
}

// appendMsg stores one message in INBOX and records its RETR bytes.
func (e *env) appendMsg(prefix, body string) storage.AppendResult {
	e.t.Helper()
	a, err := message.Analyze(strings.NewReader(body), int64(len(body)), message.Options{})
	if err != nil {
		e.t.Fatalf("Analyze = %v", err)
	}
	var p []byte
	if prefix != "" {
		p = []byte(prefix)
	}
	res, err := e.store.Append(context.Background(), e.acct.ID, e.acct.ID, e.inbox.ID, storage.BytesSource(body), storage.NewMessage{Prefix: p, Analysis: a})
	if err != nil {
		e.t.Fatalf("Append = %v", err)
	}
	e.raw = append(e.raw, []byte(prefix+body))
	return res
}

// inboxUIDs lists the UIDs now in INBOX.
func (e *env) inboxUIDs() []storage.UID {
	e.t.Helper()
	ms, err := e.store.Messages(context.Background(), e.acct.ID, e.acct.ID, e.inbox.ID, nil, storage.MessageOptions{})
	if err != nil {
		e.t.Fatalf("Messages = %v", err)
	}
	var u []storage.UID
	for _, m := range ms {
		u = append(u, m.UID)
	}
	return u
}

// waitIdle waits until the server has no session left (a session ends
// asynchronously after the client goes away). It polls; no test asserts
// on how long it takes.
func (e *env) waitIdle() {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		e.srv.mu.Lock()
		n := len(e.srv.sessions)
		e.srv.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.t.Fatalf("sessions still open after 30s")
}

// client is a minimal POP3 client speaking raw lines, so tests see the
// exact bytes.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func (e *env) dial(implicitTLS bool) *client {
	e.t.Helper()
	var c net.Conn
	var err error
	if implicitTLS {
		c, err = tls.Dial("tcp", e.implied, &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = net.Dial("tcp", e.plain)
	}
	if err != nil {
		e.t.Fatalf("dial = %v", err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	cl := &client{t: e.t, conn: c, r: bufio.NewReader(c)}
	e.t.Cleanup(func() { c.Close() })
	return cl
}

// login dials implicit TLS and logs in as alice.
func (e *env) login() *client {
	e.t.Helper()
	c := e.dial(true)
	c.expect("+OK *")
	c.send("USER " + alice)
	c.expect("+OK*")
	c.send("PASS " + alicePass)
	c.expect("+OK maildrop has *")
	return c
}

func (c *client) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

func (c *client) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read reply: %v (partial %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("reply %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

func (c *client) expect(pattern string) string {
	c.t.Helper()
	l := c.line()
	if !match(pattern, l) {
		c.t.Fatalf("reply = %q; want %q", l, pattern)
	}
	return l
}

// multi reads a multi-line body up to ".", undoing byte-stuffing, and
// returns the raw octets with CRLFs.
func (c *client) multi() []byte {
	c.t.Helper()
	var b bytes.Buffer
	for {
		l := c.line()
		if l == "." {
			return b.Bytes()
		}
		l = strings.TrimPrefix(l, ".")
		b.WriteString(l + "\r\n")
	}
}

// eof reports whether the server closed the connection.
func (c *client) eof() bool {
	c.t.Helper()
	_, err := c.r.ReadByte()
	return err == io.EOF || err != nil && strings.Contains(err.Error(), "reset")
}

func (c *client) upgrade() {
	c.t.Helper()
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake after STLS = %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

// match is glob matching where only "*" is special (any run of bytes).
func match(pattern, s string) bool {
	for {
		i := strings.IndexByte(pattern, '*')
		if i < 0 {
			return pattern == s
		}
		if !strings.HasPrefix(s, pattern[:i]) {
			return false
		}
		s, pattern = s[i:], pattern[i+1:]
		if pattern == "" {
			return true
		}
		for j := 0; j <= len(s); j++ {
			if match(pattern, s[j:]) {
				return true
			}
		}
		return false
	}
}

func plainResp(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}
