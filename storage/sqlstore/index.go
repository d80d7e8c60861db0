package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"tidings/storage"
)

// indexItem is one message's search text to write after commit. With
// copyFrom set, the text is copied from that entry instead.
type indexItem struct {
	account storage.AccountID
	mailbox storage.MailboxID
	uid     storage.UID
	text    string
	headers []header
}

type indexPair struct {
	src    storage.MailboxID
	srcUID storage.UID
	item   indexItem
}

type queued struct {
	item     indexItem
	copyFrom *hintKeyUID
}

type hintKeyUID struct {
	mailbox storage.MailboxID
	uid     storage.UID
}

// indexer writes search text in short transactions after the message's own
// commit, so that the SMTP 250 path never waits for it (DESIGN.md §Search).
// The queue is in memory; messages whose text never made it (a crash) keep
// text_indexed = 0 and are indexed from their bytes at start-up or by the
// search that needs them, when Options.ExtractText is set.
type indexer struct {
	s       *Store
	mu      sync.Mutex
	queue   []queued
	busy    int // queued plus in flight
	drained chan struct{}
	wake    chan struct{}
}

func newIndexer(s *Store) *indexer {
	d := make(chan struct{})
	close(d)
	return &indexer{s: s, drained: d, wake: make(chan struct{}, 1)}
}

func sanitizeText(t string) string {
	t = strings.ToValidUTF8(t, "\uFFFD")
	return strings.ReplaceAll(t, "\x00", " ")
}

func (ix *indexer) push(q []queued) {
	if len(q) == 0 {
		return
	}
	ix.mu.Lock()
	if ix.busy == 0 {
		ix.drained = make(chan struct{})
	}
	ix.busy += len(q)
	ix.queue = append(ix.queue, q...)
	ix.mu.Unlock()
	select {
	case ix.wake <- struct{}{}:
	default:
	}
}

func (ix *indexer) enqueue(it indexItem) {
	it.text = sanitizeText(it.text)
	ix.push([]queued{{item: it}})
}

// enqueueCopies queues copies of entries whose source was not yet indexed
// when copied: the indexer copies the source's text once it is written.
func (ix *indexer) enqueueCopies(pairs []indexPair) {
	q := make([]queued, len(pairs))
	for i, p := range pairs {
		q[i] = queued{item: p.item, copyFrom: &hintKeyUID{p.src, p.srcUID}}
	}
	ix.push(q)
}

func (ix *indexer) done(n int) {
	ix.mu.Lock()
	ix.busy -= n
	if ix.busy == 0 {
		close(ix.drained)
	}
	ix.mu.Unlock()
}

// WaitIndexed implements storage.Store.
func (s *Store) WaitIndexed(ctx context.Context) error {
	s.idx.mu.Lock()
	ch := s.idx.drained
	s.idx.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", storage.ErrUnavailable, ctx.Err())
	case <-s.ctx.Done():
		return fmt.Errorf("store closed: %w", storage.ErrUnavailable)
	}
}

const indexBatch = 64

func (ix *indexer) run(ctx context.Context) {
	if ix.s.opts.ExtractText != nil {
		if err := ix.s.indexUnindexed(ctx, 0); err != nil && ctx.Err() == nil {
			ix.s.log.Warn("indexing messages left unindexed failed", "err", err)
		}
	}
	for {
		ix.mu.Lock()
		n := min(len(ix.queue), indexBatch)
		batch := append([]queued(nil), ix.queue[:n]...)
		ix.queue = ix.queue[n:]
		ix.mu.Unlock()
		if n == 0 {
			select {
			case <-ctx.Done():
				return
			case <-ix.wake:
				continue
			}
		}
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if err = ix.write(ctx, batch); err == nil || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
			}
		}
		if err != nil && ctx.Err() == nil {
			ix.s.log.Warn("search indexing failed; the messages are indexed again from their bytes later", "err", err, "messages", len(batch))
		}
		ix.done(n)
	}
}

