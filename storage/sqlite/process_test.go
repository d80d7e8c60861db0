package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tidings/storage"
	"tidings/storage/sqlite"
)

// helperEnv names the database file the helper process writes to.
const helperEnv = "TIDINGS_TEST_SQLITE_HELPER_DB"

const helperAddr = "user@example.org"

// TestWriteFromAnotherProcess: a message appended by another process (the
// admin CLI, an import) reaches a running store's subscribers and its
// ChangesSince (DESIGN.md §Storage: PRAGMA data_version).
func TestWriteFromAnotherProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tidings.db")
	if err := sqlite.Migrate(ctx, path, nil); err != nil {
		t.Fatalf("Migrate = %v", err)
	}
	s, err := sqlite.Open(ctx, path, storage.Options{})
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
	})
	if _, err := s.CreateDomain(ctx, storage.Domain{Name: "example.org"}); err != nil {
		t.Fatalf("CreateDomain = %v", err)
	}
	a, err := s.CreateAccount(ctx, storage.NewAccount{Address: helperAddr})
	if err != nil {
		t.Fatalf("CreateAccount = %v", err)
	}
	inbox, err := s.Mailbox(ctx, a.ID, a.ID, "INBOX")
	if err != nil {
		if inbox, err = s.CreateMailbox(ctx, a.ID, a.ID, storage.NewMailbox{Name: "INBOX"}); err != nil {
			t.Fatalf("CreateMailbox(INBOX) = %v", err)
		}
	}
	before, err := s.ChangesSince(ctx, a.ID, a.ID, inbox.ID, 0)
	if err != nil {
		t.Fatalf("ChangesSince(0) = %v", err)
	}
	hints := make(chan storage.Hint, 64)
	cancel := s.Subscribe(a.ID, func(h storage.Hint) {
		select {
		case hints <- h:
		default:
		}
	})
	defer cancel()

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessWrite$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	var uid storage.UID
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "appended uid="); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				t.Fatalf("helper output %q: %v", line, err)
			}
			uid = storage.UID(n)
		}
	}
	if uid == 0 {
		t.Fatalf("helper process printed no UID:\n%s", out)
	}

	deadline := time.After(10 * time.Second) // correctness bound, not a timing assertion
	for got := false; !got; {
		select {
		case h := <-hints:
			got = h.Account == a.ID && h.Mailbox == inbox.ID
		case <-deadline:
			t.Fatalf("no hint for INBOX within 10s after another process appended UID %d", uid)
		}
	}
	c, err := s.ChangesSince(ctx, a.ID, a.ID, inbox.ID, before.Highest)
	if err != nil {
		t.Fatalf("ChangesSince(%d) = %v", before.Highest, err)
	}
	if len(c.Changed) != 1 || c.Changed[0].UID != uid {
		t.Errorf("ChangesSince(%d) = %+v; want UID %d written by the other process", before.Highest, c.Changed, uid)
	}
}

// TestHelperProcessWrite is the other process of TestWriteFromAnotherProcess;
// it does nothing unless started by it.
func TestHelperProcessWrite(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process of TestWriteFromAnotherProcess")
	}
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, storage.Options{})
	if err != nil {
		t.Fatalf("Open(%q) = %v", path, err)
	}
	defer s.Close()
	a, err := s.AccountByAddress(ctx, helperAddr)
	if err != nil {
		t.Fatalf("AccountByAddress = %v", err)
	}
	inbox, err := s.Mailbox(ctx, a.ID, a.ID, "INBOX")
	if err != nil {
		t.Fatalf("Mailbox(INBOX) = %v", err)
	}
	hdr := "From: cli@example.org\r\nSubject: from another process\r\n\r\n"
	body := "written by pid " + strconv.Itoa(os.Getpid()) + "\r\n"
	raw := storage.BytesSource(hdr + body)
	r, err := s.Append(ctx, a.ID, a.ID, inbox.ID, raw, storage.NewMessage{Analysis: &storage.Analysis{
		Version:    storage.AnalysisVersion,
		HeaderLen:  int64(len(hdr)),
		Size:       raw.Size(),
		Root:       storage.Part{Type: "text", Subtype: "plain", BodyStart: int64(len(hdr)), BodyEnd: raw.Size(), Lines: 1},
		SearchText: storage.Fold(hdr + body),
	}})
	if err != nil {
		t.Fatalf("Append = %v", err)
	}
	fmt.Printf("appended uid=%d\n", r.UID)
}
