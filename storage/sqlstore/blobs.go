package sqlstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"tidings/storage"
)

// ChunkSize is the size of one in-database blob chunk.
const ChunkSize = 256 << 10

// ChunkBlobs is the in-database storage.BlobStore: a blob is its chunk rows
// (hash, seq 0..n-1) plus a completion marker row (seq -1) holding the size,
// written last, so a blob is present only when complete.
//
// Put writes each chunk in its own short transaction and reads the source
// between transactions: a slow source never holds the (SQLite: only) writer
// connection.
type ChunkBlobs struct {
	d Dialect
	w *sql.DB
	r *sql.DB
}

// NewChunkBlobs returns the in-database BlobStore writing through w and
// reading through r.
func NewChunkBlobs(d Dialect, w, r *sql.DB) *ChunkBlobs { return &ChunkBlobs{d: d, w: w, r: r} }

var _ storage.BlobStore = (*ChunkBlobs)(nil)

func (b *ChunkBlobs) exec(ctx context.Context, q string, args ...any) error {
	_, err := b.w.ExecContext(ctx, b.d.Rebind(q), args...)
	return err
}

// Put implements storage.BlobStore. The bytes are checked against hash and
// size; on a mismatch nothing is left behind.
func (b *ChunkBlobs) Put(ctx context.Context, hash string, size int64, r io.Reader) error {
	if ok, err := b.Exists(ctx, hash); err != nil || ok {
		return err
	}
	h := sha256.New()
	buf := make([]byte, ChunkSize)
	var total int64
	for seq := int64(0); ; seq++ {
		n, err := io.ReadFull(r, buf)
		last := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !last {
			b.Delete(context.WithoutCancel(ctx), hash)
			return fmt.Errorf("read blob %s: %w", hash, err)
		}
		h.Write(buf[:n])
		total += int64(n)
		if last && (total != size || hex.EncodeToString(h.Sum(nil)) != hash) {
			b.Delete(context.WithoutCancel(ctx), hash)
			return fmt.Errorf("blob %s: content does not match its hash or size (%d bytes, want %d): %w", hash, total, size, storage.ErrInvalid)
		}
		// One short transaction per chunk; the completion marker goes with
		// the last one.
		tx, err := b.w.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
		}
		if n > 0 {
			_, err = tx.ExecContext(ctx, b.d.Rebind(`INSERT INTO blob_chunks (hash, seq, data) VALUES (?, ?, ?)
				ON CONFLICT (hash, seq) DO UPDATE SET data = excluded.data`), hash, seq, buf[:n])
		}
		if err == nil && last {
			_, err = tx.ExecContext(ctx, b.d.Rebind(`INSERT INTO blob_chunks (hash, seq, data) VALUES (?, -1, ?) ON CONFLICT (hash, seq) DO NOTHING`),
				hash, []byte(strconv.FormatInt(size, 10)))
		}
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
		if err != nil {
			return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
		}
		if last {
			return nil
		}
	}
}

// putTx writes a blob of at most one chunk inside tx.
func (b *ChunkBlobs) putTx(ctx context.Context, tx *Tx, hash string, data []byte) error {
	if len(data) > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO blob_chunks (hash, seq, data) VALUES (?, 0, ?) ON CONFLICT (hash, seq) DO NOTHING`, hash, data); err != nil {
			return err
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO blob_chunks (hash, seq, data) VALUES (?, -1, ?) ON CONFLICT (hash, seq) DO NOTHING`,
		hash, []byte(strconv.FormatInt(int64(len(data)), 10)))
	return err
}

