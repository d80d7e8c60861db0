package pop3d

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tidings/internal/testprog"
)

// Interoperability with real clients from Debian packages. A missing
// program is installed (as root) or fails the test with the command that
// installs it: these tests never skip.

func needProgram(t *testing.T, prog, pkg string) string {
	t.Helper()
	return testprog.Need(t, prog, pkg)
}

// run runs a client program with a deadline and returns its output.
func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// readDir returns the contents of the files in dir whose names start
// with prefix.
func readDir(t *testing.T, dir, prefix string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// deliverScript is fetchmail's MDA: one file per message and recipient.
func deliverScript(t *testing.T, out string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "deliver.sh")
	script := "#!/bin/sh\nf=$(mktemp \"" + out + "/${1:-msg}.XXXXXX\")\ncat > \"$f\"\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func fetchmail(t *testing.T, home, rc string) (string, int) {
	t.Helper()
	rcPath := filepath.Join(home, "fetchmailrc")
	if err := os.WriteFile(rcPath, []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, []string{"FETCHMAILHOME=" + home, "HOME=" + home}, "fetchmail", "-f", rcPath, "--nosyslog", "-v")
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("fetchmail: %v\n%s", err, out)
	}
	return out, code
}

func subjects(msgs []string) []string {
	var s []string
	for _, m := range msgs {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "Subject: ") {
				s = append(s, strings.TrimSpace(strings.TrimPrefix(l, "Subject: ")))
				break
			}
		}
	}
	slices.Sort(s)
	return s
}

func TestFetchmail(t *testing.T) {
	needProgram(t, "fetchmail", "fetchmail")
	forEachDriver(t, func(t *testing.T, d driver) {
		t.Run("keep-stls", func(t *testing.T) {
			e := newEnv(t, d, envOpts{})
			home, out := t.TempDir(), t.TempDir()
			rc := fmt.Sprintf(`poll localhost via 127.0.0.1 service %s protocol pop3 uidl
  user "%s" there with password "%s" is "alice" here
  sslproto "tls1.2+" sslcertck sslcertfile "%s" sslcommonname "localhost"
  keep mda "%s"
`, port(e.plain), alice, alicePass, e.certPEM, deliverScript(t, out))
			log, code := fetchmail(t, home, rc)
			if code != 0 {
				t.Fatalf("fetchmail exit %d; want 0\n%s", code, log)
			}
			if got, want := subjects(readDir(t, out, "")), []string{"dots", "first", "long"}; !slices.Equal(got, want) {
				t.Fatalf("fetchmail delivered %v; want %v\n%s", got, want, log)
			}
			if !strings.Contains(log, "STLS") {
				t.Errorf("fetchmail did not use STLS:\n%s", log)
			}
			if n := len(e.inboxUIDs()); n != 3 {
				t.Errorf("INBOX after keep = %d messages; want 3", n)
			}
			e.waitIdle()
			// Second poll: UIDLs are stable, so nothing is new (exit 1).
			log, code = fetchmail(t, home, rc)
			if code != 1 {
				t.Errorf("second fetchmail exit %d; want 1 (no mail)\n%s", code, log)
			}
			if n := len(readDir(t, out, "")); n != 3 {
				t.Errorf("after second poll %d files; want 3", n)
			}
		})
		t.Run("nokeep-ssl", func(t *testing.T) {
			e := newEnv(t, d, envOpts{})
			home, out := t.TempDir(), t.TempDir()
			rc := fmt.Sprintf(`poll localhost via 127.0.0.1 service %s protocol pop3
  user "%s" there with password "%s" is "alice" here
  ssl sslcertck sslcertfile "%s" sslcommonname "localhost"
  nokeep fetchall mda "%s"
`, port(e.implied), alice, alicePass, e.certPEM, deliverScript(t, out))
			log, code := fetchmail(t, home, rc)
			if code != 0 {
				t.Fatalf("fetchmail exit %d; want 0\n%s", code, log)
			}
			if got, want := subjects(readDir(t, out, "")), []string{"dots", "first", "long"}; !slices.Equal(got, want) {
				t.Fatalf("fetchmail delivered %v; want %v\n%s", got, want, log)
			}
			// Byte-stuffing undone by the client: the body is intact.
			for _, m := range readDir(t, out, "") {
				m = strings.ReplaceAll(m, "\r\n", "\n") // fetchmail hands the MDA LF lines
				if strings.Contains(m, "Subject: dots") && !strings.Contains(m, "\n.leading dot\n..two dots\n.\nend") {
					t.Errorf("message 'dots' arrived as %q", m)
				}
			}
			e.waitIdle()
			if n := len(e.inboxUIDs()); n != 0 {
				t.Errorf("INBOX after nokeep = %d messages; want 0", n)
			}
		})
		t.Run("multidrop", func(t *testing.T) {
			// alice's INBOX as the catch-all of a site: Delivered-To in
			// the per-entry prefix tells fetchmail each message's
			// envelope recipient.
			e := newEnv(t, d, envOpts{})
			home, out := t.TempDir(), t.TempDir()
			rc := fmt.Sprintf(`poll localhost via 127.0.0.1 service %s protocol pop3
  envelope "Delivered-To:" localdomains example.test
  user "%s" there with password "%s" to bob alice here
  ssl sslcertck sslcertfile "%s" sslcommonname "localhost"
  nokeep fetchall mda "%s %%T"
`, port(e.implied), alice, alicePass, e.certPEM, deliverScript(t, out))
			log, code := fetchmail(t, home, rc)
			if code != 0 {
				t.Fatalf("fetchmail exit %d; want 0\n%s", code, log)
			}
			if got, want := subjects(readDir(t, out, "bob@example.test.")), []string{"first"}; !slices.Equal(got, want) {
				t.Errorf("delivered to bob: %v; want %v\n%s", got, want, log)
			}
			// "long" has no Delivered-To: fetchmail falls back to To:.
			if got, want := subjects(readDir(t, out, "alice@example.test.")), []string{"dots", "long"}; !slices.Equal(got, want) {
				t.Errorf("delivered to alice: %v; want %v\n%s", got, want, log)
			}
		})
	})
}

