package imapd

// Interoperability with real IMAP clients installed from Debian packages
// (DESIGN.md §Tests): mbsync (isync), curl and Python's imaplib, each over
// TLS with the server's self-signed certificate, on both drivers. The
// programs are found or installed by testprog.Need; these tests never skip.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tidings/internal/testprog"
	"tidings/message"
	"tidings/storage"
)

// interopMsg is message i of a prefilled mailbox: a distinct Message-ID
// and subject, so clients' copies can be matched to store entries.
func interopMsg(i int) string {
	return crlf(fmt.Sprintf(`From: Sender %d <sender%d@example.org>
To: alice@example.test
Subject: interop message %d
Message-ID: <%d@interop.example.org>
Date: Mon, 1 Jun 2026 10:%02d:00 +0000

Body of message %d, with some text to search for.
`, i, i, i, i, i%60, i))
}

// mailbox returns the account and the named mailbox of user.
func (e *env) mailbox(user, name string) (storage.AccountID, storage.Mailbox) {
	e.t.Helper()
	ctx := context.Background()
	a, err := e.store.AccountByAddress(ctx, user)
	if err != nil {
		e.t.Fatalf("AccountByAddress(%q) = %v", user, err)
	}
	mb, err := e.store.Mailbox(ctx, a.ID, a.ID, name)
	if err != nil {
		e.t.Fatalf("Mailbox(%q) = %v", name, err)
	}
	return a.ID, mb
}

// prefill delivers msgs to user's INBOX through the store, a few at a
// time concurrently (each Deliver is one durable commit).
func (e *env) prefill(user string, msgs []string) {
	e.t.Helper()
	owner, _ := e.mailbox(user, "INBOX")
	ctx := context.Background()
	work := make(chan string)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for raw := range work {
				an, err := message.Analyze(strings.NewReader(raw), int64(len(raw)), message.Options{})
				if err == nil {
					_, err = e.store.Deliver(ctx, storage.BytesSource([]byte(raw)),
						[]storage.DeliveryTarget{{Owner: owner, Message: storage.NewMessage{Analysis: an}}})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
loop:
	for _, m := range msgs {
		select {
		case work <- m:
		case err = <-errs:
			break loop
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err != nil {
		e.t.Fatalf("Deliver = %v", err)
	}
}

// byMessageID returns the entries of user's mailbox keyed by Message-ID.
func (e *env) byMessageID(user, name string) map[string]storage.Message {
	e.t.Helper()
	owner, mb := e.mailbox(user, name)
	msgs, err := e.store.Messages(context.Background(), owner, owner, mb.ID, nil, storage.MessageOptions{Analysis: true})
	if err != nil {
		e.t.Fatalf("Messages(%q) = %v", name, err)
	}
	out := make(map[string]storage.Message, len(msgs))
	for _, m := range msgs {
		out[m.Analysis.MessageID] = m
	}
	return out
}

// certFile writes the certificate the server presents to a PEM file, for
// clients that must verify it (mbsync, imaplib).
func (e *env) certFile() string {
	e.t.Helper()
	c, err := tls.Dial("tcp", e.implied, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		e.t.Fatalf("tls.Dial = %v", err)
	}
	defer c.Close()
	der := c.ConnectionState().PeerCertificates[0].Raw
	path := filepath.Join(e.t.TempDir(), "server.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// run runs a client program and fails the test with its output on error.
func runProg(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s = %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), err, outTail(out), outTail(stderr.Bytes()))
	}
	return out
}

func outTail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// maildirFile is one message file of a local Maildir.
type maildirFile struct {
	path  string
	msgID string
	flags string // the info after ":2,"
}

// readMaildir lists the messages of a Maildir folder by Message-ID.
func readMaildir(t *testing.T, dir string) map[string]maildirFile {
	t.Helper()
	out := map[string]maildirFile{}
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatalf("ReadDir(%q) = %v", dir, err)
		}
		for _, de := range ents {
			p := filepath.Join(dir, sub, de.Name())
			f := maildirFile{path: p}
			if _, info, ok := strings.Cut(de.Name(), ":2,"); ok {
				f.flags = info
			}
			fh, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(fh)
			for sc.Scan() {
				l := sc.Text()
				if l == "" || l == "\r" {
					break
				}
				if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "Message-ID") {
					f.msgID = strings.Trim(strings.TrimSpace(v), "<>")
				}
			}
			fh.Close()
			out[f.msgID] = f
		}
	}
	return out
}

