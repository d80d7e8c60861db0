package storetest

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"tidings/storage"
)

const (
	writers          = 20
	appendsPerWriter = 8
)

// 20 writers appending to one mailbox, from two store instances, get unique
// UIDs that increase in each writer's call order; UIDNext and the counters
// agree with what was appended.
func testConcurrentAppendUIDs(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	stores := []storage.Store{e.s, openStore(t, e.open)}
	perWriter := make([][]storage.UID, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			s := stores[w%len(stores)]
			for range appendsPerWriter {
				src, m := newMessage("concurrent", uniqueBody(""))
				r, err := s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, m)
				if err != nil {
					t.Errorf("writer %d: Append = %v; want nil", w, err)
					return
				}
				perWriter[w] = append(perWriter[w], r.UID)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[storage.UID]int{}
	var maxUID storage.UID
	for w, us := range perWriter {
		for i, u := range us {
			if i > 0 && u <= us[i-1] {
				t.Errorf("writer %d: UID %d after UID %d; want strictly increasing", w, u, us[i-1])
			}
			if prev, dup := seen[u]; dup {
				t.Errorf("UID %d given to writers %d and %d; want unique", u, prev, w)
			}
			seen[u] = w
			maxUID = max(maxUID, u)
		}
	}
	mb := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID)
	const total = writers * appendsPerWriter
	if mb.Messages != total {
		t.Errorf("Mailbox.Messages = %d; want %d", mb.Messages, total)
	}
	if mb.UIDNext <= maxUID {
		t.Errorf("Mailbox.UIDNext = %d; want > highest UID %d", mb.UIDNext, maxUID)
	}
	got, uids, err := e.s.Snapshot(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID)
	if err != nil {
		t.Fatalf("Snapshot = %v; want nil", err)
	}
	if len(uids) != total || !slices.IsSorted(uids) {
		t.Errorf("Snapshot UIDs: %d, sorted %v; want %d ascending", len(uids), slices.IsSorted(uids), total)
	}
	for _, u := range uids {
		if _, ok := seen[u]; !ok {
			t.Errorf("Snapshot has UID %d that no Append returned", u)
		}
	}
	if got.Messages != int64(len(uids)) {
		t.Errorf("Snapshot Messages = %d with %d UIDs; want equal (one consistent read)", got.Messages, len(uids))
	}
	e.checkClean(e.s)
}

// A reader polling ChangesSince while 20 writers commit never misses a
// change and never sees a UID before a lower one: the UIDs it has seen are
// always a prefix of the final UID list, and include every UID whose Append
// had returned before the poll began.
func testChangesSinceWhileWriting(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	stores := []storage.Store{e.s, openStore(t, e.open)}
	reader := openStore(t, e.open)

	var (
		mu    sync.Mutex
		acked []storage.UID
	)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			s := stores[w%len(stores)]
			for range appendsPerWriter {
				src, m := newMessage("poll", uniqueBody(""))
				r, err := s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, m)
				if err != nil {
					t.Errorf("writer %d: Append = %v; want nil", w, err)
					return
				}
				mu.Lock()
				acked = append(acked, r.UID)
				mu.Unlock()
			}
		})
	}
	go func() { wg.Wait(); close(done) }()

	type poll struct {
		seen    int // how many UIDs seen after this poll
		missing []storage.UID
	}
	var (
		seenSet  = map[storage.UID]bool{}
		seenList []storage.UID // in the order polls returned them
		polls    []poll
		since    storage.ModSeq
	)
	pollOnce := func() bool {
		mu.Lock()
		before := slices.Clone(acked)
		mu.Unlock()
		c, err := reader.ChangesSince(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, since)
		if err != nil {
			t.Errorf("ChangesSince(%d) = %v; want nil", since, err)
			return false
		}
		if c.Highest < since {
			t.Errorf("ChangesSince(%d).Highest = %d; want >= %d", since, c.Highest, since)
		}
		if !slices.IsSorted(uidsOf(c.Changed)) {
			t.Errorf("ChangesSince(%d).Changed UIDs %v; want ascending", since, uidsOf(c.Changed))
		}
		for _, f := range c.Changed {
			if f.ModSeq <= since || f.ModSeq > c.Highest {
				t.Errorf("ChangesSince(%d): UID %d has MODSEQ %d; want in (%d, %d]", since, f.UID, f.ModSeq, since, c.Highest)
			}
			if !seenSet[f.UID] {
				seenSet[f.UID] = true
				seenList = append(seenList, f.UID)
			}
		}
		p := poll{seen: len(seenList)}
		for _, u := range before {
			if !seenSet[u] {
				p.missing = append(p.missing, u)
			}
		}
		polls = append(polls, p)
		since = c.Highest
		return true
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if !pollOnce() {
			<-done
			return
		}
	}
	pollOnce() // after the last commit
	if t.Failed() {
		return
	}
	final := e.uids(e.s, e.acct.ID, e.inbox.ID)
	if len(final) != writers*appendsPerWriter {
		t.Fatalf("Messages() has %d UIDs; want %d", len(final), writers*appendsPerWriter)
	}
	for i, p := range polls {
		if len(p.missing) > 0 {
			t.Errorf("poll %d: UIDs %v were acknowledged before the poll but never seen; want every acknowledged UID", i, p.missing)
		}
		got := sorted(seenList[:p.seen])
		if !slices.Equal(got, final[:p.seen]) {
			t.Errorf("poll %d: UIDs seen so far %v; want the prefix %v of the final list (a later UID became visible before an earlier one)", i, got, final[:p.seen])
			break
		}
	}
	if len(seenList) != len(final) {
		t.Errorf("reader saw %d UIDs in total; want %d", len(seenList), len(final))
	}
	t.Logf("%d polls", len(polls))
}

