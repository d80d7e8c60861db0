package smtpd

import (
	"bytes"
	"io"
	"strings"
)

// maxFieldBuffer bounds one header field held for inspection; a longer
// field is passed through uninspected (it cannot be one we remove: those
// are short) and ends inspection of the header.
const maxFieldBuffer = 64 << 10

// filter sits between go-smtp's DATA reader and the spool. In one pass it
//
//   - refuses any CR or LF that is not part of a CRLF (SMTP smuggling,
//     CVE-2023-51764 family): after the first one, Write fails with
//     errBareLine and nothing more is spooled;
//   - in the top-level header, removes Return-Path (DESIGN.md §Mail flow:
//     the sender-supplied one goes) and Authentication-Results fields that
//     carry our authserv-id (RFC 8601 §5: a forged result must not
//     survive);
//   - counts Received fields (loop detection) and notes Date, Message-ID
//     and From for submission.
type filter struct {
	w      io.Writer
	servID string

	prevCR bool
	bad    bool

	inHeader bool
	field    []byte // current field with its continuation lines
	line     []byte // current line being assembled
	passing  bool   // header inspection gave up: pass through

	received   int
	hasDate    bool
	hasMsgID   bool
	from       []string
	headerSize int64
}

type bareLineError struct{}

func (bareLineError) Error() string { return "bare CR or LF in message" }

var errBareLine error = bareLineError{}

func newFilter(w io.Writer, servID string) *filter {
	return &filter{w: w, servID: servID, inHeader: true}
}

func (f *filter) Write(p []byte) (int, error) {
	if f.bad {
		return 0, errBareLine
	}
	for _, b := range p {
		if f.prevCR != (b == '\n') {
			f.bad = true
			return 0, errBareLine
		}
		f.prevCR = b == '\r'
	}
	if !f.inHeader {
		if _, err := f.w.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	for i := 0; i < len(p); i++ {
		if !f.inHeader {
			if _, err := f.w.Write(p[i:]); err != nil {
				return 0, err
			}
			break
		}
		b := p[i]
		f.line = append(f.line, b)
		if b != '\n' {
			if len(f.line)+len(f.field) > maxFieldBuffer {
				if err := f.giveUp(); err != nil {
					return 0, err
				}
			}
			continue
		}
		if err := f.endLine(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// giveUp writes what is held and stops inspecting the header.
func (f *filter) giveUp() error {
	if err := f.flushField(); err != nil {
		return err
	}
	_, err := f.w.Write(f.line)
	f.line = nil
	f.inHeader = false
	return err
}

// endLine handles one complete header line (ending in CRLF).
func (f *filter) endLine() error {
	line := f.line
	f.line = nil
	f.headerSize += int64(len(line))
	switch {
	case len(line) == 2: // the empty line: end of header
		if err := f.flushField(); err != nil {
			return err
		}
		f.inHeader = false
		_, err := f.w.Write(line)
		return err
	case (line[0] == ' ' || line[0] == '\t') && f.field != nil:
		f.field = append(f.field, line...) // continuation (RFC 5322 §2.2.3)
		return nil
	}
	if err := f.flushField(); err != nil {
		return err
	}
	if bytes.IndexByte(line, ':') < 0 {
		// Not a field: the header has ended without its blank line (a
		// body-only message); the rest is body.
		f.inHeader = false
		_, err := f.w.Write(line)
		return err
	}
	f.field = line
	return nil
}

// flushField decides about the held field and writes it unless dropped.
func (f *filter) flushField() error {
	fld := f.field
	f.field = nil
	if fld == nil {
		return nil
	}
	name, value, _ := bytes.Cut(fld, []byte(":"))
	n := strings.ToLower(strings.TrimSpace(string(name)))
	switch n {
	case "return-path":
		return nil
	case "authentication-results":
		if strings.EqualFold(authServID(string(value)), f.servID) {
			return nil
		}
	case "received":
		f.received++
	case "date":
		f.hasDate = true
	case "message-id":
		f.hasMsgID = true
	case "from":
		f.from = append(f.from, unfold(string(value)))
	}
	_, err := f.w.Write(fld)
	return err
}

// finish flushes a header that never ended (a message of header only).
func (f *filter) finish() error {
	if f.bad || f.prevCR {
		return errBareLine
	}
	if f.inHeader && len(f.line) > 0 {
		// A last line without CRLF (go-smtp's DATA always ends in one;
		// this keeps the filter's promise for any input).
		line := f.line
		f.line = nil
		switch {
		case (line[0] == ' ' || line[0] == '\t') && f.field != nil:
			f.field = append(f.field, line...)
		case bytes.IndexByte(line, ':') >= 0:
			if err := f.flushField(); err != nil {
				return err
			}
			f.field = line
		default:
			if err := f.flushField(); err != nil {
				return err
			}
			_, err := f.w.Write(line)
			return err
		}
	}
	if f.inHeader {
		return f.flushField()
	}
	return nil
}

// authServID returns the authserv-id of an Authentication-Results value
// (RFC 8601 §2.2: the first token, before any version and ';'), with
// comments removed.
func authServID(v string) string {
	v = unfold(v)
	v = stripComments(v)
	id, _, _ := strings.Cut(v, ";")
	fields := strings.Fields(id)
	if len(fields) == 0 {
		return ""
	}
	return fields[0]
}

func unfold(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "")
	return strings.TrimSpace(s)
}

// stripComments removes RFC 5322 §3.2.2 comments (nested, with quoted
// pairs).
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}
