package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"tidings/storage"
)

// A message with two recipients goes through the smarthost in ONE
// transaction with the RFC 3461 parameters passed on, and leaves the queue.
func TestRunnerSmarthost(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		src := e.message("")
		m := remote("sender@origin.example", "a@example.net", "b@example.net")
		id := e.enqueue(src, m)
		e.drain(e.runner(RunnerConfig{}, nil))
		got := e.sink.messages()
		if len(got) != 1 {
			t.Fatalf("sink got %d messages; want 1 transaction", len(got))
		}
		g := got[0]
		if g.from != "sender@origin.example" || strings.Join(g.rcpts, ",") != "a@example.net,b@example.net" {
			t.Errorf("envelope = %q → %v; want sender@origin.example → a, b", g.from, g.rcpts)
		}
		if g.mail.EnvelopeID != "env-42" || g.mail.Return != smtp.DSNReturnHeaders {
			t.Errorf("MAIL ENVID/RET = %q/%q; want env-42/HDRS", g.mail.EnvelopeID, g.mail.Return)
		}
		if o := g.rcptOpts[0]; o.OriginalRecipient != "a@example.net" || len(o.Notify) != 2 || o.Notify[0] != smtp.DSNNotifyFailure {
			t.Errorf("RCPT options = %+v; want ORCPT a@example.net, NOTIFY=FAILURE,DELAY", o)
		}
		want := append(bytes.Clone(m.Prefix), src...)
		if !bytes.Equal(g.data, want) {
			t.Errorf("data = %q; want prefix + blob %q", g.data, want)
		}
		if q := e.queue(); len(q) != 0 {
			t.Errorf("queue after delivery = %d messages; want empty", len(q))
		}
		if n := e.log.count("msg=delivered"); n != 2 {
			t.Errorf("delivered log lines = %d; want 2 (one per recipient)", n)
		}
		if n := e.log.count("id=" + id); n < 2 {
			t.Errorf("log lines with the queue id = %d; want at least 2", n)
		}
	})
}

// Direct delivery looks up the MX (in-process DNS), prefers the lower
// preference and falls back from a dead host to the next.
func TestRunnerMX(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		e.dns.addMX("example.net", "mx1.example.net", 10)
		e.dns.addMX("example.net", "mx0.example.net", 5) // preferred, but dead
		e.dns.addA("mx0.example.net", "127.0.0.2")
		e.dns.addA("mx1.example.net", "127.0.0.1")
		e.dns.addA("implicit.example", "127.0.0.1") // no MX: A fallback
		e.dns.addA("origin.example", "127.0.0.1")   // where DSNs go
		e.enqueue(e.message(""), remote("sender@origin.example", "a@example.net"))
		im := remote("sender@origin.example", "x@implicit.example")
		im.Destination = "implicit.example"
		e.enqueue(e.message(""), im)
		gone := remote("sender@origin.example", "y@nowhere.example")
		gone.Destination = "nowhere.example"
		e.enqueue(e.message(""), gone)
		e.drain(e.runner(RunnerConfig{Port: e.sink.port, ConnectTimeout: 2 * time.Second}, nil))
		var rcpts []string
		for _, m := range e.sink.messages() {
			if m.from != "" {
				rcpts = append(rcpts, m.rcpts...)
			}
		}
		if strings.Join(rcpts, ",") != "a@example.net,x@implicit.example" && strings.Join(rcpts, ",") != "x@implicit.example,a@example.net" {
			t.Errorf("sink recipients = %v; want a@example.net and x@implicit.example", rcpts)
		}
		if n := e.log.count("msg=bounced"); n != 1 || e.log.count("5.1.2") == 0 {
			t.Errorf("bounced lines = %d (5.1.2 seen %d); want the nonexistent domain bounced with 5.1.2", n, e.log.count("5.1.2"))
		}
	})
}

