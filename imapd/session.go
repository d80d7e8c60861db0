package imapd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"tidings/auth"
	"tidings/message"
	"tidings/storage"
)

// session is one IMAP connection. go-imap calls its methods from the
// connection's goroutine one at a time (Idle from a helper goroutine while
// the connection goroutine waits for DONE), so the fields below need no
// lock except where the server or an owner reaches in (bye, authed).
type session struct {
	srv    *Server
	conn   *imapserver.Conn
	raw    *trackedConn
	ip     netip.Addr
	log    *slog.Logger
	ctx    context.Context // ends when the connection ends
	cancel context.CancelFunc
	timer  *time.Timer

	authed  atomic.Bool
	acct    storage.Account
	sel     *selected
	byeOnce sync.Once
	// stopWatch ends the watch that closes the session when its account
	// is disabled (DESIGN.md §Identity).
	stopWatch func()
}

// selected is the state of the selected mailbox.
type selected struct {
	owner     *owner
	st        *imapserver.SessionTracker
	mb        storage.Mailbox
	readOnly  bool
	recent    map[storage.UID]bool
	searchRes imap.UIDSet
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionSASL        = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

func (s *Server) newSession(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	raw := rawConn(c.NetConn())
	sess := &session{srv: s, conn: c, raw: raw}
	if raw != nil {
		sess.ip = raw.ip
	}
	sess.ctx, sess.cancel = context.WithCancel(context.Background())
	sess.log = s.log.With("conn", s.connID.Add(1), "ip", sess.ip.String())
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		sess.cancel()
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
	}
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	// An absolute pre-auth deadline: the library's read timeouts restart
	// with every line, so a client dripping bytes could stay forever.
	sess.timer = time.AfterFunc(s.cfg.PreAuthTimeout, func() {
		if !sess.authed.Load() {
			sess.log.Info("pre-auth timeout")
			if raw != nil {
				raw.Close()
			} else {
				c.NetConn().Close()
			}
		}
	})
	sess.log.Debug("connected")
	return sess, nil, nil
}

// Close implements imapserver.Session.
func (s *session) Close() error {
	s.timer.Stop()
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.unselect()
	s.cancel()
	s.srv.mu.Lock()
	delete(s.srv.sessions, s)
	s.srv.mu.Unlock()
	s.log.Debug("disconnected")
	return nil
}

// bye ends the connection with a BYE (RFC 9051 §7.1.5). It may be called
// from any goroutine; the library serialises writes.
func (s *session) bye(text string) {
	s.byeOnce.Do(func() {
		if err := s.conn.Bye(text); err != nil {
			s.log.Debug("bye", "err", err)
		}
	})
}

// opCtx bounds one command's store calls.
func (s *session) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, storeTimeout)
}

func (s *session) me() storage.AccountID { return s.acct.ID }

// ---- not authenticated ----

// Login implements imapserver.Session (LOGIN, RFC 9051 §6.2.3).
func (s *session) Login(username, password string) error {
	return s.login(username, password, "")
}

// AuthenticateMechanisms implements imapserver.SessionSASL.
func (s *session) AuthenticateMechanisms() []string { return []string{sasl.Plain} }

// Authenticate implements imapserver.SessionSASL: PLAIN (RFC 4616) with the
// authorization identity handed to auth, which folds and checks it.
func (s *session) Authenticate(mech string) (sasl.Server, error) {
	if !strings.EqualFold(mech, sasl.Plain) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "SASL mechanism not supported"}
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		return s.login(username, password, identity)
	}), nil
}

