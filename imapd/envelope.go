package imapd

import (
	"strings"

	"github.com/emersion/go-imap/v2"

	"tidings/message"
	"tidings/storage"
)

// envelope renders ENVELOPE (RFC 3501 §7.4.2, RFC 9051 §7.5.2) from the
// raw header values kept at write time. It does not use go-imap's
// ExtractEnvelope, which drops group syntax and a whole address list when
// one address in it is malformed.
func envelope(e *storage.RawEnvelope) *imap.Envelope {
	env := &imap.Envelope{
		Date:      message.ParseDate(e.Date),
		Subject:   e.Subject,
		From:      parseAddressList(e.From),
		Sender:    parseAddressList(e.Sender),
		ReplyTo:   parseAddressList(e.ReplyTo),
		To:        parseAddressList(e.To),
		Cc:        parseAddressList(e.Cc),
		Bcc:       parseAddressList(e.Bcc),
		InReplyTo: msgIDs(e.InReplyTo),
	}
	if ids := msgIDs(e.MessageID); len(ids) > 0 {
		env.MessageID = ids[0]
	}
	return env
}

// msgIDs extracts <id> tokens (without brackets) from a raw header value.
func msgIDs(s string) []string {
	var out []string
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			return out
		}
		if id := strings.TrimSpace(s[i+1 : i+j]); id != "" && !strings.ContainsAny(id, " \t\"") {
			out = append(out, id)
		}
		s = s[i+j+1:]
	}
}

// addrToken is one lexical token of an address list (RFC 5322 §3.4).
type addrToken struct {
	kind byte // 'a' atom/dot-atom text, 'q' quoted string, 'c' comment, or the special itself: < > @ : ; , .
	text string
}

// lexAddresses splits a raw address list into tokens. Unterminated quotes,
// comments and angle brackets end at the end of the input.
func lexAddresses(s string) []addrToken {
	var toks []addrToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '"':
			var b strings.Builder
			i++
			for i < len(s) && s[i] != '"' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
				i++
			}
			i++
			toks = append(toks, addrToken{'q', b.String()})
		case c == '(':
			depth := 0
			var b strings.Builder
			for i < len(s) {
				ch := s[i]
				if ch == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if ch == '(' {
					depth++
					if depth > 1 {
						b.WriteByte(ch)
					}
				} else if ch == ')' {
					depth--
					if depth == 0 {
						i++
						break
					}
					b.WriteByte(ch)
				} else {
					b.WriteByte(ch)
				}
				i++
			}
			toks = append(toks, addrToken{'c', b.String()})
		case strings.IndexByte("<>@:;,.[", c) >= 0:
			if c == '[' { // domain literal
				j := strings.IndexByte(s[i:], ']')
				if j < 0 {
					j = len(s) - i - 1
				}
				toks = append(toks, addrToken{'a', s[i : i+j+1]})
				i += j + 1
				continue
			}
			toks = append(toks, addrToken{c, string(c)})
			i++
		default:
			j := i
			for j < len(s) && strings.IndexByte(" \t\r\n\"(<>@:;,.[", s[j]) < 0 {
				j++
			}
			toks = append(toks, addrToken{'a', s[i:j]})
			i = j
		}
	}
	return toks
}

// parseAddressList parses a raw address-list field. Groups become
// (NIL NIL "name" NIL) … (NIL NIL NIL NIL) (RFC 3501 §7.4.2); an address
// that cannot be understood is skipped and the others kept.
func parseAddressList(raw string) []imap.Address {
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	toks := lexAddresses(raw)
	var out []imap.Address
	inGroup := false
	var cur []addrToken
	flush := func() {
		if a, ok := parseMailbox(cur); ok {
			out = append(out, a)
		}
		cur = cur[:0]
	}
	angle := false
	for _, t := range toks {
		switch {
		case t.kind == '<':
			angle = true
			cur = append(cur, t)
		case t.kind == '>':
			angle = false
			cur = append(cur, t)
		case angle:
			cur = append(cur, t) // source routes contain ':' and ','
		case t.kind == ':' && !inGroup:
			out = append(out, imap.Address{Mailbox: phrase(cur)})
			if out[len(out)-1].Mailbox == "" {
				out[len(out)-1].Mailbox = "undisclosed-recipients"
			}
			inGroup = true
			cur = cur[:0]
		case t.kind == ';' && inGroup:
			flush()
			out = append(out, imap.Address{})
			inGroup = false
		case t.kind == ',':
			flush()
		default:
			cur = append(cur, t)
		}
	}
	flush()
	if inGroup {
		out = append(out, imap.Address{})
	}
	return out
}

// phrase joins words of a display name.
func phrase(toks []addrToken) string {
	var words []string
	for _, t := range toks {
		switch t.kind {
		case 'a', 'q':
			words = append(words, t.text)
		case '.':
			if n := len(words); n > 0 {
				words[n-1] += "."
			}
		}
	}
	return strings.Join(words, " ")
}

