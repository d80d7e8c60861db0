package pop3d

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tidings/auth"
	"tidings/message"
	"tidings/storage"
)

// TestTranscripts replays testdata/*.txt against a fresh server per driver.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("Glob(testdata/*.txt) = %v, %v; want transcripts", files, err)
	}
	forEachDriver(t, func(t *testing.T, d driver) {
		for _, f := range files {
			t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
				e := newEnv(t, d, envOpts{})
				runTranscript(t, e, f)
			})
		}
	})
}

func runTranscript(t *testing.T, e *env, file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer(
		"$USER", alice,
		"$PASS", alicePass,
		"$PLAIN", plainResp(alice, alicePass),
		"$LONG", strings.Repeat("A", 600),
	)
	var c *client
	for n, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		where := fmt.Sprintf("%s:%d", filepath.Base(file), n+1)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case line == "!conn tls":
			c = e.dial(true)
		case line == "!conn plain":
			c = e.dial(false)
		case line == "!starttls":
			c.upgrade()
		case line == "!closed":
			if !c.eof() {
				t.Fatalf("%s: connection still open; want closed", where)
			}
		case strings.HasPrefix(line, "C: "):
			c.send(vars.Replace(line[3:]))
		case strings.HasPrefix(line, "S: "):
			want := line[3:]
			if got := c.line(); !match(want, got) {
				t.Fatalf("%s: reply = %q; want %q", where, got, want)
			}
		default:
			t.Fatalf("%s: bad transcript line %q", where, line)
		}
	}
}

// TestSizesEqualRetrOctets: LIST sizes are exactly the octets RETR sends,
// the per-entry prefix included, after undoing byte-stuffing.
func TestSizesEqualRetrOctets(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		// One more message without a final CRLF and with a long body.
		e.appendMsg("Return-Path: <x@example.org>\r\n", "Subject: big\r\n\r\n"+strings.Repeat(".dotted line of text\r\n", 5000)+"no newline")
		c := e.login()
		c.send("LIST")
		c.expect("+OK *")
		var sizes []int
		for {
			l := c.line()
			if l == "." {
				break
			}
			var n, size int
			fmt.Sscanf(l, "%d %d", &n, &size)
			sizes = append(sizes, size)
		}
		if len(sizes) != len(e.raw) {
			t.Fatalf("LIST gave %d messages; want %d", len(sizes), len(e.raw))
		}
		for i, want := range e.raw {
			c.send(fmt.Sprintf("RETR %d", i+1))
			c.expect(fmt.Sprintf("+OK %d octets", len(want)))
			got := c.multi()
			exp := want
			if !bytes.HasSuffix(exp, []byte("\r\n")) {
				exp = append(slices.Clone(exp), "\r\n"...) // framing CRLF before "."
			}
			if !bytes.Equal(got, exp) {
				t.Errorf("RETR %d = %d octets; want %d (prefix+blob)", i+1, len(got), len(exp))
			}
			if sizes[i] != len(want) {
				t.Errorf("LIST %d = %d; want %d", i+1, sizes[i], len(want))
			}
		}
		c.send("QUIT")
		c.expect("+OK *")
	})
}

// TestDeleteOnlyAtQuit: DELE marks; the store loses the message only when
// QUIT enters UPDATE.
func TestDeleteOnlyAtQuit(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		before := e.inboxUIDs()
		c := e.login()
		c.send("DELE 1")
		c.expect("+OK message 1 deleted")
		c.send("DELE 3")
		c.expect("+OK message 3 deleted")
		c.send("NOOP")
		c.expect("+OK")
		if got := e.inboxUIDs(); !slices.Equal(got, before) {
			t.Fatalf("INBOX before QUIT = %v; want %v", got, before)
		}
		c.send("QUIT")
		c.expect("+OK * (1 messages left)")
		if got, want := e.inboxUIDs(), []storage.UID{before[1]}; !slices.Equal(got, want) {
			t.Fatalf("INBOX after QUIT = %v; want %v", got, want)
		}
	})
}

// TestDroppedConnectionDeletesNothing: no QUIT, no UPDATE (RFC 1939 §6).
func TestDroppedConnectionDeletesNothing(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		before := e.inboxUIDs()
		c := e.login()
		c.send("DELE 1")
		c.expect("+OK *")
		c.send("DELE 2")
		c.expect("+OK *")
		c.conn.Close()
		e.waitIdle()
		if got := e.inboxUIDs(); !slices.Equal(got, before) {
			t.Fatalf("INBOX after dropped connection = %v; want %v", got, before)
		}
		// The lease was released: a new session gets in.
		c = e.login()
		c.send("STAT")
		c.expect("+OK 3 398")
	})
}

