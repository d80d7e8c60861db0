package smtpd

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"tidings/storage"
)

func TestInboundRecipients(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		ctx := context.Background()
		if err := e.dir.AddAlias(ctx, "team@example.test", []string{alice, bob}); err != nil {
			t.Fatalf("AddAlias = %v", err)
		}
		if _, err := e.dir.AddDomain(ctx, "relay.test"); err != nil {
			t.Fatalf("AddDomain = %v", err)
		}
		if err := e.dir.SetRelay(ctx, "relay.test", "127.0.0.1:1"); err != nil {
			t.Fatalf("SetRelay = %v", err)
		}
		if err := e.dir.AddAlias(ctx, "listed@relay.test", nil); err != nil {
			t.Fatalf("AddAlias(listed@relay.test) = %v", err)
		}
		tests := []struct {
			name, rcpt, want string
		}{
			{"local user", alice, "250 2.0.0"},
			{"subaddress", "alice+lists@example.test", "250 2.0.0"},
			{"case folded", "ALICE@Example.Test", "250 2.0.0"},
			{"alias", "team@example.test", "250 2.0.0"},
			{"postmaster bare", "postmaster", "250 2.0.0"},
			{"postmaster@", "postmaster@example.test", "250 2.0.0"},
			{"abuse@", "abuse@example.test", "250 2.0.0"},
			{"unknown user", "nobody@example.test", "550 5.1.1"},
			{"not our domain", "someone@elsewhere.test", "554 5.7.1"},
			{"relay domain listed", "listed@relay.test", "250 2.0.0"},
			{"relay domain unlisted", "other@relay.test", "550 5.1.1"},
			{"percent hack", "someone%elsewhere.test@example.test", "553 5.1.3"},
			{"bang path", "elsewhere.test!someone@example.test", "553 5.1.3"},
			{"quoted at", `"someone@elsewhere.test"@example.test`, "553 5.1.3"},
			{"source route to remote", "@example.test:someone@elsewhere.test", "554 5.7.1"},
			{"address literal", "someone@[127.0.0.1]", "553 5.1.3"},
			{"utf8 without SMTPUTF8", "jörg@example.test", "553 5.6.7"},
		}
		c := e.dial(e.mxAddr)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := c.Mail("someone@sender.test", nil); err != nil {
					t.Fatalf("Mail = %v", err)
				}
				// The client library quotes nothing: write the path as is.
				got := code(c.Rcpt(tt.rcpt, nil))
				if !strings.HasPrefix(got, tt.want) {
					t.Errorf("RCPT TO:<%s> = %q; want %q", tt.rcpt, got, tt.want)
				}
				if err := c.Reset(); err != nil {
					t.Fatalf("Reset = %v", err)
				}
			})
		}
	})
}

func TestInboundDelivery(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		ctx := context.Background()
		if err := e.dir.AddAlias(ctx, "team@example.test", []string{alice, bob}); err != nil {
			t.Fatalf("AddAlias = %v", err)
		}
		c := e.dial(e.mxAddr)
		// The forged fields are added in transit, after the signature.
		msg := "Return-Path: <forged@evil.test>\r\n" +
			"Authentication-Results: mx.example.test; dkim=pass header.d=forged.test\r\n" +
			"Authentication-Results: other.test; spf=pass\r\n" + e.signed(simpleMsg("someone@sender.test", "hello"))
		if err := send(c, "someone@sender.test", []string{"team@example.test", "alice+x@example.test"}, msg, nil); err != nil {
			t.Fatalf("send = %v", err)
		}
		for _, who := range []string{alice, bob} {
			box := e.inbox(who)
			if len(box) != 1 {
				t.Fatalf("inbox(%q) has %d messages; want 1", who, len(box))
			}
			m := box[0]
			for _, want := range []string{
				"Return-Path: <someone@sender.test>\r\n",
				"Delivered-To: " + who + "\r\n",
				"X-Original-To: team@example.test\r\n",
				"Received: from client.sender.test ([127.0.0.1])",
				"by mx.example.test (Tidings) with ESMTP id ",
				"Authentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=someone@sender.test;\r\n\tdkim=pass header.d=sender.test;\r\n\tdmarc=pass header.from=sender.test\r\n",
				"Authentication-Results: other.test; spf=pass\r\n",
			} {
				if !strings.Contains(m, want) {
					t.Errorf("message for %s lacks %q:\n%s", who, want, m)
				}
			}
			for _, bad := range []string{"forged@evil.test", "forged.test"} {
				if strings.Contains(m, bad) {
					t.Errorf("message for %s still carries %q:\n%s", who, bad, m)
				}
			}
		}
	})
}

