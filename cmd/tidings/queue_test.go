package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"tidings/storage"
)

// enqueueDirect opens the instance's store in the test process and queues
// a message, as the server's delivery would (the CLI only reads and
// manages the queue).
func enqueueDirect(t *testing.T, in *instance, m storage.QueueMessage) string {
	t.Helper()
	ctx := context.Background()
	o := &options{}
	for i := 0; i+1 < len(in.flags); i += 2 {
		switch in.flags[i] {
		case "--data":
			o.data = in.flags[i+1]
		case "--config":
			o.config = in.flags[i+1]
		}
	}
	cfg, err := loadConfig(o)
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	// The same store options as the binary (blobs on the filesystem in
	// local mode).
	st, err := openStore(ctx, cfg, slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer st.Close()
	src := storage.BytesSource("From: a@origin.test\r\nSubject: queued for the CLI\r\n\r\nbody\r\n")
	ids, err := st.Enqueue(ctx, src, []storage.QueueMessage{m})
	if err != nil || len(ids) != 1 {
		t.Fatalf("Enqueue = %v, %v", ids, err)
	}
	return ids[0]
}

func TestQueueDKIMDNS(t *testing.T) {
	backends := []struct {
		name string
		make func(t *testing.T) *instance
	}{
		{"sqlite", sqliteInstance},
		{"postgres", func(t *testing.T) *instance { return postgresInstance(t, `hostname = "mail.example.test"`) }},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			in := b.make(t)
			for _, s := range []step{
				{args: []string{"domain", "add", "example.test"}},
				{args: []string{"queue", "list"}, stdout: `^queue is empty\n$`},
				{args: []string{"dkim", "generate", "example.test"}, stdout: `(?m)^ed\d{6}\._domainkey\.example\.test\. IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/=]{44}"$`},
				{args: []string{"dkim", "generate", "example.test", "--selector", "big", "--algorithm", "rsa"}, stdout: `(?m)^big\._domainkey\.example\.test\. IN TXT "v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]+" "[A-Za-z0-9+/=]+"$`},
				{args: []string{"dkim", "generate", "nowhere.test"}, code: 1, stderr: `nowhere\.test.*tidings domain add`},
				{args: []string{"dkim", "generate", "example.test", "--algorithm", "dsa"}, code: 2, stderr: `dsa`},
				{args: []string{"dkim", "generate"}, code: 2},
				{args: []string{"dns", "example.test"}, has: []string{
					`(?m)^example\.test\.\s+IN MX\s+10 \S+\.$`,
					`(?m)^example\.test\.\s+IN TXT\s+"v=spf1 mx -all"$`,
					`(?m)^ed\d{6}\._domainkey\.example\.test\.\s+IN TXT\s+"v=DKIM1; k=ed25519; p=`,
					`(?m)^big\._domainkey\.example\.test\.\s+IN TXT\s+"v=DKIM1; k=rsa; p=`,
					`(?m)^_dmarc\.example\.test\.\s+IN TXT\s+"v=DMARC1; p=quarantine; rua=mailto:postmaster@example\.test"$`,
					`(?m)^_submission\._tcp\.example\.test\.\s+IN SRV\s+0 1 587 `,
					`(?m)^_submissions\._tcp\.example\.test\.\s+IN SRV\s+0 1 465 `,
					`(?m)^_imap\._tcp\.example\.test\.\s+IN SRV\s+0 1 143 `,
					`(?m)^_imaps\._tcp\.example\.test\.\s+IN SRV\s+0 1 993 `,
					`(?m)^_pop3\._tcp\.example\.test\.\s+IN SRV\s+0 1 110 `,
					`(?m)^_pop3s\._tcp\.example\.test\.\s+IN SRV\s+0 1 995 `,
					`(?m)^autoconfig\.example\.test\.\s+IN CNAME`,
					`(?m)^autodiscover\.example\.test\.\s+IN CNAME`,
				}},
				{args: []string{"dns", "nowhere.test"}, code: 1, stderr: `nowhere\.test`},
				{args: []string{"dns"}, code: 2},
			} {
				s.check(t, in)
			}
			if b.name == "postgres" {
				step{args: []string{"dns", "example.test"}, stdout: `IN MX\s+10 mail\.example\.test\.`}.check(t, in)
			}

			id := enqueueDirect(t, in, storage.QueueMessage{
				Kind: storage.QueueRemote, From: "a@origin.test", Destination: "example.net", ENVID: "e1", RET: "HDRS",
				Recipients: []storage.QueueRecipient{
					{Address: "x@example.net", Notify: "FAILURE", ORCPT: "rfc822;x@example.net"},
					{Address: "y@example.net", LastReply: "451 4.3.0 try again"},
				},
			})
			q := regexp.QuoteMeta(id)
			for _, s := range []step{
				{args: []string{"queue", "list"}, has: []string{
					`(?m)^` + q + `\s+remote\s+\S+ \S+\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d{4}-.*<a@origin\.test>$`,
					`(?m)^  x@example\.net\s+pending\s+0 attempts`,
					`(?m)^  y@example\.net\s+pending\s+0 attempts\s+451 4\.3\.0 try again$`,
					`(?m)^1 messages$`,
				}},
				{args: []string{"queue", "list", "--kind", "local"}, stdout: `^queue is empty\n$`},
				{args: []string{"queue", "list", "--kind", "bogus"}, code: 2, stderr: `bogus`},
				{args: []string{"queue", "show", id}, has: []string{
					`(?m)^id:\s+` + q + `$`, `(?m)^from:\s+<a@origin\.test>$`, `(?m)^destination:\s+example\.net$`,
					`(?m)^parameters:\s+ENVID=e1 RET=HDRS$`,
					`(?m)^recipient:\s+x@example\.net pending, 0 attempts, NOTIFY=FAILURE, ORCPT=rfc822;x@example\.net$`,
					`(?m)^Subject: queued for the CLI\r?$`,
				}, notStdout: `body`},
				{args: []string{"queue", "retry", id}, stdout: `will be retried`},
				{args: []string{"queue", "remove", id}, stdout: `removed ` + q},
				{args: []string{"queue", "show", id}, code: 1, stderr: q},
				{args: []string{"queue", "retry", id}, code: 1, stderr: q},
				{args: []string{"queue", "remove", id}, code: 1, stderr: q},
				{args: []string{"queue", "show"}, code: 2},
				{args: []string{"queue", "list"}, stdout: `^queue is empty\n$`},
				{args: []string{"check"}, stdout: `(?m)^clean$`},
			} {
				t.Run(fmt.Sprintf("%s", strings.Join(s.args[:min(2, len(s.args))], "_")), func(t *testing.T) { s.check(t, in) })
			}
		})
	}
}
