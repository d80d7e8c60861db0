// Command tidings is the one Tidings binary: `tidings serve` runs the mail
// server, and the other subcommands administer it (domains, users, aliases,
// mailboxes, import, consistency check, migrations).
//
// The command is thin on purpose (shared/DESIGN.md §Top level): it parses
// flags, builds the parts from the configuration (package config), and runs
// them. Anything a front end will also need lives below, in config, auth or
// storage.
//
// Invariants:
//
//   - Only `serve` and `migrate` run migrations. Every other subcommand opens
//     the store as it is and refuses a schema it does not know, so it is safe
//     to run beside a running server (SQLite's WAL lets the two processes
//     share the file).
//   - Every mistake prints one line, "tidings: ...", and exits non-zero: 2
//     for a usage error (with a usage hint on a second line), 1 for an
//     operational one.
//   - `serve` refuses a database with unsafe durability settings unless
//     allow_unsafe_durability is set, and exits 0 after SIGINT or SIGTERM
//     once the listeners are closed and the store is closed (or its deadline
//     passed).
package main
