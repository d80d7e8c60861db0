package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"tidings/storage"
)

// Config is what a driver hands to New.
type Config struct {
	Dialect Dialect
	// DB serves reads (and writes when Writer is nil).
	DB *sql.DB
	// Writer serves write transactions. SQLite: a pool of exactly one
	// connection whose transactions begin IMMEDIATE. Nil: DB.
	Writer  *sql.DB
	Options storage.Options
	// Notify, when set, sends hints to other processes (PostgreSQL NOTIFY).
	// It is called after commit from the hint goroutine, never inside a
	// transaction.
	Notify func(ctx context.Context, hints []storage.Hint) error
	// Durability reads back the durability settings.
	Durability func(ctx context.Context) (storage.Durability, error)
}

// Store implements storage.Store over database/sql.
type Store struct {
	d       Dialect
	db      *sql.DB
	writer  *sql.DB
	blobs   storage.BlobStore
	opts    storage.Options
	log     *slog.Logger
	notify  func(context.Context, []storage.Hint) error
	durable func(context.Context) (storage.Durability, error)

	hub *hub
	idx *indexer

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

var _ storage.Store = (*Store)(nil)

// New builds the store and starts its background work (hint dispatch,
// catch-up, search indexer). The caller has checked the schema version.
func New(cfg Config) (*Store, error) {
	if cfg.Dialect == nil || cfg.DB == nil {
		return nil, errors.New("sqlstore: Dialect and DB are required")
	}
	s := &Store{
		d:       cfg.Dialect,
		db:      cfg.DB,
		writer:  cfg.Writer,
		opts:    cfg.Options,
		log:     cfg.Options.Logger,
		notify:  cfg.Notify,
		durable: cfg.Durability,
	}
	if s.writer == nil {
		s.writer = s.db
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.opts.CatchupInterval <= 0 {
		s.opts.CatchupInterval = storage.DefaultCatchupInterval
	}
	if s.opts.SearchTextLimit <= 0 {
		s.opts.SearchTextLimit = storage.DefaultSearchTextLimit
	}
	s.blobs = cfg.Options.Blobs
	if s.blobs == nil {
		s.blobs = NewChunkBlobs(s.d, s.writer, s.db)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.hub = newHub(s)
	s.idx = newIndexer(s)
	s.goBackground(s.hub.run)
	s.goBackground(s.catchupLoop)
	s.goBackground(s.idx.run)
	return s, nil
}

func (s *Store) goBackground(fn func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("store background task panicked", "panic", r)
			}
		}()
		fn(s.ctx)
	}()
}

// Blobs returns the BlobStore in use.
func (s *Store) Blobs() storage.BlobStore { return s.blobs }

// Driver implements storage.Store.
func (s *Store) Driver() string { return s.d.Name() }

// Durability implements storage.Store.
func (s *Store) Durability(ctx context.Context) (storage.Durability, error) {
	if s.durable == nil {
		return storage.Durability{Driver: s.d.Name()}, nil
	}
	return s.durable(ctx)
}

// Close stops the background work and closes the connection pools. The
// driver stops its own listener before calling it.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
		err = s.db.Close()
		if s.writer != s.db {
			if werr := s.writer.Close(); err == nil {
				err = werr
			}
		}
	})
	return err
}

// Context is cancelled when the store closes; drivers run their listeners
// under it.
func (s *Store) Context() context.Context { return s.ctx }

// Go runs fn as store background work that Close waits for.
func (s *Store) Go(fn func(ctx context.Context)) { s.goBackground(fn) }

// Logger is the store's logger.
func (s *Store) Logger() *slog.Logger { return s.log }

// maxAttempts bounds retries of serialization failures and deadlocks.
const maxAttempts = 12

// withTx runs fn in a write transaction, retrying serialization failures
// and deadlocks; hints and post-commit work registered by fn run after a
// successful commit. fn must not keep state across attempts.
func (s *Store) withTx(ctx context.Context, fn func(tx *Tx) error) error {
	var err error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		var tx *Tx
		tx, err = s.begin(ctx, s.writer, nil)
		if err != nil {
			if s.d.IsRetryable(err) && ctx.Err() == nil {
				backoff(attempt)
				continue
			}
			return s.dbErr(err)
		}
		err = fn(tx)
		if err == nil {
			if tx.wroteMessage {
				faultPoint("sqlstore-before-commit")
			}
			err = tx.tx.Commit()
			if err == nil {
				s.published(tx)
				return nil
			}
		} else {
			tx.tx.Rollback()
		}
		if !s.d.IsRetryable(err) || ctx.Err() != nil {
			return s.dbErr(err)
		}
		backoff(attempt)
	}
	return s.dbErr(err)
}

// readTx runs fn in a read-only snapshot transaction.
func (s *Store) readTx(ctx context.Context, fn func(tx *Tx) error) error {
	var err error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		var tx *Tx
		tx, err = s.begin(ctx, s.db, s.d.SnapshotTx())
		if err != nil {
			if s.d.IsRetryable(err) && ctx.Err() == nil {
				backoff(attempt)
				continue
			}
			return s.dbErr(err)
		}
		err = fn(tx)
		if err == nil {
			err = tx.tx.Commit()
			if err == nil {
				return nil
			}
		} else {
			tx.tx.Rollback()
		}
		if !s.d.IsRetryable(err) || ctx.Err() != nil {
			return s.dbErr(err)
		}
		backoff(attempt)
	}
	return s.dbErr(err)
}

func (s *Store) begin(ctx context.Context, db *sql.DB, opts *sql.TxOptions) (*Tx, error) {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{tx: tx, d: s.d}, nil
}

func (s *Store) published(tx *Tx) {
	if len(tx.hints) > 0 {
		s.hub.publish(tx.hints, true)
	}
	for _, fn := range tx.after {
		fn()
	}
}

func backoff(attempt int) {
	d := time.Duration(1<<min(attempt, 6)) * time.Millisecond
	var b [1]byte
	rand.Read(b[:])
	time.Sleep(d + time.Duration(b[0])*d/256)
}

var sentinels = []error{
	storage.ErrNotFound, storage.ErrExists, storage.ErrOverQuota, storage.ErrUnavailable,
	storage.ErrResyncRequired, storage.ErrLimit, storage.ErrInvalid, storage.ErrDenied,
	storage.ErrNotEmpty, storage.ErrSchema, storage.ErrUnsafe, storage.ErrModified,
}

// dbErr classifies an error: storage sentinels pass through, unique
// violations become ErrExists, everything else from the database (including
// a cancelled context) wraps ErrUnavailable.
func (s *Store) dbErr(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range sentinels {
		if errors.Is(err, e) {
			return err
		}
	}
	if s.d.IsUnique(err) {
		return fmt.Errorf("%w: %v", storage.ErrExists, err)
	}
	return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
}

// q runs a single statement outside a transaction on the read pool.
func (s *Store) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return s.db.QueryRowContext(ctx, s.d.Rebind(q), args...)
}

func (s *Store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return s.db.QueryContext(ctx, s.d.Rebind(q), args...)
}

func nowMicro() int64 { return time.Now().UnixMicro() }

func fromMicro(us int64) time.Time { return time.UnixMicro(us) }

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// randomID returns a prefix plus 24 random hex digits (MAILBOXID, EMAILID:
// RFC 8474 §3 wants them unguessable-enough and stable, 1-255 of
// [A-Za-z0-9_-]).
func randomID(prefix string) string {
	var b [12]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return prefix + hex.EncodeToString(b[:])
}

func notFound(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, storage.ErrNotFound)...)
}
