// Package imapbench compares Tidings' IMAP server (SQLite and PostgreSQL
// stores) with Dovecot's imapd on the same machine, the same messages and
// the same client, over implicit TLS: throughput of N concurrent clients
// looping SELECT / FETCH 1:* (FLAGS ENVELOPE) / STORE +FLAGS / SEARCH TEXT /
// IDLE+DONE, and memory per idle connection with many IDLE clients. Both
// servers run as separate processes (Tidings: the built `tidings serve`;
// Dovecot: a private instance in a temp dir), so their resident memory is
// comparable. Run it with run.sh (a benchmark, so `go test ./...` never
// starts it).
package imapbench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tidings/auth"
	"tidings/config"
	"tidings/message"
	"tidings/storage"
	"tidings/storage/postgres"
	"tidings/storage/postgres/pgtest"
	"tidings/storage/sqlite"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	flagMsgs     = flag.Int("msgs", 500, "messages per mailbox (each client has its own account)")
	flagClients  = flag.Int("clients", 10, "concurrent clients in the throughput runs (and accounts)")
	flagSize     = flag.Int("size", 4<<10, "approximate message size in bytes")
	flagRuns     = flag.Int("runs", 3, "alternating rounds over all servers")
	flagDuration = flag.Duration("duration", 8*time.Second, "length of one throughput run")
	flagIdle     = flag.Int("idle", 1000, "idle clients for the memory measurement (0 = skip)")
	flagDovecot  = flag.String("dovecot", "dovecot", "dovecot binary (Debian: apt-get install -y dovecot-imapd)")
)

const (
	domain   = "example.test"
	password = "bench password"
	// perIP is how many idle connections share one loopback source
	// address: below both servers' per-user-and-IP limit (10) when each
	// comes from a different account, and below Tidings' per-IP cap (50).
	perIP = 10
	// rareWord is in one message of 20, so SEARCH TEXT has a selective
	// answer.
	rareWord = "zanzibar"
)

func user(i int) string { return fmt.Sprintf("user%d@%s", i, domain) }

// corpus makes n distinct messages of about size bytes.
func corpus(n, size int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the quick brown fox jumps over a lazy dog mail server message inbox imap fetch envelope flags search idle header body line text")
	out := make([][]byte, n)
	for i := range out {
		var b strings.Builder
		fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\r\nTo: Someone <rcpt@example.test>, other@example.test\r\nCc: \"Third, Person\" <third@example.net>\r\nSubject: message %d about things\r\nMessage-ID: <%d@bench.example.org>\r\nDate: Mon, 1 Jun 2026 10:%02d:00 +0000\r\n\r\n", i, i, i, i, i%60)
		if i%20 == 0 {
			b.WriteString("This one mentions " + rareWord + ".\r\n")
		}
		for b.Len() < size {
			for j := 0; j < 12; j++ {
				b.WriteString(words[r.IntN(len(words))])
				b.WriteByte(' ')
			}
			b.WriteString("\r\n")
		}
		out[i] = []byte(b.String())
	}
	return out
}

// server is one system under test: a process tree listening for implicit
// TLS on addr.
type server struct {
	name    string
	addr    string
	restart func() // a fresh process over the same data (memory runs)
	rss     func() (rss, pss int64)
}

// seedTidings creates the accounts and delivers msgs to each INBOX (one
// blob, one entry per account, as for a message to every user).
func seedTidings(b *testing.B, st storage.Store, msgs [][]byte, users int) {
	b.Helper()
	ctx := context.Background()
	// Cheap argon2 parameters (the hash records them, so the server
	// verifies with them too): Dovecot's passwd-file holds {PLAIN}
	// passwords, and the default 64 MiB per hash would otherwise be heap
	// garbage in the memory figures that the runtime returns to the OS
	// only lazily.
	dir := auth.New(st, auth.Config{Argon2: auth.Argon2Params{Time: 1, Memory: 64, Threads: 1}}, nil)
	if _, err := dir.AddDomain(ctx, domain); err != nil {
		b.Fatal(err)
	}
	var ids []storage.AccountID
	for i := 0; i < users; i++ {
		a, err := dir.AddUser(ctx, user(i), password, auth.UserOptions{})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	for _, m := range msgs {
		an, err := message.Analyze(bytes.NewReader(m), int64(len(m)), message.Options{})
		if err != nil {
			b.Fatal(err)
		}
		var ts []storage.DeliveryTarget
		for _, id := range ids {
			ts = append(ts, storage.DeliveryTarget{Owner: id, Message: storage.NewMessage{Analysis: an}})
		}
		if _, err := st.Deliver(ctx, storage.BytesSource(m), ts); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.WaitIndexed(ctx); err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
}

// buildTidings builds cmd/tidings once.
func buildTidings(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "tidings")
	cmd := exec.Command("go", "build", "-o", bin, "tidings/cmd/tidings")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./cmd/tidings: %v\n%s", err, out)
	}
	return bin
}