// TestUIDLStable: the same messages keep the same UIDLs in later
// sessions, also after others were deleted.
func TestUIDLStable(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		uidls := func(c *client) []string {
			c.send("UIDL")
			c.expect("+OK *")
			var out []string
			for {
				l := c.line()
				if l == "." {
					return out
				}
				_, u, _ := strings.Cut(l, " ")
				out = append(out, u)
			}
		}
		c := e.login()
		first := uidls(c)
		c.send("DELE 1")
		c.expect("+OK *")
		c.send("QUIT")
		c.expect("+OK *")
		e.waitIdle()
		c = e.login()
		second := uidls(c)
		if want := first[1:]; !slices.Equal(second, want) {
			t.Fatalf("UIDL after deleting 1 = %v; want %v", second, want)
		}
		want := fmt.Sprintf("%d.%d", e.inbox.UIDValidity, 3)
		if second[1] != want {
			t.Errorf("UIDL of UID 3 = %q; want %q", second[1], want)
		}
	})
}

// TestExpungedByOtherSession: a message removed by IMAP during the
// session gives -ERR, never a crash.
func TestExpungedByOtherSession(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.login()
		uids := e.inboxUIDs()
		if _, err := e.store.ExpungeUIDs(context.Background(), e.acct.ID, e.acct.ID, e.inbox.ID, storage.UIDSet{{Start: uids[0], Stop: uids[0]}}); err != nil {
			t.Fatalf("ExpungeUIDs = %v", err)
		}
		for _, cmd := range []string{"RETR 1", "TOP 1 0"} {
			c.send(cmd)
			c.expect("-ERR message 1 no longer exists")
		}
		c.send("RETR 2")
		c.expect("+OK 140 octets")
		c.multi()
		c.send("DELE 1")
		c.expect("+OK *")
		c.send("QUIT")
		c.expect("+OK *")
		if got := e.inboxUIDs(); !slices.Equal(got, uids[1:]) {
			t.Fatalf("INBOX = %v; want %v", got, uids[1:])
		}
	})
}

// TestInUse: a second session on the same maildrop gets [IN-USE], on the
// same server and on a second server (node) sharing the database.
func TestInUse(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.login()
		c2 := e.dial(true)
		c2.expect("+OK *")
		c2.send("USER " + alice)
		c2.expect("+OK *")
		c2.send("PASS " + alicePass)
		c2.expect("-ERR [IN-USE] maildrop already in use")
		c.send("QUIT")
		c.expect("+OK *")
	})
}

// TestInUseAcrossNodes: two Server instances, each with its own store
// pool, on one PostgreSQL database.
func TestInUseAcrossNodes(t *testing.T) {
	d := drivers()[1]
	open := d.NewDB(t)
	e1 := startEnv(t, open(t), envOpts{})
	st2 := open(t)
	e2 := startEnv(t, st2, envOpts{store: st2})
	c := e1.login()
	c2 := e2.dial(true)
	c2.expect("+OK *")
	c2.send("AUTH PLAIN " + plainResp(alice, alicePass))
	c2.expect("-ERR [IN-USE] *")
	c.send("QUIT")
	c.expect("+OK *")
	e1.waitIdle()
	c2.send("AUTH PLAIN " + plainResp(alice, alicePass))
	c2.expect("+OK maildrop has 3 messages *")
}

// TestSeenOnRetr: RETR sets \Seen, in the UPDATE state, unless configured
// off; TOP never does; a session that does not QUIT sets nothing.
func TestSeenOnRetr(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		for _, off := range []bool{false, true} {
			t.Run(fmt.Sprintf("NoSeenOnRetr=%v", off), func(t *testing.T) {
				e := newEnv(t, d, envOpts{cfg: Config{NoSeenOnRetr: off}})
				c := e.login()
				c.send("TOP 1 1")
				c.expect("+OK *")
				c.multi()
				c.send("RETR 2")
				c.expect("+OK *")
				c.multi()
				c.send("NOOP")
				c.expect("+OK")
				ms, err := e.store.Messages(context.Background(), e.acct.ID, e.acct.ID, e.inbox.ID, nil, storage.MessageOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if ms[1].Flags.Seen {
					t.Errorf("after RETR 2, before QUIT: Seen = true; want false until UPDATE")
				}
				c.send("QUIT")
				c.expect("+OK *")
				ms, err = e.store.Messages(context.Background(), e.acct.ID, e.acct.ID, e.inbox.ID, nil, storage.MessageOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if ms[0].Flags.Seen {
					t.Errorf("after TOP 1: Seen = true; want false")
				}
				if ms[1].Flags.Seen != !off {
					t.Errorf("after RETR 2: Seen = %v; want %v", ms[1].Flags.Seen, !off)
				}
			})
		}
	})
}