func (s *session) login(user, pass, authz string) error {
	ctx, cancel := s.opCtx()
	defer cancel()
	acct, err := s.srv.dir.Authenticate(ctx, auth.Login{Proto: "imap", IP: s.ip, User: user, Password: pass, AuthzID: authz})
	switch {
	case err == nil:
	case errors.Is(err, auth.ErrRateLimited):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Too many failed logins; try again later"}
	case errors.Is(err, auth.ErrTemporary):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Temporary failure; try again later"}
	default:
		return imapserver.ErrAuthFailed
	}
	s.srv.mu.Lock()
	n := 0
	for o := range s.srv.sessions {
		if o != s && o.authed.Load() && o.acct.ID == acct.ID && o.ip == s.ip {
			n++
		}
	}
	over := n >= s.srv.cfg.MaxConnsPerUserIP
	if !over {
		s.acct = acct
		s.authed.Store(true)
	}
	s.srv.mu.Unlock()
	if over {
		s.log.Warn("login refused", "user", acct.Address, "reason", "too many connections")
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "Too many connections for this account from your address"}
	}
	s.timer.Stop()
	s.log = s.log.With("user", acct.Address)
	s.log.Info("login")
	s.stopWatch = s.srv.dir.WatchEnabled(acct.ID, func() {
		s.log.Info("account disabled; ending session")
		s.bye("Account disabled")
	})
	return nil
}

// AppendLimit implements imapserver.SessionAppendLimit. Before login it is
// 0, so an unauthenticated client cannot make us read a large literal.
func (s *session) AppendLimit() uint32 {
	if !s.authed.Load() {
		return 0
	}
	return uint32(s.srv.cfg.AppendLimit)
}

// ---- authenticated: mailboxes ----

// storeErr turns a store error into the client's reply (CONVENTIONS.md
// §Errors); the detail goes to the log only.
func (s *session) storeErr(op string, err error) error {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return err
	}
	no := func(code imap.ResponseCode, text string) error {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
	}
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return no(imap.ResponseCodeNonExistent, "No such mailbox or message")
	case errors.Is(err, storage.ErrExists):
		return no(imap.ResponseCodeAlreadyExists, "Mailbox already exists")
	case errors.Is(err, storage.ErrOverQuota):
		return no(imap.ResponseCodeOverQuota, "Quota exceeded")
	case errors.Is(err, storage.ErrLimit):
		return no(imap.ResponseCodeLimit, "Limit exceeded")
	case errors.Is(err, storage.ErrInvalid):
		return no(imap.ResponseCodeCannot, "Not possible")
	case errors.Is(err, storage.ErrDenied):
		return no(imap.ResponseCodeNoPerm, "Permission denied")
	case errors.Is(err, storage.ErrNotEmpty):
		return no(imap.ResponseCodeHasChildren, "Mailbox has children")
	}
	s.log.Error("store failure", "op", op, "err", err)
	return no(imap.ResponseCodeUnavailable, "Temporary failure; try again later")
}

// checkName validates a mailbox name from a client ('/' hierarchy,
// RFC 9051 §5.1): no empty levels, no wildcards or controls, valid UTF-8,
// bounded length.
func checkName(name string) error {
	bad := func(why string) error {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Invalid mailbox name: " + why}
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > 1000:
		return bad("too long")
	case !utf8.ValidString(name):
		return bad("not UTF-8")
	case strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//"):
		return bad("empty hierarchy level")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '*' || r == '%' {
			return bad("forbidden character")
		}
	}
	return nil
}

func (s *session) mailbox(ctx context.Context, name string) (storage.Mailbox, error) {
	return s.srv.store.Mailbox(ctx, s.me(), s.me(), name)
}

// Create implements CREATE (RFC 9051 §6.3.4, RFC 6154 §3 CREATE-SPECIAL-USE).
func (s *session) Create(name string, opt *imap.CreateOptions) error {
	// A trailing separator declares intent to create a hierarchy.
	name = strings.TrimSuffix(name, "/")
	if err := checkName(name); err != nil {
		return err
	}
	nm := storage.NewMailbox{Name: name}
	if opt != nil && len(opt.SpecialUse) > 0 {
		if len(opt.SpecialUse) > 1 {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "One special-use attribute per mailbox"}
		}
		switch a := opt.SpecialUse[0]; a {
		case imap.MailboxAttrSent, imap.MailboxAttrDrafts, imap.MailboxAttrTrash, imap.MailboxAttrJunk, imap.MailboxAttrArchive:
			nm.SpecialUse = string(a)
		default:
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "Unsupported special-use attribute"}
		}
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	if _, err := s.srv.store.CreateMailbox(ctx, s.me(), s.me(), nm); err != nil {
		return s.storeErr("create", err)
	}
	return nil
}

