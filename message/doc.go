// Package message is the one MIME analysis package of Tidings: it reads a
// message once, when SMTP delivery, IMAP APPEND or an import writes it, and
// produces the storage-neutral storage.Analysis record (header length, raw
// envelope, part tree with byte offsets and line counts, message ids, thread
// id, RFC 5256 base subject, sent date, preview, attachment flag, folded
// search text). It also reads mbox files and Maildirs for import.
//
// Messages are untrusted input. The invariants:
//
//   - Analyze never panics and never fails on malformed input: it returns a
//     best-effort record. Its only errors are read errors of the ReaderAt.
//   - Memory is bounded independently of the message size: the message is
//     streamed through a bufio.Reader over an io.SectionReader, only the
//     first bytes of a body line are ever kept, only the header fields the
//     analysis uses are retained (at most MaxHeaderBytes per header block and
//     4×MaxHeaderBytes per message), and text extraction writes into a
//     buffer capped at SearchTextLimit.
//   - Caps (Options; DESIGN.md §Message analysis): MIME depth 50, 10,000
//     parts, 1 MiB per header block, 1,000 addresses per envelope address
//     field. Beyond a cap a container becomes an opaque leaf (Part.Opaque,
//     no children) or further parts are skipped, header fields are ignored,
//     address lists are cut, and Analysis.Truncated is set. Never an error.
//   - Offsets are absolute byte offsets into the message (also inside
//     embedded message/rfc822 parts), and for every part
//     0 ≤ HeaderStart ≤ BodyStart ≤ BodyEnd ≤ size, children within their
//     parent's body.
//
// Decisions:
//
//   - Following RFC 2046 §5.1.1 the CRLF before a delimiter line belongs to
//     the delimiter, so a part's body excludes it. Lines counts the lines of
//     [BodyStart, BodyEnd): terminators, plus one for a final unterminated
//     line.
//   - A multipart without a usable boundary is a text/plain leaf. A missing
//     or invalid Content-Type is text/plain; charset=us-ascii (RFC 2045
//     §5.2), or message/rfc822 inside multipart/digest (RFC 2046 §5.1.5).
//   - message/rfc822 and message/global bodies are parsed as embedded
//     messages only in an identity transfer encoding; an encoded one is a
//     leaf.
//   - Parameter values are UTF-8: RFC 2231 continuations and extended
//     values are decoded, and so are RFC 2047 encoded-words, which many
//     mailers put in filenames.
//   - An opaque part keeps its declared type (it may say multipart); readers
//     must render it as a single leaf (for IMAP BODYSTRUCTURE as
//     application/octet-stream).
//   - Search text collapses every run of whitespace and control characters
//     to one space, so phrases match across line breaks and no NUL reaches
//     a database.
package message
