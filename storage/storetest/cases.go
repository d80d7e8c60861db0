package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tidings/storage"
)

// Non-ASCII domains, addresses, search text and mailbox names are found in
// any case and form (DESIGN.md §Text, case and time).
func testNonASCII(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	d, err := e.s.CreateDomain(e.ctx, storage.Domain{Name: "bücher.example", Kind: storage.DomainLocal})
	if err != nil {
		t.Fatalf("CreateDomain(%q) = %v; want nil", "bücher.example", err)
	}
	if d.Name != "xn--bcher-kva.example" {
		t.Errorf("CreateDomain(%q).Name = %q; want %q", "bücher.example", d.Name, "xn--bcher-kva.example")
	}
	for _, name := range []string{"bücher.example", "BÜCHER.EXAMPLE", "xn--bcher-kva.example", "XN--BCHER-KVA.example."} {
		got, err := e.s.Domain(e.ctx, name)
		if err != nil || got.ID != d.ID {
			t.Errorf("Domain(%q) = %+v, %v; want domain %d", name, got, err, d.ID)
		}
	}
	if _, err := e.s.CreateDomain(e.ctx, storage.Domain{Name: "XN--BCHER-KVA.EXAMPLE", Kind: storage.DomainLocal}); !errors.Is(err, storage.ErrExists) {
		t.Errorf("CreateDomain(same domain as A-label) = %v; want %v", err, storage.ErrExists)
	}
	a, err := e.s.CreateAccount(e.ctx, storage.NewAccount{Address: "JÖRG@bücher.example"})
	if err != nil {
		t.Fatalf("CreateAccount(%q) = %v; want nil", "JÖRG@bücher.example", err)
	}
	if a.Key != "jörg@xn--bcher-kva.example" {
		t.Errorf("CreateAccount(%q).Key = %q; want %q", "JÖRG@bücher.example", a.Key, "jörg@xn--bcher-kva.example")
	}
	for _, addr := range []string{"jörg@xn--bcher-kva.example", "JÖRG@BÜCHER.EXAMPLE", "Jo\u0308rg@bücher.example", "jÖrg@Xn--Bcher-Kva.Example"} {
		got, err := e.s.AccountByAddress(e.ctx, addr)
		if err != nil || got.ID != a.ID {
			t.Errorf("AccountByAddress(%q) = %d, %v; want %d", addr, got.ID, err, a.ID)
		}
		r, err := e.s.Lookup(e.ctx, addr)
		if err != nil || r.Kind != storage.RecipientAccount || r.Account == nil || r.Account.ID != a.ID {
			t.Errorf("Lookup(%q) = %+v, %v; want account %d", addr, r, err, a.ID)
		}
	}
	if _, err := e.s.CreateAccount(e.ctx, storage.NewAccount{Address: "jörg@XN--BCHER-KVA.EXAMPLE"}); !errors.Is(err, storage.ErrExists) {
		t.Errorf("CreateAccount(same address, other form) = %v; want %v", err, storage.ErrExists)
	}

	// Search text: stored folded, the query is folded by the store.
	inbox := e.mailbox(e.acct.ID, "INBOX")
	src, m := newMessage("Grüße", uniqueBody("Ein Buch über Straßen."))
	hit, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, inbox.ID, src, m)
	if err != nil {
		t.Fatalf("Append = %v", err)
	}
	e.append(e.s, e.acct.ID, inbox.ID, storage.Flags{}) // a non-matching neighbour
	if err := e.s.WaitIndexed(e.ctx); err != nil {
		t.Fatalf("WaitIndexed = %v; want nil", err)
	}
	for _, q := range []string{"ÜBER", "über", "U\u0308BER", "BUCH ÜBER", "grüsse", "GRÜSSE", "Üb"} {
		key := storage.SearchKey{Op: storage.SearchText, Value: q}
		want := []storage.UID{hit.UID}
		if q == "grüsse" || q == "GRÜSSE" {
			want = nil // simple case folding keeps ß and ss apart
		}
		got, err := e.s.Search(e.ctx, e.acct.ID, e.acct.ID, inbox.ID, key)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Search(TEXT %q) = %v, %v; want %v", q, got, err, want)
		}
	}

	// Mailbox names.
	parent := e.create(e.acct.ID, "Ärger")
	child := e.create(e.acct.ID, "Ärger/Öl")
	for name, want := range map[string]storage.MailboxID{"ärger": parent.ID, "ÄRGER": parent.ID, "A\u0308rger/öL": child.ID, "ärger/ÖL": child.ID} {
		got, err := e.s.Mailbox(e.ctx, e.acct.ID, e.acct.ID, name)
		if err != nil || got.ID != want {
			t.Errorf("Mailbox(%q) = %d, %v; want %d", name, got.ID, err, want)
		}
	}
	if _, err := e.s.CreateMailbox(e.ctx, e.acct.ID, e.acct.ID, storage.NewMailbox{Name: "ärger"}); !errors.Is(err, storage.ErrExists) {
		t.Errorf("CreateMailbox(%q) beside %q = %v; want %v", "ärger", "Ärger", err, storage.ErrExists)
	}
	if got := e.mailbox(e.acct.ID, "ärger"); got.Name != "Ärger" {
		t.Errorf("Mailbox(%q).Name = %q; want the display form %q", "ärger", got.Name, "Ärger")
	}
	for _, name := range []string{"inbox", "InBoX"} {
		if got := e.mailbox(e.acct.ID, name); got.ID != inbox.ID {
			t.Errorf("Mailbox(%q) = %d; want INBOX %d", name, got.ID, inbox.ID)
		}
	}
}

