package storetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"tidings/storage"
)

// queueCases are the outbound queue, keys and counter cases.
var queueCases = []struct {
	name string
	fn   func(t *testing.T, h Harness)
}{
	{"Queue/SubmitOverQuotaBecomesLocalItem", testSubmitOverQuota},
	{"Queue/TwoClaimersNeverShare", testTwoClaimers},
	{"Queue/ExpiredLeaseClaimable", testExpiredLease},
	{"Queue/RecordAndBlobLifecycle", testQueueBlobLifecycle},
	{"Queue/ListRetryRemove", testQueueListRetryRemove},
	{"Keys/SecretFirstWriterWins", testSecretFirstWriter},
	{"Keys/DKIMKeys", testDKIMKeys},
	{"Counter/Window", testCountEvent},
}

// remoteMessage is a QueueRemote message for one or more addresses.
func remoteMessage(dest string, addrs ...string) storage.QueueMessage {
	m := storage.QueueMessage{
		Kind: storage.QueueRemote, From: "user@example.org", Destination: dest,
		ENVID: "env-1", RET: "HDRS", Prefix: []byte("Received: from test\r\n"),
	}
	for _, a := range addrs {
		m.Recipients = append(m.Recipients, storage.QueueRecipient{Address: a, ORCPT: "rfc822;" + a, Notify: "FAILURE,DELAY"})
	}
	return m
}

func (e *env) enqueue(s storage.Store, msgs ...storage.QueueMessage) (storage.BytesSource, []string) {
	e.t.Helper()
	src, _ := newMessage("queued", uniqueBody("outbound"))
	ids, err := s.Enqueue(e.ctx, src, msgs)
	if err != nil || len(ids) != len(msgs) {
		e.t.Fatalf("Enqueue(%d messages) = %v, %v; want %d ids", len(msgs), ids, err, len(msgs))
	}
	return src, ids
}

func (e *env) queueGet(s storage.Store, id string) storage.QueueMessage {
	e.t.Helper()
	m, err := s.QueueGet(e.ctx, id)
	if err != nil {
		e.t.Fatalf("QueueGet(%q) = %v; want nil", id, err)
	}
	return m
}

