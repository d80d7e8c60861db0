package smtpd

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
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"tidings/auth"
	"tidings/delivery"
	"tidings/storage"
)

// backend makes a session per EHLO/HELO (go-smtp makes a new one after
// STARTTLS, which is how the state resets, RFC 3207 §4.2).
type backend struct{ s *Server }

// session is one SMTP session between EHLO and QUIT (or STARTTLS).
type session struct {
	s      *Server
	c      *conn
	sc     *smtp.Conn
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	ip     netip.Addr
	helo   string
	tls    *tls.ConnectionState

	account  *storage.Account // after AUTH
	commands int
	// stopWatch ends the watch that drops the connection when the
	// account is disabled (DESIGN.md §Identity).
	stopWatch func()

	// transaction
	from     string
	mailOpts smtp.MailOptions
	rcpts    []delivery.Recipient
	// delivered is set when DATA committed; go-smtp calls Reset right
	// after writing the reply, which is where the after-250 fault point is.
	delivered bool
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func (b backend) NewSession(sc *smtp.Conn) (smtp.Session, error) {
	s := b.s
	nc := sc.Conn()
	var c *conn
	switch x := nc.(type) {
	case *conn:
		c = x
	case *tls.Conn:
		c, _ = x.NetConn().(*conn)
		if c != nil {
			c.setTop(x)
		}
	}
	if c == nil {
		return nil, errors.New("smtpd: connection not accepted through smtpd")
	}
	if c.tainted.Load() {
		return nil, errRefused
	}
	ctx, cancel := context.WithCancel(context.Background())
	ip := netip.Addr{}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip = ta.AddrPort().Addr().Unmap()
	}
	sess := &session{
		s: s, c: c, sc: sc, ctx: ctx, cancel: cancel, ip: ip,
		helo: sc.Hostname(),
		log:  s.log.With("proto", s.cfg.Mode.String(), "conn", s.ids.Add(1), "ip", ip.String()),
	}
	if st, ok := sc.TLSConnectionState(); ok {
		sess.tls = &st
	}
	sess.log.Debug("session", "helo", sess.helo, "tls", sess.tls != nil)
	return sess, nil
}

// Replies. Texts are short and leak nothing; the log has the detail.
var (
	errRefused      = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Connection refused"}
	errShutdown     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down"}
	errTooMany      = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many commands"}
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errNotOwner     = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address not owned by you"}
	errUTF8         = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "Non-ASCII address requires SMTPUTF8"}
	errBadSender    = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Bad sender address syntax"}
	errBadRcpt      = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
	errUnknownUser  = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	errRelayDenied  = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relay access denied"}
	errOverQuota    = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
	errExpansion    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 4, 6}, Message: "Alias expansion too large or too deep"}
	errTempFail     = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure, try again later"}
	errRateLimit    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Sending limit exceeded, try again later"}
	errTooManyRcpt  = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}
	errSmuggling    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Bare CR or LF not allowed in message"}
	errLoop         = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 4, 6}, Message: "Too many Received headers: mail loop"}
	errDMARC        = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Rejected by the sender domain's DMARC policy"}
	errAuthFailed   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication failed"}
	errAuthTemp     = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	errNoAuth       = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "AUTH not available here"}
)

// step counts a command and refuses when the connection must end.
func (s *session) step() error {
	if s.c.tainted.Load() {
		return errRefused
	}
	select {
	case <-s.s.shutdown:
		return errShutdown
	default:
	}
	s.commands++
	if s.commands > s.s.cfg.MaxCommands {
		s.log.Warn("command limit reached", "limit", s.s.cfg.MaxCommands)
		s.c.expire(errTooMany)
		return errTooMany
	}
	return nil
}

func (s *session) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.s.cfg.CommandTimeout)
}

func (s *session) Reset() {
	if s.delivered {
		s.delivered = false
		fault("after-250")
	}
	s.from = ""
	s.mailOpts = smtp.MailOptions{}
	s.rcpts = nil
	s.c.busy.Store(false)
	s.commands++
}

func (s *session) Logout() error {
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.c.busy.Store(false)
	s.cancel()
	return nil
}