func TestInboundChecks(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{mx: func(c *Config) { c.MaxRecipients = 3; c.MaxMessageBytes = 64 << 10 }})
		c := e.dial(e.mxAddr)
		loop := strings.Repeat("Received: from a by b; Mon, 02 Jan 2006 15:04:05 +0000\r\n", 51)
		tests := []struct {
			name string
			from string
			to   []string
			msg  string
			opts *smtp.MailOptions
			want string
		}{
			{"dmarc reject", "someone@strict.test", []string{alice}, simpleMsg("someone@strict.test", "dmarc"), nil, "550 5.7.1"},
			{"dmarc reject on From only", "someone@sender.test", []string{alice}, simpleMsg("boss@strict.test", "dmarc2"), nil, "550 5.7.1"},
			{"loop", "someone@sender.test", []string{alice}, loop + simpleMsg("someone@sender.test", "loop"), nil, "554 5.4.6"},
			{"size declared", "someone@sender.test", []string{alice}, "x", &smtp.MailOptions{Size: 1 << 20}, "552 5.3.4"},
			{"size actual", "someone@sender.test", []string{alice}, simpleMsg("someone@sender.test", "big") + strings.Repeat("0123456789abcdef\r\n", 5000), nil, "552 5.3.4"},
			{"too many recipients", "someone@sender.test", []string{alice, bob, "postmaster@example.test", "abuse@example.test"}, "x", nil, "452 4.5.3"},
			{"utf8 sender without SMTPUTF8", "jörg@sender.test", []string{alice}, "x", nil, "553 5.6.7"},
			{"null sender", "", []string{alice}, simpleMsg("mailer-daemon@nodmarc.test", "bounce"), nil, "250 2.0.0"},
			{"malformed sender", "no-at-sign", []string{alice}, "x", nil, "501 5.5.2"}, // go-smtp refuses it first
			{"malformed sender domain", "a@bad_domain..test", []string{alice}, "x", nil, "553 5.1.7"},
			{"percent in sender is not a relay trick", "gw%host@nodmarc.test", []string{alice}, simpleMsg("gw@nodmarc.test", "pct"), nil, "250 2.0.0"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got := code(send(c, tt.from, tt.to, tt.msg, tt.opts))
				if got != tt.want {
					t.Errorf("send(%q → %v) = %q; want %q", tt.from, tt.to, got, tt.want)
				}
				c.Reset()
			})
		}
		if n := len(e.inbox(alice)); n != 2 {
			t.Errorf("alice has %d messages; want 2 (the null-sender and the %%-sender ones)", n)
		}
	})
}

func TestSMTPUTF8(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.dial(e.mxAddr)
		if err := send(c, "jörg@sender.test", []string{alice}, simpleMsg("someone@sender.test", "utf8"), &smtp.MailOptions{UTF8: true}); err != nil {
			t.Fatalf("send with SMTPUTF8 = %v; want 250", err)
		}
		if n := len(e.inbox(alice)); n != 1 {
			t.Errorf("alice has %d messages; want 1", n)
		}
	})
}

