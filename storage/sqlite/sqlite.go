package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"tidings/storage"
	"tidings/storage/sqlstore"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// SchemaVersion is the newest schema this binary knows.
const SchemaVersion = 3

// PollInterval is how often PRAGMA data_version is read to notice writes by
// other processes.
const PollInterval = 200 * time.Millisecond

// Store is a storage.Store on a SQLite file.
type Store struct {
	*sqlstore.Store
	poll *sql.DB
}

var _ storage.Store = (*Store)(nil)

// dsn builds the connection string: every connection gets the durability
// and locking pragmas (modernc applies _pragma on each new connection).
func dsn(path string, extra ...string) string {
	q := []string{
		"_pragma=busy_timeout(10000)",
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(FULL)",
		"_pragma=foreign_keys(1)",
	}
	return "file:" + path + "?" + strings.Join(append(q, extra...), "&")
}

func unavailable(err error) error {
	return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
}

// Open opens the database file at path (its parent directory is created).
// The schema must have been migrated (ErrSchema otherwise) and the
// durability settings must be safe (ErrUnsafe) unless opts allow it.
func Open(ctx context.Context, path string, opts storage.Options) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, unavailable(err)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("database %s does not exist: %w", path, storage.ErrSchema)
	}
	writer, err := sql.Open("sqlite", dsn(path, "_txlock=immediate"))
	if err != nil {
		return nil, unavailable(err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	reader, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		writer.Close()
		return nil, unavailable(err)
	}
	reader.SetMaxOpenConns(8)
	reader.SetMaxIdleConns(8)
	poll, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		writer.Close()
		reader.Close()
		return nil, unavailable(err)
	}
	poll.SetMaxOpenConns(1)
	poll.SetMaxIdleConns(1)
	poll.SetConnMaxLifetime(0)
	closeAll := func() { writer.Close(); reader.Close(); poll.Close() }

	if err := checkSchema(ctx, reader); err != nil {
		closeAll()
		return nil, err
	}
	dur := func(ctx context.Context) (storage.Durability, error) { return durability(ctx, reader) }
	d, err := dur(ctx)
	if err != nil {
		closeAll()
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !d.Safe {
		if !opts.AllowUnsafeDurability {
			closeAll()
			return nil, fmt.Errorf("sqlite %s: journal_mode=%s synchronous=%s; need wal and 2 (FULL): %w",
				path, d.Settings["journal_mode"], d.Settings["synchronous"], storage.ErrUnsafe)
		}
		log.Warn("sqlite durability settings are unsafe; acknowledged mail may be lost on a crash",
			"journal_mode", d.Settings["journal_mode"], "synchronous", d.Settings["synchronous"])
	}
	ss, err := sqlstore.New(sqlstore.Config{
		Dialect:    dialect{},
		DB:         reader,
		Writer:     writer,
		Options:    opts,
		Durability: dur,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	s := &Store{Store: ss, poll: poll}
	ss.Go(s.pollDataVersion)
	return s, nil
}

// Close stops the poller and the store's background work and closes the
// connections.
func (s *Store) Close() error {
	err := s.Store.Close()
	if perr := s.poll.Close(); err == nil {
		err = perr
	}
	return err
}

// pollDataVersion notices commits by other connections (other processes,
// or other Store instances on the same file) and triggers a catch-up.
// PRAGMA data_version changes whenever another connection commits.
func (s *Store) pollDataVersion(ctx context.Context) {
	conn, err := s.poll.Conn(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.Logger().Warn("data_version poller cannot connect", "err", err)
		}
		return
	}
	defer conn.Close()
	var last int64 = -1
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		var v int64
		if err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.Logger().Warn("reading data_version failed", "err", err)
		} else if v != last {
			// Catch up on the first reading too: a commit that landed
			// between Open (or a Subscribe) and this goroutine's first
			// look would otherwise wait for the periodic catch-up.
			s.CatchUp()
			last = v
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func durability(ctx context.Context, db *sql.DB) (storage.Durability, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return storage.Durability{}, unavailable(err)
	}
	defer conn.Close()
	var jm string
	var sync int64
	if err := conn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&jm); err != nil {
		return storage.Durability{}, unavailable(err)
	}
	if err := conn.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		return storage.Durability{}, unavailable(err)
	}
	jm = strings.ToLower(jm)
	return storage.Durability{
		Driver:   "sqlite",
		Settings: map[string]string{"journal_mode": jm, "synchronous": strconv.FormatInt(sync, 10)},
		Safe:     jm == "wal" && sync >= 2,
	}, nil
}

// schemaVersion reads (version, min_compatible); 0, 0 when unmigrated.
func schemaVersion(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int, int, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_info'`).Scan(&n); err != nil {
		return 0, 0, unavailable(err)
	}
	if n == 0 {
		return 0, 0, nil
	}
	var v, minc int
	err := q.QueryRowContext(ctx, `SELECT version, min_compatible FROM schema_info ORDER BY version DESC LIMIT 1`).Scan(&v, &minc)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, unavailable(err)
	}
	return v, minc, nil
}

func checkSchema(ctx context.Context, db *sql.DB) error {
	v, minc, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	return sqlstore.CheckSchema(v, minc, SchemaVersion)
}

func migrations() ([]sqlstore.Migration, error) {
	return sqlstore.LoadMigrations(migrationFS, "migrations")
}