// ChangesSince below the tombstone floor asks for a full resync.
func testTombstoneFloor(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	for range 3 {
		e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	}
	before := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID).HighestModSeq
	if u, err := e.s.ExpungeUIDs(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(2)); err != nil || !slices.Equal(u, []storage.UID{2}) {
		t.Fatalf("ExpungeUIDs(2) = %v, %v; want [2]", u, err)
	}
	if c := e.changes(e.s, e.acct.ID, e.inbox.ID, before); !slices.Equal(c.Expunged, []storage.UID{2}) {
		t.Errorf("ChangesSince(%d).Expunged = %v; want [2]", before, c.Expunged)
	}
	after := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID).HighestModSeq
	time.Sleep(5 * time.Millisecond) // let the tombstone be older than age 0
	n, err := e.s.PurgeTombstones(e.ctx, 0)
	if err != nil || n != 1 {
		t.Errorf("PurgeTombstones(0) = %d, %v; want 1, nil", n, err)
	}
	if _, err := e.s.ChangesSince(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, before); !errors.Is(err, storage.ErrResyncRequired) {
		t.Errorf("ChangesSince(%d) below the floor = %v; want %v", before, err, storage.ErrResyncRequired)
	}
	if _, err := e.s.ChangesSince(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, after); err != nil {
		t.Errorf("ChangesSince(%d) at the floor = %v; want nil", after, err)
	}
	if c := e.changes(e.s, e.acct.ID, e.inbox.ID, 0); !slices.Equal(uidsOf(c.Changed), []storage.UID{1, 3}) {
		t.Errorf("ChangesSince(0) after purge = %v; want [1 3]", uidsOf(c.Changed))
	}
}

