package main

// The protocol front ends (smtpd, imapd, pop3d, webmail) are not written
// yet. Until they are, every listener answers with a protocol-correct "not
// available yet" reply and closes, so clients see a clean temporary failure
// rather than a refused or hanging connection. The front-end issues replace
// this file: serve will hand each listener to smtpd/imapd/pop3d/webmail
// instead of to a placeholder.

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// placeholder serves one listener until the real front end exists.
type placeholder struct {
	name     string
	greeting string // the one line a line-protocol client gets
	log      *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	http   *http.Server
	wg     sync.WaitGroup
	closed bool
}

// greetingFor returns the refusal of each protocol.
func greetingFor(name, hostname string) string {
	switch name {
	case "smtp", "submission", "submissions":
		// RFC 5321 §3.1 and §4.2.5: a 421 greeting refuses the session and
		// the server closes; 4.3.2 is "system not accepting network
		// messages" (RFC 3463 §3.5). The hostname comes first (§4.2).
		return "421 4.3.2 " + hostname + " service not available yet\r\n"
	case "imap", "imaps":
		// RFC 9051 §7.1.5: BYE as the greeting says the server will not
		// accept the connection.
		return "* BYE service not available yet\r\n"
	case "pop3", "pop3s":
		// RFC 1939 §4 greeting, negative; RFC 3206 §4 SYS/TEMP says the
		// problem is temporary and on our side.
		return "-ERR [SYS/TEMP] service not available yet\r\n"
	}
	return ""
}

func newPlaceholder(name, hostname string, log *slog.Logger) *placeholder {
	return &placeholder{name: name, greeting: greetingFor(name, hostname), log: log}
}

// Serve answers connections on ln until Shutdown. tlsCfg, when not nil,
// makes it implicit TLS (RFC 8314).
func (p *placeholder) Serve(ln net.Listener, tlsCfg *tls.Config) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	p.ln = ln
	// The accept loop counts as a connection, so that Shutdown's Wait
	// cannot start while the loop may still Add.
	p.wg.Add(1)
	defer p.wg.Done()
	if p.name == "http" {
		p.http = &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "3600")
				http.Error(w, "service not available yet", http.StatusServiceUnavailable)
			}),
			ReadHeaderTimeout: 10 * time.Second,
			TLSConfig:         tlsCfg,
			ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		}
	}
	p.mu.Unlock()

	if p.http != nil {
		var err error
		if tlsCfg != nil {
			err = p.http.ServeTLS(ln, "", "")
		} else {
			err = p.http.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			if p.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer conn.Close()
			// A client that never reads (or never finishes a TLS handshake)
			// must not keep the goroutine.
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write([]byte(p.greeting)); err != nil {
				p.log.Debug("placeholder write failed", "proto", p.name, "remote", conn.RemoteAddr().String(), "err", err)
				return
			}
			p.log.Debug("connection refused: service not available yet", "proto", p.name, "remote", conn.RemoteAddr().String())
		}()
	}
}

func (p *placeholder) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Shutdown stops accepting and waits (until ctx ends) for the connections
// being answered.
func (p *placeholder) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	ln, srv := p.ln, p.http
	p.mu.Unlock()
	if srv != nil {
		return srv.Shutdown(ctx)
	}
	if ln != nil {
		ln.Close()
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
