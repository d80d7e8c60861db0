package auth

import (
	"context"
	"testing"
	"time"

	"tidings/storage"
)

// TestWatchEnabled: disabling an account calls the sessions' callbacks;
// a cancelled watch and an enabled account's watch are never called.
func TestWatchEnabled(t *testing.T) {
	forEachStore(t, func(t *testing.T, s storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, Config{SessionCheck: 10 * time.Millisecond})
		f.domain(t, "example.test")
		alice := f.user(t, "alice@example.test", "pw")
		bob := f.user(t, "bob@example.test", "pw")

		ended := make(chan string, 4)
		f.d.WatchEnabled(alice.ID, func() { ended <- "alice 1" })
		f.d.WatchEnabled(alice.ID, func() { ended <- "alice 2" })
		cancel := f.d.WatchEnabled(alice.ID, func() { ended <- "alice cancelled" })
		cancel()
		stopBob := f.d.WatchEnabled(bob.ID, func() { ended <- "bob" })
		defer stopBob()

		if err := f.d.SetEnabled(ctx, "alice@example.test", false); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		deadline := time.After(10 * time.Second)
		for len(got) < 2 {
			select {
			case who := <-ended:
				got[who] = true
			case <-deadline:
				t.Fatalf("after disabling alice, ended = %v; want alice 1 and alice 2", got)
			}
		}
		if !got["alice 1"] || !got["alice 2"] {
			t.Errorf("ended = %v; want alice 1 and alice 2", got)
		}
		// Bob's session stays: let the loop run a few more rounds.
		time.Sleep(50 * time.Millisecond)
		select {
		case who := <-ended:
			t.Errorf("%s's session was ended; want only alice's", who)
		default:
		}
	})
}
