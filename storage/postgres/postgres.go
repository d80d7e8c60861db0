package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"tidings/storage"
	"tidings/storage/sqlstore"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// SchemaVersion is the newest schema this binary knows.
const SchemaVersion = 3

// Channel is the NOTIFY channel of change hints.
const Channel = "tidings_changes"

// migrationLock is the pg_advisory_lock key of Migrate ("tidings" in ASCII).
const migrationLock = 0x746964696e6773

// Store is a storage.Store on PostgreSQL.
type Store struct {
	*sqlstore.Store
	url string
}

var _ storage.Store = (*Store)(nil)

func unavailable(err error) error {
	return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
}

// Open connects to the database at url. The schema must have been migrated
// (ErrSchema otherwise), the server must commit durably (ErrUnsafe) unless
// opts allow otherwise, and it must answer (ErrUnavailable).
func Open(ctx context.Context, url string, opts storage.Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, unavailable(err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, unavailable(err)
	}
	if err := checkSchema(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	dur := func(ctx context.Context) (storage.Durability, error) { return durability(ctx, db) }
	d, err := dur(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	if !d.Safe {
		if !opts.AllowUnsafeDurability {
			db.Close()
			return nil, fmt.Errorf("postgresql: fsync=%s synchronous_commit=%s: %w",
				d.Settings["fsync"], d.Settings["synchronous_commit"], storage.ErrUnsafe)
		}
		log.Warn("postgresql durability settings are unsafe; acknowledged mail may be lost on a crash",
			"fsync", d.Settings["fsync"], "synchronous_commit", d.Settings["synchronous_commit"])
	}
	var idx int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'message_text_trgm'`).Scan(&idx); err != nil {
		db.Close()
		return nil, unavailable(err)
	}
	if idx == 0 {
		log.Warn("pg_trgm search index missing; text search scans (install postgresql-contrib and run tidings migrate)")
	}
	s := &Store{url: url}
	ss, err := sqlstore.New(sqlstore.Config{
		Dialect:    dialect{},
		DB:         db,
		Options:    opts,
		Durability: dur,
		Notify:     func(ctx context.Context, hints []storage.Hint) error { return notify(ctx, db, hints) },
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	s.Store = ss
	ss.Go(s.listen)
	return s, nil
}

func durability(ctx context.Context, db *sql.DB) (storage.Durability, error) {
	var fsync, sc string
	if err := db.QueryRowContext(ctx, `SHOW fsync`).Scan(&fsync); err != nil {
		return storage.Durability{}, unavailable(err)
	}
	if err := db.QueryRowContext(ctx, `SHOW synchronous_commit`).Scan(&sc); err != nil {
		return storage.Durability{}, unavailable(err)
	}
	return storage.Durability{
		Driver:   "postgres",
		Settings: map[string]string{"fsync": fsync, "synchronous_commit": sc},
		// synchronous_commit=local/remote_write/remote_apply/on all flush
		// the local WAL before COMMIT returns; only off does not.
		Safe: fsync == "on" && sc != "off",
	}, nil
}

type queryRower interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// schemaVersion reads (version, min_compatible); 0, 0 when unmigrated.
func schemaVersion(ctx context.Context, q queryRower) (int, int, error) {
	var reg sql.NullString
	if err := q.QueryRowContext(ctx, `SELECT CAST(to_regclass('schema_info') AS TEXT)`).Scan(&reg); err != nil {
		return 0, 0, unavailable(err)
	}
	if !reg.Valid {
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

// Migrate creates or upgrades the schema at url under an advisory lock,
// each migration in one transaction, then makes sure of the trigram search
// index (a warning, not an error, when pg_trgm cannot be installed).
func Migrate(ctx context.Context, url string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		return unavailable(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return unavailable(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
		return unavailable(err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrationLock))
	ms, err := migrations()
	if err != nil {
		return err
	}
	v, _, err := schemaVersion(ctx, conn)
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
		log.Info("applying migration", "driver", "postgres", "migration", m.Name)
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return unavailable(err)
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", m.Name, unavailable(err))
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, unavailable(err))
		}
		log.Info("migration applied", "driver", "postgres", "migration", m.Name, "took", time.Since(start).Round(time.Millisecond))
	}
	if err := trigramIndex(ctx, conn); err != nil {
		log.Warn("pg_trgm/btree_gin unavailable; text search will scan", "err", err)
	}
	return nil
}

func trigramIndex(ctx context.Context, conn *sql.Conn) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for _, q := range []string{
		`CREATE EXTENSION IF NOT EXISTS pg_trgm`,
		`CREATE EXTENSION IF NOT EXISTS btree_gin`,
		`CREATE INDEX IF NOT EXISTS message_text_trgm ON message_text USING gin (account_id, text gin_trgm_ops)`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// ---- hints across nodes ----

func notify(ctx context.Context, db *sql.DB, hints []storage.Hint) error {
	payloads := make([]string, len(hints))
	for i, h := range hints {
		payloads[i] = fmt.Sprintf("%d:%d:%d", h.Account, h.Mailbox, h.ModSeq)
	}
	_, err := db.ExecContext(ctx, `SELECT pg_notify('`+Channel+`', p) FROM unnest(CAST($1 AS TEXT[])) AS p`, payloads)
	return err
}

func parsePayload(p string) (storage.Hint, bool) {
	f := strings.Split(p, ":")
	if len(f) != 3 {
		return storage.Hint{}, false
	}
	a, err1 := strconv.ParseInt(f[0], 10, 64)
	m, err2 := strconv.ParseInt(f[1], 10, 64)
	ms, err3 := strconv.ParseUint(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return storage.Hint{}, false
	}
	return storage.Hint{Account: storage.AccountID(a), Mailbox: storage.MailboxID(m), ModSeq: storage.ModSeq(ms)}, true
}

// listen keeps one LISTEN connection open, reconnecting with backoff; each
// (re)connect triggers a catch-up, since hints sent while it was away are
// lost.
func (s *Store) listen(ctx context.Context) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.Logger().Warn("change listener lost its connection; reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN `+Channel); err != nil {
		return err
	}
	s.CatchUp()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if h, ok := parsePayload(n.Payload); ok {
			s.Remote([]storage.Hint{h})
		}
	}
}

