package smtpd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"tidings/auth"
	"tidings/delivery"
	"tidings/message"
	"tidings/storage"
)

// data runs the DATA/BDAT phase: spool through the filter, check, add the
// common header prefix, deliver in one transaction, and answer 250 only
// after the commit (DESIGN.md §Writing a message).
func (s *session) data(r io.Reader) error {
	if len(s.rcpts) == 0 {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	}
	id := delivery.NewQueueID()
	log := s.log.With("id", id)
	spool := storage.NewSpool(s.s.cfg.SpoolDir, s.s.cfg.MaxMessageBytes)
	defer spool.Close()
	f := newFilter(spool, s.s.cfg.AuthServID)
	_, err := io.Copy(f, r)
	if err == nil {
		err = f.finish()
	}
	switch {
	case err == nil:
	case errors.Is(err, errBareLine):
		log.Warn("message refused", "reason", "bare CR or LF (smuggling)")
		return errSmuggling
	case errors.Is(err, storage.ErrTooLarge):
		return smtp.ErrDataTooLarge
	default:
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se // go-smtp's own: size limit
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			log.Info("data timed out")
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Idle timeout"}
		}
		log.Warn("data read failed", "err", err)
		return errTempFail
	}
	spool.Finish()
	if f.received > s.s.deps.Local.MaxReceived() {
		log.Warn("message refused", "reason", "loop", "received", f.received)
		return errLoop
	}

	ctx, cancel := context.WithTimeout(s.ctx, 4*s.s.cfg.CommandTimeout)
	defer cancel()
	rd, err := spool.Open()
	if err != nil {
		log.Error("spool unreadable", "err", err)
		return errTempFail
	}
	a, err := message.Analyze(rd, spool.Size(), message.Options{})
	rd.Close()
	if err != nil {
		log.Error("analysis failed", "err", err)
		return errTempFail
	}

	env := delivery.Envelope{
		ID: id, From: s.from, Recipients: s.rcpts,
		ENVID: s.mailOpts.EnvelopeID, RET: string(s.mailOpts.Return),
		SMTPUTF8: s.mailOpts.UTF8, EightBit: s.mailOpts.Body == smtp.Body8BitMIME,
		Submission: s.s.cfg.Mode == Submission,
	}
	var prefix strings.Builder
	prefix.WriteString(s.received(id))
	if s.s.cfg.Mode == MX {
		res := s.s.checkAuth(ctx, s.ip, s.helo, s.from, f.from, spool)
		prefix.WriteString(res.header)
		if res.reject && !s.s.cfg.IgnoreDMARCReject {
			log.Info("message refused", "reason", "dmarc p=reject", "from", res.fromDomain)
			return errDMARC
		}
	} else {
		dom, err := s.checkFrom(ctx, f.from)
		if err != nil {
			return err
		}
		env.SignDomain = dom
		// RFC 6409 §8.2, §8.3: the submission server may add a missing
		// Date and Message-ID; they go in the prefix, the blob stays as
		// the client sent it.
		if !f.hasDate {
			prefix.WriteString("Date: " + time.Now().Format(time.RFC1123Z) + "\r\n")
		}
		if !f.hasMsgID {
			var b [12]byte
			rand.Read(b[:])
			prefix.WriteString("Message-ID: <" + hex.EncodeToString(b[:]) + "@" + s.s.cfg.Hostname + ">\r\n")
		}
	}
	env.Prefix = []byte(prefix.String())

	fault("before-commit")
	qid, err := s.s.deps.Local.Deliver(ctx, env, spool, a)
	if err != nil {
		log.Error("delivery failed", "err", err)
		return errTempFail
	}
	fault("after-commit")
	s.delivered = true
	log.Info("accepted", "queue_id", qid, "from", s.from, "rcpts", len(s.rcpts), "size", spool.Size())
	if s.s.cfg.Mode == Submission {
		s.countSent(ctx)
	}
	// go-smtp answers a nil Data with a fixed text; a 250 SMTPError carries
	// the queue id (DESIGN.md §Conventions).
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + qid}
}

// checkFrom requires every From: address to be one the account owns
// (DESIGN.md §Mail flow) and returns the domain to sign for.
func (s *session) checkFrom(ctx context.Context, froms []string) (string, error) {
	if len(froms) == 0 {
		// No From: at all; the envelope sender (already checked) stands.
		a, err := auth.ParseAddress(s.from)
		if err != nil {
			return "", errNotOwner
		}
		return a.Domain, nil
	}
	var dom string
	for _, v := range froms {
		list, err := mail.ParseAddressList(v)
		if err != nil || len(list) == 0 {
			s.log.Info("message refused", "reason", "unparsable From", "from", v)
			return "", errNotOwner
		}
		for _, addr := range list {
			ok, err := s.s.deps.Local.Owns(ctx, *s.account, addr.Address)
			if err != nil {
				s.log.Warn("sender check failed", "err", err)
				return "", errTempFail
			}
			if !ok {
				s.log.Info("message refused", "reason", "From not owned", "from", addr.Address)
				return "", errNotOwner
			}
			if dom == "" {
				if a, err := auth.ParseAddress(addr.Address); err == nil {
					dom = a.Domain
				}
			}
		}
	}
	return dom, nil
}

// received is our Received field (RFC 5321 §4.4) with the TLS details and
// the RFC 3848 protocol name.
func (s *session) received(id string) string {
	proto := "ESMTP"
	if s.tls != nil {
		proto += "S"
	}
	if s.account != nil {
		proto += "A"
	}
	var b strings.Builder
	b.WriteString("Received: from " + clean(s.helo, 64) + " ([" + s.ip.String() + "])\r\n")
	b.WriteString("\tby " + s.s.cfg.Hostname + " (Tidings) with " + proto + " id " + id)
	if s.tls != nil {
		fmt.Fprintf(&b, "\r\n\t(version=%s cipher=%s)", tlsVersion(s.tls.Version), tlsCipher(s.tls.CipherSuite))
	}
	if len(s.rcpts) == 1 {
		b.WriteString("\r\n\tfor <" + clean(s.rcpts[0].Address, 256) + ">")
	}
	b.WriteString(";\r\n\t" + time.Now().Format(time.RFC1123Z) + "\r\n")
	return b.String()
}

// clean keeps a client-supplied string safe inside a header field.
func clean(v string, max int) string {
	v = strings.Map(func(r rune) rune {
		if r < 0x21 || r == 0x7f || r == '(' || r == ')' || r == '<' || r == '>' || r == ';' {
			return '_'
		}
		return r
	}, v)
	if len(v) > max {
		v = v[:max]
	}
	return v
}