// withoutTUID removes the X-TUID header line that mbsync (isync 1.4) adds
// to every message it propagates.
func withoutTUID(msg string) string {
	i := strings.Index(msg, "\r\nX-TUID: ")
	if i < 0 {
		return msg
	}
	j := strings.Index(msg[i+2:], "\r\n")
	if j < 0 {
		return msg
	}
	return msg[:i+2] + msg[i+2+j+2:]
}

// setFlags renames a Maildir file to carry flags (letters, sorted as the
// Maildir spec wants) in cur/.
func setFlags(t *testing.T, f maildirFile, add string) {
	t.Helper()
	base, _, _ := strings.Cut(filepath.Base(f.path), ":2,")
	fl := []byte(f.flags + add)
	slices.Sort(fl)
	fl = slices.Compact(fl)
	dst := filepath.Join(filepath.Dir(filepath.Dir(f.path)), "cur", base+":2,"+string(fl))
	if err := os.Rename(f.path, dst); err != nil {
		t.Fatal(err)
	}
}

// TestInteropMbsync syncs a 1,000-message INBOX down to a Maildir with
// mbsync, changes flags and adds a message on both sides, and syncs again:
// the store must end with the local flags and the new message, the Maildir
// with the server's flag change.
func TestInteropMbsync(t *testing.T) {
	mbsync := testprog.Need(t, "mbsync", "isync")
	const n = 1000
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		msgs := make([]string, n)
		for i := range msgs {
			msgs[i] = interopMsg(i)
		}
		start := time.Now()
		e.prefill(alice, msgs)
		t.Logf("prefill %d: %s", n, time.Since(start))

		dir := t.TempDir()
		local := filepath.Join(dir, "mail")
		host, port, _ := strings.Cut(e.implied, ":")
		conf := filepath.Join(dir, "mbsyncrc")
		// SSLType IMAPS (isync 1.4; TLSType from 1.5 on): implicit TLS;
		// the server's self-signed certificate is the only one trusted. Expunge None keeps \Deleted messages so
		// the flag itself can be checked.
		rc := fmt.Sprintf(`IMAPAccount tidings
Host %s
Port %s
User %s
Pass "%s"
SSLType IMAPS
CertificateFile %s
AuthMechs LOGIN

IMAPStore far
Account tidings

MaildirStore near
Path %s/
Inbox %s/INBOX

Channel inbox
Far :far:
Near :near:
Patterns INBOX
Create Near
Sync All
Expunge None
SyncState *
`, host, port, alice, password, e.certFile(), local, local)
		if err := os.WriteFile(conf, []byte(rc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(local, 0o700); err != nil {
			t.Fatal(err)
		}
		runProg(t, mbsync, "-q", "-c", conf, "inbox")

		inbox := filepath.Join(local, "INBOX")
		got := readMaildir(t, inbox)
		if len(got) != n {
			t.Fatalf("after first sync: %d messages in the Maildir; want %d", len(got), n)
		}
		for i := range n {
			id := fmt.Sprintf("%d@interop.example.org", i)
			f, ok := got[id]
			if !ok {
				t.Fatalf("after first sync: message %q missing from the Maildir", id)
			}
			data, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			// mbsync stores what BODY[] returned with LF line ends and its
			// own X-TUID header added.
			if local := withoutTUID(crlf(string(data))); local != msgs[i] {
				t.Fatalf("Maildir copy of %q = %q; want %q", id, data, msgs[i])
			}
		}

		// Local changes: flags on some messages, one new message. Remote
		// change: \Flagged on message 3 through the store.
		want := func(i int) storage.Flags {
			return storage.Flags{Seen: i%10 == 0, Flagged: i%25 == 0 || i == 3, Answered: i%50 == 0, Deleted: i == 7}
		}
		for i := range n {
			var add string
			if i%10 == 0 {
				add += "S"
			}
			if i%25 == 0 {
				add += "F"
			}
			if i%50 == 0 {
				add += "R"
			}
			if i == 7 {
				add += "T"
			}
			if add != "" {
				setFlags(t, got[fmt.Sprintf("%d@interop.example.org", i)], add)
			}
		}
		newMsg := crlf("From: alice@example.test\nTo: bob@example.test\nSubject: written offline\nMessage-ID: <local-1@interop.example.org>\n\nDraft written on the train.\n")
		if err := os.WriteFile(filepath.Join(inbox, "new", "1780000000.local1.host"), []byte(newMsg), 0o600); err != nil {
			t.Fatal(err)
		}
		owner, mb := e.mailbox(alice, "INBOX")
		stored := e.byMessageID(alice, "INBOX")
		uid3 := stored["3@interop.example.org"].UID
		if _, _, err := e.store.StoreFlags(context.Background(), owner, owner, mb.ID,
			storage.UIDSet{{Start: uid3, Stop: uid3}}, storage.FlagsAdd, storage.Flags{Flagged: true}, 0); err != nil {
			t.Fatalf("StoreFlags = %v", err)
		}

		runProg(t, mbsync, "-q", "-c", conf, "inbox")

		stored = e.byMessageID(alice, "INBOX")
		if len(stored) != n+1 {
			t.Errorf("after second sync: %d messages in the store; want %d", len(stored), n+1)
		}
		for i := range n {
			id := fmt.Sprintf("%d@interop.example.org", i)
			f := stored[id].Flags
			w := want(i)
			if f.Seen != w.Seen || f.Flagged != w.Flagged || f.Answered != w.Answered || f.Deleted != w.Deleted {
				t.Errorf("store flags of %q = %+v; want %+v", id, f, w)
			}
		}
		up, ok := stored["local-1@interop.example.org"]
		if !ok {
			t.Fatalf("message added to the Maildir is not in the store")
		}
		owner, mb = e.mailbox(alice, "INBOX")
		m, r, err := e.store.OpenMessage(context.Background(), owner, owner, mb.ID, up.UID)
		if err != nil {
			t.Fatalf("OpenMessage(%d) = %v", up.UID, err)
		}
		body := make([]byte, r.Size())
		r.ReadAt(body, 0)
		r.Close()
		// mbsync adds X-TUID to what it uploads, to find the new UID.
		if got := withoutTUID(string(m.Prefix) + string(body)); got != newMsg {
			t.Errorf("uploaded message = %q; want %q", got, newMsg)
		}
		if f := readMaildir(t, inbox)["3@interop.example.org"]; !strings.Contains(f.flags, "F") {
			t.Errorf("Maildir flags of message 3 = %q; want F (set on the server)", f.flags)
		}
	})
}

