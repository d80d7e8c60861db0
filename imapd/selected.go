package imapd

import (
	"errors"
	"slices"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"tidings/storage"
)

// Select implements SELECT and EXAMINE (RFC 9051 §6.3.2, §6.3.3). The
// counts come from the owner's view, which was brought up to date from
// one consistent store read; the session's tracker is registered under
// the same lock, so the client's view and the tracker agree.
func (s *session) Select(name string, opt *imap.SelectOptions) (*imap.SelectData, error) {
	s.unselect()
	ctx, cancel := s.opCtx()
	defer cancel()
	mb, err := s.mailbox(ctx, name)
	if err != nil {
		return nil, s.storeErr("select", err)
	}
	var o *owner
	for attempt := 0; ; attempt++ {
		o = s.srv.acquireOwner(s, s.me(), mb.ID)
		err = o.sync(ctx)
		if errors.Is(err, errBroken) && attempt == 0 {
			s.srv.releaseOwner(s, o)
			continue
		}
		break
	}
	if err != nil {
		s.srv.releaseOwner(s, o)
		return nil, s.storeErr("select", err)
	}
	readOnly := opt != nil && opt.ReadOnly
	o.mu.Lock()
	st := o.tracker.NewSession()
	uids := slices.Clone(o.uids)
	uidNext := o.uidNext
	flags := o.flagList()
	o.mu.Unlock()
	sel := &selected{owner: o, st: st, mb: mb, readOnly: readOnly, recent: map[storage.UID]bool{}}
	s.sel = sel

	data := &imap.SelectData{
		Flags:       flags,
		NumMessages: uint32(len(uids)),
		UIDValidity: mb.UIDValidity,
	}
	if n := len(uids); n > 0 && uidNext <= uids[n-1] {
		uidNext = uids[n-1] + 1
	}
	data.UIDNext = imap.UID(uidNext)
	if readOnly {
		data.PermanentFlags = []imap.Flag{}
	} else {
		data.PermanentFlags = append(slices.Clone(flags), imap.FlagWildcard)
		// RFC 3501 §2.3.2: \Recent goes to the first session that SELECTs.
		rec, err := s.srv.store.ClaimRecent(ctx, s.me(), s.me(), mb.ID)
		if err != nil {
			s.log.Warn("claim recent", "err", err)
		}
		for _, u := range rec {
			sel.recent[u] = true
			if _, ok := slices.BinarySearch(uids, u); ok {
				data.NumRecent++
			}
		}
	}
	if len(uids) > 0 {
		unseen, err := s.srv.store.Search(ctx, s.me(), s.me(), mb.ID, storage.SearchKey{Op: storage.SearchNot,
			Children: []storage.SearchKey{{Op: storage.SearchFlag, Name: `\Seen`}}})
		if err == nil {
			for _, u := range unseen {
				if i, ok := slices.BinarySearch(uids, u); ok {
					data.FirstUnseenSeqNum = uint32(i + 1)
					break
				}
			}
		}
	}
	if s.conn.EnabledCaps().Has(imap.CapIMAP4rev2) {
		// RFC 9051 §6.3.2: the LIST response for the selected mailbox.
		d := &imap.ListData{Delim: '/', Mailbox: mb.Name}
		if mb.SpecialUse != "" {
			d.Attrs = append(d.Attrs, imap.MailboxAttr(mb.SpecialUse))
		}
		data.List = d
	}
	return data, nil
}

// Unselect implements UNSELECT and the end of CLOSE.
func (s *session) Unselect() error {
	s.unselect()
	return nil
}

func (s *session) unselect() {
	if s.sel == nil {
		return
	}
	sel := s.sel
	s.sel = nil
	sel.owner.mu.Lock()
	sel.st.Close()
	sel.owner.mu.Unlock()
	s.srv.releaseOwner(s, sel.owner)
}

// Poll implements imapserver.Session. It never touches the store: it only
// writes what the owner queued (DESIGN.md §Storage).
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.sel == nil {
		return nil
	}
	return s.sel.st.Poll(w, allowExpunge)
}

// Idle implements IDLE (RFC 2177 / RFC 9051 §6.3.13) the same way.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if s.sel == nil {
		<-stop
		return nil
	}
	return s.sel.st.Idle(w, stop)
}

// msgRef is one message of a command's set: its number in the client's
// view and its UID.
type msgRef struct {
	seq uint32
	uid storage.UID
}

