package imapd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"tidings/message"
	"tidings/storage"
)

// raw is a hand-driven connection for what the client library will not
// send.
type raw struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
	n  int
}

func dialRaw(t testing.TB, addr string, useTLS bool) *raw {
	t.Helper()
	var c net.Conn
	var err error
	if useTLS {
		c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s = %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := &raw{t: t, c: c, br: bufio.NewReader(c)}
	r.line() // greeting
	return r
}

func (r *raw) line() string {
	r.t.Helper()
	l, err := r.br.ReadString('\n')
	if err != nil {
		r.t.Fatalf("read = %v (so far %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// cmd sends one command and returns the untagged lines and the tagged one.
func (r *raw) cmd(format string, args ...any) ([]string, string) {
	r.t.Helper()
	r.n++
	tag := fmt.Sprintf("R%d", r.n)
	fmt.Fprintf(r.c, "%s %s\r\n", tag, fmt.Sprintf(format, args...))
	var lines []string
	for {
		l := r.line()
		if strings.HasPrefix(l, tag+" ") {
			return lines, strings.TrimPrefix(l, tag+" ")
		}
		lines = append(lines, l)
	}
}

func TestLoginRequiresTLS(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		r := dialRaw(t, e.plain, false)
		untagged, _ := r.cmd("CAPABILITY")
		caps := strings.Join(untagged, " ")
		for _, want := range []string{"LOGINDISABLED", "STARTTLS", "IMAP4rev2"} {
			if !strings.Contains(caps, want) {
				t.Errorf("CAPABILITY = %q; want %s", caps, want)
			}
		}
		if _, st := r.cmd("LOGIN %s %q", alice, password); !strings.HasPrefix(st, "NO [PRIVACYREQUIRED]") {
			t.Errorf("LOGIN without TLS = %q; want NO [PRIVACYREQUIRED]", st)
		}

		// STARTTLS, then LOGIN works.
		c, err := imapclient.DialStartTLS(e.plain, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
		if err != nil {
			t.Fatalf("DialStartTLS = %v", err)
		}
		defer c.Close()
		if err := c.Login(alice, password).Wait(); err != nil {
			t.Errorf("Login after STARTTLS = %v; want nil", err)
		}

		tests := []struct {
			name, user, pass string
			ok               bool
		}{
			{"good", alice, password, true},
			{"bad password", alice, "nope", false},
			{"unknown user", "nobody@example.test", password, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := e.dial(clientOpts{})
				err := c.Login(tt.user, tt.pass).Wait()
				if (err == nil) != tt.ok {
					t.Errorf("Login(%q) = %v; want ok %v", tt.user, err, tt.ok)
				}
			})
		}
		// AUTHENTICATE PLAIN over TLS.
		tr := dialRaw(t, e.implied, true)
		_, st := tr.cmd("AUTHENTICATE PLAIN %s", b64("\x00"+alice+"\x00"+password))
		if !strings.HasPrefix(st, "OK") {
			t.Errorf("AUTHENTICATE PLAIN = %q; want OK", st)
		}
	})
}

func TestListSpecialUseAndIsolation(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		a := e.login(alice, clientOpts{})
		if err := a.Create("Private/Deep", nil).Wait(); err != nil {
			t.Fatalf("Create = %v", err)
		}
		list, err := a.List("", "*", &imap.ListOptions{ReturnSpecialUse: true}).Collect()
		if err != nil {
			t.Fatalf("List = %v", err)
		}
		got := map[string][]imap.MailboxAttr{}
		for _, l := range list {
			got[l.Mailbox] = l.Attrs
		}
		for name, attr := range map[string]imap.MailboxAttr{
			"INBOX": imap.MailboxAttrHasNoChildren, "Sent": imap.MailboxAttrSent, "Trash": imap.MailboxAttrTrash,
			"Junk": imap.MailboxAttrJunk, "Drafts": imap.MailboxAttrDrafts, "Archive": imap.MailboxAttrArchive,
			"Private": imap.MailboxAttrNoSelect, "Private/Deep": imap.MailboxAttrHasNoChildren,
		} {
			if !slices.Contains(got[name], attr) {
				t.Errorf("LIST %q attrs = %v; want %s", name, got[name], attr)
			}
		}
		b := e.login(bob, clientOpts{})
		blist, err := b.List("", "*", nil).Collect()
		if err != nil {
			t.Fatalf("List(bob) = %v", err)
		}
		for _, l := range blist {
			if strings.HasPrefix(l.Mailbox, "Private") {
				t.Errorf("bob's LIST has %q; want only his own mailboxes", l.Mailbox)
			}
		}
		if _, err := b.Select("Private/Deep", nil).Wait(); err == nil {
			t.Errorf("bob Select(Private/Deep) = nil; want NO")
		}
		if _, err := b.Status("Private/Deep", &imap.StatusOptions{NumMessages: true}).Wait(); err == nil {
			t.Errorf("bob Status(Private/Deep) = nil; want NO")
		}
	})
}

