package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"tidings/storage"
)

// Keyword limits (DESIGN.md §Flags and quota).
const (
	MaxKeywords   = 250
	MaxKeywordLen = 100
)

// ---- UID sets ----

// normSet orders each range (IMAP allows 5:3) and returns nil for nil.
func normSet(set storage.UIDSet) storage.UIDSet {
	if set == nil {
		return nil
	}
	out := make(storage.UIDSet, 0, len(set))
	for _, r := range set {
		if r.Stop != 0 && r.Stop < r.Start {
			r.Start, r.Stop = r.Stop, r.Start
		}
		out = append(out, r)
	}
	return out
}

// maxSetRanges is how many ranges become SQL conditions; larger sets are
// read as their covering range and filtered in Go.
const maxSetRanges = 32

// uidCond returns a SQL condition on col for set and whether the caller
// must still filter rows with set.Contains.
func uidCond(set storage.UIDSet, col string) (string, []any, bool) {
	if set == nil {
		return "1=1", nil, false
	}
	if len(set) == 0 {
		return "1=0", nil, false
	}
	if len(set) > maxSetRanges {
		lo, hi := storage.UID(0xffffffff), storage.UID(0)
		open := false
		for _, r := range set {
			lo = min(lo, r.Start)
			if r.Stop == 0 {
				open = true
			}
			hi = max(hi, r.Stop)
		}
		if open {
			return col + " >= ?", []any{int64(lo)}, true
		}
		return col + " BETWEEN ? AND ?", []any{int64(lo), int64(hi)}, true
	}
	var parts []string
	var args []any
	for _, r := range set {
		if r.Stop == 0 {
			parts = append(parts, col+" >= ?")
			args = append(args, int64(r.Start))
		} else {
			parts = append(parts, col+" BETWEEN ? AND ?")
			args = append(args, int64(r.Start), int64(r.Stop))
		}
	}
	return "(" + strings.Join(parts, " OR ") + ")", args, false
}

// inList returns "(?, ?, ...)" and the args for uids.
func inList(uids []storage.UID) (string, []any) {
	var b strings.Builder
	args := make([]any, len(uids))
	b.WriteByte('(')
	for i, u := range uids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('?')
		args[i] = int64(u)
	}
	b.WriteByte(')')
	return b.String(), args
}

// chunks splits uids into slices of at most n.
func chunks(uids []storage.UID, n int) [][]storage.UID {
	var out [][]storage.UID
	for len(uids) > n {
		out = append(out, uids[:n])
		uids = uids[n:]
	}
	if len(uids) > 0 {
		out = append(out, uids)
	}
	return out
}

// ---- rows ----

const msgCols = `m.uid, m.modseq, m.seen, m.answered, m.flagged, m.deleted, m.draft, m.internal_date, m.internal_zone,
	m.blob_hash, m.blob_size, m.size, m.prefix_len, m.email_id, m.thread_id, m.import_uidl`

func scanMessage(rows interface{ Scan(...any) error }, mailbox storage.MailboxID, extra ...any) (storage.Message, error) {
	var m storage.Message
	var uid, ms, seen, answered, flagged, deleted, draft, idate, zone, plen int64
	dest := []any{&uid, &ms, &seen, &answered, &flagged, &deleted, &draft, &idate, &zone,
		&m.BlobHash, &m.BlobSize, &m.Size, &plen, &m.EmailID, &m.ThreadID, &m.ImportUIDL}
	if err := rows.Scan(append(dest, extra...)...); err != nil {
		return m, err
	}
	m.Mailbox = mailbox
	m.UID = storage.UID(uid)
	m.ModSeq = storage.ModSeq(ms)
	m.Flags = storage.Flags{Seen: seen != 0, Answered: answered != 0, Flagged: flagged != 0, Deleted: deleted != 0, Draft: draft != 0}
	m.InternalDate = time.UnixMicro(idate).In(time.FixedZone("", int(zone)))
	m.PrefixLen = int(plen)
	return m, nil
}

// keywordsOf returns the keyword display spellings of the messages matched
// by where (a condition on messages m), by UID.
func keywordsOf(ctx context.Context, tx *Tx, where string, args ...any) (map[storage.UID][]string, error) {
	rows, err := tx.Query(ctx, `SELECT m.uid, k.display FROM messages m
		JOIN message_keywords mk ON mk.mailbox_id = m.mailbox_id AND mk.uid = m.uid
		JOIN keywords k ON k.id = mk.keyword_id WHERE `+where+` ORDER BY m.uid, k.id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[storage.UID][]string{}
	for rows.Next() {
		var uid int64
		var d string
		if err := rows.Scan(&uid, &d); err != nil {
			return nil, err
		}
		out[storage.UID(uid)] = append(out[storage.UID(uid)], d)
	}
	return out, rows.Err()
}

// checkMailbox returns the counters of a mailbox owned by owner, without
// locking (reads).
func (s *Store) readCounters(ctx context.Context, tx *Tx, owner storage.AccountID, mailbox storage.MailboxID) (counters, error) {
	var c counters
	var hms, floor int64
	err := tx.QueryRow(ctx, `SELECT uid_next, highest_modseq, messages, unseen, deleted, size, recent_uid, tombstone_floor
		FROM mailbox_counters WHERE mailbox_id = ? AND account_id = ?`, mailbox, owner).
		Scan(&c.uidNext, &hms, &c.messages, &c.unseen, &c.deleted, &c.size, &c.recentUID, &floor)
	if errors.Is(err, sql.ErrNoRows) {
		return c, notFound("mailbox %d", mailbox)
	}
	c.highest, c.floor = storage.ModSeq(hms), storage.ModSeq(floor)
	return c, err
}

// ---- keywords ----

type keywordSet struct {
	ids     map[string]int64 // folded key → id
	display map[int64]string // id → display
	created bool             // a new keyword was added (bumps MODSEQ)
}

func checkKeywords(kws []string) error {
	for _, k := range kws {
		if k == "" {
			return fmt.Errorf("empty keyword: %w", storage.ErrInvalid)
		}
		if len(k) > MaxKeywordLen {
			return fmt.Errorf("keyword %.20q... longer than %d bytes: %w", k, MaxKeywordLen, storage.ErrLimit)
		}
		if !utf8.ValidString(k) {
			return fmt.Errorf("keyword %q is not UTF-8: %w", k, storage.ErrInvalid)
		}
	}
	return nil
}

// keywords loads a mailbox's keywords and, when create is set, adds the
// missing ones of want (at most MaxKeywords per mailbox). The mailbox's
// counter row is locked by the caller.
func (s *Store) keywords(ctx context.Context, tx *Tx, mailbox storage.MailboxID, want []string, create bool) (*keywordSet, error) {
	ks := &keywordSet{ids: map[string]int64{}, display: map[int64]string{}}
	rows, err := tx.Query(ctx, `SELECT id, key, display FROM keywords WHERE mailbox_id = ?`, mailbox)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id int64
		var k, d string
		if err := rows.Scan(&id, &k, &d); err != nil {
			rows.Close()
			return nil, err
		}
		ks.ids[k], ks.display[id] = id, d
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if !create {
		return ks, nil
	}
	for _, w := range want {
		k := storage.Fold(w)
		if _, ok := ks.ids[k]; ok {
			continue
		}
		if len(ks.ids) >= MaxKeywords {
			return nil, fmt.Errorf("mailbox %d has %d keywords already: %w", mailbox, MaxKeywords, storage.ErrLimit)
		}
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO keywords (mailbox_id, key, display) VALUES (?, ?, ?) RETURNING id`,
			mailbox, k, w).Scan(&id); err != nil {
			return nil, err
		}
		ks.ids[k], ks.display[id] = id, w
		ks.created = true
	}
	return ks, nil
}

