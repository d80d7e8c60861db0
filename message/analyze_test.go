package message

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"tidings/storage"
)

func load(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func analyzeBytes(t testing.TB, raw []byte, opt Options) *storage.Analysis {
	t.Helper()
	a, err := Analyze(bytes.NewReader(raw), int64(len(raw)), opt)
	if err != nil {
		t.Fatalf("Analyze() error = %v", err)
	}
	checkOffsets(t, a, int64(len(raw)))
	return a
}

// flatten lists the parts in tree order, embedded messages included.
func flatten(a *storage.Analysis) []*storage.Part {
	var out []*storage.Part
	walk(&a.Root, func(p *storage.Part) { out = append(out, p) })
	return out
}

// checkOffsets verifies the offset invariants of doc.go for every part.
func checkOffsets(t testing.TB, a *storage.Analysis, size int64) {
	t.Helper()
	if a.HeaderLen != a.Root.BodyStart-a.Root.HeaderStart || a.Root.HeaderStart != 0 {
		t.Errorf("HeaderLen = %d, root = %d..%d; want root header at 0 of HeaderLen", a.HeaderLen, a.Root.HeaderStart, a.Root.BodyStart)
	}
	var check func(p *storage.Part, lo, hi int64, path string)
	check = func(p *storage.Part, lo, hi int64, path string) {
		if !(lo <= p.HeaderStart && p.HeaderStart <= p.BodyStart && p.BodyStart <= p.BodyEnd && p.BodyEnd <= hi) {
			t.Errorf("part %s offsets %d/%d/%d outside [%d, %d]", path, p.HeaderStart, p.BodyStart, p.BodyEnd, lo, hi)
		}
		if p.Lines < 0 || p.Lines > p.BodyEnd-p.BodyStart {
			t.Errorf("part %s Lines = %d for a body of %d bytes", path, p.Lines, p.BodyEnd-p.BodyStart)
		}
		if p.Opaque && (len(p.Children) > 0 || p.Message != nil) {
			t.Errorf("part %s is opaque but has children", path)
		}
		for i := range p.Children {
			check(&p.Children[i], p.BodyStart, p.BodyEnd, fmt.Sprintf("%s.%d", path, i+1))
		}
		if p.Message != nil {
			r := &p.Message.Root
			if r.HeaderStart != p.BodyStart || r.BodyEnd != p.BodyEnd {
				t.Errorf("part %s embedded root %d..%d; want %d..%d", path, r.HeaderStart, r.BodyEnd, p.BodyStart, p.BodyEnd)
			}
			check(r, p.BodyStart, p.BodyEnd, path+".m")
		}
	}
	check(&a.Root, 0, size, "root")
	if !utf8.ValidString(a.SearchText) || !utf8.ValidString(a.Preview) || !utf8.ValidString(a.BaseSubject) {
		t.Errorf("invalid UTF-8 in text fields")
	}
	if utf8.RuneCountInString(a.Preview) > PreviewLen {
		t.Errorf("Preview has %d characters; want at most %d", utf8.RuneCountInString(a.Preview), PreviewLen)
	}
}

func TestAnalyzeStructure(t *testing.T) {
	type wantPart struct {
		typ   string // "type/subtype"
		body  string // raw body; "-" = don't check
		lines int64
	}
	tests := []struct {
		file  string
		parts []wantPart
	}{
		{"simple.eml", []wantPart{
			{"text/plain", "Hi Bob,\r\n\r\nare you free for lunch tomorrow at noon?\r\n\r\nAlice\r\n", 5},
		}},
		{"alternative.eml", []wantPart{
			{"multipart/alternative", "-", 14},
			{"text/plain", "Gro=C3=9Fe Rabatte =C3=BCber alles!=20\r\nBesuchen Sie uns.", 2},
			{"text/html", "<html><head><style>p {color: red}</style></head><body><p>Gro=C3=9Fe Rabatte</p><p>=C3=BCber &amp; alles</p></body></html>", 1},
		}},
		{"mixed-attachment.eml", []wantPart{
			{"multipart/mixed", "-", -1},
			{"text/plain", "Here is the report.\r\n", 1},
			{"application/pdf", "-", -1},
		}},
		{"nested-rfc822.eml", []wantPart{
			{"multipart/mixed", "-", -1},
			{"text/plain", "See the forwarded message.", 1},
			{"message/rfc822", "-", 17},
			{"multipart/alternative", "--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNotes: the budget is approved.\r\n--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Notes: the <b>budget</b> is approved.</p>\r\n--inner--\r\n", 9},
			{"text/plain", "Notes: the budget is approved.", 1},
			{"text/html", "<p>Notes: the <b>budget</b> is approved.</p>", 1},
		}},
		{"charsets.eml", []wantPart{{"text/plain", "-", 1}}},
		{"rfc2231.eml", []wantPart{
			{"multipart/mixed", "-", -1},
			{"application/octet-stream", "aGVsbG8=", 1},
			{"text/plain", "text", 1},
		}},
		{"lf-only.eml", []wantPart{
			{"multipart/mixed", "--lf\nContent-Type: text/plain\n\nline one\nline two\n--lf--\n", 6},
			{"text/plain", "line one\nline two", 2},
		}},
		{"header-only.eml", []wantPart{{"text/plain", "", 0}}},
		{"missing-boundary.eml", []wantPart{
			{"text/plain", "--xyz\r\nContent-Type: text/plain\r\n\r\nbody\r\n--xyz--\r\n", 5},
		}},
		{"truncated-multipart.eml", []wantPart{
			{"multipart/mixed", "-", 9},
			{"text/plain", "first part", 1},
			{"application/octet-stream", "AAECAwQFBgcICQ", 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := load(t, tt.file)
			a := analyzeBytes(t, raw, Options{})
			parts := flatten(a)
			if len(parts) != len(tt.parts) {
				t.Fatalf("Analyze(%q) has %d parts; want %d", tt.file, len(parts), len(tt.parts))
			}
			for i, w := range tt.parts {
				p := parts[i]
				if got := p.Type + "/" + p.Subtype; got != w.typ {
					t.Errorf("part %d type = %q; want %q", i, got, w.typ)
				}
				if body := string(raw[p.BodyStart:p.BodyEnd]); w.body != "-" && body != w.body {
					t.Errorf("part %d body = %q; want %q", i, body, w.body)
				}
				if w.lines >= 0 && p.Lines != w.lines {
					t.Errorf("part %d Lines = %d; want %d", i, p.Lines, w.lines)
				}
			}
			if a.Truncated {
				t.Errorf("Analyze(%q).Truncated = true; want false", tt.file)
			}
		})
	}
}

func TestAnalyzeFields(t *testing.T) {
	tests := []struct {
		file        string
		subject     string // raw envelope subject
		messageID   string
		inReplyTo   []string
		references  []string
		threadRoot  string
		baseSubject string
		sent        time.Time
		preview     string
		attachment  bool
	}{
		{
			file: "simple.eml", subject: "Lunch tomorrow?", messageID: "20250114081240.GA1234@example.org",
			threadRoot: "<20250114081240.GA1234@example.org>", baseSubject: "lunch tomorrow?",
			sent:    time.Date(2025, 1, 14, 9, 12, 40, 0, time.FixedZone("", 3600)),
			preview: "Hi Bob, are you free for lunch tomorrow at noon? Alice",
		},
		{
			file: "alternative.eml", subject: "=?UTF-8?B?w5xCRVIgZGVhbHMgZm9yIHlvdQ==?=", messageID: "alt-1@shop.example",
			threadRoot: "<alt-1@shop.example>", baseSubject: "über deals for you",
			sent:    time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC),
			preview: "Große Rabatte über alles! Besuchen Sie uns.",
		},
		{
			file: "mixed-attachment.eml", subject: "Re: Re: [Project X] Fwd: quarterly report", messageID: "mixed-2@example.net",
			inReplyTo: []string{"mixed-1@example.com"}, references: []string{"root-0@example.com", "mixed-1@example.com"},
			threadRoot: "<root-0@example.com>", baseSubject: "quarterly report",
			sent:    time.Date(2025, 1, 16, 17, 45, 0, 0, time.FixedZone("", -5*3600)),
			preview: "Here is the report.", attachment: true,
		},
		{
			file: "nested-rfc822.eml", subject: "Fwd: Meeting notes", messageID: "fwd-1@example.com",
			threadRoot: "<fwd-1@example.com>", baseSubject: "meeting notes",
			sent:    time.Date(2025, 1, 17, 8, 0, 0, 0, time.FixedZone("", 3600)),
			preview: "See the forwarded message.",
		},
		{
			file: "charsets.eml", subject: "=?ISO-8859-1?Q?Gr=FC=DFe_aus_M=FCnchen?=", messageID: "cs-1@example.de",
			threadRoot: "<cs-1@example.de>", baseSubject: "grüße aus münchen",
			sent:    time.Date(2025, 1, 17, 11, 0, 0, 0, time.FixedZone("", 3600)),
			preview: "Привет, мир! Встреча в пятницу.",
		},
		{
			file: "header-only.eml", subject: "no body", baseSubject: "no body",
			threadRoot: "subject\x00no body\x00h@example.com",
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := load(t, tt.file)
			a := analyzeBytes(t, raw, Options{})
			if a.Envelope.Subject != tt.subject {
				t.Errorf("Envelope.Subject = %q; want %q", a.Envelope.Subject, tt.subject)
			}
			if a.MessageID != tt.messageID {
				t.Errorf("MessageID = %q; want %q", a.MessageID, tt.messageID)
			}
			if fmt.Sprint(a.InReplyTo) != fmt.Sprint(tt.inReplyTo) || fmt.Sprint(a.References) != fmt.Sprint(tt.references) {
				t.Errorf("InReplyTo, References = %q, %q; want %q, %q", a.InReplyTo, a.References, tt.inReplyTo, tt.references)
			}
			if a.BaseSubject != tt.baseSubject {
				t.Errorf("BaseSubject = %q; want %q", a.BaseSubject, tt.baseSubject)
			}
			if !a.SentDate.Equal(tt.sent) || (!tt.sent.IsZero() && a.SentDate.Format(time.RFC3339) != tt.sent.Format(time.RFC3339)) {
				t.Errorf("SentDate = %v; want %v", a.SentDate, tt.sent)
			}
			if a.Preview != tt.preview {
				t.Errorf("Preview = %q; want %q", a.Preview, tt.preview)
			}
			if a.Attachment != tt.attachment {
				t.Errorf("Attachment = %v; want %v", a.Attachment, tt.attachment)
			}
			if want := threadIDOf(tt.threadRoot); a.ThreadID != want {
				t.Errorf("ThreadID = %q; want %q (root %q)", a.ThreadID, want, tt.threadRoot)
			}
			if a.Version != storage.AnalysisVersion || a.Size != int64(len(raw)) {
				t.Errorf("Version, Size = %d, %d; want %d, %d", a.Version, a.Size, storage.AnalysisVersion, len(raw))
			}
			if !bytes.HasSuffix(raw[:a.HeaderLen], []byte("\r\n\r\n")) && a.HeaderLen != int64(len(raw)) {
				t.Errorf("HeaderLen = %d does not end at the blank line", a.HeaderLen)
			}
		})
	}
}

