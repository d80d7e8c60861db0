package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"testing"
)

func TestSpool(t *testing.T) {
	tests := []struct {
		name     string
		size     int
		inMemory bool
	}{
		{"empty", 0, true},
		{"small", 1000, true},
		{"at the memory limit", SpoolMemory, true},
		{"one past", SpoolMemory + 1, false},
		{"large", 3 * SpoolMemory, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bytes.Repeat([]byte("0123456789abcdef"), tt.size/16+1)[:tt.size]
			s := NewSpool(t.TempDir(), 0)
			defer s.Close()
			// Write in uneven pieces, as a client's reads arrive.
			if _, err := s.ReadFrom(io.LimitReader(bytes.NewReader(data), int64(tt.size))); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if got, want := s.Hash(), hex.EncodeToString(sum[:]); got != want {
				t.Errorf("Hash() = %s; want %s", got, want)
			}
			if s.Size() != int64(tt.size) || s.InMemory() != tt.inMemory {
				t.Errorf("Size, InMemory = %d, %v; want %d, %v", s.Size(), s.InMemory(), tt.size, tt.inMemory)
			}
			r, err := s.Open()
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("content differs (err %v, %d bytes; want %d)", err, len(got), len(data))
			}
		})
	}
}

func TestSpoolLimitAndCleanup(t *testing.T) {
	dir := t.TempDir()
	s := NewSpool(dir, SpoolMemory+10)
	if _, err := s.Write(make([]byte, SpoolMemory+5)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(make([]byte, 6)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Write past limit = %v; want ErrTooLarge", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Close left %d files in the spool directory", len(ents))
	}
}
