// Package pgtest gives tests a real PostgreSQL: the server named by
// TIDINGS_TEST_POSTGRES, else postgres://postgres@127.0.0.1:5432/postgres,
// else a throwaway cluster it starts itself from the installed server
// binaries (installing Debian's postgresql package first when it is missing
// and the tests run as root). It never skips: when no PostgreSQL can be had,
// the test binary fails with a line saying how to install one.
//
// Each call of NewDatabase creates a fresh database and drops it when the
// test ends, so test packages never share state.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// DefaultURL is tried when TIDINGS_TEST_POSTGRES is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres"

var (
	mu      sync.Mutex
	baseURL string
	cleanup func()
	seq     atomic.Int64
)

// Main wraps testing.M: it finds or starts PostgreSQL, runs the tests and
// stops a throwaway cluster afterwards. Use it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	if cleanup != nil {
		cleanup()
	}
	mu.Unlock()
	os.Exit(code)
}

// URL returns the URL of a role that may create databases, starting a
// throwaway cluster when needed. It fails the test when none can be had.
func URL(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if baseURL != "" {
		return baseURL
	}
	u := os.Getenv("TIDINGS_TEST_POSTGRES")
	if u == "" {
		u = DefaultURL
	}
	if err := ping(u); err == nil {
		baseURL = u
		return u
	} else {
		fmt.Fprintf(os.Stderr, "pgtest: %s does not answer (%v); starting a throwaway cluster\n", redact(u), err)
	}
	u, stop, err := startCluster()
	if err != nil {
		t.Fatalf("pgtest: no PostgreSQL for the tests: %v", err)
	}
	baseURL, cleanup = u, stop
	return u
}

// NewDatabase creates an empty database for this test and returns its URL.
// The database is dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	base := URL(t)
	name := fmt.Sprintf("tidings_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, seq.Add(1))
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", base)
		if err != nil {
			t.Errorf("pgtest: %v", err)
			return
		}
		defer db.Close()
		if _, err := db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	pu, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	pu.Path = "/" + name
	return pu.String()
}

func ping(u string) error {
	db, err := sql.Open("pgx", u)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

func redact(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "the configured URL"
	}
	return pu.Redacted()
}

// binDir finds the newest installed PostgreSQL server binaries.
func binDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

func startCluster() (string, func(), error) {
	bin := binDir()
	if bin == "" {
		if os.Geteuid() != 0 {
			return "", nil, fmt.Errorf("PostgreSQL server binaries not found; install them (Debian: sudo apt-get install -y postgresql) or set TIDINGS_TEST_POSTGRES")
		}
		fmt.Fprintln(os.Stderr, "pgtest: installing Debian's postgresql package")
		for _, args := range [][]string{{"update"}, {"install", "-y", "postgresql"}} {
			cmd := exec.Command("apt-get", args...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				return "", nil, fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		if bin = binDir(); bin == "" {
			return "", nil, fmt.Errorf("postgresql installed but initdb not found")
		}
	}
	dir, err := os.MkdirTemp("", "tidings-pgtest-*")
	if err != nil {
		return "", nil, err
	}
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	// initdb refuses to run as root: run the cluster as the postgres user.
	var runAs []string
	if os.Geteuid() == 0 {
		pu, err := user.Lookup("postgres")
		if err != nil {
			return "", nil, fmt.Errorf("running as root and there is no postgres user to run the cluster as: %v", err)
		}
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", nil, err
		}
		runAs = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(name string, args ...string) error {
		full := append(append([]string{}, runAs...), append([]string{filepath.Join(bin, name)}, args...)...)
		cmd := exec.Command(full[0], full[1:]...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", name, err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=on", port, dir)
	if err := run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "start"); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	stop := func() {
		run("pg_ctl", "-D", data, "-m", "immediate", "stop")
		os.RemoveAll(dir)
	}
	u := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres", port)
	if err := ping(u); err != nil {
		stop()
		return "", nil, err
	}
	fmt.Fprintf(os.Stderr, "pgtest: throwaway PostgreSQL at 127.0.0.1:%d\n", port)
	return u, stop, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
