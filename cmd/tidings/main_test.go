package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"tidings/storage/postgres/pgtest"
)

// binEnv names the built binary for the tests. TestMain sets it in the
// process environment: it is the one thing every test shares, and the
// environment is not package state.
const binEnv = "TIDINGS_TEST_BINARY"

func TestMain(m *testing.M) {
	// The binary is built once into a per-user cache directory and
	// replaced by rename, so runs do not pile up copies in /tmp.
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("tidings-cli-test-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		os.Exit(1)
	}
	tmp := filepath.Join(dir, fmt.Sprintf("tidings.%d", os.Getpid()))
	gotool, err := exec.LookPath("go")
	if err != nil {
		gotool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(gotool, "build", "-o", tmp, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: go build: %v\n%s", err, out)
		os.Exit(1)
	}
	bin := filepath.Join(dir, "tidings")
	if err := os.Rename(tmp, bin); err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		os.Exit(1)
	}
	os.Setenv(binEnv, bin)
	pgtest.Main(m)
}

// instance is one installation the CLI is run against: its common flags.
type instance struct {
	name  string
	flags []string
	dir   string // data_dir
	url   string // PostgreSQL URL, "" for SQLite
}

type result struct {
	stdout, stderr string
	code           int
}

// tidings runs the binary with args, the instance's flags and stdin.
func (in *instance) tidings(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runBinary(t, stdin, append(append([]string{}, args...), in.flags...)...)
}

func runBinary(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Getenv(binEnv), args...)
	var so, se bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running tidings %q: %v", args, err)
	}
	return result{so.String(), se.String(), code}
}

func sqliteInstance(t *testing.T) *instance {
	t.Helper()
	dir := t.TempDir()
	in := &instance{name: "sqlite", flags: []string{"--data", dir}, dir: dir}
	if r := in.tidings(t, "", "migrate"); r.code != 0 {
		t.Fatalf("tidings migrate = %d, stderr %q", r.code, r.stderr)
	}
	return in
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "tidings.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func postgresInstance(t *testing.T, extra string) *instance {
	t.Helper()
	u := pgtest.NewDatabase(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf("data_dir = %q\ndatabase = %q\n%s\n%s", filepath.Join(dir, "data"), u, extra, loopbackListen()))
	in := &instance{name: "postgres", flags: []string{"--config", cfg}, dir: filepath.Join(dir, "data"), url: u}
	if r := in.tidings(t, "", "migrate"); r.code != 0 {
		t.Fatalf("tidings migrate = %d, stderr %q", r.code, r.stderr)
	}
	return in
}

// step is one command of an admin scenario and what it must answer.
type step struct {
	args      []string
	stdin     string
	code      int
	stdout    string   // regexp the output must match; "" = anything
	stderr    string   // regexp a failure's one line must match
	notStdout string   // regexp the output must not match
	has       []string // regexps the output must each match
}

func (s step) check(t *testing.T, in *instance) {
	t.Helper()
	r := in.tidings(t, s.stdin, s.args...)
	if r.code != s.code {
		t.Fatalf("tidings %q = exit %d (stdout %q, stderr %q); want %d", s.args, r.code, r.stdout, r.stderr, s.code)
	}
	if s.stdout != "" && !regexp.MustCompile(s.stdout).MatchString(r.stdout) {
		t.Errorf("tidings %q stdout = %q; want match for %q", s.args, r.stdout, s.stdout)
	}
	for _, h := range s.has {
		if !regexp.MustCompile(h).MatchString(r.stdout) {
			t.Errorf("tidings %q stdout = %q; want match for %q", s.args, r.stdout, h)
		}
	}
	if s.notStdout != "" && regexp.MustCompile(s.notStdout).MatchString(r.stdout) {
		t.Errorf("tidings %q stdout = %q; want no match for %q", s.args, r.stdout, s.notStdout)
	}
	if s.code != 0 {
		checkOneLine(t, s.args, r)
		if s.stderr != "" && !regexp.MustCompile(s.stderr).MatchString(r.stderr) {
			t.Errorf("tidings %q stderr = %q; want match for %q", s.args, r.stderr, s.stderr)
		}
	}
}

