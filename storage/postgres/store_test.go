package postgres_test

import (
	"context"
	"testing"

	"tidings/storage"
	"tidings/storage/postgres"
	"tidings/storage/postgres/pgtest"
	"tidings/storage/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// harness gives the conformance suite a fresh, migrated database per case
// and a new *postgres.Store (its own pool and listener) per open.
func harness() storetest.Harness {
	newDB := func(t testing.TB, blobs storage.BlobStore) func(testing.TB) storage.Store {
		t.Helper()
		url := pgtest.NewDatabase(t)
		if err := postgres.Migrate(context.Background(), url, nil); err != nil {
			t.Fatalf("postgres.Migrate = %v", err)
		}
		return func(t testing.TB) storage.Store {
			t.Helper()
			s, err := postgres.Open(context.Background(), url, storage.Options{Blobs: blobs})
			if err != nil {
				t.Fatalf("postgres.Open = %v", err)
			}
			return s
		}
	}
	return storetest.Harness{
		Name:         "postgres",
		New:          func(t testing.TB) func(testing.TB) storage.Store { return newDB(t, nil) },
		NewWithBlobs: newDB,
	}
}

func TestConformance(t *testing.T) { storetest.Run(t, harness()) }

func BenchmarkStore(b *testing.B) { storetest.Bench(b, harness()) }
