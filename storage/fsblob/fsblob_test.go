package fsblob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"tidings/storage"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return s
}

// tmpEmpty fails the test when Put left a temporary file behind.
func tmpEmpty(t *testing.T, s *Store) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Dir(), "tmp"))
	if err != nil {
		t.Fatalf("ReadDir(tmp) = %v", err)
	}
	if len(ents) != 0 {
		t.Errorf("tmp holds %d files after Put; want none", len(ents))
	}
}

func TestPutOpen(t *testing.T) {
	ctx := context.Background()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"small", []byte("Subject: hi\r\n\r\nhello\r\n")},
		{"large", big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			h := sum(tt.data)
			if err := s.Put(ctx, h, int64(len(tt.data)), bytes.NewReader(tt.data)); err != nil {
				t.Fatalf("Put(%q) = %v; want nil", h, err)
			}
			want := filepath.Join(s.Dir(), h[:2], h[2:4], h)
			if _, err := os.Stat(want); err != nil {
				t.Errorf("Stat(%q) = %v; want the fanned-out file", want, err)
			}
			ok, err := s.Exists(ctx, h)
			if err != nil || !ok {
				t.Errorf("Exists(%q) = %v, %v; want true, nil", h, ok, err)
			}
			r, err := s.Open(ctx, h)
			if err != nil {
				t.Fatalf("Open(%q) = %v", h, err)
			}
			defer r.Close()
			if r.Size() != int64(len(tt.data)) {
				t.Errorf("Size() = %d; want %d", r.Size(), len(tt.data))
			}
			got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
			if err != nil || !bytes.Equal(got, tt.data) {
				t.Errorf("read back %d bytes, %v; want %d bytes equal to the input", len(got), err, len(tt.data))
			}
			if len(tt.data) > 10 {
				p := make([]byte, 5)
				off := int64(len(tt.data) / 2)
				if _, err := r.ReadAt(p, off); err != nil || !bytes.Equal(p, tt.data[off:off+5]) {
					t.Errorf("ReadAt(5, %d) = %q, %v; want %q", off, p, err, tt.data[off:off+5])
				}
			}
			// Storing again is harmless, even from a reader that fails.
			if err := s.Put(ctx, h, int64(len(tt.data)), iotest.ErrReader(errors.New("unused"))); err != nil {
				t.Errorf("second Put(%q) = %v; want nil", h, err)
			}
			tmpEmpty(t, s)
		})
	}
}

func TestPutRejects(t *testing.T) {
	ctx := context.Background()
	data := []byte("From: a@example.org\r\n\r\nbody\r\n")
	h := sum(data)
	tests := []struct {
		name string
		hash string
		size int64
		r    io.Reader
		want error
	}{
		{"corrupted", h, int64(len(data)), bytes.NewReader(append([]byte("X"), data[1:]...)), storage.ErrInvalid},
		{"short", h, int64(len(data)), bytes.NewReader(data[:len(data)-3]), storage.ErrInvalid},
		{"long", h, int64(len(data)), bytes.NewReader(append(data, 'x')), storage.ErrInvalid},
		{"size too small", h, int64(len(data) - 1), bytes.NewReader(data), storage.ErrInvalid},
		{"read error", h, int64(len(data)), io.MultiReader(bytes.NewReader(data[:4]), iotest.ErrReader(io.ErrUnexpectedEOF)), io.ErrUnexpectedEOF},
		{"bad hash", "../../etc/passwd", 3, strings.NewReader("abc"), storage.ErrInvalid},
		{"upper-case hash", strings.ToUpper(h), int64(len(data)), bytes.NewReader(data), storage.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			err := s.Put(ctx, tt.hash, tt.size, tt.r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Put(%q) = %v; want %v", tt.hash, err, tt.want)
			}
			if validHash(tt.hash) == nil {
				if ok, err := s.Exists(ctx, tt.hash); ok || err != nil {
					t.Errorf("Exists(%q) after failed Put = %v, %v; want false, nil", tt.hash, ok, err)
				}
			}
			tmpEmpty(t, s)
		})
	}
}

func TestPutCanceled(t *testing.T) {
	s := newStore(t)
	data := []byte("hello")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(ctx, sum(data), 5, bytes.NewReader(data)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put(canceled) = %v; want %v", err, context.Canceled)
	}
	tmpEmpty(t, s)
}

func TestMissingAndDelete(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := []byte("bye")
	h := sum(data)
	if _, err := s.Open(ctx, h); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Open(missing) = %v; want %v", err, storage.ErrNotFound)
	}
	if err := s.Delete(ctx, h); err != nil {
		t.Errorf("Delete(missing) = %v; want nil", err)
	}
	if err := s.Put(ctx, h, 3, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put = %v", err)
	}
	if err := s.Delete(ctx, h); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if ok, err := s.Exists(ctx, h); ok || err != nil {
		t.Errorf("Exists after Delete = %v, %v; want false, nil", ok, err)
	}
	if _, err := s.Open(ctx, h); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Open after Delete = %v; want %v", err, storage.ErrNotFound)
	}
	for _, bad := range []string{"", "zz", strings.Repeat("g", 64)} {
		if err := s.Delete(ctx, bad); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("Delete(%q) = %v; want %v", bad, err, storage.ErrInvalid)
		}
	}
}

// Concurrent writers of one hash all succeed and leave one complete file.
func TestConcurrentPut(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	data := bytes.Repeat([]byte("x"), 300<<10)
	h := sum(data)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- s.Put(ctx, h, int64(len(data)), bytes.NewReader(data)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Put = %v; want nil", err)
		}
	}
	got, err := os.ReadFile(s.Path(h))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("file after concurrent Put: %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
	tmpEmpty(t, s)
}

func TestNewRemovesStaleTemp(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(dir); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "tmp", "put-old")
	fresh := filepath.Join(dir, "tmp", "put-fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * staleTemp)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := New(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stat(stale temp) = %v; want not exist", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("Stat(fresh temp) = %v; want it kept", err)
	}
}
