package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"tidings/storage"
)

// maxMailboxName bounds a mailbox name in bytes.
const maxMailboxName = 1000

// mailboxName validates a mailbox name and returns its stored display form
// (NFC, INBOX spelled canonically as the first component) and its key
// (storage.Fold; INBOX always "inbox").
func mailboxName(name string) (display, key string, err error) {
	if name == "" {
		return "", "", fmt.Errorf("empty mailbox name: %w", storage.ErrInvalid)
	}
	if !utf8.ValidString(name) {
		return "", "", fmt.Errorf("mailbox name %q is not UTF-8: %w", name, storage.ErrInvalid)
	}
	name = norm.NFC.String(name)
	if len(name) > maxMailboxName {
		return "", "", fmt.Errorf("mailbox name longer than %d bytes: %w", maxMailboxName, storage.ErrLimit)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", "", fmt.Errorf("mailbox name %q has a control character: %w", name, storage.ErrInvalid)
		}
	}
	parts := strings.Split(name, "/")
	for _, p := range parts {
		if p == "" {
			return "", "", fmt.Errorf("mailbox name %q has an empty hierarchy level: %w", name, storage.ErrInvalid)
		}
	}
	if storage.Fold(parts[0]) == "inbox" {
		parts[0] = "INBOX"
	}
	display = strings.Join(parts, "/")
	return display, storage.Fold(display), nil
}

const mailboxCols = `mb.id, mb.account_id, mb.name, mb.special_use, mb.subscribed, mb.uidvalidity,
	c.uid_next, c.highest_modseq, c.messages, c.unseen, c.deleted, c.size, mb.object_id, mb.created`

const mailboxFrom = ` FROM mailboxes mb JOIN mailbox_counters c ON c.mailbox_id = mb.id`

func scanMailbox(sc interface{ Scan(...any) error }) (storage.Mailbox, error) {
	var m storage.Mailbox
	var sub, uidv, uidNext, hms, created int64
	err := sc.Scan(&m.ID, &m.Account, &m.Name, &m.SpecialUse, &sub, &uidv, &uidNext, &hms,
		&m.Messages, &m.Unseen, &m.Deleted, &m.Size, &m.ObjectID, &created)
	m.Subscribed = sub != 0
	m.UIDValidity = uint32(uidv)
	m.UIDNext = storage.UID(uidNext)
	m.HighestModSeq = storage.ModSeq(hms)
	m.Created = fromMicro(created)
	return m, err
}

// bumpAccount locks the account row (first in the lock order) and returns
// its new account-level MODSEQ.
func (s *Store) bumpAccount(ctx context.Context, tx *Tx, owner storage.AccountID) (storage.ModSeq, error) {
	var ms int64
	err := tx.QueryRow(ctx, `UPDATE accounts SET account_modseq = account_modseq + 1 WHERE id = ? RETURNING account_modseq`, owner).Scan(&ms)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, notFound("account %d", owner)
	}
	return storage.ModSeq(ms), err
}

// insertMailbox creates a mailbox row and its counter row; UIDVALIDITY
// comes from the store-wide counter.
func (s *Store) insertMailbox(ctx context.Context, tx *Tx, owner storage.AccountID, m storage.NewMailbox, modseq storage.ModSeq) (storage.MailboxID, error) {
	name, key, err := mailboxName(m.Name)
	if err != nil {
		return 0, err
	}
	var uidv int64
	if err := tx.QueryRow(ctx, `UPDATE counters SET value = value + 1 WHERE name = 'uidvalidity' RETURNING value`).Scan(&uidv); err != nil {
		return 0, err
	}
	uidv = uidv%0xffffffff + 1 // 32 bits, never 0 (RFC 9051 §2.3.1.1)
	var id storage.MailboxID
	err = tx.QueryRow(ctx, `INSERT INTO mailboxes (account_id, name, name_key, special_use, subscribed, uidvalidity, object_id, created, modseq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		owner, name, key, m.SpecialUse, b2i(m.Subscribed), uidv, randomID("M"), nowMicro(), int64(modseq)).Scan(&id)
	if err != nil {
		if s.d.IsUnique(err) {
			return 0, fmt.Errorf("mailbox %q: %w", name, storage.ErrExists)
		}
		return 0, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO mailbox_counters (mailbox_id, account_id) VALUES (?, ?)`, id, owner); err != nil {
		return 0, err
	}
	return id, nil
}