// TestTrashcan: with the trashcan policy, QUIT moves deleted messages to
// Trash through storage.Discard.
func TestTrashcan(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{trashcan: true})
		c := e.login()
		c.send("DELE 2")
		c.expect("+OK *")
		c.send("QUIT")
		c.expect("+OK *")
		ctx := context.Background()
		trash, err := e.store.Mailbox(ctx, e.acct.ID, e.acct.ID, "Trash")
		if err != nil {
			t.Fatal(err)
		}
		if trash.Messages != 1 {
			t.Errorf("Trash has %d messages; want 1", trash.Messages)
		}
		if got := len(e.inboxUIDs()); got != 2 {
			t.Errorf("INBOX has %d messages; want 2", got)
		}
		// Discarding from Trash itself expunges.
		removed, err := storage.Discard(ctx, e.store, e.acct.ID, e.acct.ID, trash.ID, storage.UIDSet{{Start: 1, Stop: 0}}, true)
		if err != nil || len(removed) != 1 {
			t.Errorf("Discard(Trash) = %v, %v; want 1 UID, nil", removed, err)
		}
		if trash, _ = e.store.Mailbox(ctx, e.acct.ID, e.acct.ID, "Trash"); trash.Messages != 0 {
			t.Errorf("Trash has %d messages after Discard; want 0", trash.Messages)
		}
		if _, err := storage.Discard(ctx, e.store, e.acct.ID, e.acct.ID, e.inbox.ID, nil, false); err == nil {
			t.Errorf("Discard(nil set) = nil error; want ErrInvalid")
		}
	})
}

// TestSTLSPlaintextInjectionRejected: commands sent in the same packet as
// STLS must never run inside the TLS session (CVE-2011-0411 class).
func TestSTLSPlaintextInjectionRejected(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.dial(false)
		c.expect("+OK *")
		io.WriteString(c.conn, "STLS\r\nUSER "+alice+"\r\n")
		c.expect("-ERR data after STLS")
		if !c.eof() {
			t.Fatalf("connection open after injected STLS; want closed")
		}
	})
}

// TestPipelining: a burst of commands in one write gets every reply, in
// order (RFC 2449 §6.6).
func TestPipelining(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.dial(true)
		c.expect("+OK *")
		var b strings.Builder
		b.WriteString("USER " + alice + "\r\nPASS " + alicePass + "\r\n")
		for i := 0; i < 50; i++ {
			b.WriteString("STAT\r\nLIST 2\r\nNOOP\r\n")
		}
		b.WriteString("QUIT\r\n")
		io.WriteString(c.conn, b.String())
		c.expect("+OK send PASS")
		c.expect("+OK maildrop has 3 messages (398 octets)")
		for i := 0; i < 50; i++ {
			c.expect("+OK 3 398")
			c.expect("+OK 2 140")
			c.expect("+OK")
		}
		c.expect("+OK * signing off *")
	})
}

// TestOverlongLineBounded: an endless line is discarded with bounded
// memory and the connection closed.
func TestOverlongLineBounded(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.dial(true)
		c.expect("+OK *")
		go func() {
			chunk := bytes.Repeat([]byte("A"), 8192)
			for i := 0; i < 64; i++ { // 512 KiB without a line end
				if _, err := c.conn.Write(chunk); err != nil {
					return
				}
			}
		}()
		if !c.eof() {
			t.Fatalf("connection open after 512 KiB line; want closed")
		}
	})
}

// TestMaxConnsPerIP: connections past the cap get -ERR [SYS/TEMP].
func TestMaxConnsPerIP(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{cfg: Config{MaxConnsPerIP: 2}})
		for _, tlsOn := range []bool{false, true} {
			a, b := e.dial(tlsOn), e.dial(tlsOn)
			a.expect("+OK *")
			b.expect("+OK *")
			c := e.dial(tlsOn)
			c.expect("-ERR [SYS/TEMP] too many connections from your address")
			a.send("QUIT")
			a.expect("+OK *")
			b.send("QUIT")
			b.expect("+OK *")
			e.waitIdle()
		}
	})
}