// checkOneLine asserts an operational failure is one "tidings: " line.
// serve may log before it fails; then the error is its last line, and the
// only one of that form.
func checkOneLine(t *testing.T, args []string, r result) {
	t.Helper()
	if r.code != 1 {
		return
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(args) > 0 && args[0] == "serve" {
		errs := 0
		for _, l := range lines {
			if strings.HasPrefix(l, "tidings: ") {
				errs++
			}
		}
		if errs != 1 || !strings.HasPrefix(lines[len(lines)-1], "tidings: ") {
			t.Errorf("tidings %q stderr = %q; want the log, then one line starting \"tidings: \"", args, r.stderr)
		}
		return
	}
	if len(lines) != 1 || !strings.HasPrefix(r.stderr, "tidings: ") {
		t.Errorf("tidings %q stderr = %q; want one line starting \"tidings: \"", args, r.stderr)
	}
}

func TestAdmin(t *testing.T) {
	mbox, err := filepath.Abs("testdata/small.mbox")
	if err != nil {
		t.Fatal(err)
	}
	steps := []step{
		{args: []string{"domain", "add", "example.test"}, stdout: `added domain example.test`},
		{args: []string{"domain", "add", "second.test"}},
		{args: []string{"domain", "list"}, stdout: `(?m)^example\.test\n(.*\n)*second\.test`},
		{args: []string{"user", "add", "alice@example.test", "--password-stdin", "--quota", "500M"}, stdin: "correct horse\n", stdout: `added user alice@example.test`},
		{args: []string{"user", "add", "bob@example.test"}, stdout: `^password for bob@example\.test: \S{8,}\n$`},
		{args: []string{"user", "add", "alice@example.test", "--password-stdin"}, stdin: "x\n", code: 1, stderr: `alice@example\.test`},
		{args: []string{"user", "add", "carol@unknown.test", "--password-stdin"}, stdin: "x\n", code: 1, stderr: `unknown\.test.*tidings domain add`},
		{args: []string{"user", "add", "not-an-address"}, code: 1, stderr: `not-an-address`},
		{args: []string{"user", "list"}, stdout: `(?s)alice@example\.test\s+enabled.*500\.0 MB.*bob@example\.test\s+enabled`},
		{args: []string{"user", "list", "second.test"}, notStdout: `alice`},
		{args: []string{"alias", "add", "info@example.test", "alice@example.test", "bob@example.test"}},
		{args: []string{"alias", "list", "example.test"}, has: []string{`info@example\.test -> alice@example\.test, bob@example\.test`, `postmaster@example\.test -> \(built-in`}},
		{args: []string{"alias", "add", "info@example.test", "alice@example.test"}, code: 1},
		{args: []string{"alias", "remove", "info@example.test"}},
		{args: []string{"alias", "list", "example.test"}, notStdout: `info@`},
		{args: []string{"mailbox", "list", "alice@example.test"}, has: []string{
			`(?m)^INBOX\s+-\s+0\s+0\s`, `(?m)^Sent\s+\\Sent\s+0\s`, `(?m)^Drafts\s+\\Drafts\s`,
			`(?m)^Trash\s+\\Trash\s`, `(?m)^Junk\s+\\Junk\s`, `(?m)^Archive\s+\\Archive\s`}},
		{args: []string{"mailbox", "import", "alice@example.test", mbox}, stdout: `^imported 3 messages \(0\.0 MB\) into alice@example\.test/INBOX\n$`},
		{args: []string{"message", "count", "alice@example.test", "INBOX"}, stdout: `^3\n$`},
		{args: []string{"mailbox", "list", "alice@example.test"}, stdout: `(?m)^INBOX\s+-\s+3\s+2\s`}, // one message was Status: RO
		{args: []string{"mailbox", "import", "alice@example.test", "Old Mail", mbox}, stdout: `into alice@example\.test/Old Mail`},
		{args: []string{"message", "count", "alice@example.test", "Old Mail"}, stdout: `^3\n$`},
		{args: []string{"message", "count", "alice@example.test", "Nope"}, code: 1, stderr: `Nope`},
		{args: []string{"mailbox", "list", "nobody@example.test"}, code: 1, stderr: `nobody@example\.test`},
		{args: []string{"check"}, stdout: `(?m)^clean$`},
		{args: []string{"user", "disable", "bob@example.test"}},
		{args: []string{"user", "list", "example.test"}, stdout: `bob@example\.test\s+disabled`},
		{args: []string{"user", "enable", "bob@example.test"}},
		{args: []string{"user", "trashcan", "bob@example.test", "on"}, stdout: `trashcan on for bob@example\.test`},
		{args: []string{"user", "trashcan", "bob@example.test", "maybe"}, code: 2, stderr: `want on or off`},
		{args: []string{"user", "trashcan", "nobody@example.test", "off"}, code: 1, stderr: `not found`},
		{args: []string{"user", "passwd", "alice@example.test", "--password-stdin"}, stdin: "battery staple\n", stdout: `password changed`},
		{args: []string{"user", "passwd", "bob@example.test"}, stdout: `^password for bob@example\.test: \S{8,}\n$`},
		{args: []string{"domain", "remove", "example.test"}, code: 1, stderr: `example\.test`},
		{args: []string{"user", "remove", "bob@example.test"}},
		{args: []string{"user", "list", "example.test"}, notStdout: `bob@`},
		{args: []string{"domain", "remove", "second.test"}, stdout: `removed domain second\.test`},
		{args: []string{"domain", "list"}, notStdout: `second\.test`},
	}
	backends := []struct {
		name string
		make func(t *testing.T) *instance
	}{
		{"sqlite", sqliteInstance},
		{"postgres", func(t *testing.T) *instance { return postgresInstance(t, "") }},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			in := b.make(t)
			for i, s := range steps {
				t.Run(fmt.Sprintf("%02d_%s", i, strings.Join(s.args[:min(2, len(s.args))], "_")), func(t *testing.T) {
					s.check(t, in)
				})
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, `usage: tidings`},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"missing subcommand", []string{"user"}, `missing subcommand`},
		{"unknown subcommand", []string{"user", "frob"}, `unknown subcommand "frob"`},
		{"missing argument", []string{"user", "add"}, `missing argument`},
		{"extra argument", []string{"domain", "list", "x"}, `unexpected argument "x"`},
		{"unknown flag", []string{"user", "add", "a@b.test", "--bogus"}, `flag provided but not defined: -bogus`},
		{"bad quota", []string{"user", "add", "a@b.test", "--quota", "lots"}, `--quota: size "lots"`},
		{"alias without target", []string{"alias", "add", "a@b.test"}, `missing argument`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runBinary(t, "", append(tt.args, "--data", t.TempDir())...)
			if tt.args == nil {
				r = runBinary(t, "")
			}
			if r.code != 2 {
				t.Errorf("tidings %q = exit %d; want 2 (stderr %q)", tt.args, r.code, r.stderr)
			}
			if !regexp.MustCompile(tt.want).MatchString(r.stderr) {
				t.Errorf("tidings %q stderr = %q; want match for %q", tt.args, r.stderr, tt.want)
			}
			if n := strings.Count(r.stderr, "\n"); tt.args != nil && n != 2 {
				t.Errorf("tidings %q stderr has %d lines; want the error and a usage hint", tt.args, n)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	if r := runBinary(t, "", "help"); r.code != 0 || !strings.Contains(r.stdout, "mailbox import") {
		t.Errorf("tidings help = %d, %q; want 0 and the command list", r.code, r.stdout)
	}
	if r := runBinary(t, "", "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "tidings ") {
		t.Errorf("tidings version = %d, %q; want 0 and a version line", r.code, r.stdout)
	}
}

func TestNoDatabase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	r := runBinary(t, "", "domain", "list", "--data", dir)
	checkOneLine(t, []string{"domain", "list"}, r)
	if r.code != 1 || !strings.Contains(r.stderr, "tidings migrate") {
		t.Errorf("tidings domain list (no database) = %d, %q; want 1 and a hint to migrate", r.code, r.stderr)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("tidings domain list created %s; want no data directory made by an admin command", dir)
	}
}

func TestUnknownConfigKey(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf("data_dir = %q\n[blobs]\nstore = \"filesystem\"\nshred = true\n", dir))
	for _, args := range [][]string{{"domain", "list"}, {"serve"}, {"migrate"}} {
		t.Run(args[0], func(t *testing.T) {
			r := runBinary(t, "", append(args, "--config", cfg)...)
			checkOneLine(t, args, r)
			if r.code != 1 || !strings.Contains(r.stderr, `unknown key "blobs.shred"`) {
				t.Errorf("tidings %q with an unknown key = %d, %q; want 1 and the key named", args, r.code, r.stderr)
			}
		})
	}
}

// TestUnsafeDurabilityRefused provokes unsafe durability honestly: any
// database owner may turn synchronous_commit off for a database, and the
// store must then refuse to open unless allow_unsafe_durability is set.
// (SQLite cannot be provoked from outside: the driver itself sets WAL and
// synchronous=FULL on every connection, so there is nothing to refuse.)
func TestUnsafeDurabilityRefused(t *testing.T) {
	in := postgresInstance(t, "")
	u, err := url.Parse(in.url)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", in.url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	name := strings.TrimPrefix(u.Path, "/")
	if _, err := db.Exec("ALTER DATABASE " + name + " SET synchronous_commit = off"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"domain", "list"}, {"serve"}} {
		t.Run(args[0], func(t *testing.T) {
			r := in.tidings(t, "", args...)
			checkOneLine(t, args, r)
			if r.code != 1 || !strings.Contains(r.stderr, "allow_unsafe_durability") {
				t.Errorf("tidings %q on synchronous_commit=off = %d, %q; want 1 and a one-line refusal naming allow_unsafe_durability", args, r.code, r.stderr)
			}
		})
	}
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf("data_dir = %q\ndatabase = %q\nallow_unsafe_durability = true\n%s", in.dir, in.url, loopbackListen()))
	if r := runBinary(t, "", "domain", "list", "--config", cfg); r.code != 0 {
		t.Errorf("tidings domain list with allow_unsafe_durability = %d, %q; want 0", r.code, r.stderr)
	}
}