// resolve turns a client number set into messages of the client's view,
// ascending. Messages the client has not been told about (EXISTS still
// queued) and messages already expunged are left out.
//
// Deviation: "*" in a sequence set is the highest sequence number of a
// message still present; when the client's last message was expunged by
// another session and the EXPUNGE is still queued, "*" names the one
// before it (the tracker does not expose the client's count).
func (s *session) resolve(set imap.NumSet) []msgRef {
	sel := s.sel
	if imap.IsSearchRes(set) {
		set = sel.searchRes
	}
	o := sel.owner
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(o.uids)
	seqs := make([]uint32, n)
	var maxSeq uint32
	var maxUID storage.UID
	for i := range n {
		c := sel.st.EncodeSeqNum(uint32(i + 1))
		seqs[i] = c
		if c != 0 {
			maxSeq = max(maxSeq, c)
			maxUID = o.uids[i]
		}
	}
	var out []msgRef
	switch set := set.(type) {
	case imap.SeqSet:
		set = staticSeq(set, maxSeq)
		for i, c := range seqs {
			if c != 0 && set.Contains(c) {
				out = append(out, msgRef{c, o.uids[i]})
			}
		}
	case imap.UIDSet:
		set = staticUID(set, imap.UID(maxUID))
		for i, c := range seqs {
			if c != 0 && set.Contains(imap.UID(o.uids[i])) {
				out = append(out, msgRef{c, o.uids[i]})
			}
		}
	}
	return out
}

func staticSeq(set imap.SeqSet, maxv uint32) imap.SeqSet {
	out := make(imap.SeqSet, len(set))
	for i, r := range set {
		out[i] = r
		staticRange(&out[i].Start, &out[i].Stop, maxv)
	}
	return out
}

func staticUID(set imap.UIDSet, maxv imap.UID) imap.UIDSet {
	out := make(imap.UIDSet, len(set))
	for i, r := range set {
		a, b := uint32(r.Start), uint32(r.Stop)
		staticRange(&a, &b, uint32(maxv))
		out[i] = imap.UIDRange{Start: imap.UID(a), Stop: imap.UID(b)}
	}
	return out
}

// staticRange replaces "*" (0) by maxv and orders the ends (RFC 9051 §9
// seq-range: "*:4" is "4:*").
func staticRange(start, stop *uint32, maxv uint32) {
	if *start == 0 {
		*start = maxv
	}
	if *stop == 0 {
		*stop = maxv
	}
	if *start > *stop {
		*start, *stop = *stop, *start
	}
}

// uidSet is the store form of the messages' UIDs.
func uidSet(refs []msgRef) storage.UIDSet {
	set := storage.UIDSet{}
	for _, r := range refs {
		if n := len(set); n > 0 && set[n-1].Stop+1 == r.uid {
			set[n-1].Stop = r.uid
			continue
		}
		set = append(set, storage.UIDRange{Start: r.uid, Stop: r.uid})
	}
	return set
}

func readOnlyErr() error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Mailbox is read-only"}
}

// Store implements STORE (RFC 9051 §6.4.6).
func (s *session) Store(w *imapserver.FetchWriter, set imap.NumSet, flags *imap.StoreFlags, _ *imap.StoreOptions) error {
	if s.sel.readOnly {
		return readOnlyErr()
	}
	refs := s.resolve(set)
	if len(refs) == 0 {
		return nil
	}
	var op storage.FlagOp
	switch flags.Op {
	case imap.StoreFlagsAdd:
		op = storage.FlagsAdd
	case imap.StoreFlagsDel:
		op = storage.FlagsRemove
	default:
		op = storage.FlagsReplace
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	updated, _, err := s.srv.store.StoreFlags(ctx, s.me(), s.me(), s.sel.mb.ID, uidSet(refs), op, storeFlags(flags.Flags), 0)
	if err != nil {
		return s.storeErr("store", err)
	}
	s.sel.owner.noteOwn(s.sel.st, updated)
	if flags.Silent {
		return nil
	}
	return s.fetch(w, refs, &imap.FetchOptions{Flags: true}, false)
}

// Copy implements COPY (RFC 9051 §6.4.7) with COPYUID (RFC 4315).
func (s *session) Copy(set imap.NumSet, dest string) (*imap.CopyData, error) {
	refs := s.resolve(set)
	ctx, cancel := s.opCtx()
	defer cancel()
	dst, err := s.mailbox(ctx, dest)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
	}
	if err != nil {
		return nil, s.storeErr("copy", err)
	}
	if len(refs) == 0 {
		return nil, nil
	}
	res, err := s.srv.store.Copy(ctx, s.me(), s.me(), s.sel.mb.ID, uidSet(refs), s.me(), dst.ID)
	if err != nil {
		return nil, s.storeErr("copy", err)
	}
	if dst.ID == s.sel.mb.ID {
		if err := s.sel.owner.sync(ctx); err != nil {
			s.log.Warn("sync after copy", "err", err)
		}
	}
	return copyData(res), nil
}

