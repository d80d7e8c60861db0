package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"tidings/storage"
)

const (
	randomOps     = 2000
	randomWorkers = 8
)

// 2,000 random operations from 8 goroutines on two store instances leave
// every counter, usage figure and reference count consistent: both by the
// store's own Check and by recounting through the contract.
func testRandomOperations(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	other := e.account("other@" + testDomain)
	stores := []storage.Store{e.s, openStore(t, e.open)}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	names := []string{"A", "B", "C", "A/x", "B/y", "Ü/ß"}
	for _, n := range []string{"A", "B"} {
		e.create(e.acct.ID, n)
	}
	ops := map[string]int{}
	var opsMu sync.Mutex
	var wg sync.WaitGroup
	for w := range randomWorkers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			s := stores[w%len(stores)]
			failures := 0
			for i := range randomOps / randomWorkers {
				op, err := randomOp(e, s, rng, other.ID, names)
				opsMu.Lock()
				ops[op]++
				opsMu.Unlock()
				// A mailbox deleted or renamed by another goroutine, or a
				// name taken meanwhile, are the expected outcomes of racing.
				if err != nil && !isAny(err, storage.ErrNotFound, storage.ErrExists) {
					t.Errorf("worker %d op %d %s = %v; want nil, ErrNotFound or ErrExists", w, i, op, err)
					// Go on: one broken operation should not hide what
					// the others do to the counters.
					if failures++; failures == 5 {
						return
					}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("ops: %v", ops)
	e.checkClean(e.s)
	for _, a := range []storage.AccountID{e.acct.ID, other.ID} {
		recount(t, e, a)
	}
}

// randomOp performs one random operation and names it.
func randomOp(e *env, s storage.Store, rng *rand.Rand, other storage.AccountID, names []string) (string, error) {
	ctx, me := e.ctx, e.acct.ID
	mbs, err := s.Mailboxes(ctx, me, me)
	if err != nil || len(mbs) == 0 {
		return "list", fmt.Errorf("Mailboxes = %d, %v", len(mbs), err)
	}
	pick := func() storage.Mailbox { return mbs[rng.IntN(len(mbs))] }
	uidSet := func(mb storage.Mailbox) storage.UIDSet {
		hi := max(uint32(mb.UIDNext), 2)
		a := storage.UID(1 + rng.Uint32N(hi))
		return storage.UIDSet{{Start: a, Stop: a + storage.UID(rng.IntN(4))}}
	}
	flags := func() storage.Flags {
		f := storage.Flags{Seen: rng.IntN(2) == 0, Flagged: rng.IntN(3) == 0, Deleted: rng.IntN(3) == 0}
		if rng.IntN(3) == 0 {
			f.Keywords = []string{fmt.Sprintf("$k%d", rng.IntN(5))}
		}
		return f
	}
	switch n := rng.IntN(100); {
	case n < 30:
		mb := pick()
		src, m := newMessage("random", uniqueBody(""))
		m.Flags = flags()
		if rng.IntN(2) == 0 {
			m.Prefix = []byte("Delivered-To: user@example.org\r\n")
		}
		_, err := s.Append(ctx, me, me, mb.ID, src, m)
		return "append", err
	case n < 38:
		from, to := pick(), pick()
		_, err := s.Copy(ctx, me, me, from.ID, uidSet(from), me, to.ID)
		return "copy", err
	case n < 46:
		from, to := pick(), pick()
		if from.ID == to.ID {
			return "move", nil
		}
		_, err := s.Move(ctx, me, me, from.ID, uidSet(from), me, to.ID)
		return "move", err
	case n < 62:
		mb := pick()
		op := storage.FlagOp(rng.IntN(3))
		_, _, err := s.StoreFlags(ctx, me, me, mb.ID, uidSet(mb), op, flags(), 0)
		return "flags", err
	case n < 70:
		mb := pick()
		if rng.IntN(2) == 0 {
			_, err := s.Expunge(ctx, me, me, mb.ID, nil)
			return "expunge", err
		}
		_, err := s.ExpungeUIDs(ctx, me, me, mb.ID, uidSet(mb))
		return "expunge-uids", err
	case n < 82:
		src, m := newMessage("deliver", uniqueBody(""))
		targets := []storage.DeliveryTarget{{Owner: other, Message: cloneMessage(m)}, {Owner: me, Mailbox: pick().ID, Message: cloneMessage(m)}}
		targets[0].Message.Prefix = []byte("Delivered-To: other@example.org\r\n")
		res, err := s.Deliver(ctx, src, targets)
		if err == nil {
			for _, r := range res {
				// The picked mailbox may be gone; that is the target's own problem.
				if r.Err != nil && !errors.Is(r.Err, storage.ErrNotFound) {
					err = r.Err
				}
			}
		}
		return "deliver", err
	case n < 88:
		_, err := s.CreateMailbox(ctx, me, me, storage.NewMailbox{Name: names[rng.IntN(len(names))]})
		return "create", err
	case n < 92:
		mb := pick()
		if mb.Name == "INBOX" {
			return "delete", nil
		}
		err := s.DeleteMailbox(ctx, me, me, mb.Name)
		if errors.Is(err, storage.ErrNotEmpty) {
			// The contract leaves open whether a mailbox with children
			// may be deleted; refusing is consistent.
			err = nil
		}
		return "delete", err
	case n < 96:
		mb := pick()
		if mb.Name == "INBOX" {
			return "rename", nil
		}
		to := names[rng.IntN(len(names))]
		if to == mb.Name || len(to) > len(mb.Name) && to[:len(mb.Name)+1] == mb.Name+"/" {
			return "rename", nil // into itself
		}
		return "rename", s.RenameMailbox(ctx, me, me, mb.Name, to)
	default:
		mb := pick()
		_, err := s.ChangesSince(ctx, me, me, mb.ID, 0)
		if err == nil {
			_, err = s.ClaimRecent(ctx, me, me, mb.ID)
		}
		return "read", err
	}
}

// recount checks each mailbox's counters and the account's usage against
// the messages the store lists.
func recount(t *testing.T, e *env, owner storage.AccountID) {
	t.Helper()
	mbs, err := e.s.Mailboxes(e.ctx, owner, owner)
	if err != nil {
		t.Fatalf("Mailboxes(%d) = %v", owner, err)
	}
	var bytes, count int64
	for _, mb := range mbs {
		ms := e.messages(e.s, owner, mb.ID)
		var size, unseen, deleted int64
		for _, m := range ms {
			size += m.Size
			if !m.Flags.Seen {
				unseen++
			}
			if m.Flags.Deleted {
				deleted++
			}
			if m.UID >= mb.UIDNext {
				t.Errorf("mailbox %q: UID %d >= UIDNext %d", mb.Name, m.UID, mb.UIDNext)
			}
			if m.ModSeq > mb.HighestModSeq {
				t.Errorf("mailbox %q: UID %d MODSEQ %d > HIGHESTMODSEQ %d", mb.Name, m.UID, m.ModSeq, mb.HighestModSeq)
			}
		}
		if mb.Messages != int64(len(ms)) || mb.Size != size || mb.Unseen != unseen || mb.Deleted != deleted {
			t.Errorf("mailbox %q counters Messages/Size/Unseen/Deleted = %d/%d/%d/%d; want %d/%d/%d/%d (recounted)",
				mb.Name, mb.Messages, mb.Size, mb.Unseen, mb.Deleted, len(ms), size, unseen, deleted)
		}
		c := e.changes(e.s, owner, mb.ID, 0)
		if len(c.Changed) != len(ms) {
			t.Errorf("mailbox %q: ChangesSince(0) lists %d messages; Messages() lists %d", mb.Name, len(c.Changed), len(ms))
		}
		bytes += size
		count += int64(len(ms))
	}
	if a := e.accountRow(owner); a.UsedBytes != bytes || a.UsedMessages != count {
		t.Errorf("account %d UsedBytes/UsedMessages = %d/%d; want %d/%d (recounted)", owner, a.UsedBytes, a.UsedMessages, bytes, count)
	}
}
