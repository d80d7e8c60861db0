// Package delivery routes accepted mail and delivers it: to local
// mailboxes in one store transaction, and to other hosts through the
// durable outbound queue (DESIGN.md §Mail flow, §Scale-out).
//
// Inbound half (local.go, route.go, envelope.go): recipient routing at RCPT
// time and local delivery of an accepted message — per-recipient mailbox
// entries plus queued outbound copies, all in one storage.Queue.Submit.
//
//   - Local.Route decides at RCPT (auth.Directory.Resolve): unknown,
//     malformed and relay-trick addresses, domains not served here and
//     over-quota mailboxes are errors then, so nothing accepted bounces
//     later. A recipient is over quota only when every mailbox it reaches
//     is full; a group with one full member still takes the mail, and that
//     member's copy becomes a local-delivery queue item.
//   - Local.Deliver writes one entry per distinct mailbox (an account
//     reached through two aliases gets one copy) with its own prefix:
//     Return-Path, Delivered-To, X-Original-To when an alias, group or
//     catch-all led there, then the fields common to every copy (Received,
//     Authentication-Results, submission's added Date/Message-ID). Alias
//     targets outside our domains are forwards with an SRS sender; remote
//     recipients of submission are grouped by domain, signed with DKIM for
//     the From: domain; relayed (backup MX) domains keep the sender and go
//     to their relay host. Everything is one Submit: 250 only after it
//     commits; a store failure wraps storage.ErrUnavailable (451 4.3.0).
//   - Local.Owns is the sender-ownership rule of submission: the
//     account's own address, a subaddress of it, or an alias whose SendAs
//     lists the account.
//
// Outbound half (queue.go, remote.go, dsn.go, dkim.go, srs.go, mx.go):
//
//   - Runner claims due queued messages by lease (storage.Queue.Claim, one
//     short transaction), delivers each outside any transaction, and records
//     the outcome in another short one (storage.Queue.Record). No store
//     transaction or pooled connection is held during network I/O; the
//     message body is read chunk by chunk while sending. Any number of
//     Runners on any number of nodes share one queue without sending a
//     message twice; a Runner that dies loses its leases when they expire.
//   - One queued message is one destination: all its recipients travel in
//     one SMTP transaction. Direct delivery looks up MX hosts by preference
//     (A/AAAA of the domain when there is no MX; a null MX or a missing
//     domain fails at once), tries each address in turn and upgrades with
//     opportunistic STARTTLS (any certificate). A smarthost gets STARTTLS
//     (verified), implicit TLS or plaintext, and optional AUTH PLAIN.
//   - 5xx is final; 4xx and connection failures retry with backoff until
//     the give-up time (default 5 days), when the recipient fails with
//     4.4.7. Every final failure gets exactly one DSN (RFC 3464), from the
//     null sender, honouring RFC 3461 NOTIFY, RET, ENVID and ORCPT; a
//     message from the null sender is never bounced. A deferred recipient
//     gets one delay warning after DelayWarning (default 4h) when NOTIFY
//     asks for DELAY or is absent. A DSN to a local sender is delivered
//     straight into the store; otherwise it is queued like any mail.
//   - A DSN is queued before the outcome that marks it sent is recorded;
//     a crash between the two can repeat a DSN, never lose one.
//   - Outbound bytes are CRLF-clean: every lone CR and lone LF becomes
//     CRLF before go-smtp's client writes them (its dot-writer passes a
//     lone CR through), so we never relay an SMTP smuggling payload.
//     SMTPUTF8 mail to a peer without SMTPUTF8 fails with 5.6.7 (no
//     downgrade); an 8-bit body to a peer without 8BITMIME is re-encoded
//     as quoted-printable (see toQuotedPrintable for the limits).
//   - Signer signs with the DKIM keys in the store (storage.Keys), so every
//     node signs alike; SRS rewrites forwarded envelope senders (SRS0, with
//     an HMAC from a store-held secret) and reverses them for bounces.
//   - Log lines: one delivered/deferred/bounced line per recipient, with
//     the queue id.
package delivery
