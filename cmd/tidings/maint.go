package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
)

func (c *cli) check(ctx context.Context, args []string) error {
	fs, o := newFlags("check")
	repair := fs.Bool("repair", false, "fix what drifted")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, 0); err != nil {
		return err
	}
	e, err := c.open(ctx, o)
	if err != nil {
		return err
	}
	defer e.Close()
	// The durability read-back first: an administrator checking the store
	// wants to know that an acknowledged message is on disk.
	if d, err := e.store.Durability(ctx); err == nil {
		keys := make([]string, 0, len(d.Settings))
		for k := range d.Settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, k+"="+d.Settings[k])
		}
		safe := "safe"
		if !d.Safe {
			safe = "UNSAFE"
		}
		fmt.Fprintf(c.stdout, "durability: %s %s (%s)\n", d.Driver, strings.Join(kv, " "), safe)
	}
	rep, err := e.store.Check(ctx, *repair)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	fmt.Fprintf(c.stdout, "mailbox counters drifted: %d\n", rep.MailboxCounters)
	fmt.Fprintf(c.stdout, "account quota usage drifted: %d\n", rep.AccountUsage)
	fmt.Fprintf(c.stdout, "blob reference counts drifted: %d\n", rep.BlobRefs)
	fmt.Fprintf(c.stdout, "messages with missing blobs: %d\n", rep.MissingBlobs)
	for _, d := range rep.Details {
		fmt.Fprintf(c.stdout, "  %s\n", d)
	}
	if rep.Clean() {
		fmt.Fprintln(c.stdout, "clean")
		return nil
	}
	if *repair {
		// Check again: what the repair could not fix (missing blobs) is
		// still drift, and says so with the exit status.
		again, err := e.store.Check(ctx, false)
		if err != nil {
			return fmt.Errorf("check after repair: %w", err)
		}
		if again.Clean() {
			fmt.Fprintln(c.stdout, "repaired")
			return nil
		}
		fmt.Fprintf(c.stdout, "drift remains after repair: %d mailbox counters, %d accounts, %d blob references, %d missing blobs\n",
			again.MailboxCounters, again.AccountUsage, again.BlobRefs, again.MissingBlobs)
		return exitError(1)
	}
	fmt.Fprintln(c.stdout, "drift found; fix it with: tidings check --repair")
	return exitError(1)
}

func (c *cli) migrate(ctx context.Context, args []string) error {
	fs, o := newFlags("migrate")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, 0); err != nil {
		return err
	}
	cfg, err := loadConfig(o)
	if err != nil {
		return err
	}
	// The drivers log each migration step at info level: those lines are
	// the progress of this command.
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log.Info("migrating", "driver", cfg.Driver(), "database", cfg.RedactedDatabase())
	st, err := openStore(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "database schema is up to date (%s, %s)\n", cfg.Driver(), cfg.RedactedDatabase())
	return nil
}

func (c *cli) version(ctx context.Context, args []string) error {
	fs, _ := newFlags("version")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, 0); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, versionString())
	return nil
}

// versionString reads the version from the build information, so there is
// no variable to set at link time.
func versionString() string {
	v, rev, dirty := "(devel)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " " + rev
		if dirty {
			v += "+dirty"
		}
	}
	return fmt.Sprintf("tidings %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
