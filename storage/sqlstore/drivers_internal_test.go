package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"tidings/storage"
	"tidings/storage/postgres"
	"tidings/storage/postgres/pgtest"
	"tidings/storage/sqlite"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type driver struct {
	name string
	// open migrates a fresh database and returns an opener of instances on it.
	fresh func(t *testing.T) func(t *testing.T, opts storage.Options) storage.Store
}

var drivers = []driver{
	{"sqlite", func(t *testing.T) func(*testing.T, storage.Options) storage.Store {
		path := filepath.Join(t.TempDir(), "db", "tidings.db")
		if err := sqlite.Migrate(context.Background(), path, nil); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		return func(t *testing.T, opts storage.Options) storage.Store {
			s, err := sqlite.Open(context.Background(), path, opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	}},
	{"postgres", func(t *testing.T) func(*testing.T, storage.Options) storage.Store {
		url := pgtest.NewDatabase(t)
		if err := postgres.Migrate(context.Background(), url, nil); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		return func(t *testing.T, opts storage.Options) storage.Store {
			s, err := postgres.Open(context.Background(), url, opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	}},
}

func forDrivers(t *testing.T, fn func(t *testing.T, open func(*testing.T, storage.Options) storage.Store)) {
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			fn(t, d.fresh(t))
		})
	}
}

func msg(body string) (storage.BytesSource, storage.NewMessage) {
	raw := "Subject: test\r\n\r\n" + body
	return storage.BytesSource(raw), storage.NewMessage{Analysis: &storage.Analysis{
		Version: storage.AnalysisVersion, HeaderLen: 17, Size: int64(len(raw)), SearchText: storage.Fold(raw),
	}}
}

func setup(t *testing.T, s storage.Store, addr string) storage.Account {
	t.Helper()
	ctx := context.Background()
	if _, err := s.CreateDomain(ctx, storage.Domain{Name: "bücher.example"}); err != nil && !errors.Is(err, storage.ErrExists) {
		t.Fatalf("CreateDomain: %v", err)
	}
	a, err := s.CreateAccount(ctx, storage.NewAccount{Address: addr, DefaultMailboxes: []storage.NewMailbox{
		{Name: "Sent", SpecialUse: `\Sent`, Subscribed: true}, {Name: "Trash", SpecialUse: `\Trash`},
	}})
	if err != nil {
		t.Fatalf("CreateAccount(%q): %v", addr, err)
	}
	return a
}

func TestOpenUnmigrated(t *testing.T) {
	ctx := context.Background()
	t.Run("sqlite", func(t *testing.T) {
		_, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "x.db"), storage.Options{})
		if !errors.Is(err, storage.ErrSchema) {
			t.Fatalf("Open(unmigrated) = %v; want ErrSchema", err)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		_, err := postgres.Open(ctx, pgtest.NewDatabase(t), storage.Options{})
		if !errors.Is(err, storage.ErrSchema) {
			t.Fatalf("Open(unmigrated) = %v; want ErrSchema", err)
		}
	})
}