// TestSMTPSmugglingRefused covers the CVE-2023-51764 family: a second
// message hidden behind a bare-LF or bare-CR "end of data".
func TestSMTPSmugglingRefused(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		smuggled := "MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
		tests := []struct{ name, end string }{
			{`\n.\n`, "\n.\n"},
			{`\n.\r\n`, "\n.\r\n"},
			{`\r.\r`, "\r.\r"},
			{`\r\n.\r`, "\r\n.\r"},
			{`\r.\r\n`, "\r.\r\n"},
			{`bare LF in body`, "\nplain\n"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := dialRaw(t, e.mxAddr)
				r.cmd("EHLO client.sender.test")
				if got := r.cmd("MAIL FROM:<someone@sender.test>"); !strings.HasPrefix(got, "250") {
					t.Fatalf("MAIL = %q", got)
				}
				if got := r.cmd("RCPT TO:<alice@example.test>"); !strings.HasPrefix(got, "250") {
					t.Fatalf("RCPT = %q", got)
				}
				if got := r.cmd("DATA"); !strings.HasPrefix(got, "354") {
					t.Fatalf("DATA = %q", got)
				}
				r.write("Subject: innocent\r\n\r\nhello" + tt.end + smuggled + ".\r\n")
				got := r.reply()
				if tt.name == `\r\n.\r` {
					// go-smtp drops ".\r" after CRLF (doc.go); what is left
					// is one ordinary message with the rest as its body.
					if !strings.HasPrefix(got, "250") {
						t.Errorf("end of DATA = %q; want 250", got)
					}
				} else if !strings.HasPrefix(got, "550 5.5.2") {
					t.Errorf("end of DATA = %q; want 550 5.5.2", got)
				}
				// Whatever followed is not a second transaction.
				if got := r.cmd("NOOP"); !strings.HasPrefix(got, "250") {
					t.Errorf("NOOP after DATA = %q; want 250", got)
				}
				r.cmd("QUIT")
			})
		}
		t.Run("BDAT", func(t *testing.T) {
			r := dialRaw(t, e.mxAddr)
			r.cmd("EHLO client.sender.test")
			r.cmd("MAIL FROM:<someone@sender.test>")
			r.cmd("RCPT TO:<alice@example.test>")
			chunk := "Subject: innocent\r\n\r\nhello\n.\n" + smuggled + ".\r\n"
			r.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk), chunk))
			if got := r.reply(); !strings.HasPrefix(got, "550 5.5.2") {
				t.Errorf("BDAT with bare LFs = %q; want 550 5.5.2", got)
			}
		})
		if n := len(e.inbox(bob)); n != 0 {
			t.Errorf("bob has %d messages; want 0 (nothing smuggled)", n)
		}
	})
}

// TestSTARTTLSPipeliningRefused is CVE-2011-0411: commands injected in
// plaintext after STARTTLS must not run in the TLS session.
func TestSTARTTLSPipeliningRefused(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		r := dialRaw(t, e.mxAddr)
		r.cmd("EHLO client.sender.test")
		r.write("STARTTLS\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n")
		if got := r.reply(); !strings.HasPrefix(got, "220") {
			t.Fatalf("STARTTLS = %q; want 220", got)
		}
		tc := tls.Client(r.c, &tls.Config{InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err == nil {
			t.Errorf("TLS handshake after pipelined STARTTLS succeeded; want the connection refused")
		}
		// Give the server the chance to process anything buffered, then
		// make sure nothing was delivered.
		c := e.dial(e.mxAddr)
		c.Noop()
		if n := len(e.inbox(bob)); n != 0 {
			t.Errorf("bob has %d messages; want 0", n)
		}
	})
}

