// Package storetest is the executable specification of storage.Store: one
// conformance suite (Run) and one set of benchmarks (Bench) that every
// driver runs against a real database through a Harness.
//
// Invariants of the suite itself:
//
//   - Every case starts from a fresh, migrated, empty database (Harness.New)
//     and closes every store it opens with t.Cleanup, before the database is
//     dropped.
//   - The suite speaks only the storage contract: it never reaches SQL, so a
//     case that needs a drifted counter or a hand-made row is out of scope
//     here and belongs in the driver's own tests.
//   - Cases assert outcomes, never durations. Where a case must not hang on
//     a broken driver (a stalled writer, a hint that never comes) it waits
//     on channels with a generous bound and fails naming what did not
//     happen.
//   - Analysis records are built here by hand (see newMessage), so the suite
//     does not depend on package message.
//   - A front-end bug caused by the store gets a case here (DESIGN.md
//     §Storage).
package storetest