// A Submit with one over-quota target stores the others, turns that one
// into a QueueLocal recipient and queues the remote message, in one
// transaction; a target failing for a reason that retrying cannot fix
// stays an error.
func testSubmitOverQuota(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	full := e.account("full@" + testDomain)
	e.append(e.s, full.ID, e.mailbox(full.ID, "INBOX").ID, storage.Flags{})
	if err := e.s.SetQuota(e.ctx, full.ID, 0, 1); err != nil {
		t.Fatalf("SetQuota = %v", err)
	}
	src, m := newMessage("submit", uniqueBody("to a local, a full and a remote recipient"))
	prefix := []byte("Delivered-To: full@example.org\r\n")
	fm := cloneMessage(m)
	fm.Prefix = prefix
	bad := storage.NewMessage{} // no analysis: ErrInvalid, not retryable
	sub := storage.Submission{
		Targets: []storage.DeliveryTarget{
			{Owner: e.acct.ID, Message: cloneMessage(m)},
			{Owner: full.ID, Message: fm},
			{Owner: e.acct.ID, Message: bad},
		},
		TargetAddresses: []string{"user@example.org", "full@example.org", "user@example.org"},
		LocalTemplate: storage.QueueMessage{From: "sender@example.net", ENVID: "abc",
			Recipients: []storage.QueueRecipient{{Address: "Full@example.org", Notify: "FAILURE", ORCPT: "rfc822;full@example.org"}}},
		Queue: []storage.QueueMessage{remoteMessage("example.net", "far@example.net")},
	}
	res, err := e.s.Submit(e.ctx, src, sub)
	if err != nil {
		t.Fatalf("Submit = %v; want nil", err)
	}
	if res.Results[0].Err != nil || res.Queued[0] || res.Results[0].Result.UID == 0 {
		t.Errorf("Submit target 0 = %+v, queued %v; want delivered", res.Results[0], res.Queued[0])
	}
	if res.Results[1].Err != nil || !res.Queued[1] {
		t.Errorf("Submit target 1 (over quota) = %+v, queued %v; want nil error, queued", res.Results[1], res.Queued[1])
	}
	if !errors.Is(res.Results[2].Err, storage.ErrInvalid) || res.Queued[2] {
		t.Errorf("Submit target 2 (no analysis) = %v, queued %v; want %v, not queued", res.Results[2].Err, res.Queued[2], storage.ErrInvalid)
	}
	if len(res.QueueIDs) != 2 {
		t.Fatalf("Submit QueueIDs = %v; want 2 (remote, then local)", res.QueueIDs)
	}
	if n := len(e.messages(e.s, e.acct.ID, e.inbox.ID)); n != 1 {
		t.Errorf("INBOX of user has %d messages; want 1", n)
	}
	if n := len(e.messages(e.s, full.ID, e.mailbox(full.ID, "INBOX").ID)); n != 1 {
		t.Errorf("INBOX of full has %d messages; want 1 (the old one)", n)
	}
	remote := e.queueGet(e.s, res.QueueIDs[0])
	if remote.Kind != storage.QueueRemote || remote.From != "user@example.org" || remote.RET != "HDRS" || remote.ENVID != "env-1" ||
		len(remote.Recipients) != 1 || remote.Recipients[0].ORCPT != "rfc822;far@example.net" || remote.BlobHash != src.Hash() {
		t.Errorf("QueueGet(remote) = %+v; want the remote message as queued", remote)
	}
	local := e.queueGet(e.s, res.QueueIDs[1])
	if local.Kind != storage.QueueLocal || local.From != "sender@example.net" || local.ENVID != "abc" || len(local.Recipients) != 1 {
		t.Fatalf("QueueGet(local) = %+v; want one QueueLocal recipient from sender@example.net", local)
	}
	r := local.Recipients[0]
	if r.Owner != full.ID || r.Mailbox != 0 || !bytes.Equal(r.Prefix, prefix) || r.Address != "full@example.org" ||
		r.Status != storage.RecipientPending || r.Notify != "FAILURE" || r.ORCPT != "rfc822;full@example.org" || r.LastReply == "" {
		t.Errorf("local recipient = %+v; want owner %d, its prefix, address, pending, template's NOTIFY/ORCPT and the error as reply", r, full.ID)
	}
	if local.Expires.Sub(local.Created) < 24*time.Hour {
		t.Errorf("local Expires-Created = %v; want the default give-up time", local.Expires.Sub(local.Created))
	}
	e.checkClean(e.s)
}

// Two claimers on two store instances, claiming concurrently, never get
// the same message, and together get them all.
func testTwoClaimers(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	const n = 30
	var msgs []storage.QueueMessage
	for range n {
		msgs = append(msgs, remoteMessage("example.net", "far@example.net"))
	}
	_, ids := e.enqueue(e.s, msgs...)
	stores := []storage.Store{e.s, openStore(t, e.open)}
	got := make([][]string, 2)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			holder := []string{"node-a", "node-b"}[w]
			for {
				ms, err := stores[w].Claim(e.ctx, holder, time.Now(), 3, time.Hour)
				if err != nil {
					t.Errorf("Claim(%s) = %v; want nil", holder, err)
					return
				}
				if len(ms) == 0 {
					return
				}
				for _, m := range ms {
					if len(m.Recipients) != 1 {
						t.Errorf("Claim(%s) message %s has %d recipients; want 1", holder, m.ID, len(m.Recipients))
					}
					got[w] = append(got[w], m.ID)
				}
			}
		})
	}
	wg.Wait()
	all := append(slices.Clone(got[0]), got[1]...)
	slices.Sort(all)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Errorf("claimed %d ids (a %d, b %d) = %v; want each of the %d enqueued exactly once", len(all), len(got[0]), len(got[1]), all, n)
	}
}