// StoreFlags reports only real changes, honours UNCHANGEDSINCE, and a new
// keyword bumps the MODSEQ.
func testFlags(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	r1 := e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	r2 := e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	store := func(uids storage.UIDSet, op storage.FlagOp, f storage.Flags, unchanged storage.ModSeq) ([]storage.MessageFlags, []storage.UID) {
		t.Helper()
		upd, failed, err := e.s.StoreFlags(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, uids, op, f, unchanged)
		if err != nil {
			t.Fatalf("StoreFlags(%v, %+v) = %v; want nil", uids, f, err)
		}
		return upd, failed
	}
	upd, _ := store(set(r1.UID), storage.FlagsAdd, storage.Flags{Seen: true}, 0)
	if len(upd) != 1 || upd[0].UID != r1.UID || !upd[0].Flags.Seen || upd[0].ModSeq <= r2.ModSeq {
		t.Fatalf("StoreFlags(+\\Seen) = %+v; want UID %d seen with MODSEQ > %d", upd, r1.UID, r2.ModSeq)
	}
	seenMod := upd[0].ModSeq
	if mb := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID); mb.HighestModSeq != seenMod || mb.Unseen != 1 {
		t.Errorf("mailbox HIGHESTMODSEQ, Unseen = %d, %d; want %d, 1", mb.HighestModSeq, mb.Unseen, seenMod)
	}
	if upd, _ := store(set(r1.UID), storage.FlagsAdd, storage.Flags{Seen: true}, 0); len(upd) != 0 {
		t.Errorf("StoreFlags(+\\Seen again) = %+v; want no update", upd)
	}
	if mb := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID); mb.HighestModSeq != seenMod {
		t.Errorf("HIGHESTMODSEQ after a no-op store = %d; want %d", mb.HighestModSeq, seenMod)
	}
	// RFC 7162 §3.1.3: UNCHANGEDSINCE below a message's MODSEQ fails it.
	upd, failed := store(set(r1.UID, r2.UID), storage.FlagsAdd, storage.Flags{Flagged: true}, r2.ModSeq)
	if !slices.Equal(failed, []storage.UID{r1.UID}) || !slices.Equal(uidsOf(upd), []storage.UID{r2.UID}) {
		t.Errorf("StoreFlags(UNCHANGEDSINCE %d) = updated %v, failed %v; want [%d], [%d]", r2.ModSeq, uidsOf(upd), failed, r2.UID, r1.UID)
	}
	ms := e.messages(e.s, e.acct.ID, e.inbox.ID)
	if ms[0].Flags.Flagged || !ms[1].Flags.Flagged {
		t.Errorf("Flagged after UNCHANGEDSINCE = %v, %v; want false, true", ms[0].Flags.Flagged, ms[1].Flags.Flagged)
	}

	before := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID).HighestModSeq
	upd, _ = store(set(r2.UID), storage.FlagsAdd, storage.Flags{Keywords: []string{"$Work"}}, 0)
	if len(upd) != 1 || upd[0].ModSeq <= before || !slices.Equal(upd[0].Flags.Keywords, []string{"$Work"}) {
		t.Errorf("StoreFlags(+$Work) = %+v; want keyword $Work with MODSEQ > %d", upd, before)
	}
	if upd, _ := store(set(r2.UID), storage.FlagsAdd, storage.Flags{Keywords: []string{"$WORK"}}, 0); len(upd) != 0 {
		t.Errorf("StoreFlags(+$WORK, same keyword folded) = %+v; want no update", upd)
	}
	upd, _ = store(set(r1.UID), storage.FlagsReplace, storage.Flags{Answered: true, Keywords: []string{"$work"}}, 0)
	if len(upd) != 1 || upd[0].Flags.Seen || !upd[0].Flags.Answered || len(upd[0].Flags.Keywords) != 1 {
		t.Errorf("StoreFlags(replace \\Answered $work) = %+v; want only \\Answered and one keyword", upd)
	}
	upd, _ = store(nil, storage.FlagsRemove, storage.Flags{Keywords: []string{"$work"}}, 0)
	if !slices.Equal(uidsOf(upd), []storage.UID{r1.UID, r2.UID}) {
		t.Errorf("StoreFlags(-$work on all) updated %v; want [%d %d]", uidsOf(upd), r1.UID, r2.UID)
	}
	for _, m := range e.messages(e.s, e.acct.ID, e.inbox.ID) {
		if len(m.Flags.Keywords) != 0 {
			t.Errorf("UID %d keywords = %v; want none", m.UID, m.Flags.Keywords)
		}
	}
	c := e.changes(e.s, e.acct.ID, e.inbox.ID, before)
	if !slices.Equal(uidsOf(c.Changed), []storage.UID{r1.UID, r2.UID}) || len(c.Expunged) != 0 {
		t.Errorf("ChangesSince(%d) = %+v; want both UIDs changed", before, c)
	}
}