// Delete implements DELETE (RFC 9051 §6.3.5).
func (s *session) Delete(name string) error {
	if strings.EqualFold(name, "INBOX") {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "INBOX cannot be deleted"}
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	if err := s.srv.store.DeleteMailbox(ctx, s.me(), s.me(), name); err != nil {
		return s.storeErr("delete", err)
	}
	return nil
}

// Rename implements RENAME (RFC 9051 §6.3.6).
func (s *session) Rename(from, to string, _ *imap.RenameOptions) error {
	if err := checkName(to); err != nil {
		return err
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	if err := s.srv.store.RenameMailbox(ctx, s.me(), s.me(), from, to); err != nil {
		return s.storeErr("rename", err)
	}
	return nil
}

// Subscribe implements SUBSCRIBE.
func (s *session) Subscribe(name string) error { return s.subscribe(name, true) }

// Unsubscribe implements UNSUBSCRIBE.
func (s *session) Unsubscribe(name string) error { return s.subscribe(name, false) }

func (s *session) subscribe(name string, on bool) error {
	ctx, cancel := s.opCtx()
	defer cancel()
	if err := s.srv.store.SetSubscribed(ctx, s.me(), s.me(), name, on); err != nil {
		return s.storeErr("subscribe", err)
	}
	return nil
}

// Namespace implements NAMESPACE (RFC 2342): one personal namespace.
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: '/'}}}, nil
}