func TestSelectCountsAndRecent(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		a := e.login(alice, clientOpts{})
		for i := range 3 {
			appendMsg(t, a, "INBOX", crlf(fmt.Sprintf("Subject: m%d\n\nbody\n", i)))
		}
		if err := a.Store(imap.SeqSetNum(1), &imap.StoreFlags{}, nil).Close(); err == nil {
			t.Errorf("Store without SELECT = nil; want error")
		}
		// imapclient ignores RECENT, so this part speaks raw IMAP4rev1.
		r := dialRaw(t, e.implied, true)
		r.cmd("LOGIN %s %q", alice, password)
		tests := []struct {
			name       string
			cmd        string
			wantRecent string
			wantPerm   bool
		}{
			{"examine claims nothing", "EXAMINE INBOX", "* 0 RECENT", false},
			{"first select", "SELECT INBOX", "* 3 RECENT", true},
			{"second select", "SELECT INBOX", "* 0 RECENT", true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				lines, st := r.cmd("%s", tt.cmd)
				if !strings.HasPrefix(st, "OK") {
					t.Fatalf("%s = %q; want OK", tt.cmd, st)
				}
				all := strings.Join(lines, "\n")
				if !strings.Contains(all, "* 3 EXISTS") || !strings.Contains(all, tt.wantRecent) {
					t.Errorf("%s = %q; want 3 EXISTS and %q", tt.cmd, all, tt.wantRecent)
				}
				if got := strings.Contains(all, `PERMANENTFLAGS (\Seen \Answered \Flagged \Deleted \Draft \*)`); got != tt.wantPerm {
					t.Errorf("%s PERMANENTFLAGS with \\* = %v; want %v (%q)", tt.cmd, got, tt.wantPerm, all)
				}
			})
		}
	})
}

const multipartMsg = `From: "Smith, Jo" <jo@example.org>
To: friends: ann@example.org, "bob q" <"bob q"@example.org>;, carl@example.org
Cc: good@example.org, bad@@, <also bad>, fine@example.org
Subject: =?utf-8?q?=C3=9Cber?= test
Date: Mon, 02 Jan 2006 15:04:05 -0700
Message-ID: <abc@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XX"

--XX
Content-Type: text/plain; charset=utf-8

0123456789abcdefghij
--XX
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

aGVsbG8gd29ybGQ=
--XX--
`