func TestGetmail(t *testing.T) {
	needProgram(t, "getmail", "getmail6")
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		dir, out := t.TempDir(), t.TempDir()
		deliver := deliverScript(t, out)
		getmail := func(del, readAll bool) string {
			t.Helper()
			rc := fmt.Sprintf(`[retriever]
type = SimplePOP3SSLRetriever
server = 127.0.0.1
port = %s
username = %s
password = %s
ca_certs = %s

[destination]
type = MDA_external
path = %s
arguments = ("getmail",)
allow_root_commands = true

[options]
delete = %v
read_all = %v
verbose = 2
`, port(e.implied), alice, alicePass, e.certPEM, deliver, del, readAll)
			rcPath := filepath.Join(dir, "getmailrc")
			if err := os.WriteFile(rcPath, []byte(rc), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := run(t, nil, "getmail", "--getmaildir="+dir, "--rcfile="+rcPath)
			if err != nil {
				t.Fatalf("getmail: %v\n%s", err, out)
			}
			e.waitIdle()
			return out
		}
		getmail(false, false)
		if got, want := subjects(readDir(t, out, "")), []string{"dots", "first", "long"}; !slices.Equal(got, want) {
			t.Fatalf("getmail retrieved %v; want %v", got, want)
		}
		// UIDLs stable: a second run retrieves nothing new.
		log := getmail(false, false)
		if n := len(readDir(t, out, "")); n != 3 {
			t.Fatalf("after second getmail %d messages; want 3\n%s", n, log)
		}
		getmail(true, true)
		if n := len(e.inboxUIDs()); n != 0 {
			t.Errorf("INBOX after getmail delete = %d messages; want 0", n)
		}
	})
}

