package sqlstore_test

import (
	"context"
	"testing"
	"time"

	"tidings/storage"
)

// TestDiscardTrashcan: with the trashcan, discarded INBOX mail moves to
// Trash, except a message Trash already holds (COPY then EXPUNGE, as
// clients without MOVE do), which is only expunged; discarding from Trash
// expunges; PurgeTrash removes old Trash entries only.
func TestDiscardTrashcan(t *testing.T) {
	forDrivers(t, func(t *testing.T, open func(*testing.T, storage.Options) storage.Store) {
		ctx := context.Background()
		s := open(t, storage.Options{})
		a := setup(t, s, "carol@bücher.example")
		inbox, err := s.Mailbox(ctx, a.ID, a.ID, "INBOX")
		if err != nil {
			t.Fatal(err)
		}
		trash, err := s.Mailbox(ctx, a.ID, a.ID, "Trash")
		if err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-60 * 24 * time.Hour)
		var uids []storage.UID
		for i, body := range []string{"one", "two", "three"} {
			src, m := msg(body)
			if i == 0 {
				m.InternalDate = old
			}
			res, err := s.Append(ctx, a.ID, a.ID, inbox.ID, src, m)
			if err != nil {
				t.Fatal(err)
			}
			uids = append(uids, res.UID)
		}
		one := storage.UIDSet{{Start: uids[0], Stop: uids[0]}}
		if _, err := s.Copy(ctx, a.ID, a.ID, inbox.ID, one, a.ID, trash.ID); err != nil {
			t.Fatal(err)
		}
		count := func(mb storage.MailboxID) int {
			t.Helper()
			ms, err := s.Messages(ctx, a.ID, a.ID, mb, nil, storage.MessageOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return len(ms)
		}

		gone, err := storage.Discard(ctx, s, a.ID, a.ID, inbox.ID, storage.UIDSet{{Start: uids[0], Stop: uids[1]}}, true)
		if err != nil || len(gone) != 2 {
			t.Fatalf("Discard(INBOX 1:2) = %v, %v; want 2 UIDs", gone, err)
		}
		if n := count(trash.ID); n != 2 {
			t.Errorf("Trash holds %d messages; want 2 (the copy of one, and two)", n)
		}
		if n := count(inbox.ID); n != 1 {
			t.Errorf("INBOX holds %d messages; want 1", n)
		}
		tm, _ := s.Messages(ctx, a.ID, a.ID, trash.ID, nil, storage.MessageOptions{})
		gone, err = storage.Discard(ctx, s, a.ID, a.ID, trash.ID, storage.UIDSet{{Start: tm[1].UID, Stop: tm[1].UID}}, true)
		if err != nil || len(gone) != 1 || count(trash.ID) != 1 {
			t.Fatalf("Discard(Trash) = %v, %v, Trash %d; want an expunge", gone, err, count(trash.ID))
		}
		if n, err := storage.PurgeTrash(ctx, s, a.ID, time.Now().Add(-30*24*time.Hour)); err != nil || n != 1 {
			t.Errorf("PurgeTrash(30 days) = %d, %v; want the 60-day-old entry", n, err)
		}
		if n := count(trash.ID); n != 0 {
			t.Errorf("Trash holds %d messages after purge; want 0", n)
		}
		if rep, err := s.Check(ctx, false); err != nil || !rep.Clean() {
			t.Errorf("Check = %+v, %v; want clean", rep, err)
		}
	})
}
