// Package smtpbench compares inbound SMTP delivery of Tidings (SQLite and
// PostgreSQL stores) with Postfix delivering to Maildirs, on the same
// machine with the same load generator (Postfix's smtp-source): 10
// sessions, 2,000 messages of 1 KiB, a new connection per message, 20
// recipients each. The figure is end-to-end delivered messages per second:
// Tidings delivers before its 250; for Postfix the clock runs until every
// copy is in its Maildir. Run it with run.sh (a benchmark, so
// `go test ./...` never starts it).
package smtpbench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tidings/auth"
	"tidings/delivery"
	"tidings/internal/dnstest"
	"tidings/smtpd"
	"tidings/storage"
	"tidings/storage/postgres"
	"tidings/storage/postgres/pgtest"
	"tidings/storage/sqlite"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	flagMsgs     = flag.Int("msgs", 2000, "messages")
	flagSessions = flag.Int("sessions", 10, "parallel smtp-source sessions")
	flagSize     = flag.Int("size", 1024, "message size in bytes")
	flagRcpts    = flag.Int("rcpts", 20, "recipients per message")
	flagRuns     = flag.Int("runs", 2, "alternating rounds over all servers")
	flagSystems  = flag.String("systems", "tidings-sqlite,tidings-postgres,postfix-maildir", "systems to run, comma-separated")
	flagPostfix  = flag.String("postfix-dir", "/tmp/tidings-bench-postfix", "throwaway Postfix instance (its conf/ must be in alternate_config_directories)")
)

const domain = "example.test"

// recipients are the addresses smtp-source -r generates from
// user@example.test: user@, 2user@, ..., Nuser@.
func recipients(n int) []string {
	out := []string{"user@" + domain}
	for i := 2; i <= n; i++ {
		out = append(out, fmt.Sprintf("%duser@%s", i, domain))
	}
	return out
}

// system is one server under test.
type system struct {
	name       string
	addr       string
	durability string
	delivered  func() int // copies in mailboxes
	stop       func()
}