// At most 250 keywords per mailbox and 100 bytes per keyword.
func testKeywordLimits(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	r := e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	var kws []string
	for i := range 250 {
		kws = append(kws, fmt.Sprintf("kw%03d", i))
	}
	if _, _, err := e.s.StoreFlags(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(r.UID), storage.FlagsAdd, storage.Flags{Keywords: kws}, 0); err != nil {
		t.Fatalf("StoreFlags(250 keywords) = %v; want nil", err)
	}
	if _, _, err := e.s.StoreFlags(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(r.UID), storage.FlagsAdd, storage.Flags{Keywords: []string{"KW000"}}, 0); err != nil {
		t.Errorf("StoreFlags(an existing keyword, other case) = %v; want nil", err)
	}
	if _, _, err := e.s.StoreFlags(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(r.UID), storage.FlagsAdd, storage.Flags{Keywords: []string{"kw250"}}, 0); !errors.Is(err, storage.ErrLimit) {
		t.Errorf("StoreFlags(251st keyword) = %v; want %v", err, storage.ErrLimit)
	}
	src, m := newMessage("kw", uniqueBody(""))
	m.Flags.Keywords = []string{"another"}
	if _, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, m); !errors.Is(err, storage.ErrLimit) {
		t.Errorf("Append(251st keyword) = %v; want %v", err, storage.ErrLimit)
	}
	if ms := e.messages(e.s, e.acct.ID, e.inbox.ID); len(ms) != 1 || len(ms[0].Flags.Keywords) != 250 {
		t.Errorf("after refusals: %d messages; want 1 with 250 keywords", len(ms))
	}

	other := e.create(e.acct.ID, "Other")
	r2 := e.append(e.s, e.acct.ID, other.ID, storage.Flags{})
	for _, tt := range []struct {
		kw   string
		want error
	}{
		{strings.Repeat("k", 100), nil},
		{strings.Repeat("k", 101), storage.ErrLimit},
	} {
		_, _, err := e.s.StoreFlags(e.ctx, e.acct.ID, e.acct.ID, other.ID, set(r2.UID), storage.FlagsAdd, storage.Flags{Keywords: []string{tt.kw}}, 0)
		if !errors.Is(err, tt.want) {
			t.Errorf("StoreFlags(%d-byte keyword) = %v; want %v", len(tt.kw), err, tt.want)
		}
	}
}

// \Recent is claimed once (RFC 3501 §2.3.2), also by racing instances.
func testClaimRecent(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	s2 := openStore(t, e.open)
	for range 3 {
		e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	}
	claim := func(s storage.Store) []storage.UID {
		t.Helper()
		u, err := s.ClaimRecent(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID)
		if err != nil {
			t.Fatalf("ClaimRecent = %v; want nil", err)
		}
		return u
	}
	if got := claim(e.s); !slices.Equal(got, []storage.UID{1, 2, 3}) {
		t.Errorf("first ClaimRecent = %v; want [1 2 3]", got)
	}
	if got := claim(e.s); len(got) != 0 {
		t.Errorf("second ClaimRecent = %v; want none", got)
	}
	for range 6 {
		e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	}
	var (
		wg  sync.WaitGroup
		res [2][]storage.UID
	)
	for i, s := range []storage.Store{e.s, s2} {
		wg.Go(func() {
			u, err := s.ClaimRecent(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID)
			if err != nil {
				t.Errorf("racing ClaimRecent = %v", err)
			}
			res[i] = u
		})
	}
	wg.Wait()
	all := sorted(append(slices.Clone(res[0]), res[1]...))
	if !slices.Equal(all, []storage.UID{4, 5, 6, 7, 8, 9}) {
		t.Errorf("racing ClaimRecent = %v and %v; want [4..9] claimed exactly once between them", res[0], res[1])
	}
}

// COPY and MOVE report COPYUID pairs (RFC 4315 §3) in source order, with
// the destination's UIDVALIDITY.
func testCopyMove(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	dst := e.create(e.acct.ID, "Dest")
	e.append(e.s, e.acct.ID, dst.ID, storage.Flags{}) // dst UID 1 taken
	for i := range 4 {
		e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{Seen: i%2 == 0, Keywords: []string{"$Keep"}})
	}
	cr, err := e.s.Copy(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(1, 3), e.acct.ID, dst.ID)
	if err != nil {
		t.Fatalf("Copy(1,3) = %v; want nil", err)
	}
	if want := pairs(1, 2, 3, 3); !slices.Equal(cr.Pairs, want) || cr.UIDValidity != dst.UIDValidity {
		t.Errorf("Copy(1,3) = %+v; want pairs %v, UIDVALIDITY %d", cr, want, dst.UIDValidity)
	}
	before := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID).HighestModSeq
	mr, err := e.s.Move(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, storage.UIDSet{{Start: 2, Stop: 0}}, e.acct.ID, dst.ID)
	if err != nil {
		t.Fatalf("Move(2:*) = %v; want nil", err)
	}
	if want := pairs(2, 4, 3, 5, 4, 6); !slices.Equal(mr.Pairs, want) {
		t.Errorf("Move(2:*) pairs = %v; want %v", mr.Pairs, want)
	}
	if got := e.uids(e.s, e.acct.ID, e.inbox.ID); !slices.Equal(got, []storage.UID{1}) {
		t.Errorf("INBOX after Move = %v; want [1]", got)
	}
	if c := e.changes(e.s, e.acct.ID, e.inbox.ID, before); !slices.Equal(c.Expunged, []storage.UID{2, 3, 4}) {
		t.Errorf("ChangesSince(%d).Expunged after Move = %v; want [2 3 4]", before, c.Expunged)
	}
	got, err := e.s.Messages(e.ctx, e.acct.ID, e.acct.ID, dst.ID, nil, storage.MessageOptions{})
	if err != nil || len(got) != 6 {
		t.Fatalf("Messages(Dest) = %d, %v; want 6", len(got), err)
	}
	for _, m := range got[1:] {
		if len(m.Flags.Keywords) != 1 {
			t.Errorf("Dest UID %d keywords = %v; want [$Keep] (flags travel with COPY/MOVE)", m.UID, m.Flags.Keywords)
		}
	}
	if mb := e.mailboxByID(e.s, e.acct.ID, dst.ID); mb.UIDNext != 7 || mb.Messages != 6 {
		t.Errorf("Dest UIDNext, Messages = %d, %d; want 7, 6", mb.UIDNext, mb.Messages)
	}
	if _, err := e.s.Copy(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(1), e.acct.ID, storage.MailboxID(1<<40)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Copy(to a missing mailbox) = %v; want %v", err, storage.ErrNotFound)
	}
	if cr, err := e.s.Copy(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(99), e.acct.ID, dst.ID); err != nil || len(cr.Pairs) != 0 {
		t.Errorf("Copy(no such UID) = %+v, %v; want no pairs, nil", cr, err)
	}
	e.checkClean(e.s)
}

