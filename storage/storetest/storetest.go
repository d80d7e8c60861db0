package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tidings/storage"
)

// Harness adapts a driver to the suite.
type Harness struct {
	// Name names the driver in failure messages.
	Name string
	// New makes a fresh, migrated, empty database for t (dropped when t
	// ends) and returns an opener. Each call of open returns a NEW store
	// instance on that database, so cases can test what one instance sees of
	// another's writes. open must not register Close: the suite closes every
	// store it opens.
	New func(t testing.TB) (open func(t testing.TB) storage.Store)
	// NewWithBlobs is New with message bytes kept in blobs instead of the
	// database (storage.Options.Blobs). Optional; cases that need it are
	// skipped without it.
	NewWithBlobs func(t testing.TB, blobs storage.BlobStore) (open func(t testing.TB) storage.Store)
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, h Harness) {
	cases := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"ConcurrentAppendUIDs", testConcurrentAppendUIDs},
		{"ChangesSinceWhileWriting", testChangesSinceWhileWriting},
		{"ExpungeReportedOnce", testExpungeReportedOnce},
		{"DeliverSharesBlob", testDeliverSharesBlob},
		{"BlobLifecycle/database", func(t *testing.T, h Harness) { testBlobLifecycle(t, h, false) }},
		{"BlobLifecycle/fsblob", func(t *testing.T, h Harness) { testBlobLifecycle(t, h, true) }},
		{"Quota", testQuota},
		{"RandomOperations", testRandomOperations},
		{"NonASCII", testNonASCII},
		{"HintAcrossInstances", testHintAcrossInstances},
		{"StalledWriterDoesNotBlock", testStalledWriter},
		{"TombstoneFloor", testTombstoneFloor},
		{"Flags", testFlags},
		{"KeywordLimits", testKeywordLimits},
		{"ClaimRecent", testClaimRecent},
		{"CopyMove", testCopyMove},
		{"MailboxNames", testMailboxNames},
		{"RenameMailbox", testRenameMailbox},
		{"Search", testSearch},
		{"SearchDepth", testSearchDepth},
		{"NilSetMeansAll", testNilSet},
	}
	cases = append(cases, queueCases...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, h) })
	}
}

// openStore opens a store instance and closes it when t ends.
func openStore(t testing.TB, open func(testing.TB) storage.Store) storage.Store {
	t.Helper()
	s := open(t)
	if s == nil {
		t.Fatalf("open() = nil store")
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v; want nil", err)
		}
	})
	return s
}

// env is a fresh database with one local domain and one account.
type env struct {
	t     testing.TB
	ctx   context.Context
	open  func(testing.TB) storage.Store
	s     storage.Store
	acct  storage.Account
	inbox storage.Mailbox
}

const testDomain = "example.org"

func newEnv(t testing.TB, open func(testing.TB) storage.Store) *env {
	t.Helper()
	// No deadline of its own: go test -timeout bounds a hung case and
	// benchmarks may legitimately run long.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, open: open}
	e.s = openStore(t, open)
	if _, err := e.s.CreateDomain(ctx, storage.Domain{Name: testDomain, Display: testDomain, Kind: storage.DomainLocal}); err != nil {
		t.Fatalf("CreateDomain(%q) = %v; want nil", testDomain, err)
	}
	e.acct = e.account("user@" + testDomain)
	e.inbox = e.mailbox(e.acct.ID, "INBOX")
	return e
}

// account creates an account and makes sure it has an INBOX (whether or not
// CreateAccount makes one by itself).
func (e *env) account(addr string) storage.Account {
	e.t.Helper()
	a, err := e.s.CreateAccount(e.ctx, storage.NewAccount{Address: addr, Kind: storage.AccountUser, DisplayName: addr})
	if err != nil {
		e.t.Fatalf("CreateAccount(%q) = %v; want nil", addr, err)
	}
	if _, err := e.s.Mailbox(e.ctx, a.ID, a.ID, "INBOX"); err != nil {
		e.create(a.ID, "INBOX")
	}
	return a
}

func (e *env) create(owner storage.AccountID, name string) storage.Mailbox {
	e.t.Helper()
	m, err := e.s.CreateMailbox(e.ctx, owner, owner, storage.NewMailbox{Name: name, Subscribed: true})
	if err != nil {
		e.t.Fatalf("CreateMailbox(%q) = %v; want nil", name, err)
	}
	return m
}

func (e *env) mailbox(owner storage.AccountID, name string) storage.Mailbox {
	e.t.Helper()
	m, err := e.s.Mailbox(e.ctx, owner, owner, name)
	if err != nil {
		e.t.Fatalf("Mailbox(%q) = %v; want nil", name, err)
	}
	return m
}

func (e *env) mailboxByID(s storage.Store, owner storage.AccountID, id storage.MailboxID) storage.Mailbox {
	e.t.Helper()
	m, err := s.MailboxByID(e.ctx, owner, owner, id)
	if err != nil {
		e.t.Fatalf("MailboxByID(%d) = %v; want nil", id, err)
	}
	return m
}