// A lease that has expired is claimable by another holder; the first
// holder's Record then fails with ErrNotFound.
func testExpiredLease(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	_, ids := e.enqueue(e.s, remoteMessage("example.net", "far@example.net"))
	now := time.Now()
	a, err := e.s.Claim(e.ctx, "a", now, 10, time.Minute)
	if err != nil || len(a) != 1 || a[0].ID != ids[0] {
		t.Fatalf("Claim(a) = %v, %v; want the message", a, err)
	}
	if b, err := e.s.Claim(e.ctx, "b", now.Add(30*time.Second), 10, time.Minute); err != nil || len(b) != 0 {
		t.Errorf("Claim(b) within the lease = %v, %v; want none", b, err)
	}
	b, err := e.s.Claim(e.ctx, "b", now.Add(2*time.Minute), 10, time.Minute)
	if err != nil || len(b) != 1 || b[0].ID != ids[0] {
		t.Fatalf("Claim(b) after the lease expired = %v, %v; want the message", b, err)
	}
	out := []storage.RecipientOutcome{{ID: a[0].Recipients[0].ID, Status: storage.RecipientDelivered, Reply: "250 ok"}}
	if err := e.s.Record(e.ctx, ids[0], "a", out, time.Time{}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Record(lost lease) = %v; want %v", err, storage.ErrNotFound)
	}
	if err := e.s.Record(e.ctx, ids[0], "b", out, time.Time{}); err != nil {
		t.Errorf("Record(b) = %v; want nil", err)
	}
	if _, err := e.s.QueueGet(e.ctx, ids[0]); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("QueueGet(delivered) = %v; want %v", err, storage.ErrNotFound)
	}
	if err := e.s.Record(e.ctx, ids[0], "b", nil, time.Time{}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Record(removed message) = %v; want %v", err, storage.ErrNotFound)
	}
}

// A queued message keeps its blob: the sweeper leaves it while queued and
// takes it once Record removed the message; Check stays clean throughout.
// A partial outcome keeps the message with the rest pending at the new
// time.
func testQueueBlobLifecycle(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	src, ids := e.enqueue(e.s, remoteMessage("example.net", "one@example.net", "two@example.net"))
	id := ids[0]
	time.Sleep(10 * time.Millisecond)
	if n, err := e.s.SweepBlobs(e.ctx, 0); err != nil || n != 0 {
		t.Errorf("SweepBlobs(0) while queued = %d, %v; want 0, nil", n, err)
	}
	e.checkClean(e.s)
	r, err := e.s.OpenQueueBlob(e.ctx, id)
	if err != nil {
		t.Fatalf("OpenQueueBlob = %v; want nil", err)
	}
	b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	r.Close()
	if err != nil || !bytes.Equal(b, src) {
		t.Errorf("OpenQueueBlob bytes = %d, %v; want the %d queued bytes", len(b), err, len(src))
	}

	now := time.Now()
	ms, err := e.s.Claim(e.ctx, "h", now, 10, time.Minute)
	if err != nil || len(ms) != 1 || len(ms[0].Recipients) != 2 {
		t.Fatalf("Claim = %+v, %v; want one message with 2 recipients", ms, err)
	}
	rs := ms[0].Recipients
	next := now.Add(time.Hour)
	err = e.s.Record(e.ctx, id, "h", []storage.RecipientOutcome{
		{ID: rs[0].ID, Status: storage.RecipientDelivered, Reply: "250 2.0.0 ok"},
		{ID: rs[1].ID, Status: storage.RecipientPending, Reply: "451 4.3.0 later", DelayWarned: true},
	}, next)
	if err != nil {
		t.Fatalf("Record(partial) = %v; want nil", err)
	}
	m := e.queueGet(e.s, id)
	if len(m.Recipients) != 2 || m.Recipients[0].Status != storage.RecipientDelivered || m.Recipients[1].Status != storage.RecipientPending ||
		m.Recipients[1].Attempts != 1 || m.Recipients[1].LastReply != "451 4.3.0 later" || !m.Recipients[1].DelayWarned || m.Recipients[1].LastAttempt.IsZero() {
		t.Errorf("QueueGet after partial Record = %+v; want one delivered, one pending with attempt 1 and its reply", m.Recipients)
	}
	if m.NextAttempt.UnixMicro() != next.UnixMicro() {
		t.Errorf("NextAttempt = %v; want %v", m.NextAttempt, next)
	}
	if again, err := e.s.Claim(e.ctx, "h2", now, 10, time.Minute); err != nil || len(again) != 0 {
		t.Errorf("Claim before NextAttempt = %v, %v; want none", again, err)
	}
	ms, err = e.s.Claim(e.ctx, "h2", next, 10, time.Minute)
	if err != nil || len(ms) != 1 || len(ms[0].Recipients) != 1 || ms[0].Recipients[0].ID != rs[1].ID {
		t.Fatalf("Claim at NextAttempt = %+v, %v; want the message with only its pending recipient", ms, err)
	}
	// A failure whose DSN is not yet queued keeps the message.
	if err := e.s.Record(e.ctx, id, "h2", []storage.RecipientOutcome{{ID: rs[1].ID, Status: storage.RecipientFailed, Reply: "550 no"}}, next); err != nil {
		t.Fatalf("Record(failed, no DSN) = %v; want nil", err)
	}
	ms, err = e.s.Claim(e.ctx, "h3", next, 10, time.Minute)
	if err != nil || len(ms) != 1 || len(ms[0].Recipients) != 1 || ms[0].Recipients[0].Status != storage.RecipientFailed {
		t.Fatalf("Claim with a DSN due = %+v, %v; want the failed recipient", ms, err)
	}
	if err := e.s.Record(e.ctx, id, "h3", []storage.RecipientOutcome{{ID: rs[1].ID, Status: storage.RecipientFailed, Reply: "550 no", DSNSent: true}}, time.Time{}); err != nil {
		t.Fatalf("Record(failed, DSN sent) = %v; want nil", err)
	}
	if _, err := e.s.QueueGet(e.ctx, id); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("QueueGet(finished) = %v; want %v", err, storage.ErrNotFound)
	}
	e.checkClean(e.s)
	time.Sleep(20 * time.Millisecond) // let the zero count age past a grace of 0
	if n, err := e.s.SweepBlobs(e.ctx, 0); err != nil || n != 1 {
		t.Errorf("SweepBlobs(0) after the message finished = %d, %v; want 1, nil", n, err)
	}
	e.checkClean(e.s)
}

