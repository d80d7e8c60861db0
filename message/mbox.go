package message

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"time"

	"tidings/storage"
)

// mboxHeaderMax is how much of a message's header ReadMbox buffers to find
// Status and X-Status; the rest of the message is streamed.
const mboxHeaderMax = 1 << 20

// MboxInfo describes one message of an mbox file.
type MboxInfo struct {
	// Offset is the offset of the message's From_ line in the file, for
	// progress reports.
	Offset int64
	// Date is the date of the From_ line, zero if it cannot be parsed.
	Date time.Time
	// Flags come from the Status and X-Status fields that mail readers
	// write into mbox files.
	Flags storage.Flags
}

// ReadMbox calls fn for each message of the mbox file read from r, in
// order. It accepts mboxrd and mboxo (and so mboxcl files whose bodies
// contain no From_ lines): a message starts at a line beginning "From " that
// is the first line of the file or follows a blank line; that blank line is
// the separator, not part of the message. One level of ">" quoting is
// removed from lines matching ">+From " (mboxrd; for mboxo this unquotes
// ">From " as well, the best guess). Line endings become CRLF.
//
// msg is valid only during fn and is streamed: fn may stop reading early;
// the rest of the message is skipped. An error from fn stops the reading and
// is returned.
func ReadMbox(r io.Reader, fn func(msg io.Reader, info MboxInfo) error) error {
	s := &mboxScanner{br: bufio.NewReaderSize(r, 64<<10), atStart: true}
	// The file must start with a From_ line; blank lines before it are
	// tolerated.
	for {
		b, start, off, err := s.read()
		if len(b) == 0 {
			if err != nil && err != io.EOF {
				return fmt.Errorf("read mbox: %w", err)
			}
			return nil // empty file
		}
		if start && isBlankLine(b) {
			continue
		}
		if !start || !bytes.HasPrefix(b, []byte("From ")) {
			return fmt.Errorf("read mbox: file does not start with a From_ line: %w", storage.ErrInvalid)
		}
		s.setNext(b, off, err)
		break
	}
	for s.haveNext {
		info := MboxInfo{Offset: s.nextOff, Date: fromLineDate(s.next)}
		complete := bytes.HasSuffix(s.next, []byte("\n"))
		s.haveNext = false
		for !complete && s.nextErr == nil {
			// The rest of an over-long From_ line.
			b, _, _, err := s.read()
			complete = len(b) == 0 || err != nil || b[len(b)-1] == '\n'
		}
		m := &mboxMsg{s: s}
		hdr := m.header()
		info.Flags = statusFlags(hdr)
		if err := fn(io.MultiReader(bytes.NewReader(hdr), m), info); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, m); err != nil {
			return fmt.Errorf("read mbox: %w", err)
		}
		if s.err != nil {
			return fmt.Errorf("read mbox: %w", s.err)
		}
	}
	return nil
}

// mboxScanner reads an mbox file in line chunks: whole lines, or pieces of
// lines longer than the buffer.
type mboxScanner struct {
	br      *bufio.Reader
	off     int64
	atStart bool // the next chunk starts a line
	eof     bool
	err     error // a read error other than io.EOF

	// The From_ line that starts the next message.
	haveNext bool
	next     []byte
	nextOff  int64
	nextErr  error
}

// read returns the next chunk, whether it starts a line, and its offset.
// The chunk is valid until the next read.
func (s *mboxScanner) read() (b []byte, start bool, off int64, err error) {
	if s.eof {
		return nil, false, s.off, io.EOF
	}
	start, off = s.atStart, s.off
	b, err = s.br.ReadSlice('\n')
	s.off += int64(len(b))
	s.atStart = err != bufio.ErrBufferFull
	if err == bufio.ErrBufferFull {
		err = nil
	}
	if err != nil {
		s.eof = true
		if err != io.EOF {
			s.err = err
		}
	}
	return b, start, off, err
}

func (s *mboxScanner) setNext(b []byte, off int64, err error) {
	s.haveNext = true
	s.next = append(s.next[:0], b...)
	s.nextOff = off
	s.nextErr = err
}