func TestAppendFetch(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		a := e.login(alice, clientOpts{})
		uid := appendMsg(t, a, "INBOX", crlf(multipartMsg))
		if uid == 0 {
			t.Fatalf("APPENDUID = 0")
		}
		if _, err := a.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("Select = %v", err)
		}
		body1 := &imap.FetchItemBodySection{Part: []int{1}, Partial: &imap.SectionPartial{Offset: 0, Size: 10}, Peek: true}
		full := &imap.FetchItemBodySection{Peek: true}
		bin := &imap.FetchItemBinarySection{Part: []int{2}, Peek: true}
		msgs, err := a.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{
			Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}, RFC822Size: true, UID: true,
			BodySection: []*imap.FetchItemBodySection{body1, full}, BinarySection: []*imap.FetchItemBinarySection{bin},
		}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("Fetch = %d messages, %v; want 1", len(msgs), err)
		}
		m := msgs[0]
		env := m.Envelope
		var to []string
		for _, ad := range env.To {
			to = append(to, fmt.Sprintf("%s|%s|%s", ad.Name, ad.Mailbox, ad.Host))
		}
		wantTo := []string{"|friends|", "|ann|example.org", `bob q|"bob q"|example.org`, "||", "|carl|example.org"}
		if !slices.Equal(to, wantTo) {
			t.Errorf("ENVELOPE To = %q; want %q", to, wantTo)
		}
		var cc []string
		for _, ad := range env.Cc {
			cc = append(cc, ad.Addr())
		}
		if want := []string{"good@example.org", "fine@example.org"}; !slices.Equal(cc, want) {
			t.Errorf("ENVELOPE Cc = %q; want %q", cc, want)
		}
		if len(env.From) != 1 || env.From[0].Name != "Smith, Jo" || env.MessageID != "abc@example.org" {
			t.Errorf("ENVELOPE From = %+v, Message-ID %q", env.From, env.MessageID)
		}
		if env.Subject != "Über test" {
			t.Errorf("ENVELOPE Subject = %q; want %q", env.Subject, "Über test")
		}
		mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
		if !ok || len(mp.Children) != 2 || mp.Subtype != "mixed" {
			t.Fatalf("BODYSTRUCTURE = %#v; want multipart/mixed with 2 parts", m.BodyStructure)
		}
		if p, _ := mp.Children[1].(*imap.BodyStructureSinglePart); p == nil || p.MediaType() != "application/octet-stream" || p.Encoding != "base64" {
			t.Errorf("BODYSTRUCTURE part 2 = %#v", mp.Children[1])
		}
		if got := string(m.FindBodySection(body1)); got != "0123456789" {
			t.Errorf("BODY[1]<0.10> = %q; want %q", got, "0123456789")
		}
		whole := m.FindBodySection(full)
		if int64(len(whole)) != m.RFC822Size || string(whole) != crlf(multipartMsg) {
			t.Errorf("len(BODY[]) = %d, RFC822.SIZE = %d; want equal and the appended bytes", len(whole), m.RFC822Size)
		}
		if got := string(m.FindBinarySection(bin)); got != "hello world" {
			t.Errorf("BINARY[2] = %q; want %q", got, "hello world")
		}

		// A delivered entry with a per-entry prefix: the prefix belongs to
		// BODY[HEADER] and BODY[] and counts in RFC822.SIZE.
		ctx := context.Background()
		acct, _ := e.store.AccountByAddress(ctx, alice)
		inbox, _ := e.store.Mailbox(ctx, acct.ID, acct.ID, "INBOX")
		body := crlf("Subject: p\n\nhello\n")
		an, _ := message.Analyze(strings.NewReader(body), int64(len(body)), message.Options{})
		prefix := "Delivered-To: alice@example.test\r\n"
		if _, err := e.store.Append(ctx, acct.ID, acct.ID, inbox.ID, storage.BytesSource(body), storage.NewMessage{Prefix: []byte(prefix), Analysis: an}); err != nil {
			t.Fatalf("store Append = %v", err)
		}
		// The store's hint reaches the mailbox owner asynchronously.
		for deadline := time.Now().Add(20 * time.Second); a.Mailbox().NumMessages < 2 && time.Now().Before(deadline); {
			if err := a.Noop().Wait(); err != nil {
				t.Fatalf("Noop = %v", err)
			}
		}
		hdr := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}
		text := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText, Peek: true}
		msgs, err = a.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{RFC822Size: true, BodySection: []*imap.FetchItemBodySection{hdr, text, full}}).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("Fetch 2 = %d, %v", len(msgs), err)
		}
		m = msgs[0]
		if got, want := string(m.FindBodySection(hdr)), prefix+"Subject: p\r\n\r\n"; got != want {
			t.Errorf("BODY[HEADER] = %q; want %q", got, want)
		}
		if got := string(m.FindBodySection(text)); got != "hello\r\n" {
			t.Errorf("BODY[TEXT] = %q; want %q", got, "hello\r\n")
		}
		if got := m.FindBodySection(full); string(got) != prefix+body || int64(len(got)) != m.RFC822Size {
			t.Errorf("BODY[] = %q (RFC822.SIZE %d); want %q", got, m.RFC822Size, prefix+body)
		}
	})
}