// Every removed message is reported exactly once: by exactly one of two
// concurrent Expunge, ExpungeUIDs or Move calls, and once in ChangesSince.
func testExpungeReportedOnce(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	s2 := openStore(t, e.open)
	trash := e.create(e.acct.ID, "Trash")
	for i := 1; i <= 12; i++ {
		e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{Deleted: i <= 4})
	}
	m0 := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID).HighestModSeq
	stores := []storage.Store{e.s, s2}

	// race runs op on both instances at once and returns the UIDs each reported.
	race := func(name string, op func(s storage.Store) ([]storage.UID, error)) []storage.UID {
		t.Helper()
		res := make([][]storage.UID, 2)
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Go(func() {
				u, err := op(s)
				if err != nil {
					t.Errorf("%s on instance %d = %v; want nil", name, i, err)
				}
				res[i] = u
			})
		}
		wg.Wait()
		all := append(slices.Clone(res[0]), res[1]...)
		slices.Sort(all)
		if len(slices.Compact(slices.Clone(all))) != len(all) {
			t.Errorf("%s: instances reported %v and %v; want each UID reported by exactly one", name, res[0], res[1])
		}
		return slices.Compact(all)
	}
	got := race("Expunge(nil)", func(s storage.Store) ([]storage.UID, error) {
		return s.Expunge(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, nil)
	})
	if want := []storage.UID{1, 2, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("Expunge(nil) removed %v; want %v", got, want)
	}
	got = race("ExpungeUIDs(5,6)", func(s storage.Store) ([]storage.UID, error) {
		return s.ExpungeUIDs(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(5, 6))
	})
	if want := []storage.UID{5, 6}; !slices.Equal(got, want) {
		t.Errorf("ExpungeUIDs(5,6) removed %v; want %v", got, want)
	}
	got = race("Move(7,8)", func(s storage.Store) ([]storage.UID, error) {
		r, err := s.Move(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(7, 8), e.acct.ID, trash.ID)
		var src []storage.UID
		for _, p := range r.Pairs {
			src = append(src, p.Src)
		}
		return src, err
	})
	if want := []storage.UID{7, 8}; !slices.Equal(got, want) {
		t.Errorf("Move(7,8) moved %v; want %v", got, want)
	}
	if n := len(e.messages(e.s, e.acct.ID, trash.ID)); n != 2 {
		t.Errorf("Trash holds %d messages after two concurrent Moves of 2; want 2", n)
	}
	// Not \Deleted: Expunge leaves it.
	if u, err := e.s.Expunge(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(9)); err != nil || len(u) != 0 {
		t.Errorf("Expunge(9 without \\Deleted) = %v, %v; want [], nil", u, err)
	}
	for i, s := range stores {
		c := e.changes(s, e.acct.ID, e.inbox.ID, m0)
		if want := []storage.UID{1, 2, 3, 4, 5, 6, 7, 8}; !slices.Equal(c.Expunged, want) {
			t.Errorf("instance %d: ChangesSince(%d).Expunged = %v; want %v", i, m0, c.Expunged, want)
		}
		if len(c.Changed) != 0 {
			t.Errorf("instance %d: ChangesSince(%d).Changed = %v; want none (nothing left was changed)", i, m0, uidsOf(c.Changed))
		}
	}
	if mb := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID); mb.Messages != 4 || mb.Deleted != 0 {
		t.Errorf("INBOX Messages, Deleted = %d, %d; want 4, 0", mb.Messages, mb.Deleted)
	}
	e.checkClean(e.s)
}

// isAny reports whether err is one of targets.
func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