func TestSTARTTLSResetsState(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c, err := smtp.DialStartTLS(e.mxAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("DialStartTLS = %v", err)
		}
		defer c.Close()
		if err := send(c, "someone@sender.test", []string{alice}, simpleMsg("someone@sender.test", "tls"), nil); err != nil {
			t.Fatalf("send over TLS = %v", err)
		}
		box := e.inbox(alice)
		if len(box) != 1 || !strings.Contains(box[0], "with ESMTPS id") || !strings.Contains(box[0], "(version=TLS1.3 cipher=") {
			t.Errorf("message over STARTTLS lacks TLS details in Received:\n%v", box)
		}
		// Raw: after STARTTLS the client must say EHLO again.
		r := dialRaw(t, e.mxAddr)
		r.cmd("EHLO client.sender.test")
		r.cmd("MAIL FROM:<someone@sender.test>")
		if got := r.cmd("STARTTLS"); !strings.HasPrefix(got, "220") {
			t.Fatalf("STARTTLS = %q", got)
		}
		tc := tls.Client(r.c, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("Handshake = %v", err)
		}
		r2 := &raw{t: t, c: tc, br: newReader(tc)}
		if got := r2.cmd("RCPT TO:<alice@example.test>"); !strings.HasPrefix(got, "502") {
			t.Errorf("RCPT right after STARTTLS = %q; want 502 (state reset)", got)
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{mx: func(c *Config) { c.IdleTimeout = 200 * time.Millisecond }})
		r := dialRaw(t, e.mxAddr)
		r.cmd("EHLO client.sender.test")
		if got := r.reply(); !strings.HasPrefix(got, "421 4.4.2") {
			t.Errorf("reply after idling = %q; want 421 4.4.2", got)
		}
		// Inside DATA the idle limit holds too (ReadTimeout is long).
		r = dialRaw(t, e.mxAddr)
		r.cmd("EHLO client.sender.test")
		r.cmd("MAIL FROM:<someone@sender.test>")
		r.cmd("RCPT TO:<alice@example.test>")
		r.cmd("DATA")
		r.write("Subject: slow\r\n")
		got := r.reply()
		if !strings.HasPrefix(got, "421") {
			t.Errorf("reply after idling in DATA = %q; want 421", got)
		}
	})
}

func TestCommandLimit(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{mx: func(c *Config) { c.MaxCommands = 5 }})
		r := dialRaw(t, e.mxAddr)
		r.cmd("EHLO client.sender.test")
		var got string
		for i := 0; i < 10; i++ {
			got = r.cmd("RSET")
			if strings.HasPrefix(got, "421") || strings.HasPrefix(got, "error") {
				break
			}
			got = r.cmd("MAIL FROM:<a@sender.test>")
			if strings.HasPrefix(got, "421") || strings.HasPrefix(got, "error") {
				break
			}
		}
		if !strings.HasPrefix(got, "421 4.7.0") {
			t.Errorf("reply past the command limit = %q; want 421 4.7.0", got)
		}
	})
}

func TestStoreFailureIsTemporary(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.dial(e.mxAddr)
		if err := c.Mail("someone@sender.test", nil); err != nil {
			t.Fatalf("Mail = %v", err)
		}
		if err := c.Rcpt(alice, nil); err != nil {
			t.Fatalf("Rcpt = %v", err)
		}
		e.store.Close() // the database goes away between RCPT and DATA
		w, err := c.Data()
		if err != nil {
			t.Fatalf("Data = %v", err)
		}
		fmt.Fprint(w, simpleMsg("someone@sender.test", "lost"))
		if got := code(w.Close()); got != "451 4.3.0" {
			t.Errorf("end of DATA with the store closed = %q; want 451 4.3.0", got)
		}
	})
}

func TestOverQuota(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		if err := e.dir.SetQuota(context.Background(), alice, 0, 1); err != nil {
			t.Fatalf("SetQuota = %v", err)
		}
		c := e.dial(e.mxAddr)
		if err := send(c, "someone@sender.test", []string{alice}, simpleMsg("someone@sender.test", "q1"), nil); err != nil {
			t.Fatalf("first send = %v", err)
		}
		c.Mail("someone@sender.test", nil)
		if got := code(c.Rcpt(alice, nil)); got != "452 4.2.2" {
			t.Errorf("RCPT to a full mailbox = %q; want 452 4.2.2", got)
		}
	})
}

