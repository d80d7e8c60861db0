package message

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"tidings/storage"
)

// Default caps (DESIGN.md §Message analysis).
const (
	DefaultMaxDepth       = 50
	DefaultMaxParts       = 10000
	DefaultMaxHeaderBytes = 1 << 20
	DefaultMaxAddresses   = 1000
)

// headerRetainFactor bounds the header bytes kept in memory over the whole
// message to this many times MaxHeaderBytes, so 10,000 parts with large
// headers cannot pin the size of the message in memory.
const headerRetainFactor = 4

// delimKeep is how much of a body line is kept: enough for any delimiter
// line (RFC 2046 §5.1.1 allows 70 characters of boundary; real mail exceeds
// that a little) with trailing whitespace.
const delimKeep = 1024

// maxBoundary is the longest boundary parameter honoured; a longer one makes
// the multipart a text/plain leaf.
const maxBoundary = 256

// Options are the caps of Analyze. The zero value means the defaults.
type Options struct {
	// SearchTextLimit caps Analysis.SearchText in bytes
	// (default storage.DefaultSearchTextLimit).
	SearchTextLimit int
	// MaxDepth is the deepest multipart or message/rfc822 nesting analysed;
	// deeper containers become opaque leaves (default 50).
	MaxDepth int
	// MaxParts caps the number of parts in the tree (default 10,000).
	MaxParts int
	// MaxHeaderBytes caps each header block; fields past it are ignored
	// (default 1 MiB).
	MaxHeaderBytes int
	// MaxAddresses caps the addresses kept per envelope address field
	// (default 1,000).
	MaxAddresses int
}