// write stores a batch in one short transaction. A message expunged
// meanwhile is skipped: the guarded UPDATE finds no row.
func (ix *indexer) write(ctx context.Context, batch []queued) error {
	s := ix.s
	return s.withTx(ctx, func(tx *Tx) error {
		for _, q := range batch {
			it := q.item
			if q.copyFrom != nil {
				var indexed int64
				err := tx.QueryRow(ctx, `SELECT text_indexed FROM messages WHERE mailbox_id = ? AND uid = ?`,
					q.copyFrom.mailbox, int64(q.copyFrom.uid)).Scan(&indexed)
				if errors.Is(err, sql.ErrNoRows) || (err == nil && indexed == 0) {
					continue // source gone or never indexed: left for ExtractText
				}
				if err != nil {
					return err
				}
			}
			res, err := tx.Exec(ctx, `UPDATE messages SET text_indexed = 1 WHERE mailbox_id = ? AND uid = ? AND text_indexed = 0`,
				it.mailbox, int64(it.uid))
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue
			}
			if q.copyFrom != nil {
				err = s.d.CopyText(ctx, tx, q.copyFrom.mailbox, q.copyFrom.uid, it.account, it.mailbox, it.uid)
				if err == nil {
					err = copyHeaders(ctx, tx, q.copyFrom.mailbox, q.copyFrom.uid, it.mailbox, it.uid)
				}
			} else {
				err = s.d.PutText(ctx, tx, it.account, it.mailbox, it.uid, it.text)
				if err == nil {
					err = putHeaders(ctx, tx, it.mailbox, it.uid, it.headers)
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// indexUnindexed extracts and stores the text of messages with
// text_indexed = 0 (all mailboxes when mailbox is 0), in batches.
func (s *Store) indexUnindexed(ctx context.Context, mailbox storage.MailboxID) error {
	if s.opts.ExtractText == nil {
		return nil
	}
	type todo struct {
		account storage.AccountID
		mailbox storage.MailboxID
		uid     storage.UID
		hash    string
		size    int64
	}
	var lastMB, lastUID int64
	for {
		q := `SELECT account_id, mailbox_id, uid, blob_hash, blob_size FROM messages WHERE text_indexed = 0 AND (mailbox_id, uid) > (?, ?)`
		args := []any{lastMB, lastUID}
		if mailbox != 0 {
			q += ` AND mailbox_id = ?`
			args = append(args, mailbox)
		}
		rows, err := s.query(ctx, q+` ORDER BY mailbox_id, uid LIMIT 100`, args...)
		if err != nil {
			return s.dbErr(err)
		}
		var list []todo
		for rows.Next() {
			var t todo
			var uid int64
			if err := rows.Scan(&t.account, &t.mailbox, &uid, &t.hash, &t.size); err != nil {
				rows.Close()
				return s.dbErr(err)
			}
			t.uid = storage.UID(uid)
			list = append(list, t)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return s.dbErr(err)
		}
		if len(list) == 0 {
			return nil
		}
		var batch []queued
		for _, t := range list {
			lastMB, lastUID = int64(t.mailbox), int64(t.uid)
			r, err := s.blobs.Open(ctx, t.hash)
			if err != nil {
				s.log.Warn("cannot read message to index it", "mailbox", t.mailbox, "uid", t.uid, "err", err)
				continue
			}
			text, err := s.opts.ExtractText(ctx, r, r.Size())
			hs := readHeaders(r, r.Size(), 0)
			r.Close()
			if err != nil {
				s.log.Warn("cannot extract text to index it", "mailbox", t.mailbox, "uid", t.uid, "err", err)
				continue
			}
			batch = append(batch, queued{item: indexItem{t.account, t.mailbox, t.uid, sanitizeText(capText(text, s.opts.SearchTextLimit)), hs}})
		}
		if err := s.idx.write(ctx, batch); err != nil {
			return err
		}
	}
}