func threadIDOf(root string) string {
	a := &storage.Analysis{}
	switch {
	case strings.HasPrefix(root, "<"):
		a.MessageID = strings.Trim(root, "<>")
	default:
		f := strings.Split(root, "\x00")
		a.BaseSubject, a.Envelope.From = f[1], f[2]
	}
	return threadID(a)
}

func TestAnalyzeParams(t *testing.T) {
	raw := load(t, "rfc2231.eml")
	a := analyzeBytes(t, raw, Options{})
	parts := flatten(a)
	tests := []struct {
		part       int
		params     bool // Params or DispParams
		name, want string
	}{
		{0, true, "boundary", "b2231"},
		{1, true, "name", "日本語.txt"},
		{1, false, "filename", "a very long file name that continues here.txt"},
		{2, true, "name", "résumé.txt"},
		{2, false, "filename", "résumé.txt"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%s", tt.part, tt.name), func(t *testing.T) {
			m := parts[tt.part].DispParams
			if tt.params {
				m = parts[tt.part].Params
			}
			if got := m[tt.name]; got != tt.want {
				t.Errorf("part %d param %q = %q; want %q", tt.part, tt.name, got, tt.want)
			}
		})
	}
	if parts[1].Disposition != "attachment" || parts[2].Disposition != "inline" || parts[1].Encoding != "base64" {
		t.Errorf("dispositions %q, %q, encoding %q; want attachment, inline, base64", parts[1].Disposition, parts[2].Disposition, parts[1].Encoding)
	}
	if !a.Attachment {
		t.Errorf("Attachment = false; want true")
	}
}