func TestSubmission(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		ctx := context.Background()
		acct, err := e.store.AccountByAddress(ctx, alice)
		if err != nil {
			t.Fatalf("AccountByAddress = %v", err)
		}
		if err := e.store.CreateAlias(ctx, storage.Alias{Address: "sales@example.test", Targets: []string{alice}, SendAs: []storage.AccountID{acct.ID}}); err != nil {
			t.Fatalf("CreateAlias = %v", err)
		}
		c := e.dialSubmission(alice)
		noDate := "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nbody\r\n"
		tests := []struct {
			name, from, msg, want string
		}{
			{"own address", alice, noDate, "250 2.0.0"},
			{"subaddress", "alice+x@example.test", strings.Replace(noDate, "alice@", "alice+x@", 1), "250 2.0.0"},
			{"send-as alias", "sales@example.test", strings.Replace(noDate, "alice@", "sales@", 1), "250 2.0.0"},
			{"envelope not owned", bob, noDate, "553 5.7.1"},
			{"From not owned", alice, strings.Replace(noDate, "alice@", "bob@", 1), "553 5.7.1"},
			{"second From not owned", alice, "From: alice@example.test, bob@example.test\r\n\r\nx\r\n", "553 5.7.1"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got := code(send(c, tt.from, []string{bob}, tt.msg, nil))
				if got != tt.want {
					t.Errorf("submit from %q = %q; want %q", tt.from, got, tt.want)
				}
				c.Reset()
			})
		}
		box := e.inbox(bob)
		if len(box) != 3 {
			t.Fatalf("bob has %d messages; want 3", len(box))
		}
		for _, want := range []string{"Date: ", "Message-ID: <", "with ESMTPSA id", "Delivered-To: bob@example.test"} {
			if !strings.Contains(box[0], want) {
				t.Errorf("submitted message lacks %q:\n%s", want, box[0])
			}
		}
	})
}

func TestSubmissionAuth(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		// Plaintext: no AUTH offered, MAIL refused.
		c := e.dial(e.subAddr)
		if ok, _ := c.Extension("AUTH"); ok {
			t.Errorf("AUTH offered without TLS")
		}
		if got := code(c.Mail(alice, nil)); got != "530 5.7.0" {
			t.Errorf("MAIL without AUTH = %q; want 530 5.7.0", got)
		}
		tests := []struct {
			name string
			sasl sasl.Client
			want string
		}{
			{"plain", sasl.NewPlainClient("", alice, alicePass), "250 2.0.0"},
			{"login", sasl.NewLoginClient(alice, alicePass), "250 2.0.0"},
			{"wrong password", sasl.NewPlainClient("", alice, "wrong"), "535 5.7.8"},
			{"other authzid", sasl.NewPlainClient(bob, alice, alicePass), "535 5.7.8"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c, err := smtp.DialTLS(e.subsTLS, &tls.Config{InsecureSkipVerify: true})
				if err != nil {
					t.Fatalf("DialTLS = %v", err)
				}
				defer c.Close()
				if got := code(c.Auth(tt.sasl)); got != tt.want {
					t.Errorf("Auth = %q; want %q", got, tt.want)
				}
			})
		}
	})
}

func TestSubmissionHourlyLimit(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{sub: func(c *Config) { c.MessagesPerHour = 2; c.RecipientsPerHour = 3 }})
		c := e.dialSubmission(alice)
		msg := "From: alice@example.test\r\nSubject: x\r\n\r\nx\r\n"
		for i := 0; i < 2; i++ {
			if err := send(c, alice, []string{bob}, msg, nil); err != nil {
				t.Fatalf("send %d = %v", i, err)
			}
		}
		if got := code(c.Mail(alice, nil)); got != "451 4.7.0" {
			t.Errorf("MAIL past the hourly message limit = %q; want 451 4.7.0", got)
		}
		e2 := newEnv(t, d, envOpts{sub: func(c *Config) { c.RecipientsPerHour = 1 }})
		c2 := e2.dialSubmission(alice)
		c2.Mail(alice, nil)
		c2.Rcpt(bob, nil)
		if got := code(c2.Rcpt(alice, nil)); got != "451 4.7.0" {
			t.Errorf("RCPT past the hourly recipient limit = %q; want 451 4.7.0", got)
		}
	})
}

