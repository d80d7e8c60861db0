package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"tidings/auth"
	"tidings/storage"
)

// Defaults of Config.
const (
	DefaultMaxConnsPerIP     = 50
	DefaultMaxConnsPerUserIP = 10
	DefaultPreAuthTimeout    = 60 * time.Second
	DefaultAppendLimit       = 50 << 20
	// storeTimeout bounds every store call a command makes.
	storeTimeout = 60 * time.Second
)

// Config configures a Server. The zero value gets the defaults above.
type Config struct {
	// Hostname names the server in the greeting and logs.
	Hostname string
	// TLS is used for STARTTLS on Serve listeners and for ServeTLS. Without
	// it only AllowInsecureAuth connections can log in.
	TLS *tls.Config
	// AllowInsecureAuth permits LOGIN and AUTHENTICATE without TLS (tests,
	// loopback deployments). DESIGN.md: AUTH only over TLS unless allowed.
	AllowInsecureAuth bool
	// MaxConnsPerIP caps concurrent connections from one client address.
	MaxConnsPerIP int
	// MaxConnsPerUserIP caps concurrent logged-in sessions of one account
	// from one address.
	MaxConnsPerUserIP int
	// PreAuthTimeout is the absolute time a connection may stay
	// unauthenticated (not an idle timeout: a slow-drip client is cut too).
	PreAuthTimeout time.Duration
	// AppendLimit is the largest APPEND literal accepted (APPENDLIMIT,
	// RFC 7889); other literals are bounded by the library at 4 KiB and
	// command lines at 50 KiB.
	AppendLimit int64
	// SpoolDir is where APPEND spools large messages ("" = os.TempDir).
	SpoolDir string
}

func (c Config) withDefaults() Config {
	if c.MaxConnsPerIP <= 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.MaxConnsPerUserIP <= 0 {
		c.MaxConnsPerUserIP = DefaultMaxConnsPerUserIP
	}
	if c.PreAuthTimeout <= 0 {
		c.PreAuthTimeout = DefaultPreAuthTimeout
	}
	if c.AppendLimit <= 0 || c.AppendLimit > 1<<32-1 {
		c.AppendLimit = DefaultAppendLimit
	}
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	return c
}

// Deps are the parts a Server is built on.
type Deps struct {
	Store  storage.Store
	Dir    *auth.Directory
	Logger *slog.Logger // nil = discard
}

// Server is one IMAP front end. Several may run in one process (each is a
// node) over one store.
type Server struct {
	cfg    Config
	store  storage.Store
	dir    *auth.Directory
	log    *slog.Logger
	imap   *imapserver.Server
	panics atomic.Int64
	connID atomic.Uint64

	mu        sync.Mutex
	listeners map[*listener]struct{}
	perIP     map[netip.Addr]int
	sessions  map[*session]struct{}
	owners    map[storage.MailboxID]*owner
	closing   bool
}

// New builds a server; nothing listens until Serve or ServeTLS.
func New(cfg Config, deps Deps) *Server {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		cfg:       cfg.withDefaults(),
		store:     deps.Store,
		dir:       deps.Dir,
		log:       log.With("proto", "imap"),
		listeners: map[*listener]struct{}{},
		perIP:     map[netip.Addr]int{},
		sessions:  map[*session]struct{}{},
		owners:    map[storage.MailboxID]*owner{},
	}
	caps := imap.CapSet{}
	for _, c := range []imap.Cap{
		imap.CapIMAP4rev1, imap.CapIMAP4rev2, imap.CapNamespace, imap.CapMove,
		imap.CapUIDPlus, imap.CapSpecialUse, imap.CapCreateSpecialUse,
		imap.CapListExtended, imap.CapListStatus, imap.CapStatusSize,
		imap.CapESearch, imap.CapSearchRes, imap.CapBinary, imap.CapLiteralPlus,
		imap.CapUnselect, imap.CapEnable, imap.CapSASLIR, imap.CapAppendLimit,
		imap.CapUTF8Accept, imap.CapIdle,
	} {
		caps[c] = struct{}{}
	}
	s.imap = imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         caps,
		Logger:       libLogger{s},
		TLSConfig:    s.cfg.TLS,
		InsecureAuth: s.cfg.AllowInsecureAuth,
	})
	return s
}

// Panics returns how many panics the library recovered (and we counted)
// plus those of our own goroutines. Tests require zero.
func (s *Server) Panics() int64 { return s.panics.Load() }

// Serve accepts plain connections on ln (STARTTLS available when
// Config.TLS is set). It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS accepts implicit-TLS connections (port 993) on ln.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("imapd: ServeTLS without a TLS config")
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicit bool) error {
	l := &listener{Listener: ln, srv: s, implicit: implicit}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	err := s.imap.Serve(l)
	s.mu.Lock()
	closing := s.closing
	delete(s.listeners, l)
	s.mu.Unlock()
	if closing {
		return nil
	}
	return err
}

// Shutdown stops accepting, sends BYE to every client, waits for the
// sessions to end (or ctx), then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	sess := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sess = append(sess, ss)
	}
	s.mu.Unlock()
	for _, ss := range sess {
		go ss.bye("Server shutting down")
	}
	var err error
	for {
		s.mu.Lock()
		n := len(s.sessions)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(20 * time.Millisecond):
			continue
		}
		break
	}
	if cerr := s.imap.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && !strings.Contains(cerr.Error(), "closed") {
		s.log.Debug("close", "err", cerr)
	}
	return err
}

// libLogger adapts go-imap's Printf logger to slog and counts the panics
// the library recovers (CONVENTIONS.md: a recovered panic is counted).
type libLogger struct{ s *Server }

func (l libLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(format, "panic") {
		l.s.panics.Add(1)
		l.s.log.Error("panic in imap library", "detail", msg)
		return
	}
	l.s.log.Debug("imap library", "detail", msg)
}

// listener enforces the per-IP connection cap at accept and wraps each
// connection beneath TLS: go-imap detects TLS with a *tls.Conn type
// assertion, so our wrapper must never sit on top of one.
type listener struct {
	net.Listener
	srv      *Server
	implicit bool
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrOf(c.RemoteAddr())
		l.srv.mu.Lock()
		over := l.srv.perIP[ip] >= l.srv.cfg.MaxConnsPerIP
		if !over {
			l.srv.perIP[ip]++
		}
		l.srv.mu.Unlock()
		if over {
			l.srv.log.Warn("connection refused", "ip", ip.String(), "reason", "too many connections")
			if !l.implicit {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				io.WriteString(c, "* BYE Too many connections from your address\r\n")
			}
			c.Close()
			continue
		}
		tc := &trackedConn{Conn: c, srv: l.srv, ip: ip}
		if l.implicit {
			return tls.Server(tc, l.srv.cfg.TLS), nil
		}
		return tc, nil
	}
}

// trackedConn releases its per-IP slot once, on Close.
type trackedConn struct {
	net.Conn
	srv  *Server
	ip   netip.Addr
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.srv.mu.Lock()
		if c.srv.perIP[c.ip]--; c.srv.perIP[c.ip] <= 0 {
			delete(c.srv.perIP, c.ip)
		}
		c.srv.mu.Unlock()
	})
	return c.Conn.Close()
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// rawConn finds our trackedConn under a library connection.
func rawConn(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}