// CreateMailbox implements storage.Store.
func (s *Store) CreateMailbox(ctx context.Context, p storage.Principal, owner storage.AccountID, m storage.NewMailbox) (storage.Mailbox, error) {
	if _, _, err := mailboxName(m.Name); err != nil {
		return storage.Mailbox{}, err
	}
	var id storage.MailboxID
	err := s.withTx(ctx, func(tx *Tx) error {
		ms, err := s.bumpAccount(ctx, tx, owner)
		if err != nil {
			return err
		}
		id, err = s.insertMailbox(ctx, tx, owner, m, ms)
		if err != nil {
			return err
		}
		tx.hint(owner, 0, ms)
		return nil
	})
	if err != nil {
		return storage.Mailbox{}, err
	}
	return s.MailboxByID(ctx, p, owner, id)
}

// Mailboxes implements storage.Store.
func (s *Store) Mailboxes(ctx context.Context, p storage.Principal, owner storage.AccountID) ([]storage.Mailbox, error) {
	rows, err := s.query(ctx, `SELECT `+mailboxCols+mailboxFrom+` WHERE mb.account_id = ? ORDER BY mb.name_key`, owner)
	if err != nil {
		return nil, s.dbErr(err)
	}
	defer rows.Close()
	var out []storage.Mailbox
	for rows.Next() {
		m, err := scanMailbox(rows)
		if err != nil {
			return nil, s.dbErr(err)
		}
		out = append(out, m)
	}
	return out, s.dbErr(rows.Err())
}

// Mailbox implements storage.Store.
func (s *Store) Mailbox(ctx context.Context, p storage.Principal, owner storage.AccountID, name string) (storage.Mailbox, error) {
	display, key, err := mailboxName(name)
	if err != nil {
		return storage.Mailbox{}, err
	}
	m, err := scanMailbox(s.queryRow(ctx, `SELECT `+mailboxCols+mailboxFrom+` WHERE mb.account_id = ? AND mb.name_key = ?`, owner, key))
	if errors.Is(err, sql.ErrNoRows) {
		return m, notFound("mailbox %q", display)
	}
	return m, s.dbErr(err)
}

// MailboxByID implements storage.Store.
func (s *Store) MailboxByID(ctx context.Context, p storage.Principal, owner storage.AccountID, id storage.MailboxID) (storage.Mailbox, error) {
	m, err := scanMailbox(s.queryRow(ctx, `SELECT `+mailboxCols+mailboxFrom+` WHERE mb.account_id = ? AND mb.id = ?`, owner, id))
	if errors.Is(err, sql.ErrNoRows) {
		return m, notFound("mailbox %d", id)
	}
	return m, s.dbErr(err)
}

type mailboxRow struct {
	id   storage.MailboxID
	name string
	key  string
}

