// Package smtpd is the SMTP front end on github.com/emersion/go-smtp: the
// MX (inbound mail from the internet, no AUTH) and submission (RFC 6409,
// authenticated clients; STARTTLS and implicit TLS, RFC 8314). Routing and
// delivery live in package delivery; identity in auth.
//
// Invariants:
//
//   - Recipients are decided at RCPT (delivery.Local.Route): unknown →
//     550 5.1.1, over quota → 452 4.2.2, a domain not served here from an
//     unauthenticated client → 554 5.7.1, a relayed domain only for its
//     listed recipients; so nothing accepted bounces later.
//   - Addresses are parsed by auth.ParseAddress, which splits at the last
//     '@' and refuses the %-hack, bang paths and quoted local parts that
//     hide an '@'.
//   - No store transaction is open while the client sends: DATA streams
//     through a filter into a storage.Spool (memory, then a temp file),
//     is analysed, and only then one Submit runs. 250 ("Ok: queued as
//     <id>") is sent only after the commit; a store failure is 451 4.3.0.
//   - Every inbound message gets our Received and Authentication-Results
//     (SPF, DKIM, DMARC) in the per-entry prefix; fields in the message
//     bearing our authserv-id, and any Return-Path, are removed on the way
//     into the spool. DMARC p=reject failures are refused with 550 5.7.1
//     unless Config.IgnoreDMARCReject.
//   - Submission: AUTH PLAIN and LOGIN only under TLS (unless
//     AllowInsecureAuth), through auth.Directory.Authenticate and its
//     shared limiter; envelope sender and every From: address must be
//     owned by the account (delivery.Local.Owns) else 553 5.7.1; a missing
//     Date or Message-ID is added in the prefix, never by rewriting the
//     blob; per-account hourly limits on messages and recipients (451
//     4.7.0) through storage.Counter.
//   - DNS for SPF/DKIM/DMARC goes through Config.Resolver only.
//
// Known go-smtp v0.26.0 behaviour we rely on or work around (written down
// as the issue asks):
//
//   - Only <CRLF>.<CRLF> ends DATA. go-smtp's data reader passes bare CR
//     and bare LF through; our filter refuses any CR or LF that is not
//     part of a CRLF with 550 5.5.2 (SMTP smuggling, CVE-2023-51764
//     family), so "\n.\n", "\n.\r\n", "\r.\r", "\r.\r\n" never become a
//     second message. BDAT chunks go through the same filter.
//   - go-smtp silently drops ".\r" at the start of a line when no LF
//     follows ("\r\n.\rX" is read as "\r\nX"), so "\r\n.\r" smuggling
//     cannot end the message either; the CR vanishes before our filter.
//   - go-smtp accepts a bare LF as the end of a command line (it reads
//     commands with net/textproto). That does not allow smuggling: in
//     DATA only CRLF.CRLF ends the message.
//   - go-smtp unquotes quoted local parts ("a@b"@c arrives as a@b@c, which
//     our parser refuses) and strips source routes (<@a:b@c> arrives as
//     b@c) before the backend sees the address. Stripping is what RFC
//     5321 §3.6.1 and Appendix C ask (ignore the route); routing then
//     depends on the final domain only, so no relaying happens.
//   - STARTTLS: go-smtp drops its read buffer after the handshake, but we
//     refuse a client that pipelined plaintext after STARTTLS outright
//     (CVE-2011-0411): conn fails every later read and the session refuses
//     what is still buffered. After TLS, go-smtp makes a new session, so
//     HELO, AUTH and the transaction reset (RFC 3207 §4.2).
//   - go-smtp's ReadTimeout is set once per command line, so it bounds a
//     whole DATA; we set it long (1 h) and enforce a 5-minute idle limit
//     per read in conn.
//   - go-smtp recovers panics in command handlers itself and reports them
//     through ErrorLog; errorLog counts them (Server.Panics).
//   - go-smtp answers a nil Data with a fixed "OK: queued"; we return a
//     250 SMTPError to carry the queue id.
//   - The command limit counts the commands the session sees (EHLO, MAIL,
//     RCPT, RSET, AUTH, DATA/BDAT); NOOP, VRFY and HELP are answered by
//     go-smtp without reaching the session and are bounded only by the
//     idle and read timeouts.
package smtpd
