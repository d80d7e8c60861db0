package pop3d

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tidings/auth"
	"tidings/storage"
)

var syscallEMFILE = syscall.EMFILE

func stack() string { return string(debug.Stack()) }

// state is the RFC 1939 §3 session state.
type state int

const (
	stateAuth   state = iota // AUTHORIZATION
	stateTrans               // TRANSACTION
	stateUpdate              // UPDATE (entered by QUIT)
)

// Limits on misbehaving clients.
const (
	maxBadCommands = 10       // malformed, unknown, overlong or out-of-state lines before closing
	maxAuthFails   = 3        // failed logins in one session before closing
	maxDiscard     = 64 << 10 // bytes of one overlong line read and thrown away before closing
	readBufSize    = 4 << 10
	writeBufSize   = 32 << 10
	chunkSize      = 32 << 10
	// writeTimeout bounds one write to a client that stopped reading.
	writeTimeout = 5 * time.Minute
)

// entry is one message of the maildrop as listed at login.
type entry struct {
	uid     storage.UID
	size    int64
	uidl    string
	deleted bool
	// seen: RETR sent it and it was not \Seen; the flag is set in UPDATE.
	seen bool
}

type session struct {
	srv *Server
	log *slog.Logger
	ip  netip.Addr

	connMu sync.Mutex // guards conn against Shutdown and the lease refresher
	conn   net.Conn
	tls    bool
	r      *bufio.Reader
	w      *bufio.Writer

	state     state
	user      string // from USER
	bad       int
	authFails int

	acct   storage.Account
	inbox  storage.Mailbox
	msgs   []entry
	holder string // lease holder id, "" = no lease

	shutdown  atomic.Bool
	leaseLost atomic.Bool
	// disabled is set when the account is disabled during the session
	// (DESIGN.md §Identity: disabling an account ends its sessions).
	disabled  atomic.Bool
	stopWatch func()
	stopLease chan struct{}
	leaseDone chan struct{}
}

func newSession(srv *Server, c net.Conn, ip netip.Addr, log *slog.Logger) *session {
	s := &session{srv: srv, conn: c, ip: ip, log: log}
	s.resetIO()
	return s
}

// resetIO makes fresh buffers over conn (at start and after STLS, so no
// plaintext byte read before the handshake is ever interpreted after it).
func (s *session) resetIO() {
	s.r = bufio.NewReaderSize(s.conn, readBufSize)
	s.w = bufio.NewWriterSize(deadlineWriter{s.conn}, writeBufSize)
}

// deadlineWriter gives every write to the client its own deadline, so a
// client that stops reading cannot pin the goroutine forever.
type deadlineWriter struct{ c net.Conn }

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	return d.c.Write(p)
}

// interrupt sets flag and makes a blocked read return, so the session
// notices at its next command boundary. The session sets its read
// deadline before checking the flags, so the order here (flag first,
// then the deadline) cannot lose the wake-up.
func (s *session) interrupt(flag *atomic.Bool) {
	flag.Store(true)
	s.connMu.Lock()
	s.conn.SetReadDeadline(time.Now())
	s.connMu.Unlock()
}

func (s *session) closeConn() {
	s.connMu.Lock()
	s.conn.Close()
	s.connMu.Unlock()
}

// ctx gives a store call its deadline.
func (s *session) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.srv.cfg.CommandTimeout)
}

func (s *session) reply(format string, args ...any) {
	fmt.Fprintf(s.w, format, args...)
	s.w.WriteString("\r\n")
}

// errLineTooLong reports an overlong command line (already discarded).
var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its line ending. Memory stays
// bounded by readBufSize whatever the client sends.
func (s *session) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// Throw the rest of the line away, up to a bound.
		n := len(line)
		for err == bufio.ErrBufferFull && n < maxDiscard {
			line, err = s.r.ReadSlice('\n')
			n += len(line)
		}
		if err != nil {
			return nil, err
		}
		if n >= maxDiscard {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, errLineTooLong
	}
	if err != nil {
		return nil, err
	}
	if len(line) > MaxLine {
		return nil, errLineTooLong
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return line, nil
}