func testQueueListRetryRemove(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	later := remoteMessage("example.com", "x@example.com")
	later.NextAttempt = time.Now().Add(time.Hour)
	_, ids := e.enqueue(e.s, remoteMessage("example.net", "far@example.net"), later)
	local := storage.QueueLocal
	remote := storage.QueueRemote
	tests := []struct {
		name string
		f    storage.QueueFilter
		want int
	}{
		{"all", storage.QueueFilter{}, 2},
		{"remote", storage.QueueFilter{Kind: &remote}, 2},
		{"local", storage.QueueFilter{Kind: &local}, 0},
		{"destination", storage.QueueFilter{Destination: "example.com"}, 1},
		{"limit", storage.QueueFilter{Limit: 1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := e.s.QueueList(e.ctx, tt.f)
			if err != nil || len(ms) != tt.want {
				t.Errorf("QueueList(%+v) = %d messages, %v; want %d", tt.f, len(ms), err, tt.want)
			}
			for _, m := range ms {
				if len(m.Recipients) != 1 {
					t.Errorf("QueueList(%+v) message %s has %d recipients; want 1", tt.f, m.ID, len(m.Recipients))
				}
			}
		})
	}
	ms, err := e.s.Claim(e.ctx, "h", time.Now(), 10, time.Minute)
	if err != nil || len(ms) != 1 || ms[0].ID != ids[0] {
		t.Fatalf("Claim = %v, %v; want only the due message", ms, err)
	}
	if err := e.s.QueueRetry(e.ctx, ids[1]); err != nil {
		t.Fatalf("QueueRetry = %v; want nil", err)
	}
	if ms, err := e.s.Claim(e.ctx, "h", time.Now().Add(time.Second), 10, time.Minute); err != nil || len(ms) != 1 || ms[0].ID != ids[1] {
		t.Errorf("Claim after QueueRetry = %v, %v; want the retried message", ms, err)
	}
	for _, id := range ids {
		if err := e.s.QueueRemove(e.ctx, id); err != nil {
			t.Errorf("QueueRemove(%q) = %v; want nil", id, err)
		}
	}
	for _, f := range []func(string) error{
		func(id string) error { return e.s.QueueRemove(e.ctx, id) },
		func(id string) error { return e.s.QueueRetry(e.ctx, id) },
		func(id string) error { _, err := e.s.QueueGet(e.ctx, id); return err },
		func(id string) error { _, err := e.s.OpenQueueBlob(e.ctx, id); return err },
	} {
		if err := f(ids[0]); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("operation on removed message = %v; want %v", err, storage.ErrNotFound)
		}
	}
	e.checkClean(e.s)
	time.Sleep(20 * time.Millisecond)
	if n, err := e.s.SweepBlobs(e.ctx, 0); err != nil || n != 1 {
		t.Errorf("SweepBlobs(0) after QueueRemove = %d, %v; want 1, nil", n, err)
	}
}

