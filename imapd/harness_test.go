package imapd

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"tidings/auth"
	"tidings/config"
	"tidings/internal/drivertest"
	"tidings/storage"
	"tidings/storage/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	testDomain = "example.test"
	alice      = "alice@example.test"
	bob        = "bob@example.test"
	password   = "correct horse battery"
)

var cheapArgon2 = auth.Argon2Params{Time: 1, Memory: 64, Threads: 1}

// driver is one of the two storage drivers every test runs on.
type driver = drivertest.Driver

func drivers() []driver { return drivertest.Drivers() }

func forEachDriver(t *testing.T, fn func(t *testing.T, d driver)) { drivertest.Each(t, fn) }

func testTLS(t testing.TB) *tls.Config {
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
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// env is one running server (node) over a store.
type env struct {
	t       testing.TB
	store   storage.Store
	dir     *auth.Directory
	srv     *Server
	plain   string
	implied string
}

func testLogger() *slog.Logger {
	if os.Getenv("IMAPD_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// seed creates the domain and the test accounts.
func seed(t testing.TB, st storage.Store) {
	t.Helper()
	dir := auth.New(st, auth.Config{Argon2: cheapArgon2}, nil)
	ctx := context.Background()
	if _, err := dir.AddDomain(ctx, testDomain); err != nil {
		t.Fatalf("AddDomain = %v", err)
	}
	for _, u := range []string{alice, bob} {
		if _, err := dir.AddUser(ctx, u, password, auth.UserOptions{}); err != nil {
			t.Fatalf("AddUser(%q) = %v", u, err)
		}
	}
}

// startServer runs a node over st.
func startServer(t testing.TB, st storage.Store, cfg Config) *env {
	t.Helper()
	logger := testLogger()
	// A short session check so TestDisabledAccountEndsSession is quick.
	dir := auth.New(st, auth.Config{Argon2: cheapArgon2, SessionCheck: 50 * time.Millisecond}, logger)
	cfg.TLS = testTLS(t)
	e := &env{t: t, store: st, dir: dir}
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

func newEnv(t testing.TB, d driver) *env {
	t.Helper()
	st := d.NewDB(t)(t)
	seed(t, st)
	return startServer(t, st, Config{})
}

// wire records what the server sent, to count responses exactly.
type wire struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

var expungeLine = regexp.MustCompile(`(?m)^\* (\d+) EXPUNGE\r$`)

// expunges returns the EXPUNGE responses seen so far and forgets them.
func (w *wire) expunges() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, m := range expungeLine.FindAllStringSubmatch(w.buf.String(), -1) {
		out = append(out, m[1])
	}
	w.buf.Reset()
	return out
}

type clientOpts struct {
	onExists func(n uint32)
	wire     *wire
}

// dial connects with implicit TLS.
func (e *env) dial(o clientOpts) *imapclient.Client {
	e.t.Helper()
	opts := &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}}
	if o.wire != nil {
		opts.DebugWriter = o.wire
	}
	if o.onExists != nil {
		opts.UnilateralDataHandler = &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					o.onExists(*d.NumMessages)
				}
			},
		}
	}
	c, err := imapclient.DialTLS(e.implied, opts)
	if err != nil {
		e.t.Fatalf("DialTLS = %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// login dials and logs in as user.
func (e *env) login(user string, o clientOpts) *imapclient.Client {
	e.t.Helper()
	c := e.dial(o)
	if err := c.Login(user, password).Wait(); err != nil {
		e.t.Fatalf("Login(%q) = %v", user, err)
	}
	return c
}

// appendMsg appends raw to mailbox through IMAP and returns its UID.
func appendMsg(t testing.TB, c *imapclient.Client, mailbox, raw string) uint32 {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(raw)), nil)
	if _, err := cmd.Write([]byte(raw)); err != nil {
		t.Fatalf("Append write = %v", err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("Append close = %v", err)
	}
	d, err := cmd.Wait()
	if err != nil {
		t.Fatalf("Append(%q) = %v", mailbox, err)
	}
	return uint32(d.UID)
}

func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}