func (s *session) run() {
	defer s.cleanup()
	// RFC 1939 §4 greeting. No APOP timestamp: APOP needs the clear
	// password on the server, which Tidings never stores.
	// The deadline also bounds an implicit-TLS handshake, which the first
	// write starts.
	s.connMu.Lock()
	s.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.PreAuthTimeout))
	s.connMu.Unlock()
	s.reply("+OK %s POP3 server ready", s.srv.cfg.Hostname)
	for {
		timeout := s.srv.cfg.PreAuthTimeout
		if s.state == stateTrans {
			timeout = s.srv.cfg.IdleTimeout
		}
		s.connMu.Lock()
		s.conn.SetReadDeadline(time.Now().Add(timeout))
		s.connMu.Unlock()
		if s.stopping() {
			return
		}
		// PIPELINING (RFC 2449 §6.6): answer a burst in as few writes as
		// possible, flushing only when no further command is waiting.
		if s.r.Buffered() == 0 {
			if err := s.w.Flush(); err != nil {
				return
			}
		}
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				s.reply("-ERR line too long")
				if s.abuse() {
					return
				}
				continue
			}
			if s.stopping() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// RFC 1939 §3: an idle session is closed without UPDATE.
				s.log.Debug("idle timeout")
				s.reply("-ERR disconnected for inactivity")
				s.w.Flush()
			} else if err != io.EOF {
				s.log.Debug("read", "err", err)
			}
			return
		}
		cmd, err := ParseCommand(line)
		if err != nil {
			s.reply("-ERR %s", err.Error())
			if s.abuse() {
				return
			}
			continue
		}
		s.log.Debug("command", "cmd", cmd.Name, "state", int(s.state))
		if !s.dispatch(cmd) {
			s.w.Flush()
			return
		}
	}
}

// stopping checks the shutdown and lease-lost flags; when one is set it
// tells the client and reports true.
func (s *session) stopping() bool {
	var msg string
	switch {
	case s.shutdown.Load():
		msg = "-ERR [SYS/TEMP] server shutting down"
	case s.leaseLost.Load():
		// Another session may now own the maildrop: stop without UPDATE.
		msg = "-ERR [SYS/TEMP] maildrop lock lost; nothing was deleted"
	case s.disabled.Load():
		msg = "-ERR [AUTH] account disabled; nothing was deleted"
	default:
		return false
	}
	s.log.Debug("session stopped", "reason", msg)
	s.connMu.Lock()
	s.conn.SetDeadline(time.Now().Add(5 * time.Second))
	s.connMu.Unlock()
	s.reply("%s", msg)
	s.w.Flush()
	return true
}

// abuse counts a bad line and reports whether to close.
func (s *session) abuse() bool {
	s.bad++
	if s.bad >= maxBadCommands {
		s.reply("-ERR too many bad commands; closing")
		s.w.Flush()
		s.log.Info("closing abusive connection")
		return true
	}
	return false
}

// cleanup runs when the session ends for any reason: stop the lease
// refresher and release the lease (with a fresh context: the session's
// deadline may be gone). A session that did not QUIT deletes nothing.
func (s *session) cleanup() {
	if s.stopWatch != nil {
		s.stopWatch()
	}
	if s.stopLease != nil {
		close(s.stopLease)
		<-s.leaseDone
	}
	if s.holder != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.srv.leases.ReleaseLease(ctx, s.leaseName(), s.holder); err != nil {
			s.log.Warn("release maildrop lease", "err", err)
		}
		cancel()
	}
	s.closeConn()
}

func (s *session) leaseName() string { return "pop3:" + strconv.FormatInt(int64(s.acct.ID), 10) }