// readSmall reads a source of at most ChunkSize bytes and checks it.
func readSmall(src storage.BlobSource, hash string, size int64) ([]byte, error) {
	r, err := src.Open()
	if err != nil {
		return nil, fmt.Errorf("open message: %w", err)
	}
	defer r.Close()
	data := make([]byte, size)
	if n, err := r.ReadAt(data, 0); int64(n) != size && err != nil {
		return nil, fmt.Errorf("read message: %w", err)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != hash {
		return nil, fmt.Errorf("message does not match its hash %s: %w", hash, storage.ErrInvalid)
	}
	return data, nil
}

func (b *ChunkBlobs) size(ctx context.Context, hash string) (int64, error) {
	var m []byte
	err := b.r.QueryRowContext(ctx, b.d.Rebind(`SELECT data FROM blob_chunks WHERE hash = ? AND seq = -1`), hash).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("blob %s: %w", hash, storage.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
	}
	n, err := strconv.ParseInt(string(m), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("blob %s marker %q: %w", hash, m, storage.ErrUnavailable)
	}
	return n, nil
}

// Exists implements storage.BlobStore.
func (b *ChunkBlobs) Exists(ctx context.Context, hash string) (bool, error) {
	_, err := b.size(ctx, hash)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Open implements storage.BlobStore. Reads fetch whole chunks and keep the
// last one, so sequential reads cost one query per chunk.
func (b *ChunkBlobs) Open(ctx context.Context, hash string) (storage.ReaderAtCloser, error) {
	n, err := b.size(ctx, hash)
	if err != nil {
		return nil, err
	}
	return &chunkReader{b: b, ctx: ctx, hash: hash, size: n, seq: -1}, nil
}

// openKnown opens a blob whose size the caller read from a row that
// references it: such a blob is complete (it was registered before the
// referencing transaction), so the size query of Open is not needed.
func (b *ChunkBlobs) openKnown(ctx context.Context, hash string, size int64) *chunkReader {
	return &chunkReader{b: b, ctx: ctx, hash: hash, size: size, seq: -1}
}

// Delete implements storage.BlobStore.
func (b *ChunkBlobs) Delete(ctx context.Context, hash string) error {
	if err := b.exec(ctx, `DELETE FROM blob_chunks WHERE hash = ?`, hash); err != nil {
		return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
	}
	return nil
}

type chunkReader struct {
	b    *ChunkBlobs
	ctx  context.Context
	hash string
	size int64
	mu   sync.Mutex
	seq  int64
	data []byte
}

func (c *chunkReader) Size() int64  { return c.size }
func (c *chunkReader) Close() error { return nil }

func (c *chunkReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= c.size {
		return 0, io.EOF
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for n < len(p) && off < c.size {
		seq := off / ChunkSize
		if seq != c.seq {
			var data []byte
			err := c.b.r.QueryRowContext(c.ctx, c.b.d.Rebind(`SELECT data FROM blob_chunks WHERE hash = ? AND seq = ?`), c.hash, seq).Scan(&data)
			if errors.Is(err, sql.ErrNoRows) {
				return n, fmt.Errorf("blob %s chunk %d: %w", c.hash, seq, storage.ErrNotFound)
			}
			if err != nil {
				return n, fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
			}
			c.seq, c.data = seq, data
		}
		k := copy(p[n:], c.data[off-seq*ChunkSize:])
		if k == 0 {
			return n, io.ErrUnexpectedEOF
		}
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// SweepBlobs implements storage.Store: each blob unreferenced for at least
// grace is re-checked under its row lock, its bytes deleted, then its row.
func (s *Store) SweepBlobs(ctx context.Context, grace time.Duration) (int, error) {
	cutoff := time.Now().Add(-grace).UnixMicro()
	rows, err := s.query(ctx, `SELECT hash FROM blobs WHERE refcount <= 0 AND zero_since <= ? ORDER BY hash LIMIT 10000`, cutoff)
	if err != nil {
		return 0, s.dbErr(err)
	}
	var hashes []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return 0, s.dbErr(err)
		}
		hashes = append(hashes, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, s.dbErr(err)
	}
	_, inDB := s.blobs.(*ChunkBlobs)
	n := 0
	for _, h := range hashes {
		deleted := false
		err := s.withTx(ctx, func(tx *Tx) error {
			deleted = false
			var ref, since int64
			err := tx.QueryRow(ctx, `SELECT refcount, zero_since FROM blobs WHERE hash = ?`+s.d.ForUpdate(), h).Scan(&ref, &since)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			if ref > 0 || since > cutoff {
				return nil // referenced again, or registered by a pending append
			}
			if inDB {
				// Same transaction: the SQLite writer is this connection.
				if _, err := tx.Exec(ctx, `DELETE FROM blob_chunks WHERE hash = ?`, h); err != nil {
					return err
				}
			} else if err := s.blobs.Delete(ctx, h); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM blobs WHERE hash = ?`, h); err != nil {
				return err
			}
			deleted = true
			return nil
		})
		if err != nil {
			return n, err
		}
		if deleted {
			n++
		}
	}
	return n, nil
}
