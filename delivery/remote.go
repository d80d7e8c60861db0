package delivery

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"tidings/storage"
)

// rcptResult is the outcome of one recipient in one attempt.
type rcptResult struct {
	status storage.RecipientStatus // Pending = deferred
	reply  string
	host   string // the host that answered, for the DSN
}

// attempt delivers one queued message to its destination over one SMTP
// transaction per connection: all its recipients in one MAIL/RCPT*/DATA
// (DESIGN.md §Mail flow, grouped by destination). It never touches the
// store's transactions: the body is read chunk by chunk through
// OpenQueueBlob while the connection is open.
func (r *Runner) attempt(ctx context.Context, m storage.QueueMessage, rcpts []storage.QueueRecipient, body io.ReaderAt, size int64) []rcptResult {
	results := make([]rcptResult, len(rcpts))
	setAll := func(st storage.RecipientStatus, reply, host string) {
		for i := range results {
			results[i] = rcptResult{status: st, reply: reply, host: host}
		}
	}
	var targets []hop
	if r.cfg.Smarthost != "" {
		host, port, err := net.SplitHostPort(r.cfg.Smarthost)
		if err != nil {
			setAll(storage.RecipientPending, "451 4.3.5 bad smarthost setting: "+err.Error(), "")
			return results
		}
		addrs := []string{host}
		if net.ParseIP(host) == nil {
			addrs, err = r.cfg.Resolver.LookupHost(ctx, host)
		}
		if err != nil {
			setAll(storage.RecipientPending, fmt.Sprintf("451 4.4.3 smarthost %s: %v", host, err), "")
			return results
		}
		for _, a := range addrs {
			targets = append(targets, hop{host: host, addr: net.JoinHostPort(a, port)})
		}
	} else {
		hs, err := hops(ctx, r.cfg.Resolver, m.Destination, r.cfg.Port)
		var pe permError
		if errors.As(err, &pe) {
			setAll(storage.RecipientFailed, pe.reply, "")
			return results
		}
		if err != nil {
			setAll(storage.RecipientPending, err.Error(), "")
			return results
		}
		targets = hs
	}
	lastErr := "451 4.4.1 no answer from any mail host"
	for _, h := range targets {
		done, err := r.session(ctx, h, m, rcpts, body, size, results)
		if done {
			return results
		}
		if err != nil {
			lastErr = fmt.Sprintf("451 4.4.1 %s: %v", h.host, err)
			r.log.Debug("mail host failed", "id", m.ID, "host", h.host, "addr", h.addr, "err", err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	setAll(storage.RecipientPending, lastErr, "")
	return results
}

// smtpReply renders a go-smtp error as the reply line to record.
func smtpReply(err error) (string, int) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		code := se.Code
		msg := strings.ReplaceAll(se.Message, "\n", " ")
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			return fmt.Sprintf("%d %d.%d.%d %s", code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], msg), code
		}
		return fmt.Sprintf("%d %s", code, msg), code
	}
	return "451 4.4.2 " + err.Error(), 0
}