// Mailbox names are validated; INBOX cannot be deleted.
func testMailboxNames(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	for _, name := range []string{"", "a//b", "/a", "a/", "/"} {
		if _, err := e.s.CreateMailbox(e.ctx, e.acct.ID, e.acct.ID, storage.NewMailbox{Name: name}); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("CreateMailbox(%q) = %v; want %v", name, err, storage.ErrInvalid)
		}
	}
	if _, err := e.s.CreateMailbox(e.ctx, e.acct.ID, e.acct.ID, storage.NewMailbox{Name: "Inbox"}); !errors.Is(err, storage.ErrExists) {
		t.Errorf("CreateMailbox(%q) = %v; want %v", "Inbox", err, storage.ErrExists)
	}
	for _, name := range []string{"INBOX", "inbox"} {
		if err := e.s.DeleteMailbox(e.ctx, e.acct.ID, e.acct.ID, name); err == nil {
			t.Errorf("DeleteMailbox(%q) = nil; want an error", name)
		}
	}
	if got := e.mailbox(e.acct.ID, "INBOX"); got.ID != e.inbox.ID {
		t.Errorf("INBOX after refused delete = %d; want %d", got.ID, e.inbox.ID)
	}
	m := e.create(e.acct.ID, "Gone")
	e.append(e.s, e.acct.ID, m.ID, storage.Flags{})
	if err := e.s.DeleteMailbox(e.ctx, e.acct.ID, e.acct.ID, "gone"); err != nil {
		t.Fatalf("DeleteMailbox(%q) = %v; want nil", "gone", err)
	}
	if _, err := e.s.MailboxByID(e.ctx, e.acct.ID, e.acct.ID, m.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("MailboxByID(deleted) = %v; want %v", err, storage.ErrNotFound)
	}
	if err := e.s.DeleteMailbox(e.ctx, e.acct.ID, e.acct.ID, "Gone"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("DeleteMailbox(deleted) = %v; want %v", err, storage.ErrNotFound)
	}
	if a := e.accountRow(e.acct.ID); a.UsedMessages != 0 || a.UsedBytes != 0 {
		t.Errorf("usage after deleting the only mailbox with mail = %d messages, %d bytes; want 0, 0", a.UsedMessages, a.UsedBytes)
	}
	recreated := e.create(e.acct.ID, "Gone")
	if recreated.ID == m.ID || (recreated.UIDValidity == m.UIDValidity && recreated.UIDNext <= m.UIDNext) {
		t.Errorf("recreated mailbox id %d UIDVALIDITY %d; want a new id and a new UIDVALIDITY (RFC 9051 §2.3.1.1)", recreated.ID, recreated.UIDValidity)
	}
	e.checkClean(e.s)
}