// A 4xx leaves the recipient pending with a later attempt; the retry
// delivers it.
func TestRunnerTempFailureRetries(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		e.sink.setRcpt(func(string) error {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		})
		id := e.enqueue(e.message(""), remote("sender@origin.example", "a@example.net"))
		now := time.Now()
		clock := func() time.Time { return now }
		r := e.runner(RunnerConfig{}, clock)
		e.drain(r)
		q := e.queue()
		if len(q) != 1 || q[0].Recipients[0].Status != storage.RecipientPending || q[0].Recipients[0].Attempts != 1 ||
			!strings.Contains(q[0].Recipients[0].LastReply, "451 4.3.0") || !q[0].NextAttempt.After(now) {
			t.Fatalf("queue after 451 = %+v; want one pending recipient, 1 attempt, the reply, a later attempt", q)
		}
		e.drain(r) // not due yet
		if n := len(e.sink.messages()); n != 0 {
			t.Fatalf("sink got %d messages before the retry; want 0", n)
		}
		e.sink.setRcpt(nil)
		now = q[0].NextAttempt
		e.drain(r)
		if n := len(e.sink.messages()); n != 1 {
			t.Errorf("sink got %d messages after the retry; want 1", n)
		}
		if _, err := e.store.QueueGet(e.ctx, id); err == nil {
			t.Errorf("QueueGet(%s) after delivery = nil error; want not found", id)
		}
	})
}

// dsnParts checks a DSN's RFC 3464 structure and returns the
// delivery-status text and the third part's content type and body.
func dsnParts(t *testing.T, data []byte) (status string, thirdType string, third []byte) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("DSN does not parse: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type = %q; want multipart/report; report-type=delivery-status", msg.Header.Get("Content-Type"))
	}
	if msg.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("DSN Auto-Submitted = %q; want auto-replied", msg.Header.Get("Auto-Submitted"))
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	for i := 0; ; i++ {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part %d: %v", i, err)
		}
		b, _ := io.ReadAll(p)
		ct := p.Header.Get("Content-Type")
		types = append(types, strings.Split(ct, ";")[0])
		switch i {
		case 1:
			status = string(b)
		case 2:
			thirdType, third = strings.Split(ct, ";")[0], b
		}
	}
	if len(types) != 3 || types[0] != "text/plain" || (types[1] != "message/delivery-status" && types[1] != "message/global-delivery-status") {
		t.Fatalf("DSN parts = %v; want text/plain, message/delivery-status, original", types)
	}
	return status, thirdType, third
}

// A 5xx fails the recipient and sends exactly ONE DSN, from the null
// sender to the original sender, honouring RET=HDRS and echoing ENVID and
// ORCPT; the other recipient is delivered.
func TestRunnerPermanentFailureDSN(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		e.sink.setRcpt(func(to string) error {
			if to == "bad@example.net" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}
			return nil
		})
		src := e.message("")
		e.enqueue(src, remote("sender@origin.example", "good@example.net", "bad@example.net"))
		r := e.runner(RunnerConfig{}, nil)
		e.drain(r)
		e.drain(r)
		var dsns []sinkMsg
		for _, m := range e.sink.messages() {
			if m.from == "" {
				dsns = append(dsns, m)
			}
		}
		if len(dsns) != 1 {
			t.Fatalf("DSNs sent = %d; want 1", len(dsns))
		}
		d := dsns[0]
		if strings.Join(d.rcpts, ",") != "sender@origin.example" {
			t.Errorf("DSN to %v; want sender@origin.example", d.rcpts)
		}
		status, typ, third := dsnParts(t, d.data)
		for _, want := range []string{"Reporting-MTA: dns; mail.example.org", "Original-Envelope-Id: env-42",
			"Original-Recipient: rfc822; bad@example.net", "Final-Recipient: rfc822; bad@example.net",
			"Action: failed", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1", "Remote-MTA: dns; 127.0.0.1"} {
			if !strings.Contains(status, want) {
				t.Errorf("delivery-status lacks %q:\n%s", want, status)
			}
		}
		if strings.Contains(status, "good@example.net") {
			t.Errorf("delivery-status reports the delivered recipient:\n%s", status)
		}
		if typ != "text/rfc822-headers" || !bytes.Contains(third, []byte("Subject: test")) || bytes.Contains(third, []byte("body ")) {
			t.Errorf("third part = %s %q; want the original's header only (RET=HDRS)", typ, third)
		}
		if q := e.queue(); len(q) != 0 {
			t.Errorf("queue = %d messages; want empty", len(q))
		}
	})
}