func TestAnalyzeEmbeddedEnvelope(t *testing.T) {
	a := analyzeBytes(t, load(t, "nested-rfc822.eml"), Options{})
	m := a.Root.Children[1].Message
	if m == nil {
		t.Fatalf("message/rfc822 part has no Message")
	}
	want := storage.RawEnvelope{
		Date: "Thu, 16 Jan 2025 12:00:00 +0000", Subject: "Meeting notes",
		From: "Grace <grace@example.org>", To: "Erin <erin@example.com>", MessageID: "<notes@example.org>",
	}
	if m.Envelope != want {
		t.Errorf("embedded Envelope = %+v; want %+v", m.Envelope, want)
	}
	if a.Envelope.From != "Erin <erin@example.com>" {
		t.Errorf("Envelope.From = %q; want %q", a.Envelope.From, "Erin <erin@example.com>")
	}
}

func TestAnalyzeSearchText(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		limit   int
		want    []string // substrings that must match after Fold
		notWant []string
	}{
		{
			name:    "folded subject and qp body",
			raw:     string(load(t, "alternative.eml")),
			want:    []string{"ÜBER deals", "große rabatte ÜBER ALLES! besuchen", "über & alles", "news@shop.example"},
			notWant: []string{"<p>", "color: red", "=C3"},
		},
		{
			name: "charsets",
			raw:  string(load(t, "charsets.eml")),
			want: []string{"Jörg Müller", "Zoë", "日本語", "GRÜßE aus MÜNCHEN", "ПРИВЕТ, МИР!"},
		},
		{
			name: "base64 utf-8 and headers",
			raw:  "Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nw5xiZXJyYXNjaHVuZyBpbSBDYWbDqQ==\r\n",
			want: []string{"café", "überraschung im café"},
		},
		{
			name: "embedded message text",
			raw:  string(load(t, "nested-rfc822.eml")),
			want: []string{"see the forwarded message", "meeting notes", "grace@example.org", "the budget is approved"},
		},
		{
			name:    "attachments are not text",
			raw:     string(load(t, "mixed-attachment.eml")),
			want:    []string{"here is the report"},
			notWant: []string{"pdf-1.4", "JVBER"},
		},
		{
			name:  "limit",
			raw:   "Subject: héllo wörld\r\n\r\nüüüüüüüüüü\r\n",
			limit: 10,
			want:  []string{"héllo"},
		},
		{
			name: "NUL and controls become spaces",
			raw:  "Subject: a\x00b\r\n\r\nline\x01one\r\n\r\n\r\nline two\r\n",
			want: []string{"a b", "line one line two"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := []byte(tt.raw)
			a := analyzeBytes(t, raw, Options{SearchTextLimit: tt.limit})
			limit := tt.limit
			if limit == 0 {
				limit = storage.DefaultSearchTextLimit
			}
			if len(a.SearchText) > limit || !utf8.ValidString(a.SearchText) {
				t.Errorf("SearchText has %d bytes (valid %v); want at most %d", len(a.SearchText), utf8.ValidString(a.SearchText), limit)
			}
			for _, w := range tt.want {
				if !strings.Contains(a.SearchText, storage.Fold(w)) {
					t.Errorf("SearchText = %q; want it to contain Fold(%q)", a.SearchText, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(a.SearchText, storage.Fold(w)) {
					t.Errorf("SearchText = %q; want it not to contain %q", a.SearchText, w)
				}
			}
			s, err := SearchText(bytes.NewReader(raw), int64(len(raw)), tt.limit)
			if err != nil || s != a.SearchText {
				t.Errorf("SearchText() = %q, %v; want %q, nil", s, err, a.SearchText)
			}
		})
	}
}

// nestedMessage builds a message with depth nested multiparts.
func nestedMessage(depth int) []byte {
	var b bytes.Buffer
	b.WriteString("Subject: deep\r\n")
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\ndeepest\r\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%d--\r\n", i)
	}
	return b.Bytes()
}

