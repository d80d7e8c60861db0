package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"tidings/internal/dnstest"
	"tidings/storage/postgres/pgtest"
)

// server is one running `tidings serve` process.
type server struct {
	cmd   *exec.Cmd
	smtp  string            // address of the smtp listener
	addrs map[string]string // every listener's address by protocol name
	log   tailBuffer        // the end of its log after startup
	done  chan struct{}
}

// tailBuffer keeps at least the last tailSize bytes written to it (at
// most twice that), for a failure message about a server that misbehaved.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 256 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*tailSize {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-tailSize:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// mailInstance is an installation with example.test and alice, set up
// through the CLI, with a config whose listeners are on random ports.
type mailInstance struct {
	*instance
	cfg string
	dns string
}

func newMailInstance(t *testing.T, driver string) *mailInstance {
	t.Helper()
	dir := t.TempDir()
	db := ""
	if driver == "postgres" {
		db = fmt.Sprintf("database = %q\n", pgtest.NewDatabase(t))
	}
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, fmt.Sprintf("hostname = \"mx.example.test\"\ndata_dir = %q\n%s%s", data, db, loopbackListen()))
	in := &instance{name: driver, flags: []string{"--config", cfg}, dir: data}
	for _, args := range [][]string{{"migrate"}, {"domain", "add", "example.test"}, {"user", "add", "alice@example.test", "--password-stdin"}} {
		if r := in.tidings(t, "secret password\n", args...); r.code != 0 {
			t.Fatalf("tidings %q = %d, stderr %q", args, r.code, r.stderr)
		}
	}
	return &mailInstance{instance: in, cfg: cfg, dns: dnstest.New(t).Addr}
}

// start runs `tidings serve` from bin with extra environment and waits
// until it listens.
func (m *mailInstance) start(t *testing.T, bin string, env ...string) *server {
	t.Helper()
	return startServe(t, bin, m.cfg, append([]string{"TIDINGS_DNS_SERVER=" + m.dns}, env...)...)
}

// startServe runs `tidings serve --config cfg` from bin with extra
// environment and waits until it has started, noting each listener's
// address from its "listening" log line. The test's cleanup kills it.
func startServe(t *testing.T, bin, cfg string, env ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", cfg)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, addrs: map[string]string{}, done: make(chan struct{})}
	lines := bufio.NewScanner(stderr)
	listening := regexp.MustCompile(`msg=listening proto=(\w+) addr=(\S+)`)
	var log strings.Builder
	for lines.Scan() {
		log.WriteString(lines.Text() + "\n")
		if mm := listening.FindStringSubmatch(lines.Text()); mm != nil {
			s.addrs[mm[1]] = mm[2]
		}
		if strings.Contains(lines.Text(), "tidings started") {
			break
		}
	}
	s.smtp = s.addrs["smtp"]
	if s.smtp == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("tidings serve did not start; log:\n%s", log.String())
	}
	go func() { io.Copy(&s.log, stderr); cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { s.kill() })
	return s
}

// kill is SIGKILL: no shutdown, no deferred function runs.
func (s *server) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

func (m *mailInstance) count(t *testing.T) int {
	t.Helper()
	r := m.tidings(t, "", "message", "count", "alice@example.test", "INBOX")
	if r.code != 0 {
		t.Fatalf("tidings message count = %d, stderr %q", r.code, r.stderr)
	}
	n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatalf("tidings message count printed %q", r.stdout)
	}
	return n
}

// sendOne delivers one message on a new connection; nil only after 250.
func sendOne(addr string, i int) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.example.net"); err != nil {
		return err
	}
	if err := c.Mail("sender@example.net", nil); err != nil {
		return err
	}
	if err := c.Rcpt("alice@example.test", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: sender@example.net\r\nSubject: message %d\r\nMessage-ID: <%d@example.net>\r\n\r\n%s\r\n", i, i, strings.Repeat("crash test body line\r\n", 40))
	return w.Close()
}

