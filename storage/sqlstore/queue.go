package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"tidings/storage"
)

// DefaultQueueLifetime is the give-up time of a queued message whose
// Expires is not set (DESIGN.md §Mail flow: 5 days).
const DefaultQueueLifetime = 5 * 24 * time.Hour

// queueIDEncoding is lower-case base32 without padding: 16 characters from
// 10 random bytes, unguessable and safe in logs, SMTP replies and file
// names.
var queueIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newQueueID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return queueIDEncoding.EncodeToString(b[:])
}

// Submit implements storage.Queue: Deliver's per-target logic and the queue
// rows in one transaction. A target failing for its own reason becomes a
// recipient of one QueueLocal message instead of failing (DESIGN.md §Mail
// flow: one recipient's problem never fails the others).
func (s *Store) Submit(ctx context.Context, src storage.BlobSource, sub storage.Submission) (storage.SubmitResult, error) {
	res := storage.SubmitResult{
		Results: make([]storage.DeliveryResult, len(sub.Targets)),
		Queued:  make([]bool, len(sub.Targets)),
	}
	preps := make([]prepared, len(sub.Targets))
	for i, t := range sub.Targets {
		p, err := s.prepare(t.Message, src.Size())
		if err != nil {
			res.Results[i].Err = err
			continue
		}
		preps[i] = p
	}
	if len(sub.Targets) == 0 && len(sub.Queue) == 0 {
		return res, nil
	}
	hash, blobSize, err := s.registerBlob(ctx, src)
	if err != nil {
		return storage.SubmitResult{}, err
	}
	var hs []header
	for _, p := range preps {
		if p.m.Analysis != nil {
			if hs, err = sourceHeaders(src, p.m.Analysis); err != nil {
				return storage.SubmitResult{}, err
			}
			break
		}
	}
	// Errors of preparation are fixed before the transaction; the
	// transaction may run more than once, so keep them aside.
	prepErr := make([]error, len(sub.Targets))
	for i := range res.Results {
		prepErr[i] = res.Results[i].Err
	}
	err = s.withTx(ctx, func(tx *Tx) error {
		res.QueueIDs = nil
		for i := range res.Results {
			res.Results[i] = storage.DeliveryResult{Err: prepErr[i]}
			res.Queued[i] = false
		}
		refs, items, err := s.deliverTx(ctx, tx, hash, blobSize, sub.Targets, preps, res.Results, hs)
		if err != nil {
			return err
		}
		now := time.Now()
		for _, m := range sub.Queue {
			id, err := s.insertQueued(ctx, tx, m, hash, blobSize, now)
			if err != nil {
				return err
			}
			res.QueueIDs = append(res.QueueIDs, id)
			refs++
		}
		local := sub.LocalTemplate
		local.Kind = storage.QueueLocal
		if local.Destination == "" {
			local.Destination = "local"
		}
		local.Recipients = nil
		for i, r := range res.Results {
			if r.Err == nil || !localRetryable(r.Err) {
				continue
			}
			rcpt := storage.QueueRecipient{
				Owner:     sub.Targets[i].Owner,
				Mailbox:   sub.Targets[i].Mailbox,
				Prefix:    sub.Targets[i].Message.Prefix,
				LastReply: r.Err.Error(),
			}
			if i < len(sub.TargetAddresses) {
				rcpt.Address = sub.TargetAddresses[i]
			}
			// The template may carry the RFC 3461 parameters per address.
			for _, tr := range sub.LocalTemplate.Recipients {
				if storage.Fold(tr.Address) == storage.Fold(rcpt.Address) {
					rcpt.ORCPT, rcpt.Notify = tr.ORCPT, tr.Notify
					break
				}
			}
			local.Recipients = append(local.Recipients, rcpt)
			res.Results[i].Err = nil
			res.Queued[i] = true
		}
		if len(local.Recipients) > 0 {
			id, err := s.insertQueued(ctx, tx, local, hash, blobSize, now)
			if err != nil {
				return err
			}
			res.QueueIDs = append(res.QueueIDs, id)
			refs++
		}
		if err := s.refBlobs(ctx, tx, map[string]blobRef{hash: {hash: hash, n: refs, size: blobSize}}); err != nil {
			return err
		}
		tx.afterCommit(func() {
			for _, it := range items {
				s.idx.enqueue(it)
			}
		})
		return nil
	})
	if err != nil {
		return storage.SubmitResult{}, err
	}
	return res, nil
}