// Migrate creates or upgrades the schema of the database file at path.
// Each migration runs in its own BEGIN EXCLUSIVE transaction, which is also
// the lock against a concurrent Migrate. log gets one line per step.
func Migrate(ctx context.Context, path string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return unavailable(err)
	}
	db, err := sql.Open("sqlite", dsn(path, "_txlock=exclusive"))
	if err != nil {
		return unavailable(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ms, err := migrations()
	if err != nil {
		return err
	}
	v, _, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	if v > SchemaVersion {
		log.Info("database schema is newer than this binary; nothing to migrate", "version", v, "known", SchemaVersion)
		return nil
	}
	for _, m := range ms {
		if m.Version <= v {
			continue
		}
		start := time.Now()
		log.Info("applying migration", "driver", "sqlite", "migration", m.Name)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return unavailable(err)
		}
		cur, _, err := schemaVersion(ctx, tx)
		if err != nil {
			tx.Rollback()
			return err
		}
		if cur >= m.Version { // another process migrated meanwhile
			tx.Rollback()
			continue
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", m.Name, unavailable(err))
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, unavailable(err))
		}
		log.Info("migration applied", "driver", "sqlite", "migration", m.Name, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// dialect is SQLite's side of sqlstore.Dialect.
type dialect struct{}

func (dialect) Name() string               { return "sqlite" }
func (dialect) Rebind(q string) string     { return q }
func (dialect) ForUpdate() string          { return "" }
func (dialect) SnapshotTx() *sql.TxOptions { return &sql.TxOptions{ReadOnly: true} }

func sqliteCode(err error) int {
	var e *msqlite.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return -1
}

func (dialect) IsUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func (dialect) IsRetryable(err error) bool {
	c := sqliteCode(err)
	return c >= 0 && (c&0xff == sqlite3.SQLITE_BUSY || c&0xff == sqlite3.SQLITE_LOCKED)
}

func (dialect) PutText(ctx context.Context, tx *sqlstore.Tx, account storage.AccountID, mailbox storage.MailboxID, uid storage.UID, text string) error {
	var id int64
	err := tx.QueryRow(ctx, `SELECT id FROM message_text_map WHERE mailbox_id = ? AND uid = ?`, mailbox, int64(uid)).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if err := tx.QueryRow(ctx, `INSERT INTO message_text_map (account_id, mailbox_id, uid) VALUES (?, ?, ?) RETURNING id`,
			account, mailbox, int64(uid)).Scan(&id); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		if _, err := tx.Exec(ctx, `DELETE FROM message_text WHERE rowid = ?`, id); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, `INSERT INTO message_text (rowid, text) VALUES (?, ?)`, id, text)
	return err
}

func (dialect) DeleteText(ctx context.Context, tx *sqlstore.Tx, mailbox storage.MailboxID, uids []storage.UID) error {
	cond := ""
	args := []any{mailbox}
	if uids != nil {
		if len(uids) == 0 {
			return nil
		}
		cond = " AND uid IN (" + strings.TrimSuffix(strings.Repeat("?, ", len(uids)), ", ") + ")"
		for _, u := range uids {
			args = append(args, int64(u))
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM message_text WHERE rowid IN (SELECT id FROM message_text_map WHERE mailbox_id = ?`+cond+`)`, args...); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `DELETE FROM message_text_map WHERE mailbox_id = ?`+cond, args...)
	return err
}

func (dialect) CopyText(ctx context.Context, tx *sqlstore.Tx, srcMailbox storage.MailboxID, srcUID storage.UID, dstAccount storage.AccountID, dstMailbox storage.MailboxID, dstUID storage.UID) error {
	var src int64
	err := tx.QueryRow(ctx, `SELECT id FROM message_text_map WHERE mailbox_id = ? AND uid = ?`, srcMailbox, int64(srcUID)).Scan(&src)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	var id int64
	if err := tx.QueryRow(ctx, `INSERT INTO message_text_map (account_id, mailbox_id, uid) VALUES (?, ?, ?)
		ON CONFLICT (mailbox_id, uid) DO UPDATE SET account_id = excluded.account_id RETURNING id`,
		dstAccount, dstMailbox, int64(dstUID)).Scan(&id); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM message_text WHERE rowid = ?`, id); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO message_text (rowid, text) SELECT ?, text FROM message_text WHERE rowid = ?`, id, src)
	return err
}

func (dialect) MoveText(ctx context.Context, tx *sqlstore.Tx, account storage.AccountID, from, to storage.MailboxID) error {
	_, err := tx.Exec(ctx, `UPDATE message_text_map SET mailbox_id = ?, account_id = ? WHERE mailbox_id = ?`, to, account, from)
	return err
}

// TextCond uses the trigram index for patterns of three characters or more
// (a quoted FTS5 phrase of trigrams is a substring match) and scans the
// mailbox's text with instr() — bytes, never SQLite's ASCII-only case
// folding — for shorter ones.
func (dialect) TextCond(account storage.AccountID, mailbox storage.MailboxID, pattern string) (string, []any) {
	if len([]rune(pattern)) >= 3 {
		phrase := `"` + strings.ReplaceAll(pattern, `"`, `""`) + `"`
		return `(m.mailbox_id, m.uid) IN (SELECT x.mailbox_id, x.uid FROM message_text_map x
			WHERE x.mailbox_id = ? AND x.id IN (SELECT rowid FROM message_text WHERE message_text MATCH ?))`,
			[]any{mailbox, phrase}
	}
	return `(m.mailbox_id, m.uid) IN (SELECT x.mailbox_id, x.uid FROM message_text_map x JOIN message_text f ON f.rowid = x.id
		WHERE x.mailbox_id = ? AND instr(f.text, ?) > 0)`, []any{mailbox, pattern}
}
