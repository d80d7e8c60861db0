package auth

import (
	"context"
	"sync"
	"time"

	"tidings/storage"
)

// DefaultSessionCheck is how often open sessions' accounts are re-read to
// end the sessions of a disabled account (DESIGN.md §Identity: disabling an
// account ends its sessions). The admin CLI disables from another process,
// so this reads the store rather than waiting for an in-process signal.
const DefaultSessionCheck = 30 * time.Second

// sessionWatch is the one loop, per Directory, that re-reads the accounts of
// open sessions. It runs only while some session is watched.
type sessionWatch struct {
	mu      sync.Mutex
	subs    map[storage.AccountID]map[int]func()
	next    int
	running bool
}

// WatchEnabled calls onDisabled (once, from a directory goroutine) when
// the account is found disabled or removed; front ends close the session
// there. Call cancel when the session ends. One loop serves every session
// of this process, reading each watched account once per interval.
func (d *Directory) WatchEnabled(id storage.AccountID, onDisabled func()) (cancel func()) {
	w := &d.watch
	w.mu.Lock()
	if w.subs == nil {
		w.subs = map[storage.AccountID]map[int]func(){}
	}
	if w.subs[id] == nil {
		w.subs[id] = map[int]func(){}
	}
	w.next++
	k := w.next
	w.subs[id][k] = onDisabled
	if !w.running {
		w.running = true
		go d.watchLoop()
	}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.subs[id], k)
		if len(w.subs[id]) == 0 {
			delete(w.subs, id)
		}
		w.mu.Unlock()
	}
}

func (d *Directory) watchLoop() {
	w := &d.watch
	interval := d.cfg.SessionCheck
	t := time.NewTicker(interval)
	defer t.Stop()
	for range t.C {
		w.mu.Lock()
		if len(w.subs) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		ids := make([]storage.AccountID, 0, len(w.subs))
		for id := range w.subs {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		for _, id := range ids {
			ctx, cancel := context.WithTimeout(context.Background(), interval)
			on, err := d.Enabled(ctx, id)
			cancel()
			if err != nil || on {
				// A store failure keeps sessions open: the next
				// round decides.
				continue
			}
			w.mu.Lock()
			fns := w.subs[id]
			delete(w.subs, id)
			w.mu.Unlock()
			if len(fns) > 0 {
				d.log.Info("ending sessions of a disabled account", "account", int64(id), "sessions", len(fns))
			}
			for _, fn := range fns {
				go fn()
			}
		}
	}
}
