package sqlstore_test

import (
	"context"
	"testing"
	"time"

	"tidings/storage"
)

// TestLeases: a lease held by one holder is refused to another until it is
// released or expires; refresh fails for a holder that lost it.
func TestLeases(t *testing.T) {
	forDrivers(t, func(t *testing.T, open func(*testing.T, storage.Options) storage.Store) {
		ctx := context.Background()
		s := open(t, storage.Options{})
		steps := []struct {
			name   string
			do     func() (bool, error)
			wantOK bool
		}{
			{"a acquires", func() (bool, error) { return s.AcquireLease(ctx, "pop3:1", "a", time.Minute) }, true},
			{"b refused", func() (bool, error) { return s.AcquireLease(ctx, "pop3:1", "b", time.Minute) }, false},
			{"a re-acquires", func() (bool, error) { return s.AcquireLease(ctx, "pop3:1", "a", time.Minute) }, true},
			{"other name free", func() (bool, error) { return s.AcquireLease(ctx, "pop3:2", "b", time.Minute) }, true},
			{"a refreshes", func() (bool, error) { return s.RefreshLease(ctx, "pop3:1", "a", time.Minute) }, true},
			{"b cannot refresh", func() (bool, error) { return s.RefreshLease(ctx, "pop3:1", "b", time.Minute) }, false},
			{"b cannot release", func() (bool, error) { return true, s.ReleaseLease(ctx, "pop3:1", "b") }, true},
			{"still held", func() (bool, error) { return s.AcquireLease(ctx, "pop3:1", "b", time.Minute) }, false},
			{"a releases", func() (bool, error) { return true, s.ReleaseLease(ctx, "pop3:1", "a") }, true},
			{"b acquires short", func() (bool, error) { return s.AcquireLease(ctx, "pop3:1", "b", -time.Second) }, true},
			{"expired lease taken", func() (bool, error) { return s.AcquireLease(ctx, "pop3:1", "c", time.Minute) }, true},
			{"b lost it", func() (bool, error) { return s.RefreshLease(ctx, "pop3:1", "b", time.Minute) }, false},
		}
		for _, st := range steps {
			ok, err := st.do()
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if ok != st.wantOK {
				t.Fatalf("%s = %v; want %v", st.name, ok, st.wantOK)
			}
		}
	})
}