// RENAME moves the children and keeps ids; renaming INBOX moves its
// messages and leaves it empty (RFC 9051 §6.3.6).
func testRenameMailbox(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	a := e.create(e.acct.ID, "A")
	ax := e.create(e.acct.ID, "A/x")
	e.append(e.s, e.acct.ID, ax.ID, storage.Flags{})
	e.create(e.acct.ID, "Taken")
	if err := e.s.RenameMailbox(e.ctx, e.acct.ID, e.acct.ID, "A", "taken"); !errors.Is(err, storage.ErrExists) {
		t.Errorf("RenameMailbox(A, taken) = %v; want %v", err, storage.ErrExists)
	}
	if err := e.s.RenameMailbox(e.ctx, e.acct.ID, e.acct.ID, "Missing", "M2"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("RenameMailbox(Missing) = %v; want %v", err, storage.ErrNotFound)
	}
	if err := e.s.RenameMailbox(e.ctx, e.acct.ID, e.acct.ID, "a", "B"); err != nil {
		t.Fatalf("RenameMailbox(a, B) = %v; want nil", err)
	}
	for name, id := range map[string]storage.MailboxID{"B": a.ID, "B/x": ax.ID} {
		got, err := e.s.Mailbox(e.ctx, e.acct.ID, e.acct.ID, name)
		if err != nil || got.ID != id || got.Name != name {
			t.Errorf("Mailbox(%q) = %d %q, %v; want %d", name, got.ID, got.Name, err, id)
		}
	}
	for _, name := range []string{"A", "A/x"} {
		if _, err := e.s.Mailbox(e.ctx, e.acct.ID, e.acct.ID, name); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Mailbox(%q) after rename = %v; want %v", name, err, storage.ErrNotFound)
		}
	}
	if n := len(e.messages(e.s, e.acct.ID, ax.ID)); n != 1 {
		t.Errorf("B/x holds %d messages after rename; want 1", n)
	}

	for range 2 {
		e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	}
	if err := e.s.RenameMailbox(e.ctx, e.acct.ID, e.acct.ID, "inbox", "Old Inbox"); err != nil {
		t.Fatalf("RenameMailbox(INBOX) = %v; want nil", err)
	}
	old := e.mailbox(e.acct.ID, "Old Inbox")
	if old.ID == e.inbox.ID || old.Messages != 2 {
		t.Errorf("Old Inbox id %d with %d messages; want a new mailbox (not %d) with 2", old.ID, old.Messages, e.inbox.ID)
	}
	if in := e.mailbox(e.acct.ID, "INBOX"); in.Messages != 0 {
		t.Errorf("INBOX after rename holds %d messages; want 0", in.Messages)
	}
	if a := e.accountRow(e.acct.ID); a.UsedMessages != 3 {
		t.Errorf("UsedMessages after renames = %d; want 3", a.UsedMessages)
	}
	e.checkClean(e.s)
}

// pairs builds COPYUID pairs from src, dst, src, dst, ...
func pairs(u ...storage.UID) []storage.UIDPair {
	var p []storage.UIDPair
	for i := 0; i+1 < len(u); i += 2 {
		p = append(p, storage.UIDPair{Src: u[i], Dst: u[i+1]})
	}
	return p
}

// A nil UIDSet means every message (storage.UIDSet), for every call that
// takes one.
func testNilSet(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	dst := e.create(e.acct.ID, "Dest")
	for range 3 {
		e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	}
	all := []storage.UID{1, 2, 3}
	if ms, err := e.s.Messages(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, nil, storage.MessageOptions{}); err != nil || len(ms) != 3 {
		t.Errorf("Messages(nil) = %d messages, %v; want 3", len(ms), err)
	}
	if upd, _, err := e.s.StoreFlags(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, nil, storage.FlagsAdd, storage.Flags{Seen: true}, 0); err != nil || !slices.Equal(uidsOf(upd), all) {
		t.Errorf("StoreFlags(nil) updated %v, %v; want %v", uidsOf(upd), err, all)
	}
	if cr, err := e.s.Copy(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, nil, e.acct.ID, dst.ID); err != nil || len(cr.Pairs) != 3 {
		t.Errorf("Copy(nil) = %+v, %v; want 3 pairs", cr, err)
	}
	if u, err := e.s.ExpungeUIDs(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, nil); err != nil || !slices.Equal(u, all) {
		t.Errorf("ExpungeUIDs(nil) = %v, %v; want %v", u, err, all)
	}
	if cr, err := e.s.Move(e.ctx, e.acct.ID, e.acct.ID, dst.ID, nil, e.acct.ID, e.inbox.ID); err != nil || len(cr.Pairs) != 3 {
		t.Errorf("Move(nil) = %+v, %v; want 3 pairs", cr, err)
	}
	e.checkClean(e.s)
}