func (o Options) withDefaults() Options {
	if o.SearchTextLimit <= 0 {
		o.SearchTextLimit = storage.DefaultSearchTextLimit
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = DefaultMaxDepth
	}
	if o.MaxParts <= 0 {
		o.MaxParts = DefaultMaxParts
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.MaxAddresses <= 0 {
		o.MaxAddresses = DefaultMaxAddresses
	}
	return o
}

// Analyze reads the message of size bytes from r and returns its analysis.
// Malformed input gives a best-effort record; the only errors are read
// errors of r. The message is streamed: memory stays bounded by the caps in
// opt, whatever the size of the message.
func Analyze(r io.ReaderAt, size int64, opt Options) (*storage.Analysis, error) {
	return analyze(r, size, opt.withDefaults(), true)
}

// SearchText returns only the folded search text of the message, capped at
// limit bytes (0 = storage.DefaultSearchTextLimit). The store uses it to
// index messages whose text was never indexed.
func SearchText(r io.ReaderAt, size int64, limit int) (string, error) {
	a, err := analyze(r, size, Options{SearchTextLimit: limit}.withDefaults(), false)
	if err != nil {
		return "", err
	}
	return a.SearchText, nil
}

// msgHeader collects the message-level fields of a header block (the top
// message or an embedded one).
type msgHeader struct {
	env        storage.RawEnvelope
	references string
}

// partHeader collects the Content-* fields of a header block, first
// occurrence each.
type partHeader struct {
	contentType, encoding, id, description, disposition, language, location, md5 string
}

// stop says where and why the body of a part ended.
type stop struct {
	eof        bool
	level      int   // index in the boundary stack of the delimiter
	close      bool  // the delimiter was a close-delimiter ("--b--")
	start      int64 // offset of the delimiter line, or of the end of input
	prevEOL    int   // terminator length of the line before start
	prevText   int64 // content length of the line before start
	eolsBefore int64 // terminated lines read before start
}

type parser struct {
	ra        io.ReaderAt
	size      int64
	opt       Options
	lr        *lineReader
	parts     int
	retained  int // header bytes kept so far
	truncated bool
	buf       []byte // text extraction read buffer
}

func analyze(r io.ReaderAt, size int64, opt Options, full bool) (*storage.Analysis, error) {
	if size < 0 {
		size = 0
	}
	p := &parser{ra: r, size: size, opt: opt, lr: newLineReader(r, size)}
	var top msgHeader
	root, _ := p.entity(0, nil, false, &top)
	if p.lr.err != nil {
		return nil, fmt.Errorf("analyze message: %w", p.lr.err)
	}
	a := &storage.Analysis{
		Version:   storage.AnalysisVersion,
		HeaderLen: root.BodyStart,
		Size:      size,
		Envelope:  top.env,
		Root:      root,
	}
	p.capEnvelope(&a.Envelope)
	walk(&a.Root, func(pt *storage.Part) {
		if pt.Message != nil {
			p.capEnvelope(&pt.Message.Envelope)
		}
	})
	a.SearchText = p.searchText(a)
	if !full {
		a.Truncated = p.truncated
		return a, nil
	}
	a.MessageID = firstID(msgIDs(a.Envelope.MessageID, 1))
	a.InReplyTo = msgIDs(a.Envelope.InReplyTo, opt.MaxAddresses)
	a.References = msgIDs(top.references, opt.MaxAddresses)
	a.BaseSubject = BaseSubject(decodeHeader(a.Envelope.Subject))
	a.ThreadID = threadID(a)
	a.SentDate = ParseDate(a.Envelope.Date)
	a.Preview = p.preview(&a.Root)
	a.Attachment = hasAttachment(&a.Root)
	a.Truncated = p.truncated
	return a, nil
}

// capEnvelope applies MaxAddresses to the address fields of env.
func (p *parser) capEnvelope(env *storage.RawEnvelope) {
	for _, f := range []*string{&env.From, &env.Sender, &env.ReplyTo, &env.To, &env.Cc, &env.Bcc} {
		if s, cut := capAddresses(*f, p.opt.MaxAddresses); cut {
			*f = s
			p.truncated = true
		}
	}
}

// walk calls fn for every part of the tree, embedded messages included,
// parents before children.
func walk(pt *storage.Part, fn func(*storage.Part)) {
	fn(pt)
	for i := range pt.Children {
		walk(&pt.Children[i], fn)
	}
	if pt.Message != nil {
		walk(&pt.Message.Root, fn)
	}
}

func firstID(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ids[0]
}

// threadID derives the RFC 8474 THREADID from the thread root: the first
// References id, else the first In-Reply-To id, else the own Message-ID,
// else the base subject and sender, so that every message of a thread
// computes the same value without looking at the others.
func threadID(a *storage.Analysis) string {
	var root string
	switch {
	case len(a.References) > 0:
		root = "<" + a.References[0] + ">"
	case len(a.InReplyTo) > 0:
		root = "<" + a.InReplyTo[0] + ">"
	case a.MessageID != "":
		root = "<" + a.MessageID + ">"
	default:
		root = "subject\x00" + a.BaseSubject + "\x00" + storage.Fold(decodeHeader(a.Envelope.From))
	}
	h := sha256.Sum256([]byte(root))
	return "T" + hex.EncodeToString(h[:8])
}

// entity parses one entity (header and body) starting at the reader's
// position: the top message, a body part, or an embedded message. stack holds
// the boundaries of the enclosing multiparts, outermost first. msg, if not
// nil, receives the message-level header fields.
func (p *parser) entity(depth int, stack []string, digest bool, msg *msgHeader) (storage.Part, stop) {
	var pt storage.Part
	pt.HeaderStart = p.lr.off
	p.parts++
	h, st, ended := p.header(stack, msg)
	boundary := p.describe(&pt, &h, digest)
	if ended {
		// Header cut short by a delimiter or the end of input: empty body.
		// The line end before a delimiter belongs to the delimiter.
		end := st.start
		if !st.eof {
			end = max(pt.HeaderStart, st.start-int64(st.prevEOL))
		}
		pt.BodyStart, pt.BodyEnd = end, end
		return pt, st
	}
	pt.BodyStart = p.lr.off
	c0 := p.lr.eols
	container := boundary != "" || (pt.Type == "message" && isEmbeddable(&pt))
	switch {
	case container && (depth >= p.opt.MaxDepth || p.parts >= p.opt.MaxParts):
		pt.Opaque = true
		p.truncated = true
		st = p.skip(stack)
	case boundary != "":
		st = p.multipart(&pt, depth, stack, boundary)
	case container:
		var mh msgHeader
		root, rst := p.entity(depth+1, stack, false, &mh)
		pt.Message = &storage.EmbeddedMessage{Envelope: mh.env, Root: root}
		st = rst
	default:
		st = p.skip(stack)
	}
	p.endBody(&pt, c0, st)
	for i := range pt.Children {
		// An empty last part ("--b\r\n--outer") starts after the line end
		// that the enclosing delimiter claims; keep it inside its parent.
		clampPart(&pt.Children[i], pt.BodyEnd)
	}
	return pt, st
}

// clampPart limits every offset in the subtree of pt to end.
func clampPart(pt *storage.Part, end int64) {
	if pt.BodyEnd <= end {
		return
	}
	pt.HeaderStart = min(pt.HeaderStart, end)
	pt.BodyStart = min(pt.BodyStart, end)
	pt.BodyEnd = end
	if pt.BodyStart == pt.BodyEnd {
		pt.Lines = 0
	}
	for i := range pt.Children {
		clampPart(&pt.Children[i], end)
	}
	if pt.Message != nil {
		clampPart(&pt.Message.Root, end)
	}
}

// isEmbeddable reports whether a message/* part holds a message we parse:
// message/rfc822 or message/global (RFC 6532 §3.7) in an identity encoding.
// An encoded one stays a leaf; decoding it to offsets is not possible.
func isEmbeddable(pt *storage.Part) bool {
	if pt.Subtype != "rfc822" && pt.Subtype != "global" {
		return false
	}
	switch pt.Encoding {
	case "", "7bit", "8bit", "binary":
		return true
	}
	return false
}

// multipart parses the body of a multipart: preamble, body parts, epilogue
// (RFC 2046 §5.1.1). It returns the stop that ended the multipart's own body:
// a delimiter of an enclosing multipart, or the end of input.
func (p *parser) multipart(pt *storage.Part, depth int, stack []string, boundary string) stop {
	own := len(stack)
	inner := append(stack[:own:own], boundary)
	digest := pt.Subtype == "digest"
	st := p.skip(inner) // preamble
	for !st.eof && st.level == own && !st.close {
		if p.parts >= p.opt.MaxParts {
			p.truncated = true
			st = p.skip(inner)
			continue
		}
		child, cst := p.entity(depth+1, inner, digest, nil)
		pt.Children = append(pt.Children, child)
		st = cst
	}
	if !st.eof && st.level == own {
		st = p.skip(stack) // epilogue
	}
	return st
}

// skip reads body lines until a delimiter of stack or the end of input.
func (p *parser) skip(stack []string) stop {
	lr := p.lr
	for lr.next(delimKeep) {
		if level, closed, ok := matchDelim(&lr.cur, stack); ok {
			return p.delimStop(level, closed)
		}
	}
	return p.eofStop()
}

func (p *parser) delimStop(level int, closed bool) stop {
	lr := p.lr
	eolsBefore := lr.eols
	if lr.cur.eol > 0 {
		eolsBefore--
	}
	return stop{
		level:      level,
		close:      closed,
		start:      lr.cur.start,
		prevEOL:    lr.prev.eol,
		prevText:   lr.prev.textLen(),
		eolsBefore: eolsBefore,
	}
}

func (p *parser) eofStop() stop {
	lr := p.lr
	return stop{eof: true, start: lr.off, prevEOL: lr.prev.eol, prevText: lr.prev.textLen(), eolsBefore: lr.eols}
}

// endBody sets BodyEnd and Lines of a part whose body began at BodyStart
// (with c0 terminated lines read before it) and ended at st. The CRLF before
// a delimiter belongs to the delimiter (RFC 2046 §5.1.1), so it is not part
// of the body, and neither is a line it ends.
func (p *parser) endBody(pt *storage.Part, c0 int64, st stop) {
	if st.start <= pt.BodyStart {
		pt.BodyEnd = pt.BodyStart
		pt.Lines = 0
		return
	}
	lines := st.eolsBefore - c0
	if st.eof {
		pt.BodyEnd = st.start
		if st.prevEOL == 0 {
			lines++ // an unterminated last line still counts
		}
	} else {
		pt.BodyEnd = max(st.start-int64(st.prevEOL), pt.BodyStart)
		if st.prevEOL > 0 {
			lines--
		}
		if st.prevText > 0 {
			lines++
		}
	}
	pt.Lines = max(lines, 0)
}

// matchDelim reports whether l is a delimiter line of one of the boundaries
// in stack (the innermost wins) and whether it is a close-delimiter. RFC 2046
// §5.1.1: "--" boundary ["--"], then optional linear whitespace.
func matchDelim(l *line, stack []string) (level int, closed, ok bool) {
	t := l.text
	if len(stack) == 0 || len(t) < 3 || t[0] != '-' || t[1] != '-' || l.cut {
		return 0, false, false
	}
	t = t[2:]
	for i := len(stack) - 1; i >= 0; i-- {
		b := stack[i]
		if !bytes.HasPrefix(t, []byte(b)) {
			continue
		}
		rest := t[len(b):]
		closed := false
		if len(rest) >= 2 && rest[0] == '-' && rest[1] == '-' {
			closed = true
			rest = rest[2:]
		}
		if len(bytes.Trim(rest, " \t")) == 0 {
			return i, closed, true
		}
	}
	return 0, false, false
}

// header reads a header block. It ends at the blank line (ended false), or
// early at a delimiter of stack or the end of input (ended true, with st).
// Only the fields the analysis uses are kept; bytes beyond MaxHeaderBytes are
// read but not interpreted.
func (p *parser) header(stack []string, msg *msgHeader) (h partHeader, st stop, ended bool) {
	lr := p.lr
	budget := p.opt.MaxHeaderBytes
	var (
		name     string
		val      []byte
		have     bool
		skipping bool
	)
	commit := func() {
		if have {
			p.field(name, val, &h, msg)
			have = false
		}
	}
	for {
		if !lr.next(max(budget, delimKeep)) {
			commit()
			return h, p.eofStop(), true
		}
		l := &lr.cur
		if level, closed, ok := matchDelim(l, stack); ok {
			commit()
			return h, p.delimStop(level, closed), true
		}
		if l.textLen() == 0 && l.eol > 0 {
			commit()
			return h, stop{}, false
		}
		budget -= int(min(l.n, int64(p.opt.MaxHeaderBytes)+1))
		if skipping || budget < 0 || l.cut {
			if !skipping {
				commit()
				skipping = true
				p.truncated = true
			}
			continue
		}
		t := l.text
		if t[0] == ' ' || t[0] == '\t' {
			// RFC 5322 §2.2.3: unfolding removes the CRLF, keeps the WSP.
			if have {
				val = append(val, t...)
			}
			continue
		}
		commit()
		colon := bytes.IndexByte(t, ':')
		if colon <= 0 {
			continue // not a field; ignore the line
		}
		name = wantedField(bytes.TrimRight(t[:colon], " \t"))
		if name == "" {
			continue
		}
		val = append(val[:0], t[colon+1:]...)
		have = true
	}
}

// wantedField returns the canonical (lower-case) name of a field the
// analysis uses, or "".
func wantedField(n []byte) string {
	if len(n) > 32 {
		return ""
	}
	var buf [32]byte
	b := buf[:len(n)]
	for i, c := range n {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	switch string(b) {
	case "date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
		"in-reply-to", "message-id", "references",
		"content-type", "content-transfer-encoding", "content-id", "content-description",
		"content-disposition", "content-language", "content-location", "content-md5":
		return string(b)
	}
	return ""
}

// field records one unfolded field, first occurrence only.
func (p *parser) field(name string, raw []byte, h *partHeader, msg *msgHeader) {
	raw = bytes.Trim(raw, " \t\r")
	if p.retained+len(raw) > headerRetainFactor*p.opt.MaxHeaderBytes {
		p.truncated = true
		return
	}
	set := func(dst *string) {
		if *dst == "" && len(raw) > 0 {
			*dst = string(raw)
			p.retained += len(raw)
		}
	}
	switch name {
	case "content-type":
		set(&h.contentType)
	case "content-transfer-encoding":
		set(&h.encoding)
	case "content-id":
		set(&h.id)
	case "content-description":
		set(&h.description)
	case "content-disposition":
		set(&h.disposition)
	case "content-language":
		set(&h.language)
	case "content-location":
		set(&h.location)
	case "content-md5":
		set(&h.md5)
	}
	if msg == nil {
		return
	}
	e := &msg.env
	switch name {
	case "date":
		set(&e.Date)
	case "subject":
		set(&e.Subject)
	case "from":
		set(&e.From)
	case "sender":
		set(&e.Sender)
	case "reply-to":
		set(&e.ReplyTo)
	case "to":
		set(&e.To)
	case "cc":
		set(&e.Cc)
	case "bcc":
		set(&e.Bcc)
	case "in-reply-to":
		set(&e.InReplyTo)
	case "message-id":
		set(&e.MessageID)
	case "references":
		set(&msg.references)
	}
}

// describe fills the MIME fields of pt from its header and returns the
// boundary if pt is a multipart that will be parsed as one.
func (p *parser) describe(pt *storage.Part, h *partHeader, digest bool) string {
	typ, sub, params, ok := parseContentType(h.contentType)
	if !ok {
		// RFC 2045 §5.2 (and RFC 2046 §5.1.5 inside a digest): a missing or
		// invalid Content-Type means the default type.
		typ, sub = "text", "plain"
		if digest && h.contentType == "" {
			typ, sub = "message", "rfc822"
		} else if params["charset"] == "" {
			if params == nil {
				params = map[string]string{}
			}
			params["charset"] = "us-ascii"
		}
	}
	pt.Type, pt.Subtype, pt.Params = typ, sub, params
	pt.Encoding = parseEncoding(h.encoding)
	pt.ID = h.id
	pt.Description = h.description
	pt.Location = h.location
	pt.MD5 = h.md5
	if h.disposition != "" {
		d, dp := parseDisposition(h.disposition)
		pt.Disposition, pt.DispParams = d, dp
	}
	pt.Language = parseLanguage(h.language)
	if typ != "multipart" {
		return ""
	}
	b := params["boundary"]
	if b == "" || len(b) > maxBoundary {
		// No usable boundary: RFC 2046 gives no way to find the parts, so
		// the body is one text/plain leaf.
		pt.Type, pt.Subtype = "text", "plain"
		return ""
	}
	return b
}
