package smtpd

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"tidings/auth"
	"tidings/config"
	"tidings/delivery"
	"tidings/internal/dnstest"
	"tidings/internal/drivertest"
	"tidings/storage"
	"tidings/storage/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	testDomain = "example.test"
	alice      = "alice@example.test"
	bob        = "bob@example.test"
	alicePass  = "correct horse battery"
	// sender.test publishes SPF for 127.0.0.1, a DKIM key and DMARC
	// p=reject; strict.test publishes p=reject and nothing that passes.
	senderDomain = "sender.test"
	dkimSelector = "sel"
)

var cheapArgon2 = auth.Argon2Params{Time: 1, Memory: 64, Threads: 1}

// driver is one of the two storage drivers every test runs on.
type driver = drivertest.Driver

func drivers() []driver { return drivertest.Drivers() }

func forEachDriver(t *testing.T, fn func(t *testing.T, d driver)) { drivertest.Each(t, fn) }

func testTLS(t testing.TB) *tls.Config {
	t.Helper()
	cert, key, _, err := config.SelfSigned(t.TempDir(), "localhost")
	if err != nil {
		t.Fatalf("config.SelfSigned = %v", err)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatalf("tls.LoadX509KeyPair = %v", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// env is a running MX and submission server over one store.
type env struct {
	t       testing.TB
	store   storage.Store
	dir     *auth.Directory
	local   *delivery.Local
	dns     *dnstest.Server
	mx      *Server
	sub     *Server
	mxAddr  string
	subAddr string // STARTTLS
	subsTLS string // implicit TLS
	dkimKey ed25519.PrivateKey
}

type envOpts struct {
	mx, sub func(*Config)
}

func newEnv(t *testing.T, d driver, o envOpts) *env {
	t.Helper()
	ctx := context.Background()
	st := d.NewDB(t)(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	dir := auth.New(st, auth.Config{Argon2: cheapArgon2, SessionCheck: 50 * time.Millisecond}, log)
	e := &env{t: t, store: st, dir: dir, dns: dnstest.New(t)}
	if _, err := dir.AddDomain(ctx, testDomain); err != nil {
		t.Fatalf("AddDomain = %v", err)
	}
	for _, u := range []string{alice, bob} {
		if _, err := dir.AddUser(ctx, u, alicePass, auth.UserOptions{}); err != nil {
			t.Fatalf("AddUser(%q) = %v", u, err)
		}
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	e.dkimKey = priv
	e.dns.TXT(senderDomain, "v=spf1 ip4:127.0.0.1 -all")
	e.dns.TXT(dkimSelector+"._domainkey."+senderDomain, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	e.dns.TXT("_dmarc."+senderDomain, "v=DMARC1; p=reject")
	e.dns.TXT("strict.test", "v=spf1 -all")
	e.dns.TXT("_dmarc.strict.test", "v=DMARC1; p=reject")

	key, err := delivery.GenerateDKIMKey(testDomain, "tidings", "ed25519-sha256")
	if err != nil {
		t.Fatalf("GenerateDKIMKey = %v", err)
	}
	if err := st.PutDKIMKey(ctx, key); err != nil {
		t.Fatalf("PutDKIMKey = %v", err)
	}
	e.local = delivery.NewLocal(delivery.LocalConfig{Hostname: "mx.example.test"}, delivery.LocalDeps{
		Store: st, Dir: dir, Logger: log,
		Signer: delivery.NewSigner(st, log),
		SRS:    delivery.NewSRS([]byte("0123456789abcdef0123456789abcdef"), "mx.example.test"),
	})
	tc := testTLS(t)
	mxCfg := Config{Mode: MX, Hostname: "mx.example.test", TLS: tc, Resolver: e.dns.Resolver()}
	if o.mx != nil {
		o.mx(&mxCfg)
	}
	subCfg := Config{Mode: Submission, Hostname: "mx.example.test", TLS: tc, Resolver: e.dns.Resolver()}
	if o.sub != nil {
		o.sub(&subCfg)
	}
	deps := Deps{Store: st, Dir: dir, Local: e.local, Logger: log}
	e.mx = New(mxCfg, deps)
	e.sub = New(subCfg, deps)
	e.mxAddr = e.serve(e.mx, false)
	e.subAddr = e.serve(e.sub, false)
	e.subsTLS = e.serve(e.sub, true)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.mx.Shutdown(ctx)
		e.sub.Shutdown(ctx)
		if n := e.mx.Panics() + e.sub.Panics(); n != 0 {
			t.Errorf("Panics() = %d; want 0", n)
		}
	})
	return e
}

func (e *env) serve(s *Server, implicit bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatalf("listen: %v", err)
	}
	go func() {
		if implicit {
			s.ServeTLS(ln)
		} else {
			s.Serve(ln)
		}
	}()
	return ln.Addr().String()
}

// dial opens a go-smtp client on the MX and says EHLO.
func (e *env) dial(addr string) *smtp.Client {
	e.t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		e.t.Fatalf("smtp.Dial(%q) = %v", addr, err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.sender.test"); err != nil {
		e.t.Fatalf("Hello = %v", err)
	}
	return c
}

// dialSubmission opens an authenticated submission session over STARTTLS.
func (e *env) dialSubmission(user string) *smtp.Client {
	e.t.Helper()
	c, err := smtp.DialStartTLS(e.subAddr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		e.t.Fatalf("smtp.DialStartTLS = %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Auth(plainAuth(user, alicePass)); err != nil {
		e.t.Fatalf("Auth(%q) = %v", user, err)
	}
	return c
}

// send runs one transaction and returns the error of the first step that
// failed (nil = 250 after DATA).
func send(c *smtp.Client, from string, to []string, msg string, opts *smtp.MailOptions) error {
	if err := c.Mail(from, opts); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

// code returns the SMTP code and enhanced code of err ("250 2.0.0" for nil).
func code(err error) string {
	if err == nil {
		return "250 2.0.0"
	}
	se, ok := err.(*smtp.SMTPError)
	if !ok {
		return "error: " + err.Error()
	}
	if se.EnhancedCode == smtp.NoEnhancedCode || se.EnhancedCode == (smtp.EnhancedCode{}) {
		return fmt.Sprint(se.Code)
	}
	return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

func plainAuth(user, pass string) sasl.Client { return sasl.NewPlainClient("", user, pass) }

// inbox returns the full messages (prefix + blob) in addr's INBOX.
func (e *env) inbox(addr string) []string {
	e.t.Helper()
	ctx := context.Background()
	acct, err := e.store.AccountByAddress(ctx, addr)
	if err != nil {
		e.t.Fatalf("AccountByAddress(%q) = %v", addr, err)
	}
	mb, err := e.store.Mailbox(ctx, storage.System, acct.ID, "INBOX")
	if err != nil {
		e.t.Fatalf("Mailbox(INBOX) = %v", err)
	}
	msgs, err := e.store.Messages(ctx, storage.System, acct.ID, mb.ID, nil, storage.MessageOptions{Prefix: true})
	if err != nil {
		e.t.Fatalf("Messages = %v", err)
	}
	var out []string
	for _, m := range msgs {
		_, r, err := e.store.OpenMessage(ctx, storage.System, acct.ID, mb.ID, m.UID)
		if err != nil {
			e.t.Fatalf("OpenMessage = %v", err)
		}
		b, _ := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		r.Close()
		out = append(out, string(m.Prefix)+string(b))
	}
	return out
}

func simpleMsg(from, subject string) string {
	return "From: <" + from + ">\r\nTo: <alice@example.test>\r\nSubject: " + subject +
		"\r\nDate: Mon, 02 Jan 2006 15:04:05 +0000\r\nMessage-ID: <" + subject + "@sender.test>\r\n\r\nHello.\r\n"
}

// signed returns msg with a DKIM signature of sender.test.
func (e *env) signed(msg string) string {
	e.t.Helper()
	var b strings.Builder
	if err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: senderDomain, Selector: dkimSelector, Signer: e.dkimKey}); err != nil {
		e.t.Fatalf("dkim.Sign = %v", err)
	}
	return b.String()
}

// raw is a plain TCP SMTP conversation for what a client library will not
// send (bare LFs, pipelined STARTTLS).
type raw struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("net.Dial(%q) = %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	r := &raw{t: t, c: c, br: bufio.NewReader(c)}
	r.reply() // greeting
	return r
}

func (r *raw) write(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (r *raw) reply() string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		l, err := r.br.ReadString('\n')
		if err != nil {
			return "error: " + err.Error()
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

// cmd writes a line and returns the reply.
func (r *raw) cmd(line string) string {
	r.t.Helper()
	r.write(line + "\r\n")
	return r.reply()
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
