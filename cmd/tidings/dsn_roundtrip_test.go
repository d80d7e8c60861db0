package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"tidings/config"
	"tidings/internal/dnstest"
	"tidings/storage"
	"tidings/storage/postgres/pgtest"
)

// arrivalWait bounds every wait for mail to cross from one instance to
// the other. It is a deadline, not a timing assertion: the loop ends as
// soon as the message is there.
const arrivalWait = 60 * time.Second

// domainInstance is an installation serving one domain with one user,
// set up through the CLI.
type domainInstance struct {
	*instance
	cfg  string
	user string // the user's address
	pass string
}

// newDomainInstance migrates a fresh installation (SQLite, or PostgreSQL
// through pgtest) whose hostname is mx.DOMAIN, adds domain and
// local@domain, and appends smtp (a "[smtp]" table or "") to its config.
func newDomainInstance(t *testing.T, driver, domain, local, smtpTable string) *domainInstance {
	t.Helper()
	dir := t.TempDir()
	db := ""
	if driver == "postgres" {
		db = fmt.Sprintf("database = %q\n", pgtest.NewDatabase(t))
	}
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, fmt.Sprintf("hostname = %q\ndata_dir = %q\n%s%s%s", "mx."+domain, data, db, loopbackListen(), smtpTable))
	d := &domainInstance{
		instance: &instance{name: driver, flags: []string{"--config", cfg}, dir: data},
		cfg:      cfg,
		user:     local + "@" + domain,
		pass:     "secret password for " + local,
	}
	for _, args := range [][]string{{"migrate"}, {"domain", "add", domain}, {"user", "add", d.user, "--password-stdin"}} {
		if r := d.tidings(t, d.pass+"\n", args...); r.code != 0 {
			t.Fatalf("tidings %q = %d, stderr %q", args, r.code, r.stderr)
		}
	}
	return d
}

// count is `tidings message count ADDRESS MAILBOX`.
func (d *domainInstance) count(t *testing.T, addr, mailbox string) int {
	t.Helper()
	r := d.tidings(t, "", "message", "count", addr, mailbox)
	if r.code != 0 {
		t.Fatalf("tidings message count %s %s = %d, stderr %q", addr, mailbox, r.code, r.stderr)
	}
	n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatalf("tidings message count printed %q", r.stdout)
	}
	return n
}

// waitCount polls the mailbox until it holds at least want messages or
// arrivalWait passes, and returns the last count.
func (d *domainInstance) waitCount(t *testing.T, addr, mailbox string, want int) int {
	t.Helper()
	deadline := time.Now().Add(arrivalWait)
	for {
		n := d.count(t, addr, mailbox)
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop ends a server with SIGTERM (a clean shutdown: the store is closed)
// and waits for it, with SIGKILL if it overstays.
func (s *server) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(arrivalWait):
		// SIGQUIT makes the Go runtime print every goroutine and exit:
		// the log then says where the shutdown hung.
		s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.kill()
		}
		t.Errorf("tidings serve ignored SIGTERM for %v; the end of its log:\n%s", arrivalWait, s.log.String())
	}
}

// submit sends one message as the user through the implicit-TLS
// submission port (RFC 8314) with AUTH PLAIN; nil only after the 250.
func (d *domainInstance) submit(addr, to, subject string) error {
	// The instance's certificate is the self-signed one tidings serve
	// makes for itself: nothing to verify it against.
	c, err := smtp.DialTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.example.net"); err != nil {
		return err
	}
	if err := c.Auth(sasl.NewPlainClient("", d.user, d.pass)); err != nil {
		return err
	}
	if err := c.Mail(d.user, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nHello across the two instances.\r\n", d.user, to, subject)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// inboxOf reads addr's INBOX (prefix + body of each message) through the
// store the config at cfgPath names, opened as the CLI opens it (same
// blob store); the server using it must have stopped.
func inboxOf(t *testing.T, cfgPath, addr string) []string {
	t.Helper()
	ctx := context.Background()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("config.Load(%q) = %v", cfgPath, err)
	}
	st, err := openStore(ctx, cfg, nil, false)
	if err != nil {
		t.Fatalf("openStore(%s) = %v", cfgPath, err)
	}
	defer st.Close()
	acct, err := st.AccountByAddress(ctx, addr)
	if err != nil {
		t.Fatalf("AccountByAddress(%q) = %v", addr, err)
	}
	mb, err := st.Mailbox(ctx, storage.System, acct.ID, "INBOX")
	if err != nil {
		t.Fatalf("Mailbox(INBOX) = %v", err)
	}
	msgs, err := st.Messages(ctx, storage.System, acct.ID, mb.ID, nil, storage.MessageOptions{Prefix: true})
	if err != nil {
		t.Fatalf("Messages = %v", err)
	}
	var out []string
	for _, m := range msgs {
		_, r, err := st.OpenMessage(ctx, storage.System, acct.ID, mb.ID, m.UID)
		if err != nil {
			t.Fatalf("OpenMessage(%d) = %v", m.UID, err)
		}
		b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		r.Close()
		if err != nil {
			t.Fatalf("reading message %d: %v", m.UID, err)
		}
		out = append(out, string(m.Prefix)+string(b))
	}
	return out
}