// tidings runs `tidings serve` over a seeded store (database = "" for
// SQLite in dataDir) with only the IMAPS listener.
func tidings(b *testing.B, name, bin, dataDir, database string) server {
	b.Helper()
	cert, key, _, err := config.SelfSigned(filepath.Join(dataDir, "bench-tls"), "localhost")
	if err != nil {
		b.Fatal(err)
	}
	port := freePort(b)
	conf := fmt.Sprintf(`hostname = "localhost"
data_dir = %q
database = %q

[blobs]
store = "database"

[[tls.certificate]]
cert_file = %q
key_file = %q

[listen]
smtp = ""
submission = ""
submissions = ""
imap = ""
imaps = "127.0.0.1:%d"
pop3 = ""
pop3s = ""
http = ""

[log]
level = "warn"
`, dataDir, database, cert, key, port)
	confPath := filepath.Join(dataDir, "bench.toml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logPath := filepath.Join(dataDir, "serve.log")
	var cmd *exec.Cmd
	start := func() {
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		cmd = exec.Command(bin, "serve", "--config", confPath)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		logf.Close()
		if err := waitListen(addr); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			log, _ := os.ReadFile(logPath)
			b.Fatalf("%s did not listen on %s: %v\n%s", name, addr, err, log)
		}
	}
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	start()
	// A cleanup, not a deferred call in the caller: a later setup step
	// failing must not leave this process running.
	b.Cleanup(stop)
	return server{name: name, addr: addr,
		restart: func() { stop(); start() },
		rss:     func() (int64, int64) { return treeMemory(cmd.Process.Pid) },
	}
}