// dispatch runs one command and reports whether the session continues.
func (s *session) dispatch(c Command) bool {
	switch c.Name {
	case "CAPA":
		s.capa()
		return true
	case "QUIT":
		return s.quit()
	}
	if s.state == stateAuth {
		switch c.Name {
		case "USER":
			return s.cmdUser(c)
		case "PASS":
			return s.cmdPass(c)
		case "AUTH":
			return s.cmdAuth(c)
		case "STLS":
			return s.cmdSTLS(c)
		case "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL":
			s.reply("-ERR command not valid before login")
			return !s.abuse()
		}
	} else {
		switch c.Name {
		case "STAT":
			s.cmdStat()
			return true
		case "LIST":
			s.cmdList(c, false)
			return true
		case "UIDL":
			s.cmdList(c, true)
			return true
		case "RETR":
			return s.cmdRetr(c)
		case "TOP":
			return s.cmdTop(c)
		case "DELE":
			s.cmdDele(c)
			return true
		case "NOOP":
			s.reply("+OK")
			return true
		case "RSET":
			for i := range s.msgs {
				s.msgs[i].deleted = false
			}
			n, size := s.totals()
			s.reply("+OK maildrop has %d messages (%d octets)", n, size)
			return true
		case "USER", "PASS", "AUTH", "STLS", "APOP":
			s.reply("-ERR command not valid after login")
			return !s.abuse()
		}
	}
	s.reply("-ERR unknown command")
	return !s.abuse()
}

// authAllowed: credentials only under TLS, or from loopback when the
// operator allowed it (RFC 2595 §2.2; DESIGN.md §Conventions).
func (s *session) authAllowed() bool {
	return s.tls || s.srv.cfg.AllowInsecureAuth && s.ip.IsLoopback()
}

func (s *session) canSTLS() bool { return !s.tls && s.srv.cfg.TLS != nil }

// capa answers CAPA (RFC 2449 §5). Before TLS, USER and SASL are left out
// when they would be refused, so clients go for STLS first.
func (s *session) capa() {
	s.reply("+OK capability list follows")
	s.w.WriteString("TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n")
	if s.state == stateAuth && s.authAllowed() {
		s.w.WriteString("USER\r\nSASL PLAIN LOGIN\r\n")
	}
	if s.state == stateAuth && s.canSTLS() {
		s.w.WriteString("STLS\r\n")
	}
	s.reply("EXPIRE %s", s.srv.cfg.Expire)
	if d := s.srv.cfg.LoginDelay; d > 0 {
		s.reply("LOGIN-DELAY %d", d)
	}
	s.w.WriteString("IMPLEMENTATION Tidings\r\n.\r\n")
}

func (s *session) refuseInsecure() bool {
	s.reply("-ERR [AUTH] authentication only over TLS; use STLS or port 995")
	return !s.abuse()
}

func (s *session) cmdUser(c Command) bool {
	if !s.authAllowed() {
		return s.refuseInsecure()
	}
	if len(c.Args) != 1 {
		s.reply("-ERR usage: USER name")
		return !s.abuse()
	}
	s.user = c.Args[0]
	s.reply("+OK send PASS")
	return true
}

func (s *session) cmdPass(c Command) bool {
	if !s.authAllowed() {
		return s.refuseInsecure()
	}
	if s.user == "" {
		s.reply("-ERR USER first")
		return !s.abuse()
	}
	user := s.user
	s.user = ""
	return s.login(user, c.Raw, "")
}

// cmdAuth implements RFC 5034 AUTH with PLAIN (RFC 4616) and LOGIN.
func (s *session) cmdAuth(c Command) bool {
	if len(c.Args) == 0 {
		// Pre-CAPA clients (RFC 1734 era) list mechanisms with bare AUTH.
		s.reply("+OK")
		if s.authAllowed() {
			s.w.WriteString("PLAIN\r\nLOGIN\r\n")
		}
		s.w.WriteString(".\r\n")
		return true
	}
	if !s.authAllowed() {
		return s.refuseInsecure()
	}
	if len(c.Args) > 2 {
		s.reply("-ERR usage: AUTH mechanism [initial-response]")
		return !s.abuse()
	}
	switch strings.ToUpper(c.Args[0]) {
	case "PLAIN":
		var resp []byte
		var ok bool
		if len(c.Args) == 2 {
			// RFC 5034 §4: "=" is an empty initial response.
			resp, ok = decodeSASL(c.Args[1])
		} else {
			resp, ok = s.challenge("")
		}
		if !ok {
			return s.saslAbort()
		}
		// RFC 4616 §2: authzid NUL authcid NUL passwd.
		parts := bytes.SplitN(resp, []byte{0}, 3)
		if len(parts) != 3 {
			s.reply("-ERR [AUTH] malformed PLAIN response")
			return s.authFailed()
		}
		return s.login(string(parts[1]), string(parts[2]), string(parts[0]))
	case "LOGIN":
		var user []byte
		var ok bool
		if len(c.Args) == 2 {
			user, ok = decodeSASL(c.Args[1])
		} else {
			user, ok = s.challenge("Username:")
		}
		if !ok {
			return s.saslAbort()
		}
		pass, ok := s.challenge("Password:")
		if !ok {
			return s.saslAbort()
		}
		return s.login(string(user), string(pass), "")
	}
	s.reply("-ERR unsupported authentication mechanism")
	return !s.abuse()
}

