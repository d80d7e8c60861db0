package sqlstore

import (
	"context"
	"database/sql"
	"strconv"
	"strings"

	"tidings/storage"
)

// Dialect is what differs between the SQL databases. Queries in this package
// are written with '?' placeholders and the PostgreSQL/SQLite common subset
// (ON CONFLICT, RETURNING, row values); the dialect covers the rest.
type Dialect interface {
	// Name is the driver name: "postgres" or "sqlite".
	Name() string
	// Rebind turns '?' placeholders into the database's form.
	Rebind(query string) string
	// ForUpdate is appended to a SELECT that must lock the rows it reads
	// (" FOR UPDATE" on PostgreSQL; "" on SQLite, whose single writer
	// connection already serialises writers).
	ForUpdate() string
	// IsUnique reports a unique-constraint violation.
	IsUnique(err error) bool
	// IsRetryable reports a serialization failure or deadlock that a fresh
	// attempt of the whole transaction may not hit.
	IsRetryable(err error) bool
	// SnapshotTx are the options of a read transaction whose statements all
	// see one snapshot (REPEATABLE READ READ ONLY on PostgreSQL; a deferred
	// transaction on SQLite, whose first read fixes the WAL snapshot).
	SnapshotTx() *sql.TxOptions

	// PutText stores the folded search text of one message (replacing any).
	PutText(ctx context.Context, tx *Tx, account storage.AccountID, mailbox storage.MailboxID, uid storage.UID, text string) error
	// DeleteText removes the text of the given messages; uids nil means the
	// whole mailbox.
	DeleteText(ctx context.Context, tx *Tx, mailbox storage.MailboxID, uids []storage.UID) error
	// CopyText copies one message's text to a new entry.
	CopyText(ctx context.Context, tx *Tx, srcMailbox storage.MailboxID, srcUID storage.UID, dstAccount storage.AccountID, dstMailbox storage.MailboxID, dstUID storage.UID) error
	// MoveText re-homes every text row of mailbox from to mailbox to
	// (same UIDs), as renaming INBOX does.
	MoveText(ctx context.Context, tx *Tx, account storage.AccountID, from, to storage.MailboxID) error
	// TextCond returns a SQL condition, on the messages row aliased m, that
	// is true when the message's folded text contains pattern (already
	// folded), with its arguments in order.
	TextCond(account storage.AccountID, mailbox storage.MailboxID, pattern string) (string, []any)
}

// RebindDollar turns '?' into $1, $2, ... (PostgreSQL). Queries of this
// package never contain '?' inside string literals.
func RebindDollar(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// LikeEscape escapes the LIKE wildcards of s with '\'.
func LikeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// Tx is a write or read transaction with the dialect's placeholders. Hints
// and post-commit work registered on it take effect only after commit.
type Tx struct {
	tx    *sql.Tx
	d     Dialect
	hints []storage.Hint
	after []func()
	// wroteMessage is set when the transaction inserted a message or
	// queue row (Deliver, Submit, Append): the fault hook before COMMIT
	// fires only for those.
	wroteMessage bool
}

// Exec runs a statement.
func (t *Tx) Exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.d.Rebind(q), args...)
}

// Query runs a query.
func (t *Tx) Query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.d.Rebind(q), args...)
}

// QueryRow runs a query returning at most one row.
func (t *Tx) QueryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.d.Rebind(q), args...)
}

// hint queues a hint to publish after commit.
func (t *Tx) hint(account storage.AccountID, mailbox storage.MailboxID, modseq storage.ModSeq) {
	t.hints = append(t.hints, storage.Hint{Account: account, Mailbox: mailbox, ModSeq: modseq})
}

// afterCommit queues work to run after a successful commit.
func (t *Tx) afterCommit(fn func()) { t.after = append(t.after, fn) }
