package smtpd

import (
	"os/exec"
	"strings"
	"testing"

	"tidings/internal/testprog"
)

// TestSwaks drives the servers with swaks, the SMTP test tool operators
// use: inbound, submission with AUTH over STARTTLS and implicit TLS, and
// the attack cases.
func TestSwaks(t *testing.T) {
	swaks := testprog.Need(t, "swaks", "swaks")
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		smuggle := "Subject: innocent\r\n\r\nhello\n.\nMAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
		tests := []struct {
			name    string
			args    []string
			ok      bool
			want    string
			wantOut string
		}{
			{"inbound", []string{"--server", e.mxAddr, "--ehlo", "client.sender.test", "--from", "someone@nodmarc.test", "--to", alice}, true, "250 2.0.0 Ok: queued as ", ""},
			{"inbound STARTTLS", []string{"--server", e.mxAddr, "--tls", "--ehlo", "client.sender.test", "--from", "someone@nodmarc.test", "--to", alice}, true, "250 2.0.0 Ok: queued as ", ""},
			{"submission PLAIN STARTTLS", []string{"--server", e.subAddr, "--tls", "--auth", "PLAIN", "--auth-user", alice, "--auth-password", alicePass, "--from", alice, "--h-From", alice, "--to", bob}, true, "250 2.0.0 Ok: queued as ", ""},
			{"submission LOGIN implicit TLS", []string{"--server", e.subsTLS, "--tls-on-connect", "--auth", "LOGIN", "--auth-user", alice, "--auth-password", alicePass, "--from", alice, "--h-From", alice, "--to", bob}, true, "250 2.0.0 Ok: queued as ", ""},
			{"submission wrong password", []string{"--server", e.subAddr, "--tls", "--auth", "PLAIN", "--auth-user", alice, "--auth-password", "wrong", "--from", alice, "--to", bob}, false, "535 5.7.8", ""},
			{"submission AUTH without TLS", []string{"--server", e.subAddr, "--auth", "PLAIN", "--auth-user", alice, "--auth-password", alicePass, "--from", alice, "--to", bob}, false, "", ""},
			{"submission foreign sender", []string{"--server", e.subAddr, "--tls", "--auth", "PLAIN", "--auth-user", alice, "--auth-password", alicePass, "--from", bob, "--to", bob}, false, "553 5.7.1", ""},
			{"open relay", []string{"--server", e.mxAddr, "--from", "someone@nodmarc.test", "--to", "victim@elsewhere.test"}, false, "554 5.7.1", ""},
			{"percent hack", []string{"--server", e.mxAddr, "--from", "someone@nodmarc.test", "--to", "victim%elsewhere.test@example.test"}, false, "553 5.1.3", ""},
			{"bang path", []string{"--server", e.mxAddr, "--from", "someone@nodmarc.test", "--to", "elsewhere.test!victim@example.test"}, false, "553 5.1.3", ""},
			{"quoted at", []string{"--server", e.mxAddr, "--from", "someone@nodmarc.test", "--to", `"victim@elsewhere.test"@example.test`}, false, "553 5.1.3", ""},
			{"smuggling", []string{"--server", e.mxAddr, "--from", "someone@nodmarc.test", "--to", alice, "--no-data-fixup", "--data", smuggle + "\r\n.\r\n"}, false, "550 5.5.2", ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				args := append([]string{"--timeout", "20", "--hide-informational"}, tt.args...)
				out, err := exec.Command(swaks, args...).CombinedOutput()
				if (err == nil) != tt.ok {
					t.Errorf("swaks %q: err = %v; want success %v\n%s", args, err, tt.ok, out)
				}
				if tt.want != "" && !strings.Contains(string(out), tt.want) {
					t.Errorf("swaks %q output lacks %q:\n%s", args, tt.want, out)
				}
			})
		}
		if n := len(e.inbox(alice)); n != 2 {
			t.Errorf("alice has %d messages; want 2 (the two inbound ones)", n)
		}
		if n := len(e.inbox(bob)); n != 2 {
			t.Errorf("bob has %d messages; want 2 (the two submissions, nothing smuggled)", n)
		}
	})
}