func TestStoreFlagsUpdates(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		a := e.login(alice, clientOpts{})
		appendMsg(t, a, "INBOX", crlf("Subject: x\n\nx\n"))
		flagsSeen := make(chan []imap.Flag, 10)
		b := e.dial(clientOpts{})
		b = func() *imapclient.Client {
			opts := &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true},
				UnilateralDataHandler: &imapclient.UnilateralDataHandler{Fetch: func(m *imapclient.FetchMessageData) {
					for {
						it := m.Next()
						if it == nil {
							return
						}
						if f, ok := it.(imapclient.FetchItemDataFlags); ok {
							flagsSeen <- f.Flags
						}
					}
				}}}
			c, err := imapclient.DialTLS(e.implied, opts)
			if err != nil {
				t.Fatalf("DialTLS = %v", err)
			}
			t.Cleanup(func() { c.Close() })
			if err := c.Login(alice, password).Wait(); err != nil {
				t.Fatalf("Login = %v", err)
			}
			return c
		}()
		for _, c := range []*imapclient.Client{a, b} {
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatalf("Select = %v", err)
			}
		}
		msgs, err := a.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged, "$Work"}}, nil).Collect()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("Store = %d, %v", len(msgs), err)
		}
		if f := msgs[0].Flags; !slices.Contains(f, imap.FlagFlagged) || !slices.Contains(f, "$Work") {
			t.Errorf("STORE FLAGS = %v; want \\Flagged and $Work", f)
		}
		// Session B learns of it at its next command.
		deadline := time.Now().Add(20 * time.Second)
		var got []imap.Flag
		for got == nil && time.Now().Before(deadline) {
			if err := b.Noop().Wait(); err != nil {
				t.Fatalf("Noop = %v", err)
			}
			select {
			case got = <-flagsSeen:
			case <-time.After(50 * time.Millisecond):
			}
		}
		if !slices.Contains(got, "$Work") {
			t.Errorf("B's FETCH FLAGS = %v; want $Work", got)
		}
		sd, err := b.Select("INBOX", nil).Wait()
		if err != nil {
			t.Fatalf("Select = %v", err)
		}
		if !slices.Contains(sd.Flags, "$Work") {
			t.Errorf("FLAGS = %v; want $Work", sd.Flags)
		}
	})
}