// session talks to one host. done reports that the recipients' results are
// final for this attempt (a reply was obtained); otherwise the caller tries
// the next host.
func (r *Runner) session(ctx context.Context, h hop, m storage.QueueMessage, rcpts []storage.QueueRecipient,
	body io.ReaderAt, size int64, results []rcptResult) (bool, error) {
	d := net.Dialer{Timeout: r.cfg.ConnectTimeout}
	conn, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return false, err
	}
	// Bound the whole session by the context too: go-smtp sets its own
	// deadlines per command, so closing is the one sure interruption.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	smarthost := r.cfg.Smarthost != ""
	tlsMode := "opportunistic"
	if smarthost {
		tlsMode = r.cfg.SmarthostTLS
	}
	tlsCfg := r.tlsConfig(h.host, smarthost)
	var c *smtp.Client
	encrypted := false
	if tlsMode == "tls" {
		tc := tls.Client(conn, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return false, fmt.Errorf("tls: %w", err)
		}
		c = smtp.NewClient(tc)
		encrypted = true
	} else {
		nc, tlsed, err := r.preTLS(ctx, conn, tlsCfg, tlsMode)
		if err != nil {
			conn.Close()
			var pe permError
			if errors.As(err, &pe) && replyCode(pe.reply) >= 500 {
				// A 5xx greeting decides this attempt; a 4xx one (busy)
				// sends us on to the next host, as a refused connection does.
				for i := range results {
					results[i] = rcptResult{status: replyStatus(replyCode(pe.reply)), reply: pe.reply, host: h.host}
				}
				return true, nil
			}
			return false, err
		}
		c = smtp.NewClient(nc)
		encrypted = tlsed
	}
	defer c.Close()
	c.CommandTimeout = r.cfg.CommandTimeout
	c.SubmissionTimeout = r.cfg.DataTimeout
	if err := c.Hello(r.cfg.Hostname); err != nil {
		return false, fmt.Errorf("ehlo: %w", err)
	}
	fail := func(err error) (bool, error) {
		reply, code := smtpReply(err)
		if code == 0 {
			return false, err // connection trouble: next host
		}
		for i := range results {
			results[i] = rcptResult{status: replyStatus(code), reply: reply, host: h.host}
		}
		c.Quit()
		return true, nil
	}
	if smarthost && r.cfg.SmarthostUser != "" {
		if !encrypted && !isLoopback(h.addr) {
			return false, errors.New("refusing AUTH without TLS")
		}
		if err := c.Auth(sasl.NewPlainClient("", r.cfg.SmarthostUser, r.cfg.SmarthostPassword)); err != nil {
			reply, code := smtpReply(err)
			if code == 0 {
				return false, err
			}
			// A rejected login is a configuration problem of ours: defer
			// rather than bounce, so fixing the password delivers the mail.
			for i := range results {
				results[i] = rcptResult{status: storage.RecipientPending, reply: "451 4.7.0 smarthost refused login: " + reply, host: h.host}
			}
			c.Quit()
			return true, nil
		}
	}
	// RFC 6531 §3.2: an SMTPUTF8 message cannot go to a server without
	// SMTPUTF8; we do not downgrade.
	if ok, _ := c.Extension("SMTPUTF8"); m.SMTPUTF8 && !ok {
		for i := range results {
			results[i] = rcptResult{status: storage.RecipientFailed, host: h.host,
				reply: "550 5.6.7 " + h.host + " does not support SMTPUTF8, required by this message"}
		}
		c.Quit()
		return true, nil
	}
	eight, _ := c.Extension("8BITMIME")
	convert := m.EightBit && !eight
	opts := &smtp.MailOptions{UTF8: m.SMTPUTF8, EnvelopeID: m.ENVID}
	if !convert {
		opts.Size = int64(len(m.Prefix)) + size
	}
	switch strings.ToUpper(m.RET) {
	case "FULL":
		opts.Return = smtp.DSNReturnFull
	case "HDRS":
		opts.Return = smtp.DSNReturnHeaders
	}
	if err := c.Mail(m.From, opts); err != nil {
		return fail(err)
	}
	var accepted []int
	for i, rc := range rcpts {
		if err := c.Rcpt(rc.Address, rcptOptions(rc)); err != nil {
			reply, code := smtpReply(err)
			if code == 0 {
				return false, err
			}
			results[i] = rcptResult{status: replyStatus(code), reply: reply, host: h.host}
			continue
		}
		accepted = append(accepted, i)
	}
	if len(accepted) == 0 {
		c.Quit()
		return true, nil
	}
	w, err := c.Data()
	if err != nil {
		reply, code := smtpReply(err)
		if code == 0 {
			return false, err
		}
		for _, i := range accepted {
			results[i] = rcptResult{status: replyStatus(code), reply: reply, host: h.host}
		}
		c.Quit()
		return true, nil
	}
	// The bytes go through the CRLF normaliser: go-smtp's dot-writer passes
	// a lone CR through, and we must never relay a smuggling payload
	// (CVE-2023-51764 family).
	src := io.MultiReader(bytes.NewReader(m.Prefix), io.NewSectionReader(body, 0, size))
	var werr error
	cw := &crlfWriter{w: w}
	if convert {
		werr = toQuotedPrintable(cw, src)
	} else {
		_, werr = io.Copy(cw, src)
	}
	if werr == nil {
		werr = cw.Flush()
	}
	if werr != nil {
		return false, fmt.Errorf("data: %w", werr)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		reply, code := smtpReply(err)
		if code == 0 {
			// No reply to the final dot: the peer may have the message.
			// Deferring risks a duplicate, which beats losing it (RFC 5321
			// §4.1.1.4 / §6.1).
			return false, err
		}
		for _, i := range accepted {
			results[i] = rcptResult{status: replyStatus(code), reply: reply, host: h.host}
		}
		c.Quit()
		return true, nil
	}
	for _, i := range accepted {
		results[i] = rcptResult{status: storage.RecipientDelivered, reply: "250 " + strings.ReplaceAll(resp.StatusText, "\n", " "), host: h.host}
	}
	c.Quit()
	return true, nil
}