// localRetryable reports a target failure that is the recipient's own
// problem and may go away (quota freed, mailbox recreated, keywords
// removed), so it is queued rather than refused.
func localRetryable(err error) bool {
	return errors.Is(err, storage.ErrOverQuota) || errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrLimit)
}

// Enqueue implements storage.Queue.
func (s *Store) Enqueue(ctx context.Context, src storage.BlobSource, msgs []storage.QueueMessage) ([]string, error) {
	res, err := s.Submit(ctx, src, storage.Submission{Queue: msgs})
	if err != nil {
		return nil, err
	}
	return res.QueueIDs, nil
}

// insertQueued writes one queued message and its recipients; the caller
// adds the blob reference.
func (s *Store) insertQueued(ctx context.Context, tx *Tx, m storage.QueueMessage, hash string, size int64, now time.Time) (string, error) {
	if len(m.Recipients) == 0 {
		return "", fmt.Errorf("queued message without recipients: %w", storage.ErrInvalid)
	}
	id := newQueueID()
	created := m.Created
	if created.IsZero() {
		created = now
	}
	next := m.NextAttempt
	if next.IsZero() {
		next = now
	}
	expires := m.Expires
	if expires.IsZero() {
		expires = created.Add(DefaultQueueLifetime)
	}
	prefix := m.Prefix
	if prefix == nil {
		prefix = []byte{}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO queue_messages (id, kind, sender, destination, envid, ret, smtputf8, eightbit, prefix,
			blob_hash, blob_size, created, next_attempt, expires)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, int64(m.Kind), m.From, m.Destination, m.ENVID, m.RET, b2i(m.SMTPUTF8), b2i(m.EightBit), prefix,
		hash, size, created.UnixMicro(), next.UnixMicro(), expires.UnixMicro()); err != nil {
		return "", err
	}
	for _, r := range m.Recipients {
		rp := r.Prefix
		if rp == nil {
			rp = []byte{}
		}
		var last int64
		if !r.LastAttempt.IsZero() {
			last = r.LastAttempt.UnixMicro()
		}
		if _, err := tx.Exec(ctx, `INSERT INTO queue_recipients (queue_id, address, orcpt, notify, status, attempts, last_reply, last_attempt,
				owner, mailbox_id, prefix, dsn_sent, delay_warned)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			id, r.Address, r.ORCPT, r.Notify, int64(r.Status), int64(r.Attempts), r.LastReply, last,
			int64(r.Owner), int64(r.Mailbox), rp, b2i(r.DSNSent), b2i(r.DelayWarned)); err != nil {
			return "", err
		}
	}
	tx.wroteMessage = true
	return id, nil
}

const queueColumns = `id, kind, sender, destination, envid, ret, smtputf8, eightbit, prefix, blob_hash, blob_size, created, next_attempt, expires`

func scanQueued(row interface{ Scan(...any) error }) (storage.QueueMessage, error) {
	var m storage.QueueMessage
	var kind, utf, eight, created, next, expires int64
	err := row.Scan(&m.ID, &kind, &m.From, &m.Destination, &m.ENVID, &m.RET, &utf, &eight, &m.Prefix,
		&m.BlobHash, &m.BlobSize, &created, &next, &expires)
	m.Kind = storage.QueueKind(kind)
	m.SMTPUTF8, m.EightBit = utf != 0, eight != 0
	m.Created, m.NextAttempt, m.Expires = fromMicro(created), fromMicro(next), fromMicro(expires)
	return m, err
}

// pendingCond selects the recipients that still need work: pending ones,
// and failed ones whose DSN is not yet queued (so a runner that failed to
// queue a DSN gets another chance rather than the message staying for ever).
const pendingCond = `(status = 0 OR (status = 2 AND dsn_sent = 0))`

// loadRecipients fills the recipients of msgs (by id), only those still
// needing work when pendingOnly.
func loadRecipients(ctx context.Context, tx *Tx, msgs []storage.QueueMessage, pendingOnly bool) error {
	if len(msgs) == 0 {
		return nil
	}
	byID := make(map[string]int, len(msgs))
	args := make([]any, len(msgs))
	for i, m := range msgs {
		byID[m.ID] = i
		args[i] = m.ID
	}
	q := `SELECT id, queue_id, address, orcpt, notify, status, attempts, last_reply, last_attempt, owner, mailbox_id, prefix, dsn_sent, delay_warned
		FROM queue_recipients WHERE queue_id IN (` + placeholders(len(args)) + `)`
	if pendingOnly {
		q += ` AND ` + pendingCond
	}
	rows, err := tx.Query(ctx, q+` ORDER BY id`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r storage.QueueRecipient
		var qid string
		var status, attempts, last, owner, mailbox, dsn, warned int64
		if err := rows.Scan(&r.ID, &qid, &r.Address, &r.ORCPT, &r.Notify, &status, &attempts, &r.LastReply, &last,
			&owner, &mailbox, &r.Prefix, &dsn, &warned); err != nil {
			return err
		}
		r.Status, r.Attempts = storage.RecipientStatus(status), int(attempts)
		if last != 0 {
			r.LastAttempt = fromMicro(last)
		}
		r.Owner, r.Mailbox = storage.AccountID(owner), storage.MailboxID(mailbox)
		r.DSNSent, r.DelayWarned = dsn != 0, warned != 0
		if i, ok := byID[qid]; ok {
			msgs[i].Recipients = append(msgs[i].Recipients, r)
		}
	}
	return rows.Err()
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// Claim implements storage.Queue. On PostgreSQL the SELECT takes the due
// rows FOR UPDATE SKIP LOCKED, so concurrent claimers on other nodes pass
// over each other's rows instead of waiting; SQLite's single writer
// connection serialises claimers anyway. The lease columns are set in the
// same short transaction, and no lock outlives it.
func (s *Store) Claim(ctx context.Context, holder string, now time.Time, limit int, lease time.Duration) ([]storage.QueueMessage, error) {
	if holder == "" {
		return nil, fmt.Errorf("claim without holder: %w", storage.ErrInvalid)
	}
	if limit <= 0 {
		limit = 100
	}
	lock := s.d.ForUpdate()
	if lock != "" {
		lock += " SKIP LOCKED"
	}
	var out []storage.QueueMessage
	err := s.withTx(ctx, func(tx *Tx) error {
		out = nil
		rows, err := tx.Query(ctx, `SELECT `+queueColumns+` FROM queue_messages
			WHERE next_attempt <= ? AND (lease_until IS NULL OR lease_until < ?)
			ORDER BY next_attempt, id LIMIT ?`+lock, now.UnixMicro(), now.UnixMicro(), limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			m, err := scanQueued(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		args := []any{holder, now.Add(lease).UnixMicro()}
		for _, m := range out {
			args = append(args, m.ID)
		}
		if _, err := tx.Exec(ctx, `UPDATE queue_messages SET lease_holder = ?, lease_until = ? WHERE id IN (`+placeholders(len(out))+`)`, args...); err != nil {
			return err
		}
		return loadRecipients(ctx, tx, out, true)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Record implements storage.Queue.
func (s *Store) Record(ctx context.Context, id, holder string, outcomes []storage.RecipientOutcome, next time.Time) error {
	return s.withTx(ctx, func(tx *Tx) error {
		var cur sql.NullString
		var hash string
		err := tx.QueryRow(ctx, `SELECT lease_holder, blob_hash FROM queue_messages WHERE id = ?`+s.d.ForUpdate(), id).Scan(&cur, &hash)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("queued message %s", id)
		}
		if err != nil {
			return err
		}
		if !cur.Valid || cur.String != holder {
			return notFound("lease on queued message %s held by %s", id, holder)
		}
		now := nowMicro()
		for _, o := range outcomes {
			res, err := tx.Exec(ctx, `UPDATE queue_recipients SET status = ?, last_reply = ?, last_attempt = ?, attempts = attempts + 1,
				dsn_sent = ?, delay_warned = ? WHERE id = ? AND queue_id = ?`,
				int64(o.Status), o.Reply, now, b2i(o.DSNSent), b2i(o.DelayWarned), o.ID, id)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n != 1 {
				return notFound("recipient %d of queued message %s", o.ID, id)
			}
		}
		var open int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM queue_recipients WHERE queue_id = ? AND `+pendingCond, id).Scan(&open); err != nil {
			return err
		}
		if open == 0 {
			return s.removeQueued(ctx, tx, id, hash)
		}
		if next.IsZero() {
			_, err = tx.Exec(ctx, `UPDATE queue_messages SET lease_holder = NULL, lease_until = NULL WHERE id = ?`, id)
		} else {
			_, err = tx.Exec(ctx, `UPDATE queue_messages SET lease_holder = NULL, lease_until = NULL, next_attempt = ? WHERE id = ?`, next.UnixMicro(), id)
		}
		return err
	})
}