// RenameMailbox implements storage.Store.
func (s *Store) RenameMailbox(ctx context.Context, p storage.Principal, owner storage.AccountID, from, to string) error {
	_, fromKey, err := mailboxName(from)
	if err != nil {
		return err
	}
	toName, toKey, err := mailboxName(to)
	if err != nil {
		return err
	}
	if toKey == "inbox" {
		return fmt.Errorf("cannot rename to %q: %w", toName, storage.ErrInvalid)
	}
	if fromKey != "inbox" && strings.HasPrefix(toKey, fromKey+"/") {
		return fmt.Errorf("cannot rename %q into itself: %w", from, storage.ErrInvalid)
	}
	return s.withTx(ctx, func(tx *Tx) error {
		ms, err := s.bumpAccount(ctx, tx, owner)
		if err != nil {
			return err
		}
		tx.hint(owner, 0, ms)
		if fromKey == "inbox" {
			return s.renameInbox(ctx, tx, owner, toName, ms)
		}
		rows, err := tx.Query(ctx, `SELECT id, name, name_key FROM mailboxes WHERE account_id = ? AND (name_key = ? OR name_key LIKE ? ESCAPE '\')`,
			owner, fromKey, LikeEscape(fromKey)+"/%")
		if err != nil {
			return err
		}
		var boxes []mailboxRow
		for rows.Next() {
			var r mailboxRow
			if err := rows.Scan(&r.id, &r.name, &r.key); err != nil {
				rows.Close()
				return err
			}
			if r.key == fromKey || strings.HasPrefix(r.key, fromKey+"/") { // LIKE is case-blind on SQLite
				boxes = append(boxes, r)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		found := false
		for _, b := range boxes {
			found = found || b.key == fromKey
		}
		if !found {
			return notFound("mailbox %q", from)
		}
		n := strings.Count(fromKey, "/") + 1
		toParts := strings.Split(toName, "/")
		renamed := map[storage.MailboxID]bool{}
		type change struct {
			id        storage.MailboxID
			name, key string
		}
		var changes []change
		for _, b := range boxes {
			parts := strings.Split(b.name, "/")
			name := strings.Join(append(append([]string{}, toParts...), parts[n:]...), "/")
			changes = append(changes, change{b.id, name, storage.Fold(name)})
			renamed[b.id] = true
		}
		for _, c := range changes {
			var other storage.MailboxID
			err := tx.QueryRow(ctx, `SELECT id FROM mailboxes WHERE account_id = ? AND name_key = ?`, owner, c.key).Scan(&other)
			if err == nil && !renamed[other] {
				return fmt.Errorf("mailbox %q: %w", c.name, storage.ErrExists)
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		// Two passes through a temporary key so that swapping names within
		// the renamed set never trips the unique index.
		for _, c := range changes {
			if _, err := tx.Exec(ctx, `UPDATE mailboxes SET name_key = ? WHERE id = ?`, fmt.Sprintf("\x01rename\x01%d", c.id), c.id); err != nil {
				return err
			}
		}
		for _, c := range changes {
			if _, err := tx.Exec(ctx, `UPDATE mailboxes SET name = ?, name_key = ?, modseq = ? WHERE id = ?`, c.name, c.key, int64(ms), c.id); err != nil {
				return err
			}
		}
		return nil
	})
}

// renameInbox moves INBOX's messages into a new mailbox and leaves INBOX
// empty (RFC 9051 §6.3.6); INBOX's children stay where they are.
func (s *Store) renameInbox(ctx context.Context, tx *Tx, owner storage.AccountID, to string, ms storage.ModSeq) error {
	var inbox storage.MailboxID
	var special string
	err := tx.QueryRow(ctx, `SELECT id, special_use FROM mailboxes WHERE account_id = ? AND name_key = 'inbox'`, owner).Scan(&inbox, &special)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound("mailbox INBOX")
	}
	if err != nil {
		return err
	}
	c, err := s.lockCounters(ctx, tx, owner, inbox)
	if err != nil {
		return err
	}
	dst, err := s.insertMailbox(ctx, tx, owner, storage.NewMailbox{Name: to, Subscribed: true}, ms)
	if err != nil {
		return err
	}
	// Tombstones for every message that leaves INBOX, at a new MODSEQ.
	newMS := c.highest + 1
	now := nowMicro()
	if _, err := tx.Exec(ctx, `INSERT INTO tombstones (mailbox_id, uid, modseq, at) SELECT mailbox_id, uid, ?, ? FROM messages WHERE mailbox_id = ?`,
		int64(newMS), now, inbox); err != nil {
		return err
	}
	for _, q := range []string{
		`UPDATE messages SET mailbox_id = ? WHERE mailbox_id = ?`,
		`UPDATE message_keywords SET mailbox_id = ? WHERE mailbox_id = ?`,
		`UPDATE keywords SET mailbox_id = ? WHERE mailbox_id = ?`,
		`UPDATE message_headers SET mailbox_id = ? WHERE mailbox_id = ?`,
	} {
		if _, err := tx.Exec(ctx, q, dst, inbox); err != nil {
			return err
		}
	}
	if err := s.d.MoveText(ctx, tx, owner, inbox, dst); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE mailbox_counters SET uid_next = ?, highest_modseq = ?, messages = ?, unseen = ?, deleted = ?, size = ?, recent_uid = ?
		WHERE mailbox_id = ?`, c.uidNext, c.highest, c.messages, c.unseen, c.deleted, c.size, c.recentUID, dst); err != nil {
		return err
	}
	c.highest = newMS
	c.messages, c.unseen, c.deleted, c.size = 0, 0, 0, 0
	if err := s.writeCounters(ctx, tx, inbox, c); err != nil {
		return err
	}
	tx.hint(owner, inbox, newMS)
	tx.hint(owner, dst, c.highest)
	return nil
}

// DeleteMailbox implements storage.Store.
func (s *Store) DeleteMailbox(ctx context.Context, p storage.Principal, owner storage.AccountID, name string) error {
	display, key, err := mailboxName(name)
	if err != nil {
		return err
	}
	if key == "inbox" {
		return fmt.Errorf("INBOX cannot be deleted: %w", storage.ErrInvalid)
	}
	return s.withTx(ctx, func(tx *Tx) error {
		ms, err := s.bumpAccount(ctx, tx, owner)
		if err != nil {
			return err
		}
		var id storage.MailboxID
		err = tx.QueryRow(ctx, `SELECT id FROM mailboxes WHERE account_id = ? AND name_key = ?`, owner, key).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("mailbox %q", display)
		}
		if err != nil {
			return err
		}
		if err := s.lockUsage(ctx, tx, owner); err != nil {
			return err
		}
		if err := s.dropMailbox(ctx, tx, owner, id, ms); err != nil {
			return err
		}
		tx.hint(owner, 0, ms)
		return nil
	})
}

// dropMailbox removes a mailbox and everything in it: usage and blob
// reference counts go down in the same transaction. The account row and
// its usage row are locked by the caller.
func (s *Store) dropMailbox(ctx context.Context, tx *Tx, owner storage.AccountID, id storage.MailboxID, ms storage.ModSeq) error {
	if _, err := s.lockCounters(ctx, tx, owner, id); err != nil {
		return err
	}
	refs, err := blobRefs(ctx, tx, `SELECT blob_hash, count(*), CAST(sum(size) AS BIGINT) FROM messages WHERE mailbox_id = ? GROUP BY blob_hash`, id)
	if err != nil {
		return err
	}
	if err := s.d.DeleteText(ctx, tx, id, nil); err != nil {
		return err
	}
	for _, q := range []string{
		`DELETE FROM message_keywords WHERE mailbox_id = ?`,
		`DELETE FROM messages WHERE mailbox_id = ?`,
		`DELETE FROM message_headers WHERE mailbox_id = ?`,
		`DELETE FROM keywords WHERE mailbox_id = ?`,
		`DELETE FROM tombstones WHERE mailbox_id = ?`,
		`DELETE FROM user_flags WHERE mailbox_id = ?`,
		`DELETE FROM mailbox_counters WHERE mailbox_id = ?`,
		`DELETE FROM acl WHERE object_kind = 'mailbox' AND object_id = ?`,
		`DELETE FROM mailboxes WHERE id = ?`,
	} {
		if _, err := tx.Exec(ctx, q, id); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO mailbox_tombstones (account_id, mailbox_id, modseq) VALUES (?, ?, ?)`, owner, id, int64(ms)); err != nil {
		return err
	}
	var n, size int64
	for _, r := range refs {
		n += r.n
		size += r.size
	}
	if err := s.addUsage(ctx, tx, owner, -size, -n); err != nil {
		return err
	}
	return s.unrefBlobs(ctx, tx, refs)
}

// SetSubscribed implements storage.Store.
func (s *Store) SetSubscribed(ctx context.Context, p storage.Principal, owner storage.AccountID, name string, on bool) error {
	display, key, err := mailboxName(name)
	if err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *Tx) error {
		ms, err := s.bumpAccount(ctx, tx, owner)
		if err != nil {
			return err
		}
		res, err := tx.Exec(ctx, `UPDATE mailboxes SET subscribed = ?, modseq = ? WHERE account_id = ? AND name_key = ?`,
			b2i(on), int64(ms), owner, key)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("mailbox %q", display)
		}
		tx.hint(owner, 0, ms)
		return nil
	})
}