func treeDepth(p *storage.Part) int {
	d := 0
	for i := range p.Children {
		d = max(d, treeDepth(&p.Children[i]))
	}
	if p.Message != nil {
		d = max(d, treeDepth(&p.Message.Root))
	}
	return d + 1
}

func TestAnalyzeCaps(t *testing.T) {
	manyParts := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString("Content-Type: multipart/mixed; boundary=p\r\n\r\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n", i)
		}
		b.WriteString("--p--\r\n")
		return b.Bytes()
	}
	bigHeader := func(size int, oneLine bool) []byte {
		var b bytes.Buffer
		b.WriteString("From: a@example.com\r\n")
		if oneLine {
			b.WriteString("X-Long: " + strings.Repeat("x", size) + "\r\n")
		} else {
			for b.Len() < size {
				b.WriteString("X-Filler: " + strings.Repeat("y", 70) + "\r\n")
			}
		}
		b.WriteString("Subject: after the cap\r\n\r\nbody\r\n")
		return b.Bytes()
	}
	manyAddresses := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString("To: ")
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(",\r\n ")
			}
			fmt.Fprintf(&b, "\"User, %d\" <u%d@example.com>", i, i)
		}
		b.WriteString("\r\nSubject: many\r\n\r\nbody\r\n")
		return b.Bytes()
	}
	tests := []struct {
		name      string
		raw       []byte
		check     func(t *testing.T, a *storage.Analysis, raw []byte)
		truncated bool
	}{
		{"depth 40 is kept", nestedMessage(40), func(t *testing.T, a *storage.Analysis, raw []byte) {
			if d := treeDepth(&a.Root); d != 41 {
				t.Errorf("tree depth = %d; want 41", d)
			}
		}, false},
		{"depth 60 is capped", nestedMessage(60), func(t *testing.T, a *storage.Analysis, raw []byte) {
			if d := treeDepth(&a.Root); d != DefaultMaxDepth+1 {
				t.Errorf("tree depth = %d; want %d", d, DefaultMaxDepth+1)
			}
			opaque := 0
			for _, p := range flatten(a) {
				if p.Opaque {
					opaque++
				}
			}
			if opaque != 1 {
				t.Errorf("%d opaque parts; want 1", opaque)
			}
			if a.Root.BodyEnd != int64(len(raw))-2 && a.Root.BodyEnd != int64(len(raw)) {
				t.Errorf("root BodyEnd = %d; want the end of the message (%d)", a.Root.BodyEnd, len(raw))
			}
		}, true},
		{"20000 parts are capped at 10000", manyParts(20000), func(t *testing.T, a *storage.Analysis, raw []byte) {
			if n := len(flatten(a)); n != DefaultMaxParts {
				t.Errorf("%d parts; want %d", n, DefaultMaxParts)
			}
			if a.Root.BodyEnd != int64(len(raw)) {
				t.Errorf("root BodyEnd = %d; want %d", a.Root.BodyEnd, len(raw))
			}
		}, true},
		{"2 MB header of many fields", bigHeader(2<<20, false), func(t *testing.T, a *storage.Analysis, raw []byte) {
			if a.HeaderLen != int64(len(raw))-len64("body\r\n") {
				t.Errorf("HeaderLen = %d; want %d", a.HeaderLen, int64(len(raw))-len64("body\r\n"))
			}
			if a.Envelope.From != "a@example.com" || a.Envelope.Subject != "" {
				t.Errorf("From, Subject = %q, %q; want the field before the cap only", a.Envelope.From, a.Envelope.Subject)
			}
		}, true},
		{"2 MB header line", bigHeader(2<<20, true), func(t *testing.T, a *storage.Analysis, raw []byte) {
			if string(raw[a.Root.BodyStart:a.Root.BodyEnd]) != "body\r\n" {
				t.Errorf("body = %q; want %q", raw[a.Root.BodyStart:a.Root.BodyEnd], "body\r\n")
			}
		}, true},
		{"1500 addresses", manyAddresses(1500), func(t *testing.T, a *storage.Analysis, raw []byte) {
			if n := strings.Count(a.Envelope.To, "@"); n != DefaultMaxAddresses {
				t.Errorf("To has %d addresses; want %d", n, DefaultMaxAddresses)
			}
			if a.Envelope.Subject != "many" {
				t.Errorf("Subject = %q; want %q", a.Envelope.Subject, "many")
			}
		}, true},
		{"1000 addresses are kept", manyAddresses(1000), func(t *testing.T, a *storage.Analysis, raw []byte) {
			if n := strings.Count(a.Envelope.To, "@"); n != 1000 {
				t.Errorf("To has %d addresses; want 1000", n)
			}
		}, false},
		{"300 KB body line", []byte("Subject: x\r\n\r\n" + strings.Repeat("z", 300<<10)), func(t *testing.T, a *storage.Analysis, raw []byte) {
			if a.Root.Lines != 1 || a.Root.BodyEnd != int64(len(raw)) {
				t.Errorf("Lines, BodyEnd = %d, %d; want 1, %d", a.Root.Lines, a.Root.BodyEnd, len(raw))
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := analyzeBytes(t, tt.raw, Options{})
			if a.Truncated != tt.truncated {
				t.Errorf("Truncated = %v; want %v", a.Truncated, tt.truncated)
			}
			tt.check(t, a, tt.raw)
		})
	}
}

