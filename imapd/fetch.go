package imapd

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"tidings/storage"
)

// fetchBatch bounds how many messages' metadata one store call reads.
const fetchBatch = 256

// Fetch implements FETCH (RFC 9051 §6.4.5) and BINARY (RFC 3516).
func (s *session) Fetch(w *imapserver.FetchWriter, set imap.NumSet, opt *imap.FetchOptions) error {
	_, isUID := set.(imap.UIDSet)
	return s.fetch(w, s.resolve(set), opt, isUID)
}

func (s *session) fetch(w *imapserver.FetchWriter, refs []msgRef, opt *imap.FetchOptions, withUID bool) error {
	if len(refs) == 0 {
		return nil
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	sel := s.sel
	markSeen := false
	if !sel.readOnly {
		for _, b := range opt.BodySection {
			markSeen = markSeen || !b.Peek
		}
		for _, b := range opt.BinarySection {
			markSeen = markSeen || !b.Peek
		}
	}
	if markSeen {
		// RFC 9051 §6.4.5: BODY[] sets \Seen; the changed FLAGS are
		// returned with the data.
		updated, _, err := s.srv.store.StoreFlags(ctx, s.me(), s.me(), sel.mb.ID, uidSet(refs), storage.FlagsAdd, storage.Flags{Seen: true}, 0)
		if err != nil {
			return s.storeErr("fetch seen", err)
		}
		sel.owner.noteOwn(sel.st, updated)
		o2 := *opt
		o2.Flags = true
		opt = &o2
	}
	needBody := len(opt.BodySection) > 0 || len(opt.BinarySection) > 0 || len(opt.BinarySectionSize) > 0
	needAnalysis := opt.Envelope || opt.BodyStructure != nil
	for len(refs) > 0 {
		chunk := refs[:min(len(refs), fetchBatch)]
		refs = refs[len(chunk):]
		var metas map[storage.UID]storage.Message
		if !needBody {
			ms, err := s.srv.store.Messages(ctx, s.me(), s.me(), sel.mb.ID, uidSet(chunk), storage.MessageOptions{Analysis: needAnalysis})
			if err != nil {
				return s.storeErr("fetch", err)
			}
			metas = make(map[storage.UID]storage.Message, len(ms))
			for _, m := range ms {
				metas[m.UID] = m
			}
		}
		for _, r := range chunk {
			var m storage.Message
			var blob storage.ReaderAtCloser
			if needBody {
				var err error
				m, blob, err = s.srv.store.OpenMessage(ctx, s.me(), s.me(), sel.mb.ID, r.uid)
				if errors.Is(err, storage.ErrNotFound) {
					continue // expunged meanwhile; its EXPUNGE is on its way
				}
				if err != nil {
					return s.storeErr("fetch", err)
				}
			} else {
				var ok bool
				if m, ok = metas[r.uid]; !ok {
					continue
				}
			}
			err := s.writeMessage(w, r, &m, blob, opt, withUID)
			if blob != nil {
				blob.Close()
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *session) writeMessage(w *imapserver.FetchWriter, r msgRef, m *storage.Message, blob storage.ReaderAtCloser, opt *imap.FetchOptions, withUID bool) error {
	// Compute everything that can fail before the response starts.
	var msg *fullMessage
	if blob != nil {
		msg = &fullMessage{prefix: m.Prefix, blob: blob, a: m.Analysis}
		if msg.a == nil {
			msg.a = &storage.Analysis{Size: m.BlobSize, HeaderLen: m.BlobSize}
		}
	}
	type binItem struct {
		sec  *imap.FetchItemBinarySection
		r    io.Reader
		size int64
	}
	var bins []binItem
	for _, b := range opt.BinarySection {
		rd, size, err := msg.binary(b.Part, b.Partial)
		if err != nil {
			return err
		}
		bins = append(bins, binItem{b, rd, size})
	}
	var binSizes []uint32
	for _, b := range opt.BinarySectionSize {
		_, size, err := msg.binary(b.Part, nil)
		if err != nil {
			return err
		}
		binSizes = append(binSizes, uint32(min(size, 1<<32-1)))
	}

	rw := w.CreateMessage(r.seq)
	if withUID || opt.UID {
		rw.WriteUID(imap.UID(m.UID))
	}
	if opt.Flags {
		rw.WriteFlags(imapFlags(m.Flags, s.sel.recent[m.UID]))
	}
	if opt.InternalDate {
		rw.WriteInternalDate(m.InternalDate)
	}
	if opt.RFC822Size {
		rw.WriteRFC822Size(m.Size)
	}
	if opt.Envelope {
		var env *imap.Envelope
		if m.Analysis != nil {
			env = envelope(&m.Analysis.Envelope)
		}
		rw.WriteEnvelope(env)
	}
	if opt.BodyStructure != nil {
		root := &storage.Part{Type: "text", Subtype: "plain"}
		if m.Analysis != nil {
			root = &m.Analysis.Root
		}
		// Always build the extended form: the writer needs it for
		// BODYSTRUCTURE and ignores the extension data for BODY.
		rw.WriteBodyStructure(bodyStructure(root, true))
	}
	var werr error
	for _, sec := range opt.BodySection {
		rd, size := msg.section(sec)
		wc := rw.WriteBodySection(sec, size)
		if _, err := io.CopyN(wc, rd, size); err != nil && werr == nil {
			werr = err
		}
		if err := wc.Close(); err != nil && werr == nil {
			werr = err
		}
	}
	for i, b := range bins {
		wc := rw.WriteBinarySection(b.sec, b.size)
		if _, err := io.CopyN(wc, b.r, b.size); err != nil && werr == nil {
			werr = err
		}
		if err := wc.Close(); err != nil && werr == nil {
			werr = err
		}
		_ = i
	}
	for i, b := range opt.BinarySectionSize {
		rw.WriteBinarySectionSize(b, binSizes[i])
	}
	if err := rw.Close(); err != nil {
		return err
	}
	return werr
}

// fullMessage is one entry as IMAP sees it: the per-entry prefix followed
// by the blob. Offsets in the analysis are blob offsets; the prefix
// belongs to the top-level header (BODY[HEADER], BODY[], RFC822.SIZE).
type fullMessage struct {
	prefix []byte
	blob   io.ReaderAt
	a      *storage.Analysis
}

func (f *fullMessage) plen() int64 { return int64(len(f.prefix)) }

// ReadAt reads the concatenation prefix+blob.
func (f *fullMessage) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	if off < f.plen() {
		n = copy(p, f.prefix[off:])
		if n == len(p) {
			return n, nil
		}
		off = f.plen()
	}
	m, err := f.blob.ReadAt(p[n:], off-f.plen())
	return n + m, err
}

// rangeReader reads [start, end) of the full message, clamped.
func (f *fullMessage) rangeReader(start, end int64) (io.Reader, int64) {
	total := f.plen() + f.a.Size
	start, end = max(0, min(start, total)), max(0, min(end, total))
	if end < start {
		end = start
	}
	return io.NewSectionReader(f, start, end-start), end - start
}

// locate finds the part a section path names (RFC 9051 §6.4.5): in a
// single-part message part 1 is the body; inside a message/rfc822 part the
// path continues in the encapsulated message.
func (f *fullMessage) locate(path []int) (*storage.Part, bool) {
	cur := &f.a.Root
	for i, n := range path {
		if i > 0 && cur.Message != nil && !cur.Opaque {
			cur = &cur.Message.Root
		}
		if cur.Type == "multipart" && len(cur.Children) > 0 && !cur.Opaque {
			if n < 1 || n > len(cur.Children) {
				return nil, false
			}
			cur = &cur.Children[n-1]
			continue
		}
		if n != 1 {
			return nil, false
		}
	}
	return cur, true
}

var emptyReader = strings.NewReader("")

// section returns a body section's bytes, partial applied.
func (f *fullMessage) section(sec *imap.FetchItemBodySection) (io.Reader, int64) {
	var start, end int64
	header := false
	pl := f.plen()
	if len(sec.Part) == 0 {
		switch sec.Specifier {
		case imap.PartSpecifierHeader:
			start, end, header = 0, pl+f.a.HeaderLen, true
		case imap.PartSpecifierText:
			start, end = pl+f.a.HeaderLen, pl+f.a.Size
		case imap.PartSpecifierMIME:
			return emptyReader, 0
		default:
			start, end = 0, pl+f.a.Size
		}
	} else {
		p, ok := f.locate(sec.Part)
		if !ok {
			return emptyReader, 0
		}
		switch sec.Specifier {
		case imap.PartSpecifierNone:
			start, end = pl+p.BodyStart, pl+p.BodyEnd
		case imap.PartSpecifierMIME:
			start, end = pl+p.HeaderStart, pl+p.BodyStart
		case imap.PartSpecifierHeader, imap.PartSpecifierText:
			if p.Message == nil || p.Opaque {
				return emptyReader, 0
			}
			m := &p.Message.Root
			if sec.Specifier == imap.PartSpecifierHeader {
				start, end, header = pl+m.HeaderStart, pl+m.BodyStart, true
			} else {
				start, end = pl+m.BodyStart, pl+m.BodyEnd
			}
		}
	}
	if header && (len(sec.HeaderFields) > 0 || len(sec.HeaderFieldsNot) > 0) {
		rd, n := f.rangeReader(start, end)
		b := make([]byte, n)
		io.ReadFull(rd, b)
		b = filterHeader(b, sec.HeaderFields, sec.HeaderFieldsNot)
		if p := sec.Partial; p != nil {
			off := min(p.Offset, int64(len(b)))
			b = b[off:min(int64(len(b)), off+p.Size)]
		}
		return bytes.NewReader(b), int64(len(b))
	}
	if p := sec.Partial; p != nil {
		s := min(start+p.Offset, end)
		start, end = s, min(end, s+p.Size)
	}
	return f.rangeReader(start, end)
}

// filterHeader keeps (or, with not, drops) the named fields of a header
// block and ends it with the blank line (RFC 9051 §6.4.5 HEADER.FIELDS).
func filterHeader(b []byte, fields, not []string) []byte {
	want := map[string]bool{}
	keep := len(fields) > 0
	for _, n := range append(fields, not...) {
		want[strings.ToLower(n)] = true
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), len(b)+1)
	sc.Split(scanLinesKeep)
	take := false
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		if line[0] != ' ' && line[0] != '\t' {
			name := line
			if i := bytes.IndexByte(line, ':'); i >= 0 {
				name = line[:i]
			}
			take = want[strings.ToLower(strings.TrimSpace(string(name)))] == keep
		}
		if take {
			out.Write(line)
		}
	}
	out.WriteString("\r\n")
	return out.Bytes()
}

func scanLinesKeep(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i+1], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// binary returns the decoded content of a leaf part (RFC 3516 §4.1), with
// partial applied, and its size. The content is decoded twice (once to
// count) rather than held in memory.
func (f *fullMessage) binary(path []int, partial *imap.SectionPartial) (io.Reader, int64, error) {
	if len(path) == 0 {
		rd, n := f.rangeReader(0, f.plen()+f.a.Size)
		return applyPartial(rd, n, partial)
	}
	p, ok := f.locate(path)
	if !ok {
		return emptyReader, 0, nil
	}
	if p.Type == "multipart" && len(p.Children) > 0 && !p.Opaque {
		return nil, 0, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "BINARY of a multipart"}
	}
	open := func() (io.Reader, error) {
		rd, _ := f.rangeReader(f.plen()+p.BodyStart, f.plen()+p.BodyEnd)
		switch p.Encoding {
		case "", "7bit", "8bit", "binary":
			return rd, nil
		case "base64":
			return base64.NewDecoder(base64.StdEncoding, &b64Filter{r: rd}), nil
		case "quoted-printable":
			return quotedprintable.NewReader(rd), nil
		}
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnknownCTE, Text: "Unknown Content-Transfer-Encoding"}
	}
	rd, err := open()
	if err != nil {
		return nil, 0, err
	}
	n, _ := io.Copy(io.Discard, rd)
	rd, _ = open()
	if partial != nil {
		off := min(partial.Offset, n)
		io.CopyN(io.Discard, rd, off)
		size := min(n-off, partial.Size)
		return io.LimitReader(rd, size), size, nil
	}
	return rd, n, nil
}

func applyPartial(rd io.Reader, n int64, p *imap.SectionPartial) (io.Reader, int64, error) {
	if p == nil {
		return rd, n, nil
	}
	off := min(p.Offset, n)
	io.CopyN(io.Discard, rd, off)
	size := min(n-off, p.Size)
	return io.LimitReader(rd, size), size, nil
}

// b64Filter drops everything that is not base64 alphabet, so line breaks
// and stray whitespace do not stop the decoder.
type b64Filter struct{ r io.Reader }

func (b *b64Filter) Read(p []byte) (int, error) {
	for {
		n, err := b.r.Read(p)
		j := 0
		for _, c := range p[:n] {
			if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}
