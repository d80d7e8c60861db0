package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/mail"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"tidings/storage"
)

// maxDKIMSignatures bounds the signatures verified per message, so a
// message cannot make us run unbounded DNS queries.
const maxDKIMSignatures = 5

// authResult is what the inbound checks found.
type authResult struct {
	header     string // the Authentication-Results field, CRLF-terminated
	reject     bool   // DMARC fail under p=reject
	fromDomain string
}

// checkAuth runs SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) for
// an inbound message and formats our Authentication-Results (RFC 8601).
func (s *Server) checkAuth(ctx context.Context, ip netip.Addr, helo, mailFrom string, froms []string, src storage.BlobSource) authResult {
	res := s.cfg.Resolver
	var parts []string

	// SPF on the envelope sender, or postmaster@HELO for the null sender
	// (RFC 7208 §2.4).
	spfDomain := domainOf(mailFrom)
	sender := mailFrom
	if sender == "" {
		sender = "postmaster@" + helo
		spfDomain = strings.ToLower(helo)
	}
	spfRes, _ := spf.CheckHostWithSender(net.IP(ip.AsSlice()), helo, sender, spf.WithContext(ctx), spf.WithResolver(res))
	spfVal := strings.ToLower(string(spfRes))
	if spfVal == "" {
		spfVal = "none"
	}
	parts = append(parts, "spf="+spfVal+" smtp.mailfrom="+token(sender))

	// DKIM.
	var verifs []*dkim.Verification
	if rd, err := src.Open(); err == nil {
		verifs, _ = dkim.VerifyWithOptions(io.NewSectionReader(rd, 0, src.Size()), &dkim.VerifyOptions{
			LookupTXT:        func(d string) ([]string, error) { return res.LookupTXT(ctx, d) },
			MaxVerifications: maxDKIMSignatures,
		})
		rd.Close()
	}
	if len(verifs) == 0 {
		parts = append(parts, "dkim=none")
	}
	for _, v := range verifs {
		val := "pass"
		switch {
		case v.Err == nil:
		case dkim.IsTempFail(v.Err):
			val = "temperror"
		case dkim.IsPermFail(v.Err):
			val = "permerror"
		default:
			val = "fail"
		}
		parts = append(parts, "dkim="+val+" header.d="+token(v.Domain))
	}

	// DMARC on the From: domain.
	out := authResult{}
	fromDomain := ""
	if len(froms) > 0 {
		if list, err := mail.ParseAddressList(froms[0]); err == nil && len(list) > 0 {
			fromDomain = domainOf(list[0].Address)
		}
	}
	out.fromDomain = fromDomain
	if fromDomain == "" {
		parts = append(parts, "dmarc=none")
	} else {
		val, policy := s.dmarc(ctx, fromDomain, spfVal == "pass", spfDomain, verifs)
		parts = append(parts, "dmarc="+val+" header.from="+token(fromDomain))
		out.reject = val == "fail" && policy == dmarc.PolicyReject
	}
	out.header = "Authentication-Results: " + token(s.cfg.AuthServID) + ";\r\n\t" + strings.Join(parts, ";\r\n\t") + "\r\n"
	return out
}

// dmarc evaluates the policy of fromDomain (falling back to the
// organizational domain, RFC 7489 §6.6.3) and returns the result and the
// policy that applies.
func (s *Server) dmarc(ctx context.Context, fromDomain string, spfPass bool, spfDomain string, verifs []*dkim.Verification) (string, dmarc.Policy) {
	lookup := &dmarc.LookupOptions{LookupTXT: func(d string) ([]string, error) { return s.cfg.Resolver.LookupTXT(ctx, d) }}
	org := orgDomain(fromDomain)
	rec, err := dmarc.LookupWithOptions(fromDomain, lookup)
	policy := dmarc.Policy("")
	if errors.Is(err, dmarc.ErrNoPolicy) && org != fromDomain {
		rec, err = dmarc.LookupWithOptions(org, lookup)
		if err == nil {
			policy = rec.SubdomainPolicy
		}
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		return "none", ""
	case dmarc.IsTempFail(err):
		return "temperror", ""
	case err != nil:
		return "permerror", ""
	}
	if policy == "" {
		policy = rec.Policy
	}
	aligned := func(d string, mode dmarc.AlignmentMode) bool {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if mode == dmarc.AlignmentStrict {
			return d == fromDomain
		}
		return orgDomain(d) == org
	}
	if spfPass && aligned(spfDomain, rec.SPFAlignment) {
		return "pass", policy
	}
	for _, v := range verifs {
		if v.Err == nil && aligned(v.Domain, rec.DKIMAlignment) {
			return "pass", policy
		}
	}
	if rec.Percent != nil && *rec.Percent < 100 && policy == dmarc.PolicyReject {
		// pct sampling (RFC 7489 §6.3): we do not sample; a partial
		// policy is treated as quarantine (accepted, marked).
		policy = dmarc.PolicyQuarantine
	}
	return "fail", policy
}

// orgDomain is the organizational domain (RFC 7489 §3.2) by the public
// suffix list.
func orgDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	o, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return o
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	d, err := storage.DomainASCII(addr[i+1:])
	if err != nil {
		return strings.ToLower(addr[i+1:])
	}
	return d
}

// token keeps a value inside an Authentication-Results field safe: no
// spaces, separators or controls (RFC 8601 §2.2 pvalue).
func token(v string) string {
	v = strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || r == ';' || r == '(' || r == ')' || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, v)
	if len(v) > 255 {
		v = v[:255]
	}
	if v == "" {
		return "unknown"
	}
	return v
}

func tlsVersion(v uint16) string { return strings.ReplaceAll(tls.VersionName(v), " ", "") }
func tlsCipher(c uint16) string  { return tls.CipherSuiteName(c) }
