package tidings_test

// This test keeps the dependency direction of shared/DESIGN.md §Shape true,
// in the manner of go/build's deps_test.go: dependencies flow downwards
// only, front ends never import each other, storage imports nothing of ours,
// and each wrapped library is imported by the one package that wraps it.

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "tidings"

// frontEnds are the protocol front ends; none may import another.
func frontEnds() []string {
	return []string{"tidings/smtpd", "tidings/imapd", "tidings/pop3d", "tidings/webmail"}
}

// under reports whether pkg is path or below it.
func under(pkg, path string) bool {
	return pkg == path || strings.HasPrefix(pkg, path+"/")
}

func underAny(pkg string, paths ...string) bool {
	for _, p := range paths {
		if under(pkg, p) {
			return true
		}
	}
	return false
}

func ours(imp string) bool { return under(imp, module) }

// depRule forbids an import. violates reports whether package pkg
// importing imp breaks the rule.
type depRule struct {
	name     string
	reason   string
	violates func(pkg, imp string) bool
}

func depRules() []depRule {
	fe := frontEnds()
	return []depRule{
		{
			name:   "front ends are independent",
			reason: "what two front ends share lives once below them (delivery, auth, storage), so a fix reaches every protocol",
			violates: func(pkg, imp string) bool {
				for _, f := range fe {
					if under(pkg, f) {
						return underAny(imp, fe...) && !under(imp, f)
					}
				}
				return false
			},
		},
		{
			name:   "storage imports nothing of ours",
			reason: "the store is the bottom layer; anything above it importing back would make a cycle of meaning even where Go allows it",
			violates: func(pkg, imp string) bool {
				return under(pkg, "tidings/storage") && ours(imp) && !under(imp, "tidings/storage")
			},
		},
		{
			name:   "pgx only in storage/postgres",
			reason: "SQL and the PostgreSQL driver stay behind the storage contract (CONVENTIONS.md §Shape of a package)",
			violates: func(pkg, imp string) bool {
				return under(imp, "github.com/jackc/pgx") && !under(pkg, "tidings/storage/postgres")
			},
		},
		{
			name:   "modernc sqlite only in storage/sqlite",
			reason: "SQL and the SQLite driver stay behind the storage contract (CONVENTIONS.md §Shape of a package)",
			violates: func(pkg, imp string) bool {
				return under(imp, "modernc.org/sqlite") && !under(pkg, "tidings/storage/sqlite")
			},
		},
		{
			name:   "lower layers do not import upper ones",
			reason: "dependencies flow downwards only: storage, auth, message and config sit below delivery, the front ends and the binary",
			violates: func(pkg, imp string) bool {
				return underAny(pkg, "tidings/storage", "tidings/auth", "tidings/message", "tidings/config") &&
					underAny(imp, append([]string{"tidings/delivery", "tidings/cmd"}, fe...)...)
			},
		},
		{
			name:   "auth is below delivery and the front ends",
			reason: "every front end asks auth the same question; auth calling up into one would make its answer depend on the protocol",
			violates: func(pkg, imp string) bool {
				return under(pkg, "tidings/auth") && underAny(imp, append([]string{"tidings/delivery"}, fe...)...)
			},
		},
		{
			name:   "message depends only on storage",
			reason: "message analysis is a pure function from bytes to storage.Analysis, used by every writer; it must not know who writes",
			violates: func(pkg, imp string) bool {
				return under(pkg, "tidings/message") && ours(imp) && !under(imp, "tidings/message") && !under(imp, "tidings/storage")
			},
		},
	}
}

// violations returns one line per broken rule for pkg's imports.
func violations(rules []depRule, pkg string, imports []string) []string {
	var out []string
	for _, imp := range imports {
		for _, r := range rules {
			if r.violates(pkg, imp) {
				out = append(out, pkg+" imports "+imp+": breaks \""+r.name+"\" ("+r.reason+")")
			}
		}
	}
	return out
}

