// Package testprog finds the real programs that interoperability tests
// drive (fetchmail, curl, swaks, ...). Like the PostgreSQL harness, it makes
// the README's one test command work on a fresh Debian machine: a missing
// program is installed from its Debian package when the tests run as root,
// and otherwise the test fails with the line that installs it. It never
// skips.
package testprog

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

var (
	mu      sync.Mutex
	updated bool
)

// Need returns the path of prog, installing Debian package pkg first when
// prog is missing and the process runs as root.
func Need(t testing.TB, prog, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(prog); err == nil {
		return p
	}
	mu.Lock()
	defer mu.Unlock()
	if p, err := exec.LookPath(prog); err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s is not installed; install it with: sudo apt-get install -y %s", prog, pkg)
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if !updated {
		cmd := exec.Command("apt-get", "update")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s is not installed and apt-get update failed: %v\n%s", prog, err, tail(out))
		}
		updated = true
	}
	cmd := exec.Command("apt-get", "install", "-y", pkg)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s is not installed and apt-get install -y %s failed: %v\n%s", prog, pkg, err, tail(out))
	}
	p, err := exec.LookPath(prog)
	if err != nil {
		t.Fatalf("installed %s but %s is still not on PATH", pkg, prog)
	}
	return p
}

func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}