// mboxMsg is the reader of one message's lines, converted.
type mboxMsg struct {
	s     *mboxScanner
	buf   []byte
	out   []byte
	blank bool // a blank line is held back until we know it is not the separator
	done  bool
	cr    bool // the last byte emitted was CR
}

func (m *mboxMsg) Read(p []byte) (int, error) {
	for len(m.out) == 0 {
		m.out = m.buf[:0]
		if !m.fill() {
			if m.s.err != nil {
				return 0, m.s.err
			}
			return 0, io.EOF
		}
		m.buf = m.out[:0]
	}
	n := copy(p, m.out)
	m.out = m.out[n:]
	return n, nil
}

// header reads the message up to its blank line (or mboxHeaderMax bytes)
// and returns those bytes, converted.
func (m *mboxMsg) header() []byte {
	var hdr []byte
	for len(hdr) < mboxHeaderMax {
		m.out = m.buf[:0]
		if !m.fill() {
			break
		}
		from := max(len(hdr)-3, 0)
		hdr = append(hdr, m.out...)
		m.buf = m.out[:0]
		m.out = nil
		if bytes.HasPrefix(hdr, []byte("\r\n")) || bytes.Contains(hdr[from:], []byte("\r\n\r\n")) {
			break
		}
	}
	return hdr
}

// fill appends the next converted line (or piece of one) of the message to
// m.out; it returns false at the end of the message.
func (m *mboxMsg) fill() bool {
	for !m.done {
		b, start, off, err := m.s.read()
		if len(b) == 0 {
			// End of file: a held blank line was the final separator.
			m.done = true
			return false
		}
		if start && m.blank {
			if bytes.HasPrefix(b, []byte("From ")) {
				m.s.setNext(b, off, err)
				m.done = true
				return false
			}
			m.out = append(m.out, '\r', '\n')
			m.blank = false
		}
		if start && isBlankLine(b) {
			m.blank = true
			m.cr = false
			continue
		}
		if start && isQuotedFrom(b) {
			b = b[1:]
		}
		m.out = appendCRLF(m.out, b, &m.cr)
		return true
	}
	return false
}

func isBlankLine(b []byte) bool {
	return len(b) == 1 && b[0] == '\n' || len(b) == 2 && b[0] == '\r' && b[1] == '\n'
}

// isQuotedFrom matches ">+From ".
func isQuotedFrom(b []byte) bool {
	i := 0
	for i < len(b) && b[i] == '>' {
		i++
	}
	return i > 0 && bytes.HasPrefix(b[i:], []byte("From "))
}

// fromLineDate parses the date of a From_ line: "From sender date".
func fromLineDate(b []byte) time.Time {
	l := bytes.TrimSpace(bytes.TrimPrefix(b, []byte("From ")))
	i := bytes.IndexAny(l, " \t")
	if i < 0 {
		return time.Time{}
	}
	return ParseDate(string(l[i+1:]))
}

// statusFlags reads the Status and X-Status fields of a header: R Seen,
// A Answered, F Flagged, D Deleted, T Draft (the letters of mutt, Pine and
// Thunderbird; O "old" has no IMAP equivalent).
func statusFlags(hdr []byte) storage.Flags {
	var f storage.Flags
	for len(hdr) > 0 {
		l := hdr
		if i := bytes.IndexByte(hdr, '\n'); i >= 0 {
			l, hdr = hdr[:i], hdr[i+1:]
		} else {
			hdr = nil
		}
		l = bytes.TrimRight(l, "\r")
		if len(l) == 0 {
			break
		}
		name, val, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if !bytes.EqualFold(name, []byte("Status")) && !bytes.EqualFold(name, []byte("X-Status")) {
			continue
		}
		for _, c := range bytes.TrimSpace(val) {
			switch c {
			case 'R':
				f.Seen = true
			case 'A':
				f.Answered = true
			case 'F':
				f.Flagged = true
			case 'D':
				f.Deleted = true
			case 'T':
				f.Draft = true
			}
		}
	}
	return f
}