// challenge sends a SASL challenge (RFC 5034 §4) and reads the client's
// response; ok is false when the client cancelled with "*" or sent
// garbage.
func (s *session) challenge(prompt string) ([]byte, bool) {
	s.reply("+ %s", base64.StdEncoding.EncodeToString([]byte(prompt)))
	if err := s.w.Flush(); err != nil {
		return nil, false
	}
	line, err := s.readLine()
	if err != nil {
		return nil, false
	}
	return decodeSASL(string(line))
}

func decodeSASL(s string) ([]byte, bool) {
	s = strings.TrimSpace(s)
	if s == "*" {
		return nil, false
	}
	if s == "=" {
		return []byte{}, true
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, false
	}
	return b, true
}

func (s *session) saslAbort() bool {
	s.reply("-ERR authentication cancelled")
	return !s.abuse()
}

func (s *session) authFailed() bool {
	s.authFails++
	if s.authFails >= maxAuthFails {
		s.reply("-ERR too many failed logins; closing")
		return false
	}
	return true
}

// login checks credentials and opens the maildrop (RFC 1939 §4: on
// success the server locks the maildrop and enters TRANSACTION).
func (s *session) login(user, pass, authz string) bool {
	ctx, cancel := s.ctx()
	defer cancel()
	acct, err := s.srv.dir.Authenticate(ctx, auth.Login{Proto: "pop3", IP: s.ip, User: user, Password: pass, AuthzID: authz})
	switch {
	case err == nil:
	case errors.Is(err, auth.ErrRateLimited):
		// Decision: [LOGIN-DELAY] rather than [AUTH]. No password was
		// checked, so telling the client its credentials are wrong would
		// make it prompt the person for nothing; RFC 2449 §8.1.1 clients
		// read LOGIN-DELAY as "wait and retry", which is what helps.
		s.reply("-ERR [LOGIN-DELAY] too many failed logins; try again later")
		return s.authFailed()
	case errors.Is(err, auth.ErrTemporary), errors.Is(err, storage.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		s.reply("-ERR [SYS/TEMP] authentication temporarily unavailable")
		return true
	default:
		// RFC 3206 §3 AUTH: the credentials were refused.
		s.reply("-ERR [AUTH] authentication failed")
		return s.authFailed()
	}
	if !s.srv.loginAllowed(acct.ID, time.Now()) {
		s.reply("-ERR [LOGIN-DELAY] logged in too recently")
		return true
	}
	s.acct = acct
	s.log = s.log.With("account", acct.Address)
	inbox, err := s.srv.store.Mailbox(ctx, acct.ID, acct.ID, "INBOX")
	if err == nil {
		err = s.srv.dir.Authorize(ctx, acct.ID, storage.ACLObject{Kind: "mailbox", ID: int64(inbox.ID)}, 'r')
	}
	if err != nil {
		return s.storeError("open maildrop", err)
	}
	s.inbox = inbox
	holder := make([]byte, 12)
	rand.Read(holder)
	h := hex.EncodeToString(holder)
	ok, err := s.srv.leases.AcquireLease(ctx, s.leaseName(), h, s.srv.cfg.LeaseTTL)
	if err != nil {
		return s.storeError("acquire maildrop lease", err)
	}
	if !ok {
		// RFC 2449 §8.1.2 IN-USE: another session holds the maildrop.
		s.log.Info("maildrop in use")
		s.reply("-ERR [IN-USE] maildrop already in use")
		return true
	}
	s.holder = h
	msgs, err := s.srv.store.Messages(ctx, acct.ID, acct.ID, inbox.ID, nil, storage.MessageOptions{})
	if err != nil {
		s.releaseLease()
		return s.storeError("list maildrop", err)
	}
	s.msgs = make([]entry, len(msgs))
	for i, m := range msgs {
		s.msgs[i] = entry{uid: m.UID, size: m.Size, uidl: uidl(inbox.UIDValidity, m)}
	}
	s.state = stateTrans
	s.startRefresher()
	s.stopWatch = s.srv.dir.WatchEnabled(acct.ID, func() { s.interrupt(&s.disabled) })
	n, size := s.totals()
	s.log.Debug("login", "messages", n)
	s.reply("+OK maildrop has %d messages (%d octets)", n, size)
	return true
}

func (s *session) releaseLease() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.leases.ReleaseLease(ctx, s.leaseName(), s.holder); err != nil {
		s.log.Warn("release maildrop lease", "err", err)
	}
	s.holder = ""
}

