package message

import "io"

// ToCRLF returns a reader that turns every bare LF of r into CRLF, the line
// ending of stored messages (RFC 5322 §2.1). CRLF pairs and lone CRs are
// left alone.
func ToCRLF(r io.Reader) io.Reader {
	return &crlfReader{r: r, in: make([]byte, 16<<10)}
}

type crlfReader struct {
	r      io.Reader
	in     []byte
	buf    []byte
	out    []byte
	prevCR bool
	err    error
}

func (c *crlfReader) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		n, err := c.r.Read(c.in)
		c.err = err
		c.buf = appendCRLF(c.buf[:0], c.in[:n], &c.prevCR)
		c.out = c.buf
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// appendCRLF appends b to dst with bare LFs turned into CRLF. prevCR
// carries "the last byte was CR" across calls.
func appendCRLF(dst, b []byte, prevCR *bool) []byte {
	for _, c := range b {
		if c == '\n' && !*prevCR {
			dst = append(dst, '\r')
		}
		dst = append(dst, c)
		*prevCR = c == '\r'
	}
	return dst
}