func TestDirectory(t *testing.T) {
	forDrivers(t, func(t *testing.T, open func(*testing.T, storage.Options) storage.Store) {
		ctx := context.Background()
		s := open(t, storage.Options{})
		d, err := s.Durability(ctx)
		if err != nil || !d.Safe {
			t.Fatalf("Durability() = %+v, %v; want safe", d, err)
		}
		a := setup(t, s, "JÖRG@bücher.example")
		if a.Key != "jörg@xn--bcher-kva.example" {
			t.Errorf("Key = %q", a.Key)
		}
		for _, addr := range []string{"jörg@xn--bcher-kva.example", "Jörg@BÜCHER.example"} {
			got, err := s.AccountByAddress(ctx, addr)
			if err != nil || got.ID != a.ID {
				t.Errorf("AccountByAddress(%q) = %v, %v; want %d", addr, got.ID, err, a.ID)
			}
		}
		_, err = s.CreateAccount(ctx, storage.NewAccount{Address: "x@nowhere.test"})
		if !errors.Is(err, storage.ErrNotFound) || !contains(err.Error(), `"nowhere.test" is not served here`) {
			t.Errorf("CreateAccount(unknown domain) = %v", err)
		}
		if _, err := s.CreateAccount(ctx, storage.NewAccount{Address: "jörg@bücher.example"}); !errors.Is(err, storage.ErrExists) {
			t.Errorf("CreateAccount(duplicate) = %v; want ErrExists", err)
		}
		if err := s.CreateAlias(ctx, storage.Alias{Address: "Post@bücher.example", Targets: []string{"jörg@bücher.example"}, SendAs: []storage.AccountID{a.ID}}); err != nil {
			t.Fatalf("CreateAlias: %v", err)
		}
		r, err := s.Lookup(ctx, "post@BÜCHER.EXAMPLE")
		if err != nil || r.Kind != storage.RecipientAlias || r.Alias.SendAs[0] != a.ID {
			t.Errorf("Lookup(alias) = %+v, %v", r, err)
		}
		if _, err := s.Lookup(ctx, "nobody@bücher.example"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Lookup(unknown) = %v; want ErrNotFound", err)
		}
		if err := s.DeleteDomain(ctx, "bücher.example"); !errors.Is(err, storage.ErrNotEmpty) {
			t.Errorf("DeleteDomain(with accounts) = %v; want ErrNotEmpty", err)
		}
		gen, err := s.SetPassword(ctx, a.ID, "hash")
		if err != nil || gen != 2 {
			t.Errorf("SetPassword = %d, %v; want 2", gen, err)
		}
		now := time.Now()
		for i := 1; i <= 3; i++ {
			n, err := s.LoginFailure(ctx, "ip:1.2.3.4", now, now.Add(-time.Minute))
			if err != nil || n != i {
				t.Errorf("LoginFailure #%d = %d, %v", i, n, err)
			}
		}
		mbs, err := s.Mailboxes(ctx, a.ID, a.ID)
		if err != nil || len(mbs) != 3 || mbs[0].Name != "INBOX" {
			t.Fatalf("Mailboxes = %+v, %v", mbs, err)
		}
	})
}

