package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"tidings/auth"
	"tidings/config"
	"tidings/message"
	"tidings/storage"
	"tidings/storage/fsblob"
	"tidings/storage/postgres"
	"tidings/storage/sqlite"
)

// loadConfig reads --config, or makes the local-mode configuration; --data
// overrides data_dir either way.
func loadConfig(o *options) (*config.Config, error) {
	if o.config == "" {
		return config.Local(o.data)
	}
	cfg, err := config.Load(o.config)
	if err != nil {
		return nil, err
	}
	if o.data != "" {
		if err := cfg.SetDataDir(o.data); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// env is what an admin command works with.
type env struct {
	cfg   *config.Config
	log   *slog.Logger
	store storage.Store
	dir   *auth.Directory
}

func (e *env) Close() error { return e.store.Close() }

// open loads the configuration and opens the store as it is (no
// migration: only serve and migrate change the schema). Admin commands log
// only warnings, to stderr, so their output stays their answer.
func (c *cli) open(ctx context.Context, o *options) (*env, error) {
	cfg, err := loadConfig(o)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := openStore(ctx, cfg, log, false)
	if err != nil {
		return nil, err
	}
	return &env{cfg: cfg, log: log, store: st, dir: auth.New(st, authConfig(cfg), log)}, nil
}

// authConfig maps the [auth] keys onto auth.Config.
func authConfig(cfg *config.Config) auth.Config {
	sep := cfg.Auth.SubaddressSeparator
	if sep == "" {
		sep = auth.NoSubaddress
	}
	return auth.Config{
		SubaddressSeparator: sep,
		HashWorkers:         cfg.Auth.HashWorkers,
		FailWindow:          cfg.Auth.FailWindow,
		MaxFailuresIP:       cfg.Auth.MaxFailuresIP,
		MaxFailuresAccount:  cfg.Auth.MaxFailuresAccount,
	}
}

// storeOptions wires the store to the blob store, the logger and the
// message package's text extraction.
func storeOptions(cfg *config.Config, log *slog.Logger) (storage.Options, error) {
	opts := storage.Options{
		Logger:                log,
		AllowUnsafeDurability: cfg.AllowUnsafeDurability,
		ExtractText: func(ctx context.Context, r io.ReaderAt, size int64) (string, error) {
			return message.SearchText(r, size, storage.DefaultSearchTextLimit)
		},
	}
	if cfg.Blobs.Store == config.BlobsFilesystem {
		b, err := fsblob.New(cfg.Blobs.Dir)
		if err != nil {
			return opts, fmt.Errorf("blobs.dir %s: %w", cfg.Blobs.Dir, err)
		}
		opts.Blobs = b
	}
	return opts, nil
}

// openStore opens the configured store, migrating it first when migrate
// is set. Without migrate a missing SQLite file is reported instead of
// being created, so a typo in --data does not leave an empty database
// behind.
func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger, migrate bool) (storage.Store, error) {
	if cfg.Driver() == "postgres" {
		if migrate {
			if err := postgres.Migrate(ctx, cfg.Database, log); err != nil {
				return nil, schemaHint(err)
			}
		}
		opts, err := storeOptions(cfg, log)
		if err != nil {
			return nil, err
		}
		st, err := postgres.Open(ctx, cfg.Database, opts)
		if err != nil {
			return nil, schemaHint(err)
		}
		return st, nil
	}
	path := cfg.SQLitePath()
	if migrate {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data_dir: %w", err)
		}
		if err := sqlite.Migrate(ctx, path, log); err != nil {
			return nil, schemaHint(err)
		}
	} else if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no database at %s; start the server once (tidings serve) or run: tidings migrate", path)
	}
	opts, err := storeOptions(cfg, log)
	if err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, path, opts)
	if err != nil {
		return nil, schemaHint(err)
	}
	return st, nil
}

// schemaHint tells the operator what to do about the errors Open can
// return, once, at the end of the driver's line.
func schemaHint(err error) error {
	switch {
	case errors.Is(err, storage.ErrUnsafe):
		return fmt.Errorf("%w (fix the database settings, or set allow_unsafe_durability = true to accept losing acknowledged mail on a crash)", err)
	case errors.Is(err, storage.ErrSchema):
		return fmt.Errorf("%w (run: tidings migrate, or upgrade tidings)", err)
	}
	return err
}

// closeWithin closes the store but gives up waiting after d, so a stuck
// database cannot hold shutdown forever.
func closeWithin(st storage.Store, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- st.Close() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("store did not close within %v", d)
	}
}