// A failing message from the null sender is never bounced.
func TestRunnerNullSenderNeverBounced(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		e.sink.setRcpt(func(string) error {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
		})
		e.enqueue(e.message(""), remote("", "bad@example.net"))
		r := e.runner(RunnerConfig{}, nil)
		e.drain(r)
		e.drain(r)
		if n := len(e.sink.messages()); n != 0 {
			t.Errorf("sink got %d messages; want none", n)
		}
		if q := e.queue(); len(q) != 0 {
			t.Errorf("queue = %+v; want empty (no DSN queued)", q)
		}
		if n := e.log.count("dsn queued"); n != 0 {
			t.Errorf("dsn queued lines = %d; want 0", n)
		}
	})
}

// Past the give-up time a deferred recipient fails with 4.4.7 and gets a
// DSN; before it, a delay warning goes out once after DelayWarning.
func TestRunnerDelayWarningAndGiveUp(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		e.sink.setRcpt(func(to string) error {
			if to == "slow@example.net" {
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "busy"}
			}
			return nil
		})
		start := time.Now()
		m := remote("sender@origin.example", "slow@example.net")
		m.Created = start
		m.Expires = start.Add(48 * time.Hour)
		id := e.enqueue(e.message(""), m)
		now := start
		r := e.runner(RunnerConfig{GiveUp: 48 * time.Hour}, func() time.Time { return now })
		dsns := func(action string) int {
			n := 0
			for _, sm := range e.sink.messages() {
				if sm.from == "" && bytes.Contains(sm.data, []byte("Action: "+action)) {
					n++
				}
			}
			return n
		}
		e.drain(r)
		if n := dsns("delayed"); n != 0 {
			t.Fatalf("delay DSNs after the first attempt = %d; want 0", n)
		}
		for _, step := range []time.Duration{5 * time.Hour, 10 * time.Hour} {
			now = start.Add(step)
			if err := e.store.QueueRetry(e.ctx, id); err != nil {
				t.Fatalf("QueueRetry = %v", err)
			}
			e.drain(r)
		}
		if n := dsns("delayed"); n != 1 {
			t.Errorf("delay DSNs after 10h = %d; want exactly 1", n)
		}
		if n := dsns("failed"); n != 0 {
			t.Errorf("failure DSNs before give-up = %d; want 0", n)
		}
		now = start.Add(49 * time.Hour)
		e.store.QueueRetry(e.ctx, id)
		e.drain(r)
		e.drain(r)
		if n := dsns("failed"); n != 1 {
			t.Errorf("failure DSNs after give-up = %d; want 1", n)
		}
		for _, sm := range e.sink.messages() {
			if sm.from == "" && bytes.Contains(sm.data, []byte("Action: failed")) {
				status, _, _ := dsnParts(t, sm.data)
				if !strings.Contains(status, "Status: 4.4.7") {
					t.Errorf("give-up DSN status:\n%s\nwant Status: 4.4.7", status)
				}
			}
		}
		if q := e.queue(); len(q) != 0 {
			t.Errorf("queue after give-up = %d; want empty", len(q))
		}
	})
}

// SMTPUTF8 mail to a peer without SMTPUTF8 fails with 5.6.7 and a DSN.
func TestRunnerSMTPUTF8ToPlainPeer(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{noUTF8: true})
		m := remote("sender@origin.example", "ü@example.net")
		m.SMTPUTF8 = true
		m.Recipients[0].ORCPT = ""
		e.enqueue(e.message(""), m)
		r := e.runner(RunnerConfig{}, nil)
		e.drain(r)
		var dsn []byte
		for _, sm := range e.sink.messages() {
			if sm.from != "" {
				t.Errorf("sink accepted the SMTPUTF8 message from %q", sm.from)
			} else {
				dsn = sm.data
			}
		}
		if dsn == nil {
			t.Fatalf("no DSN reached the sink")
		}
		if status, _, _ := dsnParts(t, dsn); !strings.Contains(status, "Status: 5.6.7") {
			t.Errorf("DSN status:\n%s\nwant Status: 5.6.7", status)
		}
	})
}

