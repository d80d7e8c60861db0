package imapd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"tidings/storage"
)

// owner is the one feeder of a selected mailbox's MailboxTracker on this
// node (DESIGN.md §Storage "Notifications are hints"). It subscribes to
// the store's hints for the account, asks ChangesSince from the MODSEQ it
// last applied and queues the differences, one batch at a time, in order.
// Sessions never query the store from Poll or Idle: they drain what the
// owner queued.
type owner struct {
	srv     *Server
	account storage.AccountID
	id      storage.MailboxID

	// applyMu serialises catch-ups, so batches are applied strictly in
	// MODSEQ order. It is held across a store read, never across a write
	// to a client.
	applyMu sync.Mutex
	loaded  bool

	// mu guards the server view below and every call into the tracker.
	// Sessions take it to translate sequence numbers. Nobody writes to a
	// client while holding it.
	mu       sync.Mutex
	tracker  *imapserver.MailboxTracker
	uids     []storage.UID // server view, ascending; len == tracker's count
	modseq   storage.ModSeq
	uidNext  storage.UID
	keywords map[string]string // folded → display spelling
	sessions map[*session]struct{}
	// own records flag changes a session made itself (uid → modseq and
	// session), so the owner does not echo them back to it.
	own    map[storage.UID]ownChange
	broken bool

	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	cancel func()
}

type ownChange struct {
	modseq storage.ModSeq
	st     *imapserver.SessionTracker
}

// acquireOwner returns the owner of mailbox, creating and starting it, and
// registers sess with it. A broken owner is replaced.
func (s *Server) acquireOwner(sess *session, account storage.AccountID, mailbox storage.MailboxID) *owner {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.owners[mailbox]
	if o != nil {
		o.mu.Lock()
		broken := o.broken
		o.mu.Unlock()
		if broken {
			o = nil
		}
	}
	if o == nil {
		o = &owner{
			srv: s, account: account, id: mailbox,
			keywords: map[string]string{},
			sessions: map[*session]struct{}{},
			own:      map[storage.UID]ownChange{},
			kick:     make(chan struct{}, 1),
			stop:     make(chan struct{}),
			done:     make(chan struct{}),
		}
		s.owners[mailbox] = o
		o.cancel = s.store.Subscribe(account, func(h storage.Hint) {
			if h.Mailbox == mailbox || h.Mailbox == 0 {
				o.poke()
			}
		})
		go o.loop()
	}
	o.mu.Lock()
	o.sessions[sess] = struct{}{}
	o.mu.Unlock()
	return o
}

// release unregisters sess; the last one stops the owner.
func (s *Server) releaseOwner(sess *session, o *owner) {
	s.mu.Lock()
	o.mu.Lock()
	delete(o.sessions, sess)
	last := len(o.sessions) == 0
	o.mu.Unlock()
	if last && s.owners[o.id] == o {
		delete(s.owners, o.id)
	}
	s.mu.Unlock()
	if last {
		o.cancel()
		close(o.stop)
	}
}

