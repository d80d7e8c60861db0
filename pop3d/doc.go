// Package pop3d is the POP3 front end: RFC 1939 (USER/PASS, STAT, LIST,
// RETR, DELE, NOOP, RSET, QUIT, TOP, UIDL), RFC 2449 CAPA with response
// codes, RFC 2595 STLS, RFC 5034 AUTH (PLAIN, LOGIN), on a plain listener
// with STLS (Serve) and on an implicit-TLS one (ServeTLS).
//
// The maildrop is the account's INBOX as listed at login. Sizes are the
// exact octets RETR sends before byte-stuffing, per-entry prefix included
// (storage.Message.Size). UIDLs are "<uidvalidity>.<uid>", or the UIDL a
// message was imported with, so they are stable across sessions and nodes
// and never reused. Credentials are accepted only under TLS (or from
// loopback when Config.AllowInsecureAuth is set); every login goes
// through auth.Directory.Authenticate, which applies the shared
// failed-login limiter.
//
// Invariants:
//   - Deletions take effect only at QUIT in the UPDATE state (RFC 1939 §6),
//     through storage.Discard, the expunge path IMAP shares (trashcan
//     policy included). A dropped connection, an idle timeout, a shutdown
//     or a lost lease deletes nothing.
//   - One session per maildrop, across nodes: a lease row named
//     "pop3:<account id>" is taken at login in one short store transaction
//     and refreshed every LeaseRefresh; a second login gets
//     "-ERR [IN-USE]". No session-long database lock is held. When a
//     refresh finds the lease gone the session ends without UPDATE, and
//     QUIT re-confirms the lease before deleting.
//   - No store transaction is held while writing to a client: each store
//     call is one short call (OpenMessage returns a reader; the blob is
//     read in chunks while writing). TOP reads only the header and the
//     requested body lines.
//   - Client input is bounded: a command line is at most MaxLine octets,
//     memory per connection is a few fixed buffers, repeated bad commands
//     or failed logins close the connection, and bytes pipelined after
//     STLS close it (CVE-2011-0411 class).
//   - A panic in a connection is recovered at the connection's root,
//     logged and counted (Server.Panics); it never takes the server down.
package pop3d
