// Package postgres is the production storage driver: storage.Store on
// PostgreSQL through pgx/v5 (database/sql via pgx's stdlib, plus one raw
// connection for LISTEN), with the shared SQL of storage/sqlstore.
//
// Invariants:
//
//   - Transactions run at READ COMMITTED and take row locks in one order
//     (accounts by id, mailboxes by id, blobs by hash); serialization
//     failures (40001) and deadlocks (40P01) are retried by sqlstore. Reads
//     that must agree (a SELECT's counters and UID list) use one REPEATABLE
//     READ READ ONLY snapshot.
//   - Change hints go to other nodes with NOTIFY on the channel
//     tidings_changes (payload "account:mailbox:modseq"), sent after commit
//     from a background goroutine, coalesced — never inside a writing
//     transaction, which would serialise every commit. The LISTEN
//     connection catches up on watched accounts each time it (re)connects.
//   - Open refuses fsync=off or synchronous_commit=off (ErrUnsafe) unless
//     Options.AllowUnsafeDurability is set, and refuses a schema it does
//     not know (ErrSchema).
//   - Migrations are embedded, numbered, run only by Migrate under an
//     advisory lock, each in one transaction. The pg_trgm/btree_gin search
//     index is created after them when the extensions can be; without it
//     search scans, with a warning.
package postgres