// storeError answers a failed store call: [SYS/TEMP] for an unavailable
// store or a timeout (the client may retry), [SYS/PERM] otherwise. The
// session continues only in AUTHORIZATION.
func (s *session) storeError(what string, err error) bool {
	s.log.Error(what, "err", err)
	if errors.Is(err, storage.ErrUnavailable) || errors.Is(err, auth.ErrTemporary) || errors.Is(err, context.DeadlineExceeded) {
		s.reply("-ERR [SYS/TEMP] mail store temporarily unavailable")
	} else {
		s.reply("-ERR [SYS/PERM] cannot open maildrop")
	}
	return true
}

// uidl is the RFC 1939 §7 unique-id: the imported one when the message
// came from another POP3 server (so clients do not download it again),
// else "<uidvalidity>.<uid>", which no other message of this store ever
// gets: UIDVALIDITY comes from a store-wide counter and UIDs are never
// reused within it.
func uidl(validity uint32, m storage.Message) string {
	if u := m.ImportUIDL; validUIDL(u) {
		return u
	}
	return strconv.FormatUint(uint64(validity), 10) + "." + strconv.FormatUint(uint64(m.UID), 10)
}

// validUIDL: RFC 1939 §7, 1 to 70 characters in 0x21..0x7E.
func validUIDL(u string) bool {
	if len(u) == 0 || len(u) > 70 {
		return false
	}
	for i := 0; i < len(u); i++ {
		if u[i] < 0x21 || u[i] > 0x7e {
			return false
		}
	}
	return true
}

// startRefresher keeps the lease alive while the session lives; when it is
// lost (taken over after expiry, or unrefreshable for longer than the TTL
// allows) the session ends without UPDATE.
func (s *session) startRefresher() {
	s.stopLease = make(chan struct{})
	s.leaseDone = make(chan struct{})
	cfg := s.srv.cfg
	name, holder := s.leaseName(), s.holder
	go func() {
		defer close(s.leaseDone)
		defer func() {
			if r := recover(); r != nil {
				s.srv.panics.Add(1)
				s.log.Error("panic in lease refresher", "panic", r, "stack", stack())
				s.interrupt(&s.leaseLost)
			}
		}()
		t := time.NewTicker(cfg.LeaseRefresh)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-s.stopLease:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), cfg.CommandTimeout)
			ok, err := s.srv.leases.RefreshLease(ctx, name, holder, cfg.LeaseTTL)
			cancel()
			switch {
			case err == nil && ok:
				last = time.Now()
				continue
			case err == nil:
				s.log.Warn("maildrop lease lost")
			case time.Since(last) >= cfg.LeaseTTL-cfg.LeaseRefresh:
				s.log.Warn("maildrop lease not refreshed in time", "err", err)
			default:
				s.log.Warn("refresh maildrop lease", "err", err)
				continue
			}
			s.interrupt(&s.leaseLost)
			return
		}
	}()
}