// Every node gets the same secret, whichever generated it first.
func testSecretFirstWriter(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	stores := []storage.Store{e.s, openStore(t, e.open)}
	got := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			v, err := stores[i%2].Secret(e.ctx, "srs", func() ([]byte, error) {
				b := make([]byte, 32)
				rand.Read(b)
				return b, nil
			})
			if err != nil {
				t.Errorf("Secret = %v; want nil", err)
			}
			got[i] = v
		})
	}
	wg.Wait()
	for i := range got {
		if len(got[i]) != 32 || !bytes.Equal(got[i], got[0]) {
			t.Errorf("Secret call %d = %x; want the same 32 bytes as call 0 (%x)", i, got[i], got[0])
		}
	}
	v, err := stores[1].Secret(e.ctx, "srs", func() ([]byte, error) { return nil, errors.New("gen must not run") })
	if err != nil || !bytes.Equal(v, got[0]) {
		t.Errorf("Secret(existing) = %x, %v; want the stored value without generating", v, err)
	}
	other, err := stores[0].Secret(e.ctx, "other", func() ([]byte, error) { return []byte("x"), nil })
	if err != nil || string(other) != "x" {
		t.Errorf("Secret(other) = %q, %v; want %q", other, err, "x")
	}
}

func testDKIMKeys(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	for _, k := range []storage.DKIMKey{
		{Domain: "Bücher.example", Selector: "s1", Algorithm: "ed25519-sha256", PrivatePEM: []byte("pem1")},
		{Domain: "xn--bcher-kva.example", Selector: "s2", Algorithm: "rsa-sha256", PrivatePEM: []byte("pem2")},
		{Domain: "bücher.example", Selector: "s1", Algorithm: "ed25519-sha256", PrivatePEM: []byte("pem1b")},
	} {
		if err := e.s.PutDKIMKey(e.ctx, k); err != nil {
			t.Fatalf("PutDKIMKey(%s/%s) = %v; want nil", k.Domain, k.Selector, err)
		}
	}
	ks, err := e.s.DKIMKeys(e.ctx, "BÜCHER.example")
	if err != nil || len(ks) != 2 {
		t.Fatalf("DKIMKeys = %+v, %v; want 2 keys", ks, err)
	}
	if ks[0].Selector != "s1" || string(ks[0].PrivatePEM) != "pem1b" || ks[0].Domain != "xn--bcher-kva.example" || ks[0].Created.IsZero() {
		t.Errorf("DKIMKeys[0] = %+v; want s1 replaced by pem1b under the A-label", ks[0])
	}
	if ks[1].Selector != "s2" || ks[1].Algorithm != "rsa-sha256" {
		t.Errorf("DKIMKeys[1] = %+v; want s2 rsa-sha256", ks[1])
	}
	if ks, err := e.s.DKIMKeys(e.ctx, "none.example"); err != nil || len(ks) != 0 {
		t.Errorf("DKIMKeys(none.example) = %v, %v; want none", ks, err)
	}
}

func testCountEvent(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		key  string
		n    int
		at   time.Time
		want int
	}{
		{"acct:1", 1, t0, 1},
		{"acct:1", 2, t0.Add(30 * time.Minute), 3},
		{"acct:2", 5, t0.Add(30 * time.Minute), 5},
		{"acct:1", 1, t0.Add(90 * time.Minute), 3}, // the t0 event left the hour
		{"acct:1", 0, t0.Add(3 * time.Hour), 0},
	}
	for _, tt := range tests {
		got, err := e.s.CountEvent(e.ctx, tt.key, tt.n, tt.at, tt.at.Add(-time.Hour))
		if err != nil || got != tt.want {
			t.Errorf("CountEvent(%q, %d, %v) = %d, %v; want %d", tt.key, tt.n, tt.at, got, err, tt.want)
		}
	}
}