// parseMailbox parses one mailbox: [phrase] <addr-spec> or addr-spec with
// an optional comment as the name.
func parseMailbox(toks []addrToken) (imap.Address, bool) {
	if len(toks) == 0 {
		return imap.Address{}, false
	}
	lt := -1
	for i, t := range toks {
		if t.kind == '<' {
			lt = i
			break
		}
	}
	var name string
	var spec []addrToken
	if lt >= 0 {
		name = phrase(toks[:lt])
		for _, t := range toks[lt+1:] {
			if t.kind == '>' {
				break
			}
			spec = append(spec, t)
		}
		// Drop an obsolete source route (RFC 5322 §4.4): "@a,@b:".
		for i, t := range spec {
			if t.kind == ':' {
				spec = spec[i+1:]
				break
			}
		}
	} else {
		for _, t := range toks {
			if t.kind == 'c' {
				if name == "" {
					name = strings.TrimSpace(t.text)
				}
				continue
			}
			spec = append(spec, t)
		}
	}
	at := -1
	for i := len(spec) - 1; i >= 0; i-- {
		if spec[i].kind == '@' {
			at = i
			break
		}
	}
	if at <= 0 || at == len(spec)-1 {
		return imap.Address{}, false
	}
	local, ok := localPart(spec[:at])
	if !ok {
		return imap.Address{}, false
	}
	var host strings.Builder
	for _, t := range spec[at+1:] {
		switch t.kind {
		case 'a', '.':
			host.WriteString(t.text)
		case 'c':
		default:
			return imap.Address{}, false
		}
	}
	if host.Len() == 0 {
		return imap.Address{}, false
	}
	return imap.Address{Name: name, Mailbox: local, Host: host.String()}, true
}

// localPart renders the local part. A quoted local part whose content is
// a plain dot-atom is unquoted; otherwise the quotes are kept, so that
// mailbox "@" host is still a valid address for the client.
func localPart(toks []addrToken) (string, bool) {
	var b strings.Builder
	quoted := false
	for _, t := range toks {
		switch t.kind {
		case 'a':
			b.WriteString(t.text)
		case '.':
			b.WriteByte('.')
		case 'q':
			quoted = true
			b.WriteString(t.text)
		case 'c':
		default:
			return "", false
		}
	}
	s := b.String()
	if s == "" {
		return "", false
	}
	if quoted && !isDotAtom(s) {
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
		return `"` + r.Replace(s) + `"`, true
	}
	return s, true
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x7f || strings.IndexByte(`()<>[]:;@\,"`, c) >= 0 {
			if c < 0x80 {
				return false
			}
		}
	}
	return true
}

// bodyStructure renders BODY/BODYSTRUCTURE (RFC 9051 §7.5.2) from the
// stored part tree. Opaque parts (a cap was hit) and multiparts without
// children render as application/octet-stream leaves.
func bodyStructure(p *storage.Part, extended bool) imap.BodyStructure {
	if p.Type == "multipart" && len(p.Children) > 0 && !p.Opaque {
		mp := &imap.BodyStructureMultiPart{Subtype: orDefault(p.Subtype, "mixed")}
		for i := range p.Children {
			mp.Children = append(mp.Children, bodyStructure(&p.Children[i], extended))
		}
		if extended {
			mp.Extended = &imap.BodyStructureMultiPartExt{
				Params:      p.Params,
				Disposition: disposition(p),
				Language:    p.Language,
				Location:    p.Location,
			}
		}
		return mp
	}
	typ, sub := orDefault(p.Type, "text"), orDefault(p.Subtype, "plain")
	params := p.Params
	if p.Opaque || p.Type == "multipart" {
		typ, sub, params = "application", "octet-stream", nil
	}
	size := p.BodyEnd - p.BodyStart
	sp := &imap.BodyStructureSinglePart{
		Type: typ, Subtype: sub, Params: params,
		ID: p.ID, Description: p.Description, Encoding: p.Encoding,
		Size: uint32(min(max(size, 0), 1<<32-1)),
	}
	switch {
	case p.Message != nil && !p.Opaque:
		sp.MessageRFC822 = &imap.BodyStructureMessageRFC822{
			Envelope:      envelope(&p.Message.Envelope),
			BodyStructure: bodyStructure(&p.Message.Root, extended),
			NumLines:      p.Lines,
		}
	case typ == "text":
		sp.Text = &imap.BodyStructureText{NumLines: p.Lines}
	}
	if extended {
		sp.Extended = &imap.BodyStructureSinglePartExt{
			Disposition: disposition(p),
			Language:    p.Language,
			Location:    p.Location,
		}
	}
	return sp
}

func disposition(p *storage.Part) *imap.BodyStructureDisposition {
	if p.Disposition == "" {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: p.Disposition, Params: p.DispParams}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