// idsOf returns the keyword ids of kws (unknown keywords skipped), deduplicated.
func (ks *keywordSet) idsOf(kws []string) []int64 {
	seen := map[int64]bool{}
	var out []int64
	for _, k := range kws {
		if id, ok := ks.ids[storage.Fold(k)]; ok && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (ks *keywordSet) displays(ids []int64) []string {
	if len(ids) == 0 {
		return nil
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = ks.display[id]
	}
	return out
}

// ---- blobs ----

// registerBlob makes the blob's bytes durable before the metadata
// transaction. The blobs row is upserted first (its zero_since refreshed
// when unreferenced) so that the sweeper, which deletes only rows that
// have been unreferenced for the whole grace period, cannot delete bytes
// this append is about to reference.
func (s *Store) registerBlob(ctx context.Context, src storage.BlobSource) (string, int64, error) {
	hash, size := src.Hash(), src.Size()
	if len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		return "", 0, fmt.Errorf("blob hash %q is not hex SHA-256: %w", hash, storage.ErrInvalid)
	}
	register := func(tx *Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO blobs (hash, size, refcount, zero_since) VALUES (?, ?, 0, ?)
			ON CONFLICT (hash) DO UPDATE SET zero_since = CASE WHEN blobs.refcount <= 0 THEN excluded.zero_since ELSE blobs.zero_since END`,
			hash, size, nowMicro())
		return err
	}
	if cb, ok := s.blobs.(*ChunkBlobs); ok && size <= ChunkSize {
		// A small in-database blob: read it first (never inside a
		// transaction), then register and store it in one commit.
		data, err := readSmall(src, hash, size)
		if err != nil {
			return "", 0, err
		}
		err = s.withTx(ctx, func(tx *Tx) error {
			if err := register(tx); err != nil {
				return err
			}
			return cb.putTx(ctx, tx, hash, data)
		})
		if err != nil {
			return "", 0, err
		}
		return hash, size, nil
	}
	err := s.withTx(ctx, register)
	if err != nil {
		return "", 0, err
	}
	ok, err := s.blobs.Exists(ctx, hash)
	if err != nil {
		return "", 0, fmt.Errorf("blob %s: %w", hash, wrapUnavailable(err))
	}
	if ok {
		return hash, size, nil
	}
	r, err := src.Open()
	if err != nil {
		return "", 0, fmt.Errorf("open message: %w", err)
	}
	defer r.Close()
	if err := s.blobs.Put(ctx, hash, size, io.NewSectionReader(r, 0, size)); err != nil {
		return "", 0, fmt.Errorf("store blob %s: %w", hash, wrapUnavailable(err))
	}
	return hash, size, nil
}

func wrapUnavailable(err error) error {
	for _, e := range sentinels {
		if errors.Is(err, e) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
}

// ---- Append and Deliver ----

// prepared is a NewMessage ready for insertion.
type prepared struct {
	m        storage.NewMessage
	metadata string
	text     string
	sent     int64
	thread   string
	size     int64
}

func (s *Store) prepare(m storage.NewMessage, blobSize int64) (prepared, error) {
	if m.Analysis == nil {
		return prepared{}, fmt.Errorf("message without analysis: %w", storage.ErrInvalid)
	}
	if err := checkKeywords(m.Flags.Keywords); err != nil {
		return prepared{}, err
	}
	md, err := json.Marshal(m.Analysis)
	if err != nil {
		return prepared{}, fmt.Errorf("analysis: %v: %w", err, storage.ErrInvalid)
	}
	p := prepared{m: m, metadata: string(md), thread: m.Analysis.ThreadID, size: int64(len(m.Prefix)) + blobSize}
	p.text = capText(m.Analysis.SearchText, s.opts.SearchTextLimit)
	if !m.Analysis.SentDate.IsZero() {
		p.sent = m.Analysis.SentDate.UnixMicro()
	}
	if p.m.InternalDate.IsZero() {
		p.m.InternalDate = time.Now()
	}
	if p.m.Prefix == nil {
		p.m.Prefix = []byte{}
	}
	return p, nil
}

// capText cuts s to at most limit bytes on a rune boundary.
func capText(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	s = s[:limit]
	for len(s) > 0 && !utf8.RuneStart(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	if len(s) > 0 {
		if r, n := utf8.DecodeLastRuneInString(s); r == utf8.RuneError && n <= 1 {
			s = s[:len(s)-1]
		}
	}
	return s
}

// insertEntry writes one entry into a locked mailbox: the message row and
// its keywords. The caller charged the quota and writes the counters.
func (s *Store) insertEntry(ctx context.Context, tx *Tx, owner storage.AccountID, mailbox storage.MailboxID, c *counters,
	hash string, blobSize int64, p prepared, ms storage.ModSeq) (storage.UID, string, error) {
	if c.uidNext > 0xffffffff {
		return 0, "", fmt.Errorf("mailbox %d ran out of UIDs: %w", mailbox, storage.ErrLimit)
	}
	ks, err := s.keywords(ctx, tx, mailbox, p.m.Flags.Keywords, true)
	if err != nil {
		return 0, "", err
	}
	uid := storage.UID(c.uidNext)
	c.uidNext++
	emailID := randomID("E")
	thread := p.thread
	if thread == "" {
		thread = "T" + emailID[1:]
	}
	_, zone := p.m.InternalDate.Zone()
	f := p.m.Flags
	if _, err := tx.Exec(ctx, `INSERT INTO messages (mailbox_id, uid, account_id, modseq, seen, answered, flagged, deleted, draft,
			internal_date, internal_zone, blob_hash, blob_size, prefix, prefix_len, size, email_id, thread_id, import_uidl,
			metadata, metadata_version, sent_date, text_indexed)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`,
		mailbox, int64(uid), owner, int64(ms), b2i(f.Seen), b2i(f.Answered), b2i(f.Flagged), b2i(f.Deleted), b2i(f.Draft),
		p.m.InternalDate.UnixMicro(), int64(zone), hash, blobSize, p.m.Prefix, int64(len(p.m.Prefix)), p.size, emailID, thread,
		p.m.ImportUIDL, p.metadata, int64(p.m.Analysis.Version), p.sent); err != nil {
		return 0, "", err
	}
	for _, id := range ks.idsOf(f.Keywords) {
		if _, err := tx.Exec(ctx, `INSERT INTO message_keywords (mailbox_id, uid, keyword_id) VALUES (?, ?, ?)`, mailbox, int64(uid), id); err != nil {
			return 0, "", err
		}
	}
	tx.wroteMessage = true
	c.messages++
	c.size += p.size
	if !f.Seen {
		c.unseen++
	}
	if f.Deleted {
		c.deleted++
	}
	return uid, emailID, nil
}

// Append implements storage.Store.
func (s *Store) Append(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID, src storage.BlobSource, m storage.NewMessage) (storage.AppendResult, error) {
	p, err := s.prepare(m, src.Size())
	if err != nil {
		return storage.AppendResult{}, err
	}
	hash, blobSize, err := s.registerBlob(ctx, src)
	if err != nil {
		return storage.AppendResult{}, err
	}
	hs, err := sourceHeaders(src, m.Analysis)
	if err != nil {
		return storage.AppendResult{}, err
	}
	var res storage.AppendResult
	err = s.withTx(ctx, func(tx *Tx) error {
		res = storage.AppendResult{Mailbox: mailbox}
		// Check the mailbox before charging, so a missing mailbox is
		// ErrNotFound rather than a quota answer.
		var uidv int64
		err := tx.QueryRow(ctx, `SELECT uidvalidity FROM mailboxes WHERE id = ? AND account_id = ?`, mailbox, owner).Scan(&uidv)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("mailbox %d", mailbox)
		}
		if err != nil {
			return err
		}
		res.UIDValidity = uint32(uidv)
		if err := s.chargeUsage(ctx, tx, owner, p.size, 1); err != nil {
			return err
		}
		c, err := s.lockCounters(ctx, tx, owner, mailbox)
		if err != nil {
			return err
		}
		c.highest++
		res.ModSeq = c.highest
		res.UID, res.EmailID, err = s.insertEntry(ctx, tx, owner, mailbox, &c, hash, blobSize, p, c.highest)
		if err != nil {
			return err
		}
		if err := s.writeCounters(ctx, tx, mailbox, c); err != nil {
			return err
		}
		if err := s.refBlobs(ctx, tx, map[string]blobRef{hash: {hash: hash, n: 1, size: blobSize}}); err != nil {
			return err
		}
		tx.hint(owner, mailbox, c.highest)
		uid, text := res.UID, p.text
		tx.afterCommit(func() { s.idx.enqueue(indexItem{owner, mailbox, uid, text, hs}) })
		return nil
	})
	if err != nil {
		return storage.AppendResult{}, err
	}
	return res, nil
}

// Deliver implements storage.Store.
func (s *Store) Deliver(ctx context.Context, src storage.BlobSource, targets []storage.DeliveryTarget) ([]storage.DeliveryResult, error) {
	results := make([]storage.DeliveryResult, len(targets))
	preps := make([]prepared, len(targets))
	for i, t := range targets {
		p, err := s.prepare(t.Message, src.Size())
		if err != nil {
			results[i].Err = err
			continue
		}
		preps[i] = p
	}
	hash, blobSize, err := s.registerBlob(ctx, src)
	if err != nil {
		return nil, err
	}
	var hs []header
	for _, p := range preps {
		if p.m.Analysis != nil {
			if hs, err = sourceHeaders(src, p.m.Analysis); err != nil {
				return nil, err
			}
			break
		}
	}
	err = s.withTx(ctx, func(tx *Tx) error {
		refs, items, err := s.deliverTx(ctx, tx, hash, blobSize, targets, preps, results, hs)
		if err != nil {
			return err
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
		return nil, err
	}
	return results, nil
}

// deliverTx adds one entry per prepared target inside tx (Deliver and
// Submit share it). A target failing for its own reason gets its error in
// results; the caller adds the returned number of blob references and
// enqueues the index items after commit. It may run again on a retried
// transaction, so it resets the results it owns.
func (s *Store) deliverTx(ctx context.Context, tx *Tx, hash string, blobSize int64, targets []storage.DeliveryTarget,
	preps []prepared, results []storage.DeliveryResult, hs []header) (int64, []indexItem, error) {
	type job struct {
		i       int
		owner   storage.AccountID
		mailbox storage.MailboxID
		uidv    int64
	}
	var jobs []job
	for i, t := range targets {
		if preps[i].m.Analysis == nil {
			continue // failed preparation; error already set
		}
		results[i] = storage.DeliveryResult{}
		j := job{i: i, owner: t.Owner, mailbox: t.Mailbox}
		var err error
		if t.Mailbox == 0 {
			err = tx.QueryRow(ctx, `SELECT id, uidvalidity FROM mailboxes WHERE account_id = ? AND name_key = 'inbox'`, t.Owner).Scan(&j.mailbox, &j.uidv)
		} else {
			err = tx.QueryRow(ctx, `SELECT uidvalidity FROM mailboxes WHERE id = ? AND account_id = ?`, t.Mailbox, t.Owner).Scan(&j.uidv)
		}
		if errors.Is(err, sql.ErrNoRows) {
			results[i].Err = notFound("mailbox %d of account %d", t.Mailbox, t.Owner)
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		jobs = append(jobs, j)
	}
	// Lock order: accounts by id, then mailboxes by id.
	sort.SliceStable(jobs, func(a, b int) bool {
		if jobs[a].owner != jobs[b].owner {
			return jobs[a].owner < jobs[b].owner
		}
		return jobs[a].mailbox < jobs[b].mailbox
	})
	locked := map[storage.MailboxID]*counters{}
	var order []storage.MailboxID
	var items []indexItem
	refs := int64(0)
	for _, j := range jobs {
		p := preps[j.i]
		if err := s.chargeUsage(ctx, tx, j.owner, p.size, 1); err != nil {
			if errors.Is(err, storage.ErrOverQuota) || errors.Is(err, storage.ErrNotFound) {
				results[j.i].Err = err
				continue
			}
			return 0, nil, err
		}
		c := locked[j.mailbox]
		if c == nil {
			cc, err := s.lockCounters(ctx, tx, j.owner, j.mailbox)
			if err != nil {
				return 0, nil, err
			}
			cc.highest++
			c = &cc
			locked[j.mailbox] = c
			order = append(order, j.mailbox)
		}
		uid, emailID, err := s.insertEntry(ctx, tx, j.owner, j.mailbox, c, hash, blobSize, p, c.highest)
		if err != nil {
			if errors.Is(err, storage.ErrLimit) {
				// A keyword limit is this recipient's problem; undo its charge.
				if err := s.addUsage(ctx, tx, j.owner, -p.size, -1); err != nil {
					return 0, nil, err
				}
				results[j.i].Err = err
				continue
			}
			return 0, nil, err
		}
		refs++
		results[j.i].Result = storage.AppendResult{Mailbox: j.mailbox, UIDValidity: uint32(j.uidv), UID: uid, ModSeq: c.highest, EmailID: emailID}
		items = append(items, indexItem{j.owner, j.mailbox, uid, p.text, hs})
		tx.hint(j.owner, j.mailbox, c.highest)
	}
	for _, mb := range order {
		if err := s.writeCounters(ctx, tx, mb, *locked[mb]); err != nil {
			return 0, nil, err
		}
	}
	return refs, items, nil
}

// ---- reading ----

// Messages implements storage.Store.
func (s *Store) Messages(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID, set storage.UIDSet, opt storage.MessageOptions) ([]storage.Message, error) {
	set = normSet(set)
	cond, args, filter := uidCond(set, "m.uid")
	cols := msgCols
	if opt.Analysis {
		cols += ", m.metadata"
	}
	if opt.Prefix {
		cols += ", m.prefix"
	}
	var out []storage.Message
	err := s.readTx(ctx, func(tx *Tx) error {
		out = nil
		if _, err := s.readCounters(ctx, tx, owner, mailbox); err != nil {
			return err
		}
		where := "m.mailbox_id = ? AND " + cond
		wargs := append([]any{mailbox}, args...)
		rows, err := tx.Query(ctx, `SELECT `+cols+` FROM messages m WHERE `+where+` ORDER BY m.uid`, wargs...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var md string
			var prefix []byte
			var extra []any
			if opt.Analysis {
				extra = append(extra, &md)
			}
			if opt.Prefix {
				extra = append(extra, &prefix)
			}
			m, err := scanMessage(rows, mailbox, extra...)
			if err != nil {
				rows.Close()
				return err
			}
			if filter && !set.Contains(m.UID) {
				continue
			}
			if opt.Analysis {
				m.Analysis = new(storage.Analysis)
				if err := json.Unmarshal([]byte(md), m.Analysis); err != nil {
					rows.Close()
					return fmt.Errorf("message %d/%d metadata: %v: %w", mailbox, m.UID, err, storage.ErrUnavailable)
				}
			}
			if opt.Prefix {
				m.Prefix = append([]byte{}, prefix...)
			}
			out = append(out, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		kw, err := keywordsOf(ctx, tx, where, wargs...)
		if err != nil {
			return err
		}
		for i := range out {
			out[i].Flags.Keywords = kw[out[i].UID]
		}
		return nil
	})
	return out, err
}

// Snapshot implements storage.Store.
func (s *Store) Snapshot(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID) (storage.Mailbox, []storage.UID, error) {
	var mb storage.Mailbox
	var uids []storage.UID
	err := s.readTx(ctx, func(tx *Tx) error {
		uids = nil
		var err error
		mb, err = scanMailbox(tx.QueryRow(ctx, `SELECT `+mailboxCols+mailboxFrom+` WHERE mb.account_id = ? AND mb.id = ?`, owner, mailbox))
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("mailbox %d", mailbox)
		}
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid`, mailbox)
		if err != nil {
			return err
		}
		defer rows.Close()
		uids = make([]storage.UID, 0, mb.Messages)
		for rows.Next() {
			var u int64
			if err := rows.Scan(&u); err != nil {
				return err
			}
			uids = append(uids, storage.UID(u))
		}
		return rows.Err()
	})
	return mb, uids, err
}

