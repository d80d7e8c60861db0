// Package drivertest gives front-end tests both storage drivers, so every
// store-backed test runs on SQLite and on PostgreSQL (through pgtest, which
// never skips). It exists once so the front ends' harnesses do not each
// carry their own copy of the driver table.
package drivertest

import (
	"context"
	"path/filepath"
	"testing"

	"tidings/storage"
	"tidings/storage/postgres"
	"tidings/storage/postgres/pgtest"
	"tidings/storage/sqlite"
)

// Driver makes fresh, migrated databases of one kind.
type Driver struct {
	Name string
	// NewDB makes a fresh migrated database and returns an opener for it;
	// each call of the opener is a separate Store, as a second node would
	// have. Stores are closed when the test that opened them ends.
	NewDB func(t testing.TB) func(t testing.TB) storage.Store
}

// Drivers returns SQLite and PostgreSQL.
func Drivers() []Driver {
	return []Driver{
		{Name: "sqlite", NewDB: func(t testing.TB) func(testing.TB) storage.Store {
			path := filepath.Join(t.TempDir(), "tidings.db")
			if err := sqlite.Migrate(context.Background(), path, nil); err != nil {
				t.Fatalf("sqlite.Migrate(%q) = %v", path, err)
			}
			return func(t testing.TB) storage.Store {
				s, err := sqlite.Open(context.Background(), path, storage.Options{})
				if err != nil {
					t.Fatalf("sqlite.Open(%q) = %v", path, err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
		}},
		{Name: "postgres", NewDB: func(t testing.TB) func(testing.TB) storage.Store {
			url := pgtest.NewDatabase(t)
			if err := postgres.Migrate(context.Background(), url, nil); err != nil {
				t.Fatalf("postgres.Migrate = %v", err)
			}
			return func(t testing.TB) storage.Store {
				s, err := postgres.Open(context.Background(), url, storage.Options{})
				if err != nil {
					t.Fatalf("postgres.Open = %v", err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
		}},
	}
}

// Each runs fn once per driver as a subtest.
func Each(t *testing.T, fn func(t *testing.T, d Driver)) {
	for _, d := range Drivers() {
		t.Run(d.Name, func(t *testing.T) { fn(t, d) })
	}
}
