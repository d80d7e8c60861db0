package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"tidings/auth"
	"tidings/storage"
)

// DefaultMaxReceived is how many Received fields a message may carry
// before it is refused as looping (554 5.4.6); Postfix's hopcount_limit
// has the same default.
const DefaultMaxReceived = 50

// LocalConfig tunes a Local. The zero value gets the defaults.
type LocalConfig struct {
	// SubaddressSeparator is ignored for sender ownership (it must match
	// the directory's; default "+", auth.NoSubaddress switches it off).
	SubaddressSeparator string
	// MaxReceived is the loop limit (default DefaultMaxReceived).
	MaxReceived int
	// Hostname names this server in logs.
	Hostname string
}

// MessageSigner makes the DKIM-Signature field for outbound copies
// (*Signer implements it). It returns nil when the domain has no key.
type MessageSigner interface {
	Sign(ctx context.Context, domain string, r io.Reader) ([]byte, error)
}

// Forwarder rewrites the envelope sender of a forwarded message with SRS
// (the outbound half's *SRS), so SPF and DMARC hold at the next hop.
type Forwarder interface {
	Forward(sender string) (string, error)
}

// LocalDeps are the parts a Local works with. Signer, SRS and Kick may be
// nil (no signatures, sender kept, no wake-up).
type LocalDeps struct {
	Store  storage.Store
	Dir    *auth.Directory
	Signer MessageSigner
	SRS    Forwarder
	// Kick wakes the outbound queue runner after remote items were queued.
	Kick   func()
	Logger *slog.Logger
}

// Local routes recipients and delivers accepted messages: local mailbox
// entries and queued outbound copies in one store transaction.
type Local struct {
	cfg  LocalConfig
	deps LocalDeps
	log  *slog.Logger
	sep  string
}

// NewLocal returns a Local.
func NewLocal(cfg LocalConfig, deps LocalDeps) *Local {
	if cfg.MaxReceived <= 0 {
		cfg.MaxReceived = DefaultMaxReceived
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sep := cfg.SubaddressSeparator
	switch sep {
	case "":
		sep = auth.DefaultSubaddressSeparator
	case auth.NoSubaddress:
		sep = ""
	}
	return &Local{cfg: cfg, deps: deps, log: log, sep: sep}
}

// MaxReceived is the configured loop limit.
func (l *Local) MaxReceived() int { return l.cfg.MaxReceived }

// RouteResult is the routing decision for one RCPT.
type RouteResult struct {
	// Address is the forward path as given.
	Address string
	// Routes are the final recipients (auth.Directory.Resolve).
	Routes []auth.Route
	// Remote marks a recipient in a domain not served here, accepted only
	// from an authenticated client (RemoteRoute); Domain is its A-label.
	Remote bool
	Domain string
}

// Route decides about one recipient at RCPT time, so nothing is accepted
// that would bounce later (DESIGN.md §Mail flow, no backscatter).
//
// Errors wrap: auth.ErrBadAddress (malformed or an open-relay form),
// auth.ErrUnknownDomain (not served here: smtpd decides about relaying),
// auth.ErrUnknownRecipient (550 5.1.1), storage.ErrOverQuota (every
// mailbox it reaches is full: 452 4.2.2), auth.ErrExpansion, or a store
// error wrapping storage.ErrUnavailable.
func (l *Local) Route(ctx context.Context, rcpt string) (RouteResult, error) {
	res, err := l.deps.Dir.Resolve(ctx, rcpt)
	if err != nil {
		return RouteResult{}, fmt.Errorf("route %q: %w", rcpt, err)
	}
	over, external := 0, 0
	for _, r := range res.Recipients {
		switch {
		case r.Account == nil:
			external++
		case overQuota(r.Account):
			over++
		}
	}
	if over > 0 && external == 0 && over == len(res.Recipients) {
		return RouteResult{}, fmt.Errorf("route %q: mailbox full: %w", rcpt, storage.ErrOverQuota)
	}
	return RouteResult{Address: rcpt, Routes: res.Recipients}, nil
}

// overQuota reports whether the account cannot take one more message.
func overQuota(a *storage.Account) bool {
	return a.QuotaBytes > 0 && a.UsedBytes >= a.QuotaBytes ||
		a.QuotaMessages > 0 && a.UsedMessages >= a.QuotaMessages
}

// RemoteRoute accepts a recipient in a domain not served here, for an
// authenticated client only (the caller's decision). The address goes
// through the same parser, so relay tricks are refused here too.
func (l *Local) RemoteRoute(rcpt string) (RouteResult, error) {
	a, err := auth.ParseAddress(rcpt)
	if err != nil {
		return RouteResult{}, fmt.Errorf("route %q: %w", rcpt, err)
	}
	return RouteResult{Address: rcpt, Remote: true, Domain: a.Domain}, nil
}

// Owns reports whether the account may use addr as envelope sender or
// From: its own address, a subaddress of it, or an alias whose SendAs
// lists the account (DESIGN.md §Mail flow, Submission).
func (l *Local) Owns(ctx context.Context, acct storage.Account, addr string) (bool, error) {
	a, err := auth.ParseAddress(addr)
	if err != nil {
		return false, nil
	}
	keys := []string{a.Key()}
	if l.sep != "" {
		if i := strings.Index(a.Local, l.sep); i > 0 {
			b := a
			b.Local = a.Local[:i]
			keys = append(keys, b.Key())
		}
	}
	for _, k := range keys {
		if k == acct.Key {
			return true, nil
		}
	}
	for _, k := range keys {
		r, err := l.deps.Store.Lookup(ctx, k)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("sender %q: %w", addr, err)
		}
		if r.Kind == storage.RecipientAlias && r.Alias != nil && slices.Contains(r.Alias.SendAs, acct.ID) {
			return true, nil
		}
		if r.Kind == storage.RecipientAccount && r.Account != nil && r.Account.ID == acct.ID {
			return true, nil
		}
	}
	return false, nil
}
