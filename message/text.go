package message

import (
	"bufio"
	"encoding/base64"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"golang.org/x/net/html"

	"tidings/storage"
)

// PreviewLen is the length of Analysis.Preview in characters.
const PreviewLen = 256

// htmlMaxBuf bounds the HTML tokenizer's buffer; a longer single token ends
// the text of that part.
const htmlMaxBuf = 1 << 20

// textBuf collects text up to limit bytes, turning every run of whitespace
// and control characters into one space (so phrase searches match across
// line breaks, and no NUL reaches a database).
type textBuf struct {
	b     []byte
	limit int
	space bool // the last byte written is a space, or nothing was written
}

func newTextBuf(limit int) *textBuf { return &textBuf{limit: limit, space: true} }

func (t *textBuf) full() bool { return len(t.b) >= t.limit }

func (t *textBuf) Write(p []byte) (int, error) {
	for _, c := range p {
		if t.full() {
			return len(p), nil
		}
		if c <= ' ' || c == 0x7f {
			if !t.space {
				t.b = append(t.b, ' ')
				t.space = true
			}
			continue
		}
		t.b = append(t.b, c)
		t.space = false
	}
	return len(p), nil
}

func (t *textBuf) WriteString(s string) { t.Write([]byte(s)) }

// sep separates two pieces of text.
func (t *textBuf) sep() { t.Write([]byte{' '}) }

// String returns the text as valid UTF-8 without surrounding spaces.
func (t *textBuf) String() string {
	return strings.TrimSpace(strings.ToValidUTF8(string(t.b), "\uFFFD"))
}

// searchText builds Analysis.SearchText: decoded address and subject fields,
// then the text of every text/* part in tree order (embedded messages'
// fields where they occur), folded and capped at SearchTextLimit bytes.
func (p *parser) searchText(a *storage.Analysis) string {
	limit := p.opt.SearchTextLimit
	t := newTextBuf(limit)
	envText(t, &a.Envelope)
	walk(&a.Root, func(pt *storage.Part) {
		if t.full() {
			return
		}
		if pt.Message != nil {
			envText(t, &pt.Message.Envelope)
		}
		if pt.Type == "text" && !pt.Opaque {
			t.sep()
			p.partText(t, pt)
		}
	})
	return cutUTF8(storage.Fold(t.String()), limit)
}

func envText(t *textBuf, e *storage.RawEnvelope) {
	for _, v := range []string{e.Subject, e.From, e.To, e.Cc, e.Bcc, e.ReplyTo} {
		if v != "" {
			t.sep()
			t.WriteString(decodeHeader(v))
		}
	}
}

// cutUTF8 cuts s to at most n bytes on a rune boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// partText writes the decoded text of a text/* leaf to t: transfer
// decoding, charset conversion to UTF-8, HTML reduced to its text. Decoding
// is best effort: it stops quietly at the first error.
func (p *parser) partText(t *textBuf, pt *storage.Part) {
	r := p.decoded(pt)
	if pt.Subtype == "html" {
		htmlText(t, r)
		return
	}
	if p.buf == nil {
		p.buf = make([]byte, 8<<10)
	}
	for !t.full() {
		n, err := r.Read(p.buf)
		t.Write(p.buf[:n])
		if err != nil {
			return
		}
	}
}

// decoded returns a reader of the part's body with the transfer encoding
// and the charset undone.
func (p *parser) decoded(pt *storage.Part) io.Reader {
	var r io.Reader = io.NewSectionReader(p.ra, pt.BodyStart, pt.BodyEnd-pt.BodyStart)
	switch pt.Encoding {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &base64Filter{r: r})
	case "quoted-printable":
		r = newQPReader(r)
	}
	switch cs := strings.ToLower(strings.TrimSpace(pt.Params["charset"])); cs {
	case "", "us-ascii", "ascii", "utf-8", "utf8":
	default:
		if cr, err := charset.Reader(cs, r); err == nil {
			r = cr
		}
	}
	return r
}

