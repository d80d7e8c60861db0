// Package fsblob is the filesystem implementation of storage.BlobStore:
// message bytes in files named by their hex SHA-256, fanned out as
// <dir>/ab/cd/<hash> so no directory grows past a few thousand entries.
//
// Invariants:
//
//   - A file at its final name is complete, has the size and the SHA-256 its
//     name promises, and is durable: Put writes a temporary file in the same
//     filesystem, verifies hash and size while writing, fsyncs it, renames it
//     into place and fsyncs the directory (and any directory it had to
//     create) before it returns. A mismatch or any error leaves nothing
//     behind.
//   - Blobs are immutable; storing an existing hash again does nothing.
//   - Reference counts are not kept here; the metadata store decides when a
//     blob may go (storage.Store.SweepBlobs) and calls Delete.
//   - Temporary files live in <dir>/tmp; New removes those older than a day,
//     the leftovers of a crash (a live writer in another process is never
//     that old).
package fsblob