// ---- dialect ----

type dialect struct{}

func (dialect) Name() string           { return "postgres" }
func (dialect) Rebind(q string) string { return sqlstore.RebindDollar(q) }
func (dialect) ForUpdate() string      { return " FOR UPDATE" }
func (dialect) SnapshotTx() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
}

func pgCode(err error) string {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func (dialect) IsUnique(err error) bool { return pgCode(err) == "23505" }

func (dialect) IsRetryable(err error) bool {
	c := pgCode(err)
	return c == "40001" || c == "40P01"
}

func (dialect) PutText(ctx context.Context, tx *sqlstore.Tx, account storage.AccountID, mailbox storage.MailboxID, uid storage.UID, text string) error {
	_, err := tx.Exec(ctx, `INSERT INTO message_text (account_id, mailbox_id, uid, text) VALUES (?, ?, ?, ?)
		ON CONFLICT (mailbox_id, uid) DO UPDATE SET text = excluded.text, account_id = excluded.account_id`,
		account, mailbox, int64(uid), text)
	return err
}

func (dialect) DeleteText(ctx context.Context, tx *sqlstore.Tx, mailbox storage.MailboxID, uids []storage.UID) error {
	if uids == nil {
		_, err := tx.Exec(ctx, `DELETE FROM message_text WHERE mailbox_id = ?`, mailbox)
		return err
	}
	if len(uids) == 0 {
		return nil
	}
	args := []any{mailbox}
	for _, u := range uids {
		args = append(args, int64(u))
	}
	_, err := tx.Exec(ctx, `DELETE FROM message_text WHERE mailbox_id = ? AND uid IN (`+
		strings.TrimSuffix(strings.Repeat("?, ", len(uids)), ", ")+`)`, args...)
	return err
}

func (dialect) CopyText(ctx context.Context, tx *sqlstore.Tx, srcMailbox storage.MailboxID, srcUID storage.UID, dstAccount storage.AccountID, dstMailbox storage.MailboxID, dstUID storage.UID) error {
	_, err := tx.Exec(ctx, `INSERT INTO message_text (account_id, mailbox_id, uid, text)
		SELECT ?, ?, ?, text FROM message_text WHERE mailbox_id = ? AND uid = ?
		ON CONFLICT (mailbox_id, uid) DO UPDATE SET text = excluded.text, account_id = excluded.account_id`,
		dstAccount, dstMailbox, int64(dstUID), srcMailbox, int64(srcUID))
	return err
}

func (dialect) MoveText(ctx context.Context, tx *sqlstore.Tx, account storage.AccountID, from, to storage.MailboxID) error {
	_, err := tx.Exec(ctx, `UPDATE message_text SET mailbox_id = ?, account_id = ? WHERE mailbox_id = ?`, to, account, from)
	return err
}

// TextCond matches with LIKE on the folded text: the trigram GIN index on
// (account_id, text) serves it when present; patterns under three
// characters scan the mailbox's rows. LIKE compares characters exactly
// (never ILIKE, whose case rules differ from storage.Fold).
func (dialect) TextCond(account storage.AccountID, mailbox storage.MailboxID, pattern string) (string, []any) {
	return `(m.mailbox_id, m.uid) IN (SELECT t.mailbox_id, t.uid FROM message_text t
		WHERE t.account_id = ? AND t.mailbox_id = ? AND t.text LIKE ? ESCAPE '\')`,
		[]any{account, mailbox, "%" + sqlstore.LikeEscape(pattern) + "%"}
}