// AuthMechanisms offers PLAIN and LOGIN on submission only; go-smtp shows
// them only under TLS unless AllowInsecureAuth.
func (s *session) AuthMechanisms() []string {
	if s.s.cfg.Mode != Submission {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if err := s.step(); err != nil {
		return nil, err
	}
	if s.s.cfg.Mode != Submission {
		return nil, errNoAuth
	}
	login := func(identity, username, password string) error {
		ctx, cancel := s.opCtx()
		defer cancel()
		acct, err := s.s.deps.Dir.Authenticate(ctx, auth.Login{Proto: "smtp", IP: s.ip, User: username, Password: password, AuthzID: identity})
		switch {
		case err == nil:
		case errors.Is(err, auth.ErrAuthFailed):
			return errAuthFailed
		case errors.Is(err, auth.ErrRateLimited), errors.Is(err, auth.ErrTemporary):
			return errAuthTemp
		default:
			s.log.Warn("auth check failed", "err", err)
			return errAuthTemp
		}
		s.account = &acct
		s.log = s.log.With("account", acct.Address)
		s.log.Info("login", "mech", mech)
		if s.stopWatch == nil {
			log := s.log
			s.stopWatch = s.s.deps.Dir.WatchEnabled(acct.ID, func() {
				// A message in flight is not acknowledged, so the
				// client keeps it; nothing is lost.
				log.Info("account disabled; ending session")
				s.c.Close()
			})
		}
		return nil
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(login), nil
	case sasl.Login:
		return newLoginServer(func(u, p string) error { return login("", u, p) }), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if err := s.step(); err != nil {
		return err
	}
	if !opts.UTF8 && !isASCII(from) {
		return errUTF8
	}
	if s.s.cfg.Mode == Submission {
		if s.account == nil {
			return errAuthRequired
		}
		if from == "" {
			return errNotOwner
		}
	}
	if from != "" {
		if err := validSender(from); err != nil {
			s.log.Info("sender refused", "from", from, "err", err)
			return errBadSender
		}
	}
	if s.s.cfg.Mode == Submission {
		ctx, cancel := s.opCtx()
		defer cancel()
		ok, err := s.s.deps.Local.Owns(ctx, *s.account, from)
		if err != nil {
			s.log.Warn("sender check failed", "err", err)
			return errTempFail
		}
		if !ok {
			s.log.Info("sender refused", "from", from, "reason", "not owned")
			return errNotOwner
		}
		if err := s.checkLimits(ctx, 0); err != nil {
			return err
		}
	}
	s.from = from
	s.mailOpts = *opts
	s.c.busy.Store(true)
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := s.step(); err != nil {
		return err
	}
	if !s.mailOpts.UTF8 && !isASCII(to) {
		return errUTF8
	}
	if len(s.rcpts) >= s.s.cfg.MaxRecipients {
		return errTooManyRcpt
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	if s.s.cfg.Mode == Submission {
		if err := s.checkLimits(ctx, len(s.rcpts)+1); err != nil {
			return err
		}
	}
	res, err := s.s.deps.Local.Route(ctx, to)
	if errors.Is(err, auth.ErrUnknownDomain) && s.account != nil {
		// Authenticated submission may send anywhere.
		res, err = s.s.deps.Local.RemoteRoute(to)
	}
	if err != nil {
		reply := routeReply(err)
		lvl := slog.LevelInfo
		if reply == errTempFail {
			lvl = slog.LevelWarn
		}
		s.log.Log(ctx, lvl, "recipient refused", "to", to, "reply", reply.Code, "err", err)
		return reply
	}
	r := delivery.Recipient{Address: to, Route: res}
	if len(opts.Notify) > 0 {
		ns := make([]string, len(opts.Notify))
		for i, n := range opts.Notify {
			ns[i] = string(n)
		}
		r.Notify = strings.Join(ns, ",")
	}
	if opts.OriginalRecipient != "" {
		r.ORCPT = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
	}
	s.rcpts = append(s.rcpts, r)
	return nil
}

// routeReply maps a routing error to its reply (RFC 3463 codes).
func routeReply(err error) *smtp.SMTPError {
	switch {
	case errors.Is(err, auth.ErrBadAddress):
		return errBadRcpt
	case errors.Is(err, auth.ErrUnknownDomain):
		return errRelayDenied
	case errors.Is(err, auth.ErrUnknownRecipient):
		return errUnknownUser
	case errors.Is(err, storage.ErrOverQuota):
		return errOverQuota
	case errors.Is(err, auth.ErrExpansion):
		return errExpansion
	}
	return errTempFail
}

// checkLimits enforces the per-account hourly limits of submission
// (DESIGN.md §Mail flow): a stolen password must not become a spam cannon.
// rcpts is the number of recipients the transaction would have.
func (s *session) checkLimits(ctx context.Context, rcpts int) error {
	ctr := s.s.deps.Store
	msgLimit, rcptLimit := s.limits()
	now := time.Now()
	since := now.Add(-time.Hour)
	key, n := "smtp-msgs:", msgLimit
	used := 0
	if rcpts > 0 {
		key, n, used = "smtp-rcpts:", rcptLimit, rcpts
	}
	total, err := ctr.CountEvent(ctx, fmt.Sprint(key, s.account.ID), 0, now, since)
	if err != nil {
		s.log.Warn("limit check failed", "err", err)
		return errTempFail
	}
	if rcpts == 0 && total >= n || rcpts > 0 && total+used > n {
		s.log.Warn("sending limit reached", "counter", strings.TrimSuffix(key, ":"), "limit", n)
		return errRateLimit
	}
	return nil
}

func (s *session) limits() (msgs, rcpts int) {
	msgs, rcpts = s.s.cfg.MessagesPerHour, s.s.cfg.RecipientsPerHour
	if p := s.account.Policy; p.MessagesPerHour > 0 {
		msgs = p.MessagesPerHour
	}
	if p := s.account.Policy; p.RecipientsPerHour > 0 {
		rcpts = p.RecipientsPerHour
	}
	return msgs, rcpts
}

// countSent records an accepted submission against the hourly limits.
func (s *session) countSent(ctx context.Context) {
	ctr := s.s.deps.Store
	if s.account == nil {
		return
	}
	now := time.Now()
	since := now.Add(-time.Hour)
	if _, err := ctr.CountEvent(ctx, fmt.Sprint("smtp-msgs:", s.account.ID), 1, now, since); err != nil {
		s.log.Warn("limit count failed", "err", err)
	}
	if _, err := ctr.CountEvent(ctx, fmt.Sprint("smtp-rcpts:", s.account.ID), len(s.rcpts), now, since); err != nil {
		s.log.Warn("limit count failed", "err", err)
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Data spools, checks and delivers a message. It must consume r only as
// far as it needs: go-smtp discards the rest.
func (s *session) Data(r io.Reader) error {
	if err := s.step(); err != nil {
		return err
	}
	s.c.busy.Store(true)
	return s.data(r)
}

// validSender checks a reverse path. It is the address parser's check
// except that '%' and '!' are allowed in the local part: they are relay
// tricks only in a forward path, and old gateways still send from such
// addresses.
func validSender(from string) error {
	i := strings.LastIndexByte(from, '@')
	if i > 0 {
		from = strings.NewReplacer("%", "_", "!", "_").Replace(from[:i]) + from[i:]
	}
	_, err := auth.ParseAddress(from)
	return err
}