func len64(s string) int64 { return int64(len(s)) }

func TestAnalyzeMalformed(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		typ    string
		bodies []string
	}{
		{"empty", "", "text/plain", []string{""}},
		{"only blank line", "\r\n", "text/plain", []string{""}},
		{"no header", "\r\nbody", "text/plain", []string{"body"}},
		{"boundary with trailing space", "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q  \r\n\r\none\r\n--q--\t\r\n", "multipart/mixed", []string{"--q  \r\n\r\none\r\n--q--\t\r\n", "one"}},
		{"empty part", "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\n--q--\r\n", "multipart/mixed", []string{"-", ""}},
		{"part header without blank line", "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/html\r\n--q--\r\n", "multipart/mixed", []string{"-", ""}},
		{"no parts", "Content-Type: multipart/mixed; boundary=q\r\n\r\njust text\r\n", "multipart/mixed", []string{"just text\r\n"}},
		{"invalid content type", "Content-Type: garbage\r\n\r\nx", "text/plain", []string{"x"}},
		{"encoded message/rfc822 is a leaf", "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQp4\r\n", "message/rfc822", []string{"U3ViamVjdDogeA0KDQp4\r\n"}},
		{"outer delimiter ends inner multipart", "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\ninner\r\n--o\r\n\r\nsecond\r\n--o--\r\n", "multipart/mixed",
			[]string{"-", "--i\r\n\r\ninner", "inner", "second"}},
		{"digest default", "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in digest\r\n\r\nhi\r\n--d--\r\n", "multipart/digest", []string{"-", "Subject: in digest\r\n\r\nhi", "hi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := []byte(tt.raw)
			a := analyzeBytes(t, raw, Options{})
			if got := a.Root.Type + "/" + a.Root.Subtype; got != tt.typ {
				t.Errorf("root type = %q; want %q", got, tt.typ)
			}
			parts := flatten(a)
			if len(parts) != len(tt.bodies) {
				t.Fatalf("%d parts; want %d", len(parts), len(tt.bodies))
			}
			for i, w := range tt.bodies {
				if got := string(raw[parts[i].BodyStart:parts[i].BodyEnd]); w != "-" && got != w {
					t.Errorf("part %d body = %q; want %q", i, got, w)
				}
			}
		})
	}
}

