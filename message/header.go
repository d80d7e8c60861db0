package message

import (
	"bytes"
	"io"
	"mime"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
)

// maxParams caps the parameters kept per Content-Type or
// Content-Disposition field, and maxLanguages the Content-Language tags.
const (
	maxParams    = 256
	maxLanguages = 64
)

// parseContentType splits a Content-Type value into lower-case type and
// subtype and its parameters (RFC 2045 §5.1). ok is false when the value is
// missing or its type is not type/subtype; the parameters are still returned.
func parseContentType(s string) (typ, sub string, params map[string]string, ok bool) {
	mt, rest, _ := strings.Cut(s, ";")
	params = parseParams(rest)
	mt = strings.TrimSpace(stripComments(mt))
	t, st, found := strings.Cut(mt, "/")
	t, st = strings.TrimSpace(t), strings.TrimSpace(st)
	if !found || !isToken(t) || !isToken(st) {
		return "", "", params, false
	}
	return strings.ToLower(t), strings.ToLower(st), params, true
}

// parseDisposition splits a Content-Disposition value (RFC 2183).
func parseDisposition(s string) (string, map[string]string) {
	d, rest, _ := strings.Cut(s, ";")
	d = strings.ToLower(strings.TrimSpace(stripComments(d)))
	if !isToken(d) {
		d = ""
	}
	return d, parseParams(rest)
}

// parseEncoding returns the lower-case Content-Transfer-Encoding mechanism
// (RFC 2045 §6.1) without comments or junk after it.
func parseEncoding(s string) string {
	s = strings.TrimSpace(stripComments(s))
	if i := strings.IndexAny(s, " \t;"); i >= 0 {
		s = s[:i]
	}
	if !isToken(s) {
		return ""
	}
	return strings.ToLower(s)
}

// parseLanguage splits a Content-Language list (RFC 3282).
func parseLanguage(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, l := range strings.Split(stripComments(s), ",") {
		if l = strings.TrimSpace(l); l != "" && len(out) < maxLanguages {
			out = append(out, l)
		}
	}
	return out
}

// stripComments removes RFC 5322 comments ("(...)", nesting, quoted pairs)
// outside quoted strings.
func stripComments(s string) string {
	if !strings.Contains(s, "(") {
		return s
	}
	var b strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && (quoted || depth > 0) && i+1 < len(s):
			if depth == 0 {
				b.WriteByte(c)
				b.WriteByte(s[i+1])
			}
			i++
		case depth == 0 && c == '"':
			quoted = !quoted
			b.WriteByte(c)
		case !quoted && c == '(':
			depth++
		case !quoted && c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// isToken reports whether s is a non-empty RFC 2045 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return false
		}
	}
	return true
}

// parseParams parses "; name=value" parameters tolerantly: unquoted values
// may contain spaces, a missing closing quote ends at the end of the field,
// and junk between parameters is skipped. Names are lower-cased; the first
// occurrence wins. RFC 2231 continuations and extended values are then
// joined and decoded, and RFC 2047 encoded-words, which many mailers put in
// name and filename although RFC 2047 §5 forbids it, are decoded too, so
// every value is UTF-8 text.
func parseParams(s string) map[string]string {
	var raw map[string]string
	i := 0
	for i < len(s) && len(raw) < maxParams {
		for i < len(s) && (s[i] == ';' || s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) {
			break
		}
		j := i
		for j < len(s) && s[j] != '=' && s[j] != ';' {
			j++
		}
		name := strings.ToLower(strings.TrimSpace(s[i:j]))
		if j >= len(s) || s[j] == ';' {
			i = j
			continue
		}
		i = j + 1
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		var val string
		if i < len(s) && s[i] == '"' {
			var b strings.Builder
			i++
			for i < len(s) && s[i] != '"' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
				i++
			}
			i++ // the closing quote
			val = b.String()
			for i < len(s) && s[i] != ';' {
				i++
			}
		} else {
			j = i
			for j < len(s) && s[j] != ';' {
				j++
			}
			val = strings.TrimSpace(s[i:j])
			i = j
		}
		if !isToken(name) {
			continue
		}
		if raw == nil {
			raw = make(map[string]string)
		}
		if _, dup := raw[name]; !dup {
			raw[name] = val
		}
	}
	return joinParams(raw)
}

type segment struct {
	idx int
	ext bool // percent-encoded (a trailing '*')
	val string
}

// joinParams applies RFC 2231: name*0, name*1*, ... continuations (§3)
// and charset'language'%XX extended values (§4). An extended value wins over
// a plain one of the same name.
func joinParams(raw map[string]string) map[string]string {
	if raw == nil {
		return nil
	}
	out := make(map[string]string, len(raw))
	var groups map[string][]segment
	for k, v := range raw {
		star := strings.IndexByte(k, '*')
		if star < 0 {
			if _, set := out[k]; !set {
				out[k] = decodeParamWords(v)
			}
			continue
		}
		base, rest := k[:star], k[star+1:]
		if base == "" || !isToken(base) {
			continue
		}
		var sg segment
		switch {
		case rest == "":
			sg = segment{idx: -1, ext: true, val: v}
		default:
			num, ext := strings.CutSuffix(rest, "*")
			n, err := strconv.Atoi(num)
			if err != nil || n < 0 || n >= maxParams || (len(num) > 1 && num[0] == '0') {
				continue
			}
			sg = segment{idx: n, ext: ext, val: v}
		}
		if groups == nil {
			groups = make(map[string][]segment)
		}
		groups[base] = append(groups[base], sg)
	}
	for base, segs := range groups {
		if v, ok := joinSegments(segs); ok {
			out[base] = v
		}
	}
	return out
}