func contains(s, sub string) bool {
	return len(s) >= len(sub) && (s == sub || len(sub) == 0 || indexOf(s, sub) >= 0)
}
func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestMessages(t *testing.T) {
	forDrivers(t, func(t *testing.T, open func(*testing.T, storage.Options) storage.Store) {
		ctx := context.Background()
		s := open(t, storage.Options{})
		a := setup(t, s, "alice@bücher.example")
		inbox, err := s.Mailbox(ctx, a.ID, a.ID, "inbox")
		if err != nil {
			t.Fatalf("Mailbox(inbox): %v", err)
		}
		var uids []storage.UID
		for i, body := range []string{"hello über world", "second", "third ÜBER"} {
			src, m := msg(body)
			m.Prefix = []byte("Delivered-To: alice@bücher.example\r\n")
			if i == 1 {
				m.Flags = storage.Flags{Seen: true, Keywords: []string{"$Label1"}}
			}
			r, err := s.Append(ctx, a.ID, a.ID, inbox.ID, src, m)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if r.UID != storage.UID(i+1) {
				t.Errorf("Append #%d UID = %d", i, r.UID)
			}
			uids = append(uids, r.UID)
		}
		mb, list, err := s.Snapshot(ctx, a.ID, a.ID, inbox.ID)
		if err != nil || mb.Messages != 3 || mb.Unseen != 2 || !slices.Equal(list, uids) || mb.UIDNext != 4 {
			t.Fatalf("Snapshot = %+v %v, %v", mb, list, err)
		}
		ms, err := s.Messages(ctx, a.ID, a.ID, inbox.ID, storage.UIDSet{{Start: 2, Stop: 2}}, storage.MessageOptions{Prefix: true, Analysis: true})
		if err != nil || len(ms) != 1 || ms[0].Flags.Keywords[0] != "$Label1" || ms[0].Size != int64(len(ms[0].Prefix))+ms[0].BlobSize {
			t.Fatalf("Messages = %+v, %v", ms, err)
		}
		m, r, err := s.OpenMessage(ctx, a.ID, a.ID, inbox.ID, 1)
		if err != nil {
			t.Fatalf("OpenMessage: %v", err)
		}
		buf := make([]byte, r.Size())
		if _, err := r.ReadAt(buf, 0); err != nil || string(buf) != "Subject: test\r\n\r\nhello über world" {
			t.Errorf("ReadAt = %q, %v", buf, err)
		}
		r.Close()
		_ = m

		before := mb.HighestModSeq
		upd, failed, err := s.StoreFlags(ctx, a.ID, a.ID, inbox.ID, storage.UIDSet{{Start: 1, Stop: 3}}, storage.FlagsAdd, storage.Flags{Deleted: true, Keywords: []string{"new"}}, 0)
		if err != nil || len(upd) != 3 || len(failed) != 0 || upd[0].ModSeq <= before {
			t.Fatalf("StoreFlags = %+v %v, %v", upd, failed, err)
		}
		_, failed, err = s.StoreFlags(ctx, a.ID, a.ID, inbox.ID, nil, storage.FlagsRemove, storage.Flags{Deleted: true}, before)
		if err != nil || len(failed) != 3 {
			t.Fatalf("StoreFlags(unchangedSince) failed = %v, %v; want 3", failed, err)
		}
		if _, _, err := s.StoreFlags(ctx, a.ID, a.ID, inbox.ID, storage.UIDSet{{Start: 1, Stop: 1}}, storage.FlagsRemove, storage.Flags{Deleted: true}, 0); err != nil {
			t.Fatal(err)
		}
		exp, err := s.Expunge(ctx, a.ID, a.ID, inbox.ID, nil)
		if err != nil || !slices.Equal(exp, []storage.UID{2, 3}) {
			t.Fatalf("Expunge = %v, %v", exp, err)
		}
		ch, err := s.ChangesSince(ctx, a.ID, a.ID, inbox.ID, before)
		if err != nil || !slices.Equal(ch.Expunged, []storage.UID{2, 3}) || len(ch.Changed) != 1 || ch.Changed[0].UID != 1 {
			t.Fatalf("ChangesSince = %+v, %v", ch, err)
		}
		if err := s.WaitIndexed(ctx); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			pat  string
			want []storage.UID
		}{{"ÜBER", []storage.UID{1}}, {"über", []storage.UID{1}}, {"ü", []storage.UID{1}}, {"nothing", nil}} {
			got, err := s.Search(ctx, a.ID, a.ID, inbox.ID, storage.SearchKey{Op: storage.SearchText, Value: tt.pat})
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("Search(%q) = %v, %v; want %v", tt.pat, got, err, tt.want)
			}
		}
		trash, _ := s.Mailbox(ctx, a.ID, a.ID, "Trash")
		cr, err := s.Move(ctx, a.ID, a.ID, inbox.ID, nil, a.ID, trash.ID)
		if err != nil || len(cr.Pairs) != 1 {
			t.Fatalf("Move = %+v, %v", cr, err)
		}
		got, err := s.Search(ctx, a.ID, a.ID, trash.ID, storage.SearchKey{Op: storage.SearchText, Value: "Über"})
		if err != nil || len(got) != 1 {
			t.Errorf("Search(after move) = %v, %v", got, err)
		}
		rep, err := s.Check(ctx, false)
		if err != nil || !rep.Clean() {
			t.Errorf("Check = %+v, %v", rep, err)
		}
		if err := s.DeleteMailbox(ctx, a.ID, a.ID, "Trash"); err != nil {
			t.Fatal(err)
		}
		acct, _ := s.Account(ctx, a.ID)
		if acct.UsedMessages != 0 || acct.UsedBytes != 0 {
			t.Errorf("usage after delete = %d/%d", acct.UsedMessages, acct.UsedBytes)
		}
		time.Sleep(2 * time.Millisecond)
		n, err := s.SweepBlobs(ctx, 0)
		if err != nil || n != 3 {
			t.Errorf("SweepBlobs = %d, %v; want 3", n, err)
		}
	})
}

func TestQuotaAndHints(t *testing.T) {
	forDrivers(t, func(t *testing.T, open func(*testing.T, storage.Options) storage.Store) {
		ctx := context.Background()
		s1 := open(t, storage.Options{CatchupInterval: time.Hour})
		s2 := open(t, storage.Options{CatchupInterval: time.Hour})
		a := setup(t, s1, "bob@bücher.example")
		if err := s1.SetQuota(ctx, a.ID, 100, 0); err != nil {
			t.Fatal(err)
		}
		inbox, _ := s1.Mailbox(ctx, a.ID, a.ID, "INBOX")
		got := make(chan storage.Hint, 16)
		cancel := s2.Subscribe(a.ID, func(h storage.Hint) { got <- h })
		defer cancel()
		src, m := msg("small")
		r, err := s1.Append(ctx, a.ID, a.ID, inbox.ID, src, m)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		deadline := time.After(20 * time.Second)
		for seen := false; !seen; {
			select {
			case h := <-got:
				seen = h.Mailbox == inbox.ID && h.ModSeq >= r.ModSeq
			case <-deadline:
				t.Fatalf("no hint on the second instance")
			}
		}
		src, m = msg(fmt.Sprintf("%0200d", 0))
		if _, err := s1.Append(ctx, a.ID, a.ID, inbox.ID, src, m); !errors.Is(err, storage.ErrOverQuota) {
			t.Fatalf("Append(over quota) = %v; want ErrOverQuota", err)
		}
		mb, _ := s1.MailboxByID(ctx, a.ID, a.ID, inbox.ID)
		acct, _ := s1.Account(ctx, a.ID)
		if mb.Messages != 1 || acct.UsedMessages != 1 {
			t.Errorf("after refusal: mailbox %d messages, usage %d", mb.Messages, acct.UsedMessages)
		}
		rep, err := s1.Check(ctx, false)
		if err != nil || !rep.Clean() {
			t.Errorf("Check = %+v, %v", rep, err)
		}
	})
}

