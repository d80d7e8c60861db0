package smtpd

import (
	"bytes"
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// errPipelinedTLS ends a connection whose client sent bytes after
// STARTTLS in the same packet (CVE-2011-0411).
var errPipelinedTLS = errors.New("plaintext pipelined after STARTTLS")

// conn sits directly on the TCP connection, below any TLS, and adds what
// go-smtp leaves out:
//
//   - An idle limit per read: every Read gets a deadline of now+idle (or
//     go-smtp's own, if sooner). go-smtp sets one deadline per command, so
//     without this a DATA could stall for the whole ReadTimeout.
//   - The STARTTLS pipelining guard: plaintext commands sent after
//     STARTTLS in the same packet would sit in go-smtp's buffer. go-smtp
//     drops that buffer after a successful handshake, but we refuse the
//     connection outright, as Postfix does: the next read fails, and the
//     session refuses every command still buffered.
type conn struct {
	net.Conn
	s    *Server
	idle time.Duration

	mu       sync.Mutex
	deadline time.Time // go-smtp's read deadline
	top      net.Conn  // what go-smtp writes to (tls.Conn after a handshake)
	dead     error     // set after a timeout or a refused pipeline: every Read fails

	scanning  bool   // before STARTTLS: look at plaintext lines
	line      []byte // start of the current command line (bounded)
	inData    bool   // inside DATA content
	dataState int    // go-smtp's data reader state, for finding the end
	skip      int64  // BDAT chunk bytes still to pass

	tainted atomic.Bool // plaintext pipelined after STARTTLS
	busy    atomic.Bool // a transaction is in progress (Shutdown waits)
	bye     sync.Once
}

func newConn(nc net.Conn, s *Server, idle time.Duration, scan bool) *conn {
	c := &conn{Conn: nc, s: s, idle: idle, scanning: scan}
	c.top = c
	return c
}

func (c *conn) setTop(t net.Conn) {
	c.mu.Lock()
	c.top = t
	c.mu.Unlock()
}

// SetReadDeadline records go-smtp's deadline; Read applies the sooner of
// it and the idle limit.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

func (c *conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	dead := c.dead
	d := time.Now().Add(c.idle)
	if !c.deadline.IsZero() && c.deadline.Before(d) {
		d = c.deadline
	}
	c.mu.Unlock()
	if dead != nil {
		return 0, dead
	}
	c.Conn.SetReadDeadline(d)
	n, err := c.Conn.Read(p)
	if n > 0 && c.scanning {
		c.scan(p[:n])
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.mu.Lock()
			c.dead = err
			c.mu.Unlock()
		}
	}
	return n, err
}

// scan follows the plaintext stream until STARTTLS, mirroring go-smtp's
// framing so message content is never taken for a command: after DATA it
// skips to <CRLF>.<CRLF>, after "BDAT n" it skips n bytes. A STARTTLS
// line (go-smtp takes any line starting with it) followed by more bytes
// in the same read taints the connection.
func (c *conn) scan(p []byte) {
	for i := 0; i < len(p); i++ {
		b := p[i]
		if c.skip > 0 { // BDAT chunk
			n := min(int64(len(p)-i), c.skip)
			c.skip -= n
			i += int(n) - 1
			continue
		}
		if c.inData {
			c.dataByte(b)
			continue
		}
		if b != '\n' {
			if len(c.line) < 32 {
				c.line = append(c.line, b)
			}
			continue
		}
		l := bytes.ToUpper(bytes.TrimRight(c.line, "\r"))
		c.line = c.line[:0]
		switch {
		case bytes.HasPrefix(l, []byte("STARTTLS")):
			c.scanning = false
			if i+1 < len(p) {
				c.taint()
			}
			return
		case bytes.Equal(l, []byte("DATA")):
			c.inData, c.dataState = true, 0
		case bytes.HasPrefix(l, []byte("BDAT ")):
			f := bytes.Fields(l[5:])
			if len(f) > 0 {
				if n, err := strconv.ParseInt(string(f[0]), 10, 64); err == nil && n > 0 {
					c.skip = n
				}
			}
		}
	}
}

// dataByte follows DATA content to its end, with go-smtp's data reader
// states: only <CRLF>.<CRLF> (or ".\r\n" right after DATA) ends it.
func (c *conn) dataByte(b byte) {
	const (
		beginLine = iota
		dot
		dotCR
		cr
		data
	)
	switch c.dataState {
	case beginLine:
		switch b {
		case '.':
			c.dataState = dot
		case '\r':
			c.dataState = cr
		default:
			c.dataState = data
		}
	case dot:
		c.dataState = data
		if b == '\r' {
			c.dataState = dotCR
		}
	case dotCR:
		c.dataState = data
		if b == '\n' {
			c.inData = false
		}
	case cr:
		c.dataState = data
		if b == '\n' {
			c.dataState = beginLine
		}
	case data:
		if b == '\r' {
			c.dataState = cr
		}
	}
}

// taint refuses the connection: reads fail from now on, and the session
// refuses whatever go-smtp still has buffered.
func (c *conn) taint() {
	c.tainted.Store(true)
	c.mu.Lock()
	c.dead = errPipelinedTLS
	c.mu.Unlock()
	c.s.log.Warn("starttls pipelining refused (CVE-2011-0411)", "proto", c.s.cfg.Mode.String(), "ip", c.RemoteAddr().String())
}

// expire makes the next Read fail (command limit, shutdown).
func (c *conn) expire(err error) {
	c.mu.Lock()
	if c.dead == nil {
		c.dead = err
	}
	c.mu.Unlock()
}

// goodbye tells an idle client the service is going away (RFC 5321
// §3.8: 421) and closes the connection.
func (c *conn) goodbye() {
	c.bye.Do(func() {
		c.mu.Lock()
		top := c.top
		c.mu.Unlock()
		top.SetWriteDeadline(time.Now().Add(time.Second))
		top.Write([]byte("421 4.3.2 " + c.s.cfg.Hostname + " Service shutting down\r\n"))
		c.expire(os.ErrDeadlineExceeded)
		c.Conn.Close()
	})
}

func (c *conn) Close() error {
	c.s.untrack(c)
	return c.Conn.Close()
}