// TestInteropCurl drives curl's IMAP support: LIST, FETCH by UID (whole
// message and a section), SEARCH, a custom command, over implicit TLS and
// over STARTTLS.
func TestInteropCurl(t *testing.T) {
	curl := testprog.Need(t, "curl", "curl")
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		msgs := []string{interopMsg(0), interopMsg(1), crlf("From: bob@example.test\nSubject: banana split\nMessage-ID: <banana@example.test>\n\nYellow.\n")}
		e.prefill(alice, msgs[:2])
		e.prefill(alice, msgs[2:])
		stored := e.byMessageID(alice, "INBOX")
		uid := stored["1@interop.example.org"].UID
		banana := stored["banana@example.test"].UID

		base := "imaps://" + e.implied
		starttls := "imap://" + e.plain
		auth := []string{"-sS", "-k", "--user", alice + ":" + password}
		tests := []struct {
			name string
			args []string
			want []string // substrings of the output
			body string   // exact output, when set
		}{
			{name: "list", args: []string{base + "/"}, want: []string{`"/" INBOX`, "Sent", "Trash", "Junk"}},
			{name: "list over starttls", args: []string{"--ssl-reqd", starttls + "/"}, want: []string{`"/" INBOX`}},
			{name: "fetch by uid", args: []string{fmt.Sprintf("%s/INBOX;UID=%d", base, uid)}, body: msgs[1]},
			{name: "fetch text section", args: []string{fmt.Sprintf("%s/INBOX;UID=%d/;SECTION=TEXT", base, uid)}, body: "Body of message 1, with some text to search for.\r\n"},
			{name: "search subject", args: []string{base + "/INBOX?SUBJECT%20banana"}, want: []string{fmt.Sprintf("* SEARCH %d", banana)}},
			{name: "search text", args: []string{base + "/INBOX?TEXT%20yellow"}, want: []string{fmt.Sprintf("* SEARCH %d", banana)}},
			{name: "custom command", args: []string{base + "/INBOX", "-X", "STATUS INBOX (MESSAGES UIDNEXT)"}, want: []string{"MESSAGES 3"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				out := string(runProg(t, curl, append(auth, tt.args...)...))
				if tt.body != "" && out != tt.body {
					t.Errorf("curl %v = %q; want %q", tt.args, out, tt.body)
				}
				for _, w := range tt.want {
					if !strings.Contains(out, w) {
						t.Errorf("curl %v = %q; want it to contain %q", tt.args, out, w)
					}
				}
			})
		}
	})
}