func (s *session) totals() (n int, size int64) {
	for _, e := range s.msgs {
		if !e.deleted {
			n++
			size += e.size
		}
	}
	return n, size
}

// msg resolves a message-number argument (RFC 1939 §5: 1-based, deleted
// messages may not be referred to). It replies itself when it fails.
func (s *session) msg(arg string) (int, bool) {
	n, err := strconv.ParseUint(arg, 10, 31)
	if err != nil || n == 0 || arg[0] == '+' {
		s.reply("-ERR invalid message number")
		return 0, false
	}
	if n > uint64(len(s.msgs)) {
		s.reply("-ERR no such message")
		return 0, false
	}
	i := int(n - 1)
	if s.msgs[i].deleted {
		s.reply("-ERR message %d already deleted", n)
		return 0, false
	}
	return i, true
}

func (s *session) cmdStat() {
	n, size := s.totals()
	s.reply("+OK %d %d", n, size)
}

// cmdList answers LIST and UIDL (RFC 1939 §5, §7), with or without a
// message number.
func (s *session) cmdList(c Command, uid bool) {
	value := func(e entry) string {
		if uid {
			return e.uidl
		}
		return strconv.FormatInt(e.size, 10)
	}
	switch len(c.Args) {
	case 0:
		if uid {
			s.reply("+OK unique-id listing follows")
		} else {
			n, size := s.totals()
			s.reply("+OK %d messages (%d octets)", n, size)
		}
		for i, e := range s.msgs {
			if !e.deleted {
				s.reply("%d %s", i+1, value(e))
			}
		}
		s.w.WriteString(".\r\n")
	case 1:
		if i, ok := s.msg(c.Args[0]); ok {
			s.reply("+OK %d %s", i+1, value(s.msgs[i]))
		}
	default:
		s.reply("-ERR too many arguments")
	}
}

func (s *session) cmdDele(c Command) {
	if len(c.Args) != 1 {
		s.reply("-ERR usage: DELE msg")
		return
	}
	if i, ok := s.msg(c.Args[0]); ok {
		// RFC 1939 §5: only marked now; removed in UPDATE.
		s.msgs[i].deleted = true
		s.reply("+OK message %d deleted", i+1)
	}
}

// open fetches a message for RETR or TOP; it replies itself on failure.
// The reader keeps using ctx (a database blob store reads chunks with it),
// so ctx must outlive the reads.
func (s *session) open(ctx context.Context, i int) (storage.Message, storage.ReaderAtCloser, bool) {
	m, r, err := s.srv.store.OpenMessage(ctx, s.acct.ID, s.acct.ID, s.inbox.ID, s.msgs[i].uid)
	switch {
	case err == nil:
		return m, r, true
	case errors.Is(err, storage.ErrNotFound):
		// Expunged by IMAP or webmail since login.
		s.reply("-ERR message %d no longer exists", i+1)
	case errors.Is(err, storage.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		s.log.Error("open message", "uid", s.msgs[i].uid, "err", err)
		s.reply("-ERR [SYS/TEMP] mail store temporarily unavailable")
	default:
		s.log.Error("open message", "uid", s.msgs[i].uid, "err", err)
		s.reply("-ERR [SYS/PERM] cannot read message %d", i+1)
	}
	return storage.Message{}, nil, false
}

// cmdRetr sends a whole message (RFC 1939 §5), byte-stuffed, and sets
// \Seen afterwards unless configured off. A failure after "+OK" cannot be
// reported in-band, so it ends the session (which deletes nothing).
func (s *session) cmdRetr(c Command) bool {
	if len(c.Args) != 1 {
		s.reply("-ERR usage: RETR msg")
		return true
	}
	i, ok := s.msg(c.Args[0])
	if !ok {
		return true
	}
	// The whole transfer gets the idle timeout as its bound: a large
	// message to a slow client legitimately takes long, and every write
	// has its own deadline anyway.
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.IdleTimeout)
	defer cancel()
	m, r, ok := s.open(ctx, i)
	if !ok {
		return true
	}
	defer r.Close()
	s.reply("+OK %d octets", m.Size)
	dw := &dotWriter{w: s.w, bol: true}
	dw.Write(m.Prefix)
	if err := copyRange(dw, r, 0, m.BlobSize); err != nil {
		s.log.Error("retr", "uid", m.UID, "err", err)
		return false
	}
	dw.Close()
	// \Seen is set in the UPDATE state with the deletions, in one
	// transaction for the session (as Dovecot does), not one durable
	// write per RETR: a dropped connection then changes nothing at all.
	if !s.srv.cfg.NoSeenOnRetr && !m.Flags.Seen {
		s.msgs[i].seen = true
	}
	return true
}

