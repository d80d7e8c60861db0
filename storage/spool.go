package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
)

// SpoolMemory is how much of a message a Spool keeps in memory before it
// moves to a temporary file (DESIGN.md §Writing a message).
const SpoolMemory = 256 << 10

// Spool collects a message from a client before any store transaction runs:
// in memory up to SpoolMemory, then in a temporary file, hashing as it goes.
// Write the bytes, call Finish, then hand the Spool to Append or Deliver
// (it is a BlobSource). Close removes the temporary file.
type Spool struct {
	dir   string
	limit int64 // 0 = no limit
	buf   bytes.Buffer
	file  *os.File
	h     hash.Hash
	size  int64
	sum   string
	done  bool
}

// ErrTooLarge is returned by Spool.Write past the spool's limit.
var ErrTooLarge = errors.New("message too large")

// NewSpool returns a spool whose temporary file (if any) goes in dir ("" =
// os.TempDir) and which refuses more than limit bytes (0 = unlimited).
func NewSpool(dir string, limit int64) *Spool {
	return &Spool{dir: dir, limit: limit, h: sha256.New()}
}

// Write appends p.
func (s *Spool) Write(p []byte) (int, error) {
	if s.done {
		return 0, errors.New("spool: write after Finish")
	}
	if s.limit > 0 && s.size+int64(len(p)) > s.limit {
		return 0, ErrTooLarge
	}
	s.h.Write(p)
	s.size += int64(len(p))
	if s.file == nil && s.buf.Len()+len(p) <= SpoolMemory {
		return s.buf.Write(p)
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "tidings-spool-*")
		if err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.file = f
		if _, err := f.Write(s.buf.Bytes()); err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.buf = bytes.Buffer{}
	}
	if _, err := s.file.Write(p); err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	return len(p), nil
}

// ReadFrom copies r into the spool.
func (s *Spool) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	b := make([]byte, 32<<10)
	for {
		m, err := r.Read(b)
		if m > 0 {
			if _, werr := s.Write(b[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Finish ends writing and fixes the hash.
func (s *Spool) Finish() {
	if !s.done {
		s.done = true
		s.sum = hex.EncodeToString(s.h.Sum(nil))
	}
}

// Hash returns the hex SHA-256 of the content (after Finish).
func (s *Spool) Hash() string { s.Finish(); return s.sum }

// Size returns the number of bytes written.
func (s *Spool) Size() int64 { return s.size }

// InMemory reports whether the content never left memory.
func (s *Spool) InMemory() bool { return s.file == nil }

// Open returns a reader over the content; each call returns an independent
// reader.
func (s *Spool) Open() (ReaderAtCloser, error) {
	s.Finish()
	if s.file == nil {
		return memReader{bytes.NewReader(s.buf.Bytes())}, nil
	}
	f, err := os.Open(s.file.Name())
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return fileReader{f, s.size}, nil
}

// Close discards the content.
func (s *Spool) Close() error {
	if s.file != nil {
		name := s.file.Name()
		s.file.Close()
		s.file = nil
		return os.Remove(name)
	}
	s.buf = bytes.Buffer{}
	return nil
}

// BytesSource is a BlobSource over a byte slice (tests, small messages).
type BytesSource []byte

func (b BytesSource) Hash() string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
func (b BytesSource) Size() int64                   { return int64(len(b)) }
func (b BytesSource) Open() (ReaderAtCloser, error) { return memReader{bytes.NewReader(b)}, nil }

type memReader struct{ *bytes.Reader }

func (memReader) Close() error { return nil }

type fileReader struct {
	*os.File
	size int64
}

func (f fileReader) Size() int64 { return f.size }

var (
	_ BlobSource = (*Spool)(nil)
	_ BlobSource = BytesSource(nil)
)