// ClaimRecent implements storage.Store: recent_uid moves to uid_next under
// the counter lock, so each UID is claimed by exactly one session.
func (s *Store) ClaimRecent(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID) ([]storage.UID, error) {
	var out []storage.UID
	err := s.withTx(ctx, func(tx *Tx) error {
		out = nil
		c, err := s.lockCounters(ctx, tx, owner, mailbox)
		if err != nil {
			return err
		}
		if c.recentUID >= c.uidNext {
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT uid FROM messages WHERE mailbox_id = ? AND uid >= ? ORDER BY uid`, mailbox, c.recentUID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var u int64
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return err
			}
			out = append(out, storage.UID(u))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE mailbox_counters SET recent_uid = ? WHERE mailbox_id = ?`, c.uidNext, mailbox)
		return err
	})
	return out, err
}

// OpenMessage implements storage.Store.
func (s *Store) OpenMessage(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID, uid storage.UID) (storage.Message, storage.ReaderAtCloser, error) {
	// One statement, no transaction: RETR, TOP and BODY[] run this per
	// message, and on PostgreSQL a snapshot transaction would add BEGIN and
	// COMMIT round trips. The keyword join yields one row per keyword (or
	// one row with NULL), all from the statement's single snapshot.
	//
	// With blobs in the database, a message that fits in one chunk (most
	// mail) comes with its bytes in the same statement: RETR and BODY[]
	// then cost one round trip. Larger blobs are read chunk by chunk as
	// asked, so a partial read still touches only the chunks it needs.
	cb, inDB := s.blobs.(*ChunkBlobs)
	chunkCol, chunkJoin := `, NULL`, ``
	args := []any{mailbox, int64(uid), owner}
	if inDB {
		chunkCol = `, c.data`
		chunkJoin = ` LEFT JOIN blob_chunks c ON c.hash = m.blob_hash AND c.seq = 0 AND m.blob_size <= ?`
		args = append([]any{int64(ChunkSize)}, args...)
	}
	rows, err := s.query(ctx, `SELECT `+msgCols+`, m.metadata, m.prefix, k.display`+chunkCol+` FROM messages m
		LEFT JOIN message_keywords mk ON mk.mailbox_id = m.mailbox_id AND mk.uid = m.uid
		LEFT JOIN keywords k ON k.id = mk.keyword_id`+chunkJoin+`
		WHERE m.mailbox_id = ? AND m.uid = ? AND m.account_id = ? ORDER BY k.id`, args...)
	if err != nil {
		return storage.Message{}, nil, s.dbErr(err)
	}
	var m storage.Message
	var md string
	var prefix, chunk []byte
	found := false
	for rows.Next() {
		var kw sql.NullString
		mm, err := scanMessage(rows, mailbox, &md, &prefix, &kw, &chunk)
		if err != nil {
			rows.Close()
			return storage.Message{}, nil, s.dbErr(err)
		}
		if !found {
			m, found = mm, true
		}
		if kw.Valid {
			m.Flags.Keywords = append(m.Flags.Keywords, kw.String)
		}
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return storage.Message{}, nil, s.dbErr(err)
	}
	rows.Close()
	if !found {
		return storage.Message{}, nil, notFound("message %d in mailbox %d", uid, mailbox)
	}
	m.Prefix = append([]byte{}, prefix...)
	m.Analysis = new(storage.Analysis)
	if err := json.Unmarshal([]byte(md), m.Analysis); err != nil {
		return storage.Message{}, nil, fmt.Errorf("message %d/%d metadata: %v: %w", mailbox, uid, err, storage.ErrUnavailable)
	}
	if inDB {
		r := cb.openKnown(ctx, m.BlobHash, m.BlobSize)
		if chunk != nil && int64(len(chunk)) == m.BlobSize {
			r.seq, r.data = 0, chunk
		}
		return m, r, nil
	}
	r, err := s.blobs.Open(ctx, m.BlobHash)
	if err != nil {
		return storage.Message{}, nil, fmt.Errorf("message %d/%d blob: %w", mailbox, uid, wrapUnavailable(err))
	}
	return m, r, nil
}