// cmdTop sends the header and the first n body lines (RFC 1939 §7),
// reading only those bytes: the header length comes from the stored
// analysis and the body is read in chunks until n line ends are seen.
func (s *session) cmdTop(c Command) bool {
	if len(c.Args) != 2 {
		s.reply("-ERR usage: TOP msg n")
		return true
	}
	lines, err := strconv.ParseInt(c.Args[1], 10, 64)
	if err != nil || lines < 0 || c.Args[1][0] == '+' {
		s.reply("-ERR invalid line count")
		return true
	}
	i, ok := s.msg(c.Args[0])
	if !ok {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.IdleTimeout)
	defer cancel()
	m, r, ok := s.open(ctx, i)
	if !ok {
		return true
	}
	defer r.Close()
	hl := m.BlobSize
	if m.Analysis != nil && m.Analysis.HeaderLen >= 0 && m.Analysis.HeaderLen < hl {
		hl = m.Analysis.HeaderLen
	}
	s.reply("+OK top of message follows")
	dw := &dotWriter{w: s.w, bol: true}
	dw.Write(m.Prefix)
	if err := copyRange(dw, r, 0, hl); err != nil {
		s.log.Error("top", "uid", m.UID, "err", err)
		return false
	}
	if err := copyLines(dw, r, hl, m.BlobSize, lines); err != nil {
		s.log.Error("top", "uid", m.UID, "err", err)
		return false
	}
	dw.Close()
	return true
}

// quit ends the session. From TRANSACTION it enters UPDATE (RFC 1939 §6)
// and removes the messages marked deleted, through the common discard
// path, after confirming the maildrop lease is still held.
func (s *session) quit() bool {
	if s.state == stateAuth {
		s.reply("+OK %s POP3 server signing off", s.srv.cfg.Hostname)
		return false
	}
	s.state = stateUpdate
	var set, seen storage.UIDSet
	for _, e := range s.msgs {
		if e.deleted {
			set = append(set, storage.UIDRange{Start: e.uid, Stop: e.uid})
		} else if e.seen {
			seen = append(seen, storage.UIDRange{Start: e.uid, Stop: e.uid})
		}
	}
	if len(seen) > 0 {
		ctx, cancel := s.ctx()
		// A failure here is logged, not reported: the messages were
		// delivered to the client, and deletions must still happen.
		if _, _, err := s.srv.store.StoreFlags(ctx, s.acct.ID, s.acct.ID, s.inbox.ID, seen, storage.FlagsAdd, storage.Flags{Seen: true}, 0); err != nil {
			s.log.Warn("set seen", "messages", len(seen), "err", err)
		}
		cancel()
	}
	if len(set) > 0 {
		ctx, cancel := s.ctx()
		defer cancel()
		ok, err := s.srv.leases.RefreshLease(ctx, s.leaseName(), s.holder, s.srv.cfg.LeaseTTL)
		if err != nil || !ok {
			s.log.Warn("quit without lease; nothing deleted", "err", err)
			s.reply("-ERR [SYS/TEMP] maildrop lock lost; nothing was deleted")
			return false
		}
		if err := s.srv.dir.Authorize(ctx, s.acct.ID, storage.ACLObject{Kind: "mailbox", ID: int64(s.inbox.ID)}, 'e'); err != nil {
			s.log.Warn("quit: not authorized to delete", "err", err)
			s.reply("-ERR [SYS/PERM] some deleted messages not removed")
			return false
		}
		removed, err := storage.Discard(ctx, s.srv.store, s.acct.ID, s.acct.ID, s.inbox.ID, set, s.acct.Policy.Trashcan)
		if err != nil {
			s.log.Error("update", "err", err)
			if errors.Is(err, storage.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
				s.reply("-ERR [SYS/TEMP] some deleted messages not removed")
			} else {
				s.reply("-ERR some deleted messages not removed")
			}
			return false
		}
		s.log.Debug("update", "deleted", len(removed))
	}
	n, _ := s.totals()
	s.reply("+OK %s POP3 server signing off (%d messages left)", s.srv.cfg.Hostname, n)
	return false
}