func TestBaseSubject(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Hello", "hello"},
		{"Re: Hello", "hello"},
		{"RE: re: Fwd: Hello", "hello"},
		{"Re[2]: Hello", "hello"},
		{"Reply: Hello", "reply: hello"},
		{"Re [2]: Hello", "hello"},
		{"[list] Re: Hello", "hello"},
		{"Re: [list] Hello", "hello"},
		{"Hello (fwd)", "hello"},
		{"Hello (FWD) (fwd)  ", "hello"},
		{"[Fwd: Re: Hello]", "hello"},
		{"  Fw:   Hello   world  ", "hello world"},
		{"[only blob]", "[only blob]"},
		{"Re:", ""},
		{"Ärger", "ärger"},
	}
	for _, tt := range tests {
		if got := BaseSubject(tt.in); got != tt.want {
			t.Errorf("BaseSubject(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseDate(t *testing.T) {
	utc := time.UTC
	tests := []struct {
		in   string
		want time.Time
	}{
		{"Mon, 2 Jan 2006 15:04:05 -0700", time.Date(2006, 1, 2, 15, 4, 5, 0, time.FixedZone("", -7*3600))},
		{"2 Jan 2006 15:04:05 +0000", time.Date(2006, 1, 2, 15, 4, 5, 0, utc)},
		{"Mon, 02 Jan 06 15:04 GMT", time.Date(2006, 1, 2, 15, 4, 0, 0, utc)},
		{"Mon, 2 Jan 2006 15:04:05 EST", time.Date(2006, 1, 2, 15, 4, 5, 0, time.FixedZone("", -5*3600))},
		{"Mon, 2 Jan 2006 15:04:05 +0100 (CET)", time.Date(2006, 1, 2, 15, 4, 5, 0, time.FixedZone("", 3600))},
		{"Mon Jan  2 15:04:05 2006", time.Date(2006, 1, 2, 15, 4, 5, 0, utc)},
		{"2 Jan 99 01:02:03 +0000", time.Date(1999, 1, 2, 1, 2, 3, 0, utc)},
		{"2006-01-02T15:04:05Z", time.Date(2006, 1, 2, 15, 4, 5, 0, utc)},
		{"31 Feb 2006 00:00:00 +0000", time.Time{}},
		{"not a date", time.Time{}},
		{"", time.Time{}},
	}
	for _, tt := range tests {
		got := ParseDate(tt.in)
		if !got.Equal(tt.want) || (!got.IsZero() && got.Format(time.RFC3339) != tt.want.Format(time.RFC3339)) {
			t.Errorf("ParseDate(%q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func TestMsgIDs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"<a@b>", []string{"a@b"}},
		{"<a@b> <c@d>\t<e@f>", []string{"a@b", "c@d", "e@f"}},
		{"<a@b> (added by relay)", []string{"a@b"}},
		{"bare@id", []string{"bare@id"}},
		{"Your message of Monday", nil},
		{"<a @ b>", []string{"a@b"}},
		{"", nil},
	}
	for _, tt := range tests {
		if got := msgIDs(tt.in, 100); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("msgIDs(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// errReaderAt fails every read.
type errReaderAt struct{}

func (errReaderAt) ReadAt([]byte, int64) (int, error) { return 0, os.ErrClosed }

func TestAnalyzeReadError(t *testing.T) {
	if _, err := Analyze(errReaderAt{}, 100, Options{}); err == nil {
		t.Errorf("Analyze(failing reader) error = nil; want an error")
	}
}

func FuzzAnalyze(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.eml"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(nestedMessage(5))
	f.Fuzz(func(t *testing.T, raw []byte) {
		opt := Options{MaxDepth: 8, MaxParts: 50, MaxHeaderBytes: 4096, MaxAddresses: 5, SearchTextLimit: 1024}
		a, err := Analyze(bytes.NewReader(raw), int64(len(raw)), opt)
		if err != nil {
			t.Fatalf("Analyze() error = %v", err)
		}
		checkOffsets(t, a, int64(len(raw)))
		if len(a.SearchText) > 1024 {
			t.Errorf("SearchText has %d bytes; want at most 1024", len(a.SearchText))
		}
		if n := len(flatten(a)); n > 50 {
			t.Errorf("%d parts; want at most 50", n)
		}
		if d := treeDepth(&a.Root); d > 9 {
			t.Errorf("tree depth %d; want at most 9", d)
		}
	})
}

func BenchmarkAnalyze(b *testing.B) {
	var m bytes.Buffer
	m.WriteString("From: a@example.com\r\nTo: b@example.com\r\nSubject: bench\r\nMessage-ID: <bench@example.com>\r\nContent-Type: multipart/mixed; boundary=bench\r\n\r\n")
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 1)[:44] + "\r\n"
	att := strings.Repeat(strings.Repeat("QUJD", 19)+"\r\n", 1)
	for i := 0; m.Len() < 1<<20; i++ {
		if i%2 == 0 {
			m.WriteString("--bench\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
			for j := 0; j < 200; j++ {
				m.WriteString(line)
			}
		} else {
			m.WriteString("--bench\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=x.bin\r\n\r\n")
			for j := 0; j < 400; j++ {
				m.WriteString(att)
			}
		}
	}
	m.WriteString("--bench--\r\n")
	raw := m.Bytes()
	r := bytes.NewReader(raw)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Analyze(r, int64(len(raw)), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAnalyzePreviewAndAttachment(t *testing.T) {
	tests := []struct {
		name       string
		raw        string
		preview    string
		attachment bool
	}{
		{"html only", "Content-Type: text/html\r\n\r\n<html><head><title>T</title><script>var x=1;</script></head><body><p>Hello&nbsp;<b>you</b></p>\r\n<p>there</p></body></html>\r\n", "T Hello\u00a0you there", false},
		{"named image without disposition", "Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: text/plain\r\n\r\nsee image\r\n--z\r\nContent-Type: image/png; name=a.png\r\n\r\nPNG\r\n--z--\r\n", "see image", true},
		{"unnamed inline image", "Content-Type: multipart/related; boundary=z\r\n\r\n--z\r\nContent-Type: text/html\r\n\r\n<img src=cid:x>\r\n--z\r\nContent-Type: image/png\r\nContent-ID: <x>\r\n\r\nPNG\r\n--z--\r\n", "", false},
		{"text attachment is not the preview", "Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nfile\r\n--z\r\nContent-Type: text/html\r\n\r\n<p>body</p>\r\n--z--\r\n", "body", true},
		{"long preview", "\r\n" + strings.Repeat("ab  \r\n", 200), strings.TrimSpace(strings.Repeat("ab ", 86))[:256], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := analyzeBytes(t, []byte(tt.raw), Options{})
			if a.Preview != tt.preview {
				t.Errorf("Preview = %q; want %q", a.Preview, tt.preview)
			}
			if a.Attachment != tt.attachment {
				t.Errorf("Attachment = %v; want %v", a.Attachment, tt.attachment)
			}
		})
	}
}