// loopbackListen puts every listener on a free loopback port, so a serve
// started by a test never reaches for the standard ports.
func loopbackListen() string {
	var b strings.Builder
	b.WriteString("[listen]\n")
	for _, n := range []string{"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http"} {
		fmt.Fprintf(&b, "%s = \"127.0.0.1:0\"\n", n)
	}
	return b.String()
}

func TestServe(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, fmt.Sprintf("hostname = \"mx.example.test\"\ndata_dir = %q\n%s", data, loopbackListen()))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Getenv(binEnv), "serve", "--config", cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	// Read the log until the server says it started, noting each
	// listener's address from its "listening" line.
	addrs := map[string]string{}
	lines := bufio.NewScanner(stderr)
	listening := regexp.MustCompile(`msg=listening proto=(\w+) addr=(\S+)`)
	started := false
	var logText strings.Builder
	for lines.Scan() {
		logText.WriteString(lines.Text() + "\n")
		if m := listening.FindStringSubmatch(lines.Text()); m != nil {
			addrs[m[1]] = m[2]
		}
		if strings.Contains(lines.Text(), "tidings started") {
			started = true
			break
		}
	}
	if !started {
		t.Fatalf("tidings serve did not start; log:\n%s", logText.String())
	}
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, stderr); close(drained) }()
	if len(addrs) != 8 {
		t.Errorf("serve logged %d listeners (%v); want 8", len(addrs), addrs)
	}

	key := filepath.Join(data, "tls", "key.pem")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("self-signed key %s: %v; want a 0600 file", key, err)
	}
	if _, err := os.Stat(filepath.Join(data, "tls", "cert.pem")); err != nil {
		t.Errorf("self-signed certificate: %v", err)
	}

	greetings := []struct {
		proto string
		tls   bool
		want  string
	}{
		{"smtp", false, "220 "},
		{"submission", false, "220 "},
		{"submissions", true, "220 "},
		{"imap", false, "* OK "},
		{"imaps", true, "* OK "},
		{"pop3", false, "+OK "},
		{"pop3s", true, "+OK "},
	}
	for _, g := range greetings {
		t.Run(g.proto, func(t *testing.T) {
			var conn net.Conn
			var err error
			if g.tls {
				conn, err = tls.Dial("tcp", addrs[g.proto], &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
			} else {
				conn, err = net.Dial("tcp", addrs[g.proto])
			}
			if err != nil {
				t.Fatalf("dial %s %s: %v", g.proto, addrs[g.proto], err)
			}
			defer conn.Close()
			line, err := bufio.NewReader(conn).ReadString('\n')
			if !strings.HasPrefix(line, g.want) {
				t.Errorf("%s greeting = %q (%v); want it to start %q", g.proto, line, err, g.want)
			}
		})
	}
	t.Run("http", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := c.Get("https://" + addrs["http"] + "/")
		if err != nil {
			t.Fatalf("GET https://%s/: %v", addrs["http"], err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET / status = %d; want 503", resp.StatusCode)
		}
	})

	// The admin CLI works beside the running server.
	in := &instance{flags: []string{"--config", cfg}}
	step{args: []string{"domain", "add", "example.test"}}.check(t, in)
	step{args: []string{"user", "add", "alice@example.test", "--password-stdin"}, stdin: "pw pw pw\n"}.check(t, in)
	step{args: []string{"user", "list"}, stdout: `alice@example\.test`}.check(t, in)

	// The POP3 front end serves the user just added by the CLI.
	t.Run("pop3 login", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addrs["pop3s"], &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		for _, x := range []struct{ send, want string }{
			{"", "+OK"},
			{"USER alice@example.test", "+OK"},
			{"PASS pw pw pw", "+OK"},
			{"STAT", "+OK 0 0"},
			{"QUIT", "+OK"},
		} {
			if x.send != "" {
				fmt.Fprintf(conn, "%s\r\n", x.send)
			}
			line, err := r.ReadString('\n')
			if !strings.HasPrefix(line, x.want) {
				t.Fatalf("after %q: %q (%v); want %q...", x.send, line, err, x.want)
			}
		}
	})

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-drained // the pipe must be read to EOF before Wait closes it
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); err != nil || code != 0 {
		t.Errorf("tidings serve after SIGINT = %v, exit %d; want exit 0", err, code)
	}
}
