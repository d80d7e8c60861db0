package delivery

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"tidings/storage"
)

// dsnAction is the RFC 3464 §2.3.3 Action of a reported recipient.
type dsnAction string

const (
	actionFailed  dsnAction = "failed"
	actionDelayed dsnAction = "delayed"
)

// dsnRecipient is one recipient reported in a DSN.
type dsnRecipient struct {
	r         storage.QueueRecipient
	reply     string // the SMTP reply or local error
	remoteMTA string // host that answered, "" when none did
}

// notifies reports whether a recipient's RFC 3461 NOTIFY asks for a DSN of
// kind ("FAILURE" or "DELAY"). Absent NOTIFY means FAILURE and DELAY
// (RFC 3461 §4.1: failures must be reported, delays may be; we do).
func notifies(notify, kind string) bool {
	if notify == "" {
		return kind == "FAILURE" || kind == "DELAY"
	}
	for _, k := range strings.Split(notify, ",") {
		if strings.EqualFold(strings.TrimSpace(k), kind) {
			return true
		}
	}
	return false
}

var enhancedRE = regexp.MustCompile(`\b([245])\.(\d{1,3})\.(\d{1,3})\b`)

// statusOf extracts the RFC 3463 status from a reply ("550 5.1.1 ..."),
// or makes the generic one of its class.
func statusOf(reply string, permanent bool) string {
	if m := enhancedRE.FindStringSubmatch(reply); m != nil {
		return m[1] + "." + m[2] + "." + m[3]
	}
	if permanent {
		return "5.0.0"
	}
	return "4.0.0"
}