func TestSearch(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		a := e.login(alice, clientOpts{})
		appendMsg(t, a, "INBOX", crlf("Subject: =?utf-8?q?=C3=9CBER?= alles\n\nnothing\n"))
		appendMsg(t, a, "INBOX", crlf("Subject: plain\n\nwir reden über Dinge\n"))
		appendMsg(t, a, "INBOX", crlf("Subject: third\n\nnone\n"))
		if err := e.store.WaitIndexed(context.Background()); err != nil {
			t.Fatalf("WaitIndexed = %v", err)
		}
		if _, err := a.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("Select = %v", err)
		}
		if err := a.Store(imap.SeqSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
			t.Fatalf("Store = %v", err)
		}
		tests := []struct {
			name string
			c    imap.SearchCriteria
			want []uint32
		}{
			{"text upper", imap.SearchCriteria{Text: []string{"ÜBER"}}, []uint32{1, 2}},
			{"text lower", imap.SearchCriteria{Text: []string{"über"}}, []uint32{1, 2}},
			{"or", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "plain"}}}, {Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "third"}}}}}}, []uint32{2, 3}},
			{"not", imap.SearchCriteria{Not: []imap.SearchCriteria{{Body: []string{"Dinge"}}}}, []uint32{1, 3}},
			{"seen", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, []uint32{3}},
			{"unseen", imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, []uint32{1, 2}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d, err := a.Search(&tt.c, nil).Wait()
				if err != nil {
					t.Fatalf("Search = %v", err)
				}
				if got := d.AllSeqNums(); !slices.Equal(got, tt.want) {
					t.Errorf("Search(%s) = %v; want %v", tt.name, got, tt.want)
				}
			})
		}
		// Nesting deeper than storage.MaxSearchDepth is BAD.
		r := dialRaw(t, e.implied, true)
		r.cmd("LOGIN %s %q", alice, password)
		r.cmd("SELECT INBOX")
		_, st := r.cmd("SEARCH %sALL", strings.Repeat("NOT ", 70))
		if !strings.HasPrefix(st, "BAD") {
			t.Errorf("SEARCH NOT×70 = %q; want BAD", st)
		}
	})
}

// TestExpungeExactlyOnce: MOVE and EXPUNGE are reported once to the
// session that made them and once to another session of the mailbox.
func TestExpungeExactlyOnce(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		wa, wb := &wire{}, &wire{}
		a := e.login(alice, clientOpts{wire: wa})
		b := e.login(alice, clientOpts{wire: wb})
		for i := range 4 {
			appendMsg(t, a, "INBOX", crlf(fmt.Sprintf("Subject: %d\n\nx\n", i)))
		}
		for _, c := range []*imapclient.Client{a, b} {
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatalf("Select = %v", err)
			}
		}
		wa.expunges()
		wb.expunges()

		cd, err := a.Copy(imap.SeqSetNum(1), "Archive").Wait()
		if err != nil || cd.UIDValidity == 0 || cd.DestUIDs.String() != "1" {
			t.Errorf("Copy = %+v, %v; want COPYUID with dest 1", cd, err)
		}
		md, err := a.Move(imap.SeqSetNum(2), "Archive").Wait()
		if err != nil || md.DestUIDs == nil {
			t.Fatalf("Move = %+v, %v; want COPYUID", md, err)
		}
		if got := wa.expunges(); !slices.Equal(got, []string{"2"}) {
			t.Errorf("A's EXPUNGEs after MOVE = %v; want [2]", got)
		}
		waitExpunges(t, b, wb, []string{"2"})

		if err := a.Store(imap.SeqSetNum(1, 3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
			t.Fatalf("Store = %v", err)
		}
		if _, err := a.Expunge().Collect(); err != nil {
			t.Fatalf("Expunge = %v", err)
		}
		// UIDs 1 and 4 (sequence 1 and 3) go: EXPUNGE 1, then EXPUNGE 2.
		if got := wa.expunges(); !slices.Equal(got, []string{"1", "2"}) {
			t.Errorf("A's EXPUNGEs = %v; want [1 2]", got)
		}
		waitExpunges(t, b, wb, []string{"1", "2"})
		st, err := b.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil || *st.NumMessages != 1 {
			t.Errorf("Status = %v, %v; want 1 message", st, err)
		}
	})
}

// waitExpunges polls with NOOP until c has seen len(want) EXPUNGEs, then
// checks that no more arrive.
func waitExpunges(t *testing.T, c *imapclient.Client, w *wire, want []string) {
	t.Helper()
	var got []string
	deadline := time.Now().Add(20 * time.Second)
	n := len(want)
	for len(got) < n && time.Now().Before(deadline) {
		if err := c.Noop().Wait(); err != nil {
			t.Fatalf("Noop = %v", err)
		}
		got = append(got, w.expunges()...)
	}
	c.Noop().Wait()
	got = append(got, w.expunges()...)
	if !slices.Equal(got, want) {
		t.Errorf("other session's EXPUNGEs = %v; want %d (%v)", got, n, want)
	}
}

