package sqlstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"strings"

	"golang.org/x/text/encoding/htmlindex"

	"tidings/storage"
)

// Caps of the header fields kept for SEARCH HEADER.
const (
	maxHeaderBytes  = 64 << 10
	maxHeaderFields = 200
	maxHeaderValue  = 2 << 10
)

// header is one top-level header field as searched: name lower-case, value
// unfolded, RFC 2047-decoded and folded.
type header struct {
	name  string
	value string
}

var wordDecoder = &mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
	enc, err := htmlindex.Get(charset)
	if err != nil {
		return nil, err
	}
	return enc.NewDecoder().Reader(r), nil
}}

// readHeaders parses the top-level header of a message (at most
// maxHeaderBytes of it). headerLen 0 means "find the blank line".
func readHeaders(r io.ReaderAt, size, headerLen int64) []header {
	n := size
	if headerLen > 0 {
		n = min(n, headerLen)
	}
	n = min(n, maxHeaderBytes)
	buf := make([]byte, n)
	k, _ := r.ReadAt(buf, 0)
	return parseHeaders(buf[:k])
}

func parseHeaders(b []byte) []header {
	var out []header
	var cur []byte
	flush := func() {
		if cur == nil || len(out) >= maxHeaderFields {
			cur = nil
			return
		}
		i := bytes.IndexByte(cur, ':')
		if i <= 0 {
			cur = nil
			return
		}
		name := strings.ToLower(strings.TrimSpace(string(cur[:i])))
		raw := strings.TrimSpace(string(cur[i+1:]))
		if dec, err := wordDecoder.DecodeHeader(raw); err == nil {
			raw = dec
		}
		v := sanitizeText(storage.Fold(raw))
		out = append(out, header{name: sanitizeText(name), value: capText(v, maxHeaderValue)})
		cur = nil
	}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // end of header
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur != nil {
				cur = append(cur, ' ')
				cur = append(cur, bytes.TrimLeft(line, " \t")...)
			}
			continue
		}
		flush()
		cur = append([]byte{}, line...)
	}
	flush()
	return out
}

// sourceHeaders reads the header fields of a message about to be stored.
func sourceHeaders(src storage.BlobSource, a *storage.Analysis) ([]header, error) {
	r, err := src.Open()
	if err != nil {
		return nil, fmt.Errorf("open message: %w", err)
	}
	defer r.Close()
	var hl int64
	if a != nil {
		hl = a.HeaderLen
	}
	return readHeaders(r, src.Size(), hl), nil
}

// putHeaders replaces the header rows of one entry.
func putHeaders(ctx context.Context, tx *Tx, mailbox storage.MailboxID, uid storage.UID, hs []header) error {
	if _, err := tx.Exec(ctx, `DELETE FROM message_headers WHERE mailbox_id = ? AND uid = ?`, mailbox, int64(uid)); err != nil {
		return err
	}
	for start := 0; start < len(hs); start += 50 {
		part := hs[start:min(len(hs), start+50)]
		var q strings.Builder
		q.WriteString(`INSERT INTO message_headers (mailbox_id, uid, seq, name, value) VALUES `)
		args := make([]any, 0, 5*len(part))
		for i, h := range part {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, ?)")
			args = append(args, mailbox, int64(uid), int64(start+i), h.name, h.value)
		}
		if _, err := tx.Exec(ctx, q.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// copyHeaders copies one entry's header rows to a new entry.
func copyHeaders(ctx context.Context, tx *Tx, srcMailbox storage.MailboxID, srcUID storage.UID, dstMailbox storage.MailboxID, dstUID storage.UID) error {
	_, err := tx.Exec(ctx, `INSERT INTO message_headers (mailbox_id, uid, seq, name, value)
		SELECT ?, ?, seq, name, value FROM message_headers WHERE mailbox_id = ? AND uid = ?`,
		dstMailbox, int64(dstUID), srcMailbox, int64(srcUID))
	return err
}