func tidings(b *testing.B, name string) system {
	ctx := context.Background()
	var st storage.Store
	var err error
	switch name {
	case "tidings-sqlite":
		path := filepath.Join(b.TempDir(), "tidings.db")
		if err := sqlite.Migrate(ctx, path, nil); err != nil {
			b.Fatal(err)
		}
		st, err = sqlite.Open(ctx, path, storage.Options{})
	default:
		url := pgtest.NewDatabase(b)
		if err := postgres.Migrate(ctx, url, nil); err != nil {
			b.Fatal(err)
		}
		st, err = postgres.Open(ctx, url, storage.Options{})
	}
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := auth.New(st, auth.Config{}, log)
	if _, err := dir.AddDomain(ctx, domain); err != nil {
		b.Fatal(err)
	}
	var accts []storage.Account
	for _, r := range recipients(*flagRcpts) {
		a, err := dir.AddUser(ctx, r, "", auth.UserOptions{})
		if err != nil {
			b.Fatal(err)
		}
		accts = append(accts, a)
	}
	dns := dnstest.New(b)
	local := delivery.NewLocal(delivery.LocalConfig{Hostname: "bench.example.test"}, delivery.LocalDeps{Store: st, Dir: dir, Logger: log})
	srv := smtpd.New(smtpd.Config{Mode: smtpd.MX, Hostname: "bench.example.test", Resolver: dns.Resolver(), MaxRecipients: 100},
		smtpd.Deps{Store: st, Dir: dir, Local: local, Logger: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	d, _ := st.Durability(ctx)
	return system{
		name: name, addr: ln.Addr().String(),
		durability: fmt.Sprint(d.Settings, " safe=", d.Safe),
		delivered: func() int {
			n := 0
			for _, a := range accts {
				mb, err := st.Mailbox(ctx, storage.System, a.ID, "INBOX")
				if err != nil {
					b.Fatal(err)
				}
				n += int(mb.Messages)
			}
			return n
		},
		stop: func() {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			st.Close()
		},
	}
}

func postfixSystem(b *testing.B) system {
	base := *flagPostfix
	conf := filepath.Join(base, "conf")
	postfix := func(args ...string) {
		out, err := exec.Command("postfix", append([]string{"-c", conf}, args...)...).CombinedOutput()
		if err != nil {
			b.Fatalf("postfix %v: %v\n%s", args, err, out)
		}
	}
	exec.Command("postfix", "-c", conf, "stop").Run() // a leftover of an earlier run
	os.RemoveAll(base)
	for _, d := range []string{"conf", "queue", "data", "mail"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	port := freePort(b)
	uid, gid := idOf(b, "-u"), idOf(b, "-g")
	var vm strings.Builder
	for _, r := range recipients(*flagRcpts) {
		fmt.Fprintf(&vm, "%s %s/\n", r, strings.Split(r, "@")[0])
	}
	write(b, filepath.Join(conf, "vmailbox"), vm.String())
	write(b, filepath.Join(conf, "main.cf"), fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.example.test
mydestination =
smtpd_recipient_limit = 1000
virtual_mailbox_domains = %[2]s
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = texthash:%[1]s/conf/vmailbox
virtual_uid_maps = static:%[3]s
virtual_gid_maps = static:%[4]s
`, base, domain, uid, gid))
	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		b.Fatal(err)
	}
	mc := strings.Replace(string(master), "\nsmtp      inet  n       -       y", fmt.Sprintf("\n127.0.0.1:%d inet n - n", port), 1)
	write(b, filepath.Join(conf, "master.cf"), mc)
	for _, d := range []string{"data", "mail"} {
		exec.Command("chown", "postfix:postfix", filepath.Join(base, d)).Run()
	}
	exec.Command("postconf", "-c", conf, "-F", "*/*/chroot = n").Run()
	postfix("check")
	postfix("start")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			b.Fatalf("postfix did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return system{
		name: "postfix-maildir", addr: addr,
		durability: "queue files and Maildir files fsync()ed before acknowledgement (Postfix has no switch to turn this off)",
		delivered: func() int {
			n := 0
			filepath.WalkDir(filepath.Join(base, "mail"), func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.Contains(p, "/new/") {
					n++
				}
				return nil
			})
			return n
		},
		stop: func() { postfix("stop") },
	}
}

func idOf(b *testing.B, flag string) string {
	out, err := exec.Command("id", flag, "postfix").Output()
	if err != nil {
		b.Fatalf("id %s postfix: %v", flag, err)
	}
	return strings.TrimSpace(string(out))
}

func write(b *testing.B, p, s string) {
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		b.Fatal(err)
	}
}

func freePort(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// load runs smtp-source and waits until every copy is delivered.
func load(b *testing.B, s system) time.Duration {
	want := *flagMsgs * *flagRcpts
	start := time.Now()
	cmd := exec.Command("smtp-source", "-s", fmt.Sprint(*flagSessions), "-m", fmt.Sprint(*flagMsgs),
		"-l", fmt.Sprint(*flagSize), "-r", fmt.Sprint(*flagRcpts), "-t", "user@"+domain, "-f", "bench@example.org", s.addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("smtp-source against %s: %v\n%s", s.name, err, out)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for s.delivered() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%s delivered %d of %d copies", s.name, s.delivered(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func BenchmarkCompare(b *testing.B) {
	if _, err := exec.LookPath("smtp-source"); err != nil {
		b.Fatal("smtp-source not found: apt-get install -y postfix")
	}
	names := strings.Split(*flagSystems, ",")
	rates := map[string][]float64{}
	durability := map[string]string{}
	for run := 0; run < *flagRuns; run++ {
		for _, name := range names {
			var s system
			if name == "postfix-maildir" {
				s = postfixSystem(b)
			} else {
				s = tidings(b, name)
			}
			d := load(b, s)
			s.stop()
			rate := float64(*flagMsgs) / d.Seconds()
			rates[name] = append(rates[name], rate)
			durability[name] = s.durability
			b.Logf("run %d %-17s %6.1f msgs/s (%d msgs × %d rcpts in %v)", run+1, name, rate, *flagMsgs, *flagRcpts, d.Round(time.Millisecond))
		}
	}
	best := func(n string) float64 {
		m := 0.0
		for _, r := range rates[n] {
			m = max(m, r)
		}
		return m
	}
	pf := best("postfix-maildir")
	if pf == 0 {
		pf = 1
	}
	for _, n := range names {
		b.Logf("%-17s best %6.1f msgs/s  ratio to postfix %.2f  durability: %s", n, best(n), best(n)/pf, durability[n])
		b.ReportMetric(best(n), n+"-msgs/s")
	}
}
