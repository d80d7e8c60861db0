package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"tidings/storage"
	"tidings/storage/fsblob"
)

// readMessage opens a message and returns its prefix and blob bytes.
func (e *env) readMessage(s storage.Store, owner storage.AccountID, mb storage.MailboxID, uid storage.UID) (storage.Message, []byte, error) {
	m, r, err := s.OpenMessage(e.ctx, owner, owner, mb, uid)
	if err != nil {
		return m, nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	return m, b, err
}

// Two recipients of one delivery share one blob, each with its own prefix;
// sizes and bytes include the prefix.
func testDeliverSharesBlob(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	other := e.account("other@" + testDomain)
	otherInbox := e.mailbox(other.ID, "INBOX")
	src, m := newMessage("shared", uniqueBody("one blob, two recipients"))
	prefixes := [][]byte{
		[]byte("Delivered-To: user@example.org\r\n"),
		[]byte("Return-Path: <sender@example.net>\r\nDelivered-To: other@example.org\r\nX-Original-To: team@example.org\r\n"),
	}
	owners := []storage.AccountID{e.acct.ID, other.ID}
	inboxes := []storage.MailboxID{e.inbox.ID, otherInbox.ID}
	var targets []storage.DeliveryTarget
	for i := range owners {
		nm := cloneMessage(m)
		nm.Prefix = prefixes[i]
		targets = append(targets, storage.DeliveryTarget{Owner: owners[i], Message: nm})
	}
	res, err := e.s.Deliver(e.ctx, src, targets)
	if err != nil {
		t.Fatalf("Deliver(2 targets) = %v; want nil", err)
	}
	if len(res) != 2 {
		t.Fatalf("Deliver(2 targets) returned %d results; want 2", len(res))
	}
	size := src.Size()
	for i, r := range res {
		if r.Err != nil {
			t.Errorf("Deliver target %d: Err = %v; want nil", i, r.Err)
			continue
		}
		if r.Result.Mailbox != inboxes[i] {
			t.Errorf("Deliver target %d landed in mailbox %d; want INBOX %d", i, r.Result.Mailbox, inboxes[i])
		}
		want := int64(len(prefixes[i])) + size
		ms, err := e.s.Messages(e.ctx, owners[i], owners[i], inboxes[i], set(r.Result.UID), storage.MessageOptions{Prefix: true})
		if err != nil || len(ms) != 1 {
			t.Fatalf("Messages(target %d) = %d messages, %v; want 1, nil", i, len(ms), err)
		}
		got := ms[0]
		if got.BlobHash != src.Hash() || got.BlobSize != size {
			t.Errorf("target %d: blob %s (%d bytes); want %s (%d bytes)", i, got.BlobHash, got.BlobSize, src.Hash(), size)
		}
		if got.Size != want || got.PrefixLen != len(prefixes[i]) {
			t.Errorf("target %d: Size, PrefixLen = %d, %d; want %d, %d", i, got.Size, got.PrefixLen, want, len(prefixes[i]))
		}
		if !bytes.Equal(got.Prefix, prefixes[i]) {
			t.Errorf("target %d: Messages Prefix = %q; want %q", i, got.Prefix, prefixes[i])
		}
		om, blob, err := e.readMessage(e.s, owners[i], inboxes[i], r.Result.UID)
		if err != nil {
			t.Fatalf("OpenMessage(target %d) = %v; want nil", i, err)
		}
		full := append(cloneBytes(om.Prefix), blob...)
		wantFull := append(cloneBytes(prefixes[i]), src...)
		if !bytes.Equal(full, wantFull) {
			t.Errorf("target %d: prefix+blob = %q; want %q", i, full, wantFull)
		}
		if om.Size != want {
			t.Errorf("target %d: OpenMessage Size = %d; want %d", i, om.Size, want)
		}
		if mb := e.mailboxByID(e.s, owners[i], inboxes[i]); mb.Size != want || mb.Messages != 1 {
			t.Errorf("target %d: mailbox Size, Messages = %d, %d; want %d, 1", i, mb.Size, mb.Messages, want)
		}
		if a := e.accountRow(owners[i]); a.UsedBytes != want || a.UsedMessages != 1 {
			t.Errorf("target %d: account UsedBytes, UsedMessages = %d, %d; want %d, 1", i, a.UsedBytes, a.UsedMessages, want)
		}
	}
	e.checkClean(e.s)
}

func cloneBytes(b []byte) []byte { return append([]byte(nil), b...) }

// A blob shared by two mailboxes survives expunge from one; once no entry
// references it, the sweeper keeps it during the grace period, deletes it
// after, and never deletes a blob that was referenced again.
func testBlobLifecycle(t *testing.T, h Harness, useFS bool) {
	var (
		open  func(testing.TB) storage.Store
		blobs *fsblob.Store
	)
	if useFS {
		if h.NewWithBlobs == nil {
			t.Skipf("%s harness has no NewWithBlobs", h.Name)
		}
		var err error
		if blobs, err = fsblob.New(t.TempDir()); err != nil {
			t.Fatalf("fsblob.New = %v", err)
		}
		open = h.NewWithBlobs(t, blobs)
	} else {
		open = h.New(t)
	}
	e := newEnv(t, open)
	trash := e.create(e.acct.ID, "Trash")
	src, m := newMessage("lifecycle", uniqueBody("shared by two mailboxes"))
	hash := src.Hash()
	inFS := func(want bool, when string) {
		t.Helper()
		if blobs == nil {
			return
		}
		ok, err := blobs.Exists(e.ctx, hash)
		if err != nil || ok != want {
			t.Errorf("%s: BlobStore.Exists(%s) = %v, %v; want %v, nil", when, hash, ok, err, want)
		}
	}
	r, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, cloneMessage(m))
	if err != nil {
		t.Fatalf("Append = %v; want nil", err)
	}
	inFS(true, "after Append")
	cr, err := e.s.Copy(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(r.UID), e.acct.ID, trash.ID)
	if err != nil || len(cr.Pairs) != 1 {
		t.Fatalf("Copy = %+v, %v; want one pair", cr, err)
	}
	tuid := cr.Pairs[0].Dst
	if _, err := e.s.ExpungeUIDs(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(r.UID)); err != nil {
		t.Fatalf("ExpungeUIDs(INBOX) = %v", err)
	}
	if n, err := e.s.SweepBlobs(e.ctx, 0); err != nil || n != 0 {
		t.Errorf("SweepBlobs(0) with the blob still in Trash = %d, %v; want 0, nil", n, err)
	}
	if _, b, err := e.readMessage(e.s, e.acct.ID, trash.ID, tuid); err != nil || !bytes.Equal(b, src) {
		t.Fatalf("OpenMessage(Trash copy) after expunge from INBOX = %d bytes, %v; want the %d original bytes", len(b), err, len(src))
	}
	inFS(true, "after expunge from one mailbox")

	if _, err := e.s.ExpungeUIDs(e.ctx, e.acct.ID, e.acct.ID, trash.ID, set(tuid)); err != nil {
		t.Fatalf("ExpungeUIDs(Trash) = %v", err)
	}
	if n, err := e.s.SweepBlobs(e.ctx, time.Hour); err != nil || n != 0 {
		t.Errorf("SweepBlobs(1h) just after the last expunge = %d, %v; want 0, nil", n, err)
	}
	inFS(true, "within the grace period")
	time.Sleep(20 * time.Millisecond) // let the zero count age past a grace of 0
	if n, err := e.s.SweepBlobs(e.ctx, 0); err != nil || n != 1 {
		t.Errorf("SweepBlobs(0) after both expunges = %d, %v; want 1, nil", n, err)
	}
	inFS(false, "after the sweep")
	if _, _, err := e.s.OpenMessage(e.ctx, e.acct.ID, e.acct.ID, trash.ID, tuid); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("OpenMessage(expunged) = %v; want %v", err, storage.ErrNotFound)
	}
	if n, err := e.s.SweepBlobs(e.ctx, 0); err != nil || n != 0 {
		t.Errorf("second SweepBlobs(0) = %d, %v; want 0, nil", n, err)
	}
	e.checkClean(e.s)

	// The same bytes again: stored anew and readable.
	r2, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, cloneMessage(m))
	if err != nil {
		t.Fatalf("Append(same bytes after sweep) = %v; want nil", err)
	}
	if _, b, err := e.readMessage(e.s, e.acct.ID, e.inbox.ID, r2.UID); err != nil || !bytes.Equal(b, src) {
		t.Fatalf("OpenMessage(re-appended) = %d bytes, %v; want the %d original bytes", len(b), err, len(src))
	}
	inFS(true, "after re-append")

	// Referenced again after reaching zero: the sweeper must leave it.
	if _, err := e.s.ExpungeUIDs(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(r2.UID)); err != nil {
		t.Fatalf("ExpungeUIDs = %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	r3, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, trash.ID, src, cloneMessage(m))
	if err != nil {
		t.Fatalf("Append(zero-count blob) = %v; want nil", err)
	}
	if n, err := e.s.SweepBlobs(e.ctx, 0); err != nil || n != 0 {
		t.Errorf("SweepBlobs(0) of a blob referenced again = %d, %v; want 0, nil", n, err)
	}
	if _, b, err := e.readMessage(e.s, e.acct.ID, trash.ID, r3.UID); err != nil || !bytes.Equal(b, src) {
		t.Errorf("OpenMessage(re-referenced blob) after sweep = %d bytes, %v; want the %d original bytes", len(b), err, len(src))
	}
	inFS(true, "after re-reference and sweep")
	e.checkClean(e.s)
}

// An over-quota append is refused with ErrOverQuota and leaves nothing
// behind; the prefix counts; expunge, move and flag changes are never refused.
func testQuota(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	if err := e.s.SetQuota(e.ctx, e.acct.ID, 2000, 0); err != nil {
		t.Fatalf("SetQuota = %v", err)
	}
	sized := func(n int) (storage.BytesSource, storage.NewMessage) {
		src, _ := newMessage("quota", "")
		pad := n - len(src)
		body := uniqueBody("")
		for len(body) < pad {
			body += "x"
		}
		return newMessage("quota", body[:pad])
	}
	src1, m1 := sized(1200)
	r1, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src1, m1)
	if err != nil {
		t.Fatalf("Append(1200 of 2000 bytes) = %v; want nil", err)
	}
	before := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID)
	// 700 bytes fit, but not with a 150-byte prefix: the prefix counts.
	src2, m2 := sized(700)
	m2.Prefix = bytes.Repeat([]byte("X"), 148)
	m2.Prefix = append(m2.Prefix, '\r', '\n')
	if _, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src2, m2); !errors.Is(err, storage.ErrOverQuota) {
		t.Errorf("Append(700 + 150 prefix over 2000) = %v; want %v", err, storage.ErrOverQuota)
	}
	after := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID)
	if after.Messages != before.Messages || after.Size != before.Size || after.Unseen != before.Unseen ||
		after.UIDNext != before.UIDNext || after.HighestModSeq != before.HighestModSeq {
		t.Errorf("mailbox after refused Append = %+v; want unchanged %+v", after, before)
	}
	if a := e.accountRow(e.acct.ID); a.UsedBytes != 1200 || a.UsedMessages != 1 {
		t.Errorf("UsedBytes, UsedMessages after refused Append = %d, %d; want 1200, 1", a.UsedBytes, a.UsedMessages)
	}
	if u := e.uids(e.s, e.acct.ID, e.inbox.ID); len(u) != 1 || u[0] != r1.UID {
		t.Errorf("Messages() after refused Append = %v; want [%d]", u, r1.UID)
	}
	e.checkClean(e.s)

	// The same blob without prefix fits.
	if _, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src2, cloneMessage(m2WithoutPrefix(m2))); err != nil {
		t.Errorf("Append(700 within quota) = %v; want nil", err)
	}

	// Deliver: one recipient over quota does not fail the other.
	if err := e.s.SetQuota(e.ctx, e.acct.ID, 0, 0); err != nil {
		t.Fatalf("SetQuota(unlimited) = %v", err)
	}
	other := e.account("other@" + testDomain)
	if err := e.s.SetQuota(e.ctx, other.ID, 0, 1); err != nil {
		t.Fatalf("SetQuota(messages 1) = %v", err)
	}
	e.append(e.s, other.ID, e.mailbox(other.ID, "INBOX").ID, storage.Flags{})
	src3, m3 := newMessage("deliver", uniqueBody(""))
	res, err := e.s.Deliver(e.ctx, src3, []storage.DeliveryTarget{
		{Owner: other.ID, Message: cloneMessage(m3)},
		{Owner: e.acct.ID, Message: cloneMessage(m3)},
	})
	if err != nil || len(res) != 2 {
		t.Fatalf("Deliver(over-quota + fine) = %d results, %v; want 2, nil", len(res), err)
	}
	if !errors.Is(res[0].Err, storage.ErrOverQuota) {
		t.Errorf("Deliver target over message quota: Err = %v; want %v", res[0].Err, storage.ErrOverQuota)
	}
	if res[1].Err != nil {
		t.Errorf("Deliver target within quota: Err = %v; want nil", res[1].Err)
	}
	if a := e.accountRow(other.ID); a.UsedMessages != 1 {
		t.Errorf("over-quota recipient UsedMessages = %d; want 1", a.UsedMessages)
	}

	// Over quota now (quota lowered below usage): flags, move and expunge
	// still work; copy does not.
	if err := e.s.SetQuota(e.ctx, e.acct.ID, 1, 0); err != nil {
		t.Fatalf("SetQuota(1) = %v", err)
	}
	if _, _, err := e.s.StoreFlags(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, nil, storage.FlagsAdd, storage.Flags{Seen: true, Keywords: []string{"$Q"}}, 0); err != nil {
		t.Errorf("StoreFlags over quota = %v; want nil", err)
	}
	arch := e.create(e.acct.ID, "Archive")
	if _, err := e.s.Copy(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(r1.UID), e.acct.ID, arch.ID); !errors.Is(err, storage.ErrOverQuota) {
		t.Errorf("Copy over quota = %v; want %v", err, storage.ErrOverQuota)
	}
	if _, err := e.s.Move(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(r1.UID), e.acct.ID, arch.ID); err != nil {
		t.Errorf("Move over quota = %v; want nil", err)
	}
	if _, err := e.s.ExpungeUIDs(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, storage.UIDSet{{Start: 1, Stop: 0}}); err != nil {
		t.Errorf("ExpungeUIDs over quota = %v; want nil", err)
	}
	e.checkClean(e.s)
}