func joinSegments(segs []segment) (string, bool) {
	for _, sg := range segs {
		if sg.idx == -1 {
			// name*=charset'lang'value: a single extended value.
			return decodeExtended(sg.val, true), true
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].idx < segs[j].idx })
	if len(segs) == 0 || segs[0].idx != 0 {
		return "", false
	}
	var b []byte
	cs := ""
	anyExt := false
	for i, sg := range segs {
		if sg.idx != i {
			break // a gap or a duplicate ends the value
		}
		v := sg.val
		if sg.ext {
			anyExt = true
			if i == 0 {
				if c, rest, ok := splitExtended(v); ok {
					cs, v = c, rest
				}
			}
			b = append(b, percentDecode(v)...)
		} else {
			b = append(b, v...)
		}
	}
	if !anyExt {
		return decodeParamWords(string(b)), true
	}
	return decodeCharset(cs, b), true
}

// decodeExtended decodes one RFC 2231 §4 extended value.
func decodeExtended(v string, withCharset bool) string {
	cs := ""
	if withCharset {
		if c, rest, ok := splitExtended(v); ok {
			cs, v = c, rest
		}
	}
	return decodeCharset(cs, percentDecode(v))
}

// splitExtended splits charset'language'value.
func splitExtended(v string) (cs, rest string, ok bool) {
	c, r, ok1 := strings.Cut(v, "'")
	if !ok1 {
		return "", v, false
	}
	_, r, ok2 := strings.Cut(r, "'")
	if !ok2 {
		return "", v, false
	}
	return c, r, true
}

func percentDecode(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if h, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b = append(b, byte(h))
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return b
}

// decodeParamWords decodes RFC 2047 encoded-words in a parameter value.
func decodeParamWords(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	return decodeHeader(v)
}

// decodeCharset converts b from the named charset to valid UTF-8. Unknown
// charsets and invalid bytes become U+FFFD rather than errors.
func decodeCharset(cs string, b []byte) string {
	switch strings.ToLower(strings.TrimSpace(cs)) {
	case "", "us-ascii", "ascii", "utf-8", "utf8":
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	r, err := charset.Reader(cs, bytes.NewReader(b))
	if err != nil {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	// A decoder produces at most a few bytes per input byte; the limit only
	// guards against a pathological one.
	out, err := io.ReadAll(io.LimitReader(r, int64(len(b))*4+16))
	if err != nil {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return strings.ToValidUTF8(string(out), "\uFFFD")
}

// decodeHeader decodes RFC 2047 encoded-words in a header value, in every
// charset that go-message/charset knows, and returns valid UTF-8. On any
// decoding failure the raw value is returned (made valid UTF-8).
func decodeHeader(s string) string {
	if !strings.Contains(s, "=?") {
		if utf8.ValidString(s) {
			return s
		}
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	d := mime.WordDecoder{CharsetReader: charset.Reader}
	out, err := d.DecodeHeader(s)
	if err != nil {
		out = s
	}
	return strings.ToValidUTF8(out, "\uFFFD")
}

// capAddresses cuts an address-list field after max addresses, counting the
// commas that separate addresses outside quoted strings, comments, angle
// brackets and domain literals. It reports whether it cut.
func capAddresses(s string, max int) (string, bool) {
	if len(s) < 2*max || strings.Count(s, ",") < max {
		return s, false
	}
	n := 0
	depth, quoted, angle, literal := 0, false, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && (quoted || depth > 0):
			i++
		case quoted:
			if c == '"' {
				quoted = false
			}
		case depth > 0:
			if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case c == '"':
			quoted = true
		case c == '(':
			depth = 1
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == '[':
			literal = true
		case c == ']':
			literal = false
		case c == ',' && !angle && !literal:
			n++
			if n >= max {
				return strings.TrimRight(s[:i], " \t"), true
			}
		}
	}
	return s, false
}

// msgIDs extracts up to max message ids (RFC 5322 §3.6.4) from a field
// value, without angle brackets. Text outside brackets (comments, phrases
// that old mailers put in In-Reply-To) is ignored; a value without any
// brackets is taken as one bare id if it is a single word.
func msgIDs(s string, max int) []string {
	var ids []string
	rest := s
	for len(ids) < max {
		i := strings.IndexByte(rest, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i+1:], '>')
		if j < 0 {
			break
		}
		id := removeSpace(rest[i+1 : i+1+j])
		rest = rest[i+1+j+1:]
		if id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 && max > 0 {
		if t := strings.TrimSpace(stripComments(s)); t != "" && !strings.ContainsAny(t, " \t<>") {
			ids = append(ids, t)
		}
	}
	return ids
}

func removeSpace(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}