// AccountChangesSince implements storage.Store.
func (s *Store) AccountChangesSince(ctx context.Context, p storage.Principal, owner storage.AccountID, since storage.ModSeq) (storage.AccountChanges, error) {
	var ch storage.AccountChanges
	err := s.readTx(ctx, func(tx *Tx) error {
		ch = storage.AccountChanges{}
		var hms int64
		err := tx.QueryRow(ctx, `SELECT account_modseq FROM accounts WHERE id = ?`, owner).Scan(&hms)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("account %d", owner)
		}
		if err != nil {
			return err
		}
		ch.Highest = storage.ModSeq(hms)
		rows, err := tx.Query(ctx, `SELECT `+mailboxCols+mailboxFrom+` WHERE mb.account_id = ? AND mb.modseq > ? ORDER BY mb.id`, owner, int64(since))
		if err != nil {
			return err
		}
		for rows.Next() {
			m, err := scanMailbox(rows)
			if err != nil {
				rows.Close()
				return err
			}
			ch.Changed = append(ch.Changed, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT mailbox_id FROM mailbox_tombstones WHERE account_id = ? AND modseq > ? ORDER BY mailbox_id`, owner, int64(since))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id storage.MailboxID
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ch.Deleted = append(ch.Deleted, id)
		}
		return rows.Err()
	})
	return ch, err
}

// ---- counters ----

// counters is a mailbox's hot counter row as read under lock.
type counters struct {
	uidNext   int64
	highest   storage.ModSeq
	messages  int64
	unseen    int64
	deleted   int64
	size      int64
	recentUID int64
	floor     storage.ModSeq
}

// lockCounters locks a mailbox's counter row (checking it belongs to owner)
// and returns it. Callers write it back with writeCounters as the last
// statement on that row.
func (s *Store) lockCounters(ctx context.Context, tx *Tx, owner storage.AccountID, mailbox storage.MailboxID) (counters, error) {
	var c counters
	var hms, floor int64
	err := tx.QueryRow(ctx, `SELECT uid_next, highest_modseq, messages, unseen, deleted, size, recent_uid, tombstone_floor
		FROM mailbox_counters WHERE mailbox_id = ? AND account_id = ?`+s.d.ForUpdate(), mailbox, owner).
		Scan(&c.uidNext, &hms, &c.messages, &c.unseen, &c.deleted, &c.size, &c.recentUID, &floor)
	if errors.Is(err, sql.ErrNoRows) {
		return c, notFound("mailbox %d", mailbox)
	}
	c.highest, c.floor = storage.ModSeq(hms), storage.ModSeq(floor)
	return c, err
}

func (s *Store) writeCounters(ctx context.Context, tx *Tx, mailbox storage.MailboxID, c counters) error {
	_, err := tx.Exec(ctx, `UPDATE mailbox_counters SET uid_next = ?, highest_modseq = ?, messages = ?, unseen = ?, deleted = ?, size = ?
		WHERE mailbox_id = ?`, c.uidNext, int64(c.highest), c.messages, c.unseen, c.deleted, c.size, mailbox)
	return err
}

// lockUsage locks an account's usage row (accounts come first in the lock
// order).
func (s *Store) lockUsage(ctx context.Context, tx *Tx, owner storage.AccountID) error {
	var x int64
	err := tx.QueryRow(ctx, `SELECT used_bytes FROM account_usage WHERE account_id = ?`+s.d.ForUpdate(), owner).Scan(&x)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound("account %d", owner)
	}
	return err
}

// addUsage changes an account's usage without a quota check (expunge,
// delete, move are never refused for quota).
func (s *Store) addUsage(ctx context.Context, tx *Tx, owner storage.AccountID, bytes, messages int64) error {
	if bytes == 0 && messages == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `UPDATE account_usage SET used_bytes = used_bytes + ?, used_messages = used_messages + ? WHERE account_id = ?`,
		bytes, messages, owner)
	return err
}

// chargeUsage adds to an account's usage if the quota allows it. It is the
// first statement of an adding transaction (accounts first in lock order).
func (s *Store) chargeUsage(ctx context.Context, tx *Tx, owner storage.AccountID, bytes, messages int64) error {
	var x int64
	err := tx.QueryRow(ctx, `UPDATE account_usage SET used_bytes = used_bytes + ?, used_messages = used_messages + ?
		WHERE account_id = ? AND (quota_bytes = 0 OR used_bytes + ? <= quota_bytes)
		AND (quota_messages = 0 OR used_messages + ? <= quota_messages) RETURNING used_bytes`,
		bytes, messages, owner, bytes, messages).Scan(&x)
	if errors.Is(err, sql.ErrNoRows) {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM account_usage WHERE account_id = ?`, owner).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return notFound("account %d", owner)
		}
		return fmt.Errorf("account %d: %w", owner, storage.ErrOverQuota)
	}
	return err
}