// TestInteropImaplib runs testdata/interop/imaplib_flow.py, which asserts
// each reply of a LOGIN/SELECT/FETCH/STORE/SEARCH/APPEND/COPY/EXPUNGE/
// LOGOUT session; then the store must show what the script did.
func TestInteropImaplib(t *testing.T) {
	python := testprog.Need(t, "python3", "python3")
	script, err := filepath.Abs(filepath.Join("testdata", "interop", "imaplib_flow.py"))
	if err != nil {
		t.Fatal(err)
	}
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		e.prefill(alice, []string{interopMsg(0), interopMsg(1), crlf("From: bob@example.test\nSubject: banana split\nMessage-ID: <banana@example.test>\n\nYellow.\n")})
		host, port, _ := strings.Cut(e.implied, ":")
		out := runProg(t, python, script, host, port, e.certFile(), alice, password)
		if !bytes.Contains(out, []byte("imaplib flow ok")) {
			t.Fatalf("imaplib_flow.py output = %q; want it to end with \"imaplib flow ok\"", out)
		}

		inbox := e.byMessageID(alice, "INBOX")
		if _, ok := inbox["1@interop.example.org"]; ok {
			t.Errorf("message 1 is still in INBOX after the script expunged it")
		}
		if f := inbox["0@interop.example.org"].Flags; !f.Seen || !f.Flagged {
			t.Errorf("flags of message 0 = %+v; want \\Seen \\Flagged", f)
		}
		app, ok := inbox["appended@interop.example.org"]
		if !ok {
			t.Fatalf("appended message not in INBOX")
		}
		if !app.Flags.Draft || !slices.Contains(app.Flags.Keywords, "$Interop") {
			t.Errorf("flags of the appended message = %+v; want \\Draft $Interop", app.Flags)
		}
		if _, ok := e.byMessageID(alice, "Archive")["banana@example.test"]; !ok {
			t.Errorf("copied message not in Archive")
		}
	})
}