func TestSubmissionRemoteQueued(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.dialSubmission(alice)
		msg := "From: alice@example.test\r\nTo: friend@elsewhere.test\r\nSubject: out\r\n\r\nhi\r\n"
		if err := send(c, alice, []string{"friend@elsewhere.test", "other@elsewhere.test", bob}, msg, nil); err != nil {
			t.Fatalf("send = %v", err)
		}
		q, err := e.store.QueueList(context.Background(), storage.QueueFilter{})
		if err != nil {
			t.Fatalf("QueueList = %v", err)
		}
		if len(q) != 1 || q[0].Destination != "elsewhere.test" || len(q[0].Recipients) != 2 || q[0].From != alice {
			t.Fatalf("QueueList = %+v; want one message to elsewhere.test with 2 recipients", q)
		}
		for _, want := range []string{"Received: ", "DKIM-Signature: ", "d=example.test"} {
			if !strings.Contains(string(q[0].Prefix), want) {
				t.Errorf("queued prefix = %q; want %q in it", q[0].Prefix, want)
			}
		}
		if n := len(e.inbox(bob)); n != 1 {
			t.Errorf("bob has %d messages; want 1 (local recipient delivered directly)", n)
		}
		// The MX does not relay.
		mc := e.dial(e.mxAddr)
		mc.Mail(alice, nil)
		if got := code(mc.Rcpt("friend@elsewhere.test", nil)); got != "554 5.7.1" {
			t.Errorf("MX RCPT to a remote domain = %q; want 554 5.7.1", got)
		}
	})
}

func TestShutdownSays421(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		r := dialRaw(t, e.mxAddr)
		r.cmd("EHLO client.sender.test")
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- e.mx.Shutdown(ctx)
		}()
		if got := r.reply(); !strings.HasPrefix(got, "421 4.3.2") {
			t.Errorf("idle client at shutdown got %q; want 421 4.3.2", got)
		}
		if err := <-done; err != nil {
			t.Errorf("Shutdown = %v", err)
		}
	})
}