func TestIdleSeesAppend(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		idleTest(t, e, e)
	})
}

// TestCrossNodeIdle: two servers over one PostgreSQL database; IDLE on one
// sees an APPEND made through the other.
func TestCrossNodeIdle(t *testing.T) {
	d := drivers()[1]
	open := d.NewDB(t)
	st1 := open(t)
	seed(t, st1)
	n1 := startServer(t, st1, Config{})
	n2 := startServer(t, open(t), Config{})
	idleTest(t, n1, n2)
}

func idleTest(t *testing.T, idleNode, appendNode *env) {
	exists := make(chan uint32, 10)
	b := idleNode.login(alice, clientOpts{onExists: func(n uint32) { exists <- n }})
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("Select = %v", err)
	}
	idle, err := b.Idle()
	if err != nil {
		t.Fatalf("Idle = %v", err)
	}
	a := appendNode.login(alice, clientOpts{})
	appendMsg(t, a, "INBOX", crlf("Subject: ping\n\nping\n"))
	select {
	case n := <-exists:
		if n != 1 {
			t.Errorf("EXISTS = %d; want 1", n)
		}
	case <-time.After(40 * time.Second):
		t.Errorf("no EXISTS during IDLE")
	}
	if err := idle.Close(); err != nil {
		t.Errorf("Idle Close = %v", err)
	}
	if err := idle.Wait(); err != nil {
		t.Errorf("Idle Wait = %v", err)
	}
}

func TestOverQuota(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		if err := e.dir.SetQuota(context.Background(), alice, 100, 0); err != nil {
			t.Fatalf("SetQuota = %v", err)
		}
		a := e.login(alice, clientOpts{})
		raw := crlf("Subject: big\n\n" + strings.Repeat("x", 500) + "\n")
		cmd := a.Append("INBOX", int64(len(raw)), nil)
		cmd.Write([]byte(raw))
		cmd.Close()
		_, err := cmd.Wait()
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeOverQuota {
			t.Errorf("Append over quota = %v; want NO [OVERQUOTA]", err)
		}
		cmd = a.Append("Nowhere", 1, nil)
		cmd.Write([]byte("x"))
		cmd.Close()
		if _, err := cmd.Wait(); !errors.As(err, &ie) || ie.Code != imap.ResponseCodeTryCreate {
			t.Errorf("Append to a missing mailbox = %v; want NO [TRYCREATE]", err)
		}
	})
}

func TestLimits(t *testing.T) {
	d := drivers()[0]
	st := d.NewDB(t)(t)
	seed(t, st)
	e := startServer(t, st, Config{MaxConnsPerIP: 2, MaxConnsPerUserIP: 1, PreAuthTimeout: 500 * time.Millisecond})
	t.Run("per IP", func(t *testing.T) {
		a := dialRaw(t, e.plain, false)
		b := dialRaw(t, e.plain, false)
		c, err := net.Dial("tcp", e.plain)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(line, "* BYE") {
			t.Errorf("third connection from one IP got %q; want * BYE", line)
		}
		a.c.Close()
		b.c.Close()
		// The slots are released on close: a new connection is served
		// again (bounded wait while the server notices the closes).
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.Dial("tcp", e.plain)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "* OK") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after closing both connections the server still answers %q", line)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("pre-auth deadline", func(t *testing.T) {
		r := dialRaw(t, e.plain, false)
		r.c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadAll(r.br); err != nil {
			t.Errorf("read until close = %v; want EOF", err)
		}
	})
	t.Run("per user and IP", func(t *testing.T) {
		a := e.login(alice, clientOpts{})
		c := e.dial(clientOpts{})
		if err := c.Login(alice, password).Wait(); err == nil {
			t.Errorf("second Login = nil; want NO [LIMIT]")
		}
		a.Logout().Wait()
	})
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
