package pop3d

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"tidings/auth"
	"tidings/storage"
)

// Defaults of Config.
const (
	DefaultMaxConnsPerIP  = 50
	DefaultIdleTimeout    = 10 * time.Minute // RFC 1939 §3: at least 10 minutes
	DefaultPreAuthTimeout = 60 * time.Second
	DefaultLeaseTTL       = 2 * time.Minute
	DefaultLeaseRefresh   = 30 * time.Second
	DefaultCommandTimeout = 30 * time.Second
	DefaultExpire         = "NEVER"
)

// Config configures a Server. The zero value (with TLS set) is usable.
type Config struct {
	// Hostname goes in the greeting and sign-off.
	Hostname string
	// TLS is the server certificate configuration for STLS (RFC 2595) and
	// implicit TLS (ServeTLS). Nil: no STLS, and ServeTLS refuses to run.
	TLS *tls.Config
	// AllowInsecureAuth allows USER/PASS and AUTH on an unencrypted
	// connection, but only from a loopback address (DESIGN.md
	// §Conventions). Default off: credentials only under TLS.
	AllowInsecureAuth bool
	// NoSeenOnRetr turns off setting \Seen when a message is RETRieved
	// (on by default, as Dovecot does, so IMAP and webmail show POP3-read
	// mail as read). TOP never sets \Seen.
	NoSeenOnRetr bool
	// Expire is the EXPIRE capability value (RFC 2449 §6.7): "NEVER"
	// (default) or a number of days that messages are kept.
	Expire string
	// LoginDelay, in seconds, is advertised as LOGIN-DELAY (RFC 2449 §6.8)
	// and enforced per account on this node; 0 = none.
	LoginDelay int
	// MaxConnsPerIP caps simultaneous connections from one client address
	// (default 50).
	MaxConnsPerIP int
	// IdleTimeout applies after login (default 10 min, RFC 1939 §3);
	// PreAuthTimeout before it (default 60 s).
	IdleTimeout    time.Duration
	PreAuthTimeout time.Duration
	// LeaseTTL and LeaseRefresh time the maildrop lease (defaults 2 min
	// and 30 s).
	LeaseTTL     time.Duration
	LeaseRefresh time.Duration
	// CommandTimeout bounds each store call (default 30 s).
	CommandTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.Expire == "" {
		c.Expire = DefaultExpire
	}
	if c.MaxConnsPerIP <= 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.PreAuthTimeout <= 0 {
		c.PreAuthTimeout = DefaultPreAuthTimeout
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LeaseRefresh <= 0 || c.LeaseRefresh >= c.LeaseTTL {
		c.LeaseRefresh = c.LeaseTTL / 4
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	return c
}

// Deps are the parts a Server works with.
type Deps struct {
	Store  storage.Store
	Dir    *auth.Directory
	Logger *slog.Logger // nil discards
}

// leaser is the part of storage.Store the maildrop lock uses: one short
// transaction per call, never a lock held for the session (name =
// "pop3:<account id>", holder random per session).
type leaser interface {
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	RefreshLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

var _ leaser = storage.Store(nil)

// Server is a POP3 server. Build it with New; one Server may serve any
// number of listeners.
type Server struct {
	cfg    Config
	store  storage.Store
	dir    *auth.Directory
	log    *slog.Logger
	leases leaser

	panics atomic.Int64
	connID atomic.Uint64

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	perIP     map[netip.Addr]int
	lastLogin map[storage.AccountID]time.Time
	wg        sync.WaitGroup
}

// New returns a Server.
func New(cfg Config, deps Deps) *Server {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		cfg:       cfg.withDefaults(),
		store:     deps.Store,
		dir:       deps.Dir,
		log:       log.With("proto", "pop3"),
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*session]struct{}{},
		perIP:     map[netip.Addr]int{},
		lastLogin: map[storage.AccountID]time.Time{},
		leases:    deps.Store,
	}
	return s
}

// Panics returns how many connection goroutines recovered from a panic.
// Tests assert it stays zero.
func (s *Server) Panics() int64 { return s.panics.Load() }

// Serve accepts plain connections on ln (STLS available when Config.TLS
// is set) until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS accepts implicit-TLS connections (RFC 8314 §3.3, pop3s) on ln
// until Shutdown. It returns nil after Shutdown.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		ln.Close()
		return errors.New("pop3d: ServeTLS needs Config.TLS")
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicit bool) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	// The accept loop counts as a connection, so Shutdown's Wait cannot
	// begin while this loop may still Add.
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			delete(s.listeners, ln)
			s.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				s.mu.Lock()
				s.listeners[ln] = struct{}{}
				s.mu.Unlock()
				continue
			}
			return fmt.Errorf("pop3d: accept: %w", err)
		}
		backoff = 0
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c, implicit)
	}
}

// handle runs one connection. It is the root of the connection's
// goroutine, so it is where panics are recovered (CONVENTIONS.md §Errors).
func (s *Server) handle(c net.Conn, implicit bool) {
	defer s.wg.Done()
	id := strconv.FormatUint(s.connID.Add(1), 10)
	log := s.log.With("conn", id, "remote", c.RemoteAddr().String())
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			log.Error("panic in connection", "panic", r, "stack", stack())
			c.Close()
		}
	}()
	ip := remoteIP(c)
	if !s.takeIP(ip) {
		// RFC 1939 §4: a negative greeting refuses the session; RFC 3206
		// §4 SYS/TEMP says try later.
		log.Info("too many connections from address")
		if implicit {
			c = tls.Server(c, s.cfg.TLS)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "-ERR [SYS/TEMP] too many connections from your address\r\n")
		c.Close()
		return
	}
	defer s.releaseIP(ip)
	sess := newSession(s, c, ip, log)
	if implicit {
		sess.conn = tls.Server(c, s.cfg.TLS)
		sess.tls = true
		sess.resetIO()
	}
	if !s.register(sess) {
		sess.conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(sess.conn, "-ERR [SYS/TEMP] server shutting down\r\n")
		sess.conn.Close()
		return
	}
	defer s.unregister(sess)
	sess.run()
}

func (s *Server) takeIP(ip netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[ip] >= s.cfg.MaxConnsPerIP {
		return false
	}
	s.perIP[ip]++
	return true
}

func (s *Server) releaseIP(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

func (s *Server) register(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[sess] = struct{}{}
	return true
}

func (s *Server) unregister(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, sess)
}

// loginAllowed enforces LOGIN-DELAY (RFC 2449 §8.1.1) on this node and
// records the login.
func (s *Server) loginAllowed(acct storage.AccountID, now time.Time) bool {
	if s.cfg.LoginDelay <= 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, ok := s.lastLogin[acct]; ok && now.Sub(last) < time.Duration(s.cfg.LoginDelay)*time.Second {
		return false
	}
	s.lastLogin[acct] = now
	// Keep the map bounded by dropping entries past the delay.
	if len(s.lastLogin) > 10000 {
		for k, t := range s.lastLogin {
			if now.Sub(t) >= time.Duration(s.cfg.LoginDelay)*time.Second {
				delete(s.lastLogin, k)
			}
		}
	}
	return true
}

// Shutdown stops accepting, tells every client "-ERR [SYS/TEMP] server
// shutting down" at its next command boundary (a RETR in flight
// finishes; nothing is deleted for a session that did not reach QUIT),
// and waits for the sessions to end. When ctx ends first the remaining
// connections are closed and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	for sess := range s.sessions {
		sess.interrupt(&sess.shutdown)
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for sess := range s.sessions {
			sess.closeConn()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
