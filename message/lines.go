package message

import (
	"bufio"
	"io"
)

// lineBufSize is the bufio buffer of the line reader. Lines longer than this
// are still handled, in chunks; only their first bytes are ever kept.
const lineBufSize = 64 << 10

// line is one line of the message as the line reader saw it.
type line struct {
	start int64  // offset of the first byte
	n     int64  // length including the terminator
	eol   int    // terminator length: 2 (CRLF), 1 (LF) or 0 (end of input)
	text  []byte // content without terminator, cut to the kept length; valid until the next read
	cut   bool   // text is shorter than the content
}

func (l *line) textLen() int64 { return l.n - int64(l.eol) }

// lineReader reads lines from the message and tracks absolute offsets. It
// keeps at most the requested number of bytes of any line, so a message that
// is one 20 MB line costs no more memory than the bufio buffer.
type lineReader struct {
	br      *bufio.Reader
	off     int64 // offset of the next unread byte
	eols    int64 // number of terminated lines read so far
	prev    line  // the line before cur (text not kept)
	cur     line
	scratch []byte
	err     error // first read error other than io.EOF
}

func newLineReader(r io.ReaderAt, size int64) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), lineBufSize)}
}

// next reads the next line, keeping at most keep bytes of its content. It
// returns false at the end of input or on a read error (then lr.err is set).
func (lr *lineReader) next(keep int) bool {
	lr.prev = line{start: lr.cur.start, n: lr.cur.n, eol: lr.cur.eol}
	lr.cur = line{start: lr.off}
	if lr.err != nil {
		return false
	}
	b, err := lr.br.ReadSlice('\n')
	if err == nil || err == io.EOF {
		// The common case: the whole line is in the buffer; no copy.
		if len(b) == 0 {
			return false
		}
		// text aliases the bufio buffer, which is fine until the next read.
		lr.finish(b, int64(len(b)), keep)
		return true
	}
	if err != bufio.ErrBufferFull {
		lr.err = err
		return false
	}
	// A long line: keep its head, count the rest.
	lr.scratch = append(lr.scratch[:0], b[:min(len(b), keep+2)]...)
	total := int64(len(b))
	var last2 [2]byte
	last2[0], last2[1] = tail2(b)
	for {
		b, err = lr.br.ReadSlice('\n')
		total += int64(len(b))
		if room := keep + 2 - len(lr.scratch); room > 0 {
			lr.scratch = append(lr.scratch, b[:min(len(b), room)]...)
		}
		if len(b) == 1 {
			last2[0], last2[1] = last2[1], b[0]
		} else if len(b) >= 2 {
			last2[0], last2[1] = b[len(b)-2], b[len(b)-1]
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && err != io.EOF {
			lr.err = err
		}
		break
	}
	eol := 0
	if last2[1] == '\n' {
		eol = 1
		if last2[0] == '\r' {
			eol = 2
		}
	}
	lr.setLine(lr.scratch, total, eol, keep)
	return true
}

func tail2(b []byte) (byte, byte) {
	switch len(b) {
	case 0:
		return 0, 0
	case 1:
		return 0, b[0]
	}
	return b[len(b)-2], b[len(b)-1]
}

// finish sets cur for a line held entirely in b.
func (lr *lineReader) finish(b []byte, n int64, keep int) {
	eol := 0
	if b[len(b)-1] == '\n' {
		eol = 1
		if len(b) >= 2 && b[len(b)-2] == '\r' {
			eol = 2
		}
	}
	lr.setLine(b, n, eol, keep)
}

// setLine sets cur from the kept head of a line of n bytes.
func (lr *lineReader) setLine(head []byte, n int64, eol, keep int) {
	l := &lr.cur
	l.n, l.eol = n, eol
	tl := n - int64(eol)
	k := min(int64(keep), tl, int64(len(head)))
	l.text = head[:k]
	l.cut = k < tl
	lr.off += n
	if eol > 0 {
		lr.eols++
	}
}