func TestCurl(t *testing.T) {
	needProgram(t, "curl", "curl")
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		base := "pop3s://127.0.0.1:" + port(e.implied) + "/"
		userpass := alice + ":" + alicePass
		curl := func(args ...string) string {
			t.Helper()
			out, err := run(t, nil, "curl", append([]string{"-sS", "-k", "--max-time", "60", "-u", userpass}, args...)...)
			if err != nil {
				t.Fatalf("curl %v: %v\n%s", args, err, out)
			}
			e.waitIdle()
			return out
		}
		if got, want := curl(base), "1 146\r\n2 140\r\n3 112\r\n"; got != want {
			t.Errorf("curl LIST = %q; want %q", got, want)
		}
		if got, want := curl(base+"2"), string(e.raw[1]); got != want {
			t.Errorf("curl RETR 2 = %q; want %q", got, want)
		}
		for _, mech := range []string{"PLAIN", "LOGIN"} {
			if got := curl("--login-options", "AUTH="+mech, "-X", "UIDL", base); !strings.HasPrefix(got, "1 ") || strings.Count(got, "\r\n") != 3 {
				t.Errorf("curl AUTH=%s UIDL = %q; want three lines", mech, got)
			}
		}
		// STLS on the plain port.
		stls := "pop3://127.0.0.1:" + port(e.plain) + "/1"
		if got, want := curl("--ssl-reqd", stls), string(e.raw[0]); got != want {
			t.Errorf("curl STLS RETR 1 = %q; want %q", got, want)
		}
		curl("-X", "DELE", "-I", base+"1")
		if n := len(e.inboxUIDs()); n != 2 {
			t.Errorf("INBOX after curl DELE = %d messages; want 2", n)
		}
	})
}

func TestPoplib(t *testing.T) {
	py := needProgram(t, "python3", "python3")
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		out, err := run(t, nil, py, "testdata/interop/poplib_check.py", "127.0.0.1", port(e.plain), port(e.implied), alice, alicePass, e.certPEM)
		if err != nil {
			t.Fatalf("poplib_check.py: %v\n%s", err, out)
		}
		var got struct {
			CapaPlain []string `json:"capa_plain"`
			CapaTLS   []string `json:"capa_tls"`
			Stat      []int    `json:"stat"`
			List      []string `json:"list"`
			UIDL      []string `json:"uidl"`
			Retr2     []string `json:"retr2"`
			Top3      []string `json:"top3"`
			StatAfter []int    `json:"stat_after"`
			UIDLAfter []string `json:"uidl_after"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("poplib_check.py output %q: %v", out, err)
		}
		if slices.Contains(got.CapaPlain, "USER") || !slices.Contains(got.CapaPlain, "STLS") {
			t.Errorf("CAPA before STLS = %v; want STLS and no USER", got.CapaPlain)
		}
		if !slices.Contains(got.CapaTLS, "USER") || slices.Contains(got.CapaTLS, "STLS") {
			t.Errorf("CAPA after STLS = %v; want USER and no STLS", got.CapaTLS)
		}
		if !slices.Equal(got.Stat, []int{3, 398}) {
			t.Errorf("stat() = %v; want [3 398]", got.Stat)
		}
		if want := []string{"1 146", "2 140", "3 112"}; !slices.Equal(got.List, want) {
			t.Errorf("list() = %v; want %v", got.List, want)
		}
		wantRetr := strings.Split(strings.TrimSuffix(string(e.raw[1]), "\r\n"), "\r\n")
		if !slices.Equal(got.Retr2, wantRetr) {
			t.Errorf("retr(2) = %q; want %q", got.Retr2, wantRetr)
		}
		if n := len(got.Top3); n != 5 || got.Top3[4] != "line 1" {
			t.Errorf("top(3, 1) = %q; want header, blank line, \"line 1\"", got.Top3)
		}
		if !slices.Equal(got.StatAfter, []int{2, 286}) {
			t.Errorf("stat() after DELE 3 = %v; want [2 286]", got.StatAfter)
		}
		if want := got.UIDL[:2]; !slices.Equal(got.UIDLAfter, want) {
			t.Errorf("uidl() after = %v; want %v", got.UIDLAfter, want)
		}
	})
}
