package sqlstore

import (
	"context"
	"strings"
	"sync"
	"time"

	"tidings/storage"
)

type hintKey struct {
	account storage.AccountID
	mailbox storage.MailboxID
}

// hub coalesces hints per (account, mailbox) and delivers them from its own
// goroutine, after commit: to the in-process subscribers and, for hints of
// local writes, to other processes through Config.Notify.
type hub struct {
	s       *Store
	mu      sync.Mutex
	subs    map[storage.AccountID]map[uint64]func(storage.Hint)
	next    uint64
	pending map[hintKey]storage.ModSeq // to deliver in-process
	remote  map[hintKey]storage.ModSeq // to send to other processes
	seen    map[hintKey]storage.ModSeq // last delivered, per subscribed account
	wake    chan struct{}
	catchup chan struct{}
}

func newHub(s *Store) *hub {
	return &hub{
		s:       s,
		subs:    map[storage.AccountID]map[uint64]func(storage.Hint){},
		pending: map[hintKey]storage.ModSeq{},
		remote:  map[hintKey]storage.ModSeq{},
		seen:    map[hintKey]storage.ModSeq{},
		wake:    make(chan struct{}, 1),
		catchup: make(chan struct{}, 1),
	}
}

// publish queues hints; local ones are also sent to other processes.
func (h *hub) publish(hints []storage.Hint, local bool) {
	h.mu.Lock()
	for _, x := range hints {
		k := hintKey{x.Account, x.Mailbox}
		if h.pending[k] < x.ModSeq {
			h.pending[k] = x.ModSeq
		}
		if local && h.s.notify != nil && h.remote[k] < x.ModSeq {
			h.remote[k] = x.ModSeq
		}
	}
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *hub) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		h.mu.Lock()
		pending, remote := h.pending, h.remote
		h.pending, h.remote = map[hintKey]storage.ModSeq{}, map[hintKey]storage.ModSeq{}
		h.mu.Unlock()
		if len(remote) > 0 {
			list := make([]storage.Hint, 0, len(remote))
			for k, ms := range remote {
				list = append(list, storage.Hint{Account: k.account, Mailbox: k.mailbox, ModSeq: ms})
			}
			nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := h.s.notify(nctx, list); err != nil && ctx.Err() == nil {
				h.s.log.Warn("change notification failed; other nodes catch up later", "err", err)
			}
			cancel()
		}
		for k, ms := range pending {
			h.mu.Lock()
			subs := h.subs[k.account]
			if len(subs) == 0 || h.seen[k] >= ms {
				h.mu.Unlock()
				continue
			}
			h.seen[k] = ms
			fns := make([]func(storage.Hint), 0, len(subs))
			for _, fn := range subs {
				fns = append(fns, fn)
			}
			h.mu.Unlock()
			for _, fn := range fns {
				h.call(fn, storage.Hint{Account: k.account, Mailbox: k.mailbox, ModSeq: ms})
			}
		}
	}
}

func (h *hub) call(fn func(storage.Hint), x storage.Hint) {
	defer func() {
		if r := recover(); r != nil {
			h.s.log.Error("hint subscriber panicked", "panic", r, "account", x.Account)
		}
	}()
	fn(x)
}

// Subscribe implements storage.Store.
func (s *Store) Subscribe(account storage.AccountID, fn func(storage.Hint)) (cancel func()) {
	h := s.hub
	h.mu.Lock()
	h.next++
	id := h.next
	if h.subs[account] == nil {
		h.subs[account] = map[uint64]func(storage.Hint){}
	}
	h.subs[account][id] = fn
	h.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs[account], id)
			if len(h.subs[account]) == 0 {
				delete(h.subs, account)
				for k := range h.seen {
					if k.account == account {
						delete(h.seen, k)
					}
				}
			}
			h.mu.Unlock()
		})
	}
}

// Remote feeds hints received from another process (PostgreSQL LISTEN) to
// the in-process subscribers; they are not sent on again.
func (s *Store) Remote(hints []storage.Hint) { s.hub.publish(hints, false) }

// CatchUp asks for a catch-up of the subscribed accounts soon (listener
// reconnect, SQLite data_version change). It does not block.
func (s *Store) CatchUp() {
	select {
	case s.hub.catchup <- struct{}{}:
	default:
	}
}

func (s *Store) catchupLoop(ctx context.Context) {
	t := time.NewTicker(s.opts.CatchupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.hub.catchup:
		}
		if err := s.catchupOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("catch-up of watched accounts failed", "err", err)
		}
	}
}

// catchupOnce re-reads the counters of every subscribed account and emits a
// hint for each mailbox (and account list) whose MODSEQ advanced past what
// subscribers last got.
func (s *Store) catchupOnce(ctx context.Context) error {
	s.hub.mu.Lock()
	accts := make([]storage.AccountID, 0, len(s.hub.subs))
	for a := range s.hub.subs {
		accts = append(accts, a)
	}
	s.hub.mu.Unlock()
	for len(accts) > 0 {
		n := min(len(accts), 200)
		part := accts[:n]
		accts = accts[n:]
		args := make([]any, len(part))
		for i, a := range part {
			args[i] = int64(a)
		}
		in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(part)), ", ") + ")"
		var hints []storage.Hint
		rows, err := s.query(ctx, `SELECT account_id, mailbox_id, highest_modseq FROM mailbox_counters WHERE account_id IN `+in, args...)
		if err != nil {
			return s.dbErr(err)
		}
		for rows.Next() {
			var x storage.Hint
			if err := rows.Scan(&x.Account, &x.Mailbox, &x.ModSeq); err != nil {
				rows.Close()
				return s.dbErr(err)
			}
			hints = append(hints, x)
		}
		rows.Close()
		rows, err = s.query(ctx, `SELECT id, account_modseq FROM accounts WHERE id IN `+in, args...)
		if err != nil {
			return s.dbErr(err)
		}
		for rows.Next() {
			var x storage.Hint
			if err := rows.Scan(&x.Account, &x.ModSeq); err != nil {
				rows.Close()
				return s.dbErr(err)
			}
			hints = append(hints, x)
		}
		rows.Close()
		s.hub.publish(hints, false)
	}
	return nil
}