// htmlText writes the text content of an HTML document, without script and
// style, with block elements separated by spaces.
func htmlText(t *textBuf, r io.Reader) {
	z := html.NewTokenizer(r)
	z.SetMaxBuf(htmlMaxBuf)
	skip := 0
	for !t.full() {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return
		case html.TextToken:
			if skip == 0 {
				t.Write(z.Text())
			}
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "script", "style":
				switch tt {
				case html.StartTagToken:
					skip++
				case html.EndTagToken:
					skip = max(skip-1, 0)
				}
			case "p", "br", "div", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6",
				"table", "blockquote", "hr", "title", "pre", "ul", "ol":
				t.sep()
			}
		}
	}
}

// preview returns up to PreviewLen characters of the first text/plain part
// that is not an attachment, or failing that of the first such text/html.
func (p *parser) preview(root *storage.Part) string {
	var plain, htm *storage.Part
	walk(root, func(pt *storage.Part) {
		if pt.Type != "text" || pt.Opaque || pt.Disposition == "attachment" {
			return
		}
		switch {
		case pt.Subtype == "plain" && plain == nil:
			plain = pt
		case pt.Subtype == "html" && htm == nil:
			htm = pt
		}
	})
	pt := plain
	if pt == nil {
		pt = htm
	}
	if pt == nil {
		return ""
	}
	t := newTextBuf(PreviewLen * utf8.UTFMax)
	p.partText(t, pt)
	s := t.String()
	if utf8.RuneCountInString(s) > PreviewLen {
		n := 0
		for i := range s {
			if n == PreviewLen {
				s = s[:i]
				break
			}
			n++
		}
	}
	return strings.TrimSpace(s)
}

// hasAttachment reports whether any part is an attachment: disposition
// attachment, or a named leaf that is neither text nor multipart.
func hasAttachment(root *storage.Part) bool {
	found := false
	walk(root, func(pt *storage.Part) {
		switch {
		case found:
		case pt.Disposition == "attachment":
			found = true
		case pt.Type != "text" && pt.Type != "multipart" &&
			(pt.Params["name"] != "" || pt.DispParams["filename"] != ""):
			found = true
		}
	})
	return found
}

// base64Filter drops everything that is not base64 alphabet or padding, so
// that spaces and junk in the body do not stop the standard decoder.
type base64Filter struct{ r io.Reader }

func (f *base64Filter) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := f.r.Read(p)
		j := 0
		for _, c := range p[:n] {
			if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// qpReader decodes quoted-printable (RFC 2045 §6.7) leniently: a malformed
// escape is kept literally instead of ending the text, as real mail has
// plenty of them.
type qpReader struct {
	br  *bufio.Reader
	out []byte
	err error
}

func newQPReader(r io.Reader) *qpReader { return &qpReader{br: bufio.NewReaderSize(r, 8<<10)} }

func (q *qpReader) Read(p []byte) (int, error) {
	for len(q.out) == 0 {
		if q.err != nil {
			return 0, q.err
		}
		l, err := q.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			err = nil // a long line is decoded in pieces
		}
		q.err = err
		q.out = qpDecode(q.out[:0], l)
	}
	n := copy(p, q.out)
	q.out = q.out[n:]
	return n, nil
}

func qpDecode(dst, l []byte) []byte {
	for i := 0; i < len(l); i++ {
		c := l[i]
		if c != '=' {
			dst = append(dst, c)
			continue
		}
		rest := l[i+1:]
		// A soft line break: "=" then optional whitespace then the line end.
		j := 0
		for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t') {
			j++
		}
		if j == len(rest) || rest[j] == '\n' || (rest[j] == '\r' && (j+1 == len(rest) || rest[j+1] == '\n')) {
			return dst
		}
		if len(rest) >= 2 && unhex(rest[0]) >= 0 && unhex(rest[1]) >= 0 {
			dst = append(dst, byte(unhex(rest[0])<<4|unhex(rest[1])))
			i += 2
			continue
		}
		dst = append(dst, '=')
	}
	return dst
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}