// TestRateLimitedLogin: over the shared limiter, the reply is
// [LOGIN-DELAY] and no password is checked; three failures close.
func TestRateLimitedLogin(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{authCfg: auth.Config{MaxFailuresAccount: 2}})
		c := e.dial(true)
		c.expect("+OK *")
		c.send("AUTH PLAIN " + plainResp(alice, "wrong"))
		c.expect("-ERR [AUTH] authentication failed")
		c.send("AUTH PLAIN " + plainResp(alice, "wrong"))
		c.expect("-ERR [AUTH] authentication failed")
		c.send("AUTH PLAIN " + plainResp(alice, alicePass))
		c.expect("-ERR [LOGIN-DELAY] too many failed logins; try again later")
		c.expect("-ERR too many failed logins; closing")
		if !c.eof() {
			t.Fatalf("connection open after 3 failed logins; want closed")
		}
	})
}

// TestInsecureAuthLoopback: AllowInsecureAuth permits USER/PASS without
// TLS from loopback.
func TestInsecureAuthLoopback(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{cfg: Config{AllowInsecureAuth: true}})
		c := e.dial(false)
		c.expect("+OK *")
		c.send("USER " + alice)
		c.expect("+OK send PASS")
		c.send("PASS " + alicePass)
		c.expect("+OK maildrop has 3 messages *")
		c.send("QUIT")
		c.expect("+OK *")
	})
}

// TestShutdown: clients are told, nothing is deleted, Serve returns.
func TestShutdown(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.login()
		c.send("DELE 1")
		c.expect("+OK *")
		idle := e.dial(false)
		idle.expect("+OK *")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
		c.expect("-ERR [SYS/TEMP] server shutting down")
		idle.expect("-ERR [SYS/TEMP] server shutting down")
		if got := len(e.inboxUIDs()); got != 3 {
			t.Errorf("INBOX has %d messages after shutdown; want 3", got)
		}
		if _, err := net.Dial("tcp", e.plain); err == nil {
			t.Errorf("Dial after Shutdown succeeded; want refused")
		}
	})
}

// TestLeaseLost: when another holder takes the maildrop, the session ends
// without deleting anything.
func TestLeaseLost(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{cfg: Config{LeaseTTL: time.Hour, LeaseRefresh: 10 * time.Millisecond}})
		c := e.login()
		c.send("DELE 1")
		c.expect("+OK *")
		var holder string
		e.srv.mu.Lock()
		for s := range e.srv.sessions {
			holder = s.holder
		}
		e.srv.mu.Unlock()
		ctx := context.Background()
		name := fmt.Sprintf("pop3:%d", e.acct.ID)
		if err := e.srv.leases.ReleaseLease(ctx, name, holder); err != nil {
			t.Fatal(err)
		}
		if ok, err := e.srv.leases.AcquireLease(ctx, name, "thief", time.Hour); !ok || err != nil {
			t.Fatalf("AcquireLease(thief) = %v, %v; want true, nil", ok, err)
		}
		c.send("QUIT")
		c.expect("-ERR [SYS/TEMP] maildrop lock lost; nothing was deleted")
		if got := len(e.inboxUIDs()); got != 3 {
			t.Errorf("INBOX has %d messages; want 3", got)
		}
	})
}

// TestImportedUIDL: a message imported with a foreign UIDL keeps it.
func TestImportedUIDL(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{noSeed: true})
		body := "Subject: imported\r\n\r\nx\r\n"
		a, err := message.Analyze(strings.NewReader(body), int64(len(body)), message.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Append(context.Background(), e.acct.ID, e.acct.ID, e.inbox.ID, storage.BytesSource(body), storage.NewMessage{Analysis: a, ImportUIDL: "000001a2b3c4"}); err != nil {
			t.Fatal(err)
		}
		c := e.login()
		c.send("UIDL 1")
		c.expect("+OK 1 000001a2b3c4")
	})
}

// TestDisabledAccountEndsSession: disabling the account ends an open
// session without deleting what it marked (DESIGN.md §Identity).
func TestDisabledAccountEndsSession(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{authCfg: auth.Config{SessionCheck: 10 * time.Millisecond}})
		c := e.dial(true)
		c.expect("+OK *")
		c.send("AUTH PLAIN " + plainResp(alice, alicePass))
		c.expect("+OK maildrop has 3 messages *")
		c.send("DELE 1")
		c.expect("+OK *")
		if err := e.dir.SetEnabled(context.Background(), alice, false); err != nil {
			t.Fatal(err)
		}
		c.expect("-ERR [AUTH] account disabled; nothing was deleted")
		if !c.eof() {
			t.Fatalf("connection open after the account was disabled; want closed")
		}
		ms, err := e.store.Messages(context.Background(), e.acct.ID, e.acct.ID, e.inbox.ID, nil, storage.MessageOptions{})
		if err != nil || len(ms) != 3 {
			t.Errorf("maildrop holds %d messages (%v); want 3", len(ms), err)
		}
	})
}