func copyData(res storage.CopyResult) *imap.CopyData {
	if len(res.Pairs) == 0 {
		return nil
	}
	d := &imap.CopyData{UIDValidity: res.UIDValidity}
	for _, p := range res.Pairs {
		d.SourceUIDs.AddNum(imap.UID(p.Src))
		d.DestUIDs.AddNum(imap.UID(p.Dst))
	}
	return d
}

// Move implements MOVE (RFC 6851). The EXPUNGEs are not written here: the
// owner queues them once for every session of the mailbox, this one
// included, and Poll writes them before the tagged OK (the library's
// example backend writes them twice to the moving session).
func (s *session) Move(w *imapserver.MoveWriter, set imap.NumSet, dest string) error {
	if s.sel.readOnly {
		return readOnlyErr()
	}
	refs := s.resolve(set)
	ctx, cancel := s.opCtx()
	defer cancel()
	dst, err := s.mailbox(ctx, dest)
	if errors.Is(err, storage.ErrNotFound) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
	}
	if err != nil {
		return s.storeErr("move", err)
	}
	if len(refs) == 0 {
		return nil
	}
	res, err := s.srv.store.Move(ctx, s.me(), s.me(), s.sel.mb.ID, uidSet(refs), s.me(), dst.ID)
	if err != nil {
		return s.storeErr("move", err)
	}
	if d := copyData(res); d != nil {
		if err := w.WriteCopyData(d); err != nil {
			return err
		}
	}
	if err := s.sel.owner.sync(ctx); err != nil {
		s.log.Warn("sync after move", "err", err)
	}
	return nil
}

// Expunge implements EXPUNGE, UID EXPUNGE (RFC 4315) and the expunge of
// CLOSE. With the account's trashcan policy the \Deleted messages go to
// Trash (storage.Discard). The EXPUNGE responses come from the owner, once
// (see Move). On a read-only (EXAMINE) mailbox it does nothing, so CLOSE
// still closes (RFC 9051 §6.4.1).
func (s *session) Expunge(_ *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	if s.sel.readOnly {
		return nil
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	var set storage.UIDSet
	if uids != nil {
		s.sel.owner.mu.Lock()
		var maxUID storage.UID
		if n := len(s.sel.owner.uids); n > 0 {
			maxUID = s.sel.owner.uids[n-1]
		}
		s.sel.owner.mu.Unlock()
		set = storage.UIDSet{}
		for _, r := range staticUID(*uids, imap.UID(maxUID)) {
			if r.Stop == 0 {
				continue // "*" of an empty view: nothing, not "all"
			}
			set = append(set, storage.UIDRange{Start: storage.UID(r.Start), Stop: storage.UID(r.Stop)})
		}
	}
	mbID := s.sel.mb.ID
	var err error
	if s.acct.Policy.Trashcan {
		key := storage.SearchKey{Op: storage.SearchFlag, Name: `\Deleted`}
		if set != nil {
			key = storage.SearchKey{Op: storage.SearchAnd, Children: []storage.SearchKey{key, {Op: storage.SearchUID, UIDs: set}}}
		}
		var del []storage.UID
		del, err = s.srv.store.Search(ctx, s.me(), s.me(), mbID, key)
		if err == nil && len(del) > 0 {
			ds := storage.UIDSet{}
			for _, u := range del {
				ds = append(ds, storage.UIDRange{Start: u, Stop: u})
			}
			_, err = storage.Discard(ctx, s.srv.store, s.me(), s.me(), mbID, ds, true)
		}
	} else {
		_, err = s.srv.store.Expunge(ctx, s.me(), s.me(), mbID, set)
	}
	if err != nil {
		return s.storeErr("expunge", err)
	}
	if err := s.sel.owner.sync(ctx); err != nil {
		s.log.Warn("sync after expunge", "err", err)
	}
	return nil
}