func TestForwardRelayAndLateFailure(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		ctx := context.Background()
		if err := e.dir.AddAlias(ctx, "fwd@example.test", []string{"friend@elsewhere.test"}); err != nil {
			t.Fatalf("AddAlias = %v", err)
		}
		if _, err := e.dir.AddDomain(ctx, "relay.test"); err != nil {
			t.Fatalf("AddDomain = %v", err)
		}
		if err := e.dir.SetRelay(ctx, "relay.test", "gw.relay.test:25"); err != nil {
			t.Fatalf("SetRelay = %v", err)
		}
		if err := e.dir.AddAlias(ctx, "listed@relay.test", nil); err != nil {
			t.Fatalf("AddAlias = %v", err)
		}
		c := e.dial(e.mxAddr)
		if err := send(c, "someone@sender.test", []string{"fwd@example.test", "listed@relay.test"}, e.signed(simpleMsg("someone@sender.test", "fwd")), nil); err != nil {
			t.Fatalf("send = %v", err)
		}
		q, err := e.store.QueueList(ctx, storage.QueueFilter{})
		if err != nil {
			t.Fatalf("QueueList = %v", err)
		}
		byDest := map[string]storage.QueueMessage{}
		for _, m := range q {
			byDest[m.Destination] = m
		}
		if m, ok := byDest["elsewhere.test"]; !ok || !strings.HasPrefix(m.From, "SRS0=") || m.Recipients[0].Address != "friend@elsewhere.test" {
			t.Errorf("forward queued as %+v; want to elsewhere.test from an SRS0 sender", m)
		}
		if m, ok := byDest["gw.relay.test:25"]; !ok || m.From != "someone@sender.test" || m.Recipients[0].Address != "listed@relay.test" {
			t.Errorf("relayed recipient queued as %+v; want to gw.relay.test:25 with the sender kept", m)
		}

		// A group where one member filled up after RCPT: the others get
		// the message, the full one becomes a local-delivery queue item.
		if err := e.dir.AddAlias(ctx, "team@example.test", []string{alice, bob}); err != nil {
			t.Fatalf("AddAlias = %v", err)
		}
		c.Mail("someone@sender.test", nil)
		if err := c.Rcpt("team@example.test", nil); err != nil {
			t.Fatalf("Rcpt = %v", err)
		}
		if err := e.dir.SetQuota(ctx, alice, 1, 0); err != nil { // one byte: full from now on
			t.Fatalf("SetQuota = %v", err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatalf("Data = %v", err)
		}
		w.Write([]byte(simpleMsg("someone@nodmarc.test", "late")))
		if err := w.Close(); err != nil {
			t.Fatalf("end of DATA = %v; want 250 (one recipient's problem fails nobody else)", err)
		}
		if n := len(e.inbox(bob)); n != 1 {
			t.Errorf("bob has %d messages; want 1", n)
		}
		local := storage.QueueLocal
		lq, err := e.store.QueueList(ctx, storage.QueueFilter{Kind: &local})
		if err != nil {
			t.Fatalf("QueueList(local) = %v", err)
		}
		if len(lq) != 1 || len(lq[0].Recipients) != 1 || lq[0].Recipients[0].Address != alice {
			t.Errorf("local queue = %+v; want one item for %s", lq, alice)
		}
	})
}

func TestLineLengthLimit(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		r := dialRaw(t, e.mxAddr)
		r.cmd("EHLO client.sender.test")
		if got := r.cmd("MAIL FROM:<" + strings.Repeat("a", 3000) + "@sender.test>"); !strings.HasPrefix(got, "500 5.4.0") {
			t.Errorf("3000-octet command line = %q; want 500 5.4.0", got)
		}
	})
}

func TestSubmissionLoginLimiter(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		// auth's default: 10 failures per account within the window.
		var got string
		for i := 0; i < 12; i++ {
			c, err := smtp.DialTLS(e.subsTLS, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatalf("DialTLS = %v", err)
			}
			got = code(c.Auth(sasl.NewPlainClient("", alice, "wrong")))
			c.Close()
		}
		if got != "454 4.7.0" {
			t.Errorf("AUTH after 12 failures = %q; want 454 4.7.0 (rate limited)", got)
		}
	})
}

// TestSTARTTLSInBodyIsContent makes sure the pipelining guard follows the
// SMTP framing: a body line "STARTTLS" is message content, not a command.
func TestSTARTTLSInBodyIsContent(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		for _, bdat := range []bool{false, true} {
			r := dialRaw(t, e.mxAddr)
			r.cmd("EHLO client.sender.test")
			r.cmd("MAIL FROM:<someone@nodmarc.test>")
			r.cmd("RCPT TO:<alice@example.test>")
			body := "Subject: tls\r\n\r\nSTARTTLS\r\nmore text\r\n"
			if bdat {
				r.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
			} else {
				r.cmd("DATA")
				r.write(body + ".\r\n")
			}
			if got := r.reply(); !strings.HasPrefix(got, "250 2.0.0") {
				t.Errorf("message with a STARTTLS body line (BDAT %v) = %q; want 250", bdat, got)
			}
			// The session goes on: a real STARTTLS still works.
			if got := r.cmd("STARTTLS"); !strings.HasPrefix(got, "220") {
				t.Errorf("STARTTLS after the message = %q; want 220", got)
			}
		}
		if n := len(e.inbox(alice)); n != 2 {
			t.Errorf("alice has %d messages; want 2", n)
		}
	})
}