// dovecot starts a private Dovecot instance (foreground, our child) with
// passwd-file users and maildirs holding the same messages, its login
// processes in high-performance mode (service_count = 0).
func dovecot(b *testing.B, msgs [][]byte, users, idle int) server {
	b.Helper()
	bin, err := exec.LookPath(*flagDovecot)
	if err != nil {
		b.Fatalf("dovecot not installed; install it with: apt-get install -y dovecot-imapd")
	}
	if _, err := os.Stat("/usr/lib/dovecot/imap"); err != nil {
		b.Fatalf("dovecot's imap server is not installed; install it with: apt-get install -y dovecot-imapd")
	}
	dir, err := os.MkdirTemp("", "imapbench-dovecot-*")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) }) // after stop: cleanups run last-in first-out
	os.Chmod(dir, 0o755)
	cert, key, _, err := config.SelfSigned(filepath.Join(dir, "tls"), "localhost")
	if err != nil {
		b.Fatal(err)
	}
	var passwd strings.Builder
	for i := 0; i < users; i++ {
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s::::::\n", user(i), password)
		md := filepath.Join(dir, "mail", user(i), "Maildir")
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(md, sub), 0o700); err != nil {
				b.Fatal(err)
			}
		}
		for j, m := range msgs {
			name := fmt.Sprintf("%d.M%dP1.bench,S=%d:2,", 1700000000+j, j, len(m))
			if err := os.WriteFile(filepath.Join(md, "cur", name), m, 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(passwd.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("chown", "-R", "mail:mail", filepath.Join(dir, "mail")).CombinedOutput(); err != nil {
		b.Fatalf("chown: %v %s", err, out)
	}
	port := freePort(b)
	// One imap process per connection is Dovecot's design; the limits are
	// raised so the idle run's connections all get one.
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <%[2]s
ssl_key = <%[3]s
disable_plaintext_auth = yes
auth_mechanisms = plain
first_valid_uid = 1
default_process_limit = %[5]d
default_client_limit = %[6]d
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[1]s/passwd
}
userdb {
  driver = static
  args = uid=mail gid=mail home=%[1]s/mail/%%u
}
mail_location = maildir:~/Maildir
default_login_user = dovenull
default_internal_user = dovecot
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    port = %[4]d
    ssl = yes
  }
  service_count = 0
  process_min_avail = 2
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`, dir, cert, key, port, idle+users+100, 4*(idle+users+100))
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var cmd *exec.Cmd
	start := func() {
		cmd = exec.Command(bin, "-F", "-c", confPath)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if err := waitListen(addr); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			cmd.Process.Kill()
			cmd.Wait()
			b.Fatalf("dovecot did not listen on %s: %v\n%s", addr, err, log)
		}
	}
	stop := func() {
		exec.Command(bin, "-c", confPath, "stop").Run()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	start()
	b.Cleanup(stop)
	return server{name: "dovecot", addr: addr,
		restart: func() { stop(); start() },
		rss:     func() (int64, int64) { return treeMemory(cmd.Process.Pid) },
	}
}

func waitListen(addr string) error {
	var err error
	for i := 0; i < 300; i++ {
		var c net.Conn
		if c, err = net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

func freePort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// treeMemory sums VmRSS (from /proc/PID/status) and Pss (from
// smaps_rollup) in bytes over root and all its descendants: Dovecot's
// master, login, auth and per-connection imap processes; Tidings' one.
// RSS counts shared library pages once per process, PSS divides them.
func treeMemory(root int) (rss, pss int64) {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at
		// the last ')'.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
		}
	}
	in := func(pid int) bool {
		for ; pid > 1; pid = parent[pid] {
			if pid == root {
				return true
			}
		}
		return false
	}
	for pid := range parent {
		if !in(pid) {
			continue
		}
		rss += kbField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
		pss += kbField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
	}
	return rss, pss
}

func kbField(path, field string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, field) {
			f := strings.Fields(l[len(field):])
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// client is one IMAP connection of the load generator, speaking the
// protocol directly so both servers get byte-identical commands.
type client struct {
	c   *tls.Conn
	r   *bufio.Reader
	tag int
}

// dial connects with implicit TLS from source address src (nil: any),
// reads the greeting and logs in.
func dial(addr string, src net.IP, login string) (*client, error) {
	d := &net.Dialer{Timeout: 30 * time.Second}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	cl := &client{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	l, err := cl.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "* OK") {
		c.Close()
		return nil, fmt.Errorf("greeting %q: %v", l, err)
	}
	if err := cl.cmd(fmt.Sprintf("LOGIN %q %q", login, password)); err != nil {
		c.Close()
		return nil, fmt.Errorf("login %s: %w", login, err)
	}
	return cl, nil
}

// cmd sends one command and reads until its tagged reply, skipping
// untagged data and literals; a reply other than OK is an error.
func (c *client) cmd(line string) error {
	c.tag++
	tag := "a" + strconv.Itoa(c.tag)
	if _, err := io.WriteString(c.c, tag+" "+line+"\r\n"); err != nil {
		return err
	}
	return c.until(tag + " ")
}

// until reads response lines until one starts with prefix, then checks it
// is OK (or, for "+", a continuation).
func (c *client) until(prefix string) error {
	for {
		first := true
		var head []byte
		for {
			l, err := c.r.ReadSlice('\n')
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return err
			}
			if first {
				head = append(head[:0], l[:min(len(l), 64)]...)
				first = false
			}
			if err != nil { // line longer than the buffer: keep reading
				continue
			}
			// A literal {n} or {n+} ends the line: skip its octets and
			// read the rest of the response line.
			if n, ok := literal(l); ok {
				if _, err := io.CopyN(io.Discard, c.r, n); err != nil {
					return err
				}
				continue
			}
			break
		}
		if bytes.HasPrefix(head, []byte(prefix)) {
			if prefix == "+" {
				return nil
			}
			if rest := head[len(prefix):]; !bytes.HasPrefix(rest, []byte("OK")) {
				return fmt.Errorf("%s", strings.TrimSpace(string(head)))
			}
			return nil
		}
	}
}

func literal(l []byte) (int64, bool) {
	l = bytes.TrimSuffix(l, []byte("\r\n"))
	if len(l) < 3 || l[len(l)-1] != '}' {
		return 0, false
	}
	i := bytes.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(string(l[i+1:len(l)-1]), "+"), 10, 64)
	return n, err == nil
}

// idle enters IDLE and leaves it (RFC 9051 §6.3.13).
func (c *client) idle() error {
	c.tag++
	tag := "a" + strconv.Itoa(c.tag)
	if _, err := io.WriteString(c.c, tag+" IDLE\r\n"); err != nil {
		return err
	}
	if err := c.until("+"); err != nil {
		return err
	}
	if _, err := io.WriteString(c.c, "DONE\r\n"); err != nil {
		return err
	}
	return c.until(tag + " ")
}

// loop is one round of the workload: five commands.
const opsPerLoop = 5

func (c *client) loop(i, msgs int) error {
	if err := c.cmd("SELECT INBOX"); err != nil {
		return err
	}
	if err := c.cmd("FETCH 1:* (FLAGS ENVELOPE)"); err != nil {
		return err
	}
	op := "+FLAGS"
	if i%2 == 1 {
		op = "-FLAGS"
	}
	if err := c.cmd(fmt.Sprintf(`STORE %d %s (\Flagged)`, 1+i/2%msgs, op)); err != nil {
		return err
	}
	if err := c.cmd("SEARCH TEXT " + rareWord); err != nil {
		return err
	}
	return c.idle()
}

// result is one throughput run.
type result struct {
	ops     int64
	elapsed time.Duration
}

func (r result) opsPerSec() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// load logs every client in, then (timed) loops the workload for d.
func load(addr string, clients, msgs int, d time.Duration) (result, error) {
	cs := make([]*client, clients)
	for i := range cs {
		c, err := dial(addr, nil, user(i))
		if err != nil {
			return result{}, err
		}
		defer c.c.Close()
		cs[i] = c
	}
	var ops atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				if err := c.loop(i, msgs); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				ops.Add(opsPerLoop)
			}
		}()
	}
	wg.Wait()
	r := result{ops: ops.Load(), elapsed: time.Since(start)}
	for _, c := range cs {
		c.cmd("LOGOUT")
	}
	return r, firstErr
}

// idleMemory opens n connections (each logged in, INBOX selected, in
// IDLE) in two steps and returns the server's memory growth per
// connection between n/10 and n connections, so that one-time costs
// (password hashing on first login, mailbox indexes, caches) fall before
// the first measurement.
func idleMemory(s server, users, n int) (rssPer, pssPer float64, err error) {
	var conns []*client
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	open := func(upto int) error {
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		from := len(conns)
		for i := from; i < upto; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				// Connection i comes from 127.0.0.(2+i/perIP), account
				// i%perIP: at most one session per account and address.
				src := net.IPv4(127, 0, byte((2+i/perIP)>>8), byte(2+i/perIP))
				c, err := dial(s.addr, src, user(i%perIP%users))
				if err == nil {
					if err = c.cmd("SELECT INBOX"); err == nil {
						_, err = io.WriteString(c.c, "i IDLE\r\n")
						if err == nil {
							err = c.until("+")
						}
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if c != nil {
					conns = append(conns, c)
				}
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("idle connection %d: %w", i, err)
				}
			}()
		}
		wg.Wait()
		return firstErr
	}
	// settle waits until resident memory stops moving (the Go runtime
	// returns freed heap to the OS in the background, Dovecot's processes
	// finish starting), at most 30 s.
	settle := func() (int64, int64) {
		time.Sleep(2 * time.Second)
		rss, pss := s.rss()
		for i := 0; i < 28; i++ {
			time.Sleep(time.Second)
			r, p := s.rss()
			d := r - rss
			rss, pss = r, p
			if d < 0 {
				d = -d
			}
			if d < rss/500 {
				break
			}
		}
		return rss, pss
	}
	first := max(n/10, 1)
	if err := open(first); err != nil {
		return 0, 0, err
	}
	rss0, pss0 := settle()
	if err := open(n); err != nil {
		return 0, 0, err
	}
	rss1, pss1 := settle()
	fmt.Printf("%-18s RSS %6.1f MB with %d, %6.1f MB with %d connections\n", s.name, float64(rss0)/(1<<20), first, float64(rss1)/(1<<20), n)
	k := float64(n - first)
	return float64(rss1-rss0) / k, float64(pss1-pss0) / k, nil
}

// BenchmarkCompare runs the comparison once (b.N is ignored: run with
// -benchtime=1x) and prints a table.
func BenchmarkCompare(b *testing.B) {
	n, clients := *flagMsgs, *flagClients
	users := max(clients, perIP)
	msgs := corpus(n, *flagSize)
	setupStart := time.Now()
	ctx := context.Background()
	bin := buildTidings(b)
	fmt.Printf("built cmd/tidings: %s\n", time.Since(setupStart).Round(time.Millisecond))

	sqlDir := b.TempDir()
	sqlPath := filepath.Join(sqlDir, "tidings.db")
	if err := sqlite.Migrate(ctx, sqlPath, nil); err != nil {
		b.Fatal(err)
	}
	sq, err := sqlite.Open(ctx, sqlPath, storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	seedTidings(b, sq, msgs, users)
	fmt.Printf("seeded sqlite: %s\n", time.Since(setupStart).Round(time.Millisecond))

	url := pgtest.NewDatabase(b)
	if err := postgres.Migrate(ctx, url, nil); err != nil {
		b.Fatal(err)
	}
	pg, err := postgres.Open(ctx, url, storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	seedTidings(b, pg, msgs, users)
	fmt.Printf("seeded postgres: %s\n", time.Since(setupStart).Round(time.Millisecond))

	servers := []server{
		tidings(b, "tidings-sqlite", bin, sqlDir, ""),
		tidings(b, "tidings-postgres", bin, b.TempDir(), url),
		dovecot(b, msgs, users, *flagIdle),
	}
	// Warm up: first SELECTs build Dovecot's indexes and fill both
	// servers' caches; first logins pay for password hashing.
	for _, s := range servers {
		if _, err := load(s.addr, users, n, 500*time.Millisecond); err != nil {
			b.Fatalf("%s warm-up: %v", s.name, err)
		}
	}
	fmt.Printf("setup: %d messages x %d accounts per server, %s\n", n, users, time.Since(setupStart).Round(time.Millisecond))
	fmt.Printf("workload per loop: SELECT INBOX; FETCH 1:* (FLAGS ENVELOPE); STORE n +/-FLAGS (\\Flagged); SEARCH TEXT; IDLE+DONE\n")

	best := map[string]result{}
	fmt.Printf("\n%-4s %-18s %10s %10s\n", "run", "server", "ops", "ops/s")
	b.ResetTimer()
	for run := 1; run <= *flagRuns; run++ {
		// Alternate the order so neither side always runs on a warmer
		// machine.
		order := append([]server{}, servers...)
		if run%2 == 0 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for _, s := range order {
			r, err := load(s.addr, clients, n, *flagDuration)
			if err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			fmt.Printf("%-4d %-18s %10d %10.0f\n", run, s.name, r.ops, r.opsPerSec())
			if cur, ok := best[s.name]; !ok || r.opsPerSec() > cur.opsPerSec() {
				best[s.name] = r
			}
		}
	}
	b.StopTimer()
	d := best["dovecot"]
	fmt.Printf("\nbest of %d runs, %d clients, ratio to dovecot (ops/s; >1 = faster than dovecot)\n", *flagRuns, clients)
	for _, s := range servers {
		r := best[s.name]
		fmt.Printf("%-18s %10.0f ops/s %8.1f loops/s  ratio %.2f\n", s.name, r.opsPerSec(), r.opsPerSec()/opsPerLoop, r.opsPerSec()/d.opsPerSec())
	}

	if *flagIdle <= 0 {
		return
	}
	fmt.Printf("\nmemory per idle connection (logged in, INBOX selected, in IDLE), growth from %d to %d connections, fresh server processes after 3 s of load\n", max(*flagIdle/10, 1), *flagIdle)
	for _, s := range servers {
		s.restart()
		// A short load first, so the measured process is in a steady
		// state: Tidings' start makes a 64 MiB argon2 dummy hash (auth.New)
		// whose heap the Go runtime gives back only after later GC cycles,
		// which would otherwise hide the connections' memory.
		if _, err := load(s.addr, users, n, 3*time.Second); err != nil {
			b.Fatalf("%s: %v", s.name, err)
		}
		rss, pss, err := idleMemory(s, users, *flagIdle)
		if err != nil {
			b.Fatalf("%s idle: %v", s.name, err)
		}
		fmt.Printf("%-18s %8.1f KB RSS %8.1f KB PSS per connection\n", s.name, rss/1024, pss/1024)
	}
}
