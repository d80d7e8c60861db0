package sqlstore

import (
	"context"
	"fmt"
	"strings"

	"tidings/storage"
)

// Search implements storage.Store. The key tree becomes one SQL condition
// on the mailbox's rows; nothing is evaluated in Go, so no mailbox is ever
// loaded into memory.
//
// SearchHeader matches the top-level header fields kept in message_headers
// (unfolded, RFC 2047-decoded, folded; LIKE is safe on SQLite because both
// sides are already folded to lower case). Deviation: SearchBody is matched
// against the whole decoded search text (headers and body), because only
// that text is indexed; it can over-match, never miss.
func (s *Store) Search(ctx context.Context, pr storage.Principal, owner storage.AccountID, mailbox storage.MailboxID, key storage.SearchKey) ([]storage.UID, error) {
	b := &searchBuilder{d: s.d, account: owner, mailbox: mailbox}
	cond, err := b.build(key, 0)
	if err != nil {
		return nil, err
	}
	if b.text {
		// Text lives in its own table, written after commit: let the
		// indexer catch up, then index what never made it from the bytes.
		if err := s.WaitIndexed(ctx); err != nil {
			return nil, err
		}
		if err := s.indexUnindexed(ctx, mailbox); err != nil {
			return nil, err
		}
	}
	var out []storage.UID
	err = s.readTx(ctx, func(tx *Tx) error {
		out = nil
		if _, err := s.readCounters(ctx, tx, owner, mailbox); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT m.uid FROM messages m WHERE m.mailbox_id = ? AND (`+cond+`) ORDER BY m.uid`,
			append([]any{mailbox}, b.args...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u int64
			if err := rows.Scan(&u); err != nil {
				return err
			}
			out = append(out, storage.UID(u))
		}
		return rows.Err()
	})
	return out, err
}

type searchBuilder struct {
	d       Dialect
	account storage.AccountID
	mailbox storage.MailboxID
	args    []any
	text    bool
}

func (b *searchBuilder) build(k storage.SearchKey, depth int) (string, error) {
	if depth > storage.MaxSearchDepth {
		return "", fmt.Errorf("search criteria nested deeper than %d: %w", storage.MaxSearchDepth, storage.ErrLimit)
	}
	switch k.Op {
	case storage.SearchAll:
		return "1=1", nil
	case storage.SearchAnd, storage.SearchOr:
		if len(k.Children) == 0 {
			if k.Op == storage.SearchAnd {
				return "1=1", nil
			}
			return "1=0", nil
		}
		parts := make([]string, 0, len(k.Children))
		for _, c := range k.Children {
			p, err := b.build(c, depth+1)
			if err != nil {
				return "", err
			}
			parts = append(parts, "("+p+")")
		}
		op := " AND "
		if k.Op == storage.SearchOr {
			op = " OR "
		}
		return strings.Join(parts, op), nil
	case storage.SearchNot:
		if len(k.Children) != 1 {
			return "", fmt.Errorf("NOT needs one criterion, has %d: %w", len(k.Children), storage.ErrInvalid)
		}
		p, err := b.build(k.Children[0], depth+1)
		if err != nil {
			return "", err
		}
		return "NOT (" + p + ")", nil
	case storage.SearchHeader:
		// Header fields are indexed with the text, after commit.
		b.text = true
		name := strings.ToLower(strings.TrimSpace(k.Name))
		pat := storage.Fold(k.Value)
		b.args = append(b.args, name)
		q := `EXISTS (SELECT 1 FROM message_headers h WHERE h.mailbox_id = m.mailbox_id AND h.uid = m.uid AND h.name = ?`
		if pat != "" {
			b.args = append(b.args, "%"+LikeEscape(pat)+"%")
			q += ` AND h.value LIKE ? ESCAPE '\'`
		}
		return q + ")", nil
	case storage.SearchText, storage.SearchBody:
		pat := storage.Fold(k.Value)
		if pat == "" {
			return "1=1", nil
		}
		b.text = true
		c, args := b.d.TextCond(b.account, b.mailbox, pat)
		b.args = append(b.args, args...)
		return c, nil
	case storage.SearchUID:
		set := normSet(k.UIDs)
		if set == nil {
			return "1=1", nil
		}
		if len(set) == 0 {
			return "1=0", nil
		}
		var parts []string
		for _, r := range set {
			if r.Stop == 0 {
				parts = append(parts, "m.uid >= ?")
				b.args = append(b.args, int64(r.Start))
			} else {
				parts = append(parts, "m.uid BETWEEN ? AND ?")
				b.args = append(b.args, int64(r.Start), int64(r.Stop))
			}
		}
		return strings.Join(parts, " OR "), nil
	case storage.SearchFlag:
		col, ok := map[string]string{
			`\seen`: "m.seen", `\answered`: "m.answered", `\flagged`: "m.flagged",
			`\deleted`: "m.deleted", `\draft`: "m.draft",
		}[strings.ToLower(k.Name)]
		if !ok {
			return "1=0", nil // \Recent is the session's business
		}
		return col + " = 1", nil
	case storage.SearchKeyword:
		b.args = append(b.args, storage.Fold(k.Name))
		return `EXISTS (SELECT 1 FROM message_keywords mk JOIN keywords k ON k.id = mk.keyword_id
			WHERE mk.mailbox_id = m.mailbox_id AND mk.uid = m.uid AND k.key = ?)`, nil
	case storage.SearchBefore:
		b.args = append(b.args, k.Time.UnixMicro())
		return "m.internal_date < ?", nil
	case storage.SearchSince:
		b.args = append(b.args, k.Time.UnixMicro())
		return "m.internal_date >= ?", nil
	case storage.SearchSentBefore, storage.SearchSentSince:
		// RFC 3501 §6.4.4: without a usable Date: header, the internal
		// date stands in.
		b.args = append(b.args, k.Time.UnixMicro())
		op := "<"
		if k.Op == storage.SearchSentSince {
			op = ">="
		}
		return "(CASE WHEN m.sent_date = 0 THEN m.internal_date ELSE m.sent_date END) " + op + " ?", nil
	case storage.SearchLarger:
		b.args = append(b.args, k.Size)
		return "m.size > ?", nil
	case storage.SearchSmaller:
		b.args = append(b.args, k.Size)
		return "m.size < ?", nil
	case storage.SearchModSeq:
		b.args = append(b.args, int64(k.ModSeq))
		return "m.modseq >= ?", nil
	case storage.SearchEmailID:
		b.args = append(b.args, k.Value)
		return "m.email_id = ?", nil
	}
	return "", fmt.Errorf("search key %d: %w", k.Op, storage.ErrInvalid)
}