func TestRenameAndHeaders(t *testing.T) {
	forDrivers(t, func(t *testing.T, open func(*testing.T, storage.Options) storage.Store) {
		ctx := context.Background()
		s := open(t, storage.Options{})
		a := setup(t, s, "carol@bücher.example")
		inbox, _ := s.Mailbox(ctx, a.ID, a.ID, "INBOX")
		src := storage.BytesSource("Subject: =?ISO-8859-1?Q?Gr=FC=DFe?=\r\nX-Tag: Eins\r\n\r\nbody")
		m := storage.NewMessage{Analysis: &storage.Analysis{Version: storage.AnalysisVersion, HeaderLen: 52, Size: src.Size()}}
		if _, err := s.Append(ctx, a.ID, a.ID, inbox.ID, src, m); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name, value string
			want        int
		}{{"subject", "GRÜSSE", 0}, {"Subject", "grüße", 1}, {"x-tag", "", 1}, {"x-missing", "", 0}, {"X-TAG", "eins", 1}} {
			got, err := s.Search(ctx, a.ID, a.ID, inbox.ID, storage.SearchKey{Op: storage.SearchHeader, Name: tt.name, Value: tt.value})
			if err != nil || len(got) != tt.want {
				t.Errorf("Search(HEADER %s %q) = %v, %v; want %d hits", tt.name, tt.value, got, err, tt.want)
			}
		}
		if _, err := s.CreateMailbox(ctx, a.ID, a.ID, storage.NewMailbox{Name: "a/b"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateMailbox(ctx, a.ID, a.ID, storage.NewMailbox{Name: "a"}); err != nil {
			t.Fatal(err)
		}
		if err := s.RenameMailbox(ctx, a.ID, a.ID, "A", "Ü"); err != nil {
			t.Fatalf("RenameMailbox(A, Ü) = %v", err)
		}
		if _, err := s.Mailbox(ctx, a.ID, a.ID, "ü/B"); err != nil {
			t.Errorf("Mailbox(ü/B) after rename = %v", err)
		}
		if err := s.RenameMailbox(ctx, a.ID, a.ID, "inbox", "Old"); err != nil {
			t.Fatalf("RenameMailbox(INBOX, Old) = %v", err)
		}
		old, _ := s.Mailbox(ctx, a.ID, a.ID, "Old")
		in, _ := s.Mailbox(ctx, a.ID, a.ID, "INBOX")
		if old.Messages != 1 || in.Messages != 0 {
			t.Errorf("after INBOX rename: Old %d, INBOX %d messages; want 1, 0", old.Messages, in.Messages)
		}
		got, err := s.Search(ctx, a.ID, a.ID, old.ID, storage.SearchKey{Op: storage.SearchHeader, Name: "x-tag", Value: "eins"})
		if err != nil || len(got) != 1 {
			t.Errorf("Search in renamed INBOX = %v, %v", got, err)
		}
		for _, bad := range []string{"", "a//b", "/a", "a/", "a\x01b"} {
			if _, err := s.CreateMailbox(ctx, a.ID, a.ID, storage.NewMailbox{Name: bad}); !errors.Is(err, storage.ErrInvalid) {
				t.Errorf("CreateMailbox(%q) = %v; want ErrInvalid", bad, err)
			}
		}
		if err := s.DeleteMailbox(ctx, a.ID, a.ID, "INBOX"); err == nil {
			t.Errorf("DeleteMailbox(INBOX) = nil; want an error")
		}
		rep, err := s.Check(ctx, false)
		if err != nil || !rep.Clean() {
			t.Errorf("Check = %+v, %v", rep, err)
		}
	})
}
