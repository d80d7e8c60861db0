package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"tidings/auth"
	"tidings/delivery"
	"tidings/storage"
)

// Mode says which front end a Server is.
type Mode int

const (
	// MX receives mail from the internet for local and relayed domains
	// (port 25; 2525 in local mode). No AUTH.
	MX Mode = iota
	// Submission takes mail from authenticated clients (RFC 6409; 587
	// STARTTLS and 465 implicit TLS, 2587/2465 in local mode).
	Submission
)

func (m Mode) String() string {
	if m == Submission {
		return "submission"
	}
	return "smtp"
}

// Defaults of Config.
const (
	DefaultMaxMessageBytes   = 64 << 20
	DefaultMaxRecipients     = 100
	DefaultMaxLineLength     = 2000 // go-smtp's: twice RFC 5321 §4.5.3.1.6
	DefaultMaxCommands       = 10000
	DefaultIdleTimeout       = 5 * time.Minute // RFC 5321 §4.5.3.2.7 server timeout
	DefaultReadTimeout       = time.Hour       // bounds one command or one whole DATA
	DefaultWriteTimeout      = 5 * time.Minute
	DefaultCommandTimeout    = 30 * time.Second
	DefaultMessagesPerHour   = 200
	DefaultRecipientsPerHour = 2000
)

// Config configures a Server. The zero value (with TLS for submission) is
// usable.
type Config struct {
	Mode Mode
	// Hostname is the greeting, EHLO and Received name, and the default
	// authserv-id of Authentication-Results.
	Hostname string
	// TLS enables STARTTLS (RFC 3207) and ServeTLS (RFC 8314). Submission
	// offers AUTH only under TLS.
	TLS *tls.Config
	// AllowInsecureAuth offers AUTH without TLS (tests, loopback setups).
	AllowInsecureAuth bool
	// MaxMessageBytes is the SIZE limit (552 5.3.4; default 64 MiB).
	MaxMessageBytes int64
	// MaxRecipients per transaction (452 4.5.3; default 100).
	MaxRecipients int
	// MaxLineLength of a command line (default 2000).
	MaxLineLength int
	// MaxCommands per connection (default 10,000): MAIL, RCPT, RSET, EHLO,
	// AUTH and DATA count.
	MaxCommands int
	// IdleTimeout is the longest wait for the next bytes from the client,
	// in a command or inside DATA (default 5 min). ReadTimeout bounds one
	// command line or a whole DATA (default 1 h): go-smtp sets its read
	// deadline once per command, so it must be long enough for a large
	// message on a slow link, and the idle limit is enforced separately.
	IdleTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// CommandTimeout bounds each store and DNS operation (default 30 s).
	CommandTimeout time.Duration
	// AuthServID is the authserv-id of our Authentication-Results
	// (RFC 8601 §2.5; default Hostname).
	AuthServID string
	// IgnoreDMARCReject accepts mail that fails DMARC under p=reject
	// (recorded in Authentication-Results only). Default: 550 5.7.1.
	IgnoreDMARCReject bool
	// Resolver answers SPF, DKIM and DMARC queries (default
	// net.DefaultResolver). Tests point it at an in-process DNS server.
	Resolver Resolver
	// SpoolDir holds messages larger than storage.SpoolMemory while they
	// arrive ("" = os.TempDir()).
	SpoolDir string
	// MessagesPerHour and RecipientsPerHour limit each submission account
	// (451 4.7.0); the account's policy overrides them. Defaults 200 and
	// 2,000.
	MessagesPerHour   int
	RecipientsPerHour int
}

