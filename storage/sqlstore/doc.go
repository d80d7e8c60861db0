// Package sqlstore is the one SQL implementation of storage.Store, over
// database/sql, shared by storage/postgres and storage/sqlite. The drivers
// supply a Dialect (placeholders, row locks, error classes, the search-text
// table) and the connections; everything else — the schema's meaning, lock
// order, UID/MODSEQ allocation, quota, blob reference counts, hints — lives
// here once.
//
// Invariants (shared/DESIGN.md §Storage):
//
//   - UID and MODSEQ are allocated from the mailbox_counters row inside the
//     writing transaction: the row is locked first (SELECT ... FOR UPDATE on
//     PostgreSQL; SQLite has one writer), the new values are computed in Go
//     and written back as absolute values by the last statement of the
//     transaction. Values therefore become visible in allocation order.
//   - Lock order inside a transaction: account rows (account_usage,
//     accounts) by id, then mailbox counter rows by id, then blob rows by
//     hash. Serialization failures and deadlocks are retried by withTx.
//   - Message bytes are in the BlobStore before the metadata transaction,
//     and the blobs row is registered before the bytes are written, so the
//     sweeper never deletes bytes that a pending append will reference.
//   - Hints are published only after commit, coalesced, from a store
//     goroutine; subscriber callbacks never run under a lock or transaction.
//   - Text is folded in Go (storage.Fold) and compared as bytes in SQL.
//   - Search text is written by a background indexer after commit, never in
//     the append transaction.
//   - A binary built with the faulthooks tag can end the process right
//     before the COMMIT of a transaction that wrote a message or queue row
//     (fault_hooks.go), for the durability tests; the default build
//     compiles the hook away.
//
// The package imports no database driver.
package sqlstore