// blobRef is one blob's count of entries (and their total size) in a set.
type blobRef struct {
	hash string
	n    int64
	size int64
}

func blobRefs(ctx context.Context, tx *Tx, q string, args ...any) ([]blobRef, error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []blobRef
	for rows.Next() {
		var r blobRef
		var size sql.NullInt64
		if err := rows.Scan(&r.hash, &r.n, &size); err != nil {
			return nil, err
		}
		r.size = size.Int64
		out = append(out, r)
	}
	return out, rows.Err()
}

// refBlobs adds references (blobs last in the lock order, by hash).
func (s *Store) refBlobs(ctx context.Context, tx *Tx, refs map[string]blobRef) error {
	hashes := make([]string, 0, len(refs))
	for h := range refs {
		hashes = append(hashes, h)
	}
	sort.Strings(hashes)
	for _, h := range hashes {
		r := refs[h]
		if r.n == 0 {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO blobs (hash, size, refcount, zero_since) VALUES (?, ?, ?, 0)
			ON CONFLICT (hash) DO UPDATE SET refcount = blobs.refcount + excluded.refcount, zero_since = 0`,
			h, r.size, r.n); err != nil {
			return err
		}
	}
	return nil
}

// unrefBlobs drops references; a blob reaching zero starts its grace
// period.
func (s *Store) unrefBlobs(ctx context.Context, tx *Tx, refs []blobRef) error {
	sort.Slice(refs, func(i, j int) bool { return refs[i].hash < refs[j].hash })
	now := nowMicro()
	for _, r := range refs {
		if r.n == 0 {
			continue
		}
		if _, err := tx.Exec(ctx, `UPDATE blobs SET refcount = refcount - ?,
			zero_since = CASE WHEN refcount - ? <= 0 THEN ? ELSE zero_since END WHERE hash = ?`,
			r.n, r.n, now, r.hash); err != nil {
			return err
		}
	}
	return nil
}
