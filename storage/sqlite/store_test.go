package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"tidings/storage"
	"tidings/storage/sqlite"
	"tidings/storage/storetest"
)

// harness gives the conformance suite a fresh, migrated database file per
// case and a new *sqlite.Store (its own writer connection and reader pool)
// per open, as two processes sharing the file would have.
func harness() storetest.Harness {
	newDB := func(t testing.TB, blobs storage.BlobStore) func(testing.TB) storage.Store {
		t.Helper()
		path := filepath.Join(t.TempDir(), "tidings.db")
		if err := sqlite.Migrate(context.Background(), path, nil); err != nil {
			t.Fatalf("sqlite.Migrate(%q) = %v", path, err)
		}
		return func(t testing.TB) storage.Store {
			t.Helper()
			s, err := sqlite.Open(context.Background(), path, storage.Options{Blobs: blobs})
			if err != nil {
				t.Fatalf("sqlite.Open(%q) = %v", path, err)
			}
			return s
		}
	}
	return storetest.Harness{
		Name:         "sqlite",
		New:          func(t testing.TB) func(testing.TB) storage.Store { return newDB(t, nil) },
		NewWithBlobs: newDB,
	}
}

func TestConformance(t *testing.T) { storetest.Run(t, harness()) }

func BenchmarkStore(b *testing.B) { storetest.Bench(b, harness()) }
