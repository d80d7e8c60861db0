package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"tidings/storage"
)

// PurgeTombstones implements storage.Store: per mailbox, tombstones up to
// the highest MODSEQ among those older than age are dropped and the floor
// raised to it, so ChangesSince(n) for n at or above the floor stays
// complete.
func (s *Store) PurgeTombstones(ctx context.Context, age time.Duration) (int, error) {
	cutoff := time.Now().Add(-age).UnixMicro()
	rows, err := s.query(ctx, `SELECT mailbox_id, max(modseq) FROM tombstones WHERE at <= ? GROUP BY mailbox_id ORDER BY mailbox_id`, cutoff)
	if err != nil {
		return 0, s.dbErr(err)
	}
	type floor struct {
		mailbox storage.MailboxID
		modseq  int64
	}
	var list []floor
	for rows.Next() {
		var f floor
		if err := rows.Scan(&f.mailbox, &f.modseq); err != nil {
			rows.Close()
			return 0, s.dbErr(err)
		}
		list = append(list, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, s.dbErr(err)
	}
	total := 0
	for _, f := range list {
		err := s.withTx(ctx, func(tx *Tx) error {
			var cur int64
			err := tx.QueryRow(ctx, `SELECT tombstone_floor FROM mailbox_counters WHERE mailbox_id = ?`+s.d.ForUpdate(), f.mailbox).Scan(&cur)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			res, err := tx.Exec(ctx, `DELETE FROM tombstones WHERE mailbox_id = ? AND modseq <= ?`, f.mailbox, f.modseq)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			total += int(n)
			if f.modseq > cur {
				_, err = tx.Exec(ctx, `UPDATE mailbox_counters SET tombstone_floor = ? WHERE mailbox_id = ?`, f.modseq, f.mailbox)
			}
			return err
		})
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// PurgeAccount implements storage.Store.
func (s *Store) PurgeAccount(ctx context.Context, id storage.AccountID, batch int) (bool, error) {
	if batch <= 0 {
		batch = 1000
	}
	done := false
	err := s.withTx(ctx, func(tx *Tx) error {
		done = false
		var enabled int64
		err := tx.QueryRow(ctx, `SELECT enabled FROM accounts WHERE id = ?`+s.d.ForUpdate(), id).Scan(&enabled)
		if errors.Is(err, sql.ErrNoRows) {
			done = true // already gone
			return nil
		}
		if err != nil {
			return err
		}
		if enabled != 0 {
			return fmt.Errorf("account %d is enabled; disable it before purging: %w", id, storage.ErrInvalid)
		}
		if err := s.lockUsage(ctx, tx, id); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT mailbox_id, uid FROM messages WHERE account_id = ? ORDER BY mailbox_id, uid LIMIT ?`, id, batch)
		if err != nil {
			return err
		}
		byBox := map[storage.MailboxID]storage.UIDSet{}
		var boxes []storage.MailboxID
		for rows.Next() {
			var mb storage.MailboxID
			var uid int64
			if err := rows.Scan(&mb, &uid); err != nil {
				rows.Close()
				return err
			}
			if _, ok := byBox[mb]; !ok {
				boxes = append(boxes, mb)
			}
			byBox[mb] = append(byBox[mb], storage.UIDRange{Start: storage.UID(uid), Stop: storage.UID(uid)})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(boxes) > 0 {
			sort.Slice(boxes, func(i, j int) bool { return boxes[i] < boxes[j] })
			for _, mb := range boxes {
				c, err := s.lockCounters(ctx, tx, id, mb)
				if err != nil {
					return err
				}
				ds, err := selectDoomed(ctx, tx, mb, byBox[mb], false)
				if err != nil {
					return err
				}
				c.highest++
				refs, err := s.removeEntries(ctx, tx, mb, &c, ds, c.highest)
				if err != nil {
					return err
				}
				var size int64
				for _, d := range ds {
					size += d.size
				}
				if err := s.writeCounters(ctx, tx, mb, c); err != nil {
					return err
				}
				if err := s.addUsage(ctx, tx, id, -size, -int64(len(ds))); err != nil {
					return err
				}
				if err := s.unrefBlobs(ctx, tx, refList(refs)); err != nil {
					return err
				}
			}
			return nil
		}
		// No messages left: the mailboxes and the account go.
		rows, err = tx.Query(ctx, `SELECT id FROM mailboxes WHERE account_id = ? ORDER BY id`, id)
		if err != nil {
			return err
		}
		var all []storage.MailboxID
		for rows.Next() {
			var mb storage.MailboxID
			if err := rows.Scan(&mb); err != nil {
				rows.Close()
				return err
			}
			all = append(all, mb)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, mb := range all {
			if err := s.dropMailbox(ctx, tx, id, mb, 0); err != nil {
				return err
			}
		}
		for _, q := range []string{
			`DELETE FROM mailbox_tombstones WHERE account_id = ?`,
			`DELETE FROM alias_senders WHERE account_id = ?`,
			`DELETE FROM acl WHERE grantee = ?`,
			`DELETE FROM user_flags WHERE principal = ?`,
			`DELETE FROM account_usage WHERE account_id = ?`,
			`DELETE FROM accounts WHERE id = ?`,
		} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return err
			}
		}
		done = true
		return nil
	})
	return done, err
}

// blobUsers counts the references each blob should have: one per mailbox
// entry and one per queued message.
const blobUsers = `SELECT blob_hash, count(*) AS n FROM (SELECT blob_hash FROM messages UNION ALL SELECT blob_hash FROM queue_messages) r GROUP BY blob_hash`

// Check implements storage.Store. Without repair it reads one snapshot;
// with repair each drifted row is recomputed again under its lock and
// rewritten.
func (s *Store) Check(ctx context.Context, repair bool) (storage.CheckReport, error) {
	var rep storage.CheckReport
	var boxes []storage.MailboxID
	var accts []storage.AccountID
	var blobs []string
	var hashes []string
	err := s.readTx(ctx, func(tx *Tx) error {
		rep, boxes, accts, blobs, hashes = storage.CheckReport{}, nil, nil, nil, nil
		// Mailbox counters.
		rows, err := tx.Query(ctx, `SELECT c.mailbox_id, c.uid_next, c.messages, c.unseen, c.deleted, c.size,
				COALESCE(a.n, 0), COALESCE(a.unseen, 0), COALESCE(a.deleted, 0), COALESCE(a.size, 0), COALESCE(a.maxuid, 0)
			FROM mailbox_counters c LEFT JOIN (
				SELECT mailbox_id, count(*) AS n, CAST(sum(1 - seen) AS BIGINT) AS unseen, CAST(sum(deleted) AS BIGINT) AS deleted, CAST(sum(size) AS BIGINT) AS size, max(uid) AS maxuid
				FROM messages GROUP BY mailbox_id) a ON a.mailbox_id = c.mailbox_id
			ORDER BY c.mailbox_id`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id storage.MailboxID
			var next, n, un, del, size, rn, run, rdel, rsize, maxuid int64
			if err := rows.Scan(&id, &next, &n, &un, &del, &size, &rn, &run, &rdel, &rsize, &maxuid); err != nil {
				rows.Close()
				return err
			}
			if n != rn || un != run || del != rdel || size != rsize || maxuid >= next {
				rep.MailboxCounters++
				boxes = append(boxes, id)
				rep.Details = append(rep.Details, fmt.Sprintf("mailbox %d: counters messages=%d unseen=%d deleted=%d size=%d uidnext=%d; rows say %d/%d/%d/%d max uid %d",
					id, n, un, del, size, next, rn, run, rdel, rsize, maxuid))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// Account usage.
		rows, err = tx.Query(ctx, `SELECT u.account_id, u.used_bytes, u.used_messages, COALESCE(a.size, 0), COALESCE(a.n, 0)
			FROM account_usage u LEFT JOIN (
				SELECT account_id, CAST(sum(size) AS BIGINT) AS size, count(*) AS n FROM messages GROUP BY account_id) a ON a.account_id = u.account_id
			ORDER BY u.account_id`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id storage.AccountID
			var ub, um, rb, rm int64
			if err := rows.Scan(&id, &ub, &um, &rb, &rm); err != nil {
				rows.Close()
				return err
			}
			if ub != rb || um != rm {
				rep.AccountUsage++
				accts = append(accts, id)
				rep.Details = append(rep.Details, fmt.Sprintf("account %d: usage %d bytes/%d messages; rows say %d/%d", id, ub, um, rb, rm))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// Blob reference counts: rows with a count, and entries without a row.
		// A queued message holds one reference, like a mailbox entry.
		rows, err = tx.Query(ctx, `SELECT b.hash, b.refcount, COALESCE(a.n, 0) FROM blobs b LEFT JOIN (`+blobUsers+`) a ON a.blob_hash = b.hash
			WHERE b.refcount <> COALESCE(a.n, 0)
			UNION ALL
			SELECT a.blob_hash, 0, a.n FROM (`+blobUsers+`) a
			WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.hash = a.blob_hash)`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var h string
			var ref, n int64
			if err := rows.Scan(&h, &ref, &n); err != nil {
				rows.Close()
				return err
			}
			rep.BlobRefs++
			blobs = append(blobs, h)
			rep.Details = append(rep.Details, fmt.Sprintf("blob %s: reference count %d; entries %d", h, ref, n))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT blob_hash FROM messages UNION SELECT blob_hash FROM queue_messages ORDER BY blob_hash`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				return err
			}
			hashes = append(hashes, h)
		}
		return rows.Err()
	})
	if err != nil {
		return rep, err
	}
	for _, h := range hashes {
		ok, err := s.blobs.Exists(ctx, h)
		if err != nil {
			return rep, wrapUnavailable(err)
		}
		if ok {
			continue
		}
		var n int64
		if err := s.queryRow(ctx, `SELECT (SELECT count(*) FROM messages WHERE blob_hash = ?) + (SELECT count(*) FROM queue_messages WHERE blob_hash = ?)`, h, h).Scan(&n); err != nil {
			return rep, s.dbErr(err)
		}
		rep.MissingBlobs += int(n)
		rep.Details = append(rep.Details, fmt.Sprintf("blob %s: bytes missing for %d entries", h, n))
	}
	if !repair || rep.MailboxCounters+rep.AccountUsage+rep.BlobRefs == 0 {
		return rep, nil
	}
	for _, id := range accts {
		if err := s.withTx(ctx, func(tx *Tx) error {
			var x int64
			if err := tx.QueryRow(ctx, `SELECT used_bytes FROM account_usage WHERE account_id = ?`+s.d.ForUpdate(), id).Scan(&x); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE account_usage SET
				used_bytes = (SELECT COALESCE(CAST(sum(size) AS BIGINT), 0) FROM messages WHERE account_id = ?),
				used_messages = (SELECT count(*) FROM messages WHERE account_id = ?) WHERE account_id = ?`, id, id, id)
			return err
		}); err != nil {
			return rep, err
		}
	}
	for _, id := range boxes {
		if err := s.withTx(ctx, func(tx *Tx) error {
			var x int64
			err := tx.QueryRow(ctx, `SELECT uid_next FROM mailbox_counters WHERE mailbox_id = ?`+s.d.ForUpdate(), id).Scan(&x)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			var n, un, del, size, maxuid int64
			if err := tx.QueryRow(ctx, `SELECT count(*), COALESCE(CAST(sum(1 - seen) AS BIGINT), 0), COALESCE(CAST(sum(deleted) AS BIGINT), 0), COALESCE(CAST(sum(size) AS BIGINT), 0), COALESCE(max(uid), 0)
				FROM messages WHERE mailbox_id = ?`, id).Scan(&n, &un, &del, &size, &maxuid); err != nil {
				return err
			}
			next := max(x, maxuid+1)
			_, err = tx.Exec(ctx, `UPDATE mailbox_counters SET messages = ?, unseen = ?, deleted = ?, size = ?, uid_next = ? WHERE mailbox_id = ?`,
				n, un, del, size, next, id)
			return err
		}); err != nil {
			return rep, err
		}
	}
	for _, h := range blobs {
		if err := s.withTx(ctx, func(tx *Tx) error {
			var ref int64
			err := tx.QueryRow(ctx, `SELECT refcount FROM blobs WHERE hash = ?`+s.d.ForUpdate(), h).Scan(&ref)
			if errors.Is(err, sql.ErrNoRows) {
				var size int64
				if err := tx.QueryRow(ctx, `SELECT COALESCE(max(blob_size), 0) FROM (SELECT blob_size FROM messages WHERE blob_hash = ?
					UNION ALL SELECT blob_size FROM queue_messages WHERE blob_hash = ?) u`, h, h).Scan(&size); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `INSERT INTO blobs (hash, size, refcount, zero_since) VALUES (?, ?, 0, ?)`, h, size, nowMicro()); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			var n int64
			if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM messages WHERE blob_hash = ?) + (SELECT count(*) FROM queue_messages WHERE blob_hash = ?)`, h, h).Scan(&n); err != nil {
				return err
			}
			zero := int64(0)
			if n == 0 {
				zero = nowMicro()
			}
			_, err = tx.Exec(ctx, `UPDATE blobs SET refcount = ?, zero_since = ? WHERE hash = ?`, n, zero, h)
			return err
		}); err != nil {
			return rep, err
		}
	}
	rep.Repaired = true
	return rep, nil
}
