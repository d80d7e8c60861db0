// Package sqlite is the embedded storage driver: storage.Store on a SQLite
// database file through modernc.org/sqlite (pure Go), with the shared SQL of
// storage/sqlstore.
//
// Invariants:
//
//   - Every connection runs with journal_mode=WAL, synchronous=FULL,
//     foreign_keys=ON and a busy timeout, set through the DSN so that pooled
//     connections cannot miss them. Open refuses anything else (ErrUnsafe)
//     unless Options.AllowUnsafeDurability is set.
//   - One writer connection; write transactions begin IMMEDIATE, so a
//     writer never upgrades a read lock and never deadlocks. Readers use a
//     small pool and see one WAL snapshot per transaction.
//   - Another process (the admin CLI) may write to the same file. A
//     dedicated connection polls PRAGMA data_version every 200 ms; when it
//     changes, the store catches up on watched accounts and emits hints.
//   - Migrations are embedded, numbered, run only by Migrate, each in one
//     BEGIN EXCLUSIVE transaction. Open refuses a schema it does not know.
//   - Search text is in an FTS5 table with the trigram tokenizer; patterns
//     shorter than three characters are scanned within the mailbox.
package sqlite