// TestSMTPCrash is the crash test: 2,000 messages over 20
// connections while the server is killed with SIGKILL three times and
// restarted; every message that got 250 must be in the mailbox.
func TestSMTPCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			m := newMailInstance(t, driver)
			bin := os.Getenv(binEnv)
			const total, conns, kills = 2000, 20, 3
			var mu sync.Mutex
			srv := m.start(t, bin)
			addr := func() string { mu.Lock(); defer mu.Unlock(); return srv.smtp }
			var acked, attempted atomic.Int64
			var next atomic.Int64
			var wg sync.WaitGroup
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			for range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						i := next.Add(1)
						if i > total {
							return
						}
						attempted.Add(1)
						if sendOne(addr(), int(i)) == nil {
							acked.Add(1)
						} else {
							time.Sleep(20 * time.Millisecond) // server down: let it come back
						}
					}
				}()
			}
			for k := 1; k <= kills; k++ {
				for next.Load() < int64(k*total/(kills+1)) && ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
				mu.Lock()
				srv.kill()
				srv = m.start(t, bin)
				mu.Unlock()
			}
			wg.Wait()
			if ctx.Err() != nil {
				t.Fatalf("crash test did not finish in time: %d of %d attempted", attempted.Load(), total)
			}
			mu.Lock()
			srv.kill()
			mu.Unlock()
			got := m.count(t)
			t.Logf("%s: %d attempted, %d got 250, %d in the mailbox after %d SIGKILLs", driver, attempted.Load(), acked.Load(), got, kills)
			if int64(got) < acked.Load() {
				t.Errorf("mailbox has %d messages; %d got 250: acknowledged mail was lost", got, acked.Load())
			}
			if int64(got) > attempted.Load() {
				t.Errorf("mailbox has %d messages; only %d were sent", got, attempted.Load())
			}
		})
	}
}

// TestSMTPFaultHooks stops the server at each crash point of a binary
// built with -tags faulthooks, restarts it without the fault, and checks
// what the store holds: an unacknowledged message may be absent (or, once
// committed, present exactly once — the client retries, a duplicate and
// never a loss), an acknowledged one is present, and `tidings check`
// finds no drift (a blob registered but never referenced is not drift:
// the sweeper removes it later).
func TestSMTPFaultHooks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second binary")
	}
	bin := filepath.Join(t.TempDir(), "tidings-faulthooks")
	gotool, err := exec.LookPath("go")
	if err != nil {
		gotool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if out, err := exec.Command(gotool, "build", "-tags", "faulthooks", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags faulthooks: %v\n%s", err, out)
	}
	tests := []struct {
		name   string
		fault  string // TIDINGS_FAULT
		exit   int    // how the process ends: -1 is smtpd's SIGKILL, 97 the sqlstore hook's exit
		acked  bool   // the client sees 250
		stored int    // messages in the mailbox afterwards
	}{
		// smtpd: spooled and analysed, Deliver not called.
		{"before-submit", "before-commit", -1, false, 0},
		// storage/sqlstore: every row of the delivery written inside the
		// transaction, COMMIT never sent.
		{"before-commit", "sqlstore-before-commit", 97, false, 0},
		// smtpd: Deliver committed, the 250 not written.
		{"after-commit", "after-commit", -1, false, 1},
		{"after-250", "after-250", -1, true, 1},
	}
	for _, driver := range []string{"sqlite", "postgres"} {
		for _, tt := range tests {
			t.Run(driver+"/"+tt.name, func(t *testing.T) {
				m := newMailInstance(t, driver)
				srv := m.start(t, bin, "TIDINGS_FAULT="+tt.fault)
				err := sendOne(srv.smtp, 1)
				select {
				case <-srv.done: // the process stopped itself
				case <-time.After(time.Minute):
					t.Fatalf("fault %s never fired (send = %v)", tt.fault, err)
				}
				if got := srv.cmd.ProcessState.ExitCode(); got != tt.exit {
					t.Errorf("exit status with fault %s = %d; want %d", tt.fault, got, tt.exit)
				}
				if (err == nil) != tt.acked {
					t.Errorf("send with fault %s = %v; want acknowledged %v", tt.fault, err, tt.acked)
				}
				// Restart without the fault: recovery must neither lose
				// the committed message nor resurrect the uncommitted one.
				srv = m.start(t, bin)
				srv.stop(t)
				if got := m.count(t); got != tt.stored {
					t.Errorf("after fault %s and a restart the mailbox has %d messages; want %d", tt.fault, got, tt.stored)
				}
				if r := m.tidings(t, "", "check"); r.code != 0 || !regexp.MustCompile(`(?m)^clean$`).MatchString(r.stdout) {
					t.Errorf("tidings check after fault %s = %d, %q (stderr %q); want clean", tt.fault, r.code, r.stdout, r.stderr)
				}
			})
		}
	}
}