// Lone CR and lone LF in a queued message reach the wire as CRLF: we never
// relay a smuggling payload.
func TestRunnerNormalisesLineEndings(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		src := storage.BytesSource("Subject: smuggle\r\n\r\nline1\rline2\nline3\r\n.\rMAIL FROM:<evil@x>\n.\nend\r")
		m := remote("sender@origin.example", "a@example.net")
		m.Prefix = nil
		e.enqueue(src, m)
		e.drain(e.runner(RunnerConfig{}, nil))
		got := e.sink.messages()
		if len(got) != 1 {
			t.Fatalf("sink got %d messages; want 1", len(got))
		}
		want := "Subject: smuggle\r\n\r\nline1\r\nline2\r\nline3\r\n.\r\nMAIL FROM:<evil@x>\r\n.\r\nend\r\n"
		if string(got[0].data) != want {
			t.Errorf("received %q; want %q", got[0].data, want)
		}
		wire := e.sink.wireBytes()
		for i, b := range wire {
			if b == '\r' && (i+1 >= len(wire) || wire[i+1] != '\n') {
				t.Fatalf("wire has a lone CR at %d: %q", i, wire[max(0, i-20):min(len(wire), i+20)])
			}
			if b == '\n' && (i == 0 || wire[i-1] != '\r') {
				t.Fatalf("wire has a lone LF at %d: %q", i, wire[max(0, i-20):min(len(wire), i+20)])
			}
		}
	})
}

// A DSN to a local sender is delivered straight into its INBOX.
func TestRunnerDSNToLocalSender(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		e.sink.setRcpt(func(string) error {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
		})
		e.enqueue(e.message(""), remote("user@example.org", "bad@example.net"))
		e.drain(e.runner(RunnerConfig{}, nil))
		inbox, err := e.store.Mailbox(e.ctx, e.user.ID, e.user.ID, "INBOX")
		if err != nil {
			t.Fatalf("Mailbox(INBOX) = %v", err)
		}
		ms, err := e.store.Messages(e.ctx, e.user.ID, e.user.ID, inbox.ID, nil, storage.MessageOptions{Prefix: true})
		if err != nil || len(ms) != 1 {
			t.Fatalf("INBOX messages = %d, %v; want the DSN", len(ms), err)
		}
		if !bytes.Contains(ms[0].Prefix, []byte("Return-Path: <>")) {
			t.Errorf("DSN prefix = %q; want Return-Path: <>", ms[0].Prefix)
		}
		if q := e.queue(); len(q) != 0 {
			t.Errorf("queue = %d; want empty", len(q))
		}
	})
}

// A QueueLocal item (over quota at delivery time) is retried into the
// mailbox once there is room.
func TestRunnerLocalRetry(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		m := storage.QueueMessage{Kind: storage.QueueLocal, From: "sender@origin.example", Destination: "local",
			Recipients: []storage.QueueRecipient{{Address: "user@example.org", Owner: e.user.ID, Prefix: []byte("Delivered-To: user@example.org\r\n")}}}
		if err := e.store.SetQuota(e.ctx, e.user.ID, 1, 0); err != nil {
			t.Fatalf("SetQuota = %v", err)
		}
		id := e.enqueue(e.message(""), m)
		now := time.Now()
		r := e.runner(RunnerConfig{}, func() time.Time { return now })
		e.drain(r)
		q, err := e.store.QueueGet(e.ctx, id)
		if err != nil || q.Recipients[0].Status != storage.RecipientPending || !strings.Contains(q.Recipients[0].LastReply, "4.2.2") {
			t.Fatalf("QueueGet over quota = %+v, %v; want pending with 4.2.2", q, err)
		}
		if err := e.store.SetQuota(e.ctx, e.user.ID, 0, 0); err != nil {
			t.Fatalf("SetQuota = %v", err)
		}
		now = q.NextAttempt
		e.drain(r)
		inbox, _ := e.store.Mailbox(e.ctx, e.user.ID, e.user.ID, "INBOX")
		ms, err := e.store.Messages(e.ctx, e.user.ID, e.user.ID, inbox.ID, nil, storage.MessageOptions{Prefix: true})
		if err != nil || len(ms) != 1 || !bytes.Equal(ms[0].Prefix, m.Recipients[0].Prefix) {
			t.Fatalf("INBOX = %+v, %v; want the retried message with its prefix", ms, err)
		}
		if qs := e.queue(); len(qs) != 0 {
			t.Errorf("queue = %d; want empty", len(qs))
		}
		r2, err := e.store.Check(e.ctx, false)
		if err != nil || !r2.Clean() {
			t.Errorf("Check = %+v, %v; want clean", r2, err)
		}
	})
}