// removeQueued deletes a message and its recipients and drops its blob
// reference (blobs last in the lock order).
func (s *Store) removeQueued(ctx context.Context, tx *Tx, id, hash string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM queue_recipients WHERE queue_id = ?`, id); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM queue_messages WHERE id = ?`, id); err != nil {
		return err
	}
	return s.unrefBlobs(ctx, tx, []blobRef{{hash: hash, n: 1}})
}

// QueueList implements storage.Queue.
func (s *Store) QueueList(ctx context.Context, f storage.QueueFilter) ([]storage.QueueMessage, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	q := `SELECT ` + queueColumns + ` FROM queue_messages WHERE 1=1`
	var args []any
	if f.Kind != nil {
		q += ` AND kind = ?`
		args = append(args, int64(*f.Kind))
	}
	if f.Destination != "" {
		q += ` AND destination = ?`
		args = append(args, f.Destination)
	}
	q += ` ORDER BY created, id LIMIT ?`
	args = append(args, limit)
	var out []storage.QueueMessage
	err := s.readTx(ctx, func(tx *Tx) error {
		out = nil
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			m, err := scanQueued(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		return loadRecipients(ctx, tx, out, false)
	})
	return out, err
}

// QueueGet implements storage.Queue.
func (s *Store) QueueGet(ctx context.Context, id string) (storage.QueueMessage, error) {
	var m storage.QueueMessage
	err := s.readTx(ctx, func(tx *Tx) error {
		var err error
		m, err = scanQueued(tx.QueryRow(ctx, `SELECT `+queueColumns+` FROM queue_messages WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("queued message %q", id)
		}
		if err != nil {
			return err
		}
		ms := []storage.QueueMessage{m}
		if err := loadRecipients(ctx, tx, ms, false); err != nil {
			return err
		}
		m = ms[0]
		return nil
	})
	return m, err
}

// QueueRetry implements storage.Queue. A leased message keeps its lease:
// its holder is delivering it and records the outcome.
func (s *Store) QueueRetry(ctx context.Context, id string) error {
	return s.withTx(ctx, func(tx *Tx) error {
		res, err := tx.Exec(ctx, `UPDATE queue_messages SET next_attempt = ? WHERE id = ?`, nowMicro(), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return notFound("queued message %q", id)
		}
		return nil
	})
}

// QueueRemove implements storage.Queue.
func (s *Store) QueueRemove(ctx context.Context, id string) error {
	return s.withTx(ctx, func(tx *Tx) error {
		var hash string
		err := tx.QueryRow(ctx, `SELECT blob_hash FROM queue_messages WHERE id = ?`+s.d.ForUpdate(), id).Scan(&hash)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("queued message %q", id)
		}
		if err != nil {
			return err
		}
		return s.removeQueued(ctx, tx, id, hash)
	})
}

// OpenQueueBlob implements storage.Queue.
func (s *Store) OpenQueueBlob(ctx context.Context, id string) (storage.ReaderAtCloser, error) {
	var hash string
	err := s.queryRow(ctx, `SELECT blob_hash FROM queue_messages WHERE id = ?`, id).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("queued message %q", id)
	}
	if err != nil {
		return nil, s.dbErr(err)
	}
	r, err := s.blobs.Open(ctx, hash)
	if err != nil {
		return nil, fmt.Errorf("queued message %s: %w", id, wrapUnavailable(err))
	}
	return r, nil
}

var _ storage.Queue = (*Store)(nil)