func replyStatus(code int) storage.RecipientStatus {
	if code >= 500 {
		return storage.RecipientFailed
	}
	if code >= 200 && code < 300 {
		return storage.RecipientDelivered
	}
	return storage.RecipientPending
}

func rcptOptions(rc storage.QueueRecipient) *smtp.RcptOptions {
	o := &smtp.RcptOptions{}
	if rc.Notify != "" {
		for _, n := range strings.Split(rc.Notify, ",") {
			o.Notify = append(o.Notify, smtp.DSNNotify(strings.ToUpper(strings.TrimSpace(n))))
		}
	}
	if typ, addr, ok := strings.Cut(rc.ORCPT, ";"); ok && addr != "" {
		switch strings.ToLower(strings.TrimSpace(typ)) {
		case "rfc822":
			if isASCII(addr) {
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, strings.TrimSpace(addr)
			} else {
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, strings.TrimSpace(addr)
			}
		case "utf-8":
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, strings.TrimSpace(addr)
		}
	}
	return o
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (r *Runner) tlsConfig(host string, smarthost bool) *tls.Config {
	var cfg *tls.Config
	if r.cfg.TLSConfig != nil {
		cfg = r.cfg.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.ServerName = host
	if !smarthost {
		// Opportunistic STARTTLS to an MX (RFC 3207 §4.1, RFC 7435): any
		// certificate is better than plaintext; without MTA-STS or DANE
		// there is nothing to verify it against.
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// preTLS runs the greeting and EHLO itself, and STARTTLS when offered (or
// required), because go-smtp's client has no public STARTTLS on an open
// session. It returns a connection for go-smtp that replays a greeting, so
// go-smtp's own EHLO learns the extensions of the (possibly encrypted)
// session. A 4xx/5xx greeting is returned as permError (a reply).
func (r *Runner) preTLS(ctx context.Context, conn net.Conn, cfg *tls.Config, mode string) (net.Conn, bool, error) {
	conn.SetDeadline(time.Now().Add(r.cfg.CommandTimeout))
	defer conn.SetDeadline(time.Time{})
	tp := textproto.NewConn(conn)
	code, msg, err := tp.ReadResponse(0)
	if err != nil && code == 0 {
		return nil, false, err
	}
	if code != 220 {
		return nil, false, permError{fmt.Sprintf("%d %s", code, strings.ReplaceAll(msg, "\n", " "))}
	}
	plain := func() net.Conn {
		return &greetedConn{Conn: conn, greeting: []byte("220 " + r.cfg.Hostname + " resumed\r\n")}
	}
	if mode == "none" {
		return plain(), false, nil
	}
	id, err := tp.Cmd("EHLO %s", r.cfg.Hostname)
	if err != nil {
		return nil, false, err
	}
	tp.StartResponse(id)
	code, msg, err = tp.ReadResponse(250)
	tp.EndResponse(id)
	hasTLS := false
	if err == nil {
		for _, l := range strings.Split(msg, "\n")[1:] {
			if strings.EqualFold(strings.Fields(l + " x")[0], "STARTTLS") {
				hasTLS = true
			}
		}
	} else if code == 0 {
		return nil, false, err
	}
	if !hasTLS {
		if mode == "starttls" {
			return nil, false, errors.New("smarthost does not offer STARTTLS")
		}
		return plain(), false, nil
	}
	id, err = tp.Cmd("STARTTLS")
	if err != nil {
		return nil, false, err
	}
	tp.StartResponse(id)
	_, _, err = tp.ReadResponse(220)
	tp.EndResponse(id)
	if err != nil {
		if mode == "starttls" {
			return nil, false, fmt.Errorf("starttls: %w", err)
		}
		// Opportunistic: a refused STARTTLS leaves the session usable.
		return plain(), false, nil
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, false, fmt.Errorf("tls handshake: %w", err)
	}
	return &greetedConn{Conn: tc, greeting: []byte("220 " + r.cfg.Hostname + " resumed\r\n")}, true, nil
}

// greetedConn replays a greeting before the peer's bytes, so a fresh
// go-smtp client can take over a session whose greeting was already read.
type greetedConn struct {
	net.Conn
	greeting []byte
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if len(g.greeting) > 0 {
		n := copy(p, g.greeting)
		g.greeting = g.greeting[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

// crlfWriter turns every lone CR and lone LF into CRLF (RFC 5321 §2.3.8:
// CR and LF only as a pair). Flush writes a CR left pending at the end.
type crlfWriter struct {
	w      io.Writer
	cr     bool
	buf    []byte
	lastLF bool
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	c.buf = c.buf[:0]
	for _, b := range p {
		if c.cr {
			c.cr = false
			c.buf = append(c.buf, '\r', '\n')
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\r':
			c.cr = true
		case '\n':
			c.buf = append(c.buf, '\r', '\n')
		default:
			c.buf = append(c.buf, b)
		}
	}
	if len(c.buf) > 0 {
		c.lastLF = c.buf[len(c.buf)-1] == '\n'
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush ends the data: a pending CR becomes CRLF, and the data ends with
// CRLF so the terminating dot is on a line of its own.
func (c *crlfWriter) Flush() error {
	if c.cr {
		c.cr = false
		c.lastLF = true
		_, err := c.w.Write([]byte("\r\n"))
		return err
	}
	return nil
}

// newCRLFReader returns r with lone CRs and LFs turned into CRLF.
func newCRLFReader(r io.Reader) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		cw := &crlfWriter{w: pw}
		_, err := io.Copy(cw, r)
		if err == nil {
			err = cw.Flush()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// toQuotedPrintable copies a message for a peer without 8BITMIME (RFC
// 6152 §3: we must not send 8-bit data to it), re-encoding 8-bit bodies as
// quoted-printable (RFC 2045 §6.7). Limits, written down: only a
// single-part message, or the leaves of multipart/* containers one level
// at a time recursively, are converted; a message/rfc822 part with 8-bit
// content and a part already declared binary are sent as they are (the
// peer may still accept them; many do).
func toQuotedPrintable(w io.Writer, r io.Reader) error {
	br := bufio.NewReader(r)
	return convertEntity(w, br, 0)
}

func convertEntity(w io.Writer, br *bufio.Reader, depth int) error {
	hdr, err := readHeader(br)
	if err != nil {
		return err
	}
	ctype, boundary := contentType(hdr)
	if strings.HasPrefix(ctype, "multipart/") && boundary != "" && depth < 20 {
		w.Write(hdr)
		return convertMultipart(w, br, boundary, depth)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		return err
	}
	cte := strings.ToLower(fieldValue(hdr, "Content-Transfer-Encoding"))
	if isASCII(string(body)) || cte == "binary" || cte == "base64" || cte == "quoted-printable" || strings.HasPrefix(ctype, "message/") {
		w.Write(hdr)
		_, err = w.Write(body)
		return err
	}
	w.Write(replaceCTE(hdr, "quoted-printable"))
	qw := quotedprintable.NewWriter(w)
	if _, err := qw.Write(body); err != nil {
		return err
	}
	// The writer turns each CRLF into a hard line break (RFC 2045 §6.7
	// rule 4), the last one included.
	return qw.Close()
}

// convertMultipart copies a multipart body part by part; each part's body
// is converted as an entity of its own.
func convertMultipart(w io.Writer, br *bufio.Reader, boundary string, depth int) error {
	delim := "--" + boundary
	var part bytes.Buffer
	inPart := false
	flush := func() error {
		if !inPart {
			_, err := w.Write(part.Bytes())
			part.Reset()
			return err
		}
		b := part.Bytes()
		// The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
		b = bytes.TrimSuffix(b, []byte("\r\n"))
		err := convertEntity(w, bufio.NewReader(bytes.NewReader(b)), depth+1)
		w.Write([]byte("\r\n"))
		part.Reset()
		return err
	}
	for {
		line, err := br.ReadBytes('\n')
		trimmed := strings.TrimRight(string(line), " \t\r\n")
		if trimmed == delim || trimmed == delim+"--" {
			if ferr := flush(); ferr != nil {
				return ferr
			}
			w.Write(line)
			if trimmed == delim+"--" {
				_, err := io.Copy(w, br) // epilogue
				return err
			}
			inPart = true
		} else {
			part.Write(line)
		}
		if err == io.EOF {
			return flush()
		}
		if err != nil {
			return err
		}
	}
}

// readHeader reads a header block including the blank line ending it.
func readHeader(br *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		line, err := br.ReadBytes('\n')
		out = append(out, line...)
		if len(bytes.TrimRight(line, "\r\n")) == 0 || err != nil {
			if err == io.EOF {
				err = nil
			}
			return out, err
		}
	}
}

// fieldValue returns the unfolded value of the first field called name.
func fieldValue(hdr []byte, name string) string {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(hdr)))
	h, _ := tp.ReadMIMEHeader()
	return strings.TrimSpace(h.Get(name))
}

func contentType(hdr []byte) (string, string) {
	v := fieldValue(hdr, "Content-Type")
	typ, params, _ := strings.Cut(v, ";")
	boundary := ""
	for _, p := range strings.Split(params, ";") {
		k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "boundary") {
			boundary = strings.Trim(strings.TrimSpace(val), `"`)
		}
	}
	return strings.ToLower(strings.TrimSpace(typ)), boundary
}

// replaceCTE drops every Content-Transfer-Encoding field (with its
// continuation lines) and adds one with value before the blank line.
func replaceCTE(hdr []byte, value string) []byte {
	var out []byte
	skip := false
	lines := bytes.SplitAfter(hdr, []byte("\n"))
	for _, l := range lines {
		if len(l) == 0 {
			continue
		}
		if len(bytes.TrimRight(l, "\r\n")) == 0 {
			out = append(out, "Content-Transfer-Encoding: "+value+"\r\n"...)
			out = append(out, l...)
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			if !skip {
				out = append(out, l...)
			}
			continue
		}
		skip = bytes.HasPrefix(bytes.ToLower(l), []byte("content-transfer-encoding:"))
		if !skip {
			out = append(out, l...)
		}
	}
	return out
}