// TestDSNRoundTrip is the DSN round trip with a second Tidings
// instance as the remote MX. Instance A (SQLite) serves a.test with
// alice; instance B (PostgreSQL) serves b.test with bob. A finds B by an
// MX lookup in the in-process DNS server, on B's random port
// ([smtp] outbound_port). Alice submits one message to bob, which must
// reach bob's INBOX on B, and one to nobody@b.test, which B refuses at
// RCPT with 550 5.1.1: A's runner fails it permanently and alice gets one
// RFC 3464 DSN from the null sender.
func TestDSNRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two servers")
	}
	bin := os.Getenv(binEnv)
	dns := dnstest.New(t)
	// SPF for a.test passes from loopback, so B judges A's mail as a real
	// MX would and accepts it on its merits.
	dns.TXT("a.test", "v=spf1 ip4:127.0.0.1 -all")
	dns.TXT("b.test", "v=spf1 ip4:127.0.0.1 -all")
	dnsOnly := fmt.Sprintf("[smtp]\ndns_server = %q\n", dns.Addr)

	b := newDomainInstance(t, "postgres", "b.test", "bob", dnsOnly)
	srvB := startServe(t, bin, b.cfg)
	_, portB, err := net.SplitHostPort(srvB.smtp)
	if err != nil {
		t.Fatalf("B's smtp address %q: %v", srvB.smtp, err)
	}
	dns.MX("b.test", &net.MX{Host: "mx.b.test.", Pref: 10})
	dns.A("mx.b.test", net.IPv4(127, 0, 0, 1))
	dns.MX("a.test", &net.MX{Host: "mx.a.test.", Pref: 10})
	dns.A("mx.a.test", net.IPv4(127, 0, 0, 1))

	a := newDomainInstance(t, "sqlite", "a.test", "alice", dnsOnly+"outbound_port = "+portB+"\n")
	srvA := startServe(t, bin, a.cfg)
	subA := srvA.addrs["submissions"]
	if subA == "" {
		t.Fatalf("A has no submissions listener: %v", srvA.addrs)
	}

	start := time.Now()
	for _, to := range []string{"bob@b.test", "nobody@b.test"} {
		if err := a.submit(subA, to, "round trip to "+to); err != nil {
			t.Fatalf("submit to %s on A = %v; want 250", to, err)
		}
	}
	if got := b.waitCount(t, "bob@b.test", "INBOX", 1); got != 1 {
		t.Errorf("bob@b.test INBOX on B has %d messages after up to %v; want 1", got, arrivalWait)
	}
	if got := a.waitCount(t, a.user, "INBOX", 1); got != 1 {
		t.Fatalf("alice@a.test INBOX on A has %d messages after up to %v; want the 1 DSN", got, arrivalWait)
	}
	t.Logf("delivery to B and the DSN back to A took %v", time.Since(start).Round(time.Millisecond))
	// Nothing more arrives: the DSN is the only one, and the queue of A
	// is empty (bob's message sent, nobody's failed and bounced).
	if r := a.tidings(t, "", "queue", "list"); r.code != 0 || strings.Contains(r.stdout, "@") {
		t.Errorf("tidings queue list on A = %d, %q; want an empty queue", r.code, r.stdout)
	}
	srvB.stop(t)
	srvA.stop(t)

	inbox := inboxOf(t, a.cfg, a.user)
	if len(inbox) != 1 {
		t.Fatalf("alice's INBOX read through the store has %d messages; want 1", len(inbox))
	}
	checkDSN(t, inbox[0], "nobody@b.test", "5.1.1", []string{
		// RFC 3464 §2.2.2 and §2.3.5-6: A reports, B (found by MX) refused.
		`(?mi)^Reporting-MTA:\s*dns;\s*mx\.a\.test\s*$`,
		`(?mi)^Remote-MTA:\s*dns;\s*mx\.b\.test\s*$`,
		`(?mi)^Diagnostic-Code:\s*smtp;\s*550[ -]5\.1\.1`,
	})
}

// checkDSN checks that raw is an RFC 3464 failure report from the null
// sender about rcpt with the given status, whose delivery-status part
// also matches every regexp of more.
func checkDSN(t *testing.T, raw, rcpt, status string, more []string) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("mail.ReadMessage(DSN) = %v\n%s", err, raw)
	}
	if got := msg.Header.Get("Return-Path"); got != "<>" {
		t.Errorf("DSN Return-Path = %q; want <> (RFC 3464 §2: the null sender)", got)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type = %q, %v, %v; want multipart/report; report-type=delivery-status (RFC 3462)", mt, params, err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var report string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part: %v", err)
		}
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if pt == "message/delivery-status" || pt == "message/global-delivery-status" {
			b, err := io.ReadAll(p)
			if err != nil {
				t.Fatalf("reading the delivery-status part: %v", err)
			}
			report = string(b)
		}
	}
	if report == "" {
		t.Fatalf("DSN has no message/delivery-status part:\n%s", raw)
	}
	// RFC 3464 §2.3: per-recipient fields.
	for _, want := range append([]string{
		`(?mi)^Final-Recipient:\s*rfc822;\s*` + regexp.QuoteMeta(rcpt) + `\s*$`,
		`(?mi)^Action:\s*failed\s*$`,
		`(?mi)^Status:\s*` + regexp.QuoteMeta(status) + `\s*$`,
	}, more...) {
		if !regexp.MustCompile(want).MatchString(report) {
			t.Errorf("delivery-status part lacks %s:\n%s", want, report)
		}
	}
}