func (e *env) accountRow(id storage.AccountID) storage.Account {
	e.t.Helper()
	a, err := e.s.Account(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Account(%d) = %v; want nil", id, err)
	}
	return a
}

// append appends a fresh message (unique bytes) and returns its result.
func (e *env) append(s storage.Store, owner storage.AccountID, mb storage.MailboxID, f storage.Flags) storage.AppendResult {
	e.t.Helper()
	src, m := newMessage("test message", uniqueBody(""))
	m.Flags = f
	r, err := s.Append(e.ctx, owner, owner, mb, src, m)
	if err != nil {
		e.t.Fatalf("Append(mailbox %d) = %v; want nil", mb, err)
	}
	return r
}

func (e *env) messages(s storage.Store, owner storage.AccountID, mb storage.MailboxID) []storage.Message {
	e.t.Helper()
	ms, err := s.Messages(e.ctx, owner, owner, mb, nil, storage.MessageOptions{})
	if err != nil {
		e.t.Fatalf("Messages(mailbox %d) = %v; want nil", mb, err)
	}
	return ms
}

func (e *env) uids(s storage.Store, owner storage.AccountID, mb storage.MailboxID) []storage.UID {
	e.t.Helper()
	var u []storage.UID
	for _, m := range e.messages(s, owner, mb) {
		u = append(u, m.UID)
	}
	return u
}

func (e *env) changes(s storage.Store, owner storage.AccountID, mb storage.MailboxID, since storage.ModSeq) storage.Changes {
	e.t.Helper()
	c, err := s.ChangesSince(e.ctx, owner, owner, mb, since)
	if err != nil {
		e.t.Fatalf("ChangesSince(mailbox %d, %d) = %v; want nil", mb, since, err)
	}
	return c
}

// checkClean runs Check without repair and fails on any drift.
func (e *env) checkClean(s storage.Store) {
	e.t.Helper()
	r, err := s.Check(e.ctx, false)
	if err != nil {
		e.t.Fatalf("Check(false) = %v; want nil", err)
	}
	if !r.Clean() {
		e.t.Errorf("Check(false) = %+v; want a clean report", r)
	}
}

// bodySeq makes message bodies unique across one test process, so each
// append stores a new blob unless a case shares one on purpose.
var bodySeq atomic.Int64

func uniqueBody(text string) string {
	return fmt.Sprintf("%s\r\nmessage %d at %d\r\n", text, bodySeq.Add(1), time.Now().UnixNano())
}

var msgDate = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// newMessage builds the bytes of a simple text/plain message and the
// analysis record package message would produce for it.
func newMessage(subject, body string) (storage.BytesSource, storage.NewMessage) {
	return newMessageDated(subject, body, msgDate)
}

func newMessageDated(subject, body string, sent time.Time) (storage.BytesSource, storage.NewMessage) {
	hdr := "From: Sender <sender@example.net>\r\n" +
		"To: user@example.org\r\n" +
		"Subject: " + subject + "\r\n" +
		"Date: " + sent.Format(time.RFC1123Z) + "\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n"
	raw := []byte(hdr + body)
	return storage.BytesSource(raw), storage.NewMessage{Analysis: analysis(hdr, body, subject, sent)}
}

func analysis(hdr, body, subject string, sent time.Time) *storage.Analysis {
	size := int64(len(hdr) + len(body))
	return &storage.Analysis{
		Version:   storage.AnalysisVersion,
		HeaderLen: int64(len(hdr)),
		Size:      size,
		Envelope: storage.RawEnvelope{
			Date:    sent.Format(time.RFC1123Z),
			Subject: subject,
			From:    "Sender <sender@example.net>",
			To:      "user@example.org",
		},
		Root: storage.Part{
			Type: "text", Subtype: "plain",
			Params:    map[string]string{"charset": "utf-8"},
			BodyStart: int64(len(hdr)), BodyEnd: size,
			Lines: int64(strings.Count(body, "\n")),
		},
		BaseSubject: storage.Fold(subject),
		SentDate:    sent,
		Preview:     preview(body),
		SearchText:  storage.Fold(subject + "\n" + body),
	}
}

func preview(s string) string {
	if len(s) > 2048 {
		s = s[:2048]
	}
	r := []rune(strings.TrimSpace(s))
	if len(r) > 256 {
		r = r[:256]
	}
	return string(r)
}

// cloneMessage gives each use its own Analysis: the store may clear
// SearchText on the record it is handed.
func cloneMessage(m storage.NewMessage) storage.NewMessage {
	a := *m.Analysis
	m.Analysis = &a
	return m
}

func set(uids ...storage.UID) storage.UIDSet {
	s := make(storage.UIDSet, 0, len(uids))
	for _, u := range uids {
		s = append(s, storage.UIDRange{Start: u, Stop: u})
	}
	return s
}

func uidsOf(fs []storage.MessageFlags) []storage.UID {
	var u []storage.UID
	for _, f := range fs {
		u = append(u, f.UID)
	}
	return u
}

func sorted(u []storage.UID) []storage.UID {
	u = slices.Clone(u)
	slices.Sort(u)
	return u
}
