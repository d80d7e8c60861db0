// Package imapd is the IMAP front end (IMAP4rev1 and IMAP4rev2, RFC 3501 /
// RFC 9051) on go-imap v2's imapserver. It turns sessions into calls on
// storage.Store and auth.Directory and owns nothing persistent.
//
// Invariants:
//
//   - One owner per selected mailbox per node (owner.go) is the only feeder
//     of that mailbox's go-imap MailboxTracker. It listens to store hints
//     (Store.Subscribe), reads ChangesSince from the MODSEQ it last applied
//     and queues expunges, EXISTS and FLAGS changes batch after batch, in
//     MODSEQ order. A tracker panic (inconsistent input) or a history that
//     can no longer be followed (ErrResyncRequired, mailbox deleted) ends
//     that mailbox's sessions with BYE.
//   - Poll and Idle never query the store: they write what the owner
//     queued. A session's own EXPUNGE or MOVE is not reported by the
//     session: it asks the owner to catch up before returning, and the
//     library's Poll writes the queued EXPUNGEs before the tagged OK. So
//     every session, the originating one included, sees exactly one EXPUNGE
//     per removed message.
//   - Never write to a client while holding a mailbox lock (owner.mu); BYEs
//     from the owner are written from their own goroutines.
//   - Sequence numbers are translated with the session's tracker
//     (EncodeSeqNum) under owner.mu, against the owner's UID list. The owner
//     queues one EXISTS per new message because the tracker's EncodeSeqNum
//     handles only increments of one.
//   - LOGIN and AUTHENTICATE PLAIN only under TLS (LOGINDISABLED otherwise)
//     unless Config.AllowInsecureAuth. Our connection wrapper sits beneath
//     TLS because go-imap detects TLS by a *tls.Conn type assertion.
//   - APPEND spools the literal (storage.Spool) and analyses it before the
//     one short store transaction; no transaction is open while reading
//     from a client. AppendLimit is 0 before login.
//   - ENVELOPE and BODYSTRUCTURE come from the analysis stored at write
//     time, never from re-parsing; ENVELOPE has its own address parser
//     (group syntax kept, a bad address dropped alone). BODY[section] and
//     BINARY read only the byte ranges they need; the per-entry prefix is
//     part of the top-level header.
//   - Limits: an absolute pre-auth deadline, per-IP and per-account-per-IP
//     connection caps; command lines (50 KiB) and non-APPEND literals
//     (4 KiB) are bounded by the library.
//   - Panics the library recovers are counted (Server.Panics) through the
//     Logger adapter, as are those of our own goroutines.
//
// Deviations:
//
//   - CONDSTORE is not offered: go-imap beta.8 does not parse UNCHANGEDSINCE.
//   - "*" in a sequence set names the highest message still present in the
//     client's view (the tracker does not expose the client's count).
//   - EXPUNGE on a mailbox opened with EXAMINE does nothing and succeeds,
//     because the library routes CLOSE through the same call.
//   - With the trashcan policy, the \Deleted messages are found by a search
//     and then moved; a flag cleared by another session in between does
//     not save a message.
package imapd
