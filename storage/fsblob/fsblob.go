package fsblob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"tidings/storage"
)

// staleTemp is the age after which New removes a temporary file: far longer
// than any Put, so it never removes a live writer's file.
const staleTemp = 24 * time.Hour

// Store is a BlobStore in a directory. It is safe for concurrent use, also
// by several processes sharing the directory.
type Store struct {
	dir string
	tmp string
}

var _ storage.BlobStore = (*Store)(nil)

// New opens (creating if needed) a blob directory.
func New(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fsblob: %w: %w", storage.ErrInvalid, err)
	}
	s := &Store{dir: abs, tmp: filepath.Join(abs, "tmp")}
	if err := os.MkdirAll(s.tmp, 0o750); err != nil {
		return nil, fmt.Errorf("fsblob: %w: %w", storage.ErrUnavailable, err)
	}
	s.removeStale()
	return s, nil
}

// Dir returns the directory the blobs live in.
func (s *Store) Dir() string { return s.dir }

func (s *Store) removeStale() {
	ents, err := os.ReadDir(s.tmp)
	if err != nil {
		return
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
			os.Remove(filepath.Join(s.tmp, e.Name()))
		}
	}
}

// validHash accepts exactly 64 lower-case hex digits, so a hash can never
// name a path outside the store.
func validHash(h string) error {
	if len(h) != sha256.Size*2 {
		return fmt.Errorf("fsblob: hash %q: %w", h, storage.ErrInvalid)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("fsblob: hash %q: %w", h, storage.ErrInvalid)
		}
	}
	return nil
}

// Path returns the file name of a blob (valid hashes only).
func (s *Store) Path(hash string) string {
	return filepath.Join(s.dir, hash[0:2], hash[2:4], hash)
}

// Put stores r under hash. It reads exactly size bytes, checking their
// SHA-256 against hash; a short, long or corrupted input is an error wrapping
// storage.ErrInvalid and leaves nothing behind.
func (s *Store) Put(ctx context.Context, hash string, size int64, r io.Reader) (err error) {
	if err := validHash(hash); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("fsblob: put %s: negative size: %w", hash, storage.ErrInvalid)
	}
	final := s.Path(hash)
	if info, err := os.Stat(final); err == nil && info.Mode().IsRegular() && info.Size() == size {
		// Content addressed: the bytes are already there and durable.
		return nil
	}
	f, err := os.CreateTemp(s.tmp, "put-*")
	if err != nil {
		return unavailable("put", hash, err)
	}
	tmpName := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmpName)
		}
	}()
	h := sha256.New()
	// Read one byte more than promised so a long input is noticed.
	n, err := io.Copy(io.MultiWriter(f, h), &ctxReader{ctx: ctx, r: io.LimitReader(r, size+1)})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("fsblob: put %s: %w", hash, ctx.Err())
		}
		return fmt.Errorf("fsblob: put %s: read: %w", hash, err)
	}
	if n != size {
		return fmt.Errorf("fsblob: put %s: got %d bytes, want %d: %w", hash, n, size, storage.ErrInvalid)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hash {
		return fmt.Errorf("fsblob: put %s: content hashes to %s: %w", hash, got, storage.ErrInvalid)
	}
	if err := f.Sync(); err != nil {
		return unavailable("sync", hash, err)
	}
	if err := f.Close(); err != nil {
		return unavailable("close", hash, err)
	}
	if err := s.mkdirs(hash); err != nil {
		return err
	}
	// rename(2) is atomic: a reader sees no file or the complete one.
	if err := os.Rename(tmpName, final); err != nil {
		return unavailable("rename", hash, err)
	}
	// The rename is durable only once the directory entry is.
	if err := syncDir(filepath.Dir(final)); err != nil {
		return unavailable("sync dir", hash, err)
	}
	return nil
}

// mkdirs creates the two fan-out levels of hash, fsyncing the parent of each
// directory it creates so the new entry survives a crash.
func (s *Store) mkdirs(hash string) error {
	parent := s.dir
	for _, part := range []string{hash[0:2], hash[2:4]} {
		d := filepath.Join(parent, part)
		err := os.Mkdir(d, 0o750)
		switch {
		case err == nil:
			if err := syncDir(parent); err != nil {
				return unavailable("sync dir", hash, err)
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return unavailable("mkdir", hash, err)
		}
		parent = d
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Open returns a reader over the blob, or an error wrapping storage.ErrNotFound.
func (s *Store) Open(ctx context.Context, hash string) (storage.ReaderAtCloser, error) {
	if err := validHash(hash); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(s.Path(hash))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("fsblob: blob %s: %w", hash, storage.ErrNotFound)
	}
	if err != nil {
		return nil, unavailable("open", hash, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, unavailable("stat", hash, err)
	}
	return &file{File: f, size: info.Size()}, nil
}

// Exists reports whether the blob is present.
func (s *Store) Exists(ctx context.Context, hash string) (bool, error) {
	if err := validHash(hash); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	_, err := os.Stat(s.Path(hash))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, unavailable("stat", hash, err)
	}
}

// Delete removes the blob; a missing blob is not an error. Empty fan-out
// directories are left in place: removing them would race with a Put.
func (s *Store) Delete(ctx context.Context, hash string) error {
	if err := validHash(hash); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := s.Path(hash)
	err := os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return unavailable("delete", hash, err)
	}
	// Make the removal durable so a crash cannot resurrect a blob whose
	// metadata is already gone.
	if err := syncDir(filepath.Dir(p)); err != nil {
		return unavailable("sync dir", hash, err)
	}
	return nil
}

func unavailable(op, hash string, err error) error {
	return fmt.Errorf("fsblob: %s %s: %w: %w", op, hash, storage.ErrUnavailable, err)
}

// file is an os.File that knows its size.
type file struct {
	*os.File
	size int64
}

func (f *file) Size() int64 { return f.size }

// ctxReader stops a long copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