func m2WithoutPrefix(m storage.NewMessage) storage.NewMessage {
	m.Prefix = nil
	return m
}

// stalledSource is a BlobSource whose readers deliver the first half of the
// content and then block until release is closed: a client that stops
// sending in the middle of a large APPEND.
type stalledSource struct {
	data    []byte
	hash    string
	reached chan struct{} // closed when a reader first blocks
	release chan struct{}
	once    sync.Once
}

func newStalledSource(n int) *stalledSource {
	src, _ := newMessage("stalled", uniqueBody(""))
	data := append([]byte(nil), src...)
	for len(data) < n {
		data = append(data, "0123456789abcdefghijklmnopqrstuvwxyz\r\n"...)
	}
	sum := sha256.Sum256(data)
	return &stalledSource{data: data, hash: hex.EncodeToString(sum[:]), reached: make(chan struct{}), release: make(chan struct{})}
}

func (s *stalledSource) Hash() string { return s.hash }
func (s *stalledSource) Size() int64  { return int64(len(s.data)) }
func (s *stalledSource) Open() (storage.ReaderAtCloser, error) {
	return &stalledReader{s: s}, nil
}

type stalledReader struct {
	s   *stalledSource
	off int64
}

func (r *stalledReader) ReadAt(p []byte, off int64) (int, error) {
	half := int64(len(r.s.data) / 2)
	if off+int64(len(p)) > half {
		select {
		case <-r.s.release:
		default:
			r.s.once.Do(func() { close(r.s.reached) })
			<-r.s.release
		}
	}
	if off >= int64(len(r.s.data)) {
		return 0, io.EOF
	}
	n := copy(p, r.s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *stalledReader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	return n, err
}

func (r *stalledReader) Size() int64  { return int64(len(r.s.data)) }
func (r *stalledReader) Close() error { return nil }

// A writer stalled in the middle of its message does not delay a flag change
// or another append in the same account (DESIGN.md §Writing a message).
func testStalledWriter(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	first := e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	src := newStalledSource(3 << 20)
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(src.release) }) }
	t.Cleanup(release) // runs before the store closes

	_, m := newMessage("stalled", "")
	type result struct {
		r   storage.AppendResult
		err error
	}
	appended := make(chan result, 1)
	go func() {
		r, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, m)
		appended <- result{r, err}
	}()
	const bound = 60 * time.Second // deadlock guard, not a timing assertion
	select {
	case <-src.reached:
	case res := <-appended:
		t.Fatalf("Append(stalled source) returned %+v before reading half of its source", res)
	case <-time.After(bound):
		t.Fatalf("Append(stalled source) never read half of its source")
	}

	flagged := make(chan error, 1)
	go func() {
		_, _, err := e.s.StoreFlags(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(first.UID), storage.FlagsAdd, storage.Flags{Flagged: true}, 0)
		flagged <- err
	}()
	select {
	case err := <-flagged:
		if err != nil {
			t.Errorf("StoreFlags while another Append is stalled = %v; want nil", err)
		}
	case <-time.After(bound):
		t.Fatalf("StoreFlags did not complete while an Append in the same account was stalled reading its source; want it independent (no transaction or writer lock held while reading message bytes)")
	}
	other := make(chan error, 1)
	go func() {
		src, m := newMessage("meanwhile", uniqueBody(""))
		_, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, m)
		other <- err
	}()
	select {
	case err := <-other:
		if err != nil {
			t.Errorf("Append while another Append is stalled = %v; want nil", err)
		}
	case <-time.After(bound):
		t.Fatalf("a small Append did not complete while another Append was stalled reading its source")
	}
	select {
	case res := <-appended:
		t.Fatalf("stalled Append returned %+v before its source was released", res)
	default:
	}
	release()
	res := <-appended
	if res.err != nil {
		t.Fatalf("stalled Append after release = %v; want nil", res.err)
	}
	if _, b, err := e.readMessage(e.s, e.acct.ID, e.inbox.ID, res.r.UID); err != nil || !bytes.Equal(b, src.data) {
		t.Errorf("OpenMessage(stalled message) = %d bytes, %v; want the %d bytes sent", len(b), err, len(src.data))
	}
	e.checkClean(e.s)
}