// Two Runners on two store instances of one database deliver 50 messages,
// each exactly once.
func TestTwoRunnersNeverDoubleSend(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		e := newObEnv(t, open, sinkOptions{})
		const n = 50
		for i := range n {
			e.enqueue(storage.BytesSource(fmt.Sprintf("Subject: m%d\r\n\r\nbody\r\n", i)), remote("sender@origin.example", "a@example.net"))
		}
		second := open(t)
		r1 := e.runner(RunnerConfig{Concurrency: 4}, nil)
		r2 := NewRunner(r1.cfg, RunnerDeps{Store: second})
		ctx, cancel := context.WithCancel(e.ctx)
		var wg sync.WaitGroup
		for _, r := range []*Runner{r1, r2} {
			wg.Go(func() { r.Run(ctx) })
		}
		waitFor(t, "the queue to empty", func() bool { return len(e.queue()) == 0 })
		cancel()
		wg.Wait()
		seen := map[string]int{}
		for _, m := range e.sink.messages() {
			seen[string(m.data)]++
		}
		if len(seen) != n {
			t.Errorf("distinct messages received = %d; want %d", len(seen), n)
		}
		for k, c := range seen {
			if c != 1 {
				t.Errorf("%s received %d times; want once", k, c)
			}
		}
	})
}

// Direct MX delivery upgrades with opportunistic STARTTLS (any
// certificate); a smarthost gets verified STARTTLS and AUTH PLAIN.
func TestRunnerTLSAndAuth(t *testing.T) {
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		srvTLS, pool := testCert(t, "smarthost.example")
		e := newObEnv(t, open, sinkOptions{tls: srvTLS})
		e.dns.addMX("example.net", "mx.example.net", 10)
		e.dns.addA("mx.example.net", "127.0.0.1")
		e.enqueue(e.message(""), remote("sender@origin.example", "a@example.net"))
		e.drain(e.runner(RunnerConfig{Port: e.sink.port}, nil))
		got := e.sink.messages()
		if len(got) != 1 || !got[0].tls {
			t.Fatalf("MX delivery = %d messages (tls %v); want 1 over STARTTLS", len(got), len(got) == 1 && got[0].tls)
		}

		authed := newSink(t, sinkOptions{tls: srvTLS, password: "s3cret"})
		e.enqueue(e.message(""), remote("sender@origin.example", "b@example.net"))
		cfg := RunnerConfig{Smarthost: "smarthost.example:" + fmt.Sprint(authed.port), SmarthostTLS: "starttls",
			SmarthostUser: "relay", SmarthostPassword: "s3cret", TLSConfig: &tls.Config{RootCAs: pool}}
		e.dns.addA("smarthost.example", "127.0.0.1")
		e.drain(e.runner(cfg, nil))
		got = authed.messages()
		if len(got) != 1 || !got[0].tls || got[0].user != "relay" {
			t.Fatalf("smarthost delivery = %+v; want 1 message over TLS authenticated as relay", got)
		}

		// A wrong password defers (our configuration problem), never bounces.
		e.enqueue(e.message(""), remote("sender@origin.example", "c@example.net"))
		cfg.SmarthostPassword = "wrong"
		e.drain(e.runner(cfg, nil))
		q := e.queue()
		if len(q) != 1 || q[0].Recipients[0].Status != storage.RecipientPending || !strings.Contains(q[0].Recipients[0].LastReply, "4.7.0") {
			t.Errorf("queue after a refused login = %+v; want the recipient pending with 4.7.0", q)
		}
		// An untrusted certificate for a verified smarthost defers too.
		cfg.SmarthostPassword = "s3cret"
		cfg.TLSConfig = nil
		e.store.QueueRetry(e.ctx, q[0].ID)
		e.drain(e.runner(cfg, nil))
		if len(authed.messages()) != 1 {
			t.Errorf("smarthost with an unverifiable certificate got a message; want none")
		}
	})
}
