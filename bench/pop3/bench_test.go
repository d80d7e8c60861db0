// Package pop3bench compares POP3 RETR throughput of Tidings (SQLite and
// PostgreSQL stores) with Dovecot's pop3d on the same machine, the same
// messages and the same client, over implicit TLS. Run it with run.sh (a
// benchmark, so `go test ./...` never starts it).
package pop3bench

import (
	"bufio"
	"context"
	"crypto/tls"
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
	"testing"
	"time"

	"tidings/auth"
	"tidings/config"
	"tidings/message"
	"tidings/pop3d"
	"tidings/storage"
	"tidings/storage/postgres"
	"tidings/storage/postgres/pgtest"
	"tidings/storage/sqlite"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	flagMsgs    = flag.Int("msgs", 1000, "messages per client (each client has its own maildrop)")
	flagClients = flag.Int("clients", 10, "concurrent clients")
	flagSize    = flag.Int("size", 8<<10, "approximate message size in bytes")
	flagRuns    = flag.Int("runs", 2, "alternating rounds over all servers")
	flagDovecot = flag.String("dovecot", "dovecot", "dovecot binary (Debian: apt-get install -y dovecot-pop3d)")
)

const (
	domain   = "example.test"
	password = "bench password"
)

func user(i int) string { return fmt.Sprintf("user%d@%s", i, domain) }