// replyCode is the three-digit code a reply starts with, or 0.
func replyCode(reply string) int {
	if len(reply) < 3 {
		return 0
	}
	n := 0
	for _, c := range reply[:3] {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// rfc822Addr strips an ORCPT's address type ("rfc822;a@b" → "rfc822; a@b").
func orcptField(orcpt string) string {
	typ, addr, ok := strings.Cut(orcpt, ";")
	if !ok {
		return "rfc822; " + orcpt
	}
	return strings.TrimSpace(typ) + "; " + strings.TrimSpace(addr)
}

// headerValue keeps a value on one header line.
func headerValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// dsnInput is what one DSN reports.
type dsnInput struct {
	hostname string // Reporting-MTA
	from     string // From: of the report
	msg      storage.QueueMessage
	action   dsnAction
	rcpts    []dsnRecipient
	original io.ReaderAt // prefix + blob of the original message
	origSize int64
	now      time.Time
}

// maxReturned is the largest original returned whole; a larger one is
// returned as its header only (RFC 3461 §4.3 leaves the choice to the MTA
// when returning the full content is impractical).
const maxReturned = 10 << 20

// buildDSN writes an RFC 3464 delivery status notification: a
// multipart/report (RFC 6522) with a human-readable part, the
// message/delivery-status part with per-message and per-recipient fields,
// and the original message (RET=FULL or unspecified) or its header
// (RET=HDRS, delay warnings, or a large original) as text/rfc822-headers.
func buildDSN(in dsnInput) []byte {
	var b bytes.Buffer
	boundary := randomToken()
	id := randomToken()
	crlf := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	subject := "Undelivered Mail Returned to Sender"
	if in.action == actionDelayed {
		subject = "Delayed Mail (still being retried)"
	}
	crlf("From: Mail Delivery System <%s>", in.from)
	crlf("To: <%s>", headerValue(in.msg.From))
	crlf("Subject: %s", subject)
	crlf("Date: %s", in.now.Format(time.RFC1123Z))
	crlf("Message-ID: <%s@%s>", id, in.hostname)
	crlf("Auto-Submitted: auto-replied") // RFC 3834 §5
	crlf("MIME-Version: 1.0")
	crlf("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"", boundary)
	crlf("")
	crlf("This is a MIME-encapsulated message.")
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: text/plain; charset=utf-8")
	crlf("Content-Transfer-Encoding: 8bit")
	crlf("")
	if in.action == actionDelayed {
		crlf("This is the mail system at %s.", in.hostname)
		crlf("")
		crlf("Your message (queue id %s) could not be delivered yet to the", in.msg.ID)
		crlf("recipients below. It will be retried until %s;", in.msg.Expires.UTC().Format(time.RFC1123Z))
		crlf("you do not need to send it again.")
	} else {
		crlf("This is the mail system at %s.", in.hostname)
		crlf("")
		crlf("Your message (queue id %s) could not be delivered to the", in.msg.ID)
		crlf("recipients below. This is a permanent error.")
	}
	crlf("")
	for _, r := range in.rcpts {
		crlf("<%s>: %s", headerValue(r.r.Address), headerValue(r.reply))
	}
	crlf("")
	// RFC 6533 §6: a UTF-8 address needs the global status type, whose
	// address fields may carry UTF-8 ("utf-8;" type).
	global := false
	for _, r := range in.rcpts {
		global = global || !isASCII(r.r.Address) || !isASCII(r.r.ORCPT)
	}
	addrType := "rfc822"
	crlf("--%s", boundary)
	if global {
		addrType = "utf-8"
		crlf("Content-Type: message/global-delivery-status")
	} else {
		crlf("Content-Type: message/delivery-status")
	}
	crlf("")
	// RFC 3464 §2.2: per-message fields.
	crlf("Reporting-MTA: dns; %s", in.hostname)
	if in.msg.ENVID != "" {
		crlf("Original-Envelope-Id: %s", headerValue(in.msg.ENVID))
	}
	crlf("Arrival-Date: %s", in.msg.Created.Format(time.RFC1123Z))
	for _, r := range in.rcpts {
		// RFC 3464 §2.3: per-recipient fields, each group after a blank line.
		crlf("")
		if r.r.ORCPT != "" {
			crlf("Original-Recipient: %s", headerValue(orcptField(r.r.ORCPT)))
		}
		crlf("Final-Recipient: %s; %s", addrType, headerValue(r.r.Address))
		crlf("Action: %s", in.action)
		crlf("Status: %s", statusOf(r.reply, in.action == actionFailed && replyCode(r.reply)/100 != 4))
		if r.remoteMTA != "" {
			crlf("Remote-MTA: dns; %s", r.remoteMTA)
		}
		if c := replyCode(r.reply); c != 0 {
			crlf("Diagnostic-Code: smtp; %s", headerValue(r.reply))
		} else if r.reply != "" {
			crlf("Diagnostic-Code: X-Tidings; %s", headerValue(r.reply))
		}
		if !r.r.LastAttempt.IsZero() {
			crlf("Last-Attempt-Date: %s", r.r.LastAttempt.Format(time.RFC1123Z))
		}
		if in.action == actionDelayed {
			crlf("Will-Retry-Until: %s", in.msg.Expires.Format(time.RFC1123Z))
		}
	}
	crlf("")
	crlf("--%s", boundary)
	full := in.action == actionFailed && !strings.EqualFold(in.msg.RET, "HDRS") && in.origSize <= maxReturned
	if full {
		crlf("Content-Type: message/rfc822")
		crlf("")
		io.Copy(&b, newCRLFReader(io.NewSectionReader(in.original, 0, in.origSize)))
		if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
			crlf("")
		}
	} else {
		crlf("Content-Type: text/rfc822-headers")
		crlf("")
		b.Write(headerOf(io.NewSectionReader(in.original, 0, in.origSize)))
	}
	crlf("")
	crlf("--%s--", boundary)
	return b.Bytes()
}

// headerOf returns a message's header block (up to 1 MiB), CRLF-clean.
func headerOf(r io.Reader) []byte {
	br := bufio.NewReader(newCRLFReader(io.LimitReader(r, 1<<20)))
	var out []byte
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		out = append(out, line...)
		if err != nil {
			out = append(out, '\r', '\n')
			break
		}
	}
	return out
}

func randomToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