// packageImports parses the non-test Go files of every package in the
// module and returns import path → imports.
func packageImports(t *testing.T, root string) map[string][]string {
	t.Helper()
	pkgs := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := module
		if rel != "." {
			pkg = module + "/" + filepath.ToSlash(rel)
		}
		if _, ok := pkgs[pkg]; !ok {
			pkgs[pkg] = nil
		}
		for _, s := range f.Imports {
			imp, err := strconv.Unquote(s.Path.Value)
			if err != nil {
				return err
			}
			pkgs[pkg] = append(pkgs[pkg], imp)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking the module: %v", err)
	}
	return pkgs
}

func TestDependencyDirection(t *testing.T) {
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	pkgs := packageImports(t, root)
	if _, ok := pkgs["tidings/storage"]; !ok {
		t.Fatalf("packageImports found no tidings/storage among %d packages; the walk is broken", len(pkgs))
	}
	names := make([]string, 0, len(pkgs))
	for p := range pkgs {
		names = append(names, p)
	}
	sort.Strings(names)
	rules := depRules()
	for _, pkg := range names {
		for _, v := range violations(rules, pkg, pkgs[pkg]) {
			t.Error(v)
		}
	}
}

// TestDepRules checks the rule table itself on synthetic imports, so a rule
// that can never fire does not pass silently.
func TestDepRules(t *testing.T) {
	tests := []struct {
		pkg, imp string
		rule     string // "" = allowed
	}{
		{"tidings/imapd", "tidings/smtpd", "front ends are independent"},
		{"tidings/webmail/dav", "tidings/pop3d", "front ends are independent"},
		{"tidings/imapd/internal/x", "tidings/imapd", ""},
		{"tidings/smtpd", "tidings/delivery", ""},
		{"tidings/storage", "tidings/auth", "storage imports nothing of ours"},
		{"tidings/storage/sqlite", "tidings/internal/x", "storage imports nothing of ours"},
		{"tidings/storage/postgres", "tidings/storage", ""},
		{"tidings/storage/postgres", "tidings/storage/sqlstore", ""},
		{"tidings/auth", "github.com/jackc/pgx/v5", "pgx only in storage/postgres"},
		{"tidings/storage/postgres", "github.com/jackc/pgx/v5/pgxpool", ""},
		{"tidings/storage/postgres/pgtest", "github.com/jackc/pgx/v5/stdlib", ""},
		{"tidings/cmd/tidings", "modernc.org/sqlite", "modernc sqlite only in storage/sqlite"},
		{"tidings/storage/sqlite", "modernc.org/sqlite", ""},
		{"tidings/config", "tidings/cmd/tidings", "lower layers do not import upper ones"},
		{"tidings/message", "tidings/delivery", "lower layers do not import upper ones"},
		{"tidings/auth", "tidings/smtpd", "auth is below delivery and the front ends"},
		{"tidings/auth", "tidings/storage", ""},
		{"tidings/message", "tidings/auth", "message depends only on storage"},
		{"tidings/message", "tidings/storage", ""},
		{"tidings/message", "github.com/emersion/go-message", ""},
		{"tidings/cmd/tidings", "tidings/smtpd", ""},
		{"tidings/delivery", "tidings/auth", ""},
	}
	rules := depRules()
	for _, tt := range tests {
		t.Run(tt.pkg+"->"+tt.imp, func(t *testing.T) {
			var broken []string
			for _, r := range rules {
				if r.violates(tt.pkg, tt.imp) {
					broken = append(broken, r.name)
				}
			}
			if tt.rule == "" {
				if len(broken) > 0 {
					t.Errorf("rules(%q imports %q) = %q; want allowed", tt.pkg, tt.imp, broken)
				}
				return
			}
			found := false
			for _, b := range broken {
				found = found || b == tt.rule
			}
			if !found {
				t.Errorf("rules(%q imports %q) = %q; want %q among them", tt.pkg, tt.imp, broken, tt.rule)
			}
			if v := violations(rules, tt.pkg, []string{tt.imp}); len(v) == 0 || !strings.Contains(v[0], tt.imp) {
				t.Errorf("violations(%q, [%q]) = %q; want a line naming the import", tt.pkg, tt.imp, v)
			}
		})
	}
}