// A hint raised by one store instance reaches a subscriber on another
// instance on the same database.
func testHintAcrossInstances(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	listener := openStore(t, e.open)
	hints := make(chan storage.Hint, 1024)
	cancel := listener.Subscribe(e.acct.ID, func(h storage.Hint) {
		select {
		case hints <- h:
		default: // hints may be dropped: they are coalesced anyway
		}
	})
	defer cancel()

	wait := func(what string, ok func(storage.Hint) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second) // correctness bound, not a timing assertion
		for {
			select {
			case h := <-hints:
				if h.Account != e.acct.ID {
					t.Errorf("Subscribe(%d) delivered a hint for account %d", e.acct.ID, h.Account)
				}
				if ok(h) {
					return
				}
			case <-deadline:
				t.Fatalf("no hint for %s reached a subscriber on another instance within 10s", what)
			}
		}
	}
	r := e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	wait("an Append", func(h storage.Hint) bool { return h.Mailbox == e.inbox.ID && h.ModSeq >= r.ModSeq })
	c := e.changes(listener, e.acct.ID, e.inbox.ID, 0)
	if u := uidsOf(c.Changed); len(u) != 1 || u[0] != r.UID {
		t.Errorf("listener ChangesSince(0) UIDs = %v; want [%d]", u, r.UID)
	}

	upd, _, err := e.s.StoreFlags(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, set(r.UID), storage.FlagsAdd, storage.Flags{Seen: true}, 0)
	if err != nil || len(upd) != 1 {
		t.Fatalf("StoreFlags = %v, %v; want one update", upd, err)
	}
	wait("a flag change", func(h storage.Hint) bool { return h.Mailbox == e.inbox.ID && h.ModSeq >= upd[0].ModSeq })

	e.create(e.acct.ID, "Hinted")
	wait("a mailbox creation", func(h storage.Hint) bool { return h.Mailbox == 0 })
}