func (c Config) withDefaults() Config {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.AuthServID == "" {
		c.AuthServID = c.Hostname
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.MaxLineLength <= 0 {
		c.MaxLineLength = DefaultMaxLineLength
	}
	if c.MaxCommands <= 0 {
		c.MaxCommands = DefaultMaxCommands
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.MessagesPerHour <= 0 {
		c.MessagesPerHour = DefaultMessagesPerHour
	}
	if c.RecipientsPerHour <= 0 {
		c.RecipientsPerHour = DefaultRecipientsPerHour
	}
	return c
}

// Resolver is the DNS the authentication checks use; *net.Resolver
// implements it (and so does spf.DNSResolver's shape).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Deps are the parts a Server works with.
type Deps struct {
	Store storage.Store
	Dir   *auth.Directory
	Local *delivery.Local
	// Logger gets one line per protocol event; nil discards.
	Logger *slog.Logger
}

// Server is an SMTP front end (MX or submission) on go-smtp. One Server
// may serve any number of listeners of its mode.
type Server struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	smtp  *smtp.Server
	ids   atomic.Uint64
	panic atomic.Int64

	mu       sync.Mutex
	conns    map[*conn]struct{}
	closing  bool
	shutdown chan struct{}
}

// New returns a Server.
func New(cfg Config, deps Deps) *Server {
	cfg = cfg.withDefaults()
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, deps: deps, log: log, conns: map[*conn]struct{}{}, shutdown: make(chan struct{})}
	srv := smtp.NewServer(backend{s})
	srv.Domain = cfg.Hostname
	srv.TLSConfig = cfg.TLS
	srv.AllowInsecureAuth = cfg.AllowInsecureAuth
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxLineLength = cfg.MaxLineLength
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = errorLog{s}
	s.smtp = srv
	return s
}

// Panics is the number of recovered panics (tests require zero).
func (s *Server) Panics() int64 { return s.panic.Load() }

// Serve accepts plaintext connections (STARTTLS available with Config.TLS).
func (s *Server) Serve(ln net.Listener) error {
	return s.serve(ln, false)
}

// ServeTLS accepts implicit-TLS connections (RFC 8314 submissions).
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("smtpd: ServeTLS without a TLS configuration")
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicit bool) error {
	err := s.smtp.Serve(&listener{Listener: ln, s: s, implicit: implicit})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, says 421 to every client between
// transactions, lets transactions in progress finish until ctx ends, and
// then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	close(s.shutdown)
	s.mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- s.smtp.Shutdown(ctx) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		for c := range s.conns {
			if !c.busy.Load() {
				c.goodbye()
				delete(s.conns, c)
			}
		}
		s.mu.Unlock()
		select {
		case err := <-done:
			if errors.Is(err, smtp.ErrServerClosed) {
				err = nil
			}
			return err
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.goodbye()
			}
			s.mu.Unlock()
			s.smtp.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// listener wraps each accepted connection in conn (idle timeout,
// STARTTLS pipelining guard) and, for implicit TLS, in tls.Server above it.
type listener struct {
	net.Listener
	s        *Server
	implicit bool
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := newConn(nc, l.s, l.s.cfg.IdleTimeout, !l.implicit && l.s.cfg.TLS != nil)
	if !l.s.track(c) {
		// Shutting down: go-smtp would greet; say goodbye instead.
		c.goodbye()
	}
	if l.implicit {
		tc := tls.Server(c, l.s.cfg.TLS)
		c.setTop(tc)
		return tc, nil
	}
	return c, nil
}

// errorLog feeds go-smtp's internal error log into slog and counts the
// panics it recovered (CONVENTIONS.md: logged and counted).
type errorLog struct{ s *Server }

func (e errorLog) Printf(format string, v ...any) { e.line(fmt.Sprintf(format, v...)) }
func (e errorLog) Println(v ...any)               { e.line(fmt.Sprintln(v...)) }

func (e errorLog) line(msg string) {
	msg = strings.TrimSpace(msg)
	if strings.HasPrefix(msg, "panic") {
		e.s.panic.Add(1)
		e.s.log.Error("panic recovered", "proto", e.s.cfg.Mode.String(), "detail", msg)
		return
	}
	e.s.log.Debug("smtp connection ended", "proto", e.s.cfg.Mode.String(), "detail", msg)
}