// cmdSTLS upgrades to TLS (RFC 2595 §4). A client that sent anything
// after STLS before the handshake is cut off: those plaintext bytes must
// never be read as commands of the TLS session (CVE-2011-0411 class).
func (s *session) cmdSTLS(c Command) bool {
	if !s.canSTLS() {
		s.reply("-ERR STLS not available")
		return !s.abuse()
	}
	if s.r.Buffered() > 0 {
		s.log.Warn("data pipelined after STLS; closing")
		s.reply("-ERR data after STLS")
		return false
	}
	s.reply("+OK begin TLS negotiation")
	if err := s.w.Flush(); err != nil {
		return false
	}
	s.connMu.Lock()
	tc := tls.Server(s.conn, s.srv.cfg.TLS)
	s.conn = tc
	s.connMu.Unlock()
	tc.SetDeadline(time.Now().Add(s.srv.cfg.PreAuthTimeout))
	if err := tc.Handshake(); err != nil {
		s.log.Debug("tls handshake", "err", err)
		return false
	}
	tc.SetDeadline(time.Time{})
	s.tls = true
	s.user = ""
	s.resetIO()
	return true
}

// dotWriter byte-stuffs a multi-line response (RFC 1939 §3): a line that
// begins with "." gets another. A bare LF counts as a line end too, so a
// client that splits on LF never sees a false terminator.
type dotWriter struct {
	w   *bufio.Writer
	bol bool // at the beginning of a line
}

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.bol && p[0] == '.' {
			d.w.WriteByte('.')
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.w.Write(p)
			d.bol = false
			break
		}
		d.w.Write(p[:i+1])
		d.bol = true
		p = p[i+1:]
	}
	return n, nil
}

// Close ends the response: a CRLF when the message did not end with one,
// then the terminating ".".
func (d *dotWriter) Close() {
	if !d.bol {
		d.w.WriteString("\r\n")
	}
	d.w.WriteString(".\r\n")
	d.bol = true
}

// copyRange writes bytes [off, end) of r to w in chunks.
func copyRange(w io.Writer, r io.ReaderAt, off, end int64) error {
	buf := make([]byte, min(chunkSize, max(end-off, 0)))
	for off < end {
		n := int(min(int64(len(buf)), end-off))
		m, err := r.ReadAt(buf[:n], off)
		if m > 0 {
			w.Write(buf[:m])
			off += int64(m)
		}
		if err != nil && !(err == io.EOF && off == end) {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// copyLines writes from off up to and including the n-th line end, or to
// end, reading no further than needed.
func copyLines(w io.Writer, r io.ReaderAt, off, end, n int64) error {
	if n <= 0 {
		return nil
	}
	buf := make([]byte, min(chunkSize/4, max(end-off, 0)))
	for off < end {
		want := int(min(int64(len(buf)), end-off))
		m, err := r.ReadAt(buf[:want], off)
		chunk := buf[:m]
		for j := 0; j < len(chunk); j++ {
			if chunk[j] == '\n' {
				if n--; n == 0 {
					w.Write(chunk[:j+1])
					return nil
				}
			}
		}
		w.Write(chunk)
		off += int64(m)
		if err != nil && !(err == io.EOF && off == end) {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}
