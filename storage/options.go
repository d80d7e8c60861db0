package storage

import (
	"context"
	"io"
	"log/slog"
	"time"
)

// Options configure a driver's Open. The zero value is usable.
type Options struct {
	// Blobs keeps message bytes; nil means chunk rows in the database.
	Blobs BlobStore
	// Logger receives the store's own log lines; nil discards them.
	Logger *slog.Logger
	// AllowUnsafeDurability lets Open accept fsync=off,
	// synchronous_commit=off (PostgreSQL) or a non-WAL / non-FULL SQLite.
	AllowUnsafeDurability bool
	// CatchupInterval is how often subscribed accounts are re-read when no
	// hint arrives (default 30 s).
	CatchupInterval time.Duration
	// ExtractText recomputes a message's search text from its bytes, for
	// messages whose text was never indexed (a crash between commit and
	// indexing). Nil: such messages are indexed only when re-appended.
	ExtractText func(ctx context.Context, r io.ReaderAt, size int64) (string, error)
	// SearchTextLimit caps the indexed text per message (default 256 KiB).
	SearchTextLimit int
}

// DefaultCatchupInterval is the periodic catch-up of watched accounts.
const DefaultCatchupInterval = 30 * time.Second

// DefaultSearchTextLimit caps indexed text per message.
const DefaultSearchTextLimit = 256 << 10
