package imapd

import (
	"errors"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"tidings/storage"
)

// errTooDeep: RFC 9051 gives no code for it; a criteria tree deeper than
// storage.MaxSearchDepth is a client error.
var errTooDeep = &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: "Search criteria nested too deeply"}

// Search implements SEARCH (RFC 9051 §6.4.4) with ESEARCH (RFC 4731) and
// SEARCHRES (RFC 5182) through the store's Search.
func (s *session) Search(kind imapserver.NumKind, c *imap.SearchCriteria, opt *imap.SearchOptions) (*imap.SearchData, error) {
	key, err := s.searchKey(c, 0)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	uids, err := s.srv.store.Search(ctx, s.me(), s.me(), s.sel.mb.ID, key)
	if errors.Is(err, storage.ErrLimit) {
		return nil, errTooDeep
	}
	if err != nil {
		return nil, s.storeErr("search", err)
	}
	// Keep only messages of the client's view, with their numbers.
	sel := s.sel
	o := sel.owner
	var refs []msgRef
	o.mu.Lock()
	for _, u := range uids {
		i, ok := slices.BinarySearch(o.uids, u)
		if !ok {
			continue
		}
		if c := sel.st.EncodeSeqNum(uint32(i + 1)); c != 0 {
			refs = append(refs, msgRef{c, u})
		}
	}
	o.mu.Unlock()

	data := &imap.SearchData{}
	var seqSet imap.SeqSet
	var uidSet imap.UIDSet
	for _, r := range refs {
		uidSet.AddNum(imap.UID(r.uid))
		num := r.seq
		if kind == imapserver.NumKindUID {
			num = uint32(r.uid)
		} else {
			seqSet.AddNum(r.seq)
		}
		if data.Min == 0 || num < data.Min {
			data.Min = num
		}
		data.Max = max(data.Max, num)
		data.Count++
	}
	if kind == imapserver.NumKindUID {
		data.All = uidSet
	} else {
		data.All = seqSet
	}
	if opt != nil && opt.ReturnSave {
		sel.searchRes = uidSet
	}
	return data, nil
}

// searchKey translates go-imap criteria (an implicit AND of everything set)
// into a storage.SearchKey tree.
func (s *session) searchKey(c *imap.SearchCriteria, depth int) (storage.SearchKey, error) {
	if depth > storage.MaxSearchDepth {
		return storage.SearchKey{}, errTooDeep
	}
	var and []storage.SearchKey
	add := func(k storage.SearchKey) { and = append(and, k) }
	for _, set := range c.SeqNum {
		refs := s.resolve(set)
		if len(refs) == 0 {
			add(storage.SearchKey{Op: storage.SearchNot, Children: []storage.SearchKey{{Op: storage.SearchAll}}})
			continue
		}
		add(storage.SearchKey{Op: storage.SearchUID, UIDs: uidSet(refs)})
	}
	for _, set := range c.UID {
		refs := s.resolve(set)
		if len(refs) == 0 {
			add(storage.SearchKey{Op: storage.SearchNot, Children: []storage.SearchKey{{Op: storage.SearchAll}}})
			continue
		}
		add(storage.SearchKey{Op: storage.SearchUID, UIDs: uidSet(refs)})
	}
	if !c.Since.IsZero() {
		add(storage.SearchKey{Op: storage.SearchSince, Time: c.Since})
	}
	if !c.Before.IsZero() {
		add(storage.SearchKey{Op: storage.SearchBefore, Time: c.Before})
	}
	if !c.SentSince.IsZero() {
		add(storage.SearchKey{Op: storage.SearchSentSince, Time: c.SentSince})
	}
	if !c.SentBefore.IsZero() {
		add(storage.SearchKey{Op: storage.SearchSentBefore, Time: c.SentBefore})
	}
	for _, h := range c.Header {
		add(storage.SearchKey{Op: storage.SearchHeader, Name: h.Key, Value: h.Value})
	}
	for _, v := range c.Body {
		add(storage.SearchKey{Op: storage.SearchBody, Value: v})
	}
	for _, v := range c.Text {
		add(storage.SearchKey{Op: storage.SearchText, Value: v})
	}
	for _, f := range c.Flag {
		add(s.flagKey(f))
	}
	for _, f := range c.NotFlag {
		add(storage.SearchKey{Op: storage.SearchNot, Children: []storage.SearchKey{s.flagKey(f)}})
	}
	if c.Larger > 0 {
		add(storage.SearchKey{Op: storage.SearchLarger, Size: c.Larger})
	}
	if c.Smaller > 0 {
		add(storage.SearchKey{Op: storage.SearchSmaller, Size: c.Smaller})
	}
	if c.ModSeq != nil {
		add(storage.SearchKey{Op: storage.SearchModSeq, ModSeq: storage.ModSeq(c.ModSeq.ModSeq)})
	}
	for i := range c.Not {
		k, err := s.searchKey(&c.Not[i], depth+1)
		if err != nil {
			return k, err
		}
		add(storage.SearchKey{Op: storage.SearchNot, Children: []storage.SearchKey{k}})
	}
	for i := range c.Or {
		a, err := s.searchKey(&c.Or[i][0], depth+1)
		if err != nil {
			return a, err
		}
		b, err := s.searchKey(&c.Or[i][1], depth+1)
		if err != nil {
			return b, err
		}
		add(storage.SearchKey{Op: storage.SearchOr, Children: []storage.SearchKey{a, b}})
	}
	switch len(and) {
	case 0:
		return storage.SearchKey{Op: storage.SearchAll}, nil
	case 1:
		return and[0], nil
	}
	return storage.SearchKey{Op: storage.SearchAnd, Children: and}, nil
}

// flagKey matches one flag; \Recent is this session's claimed set.
func (s *session) flagKey(f imap.Flag) storage.SearchKey {
	switch strings.ToLower(string(f)) {
	case `\seen`, `\answered`, `\flagged`, `\deleted`, `\draft`:
		return storage.SearchKey{Op: storage.SearchFlag, Name: canonicalSystemFlag(string(f))}
	case `\recent`:
		set := storage.UIDSet{}
		for u := range s.sel.recent {
			set = append(set, storage.UIDRange{Start: u, Stop: u})
		}
		if len(set) == 0 {
			return storage.SearchKey{Op: storage.SearchNot, Children: []storage.SearchKey{{Op: storage.SearchAll}}}
		}
		return storage.SearchKey{Op: storage.SearchUID, UIDs: set}
	}
	return storage.SearchKey{Op: storage.SearchKeyword, Name: string(f)}
}

func canonicalSystemFlag(f string) string {
	switch strings.ToLower(f) {
	case `\seen`:
		return `\Seen`
	case `\answered`:
		return `\Answered`
	case `\flagged`:
		return `\Flagged`
	case `\deleted`:
		return `\Deleted`
	case `\draft`:
		return `\Draft`
	}
	return f
}