// corpus makes n distinct messages of about size bytes: a plausible
// header and lines of text, some starting with "." (byte-stuffing).
func corpus(n, size int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the quick brown fox jumps over a lazy dog mail server message inbox pop retrieve octets header body line text")
	out := make([][]byte, n)
	for i := range out {
		var b strings.Builder
		fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\r\nTo: rcpt@example.test\r\nSubject: message %d\r\nMessage-ID: <%d@bench.example.org>\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n\r\n", i, i, i, i)
		for b.Len() < size {
			if r.IntN(20) == 0 {
				b.WriteString(".")
			}
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

// server is one system under test, listening for implicit TLS.
type server struct {
	name string
	addr string
	stop func()
}

func tidings(b *testing.B, name string, st storage.Store, msgs [][]byte, clients int) server {
	b.Helper()
	ctx := context.Background()
	dir := auth.New(st, auth.Config{}, nil)
	if _, err := dir.AddDomain(ctx, domain); err != nil {
		b.Fatal(err)
	}
	var ids []storage.AccountID
	for i := 0; i < clients; i++ {
		a, err := dir.AddUser(ctx, user(i), password, auth.UserOptions{})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	// One Deliver per message with one entry per user: the blob is
	// stored once, as for a message to ten recipients.
	for _, m := range msgs {
		an, err := message.Analyze(strings.NewReader(string(m)), int64(len(m)), message.Options{})
		if err != nil {
			b.Fatal(err)
		}
		var ts []storage.DeliveryTarget
		for _, id := range ids {
			ts = append(ts, storage.DeliveryTarget{Owner: id, Message: storage.NewMessage{
				Prefix: []byte("Delivered-To: " + user(0) + "\r\n"), Analysis: an}})
		}
		if _, err := st.Deliver(ctx, storage.BytesSource(m), ts); err != nil {
			b.Fatal(err)
		}
	}
	tlsCfg := certs(b, b.TempDir())
	srv := pop3d.New(pop3d.Config{Hostname: "localhost", TLS: tlsCfg}, pop3d.Deps{Store: st, Dir: dir})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.ServeTLS(ln)
	return server{name: name, addr: ln.Addr().String(), stop: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		st.Close()
	}}
}

func certs(b *testing.B, dir string) *tls.Config {
	cert, key, _, err := config.SelfSigned(dir, "localhost")
	if err != nil {
		b.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		b.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}}
}

// dovecot starts a private Dovecot instance (foreground, our child) with
// passwd-file users and maildirs holding the same messages.
func dovecot(b *testing.B, msgs [][]byte, clients int) server {
	b.Helper()
	bin, err := exec.LookPath(*flagDovecot)
	if err != nil {
		b.Fatalf("dovecot not installed; install it with: apt-get install -y dovecot-pop3d")
	}
	dir, err := os.MkdirTemp("", "pop3bench-dovecot-*")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	cert, key, _, err := config.SelfSigned(filepath.Join(dir, "tls"), "localhost")
	if err != nil {
		b.Fatal(err)
	}
	var passwd strings.Builder
	for i := 0; i < clients; i++ {
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s::::::\n", user(i), password)
		md := filepath.Join(dir, "mail", user(i), "Maildir")
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(md, sub), 0o700); err != nil {
				b.Fatal(err)
			}
		}
		for j, m := range msgs {
			// The same per-entry Delivered-To line Tidings keeps in its
			// prefix, so both servers send the same octets.
			full := append([]byte("Delivered-To: "+user(0)+"\r\n"), m...)
			name := fmt.Sprintf("%d.M%dP1.bench,S=%d:2,", 1700000000+j, j, len(full))
			if err := os.WriteFile(filepath.Join(md, "cur", name), full, 0o600); err != nil {
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
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = required
ssl_cert = <%[2]s
ssl_key = <%[3]s
disable_plaintext_auth = yes
auth_mechanisms = plain
first_valid_uid = 1
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
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = %[4]d
    ssl = yes
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`, dir, cert, key, port)
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-F", "-c", confPath)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stop := func() {
		exec.Command(bin, "-c", confPath, "stop").Run()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 200 {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			stop()
			b.Fatalf("dovecot did not listen on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return server{name: "dovecot", addr: addr, stop: stop}
}

func freePort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// result is one load run.
type result struct {
	msgs    int
	bytes   int64
	elapsed time.Duration
}

func (r result) msgsPerSec() float64 { return float64(r.msgs) / r.elapsed.Seconds() }
func (r result) mbPerSec() float64   { return float64(r.bytes) / 1e6 / r.elapsed.Seconds() }

// client is one POP3 connection of the load generator.
type client struct {
	c *tls.Conn
	r *bufio.Reader
}

// cmd sends line ("" = just read) and reads a +OK reply.
func (c client) cmd(line string) (string, error) {
	if line != "" {
		if _, err := io.WriteString(c.c, line+"\r\n"); err != nil {
			return "", err
		}
	}
	l, err := c.r.ReadString('\n')
	if err == nil && !strings.HasPrefix(l, "+OK") {
		err = fmt.Errorf("%s: %s", line, strings.TrimSpace(l))
	}
	return l, err
}

// load logs every client in, then (timed) RETRieves every message of its
// maildrop one after the other, as a mail client downloading does.
func load(addr string, clients int) (result, error) {
	cs := make([]client, clients)
	for i := range cs {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return result{}, err
		}
		defer c.Close()
		cs[i] = client{c, bufio.NewReaderSize(c, 64<<10)}
		for _, l := range []string{"", "USER " + user(i), "PASS " + password} {
			if _, err := cs[i].cmd(l); err != nil {
				return result{}, fmt.Errorf("login %s: %w", user(i), err)
			}
		}
	}
	var mu sync.Mutex
	var total result
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, size, err := c.retrAll()
			mu.Lock()
			defer mu.Unlock()
			total.msgs += n
			total.bytes += size
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	for _, c := range cs {
		c.cmd("QUIT")
	}
	return total, firstErr
}

// retrAll RETRieves every message and counts the octets received.
func (c client) retrAll() (int, int64, error) {
	l, err := c.cmd("STAT")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(l)
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("STAT: %q", l)
	}
	n, _ := strconv.Atoi(f[1])
	var size int64
	for i := 1; i <= n; i++ {
		if _, err := c.cmd(fmt.Sprintf("RETR %d", i)); err != nil {
			return i - 1, size, err
		}
		for {
			line, err := c.r.ReadSlice('\n')
			if err != nil && err != bufio.ErrBufferFull {
				return i - 1, size, err
			}
			if len(line) == 3 && line[0] == '.' {
				break
			}
			size += int64(len(line))
		}
	}
	return n, size, nil
}

// BenchmarkCompare runs the comparison once (b.N is ignored: run with
// -benchtime=1x) and prints a table.
func BenchmarkCompare(b *testing.B) {
	n, clients := *flagMsgs, *flagClients
	msgs := corpus(n, *flagSize)
	setupStart := time.Now()

	sqlPath := filepath.Join(b.TempDir(), "tidings.db")
	if err := sqlite.Migrate(context.Background(), sqlPath, nil); err != nil {
		b.Fatal(err)
	}
	sq, err := sqlite.Open(context.Background(), sqlPath, storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	url := pgtest.NewDatabase(b)
	if err := postgres.Migrate(context.Background(), url, nil); err != nil {
		b.Fatal(err)
	}
	pg, err := postgres.Open(context.Background(), url, storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	servers := []server{
		tidings(b, "tidings-sqlite", sq, msgs, clients),
		tidings(b, "tidings-postgres", pg, msgs, clients),
		dovecot(b, msgs, clients),
	}
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	fmt.Printf("setup: %d messages x %d maildrops per server, %s\n", n, clients, time.Since(setupStart).Round(time.Millisecond))

	best := map[string]result{}
	fmt.Printf("\n%-4s %-18s %10s %10s %10s\n", "run", "server", "msgs", "msgs/s", "MB/s")
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
			r, err := load(s.addr, clients)
			if err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			fmt.Printf("%-4d %-18s %10d %10.0f %10.1f\n", run, s.name, r.msgs, r.msgsPerSec(), r.mbPerSec())
			if cur, ok := best[s.name]; !ok || r.elapsed < cur.elapsed {
				best[s.name] = r
			}
		}
	}
	d := best["dovecot"]
	fmt.Printf("\nbest of %d runs, ratio to dovecot (msgs/s; >1 = faster than dovecot)\n", *flagRuns)
	for _, s := range servers {
		r := best[s.name]
		fmt.Printf("%-18s %10.0f msgs/s %8.1f MB/s  ratio %.2f\n", s.name, r.msgsPerSec(), r.mbPerSec(), r.msgsPerSec()/d.msgsPerSec())
	}
}