// List implements LIST with LIST-EXTENDED (RFC 5258), SPECIAL-USE
// (RFC 6154) and LIST-STATUS (RFC 5819).
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, opt *imap.ListOptions) error {
	if opt == nil {
		opt = &imap.ListOptions{}
	}
	if len(patterns) == 1 && patterns[0] == "" {
		// RFC 9051 §6.3.9: an empty pattern asks for the delimiter.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: '/', Mailbox: ""})
	}
	ctx, cancel := s.opCtx()
	mbs, err := s.srv.store.Mailboxes(ctx, s.me(), s.me())
	cancel()
	if err != nil {
		return s.storeErr("list", err)
	}
	exists := map[string]*storage.Mailbox{}
	children := map[string]bool{}
	var names []string
	for i := range mbs {
		m := &mbs[i]
		exists[m.Name] = m
		names = append(names, m.Name)
		for p := m.Name; ; {
			j := strings.LastIndexByte(p, '/')
			if j < 0 {
				break
			}
			p = p[:j]
			children[p] = true
			if _, ok := exists[p]; !ok && !slices.Contains(names, p) {
				names = append(names, p) // a \Noselect parent
			}
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		// INBOX first, then by name.
		switch {
		case a == b:
			return 0
		case a == "INBOX":
			return -1
		case b == "INBOX":
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, name := range names {
		match := false
		for _, p := range patterns {
			if imapserver.MatchList(name, '/', ref, p) {
				match = true
				break
			}
		}
		if !match {
			continue
		}
		m := exists[name]
		if opt.SelectSubscribed && (m == nil || !m.Subscribed) {
			continue
		}
		if opt.SelectSpecialUse && (m == nil || m.SpecialUse == "") {
			continue
		}
		d := &imap.ListData{Delim: '/', Mailbox: name}
		if m == nil {
			d.Attrs = append(d.Attrs, imap.MailboxAttrNoSelect)
		}
		if children[name] {
			d.Attrs = append(d.Attrs, imap.MailboxAttrHasChildren)
		} else {
			d.Attrs = append(d.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if m != nil {
			if m.Subscribed && (opt.ReturnSubscribed || opt.SelectSubscribed) {
				d.Attrs = append(d.Attrs, imap.MailboxAttrSubscribed)
			}
			if m.SpecialUse != "" {
				d.Attrs = append(d.Attrs, imap.MailboxAttr(m.SpecialUse))
			}
			if opt.ReturnStatus != nil {
				d.Status = s.statusData(*m, opt.ReturnStatus)
			}
		}
		if err := w.WriteList(d); err != nil {
			return err
		}
	}
	return nil
}

// Status implements STATUS (RFC 9051 §6.3.11) from the mailbox counters.
func (s *session) Status(name string, opt *imap.StatusOptions) (*imap.StatusData, error) {
	ctx, cancel := s.opCtx()
	defer cancel()
	m, err := s.mailbox(ctx, name)
	if err != nil {
		return nil, s.storeErr("status", err)
	}
	return s.statusData(m, opt), nil
}

func (s *session) statusData(m storage.Mailbox, opt *imap.StatusOptions) *imap.StatusData {
	u32 := func(n int64) *uint32 { v := uint32(n); return &v }
	d := &imap.StatusData{Mailbox: m.Name, UIDNext: imap.UID(m.UIDNext), UIDValidity: m.UIDValidity}
	if opt.NumMessages {
		d.NumMessages = u32(m.Messages)
	}
	if opt.NumRecent {
		d.NumRecent = u32(0)
	}
	if opt.NumUnseen {
		d.NumUnseen = u32(m.Unseen)
	}
	if opt.NumDeleted {
		d.NumDeleted = u32(m.Deleted)
	}
	if opt.Size {
		sz := m.Size
		d.Size = &sz
	}
	if opt.AppendLimit {
		d.AppendLimit = u32(s.srv.cfg.AppendLimit)
	}
	if opt.HighestModSeq {
		d.HighestModSeq = uint64(m.HighestModSeq)
	}
	return d
}

// Append implements APPEND (RFC 9051 §6.3.12, UIDPLUS APPENDUID): the
// literal is spooled before any store call, analysed once, then stored in
// one short transaction.
func (s *session) Append(name string, r imap.LiteralReader, opt *imap.AppendOptions) (*imap.AppendData, error) {
	ctx, cancel := s.opCtx()
	defer cancel()
	mb, err := s.mailbox(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
	}
	if err != nil {
		return nil, s.storeErr("append", err)
	}
	sp := storage.NewSpool(s.srv.cfg.SpoolDir, s.srv.cfg.AppendLimit)
	defer sp.Close()
	if _, err := sp.ReadFrom(r); err != nil {
		if errors.Is(err, storage.ErrTooLarge) {
			return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too large"}
		}
		return nil, fmt.Errorf("append: read literal: %w", err)
	}
	sp.Finish()
	rd, err := sp.Open()
	if err != nil {
		return nil, s.storeErr("append spool", err)
	}
	a, err := message.Analyze(rd, sp.Size(), message.Options{})
	rd.Close()
	if err != nil {
		return nil, s.storeErr("append analyze", err)
	}
	var flags storage.Flags
	if opt != nil {
		flags = storeFlags(opt.Flags)
	}
	nm := storage.NewMessage{Flags: flags, Analysis: a}
	if opt != nil {
		nm.InternalDate = opt.Time
	}
	res, err := s.srv.store.Append(ctx, s.me(), s.me(), mb.ID, sp, nm)
	if err != nil {
		return nil, s.storeErr("append", err)
	}
	if s.sel != nil && s.sel.mb.ID == mb.ID {
		// Let the EXISTS reach this client before the tagged OK.
		if err := s.sel.owner.sync(ctx); err != nil {
			s.log.Warn("sync after append", "err", err)
		}
	}
	return &imap.AppendData{UID: imap.UID(res.UID), UIDValidity: res.UIDValidity}, nil
}

// storeFlags converts IMAP flags to store flags; \Recent cannot be set
// (RFC 9051 §2.3.2) and is ignored.
func storeFlags(fl []imap.Flag) storage.Flags {
	var f storage.Flags
	for _, x := range fl {
		switch strings.ToLower(string(x)) {
		case `\seen`:
			f.Seen = true
		case `\answered`:
			f.Answered = true
		case `\flagged`:
			f.Flagged = true
		case `\deleted`:
			f.Deleted = true
		case `\draft`:
			f.Draft = true
		case `\recent`:
		default:
			if !strings.HasPrefix(string(x), `\`) {
				f.Keywords = append(f.Keywords, string(x))
			}
		}
	}
	return f
}