// ChangesSince implements storage.Store.
func (s *Store) ChangesSince(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID, since storage.ModSeq) (storage.Changes, error) {
	var ch storage.Changes
	err := s.readTx(ctx, func(tx *Tx) error {
		ch = storage.Changes{}
		c, err := s.readCounters(ctx, tx, owner, mailbox)
		if err != nil {
			return err
		}
		if since > 0 && since < c.floor {
			return fmt.Errorf("mailbox %d: modseq %d is below the tombstone floor %d: %w", mailbox, since, c.floor, storage.ErrResyncRequired)
		}
		ch.Highest, ch.UIDNext = c.highest, storage.UID(c.uidNext)
		where := "m.mailbox_id = ? AND m.modseq > ?"
		rows, err := tx.Query(ctx, `SELECT m.uid, m.modseq, m.seen, m.answered, m.flagged, m.deleted, m.draft FROM messages m
			WHERE `+where+` ORDER BY m.uid`, mailbox, int64(since))
		if err != nil {
			return err
		}
		for rows.Next() {
			var uid, ms, seen, answered, flagged, deleted, draft int64
			if err := rows.Scan(&uid, &ms, &seen, &answered, &flagged, &deleted, &draft); err != nil {
				rows.Close()
				return err
			}
			ch.Changed = append(ch.Changed, storage.MessageFlags{UID: storage.UID(uid), ModSeq: storage.ModSeq(ms),
				Flags: storage.Flags{Seen: seen != 0, Answered: answered != 0, Flagged: flagged != 0, Deleted: deleted != 0, Draft: draft != 0}})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ch.Changed) > 0 {
			kw, err := keywordsOf(ctx, tx, where, mailbox, int64(since))
			if err != nil {
				return err
			}
			for i := range ch.Changed {
				ch.Changed[i].Flags.Keywords = kw[ch.Changed[i].UID]
			}
		}
		if since == 0 {
			return nil
		}
		rows, err = tx.Query(ctx, `SELECT uid FROM tombstones WHERE mailbox_id = ? AND modseq > ? ORDER BY uid`, mailbox, int64(since))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u int64
			if err := rows.Scan(&u); err != nil {
				return err
			}
			ch.Expunged = append(ch.Expunged, storage.UID(u))
		}
		return rows.Err()
	})
	return ch, err
}