func (o *owner) poke() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func (o *owner) loop() {
	defer close(o.done)
	defer func() {
		if r := recover(); r != nil {
			o.srv.panics.Add(1)
			o.srv.log.Error("panic in mailbox owner", "mailbox", int64(o.id), "panic", fmt.Sprint(r))
			o.fail("Internal error; please reconnect")
		}
	}()
	for {
		select {
		case <-o.stop:
			return
		case <-o.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		err := o.sync(ctx)
		cancel()
		if err != nil {
			o.srv.log.Warn("mailbox catch-up failed", "mailbox", int64(o.id), "err", err)
		}
	}
}

// sync brings the tracker up to the store's present: the first call loads
// the mailbox, later ones apply ChangesSince. Sessions call it after their
// own writes so that their EXPUNGE/EXISTS responses precede the tagged OK.
func (o *owner) sync(ctx context.Context) error {
	o.applyMu.Lock()
	defer o.applyMu.Unlock()
	o.mu.Lock()
	broken := o.broken
	o.mu.Unlock()
	if broken {
		return errBroken
	}
	var since storage.ModSeq
	if o.loaded {
		o.mu.Lock()
		since = o.modseq
		o.mu.Unlock()
	}
	ch, err := o.srv.store.ChangesSince(ctx, o.account, o.account, o.id, since)
	switch {
	case err == nil:
	case errors.Is(err, storage.ErrResyncRequired), errors.Is(err, storage.ErrNotFound):
		// RFC 9051 §7.1.5: a mailbox that vanished or whose history we can
		// no longer follow cannot be shown consistently: end the sessions.
		o.fail("Mailbox state changed beyond recovery; please reconnect")
		return fmt.Errorf("mailbox %d: %w", o.id, err)
	default:
		return fmt.Errorf("mailbox %d: %w", o.id, err)
	}
	if !o.loaded {
		o.mu.Lock()
		o.uids = make([]storage.UID, 0, len(ch.Changed))
		for _, m := range ch.Changed {
			o.uids = append(o.uids, m.UID)
			o.addKeywords(m.Flags.Keywords)
		}
		o.modseq, o.uidNext = ch.Highest, ch.UIDNext
		o.tracker = imapserver.NewMailboxTracker(uint32(len(o.uids)))
		o.mu.Unlock()
		o.loaded = true
		return nil
	}
	return o.apply(ch)
}

var errBroken = errors.New("mailbox view broken")

// apply queues one ChangesSince batch: expunges, then new messages (one
// EXISTS per message, so the tracker's EncodeSeqNum, which handles only
// increments of one, stays right), then flag changes.
func (o *owner) apply(ch storage.Changes) (err error) {
	o.mu.Lock()
	defer func() {
		if r := recover(); r != nil {
			// The tracker panics on inconsistent input: this mailbox's
			// sessions cannot be trusted any more.
			o.srv.panics.Add(1)
			o.srv.log.Error("mailbox tracker panic", "mailbox", int64(o.id), "panic", fmt.Sprint(r))
			o.mu.Unlock()
			o.fail("Internal error; please reconnect")
			err = errBroken
			return
		}
		o.mu.Unlock()
	}()
	if ch.Highest <= o.modseq && len(ch.Changed) == 0 && len(ch.Expunged) == 0 {
		return nil
	}
	for _, u := range ch.Expunged {
		i, ok := slices.BinarySearch(o.uids, u)
		if !ok {
			continue
		}
		o.uids = slices.Delete(o.uids, i, i+1)
		delete(o.own, u)
		o.tracker.QueueExpunge(uint32(i + 1))
	}
	newKw := false
	for _, m := range ch.Changed {
		if o.addKeywords(m.Flags.Keywords) {
			newKw = true
		}
	}
	if newKw {
		o.tracker.QueueMailboxFlags(o.flagList())
	}
	for _, m := range ch.Changed {
		if n := len(o.uids); n == 0 || m.UID > o.uids[n-1] {
			o.uids = append(o.uids, m.UID)
			o.tracker.QueueNumMessages(uint32(len(o.uids)))
			continue
		}
		i, ok := slices.BinarySearch(o.uids, m.UID)
		if !ok {
			continue
		}
		var src *imapserver.SessionTracker
		if oc, ok := o.own[m.UID]; ok {
			if oc.modseq == m.ModSeq {
				src = oc.st
			}
			if m.ModSeq >= oc.modseq {
				delete(o.own, m.UID)
			}
		}
		o.tracker.QueueMessageFlags(uint32(i+1), imap.UID(m.UID), imapFlags(m.Flags, false), src)
	}
	if ch.Highest > o.modseq {
		o.modseq = ch.Highest
	}
	if ch.UIDNext > o.uidNext {
		o.uidNext = ch.UIDNext
	}
	return nil
}

// noteOwn records flag changes st made and has already reported.
func (o *owner) noteOwn(st *imapserver.SessionTracker, updated []storage.MessageFlags) {
	o.mu.Lock()
	for _, m := range updated {
		if m.ModSeq > o.modseq {
			o.own[m.UID] = ownChange{modseq: m.ModSeq, st: st}
		}
	}
	o.mu.Unlock()
}

// addKeywords adds keywords to the mailbox set (o.mu held); reports
// whether one was new.
func (o *owner) addKeywords(kws []string) bool {
	added := false
	for _, k := range kws {
		f := storage.Fold(k)
		if _, ok := o.keywords[f]; !ok {
			o.keywords[f] = k
			added = true
		}
	}
	return added
}

// flagList is the mailbox FLAGS: system flags and the keywords in use
// (o.mu held).
func (o *owner) flagList() []imap.Flag {
	fl := []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}
	kws := make([]string, 0, len(o.keywords))
	for _, k := range o.keywords {
		kws = append(kws, k)
	}
	slices.Sort(kws)
	for _, k := range kws {
		fl = append(fl, imap.Flag(k))
	}
	return fl
}

// fail marks the owner broken and ends its sessions with BYE. BYE is
// written outside every lock.
func (o *owner) fail(text string) {
	o.mu.Lock()
	o.broken = true
	sess := make([]*session, 0, len(o.sessions))
	for s := range o.sessions {
		sess = append(sess, s)
	}
	o.mu.Unlock()
	for _, s := range sess {
		go s.bye(text)
	}
}

// imapFlags converts store flags to IMAP flags.
func imapFlags(f storage.Flags, recent bool) []imap.Flag {
	out := make([]imap.Flag, 0, 5+len(f.Keywords))
	if f.Seen {
		out = append(out, imap.FlagSeen)
	}
	if f.Answered {
		out = append(out, imap.FlagAnswered)
	}
	if f.Flagged {
		out = append(out, imap.FlagFlagged)
	}
	if f.Deleted {
		out = append(out, imap.FlagDeleted)
	}
	if f.Draft {
		out = append(out, imap.FlagDraft)
	}
	if recent {
		out = append(out, `\Recent`)
	}
	for _, k := range f.Keywords {
		out = append(out, imap.Flag(k))
	}
	return out
}
