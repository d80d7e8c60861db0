package imapd

import (
	"context"
	"testing"
	"time"
)

// TestDisabledAccountEndsSession: disabling an account closes its open
// IMAP sessions (DESIGN.md §Identity); other accounts' sessions stay.
func TestDisabledAccountEndsSession(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d)
		ca := e.login(alice, clientOpts{})
		if _, err := ca.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("Select = %v", err)
		}
		cb := e.login(bob, clientOpts{})
		if err := e.dir.SetEnabled(context.Background(), alice, false); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ca.Closed():
		case <-time.After(10 * time.Second):
			t.Fatalf("alice's session still open 10 s after her account was disabled")
		}
		if err := cb.Noop().Wait(); err != nil {
			t.Errorf("bob's NOOP after alice was disabled = %v; want OK", err)
		}
	})
}
