package smtpd

import (
	"context"
	"testing"
	"time"
)

// TestDisabledAccountEndsSession: disabling an account drops its open
// submission sessions (DESIGN.md §Identity); the next command fails.
func TestDisabledAccountEndsSession(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{})
		c := e.dialSubmission(alice)
		if err := c.Noop(); err != nil {
			t.Fatalf("NOOP before disabling = %v", err)
		}
		if err := e.dir.SetEnabled(context.Background(), alice, false); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for c.Noop() == nil {
			if time.Now().After(deadline) {
				t.Fatalf("alice's submission session still answers 10 s after her account was disabled")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
