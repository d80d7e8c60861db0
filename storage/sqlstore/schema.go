package sqlstore

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"tidings/storage"
)

// Migration is one numbered schema step of a driver (DESIGN.md
// §Migrations): embedded SQL, run in its own transaction.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations reads dir of fsys ("NNNN_name.sql" files) in version
// order. Each driver embeds its own SQL; the reading is shared.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		n, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: bad name", e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{n, e.Name(), string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// CheckSchema says whether a binary knowing schema version known may open a
// database at version v whose oldest compatible binary is minc: additive
// migrations raise v but not minc, so older binaries keep working during a
// rolling upgrade; other CLI commands never migrate.
func CheckSchema(v, minc, known int) error {
	switch {
	case v == 0:
		return fmt.Errorf("database is not initialised: %w", storage.ErrSchema)
	case v < known:
		return fmt.Errorf("database schema version %d is older than this binary's %d: %w", v, known, storage.ErrSchema)
	case v > known && minc > known:
		return fmt.Errorf("database schema version %d needs a newer binary (this one knows %d): %w", v, known, storage.ErrSchema)
	}
	return nil
}