// ---- flags ----

type flagRow struct {
	uid    storage.UID
	modseq storage.ModSeq
	flags  storage.Flags
	kwIDs  []int64
}

// loadFlags reads the flags of the messages in set under the caller's
// counter lock.
func (s *Store) loadFlags(ctx context.Context, tx *Tx, mailbox storage.MailboxID, set storage.UIDSet) ([]flagRow, error) {
	cond, args, filter := uidCond(set, "m.uid")
	rows, err := tx.Query(ctx, `SELECT m.uid, m.modseq, m.seen, m.answered, m.flagged, m.deleted, m.draft FROM messages m
		WHERE m.mailbox_id = ? AND `+cond+` ORDER BY m.uid`, append([]any{mailbox}, args...)...)
	if err != nil {
		return nil, err
	}
	var out []flagRow
	idx := map[storage.UID]int{}
	for rows.Next() {
		var uid, ms, seen, answered, flagged, deleted, draft int64
		if err := rows.Scan(&uid, &ms, &seen, &answered, &flagged, &deleted, &draft); err != nil {
			rows.Close()
			return nil, err
		}
		if filter && !set.Contains(storage.UID(uid)) {
			continue
		}
		idx[storage.UID(uid)] = len(out)
		out = append(out, flagRow{uid: storage.UID(uid), modseq: storage.ModSeq(ms),
			flags: storage.Flags{Seen: seen != 0, Answered: answered != 0, Flagged: flagged != 0, Deleted: deleted != 0, Draft: draft != 0}})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, nil
	}
	rows, err = tx.Query(ctx, `SELECT m.uid, m.keyword_id FROM message_keywords m WHERE m.mailbox_id = ? AND `+cond+` ORDER BY m.uid, m.keyword_id`,
		append([]any{mailbox}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var uid, id int64
		if err := rows.Scan(&uid, &id); err != nil {
			return nil, err
		}
		if i, ok := idx[storage.UID(uid)]; ok {
			out[i].kwIDs = append(out[i].kwIDs, id)
		}
	}
	return out, rows.Err()
}

// StoreFlags implements storage.Store.
func (s *Store) StoreFlags(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID, set storage.UIDSet,
	op storage.FlagOp, f storage.Flags, unchangedSince storage.ModSeq) ([]storage.MessageFlags, []storage.UID, error) {
	if err := checkKeywords(f.Keywords); err != nil {
		return nil, nil, err
	}
	if op != storage.FlagsReplace && op != storage.FlagsAdd && op != storage.FlagsRemove {
		return nil, nil, fmt.Errorf("flag operation %d: %w", op, storage.ErrInvalid)
	}
	set = normSet(set)
	var updated []storage.MessageFlags
	var failed []storage.UID
	err := s.withTx(ctx, func(tx *Tx) error {
		updated, failed = nil, nil
		c, err := s.lockCounters(ctx, tx, owner, mailbox)
		if err != nil {
			return err
		}
		ks, err := s.keywords(ctx, tx, mailbox, f.Keywords, op != storage.FlagsRemove)
		if err != nil {
			return err
		}
		want := ks.idsOf(f.Keywords)
		rows, err := s.loadFlags(ctx, tx, mailbox, set)
		if err != nil {
			return err
		}
		ms := c.highest + 1
		for _, r := range rows {
			if unchangedSince > 0 && r.modseq > unchangedSince {
				failed = append(failed, r.uid) // RFC 7162 §3.1.3
				continue
			}
			nf, nk := applyFlags(r.flags, r.kwIDs, op, f, want)
			if sameSystemFlags(nf, r.flags) && equalIDs(nk, r.kwIDs) {
				continue
			}
			if _, err := tx.Exec(ctx, `UPDATE messages SET seen = ?, answered = ?, flagged = ?, deleted = ?, draft = ?, modseq = ?
				WHERE mailbox_id = ? AND uid = ?`, b2i(nf.Seen), b2i(nf.Answered), b2i(nf.Flagged), b2i(nf.Deleted), b2i(nf.Draft),
				int64(ms), mailbox, int64(r.uid)); err != nil {
				return err
			}
			if !equalIDs(nk, r.kwIDs) {
				if err := setKeywords(ctx, tx, mailbox, r.uid, r.kwIDs, nk); err != nil {
					return err
				}
			}
			if r.flags.Seen != nf.Seen {
				c.unseen += map[bool]int64{true: -1, false: 1}[nf.Seen]
			}
			if r.flags.Deleted != nf.Deleted {
				c.deleted += map[bool]int64{true: 1, false: -1}[nf.Deleted]
			}
			nf.Keywords = ks.displays(nk)
			updated = append(updated, storage.MessageFlags{UID: r.uid, ModSeq: ms, Flags: nf})
		}
		if len(updated) == 0 && !ks.created {
			return nil
		}
		c.highest = ms
		if err := s.writeCounters(ctx, tx, mailbox, c); err != nil {
			return err
		}
		tx.hint(owner, mailbox, ms)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return updated, failed, nil
}

// applyFlags combines current flags with f under op; keyword ids sorted.
func applyFlags(cur storage.Flags, curKW []int64, op storage.FlagOp, f storage.Flags, want []int64) (storage.Flags, []int64) {
	n := storage.Flags{Seen: cur.Seen, Answered: cur.Answered, Flagged: cur.Flagged, Deleted: cur.Deleted, Draft: cur.Draft}
	switch op {
	case storage.FlagsReplace:
		n = storage.Flags{Seen: f.Seen, Answered: f.Answered, Flagged: f.Flagged, Deleted: f.Deleted, Draft: f.Draft}
		return n, want
	case storage.FlagsAdd:
		n.Seen = n.Seen || f.Seen
		n.Answered = n.Answered || f.Answered
		n.Flagged = n.Flagged || f.Flagged
		n.Deleted = n.Deleted || f.Deleted
		n.Draft = n.Draft || f.Draft
		set := map[int64]bool{}
		for _, id := range curKW {
			set[id] = true
		}
		for _, id := range want {
			set[id] = true
		}
		return n, sortedIDs(set)
	default: // FlagsRemove
		n.Seen = n.Seen && !f.Seen
		n.Answered = n.Answered && !f.Answered
		n.Flagged = n.Flagged && !f.Flagged
		n.Deleted = n.Deleted && !f.Deleted
		n.Draft = n.Draft && !f.Draft
		set := map[int64]bool{}
		for _, id := range curKW {
			set[id] = true
		}
		for _, id := range want {
			delete(set, id)
		}
		return n, sortedIDs(set)
	}
}

func sameSystemFlags(a, b storage.Flags) bool {
	return a.Seen == b.Seen && a.Answered == b.Answered && a.Flagged == b.Flagged && a.Deleted == b.Deleted && a.Draft == b.Draft
}

func sortedIDs(set map[int64]bool) []int64 {
	if len(set) == 0 {
		return nil
	}
	out := make([]int64, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func equalIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func setKeywords(ctx context.Context, tx *Tx, mailbox storage.MailboxID, uid storage.UID, old, new []int64) error {
	had := map[int64]bool{}
	for _, id := range old {
		had[id] = true
	}
	keep := map[int64]bool{}
	for _, id := range new {
		keep[id] = true
		if !had[id] {
			if _, err := tx.Exec(ctx, `INSERT INTO message_keywords (mailbox_id, uid, keyword_id) VALUES (?, ?, ?)`, mailbox, int64(uid), id); err != nil {
				return err
			}
		}
	}
	for _, id := range old {
		if !keep[id] {
			if _, err := tx.Exec(ctx, `DELETE FROM message_keywords WHERE mailbox_id = ? AND uid = ? AND keyword_id = ?`, mailbox, int64(uid), id); err != nil {
				return err
			}
		}
	}
	return nil
}

// ---- expunge ----

// Expunge implements storage.Store.
func (s *Store) Expunge(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID, set storage.UIDSet) ([]storage.UID, error) {
	return s.expunge(ctx, owner, mailbox, normSet(set), true)
}

// ExpungeUIDs implements storage.Store.
func (s *Store) ExpungeUIDs(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID, set storage.UIDSet) ([]storage.UID, error) {
	return s.expunge(ctx, owner, mailbox, normSet(set), false)
}

type doomed struct {
	uid     storage.UID
	seen    bool
	deleted bool
	size    int64
	hash    string
	indexed bool
}

// selectDoomed reads the messages of set (only \Deleted ones when
// onlyDeleted) under the caller's counter lock.
func selectDoomed(ctx context.Context, tx *Tx, mailbox storage.MailboxID, set storage.UIDSet, onlyDeleted bool) ([]doomed, error) {
	cond, args, filter := uidCond(set, "uid")
	q := `SELECT uid, seen, deleted, size, blob_hash, text_indexed FROM messages WHERE mailbox_id = ? AND ` + cond
	if onlyDeleted {
		q += ` AND deleted = 1`
	}
	rows, err := tx.Query(ctx, q+` ORDER BY uid`, append([]any{mailbox}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []doomed
	for rows.Next() {
		var d doomed
		var uid, seen, deleted, indexed int64
		if err := rows.Scan(&uid, &seen, &deleted, &d.size, &d.hash, &indexed); err != nil {
			return nil, err
		}
		d.uid, d.seen, d.deleted, d.indexed = storage.UID(uid), seen != 0, deleted != 0, indexed != 0
		if filter && !set.Contains(d.uid) {
			continue
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// removeEntries deletes entries from a locked mailbox, leaving tombstones
// at ms, and updates c; returns the blob references released.
func (s *Store) removeEntries(ctx context.Context, tx *Tx, mailbox storage.MailboxID, c *counters, ds []doomed, ms storage.ModSeq) (map[string]int64, error) {
	uids := make([]storage.UID, len(ds))
	refs := map[string]int64{}
	for i, d := range ds {
		uids[i] = d.uid
		refs[d.hash]++
		c.messages--
		c.size -= d.size
		if !d.seen {
			c.unseen--
		}
		if d.deleted {
			c.deleted--
		}
	}
	now := nowMicro()
	for _, part := range chunks(uids, 500) {
		in, args := inList(part)
		a := append([]any{mailbox}, args...)
		if _, err := tx.Exec(ctx, `DELETE FROM message_keywords WHERE mailbox_id = ? AND uid IN `+in, a...); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM messages WHERE mailbox_id = ? AND uid IN `+in, a...); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM message_headers WHERE mailbox_id = ? AND uid IN `+in, a...); err != nil {
			return nil, err
		}
		if err := s.d.DeleteText(ctx, tx, mailbox, part); err != nil {
			return nil, err
		}
		for _, u := range part {
			if _, err := tx.Exec(ctx, `INSERT INTO tombstones (mailbox_id, uid, modseq, at) VALUES (?, ?, ?, ?)`,
				mailbox, int64(u), int64(ms), now); err != nil {
				return nil, err
			}
		}
	}
	return refs, nil
}

func (s *Store) expunge(ctx context.Context, owner storage.AccountID, mailbox storage.MailboxID, set storage.UIDSet, onlyDeleted bool) ([]storage.UID, error) {
	var out []storage.UID
	err := s.withTx(ctx, func(tx *Tx) error {
		out = nil
		if err := s.lockUsage(ctx, tx, owner); err != nil {
			return err
		}
		c, err := s.lockCounters(ctx, tx, owner, mailbox)
		if err != nil {
			return err
		}
		ds, err := selectDoomed(ctx, tx, mailbox, set, onlyDeleted)
		if err != nil || len(ds) == 0 {
			return err
		}
		c.highest++
		refs, err := s.removeEntries(ctx, tx, mailbox, &c, ds, c.highest)
		if err != nil {
			return err
		}
		var size int64
		for _, d := range ds {
			size += d.size
			out = append(out, d.uid)
		}
		if err := s.writeCounters(ctx, tx, mailbox, c); err != nil {
			return err
		}
		if err := s.addUsage(ctx, tx, owner, -size, -int64(len(ds))); err != nil {
			return err
		}
		if err := s.unrefBlobs(ctx, tx, refList(refs)); err != nil {
			return err
		}
		tx.hint(owner, mailbox, c.highest)
		return nil
	})
	return out, err
}

func refList(m map[string]int64) []blobRef {
	out := make([]blobRef, 0, len(m))
	for h, n := range m {
		out = append(out, blobRef{hash: h, n: n})
	}
	return out
}

// ---- copy and move ----

// Copy implements storage.Store.
func (s *Store) Copy(ctx context.Context, pr storage.Principal, owner storage.AccountID, src storage.MailboxID, set storage.UIDSet, dstOwner storage.AccountID, dst storage.MailboxID) (storage.CopyResult, error) {
	return s.copyMessages(ctx, owner, src, normSet(set), dstOwner, dst, false)
}

// Move implements storage.Store.
func (s *Store) Move(ctx context.Context, pr storage.Principal, owner storage.AccountID, src storage.MailboxID, set storage.UIDSet, dstOwner storage.AccountID, dst storage.MailboxID) (storage.CopyResult, error) {
	return s.copyMessages(ctx, owner, src, normSet(set), dstOwner, dst, true)
}

type srcEntry struct {
	uid      storage.UID
	seen     bool
	answered bool
	flagged  bool
	deleted  bool
	draft    bool
	idate    int64
	zone     int64
	hash     string
	blobSize int64
	prefix   []byte
	size     int64
	emailID  string
	thread   string
	uidl     string
	md       string
	mdv      int64
	sent     int64
	indexed  bool
}

func (s *Store) copyMessages(ctx context.Context, owner storage.AccountID, src storage.MailboxID, set storage.UIDSet, dstOwner storage.AccountID, dst storage.MailboxID, move bool) (storage.CopyResult, error) {
	var res storage.CopyResult
	var pending []indexPair
	err := s.withTx(ctx, func(tx *Tx) error {
		res, pending = storage.CopyResult{}, nil
		// Accounts first, by id.
		accts := []storage.AccountID{owner, dstOwner}
		sort.Slice(accts, func(i, j int) bool { return accts[i] < accts[j] })
		for i, a := range accts {
			if i > 0 && a == accts[i-1] {
				continue
			}
			if err := s.lockUsage(ctx, tx, a); err != nil {
				return err
			}
		}
		// Then mailboxes, by id.
		var uidv int64
		err := tx.QueryRow(ctx, `SELECT uidvalidity FROM mailboxes WHERE id = ? AND account_id = ?`, dst, dstOwner).Scan(&uidv)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("mailbox %d", dst)
		}
		if err != nil {
			return err
		}
		res.UIDValidity = uint32(uidv)
		cs := map[storage.MailboxID]*counters{}
		boxes := []struct {
			id    storage.MailboxID
			owner storage.AccountID
		}{{src, owner}, {dst, dstOwner}}
		sort.Slice(boxes, func(i, j int) bool { return boxes[i].id < boxes[j].id })
		for _, b := range boxes {
			if cs[b.id] != nil {
				continue
			}
			c, err := s.lockCounters(ctx, tx, b.owner, b.id)
			if err != nil {
				return err
			}
			cs[b.id] = &c
		}
		sc, dc := cs[src], cs[dst]
		entries, err := readEntries(ctx, tx, src, set)
		if err != nil || len(entries) == 0 {
			return err
		}
		var total int64
		for _, e := range entries {
			total += e.size
		}
		n := int64(len(entries))
		if !move || owner != dstOwner {
			if err := s.chargeUsage(ctx, tx, dstOwner, total, n); err != nil {
				return err
			}
		}
		// Keywords of the source, recreated in the destination.
		srcKW, err := s.keywords(ctx, tx, src, nil, false)
		if err != nil {
			return err
		}
		kwOf, err := keywordIDsBySet(ctx, tx, src, set)
		if err != nil {
			return err
		}
		var names []string
		for _, e := range entries {
			names = append(names, srcKW.displays(kwOf[e.uid])...)
		}
		dstKW, err := s.keywords(ctx, tx, dst, names, true)
		if err != nil {
			return err
		}
		dc.highest++
		dms := dc.highest
		for _, e := range entries {
			if dc.uidNext > 0xffffffff {
				return fmt.Errorf("mailbox %d ran out of UIDs: %w", dst, storage.ErrLimit)
			}
			uid := storage.UID(dc.uidNext)
			dc.uidNext++
			if _, err := tx.Exec(ctx, `INSERT INTO messages (mailbox_id, uid, account_id, modseq, seen, answered, flagged, deleted, draft,
					internal_date, internal_zone, blob_hash, blob_size, prefix, prefix_len, size, email_id, thread_id, import_uidl,
					metadata, metadata_version, sent_date, text_indexed)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				dst, int64(uid), dstOwner, int64(dms), b2i(e.seen), b2i(e.answered), b2i(e.flagged), b2i(e.deleted), b2i(e.draft),
				e.idate, e.zone, e.hash, e.blobSize, e.prefix, int64(len(e.prefix)), e.size, e.emailID, e.thread, e.uidl,
				e.md, e.mdv, e.sent, b2i(e.indexed)); err != nil {
				return err
			}
			for _, id := range dstKW.idsOf(srcKW.displays(kwOf[e.uid])) {
				if _, err := tx.Exec(ctx, `INSERT INTO message_keywords (mailbox_id, uid, keyword_id) VALUES (?, ?, ?)`, dst, int64(uid), id); err != nil {
					return err
				}
			}
			if e.indexed {
				if err := s.d.CopyText(ctx, tx, src, e.uid, dstOwner, dst, uid); err != nil {
					return err
				}
				if err := copyHeaders(ctx, tx, src, e.uid, dst, uid); err != nil {
					return err
				}
			} else {
				pending = append(pending, indexPair{src: src, srcUID: e.uid, item: indexItem{dstOwner, dst, uid, "", nil}})
			}
			dc.messages++
			dc.size += e.size
			if !e.seen {
				dc.unseen++
			}
			if e.deleted {
				dc.deleted++
			}
			res.Pairs = append(res.Pairs, storage.UIDPair{Src: e.uid, Dst: uid})
		}
		if move {
			ds := make([]doomed, len(entries))
			for i, e := range entries {
				ds[i] = doomed{uid: e.uid, seen: e.seen, deleted: e.deleted, size: e.size, hash: e.hash, indexed: e.indexed}
			}
			sc.highest++
			if _, err := s.removeEntries(ctx, tx, src, sc, ds, sc.highest); err != nil {
				return err
			}
			if owner != dstOwner {
				if err := s.addUsage(ctx, tx, owner, -total, -n); err != nil {
					return err
				}
			}
		}
		written := map[storage.MailboxID]bool{}
		for _, b := range boxes {
			if written[b.id] {
				continue
			}
			written[b.id] = true
			if err := s.writeCounters(ctx, tx, b.id, *cs[b.id]); err != nil {
				return err
			}
		}
		if !move {
			refs := map[string]blobRef{}
			for _, e := range entries {
				r := refs[e.hash]
				r.hash, r.n, r.size = e.hash, r.n+1, e.blobSize
				refs[e.hash] = r
			}
			if err := s.refBlobs(ctx, tx, refs); err != nil {
				return err
			}
		}
		tx.hint(dstOwner, dst, dc.highest)
		if move {
			tx.hint(owner, src, sc.highest)
		}
		return nil
	})
	if err != nil {
		return storage.CopyResult{}, err
	}
	if len(pending) > 0 {
		s.idx.enqueueCopies(pending)
	}
	return res, nil
}

func readEntries(ctx context.Context, tx *Tx, mailbox storage.MailboxID, set storage.UIDSet) ([]srcEntry, error) {
	cond, args, filter := uidCond(set, "uid")
	rows, err := tx.Query(ctx, `SELECT uid, seen, answered, flagged, deleted, draft, internal_date, internal_zone, blob_hash, blob_size,
		prefix, size, email_id, thread_id, import_uidl, metadata, metadata_version, sent_date, text_indexed
		FROM messages WHERE mailbox_id = ? AND `+cond+` ORDER BY uid`, append([]any{mailbox}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []srcEntry
	for rows.Next() {
		var e srcEntry
		var uid, seen, answered, flagged, deleted, draft, indexed int64
		if err := rows.Scan(&uid, &seen, &answered, &flagged, &deleted, &draft, &e.idate, &e.zone, &e.hash, &e.blobSize,
			&e.prefix, &e.size, &e.emailID, &e.thread, &e.uidl, &e.md, &e.mdv, &e.sent, &indexed); err != nil {
			return nil, err
		}
		e.uid = storage.UID(uid)
		if filter && !set.Contains(e.uid) {
			continue
		}
		e.seen, e.answered, e.flagged, e.deleted, e.draft, e.indexed = seen != 0, answered != 0, flagged != 0, deleted != 0, draft != 0, indexed != 0
		e.prefix = append([]byte{}, e.prefix...)
		out = append(out, e)
	}
	return out, rows.Err()
}

func keywordIDsBySet(ctx context.Context, tx *Tx, mailbox storage.MailboxID, set storage.UIDSet) (map[storage.UID][]int64, error) {
	cond, args, _ := uidCond(set, "uid")
	rows, err := tx.Query(ctx, `SELECT uid, keyword_id FROM message_keywords WHERE mailbox_id = ? AND `+cond+` ORDER BY uid, keyword_id`,
		append([]any{mailbox}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[storage.UID][]int64{}
	for rows.Next() {
		var uid, id int64
		if err := rows.Scan(&uid, &id); err != nil {
			return nil, err
		}
		out[storage.UID(uid)] = append(out[storage.UID(uid)], id)
	}
	return out, rows.Err()
}
