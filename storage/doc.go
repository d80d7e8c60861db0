// Package storage is the mailbox store contract: the domain types (accounts,
// mailboxes, messages, UIDs, MODSEQs, flags, blobs, change hints) and the Store
// interface that the drivers storage/postgres and storage/sqlite implement.
// storage/storetest is its executable specification; both drivers run it.
//
// Invariants every driver keeps (see shared/DESIGN.md §Storage):
//
//   - UID and MODSEQ are allocated by updating the mailbox's counter row inside
//     the writing transaction, never from a SEQUENCE, so values become visible
//     in allocation order and ChangesSince(n) is always complete.
//   - Every mutation of a message (insert, flag or keyword change, expunge)
//     bumps the mailbox's HIGHESTMODSEQ and stamps the row (or its tombstone).
//     Mailbox create/rename/delete/subscribe bump the account's counter.
//   - Hints are published only after commit; they are hints, the store is the
//     truth.
//   - Message bytes are written to the BlobStore (durably) before the short
//     metadata transaction; no transaction is ever open while reading from a
//     client.
//   - Lock order inside a transaction: accounts (by id), then mailboxes (by
//     id), then blobs. The few hot counter statements are the last of each
//     transaction that has them.
//   - Text is folded in Go (Fold, FoldAddress) and compared as bytes in SQL.
//
// Decisions not spelled out in DESIGN.md:
//
//   - The mailbox hierarchy separator is '/'. Names are stored as UTF-8 (NFC);
//     IMAP's modified UTF-7 is the front end's business.
//   - Both drivers share one SQL implementation (storage/sqlstore) with small
//     dialect hooks; each driver owns its migrations, its connection set-up,
//     its change listener and its durability check. SQL still lives only
//     below storage/.
//   - Message analysis records are stored as versioned JSON beside the row.
package storage
