package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"tidings/storage"
)

// Route is one final recipient of an address.
type Route struct {
	// Account is set for a local mailbox.
	Account *storage.Account
	// External is a non-local address to forward to (alias target in a
	// domain we do not serve), or, with Relay, the address to relay.
	External string
	// Relay is the next hop (host[:port]) of a remote domain; External
	// holds the recipient address then.
	Relay string
	// Original is the address as given to Resolve (for X-Original-To).
	Original string
	// ViaAlias is true when an alias, group or catch-all (or a built-in
	// postmaster/abuse alias) led here, i.e. X-Original-To belongs in the
	// delivered message.
	ViaAlias bool
}

// Resolution is the routing expansion of one address.
type Resolution struct {
	Recipients []Route
}

// Resolve expands an address into its final recipients. See doc.go for
// the order of lookups and the decisions on remote domains, postmaster and
// abuse, cycles and unknown targets.
//
// Errors: ErrBadAddress, ErrUnknownDomain (the address is not in a domain
// served here: the caller decides about relaying), ErrUnknownRecipient,
// ErrExpansion, or a store error.
func (d *Directory) Resolve(ctx context.Context, addr string) (Resolution, error) {
	if strings.EqualFold(addr, "postmaster") {
		// RFC 5321 §4.1.1.3: "postmaster" without a domain must be accepted.
		ds, err := d.store.Domains(ctx)
		if err != nil {
			return Resolution{}, fmt.Errorf("resolve %q: %w", addr, err)
		}
		first := firstDomain(ds)
		if first == nil {
			return Resolution{}, fmt.Errorf("resolve %q: no domains: %w", addr, ErrUnknownRecipient)
		}
		r, err := d.Resolve(ctx, "postmaster@"+first.Name)
		for i := range r.Recipients {
			r.Recipients[i].Original = addr
		}
		return r, err
	}
	a, err := ParseAddress(addr)
	if err != nil {
		return Resolution{}, err
	}
	dom, err := d.store.Domain(ctx, a.Domain)
	if errors.Is(err, storage.ErrNotFound) {
		return Resolution{}, fmt.Errorf("%q: domain %q is not served here: %w", addr, a.Domain, ErrUnknownDomain)
	}
	if err != nil {
		return Resolution{}, fmt.Errorf("resolve %q: %w", addr, err)
	}
	x := &expansion{d: d, original: addr, seen: map[string]bool{}, accounts: map[storage.AccountID]bool{}}
	if err := x.expand(ctx, a, &dom, 0, false); err != nil {
		return Resolution{}, err
	}
	if len(x.routes) == 0 {
		return Resolution{}, fmt.Errorf("%q: expands to no deliverable recipient: %w", addr, ErrUnknownRecipient)
	}
	return Resolution{Recipients: x.routes}, nil
}

// firstDomain is the oldest domain (lowest id).
func firstDomain(ds []storage.Domain) *storage.Domain {
	var first *storage.Domain
	for i := range ds {
		if first == nil || ds[i].ID < first.ID {
			first = &ds[i]
		}
	}
	return first
}

// expansion is the state of one Resolve call.
type expansion struct {
	d        *Directory
	original string
	seen     map[string]bool // address keys already expanded (cycles, diamonds)
	accounts map[storage.AccountID]bool
	external map[string]bool
	routes   []Route
}

func (x *expansion) add(r Route) error {
	r.Original = x.original
	if r.Account != nil {
		if x.accounts[r.Account.ID] {
			return nil
		}
		x.accounts[r.Account.ID] = true
	} else {
		k := strings.ToLower(r.Relay) + "|" + r.External
		if fk, err := storage.FoldAddress(r.External); err == nil {
			k = strings.ToLower(r.Relay) + "|" + fk
		}
		if x.external == nil {
			x.external = map[string]bool{}
		}
		if x.external[k] {
			return nil
		}
		x.external[k] = true
	}
	if len(x.routes) >= x.d.cfg.MaxExpansion {
		return fmt.Errorf("%q: more than %d recipients: %w", x.original, x.d.cfg.MaxExpansion, ErrExpansion)
	}
	x.routes = append(x.routes, r)
	return nil
}

// expand routes address a (whose domain dom is served here, or nil when it
// is not) at the given alias depth. Unknown addresses below the top level
// are skipped with a log line; at the top level they are ErrUnknownRecipient.
func (x *expansion) expand(ctx context.Context, a Address, dom *storage.Domain, depth int, via bool) error {
	if depth > x.d.cfg.MaxDepth {
		return fmt.Errorf("%q: aliases nested deeper than %d: %w", x.original, x.d.cfg.MaxDepth, ErrExpansion)
	}
	if dom == nil {
		return x.add(Route{External: a.String(), ViaAlias: via})
	}
	key := a.Key()
	if x.seen[key] {
		// A cycle or a second path to the same address: each address is
		// expanded once per Resolve.
		x.d.log.Debug("alias loop or repeat skipped", "address", a.String(), "original", x.original)
		return nil
	}
	x.seen[key] = true

	if dom.Kind == storage.DomainRemote {
		return x.expandRemote(ctx, a, dom, depth, via)
	}

	r, err := x.lookup(ctx, key)
	if err != nil {
		return err
	}
	local := a.Local
	if r.Kind == storage.RecipientNone {
		if base, ok := stripSubaddress(a.Local, x.d.sep); ok {
			local = base
			if r, err = x.lookup(ctx, storage.Fold(base)+"@"+a.Domain); err != nil {
				return err
			}
		}
	}
	switch r.Kind {
	case storage.RecipientAccount:
		return x.account(r.Account, a, via)
	case storage.RecipientAlias:
		if isBuiltin(local) && isDefaultAlias(r.Alias) {
			return x.builtin(ctx, dom, a)
		}
		return x.targets(ctx, r.Alias.Targets, depth)
	case storage.RecipientGroup:
		return x.targets(ctx, r.Group.Members, depth)
	}
	if isBuiltin(local) {
		// RFC 5321 §4.5.1: postmaster always resolves, even when its
		// built-in alias has been removed.
		return x.builtin(ctx, dom, a)
	}
	if dom.CatchAll != "" {
		ca, err := ParseAddress(dom.CatchAll)
		if err != nil {
			x.d.log.Warn("catch-all unusable", "domain", dom.Name, "catch_all", dom.CatchAll, "err", err)
		} else if storage.Fold(ca.Local) != storage.Fold(a.Local) || ca.Domain != a.Domain {
			return x.target(ctx, ca, depth+1)
		}
	}
	if depth == 0 {
		return fmt.Errorf("%q: no such user here: %w", x.original, ErrUnknownRecipient)
	}
	x.d.log.Warn("alias target unknown; skipped", "target", a.String(), "original", x.original)
	return nil
}

// expandRemote accepts an address of a relayed domain only when the
// directory lists it (an account, alias or group entry in that domain, or
// the subaddress-stripped form of one), or when the domain has a catch-all:
// then every local part is relayed as given. Lists in a remote domain are
// not expanded here; the next hop owns them.
func (x *expansion) expandRemote(ctx context.Context, a Address, dom *storage.Domain, depth int, via bool) error {
	if isBuiltin(a.Local) {
		if r, err := x.lookup(ctx, a.Key()); err != nil {
			return err
		} else if r.Kind == storage.RecipientNone || r.Kind == storage.RecipientAlias && isDefaultAlias(r.Alias) {
			return x.builtin(ctx, dom, a)
		}
	}
	listed := dom.CatchAll != ""
	if !listed {
		r, err := x.lookup(ctx, a.Key())
		if err != nil {
			return err
		}
		if r.Kind == storage.RecipientNone {
			if local, ok := stripSubaddress(a.Local, x.d.sep); ok {
				base := a
				base.Local = local
				if r, err = x.lookup(ctx, base.Key()); err != nil {
					return err
				}
			}
		}
		listed = r.Kind != storage.RecipientNone
	}
	if !listed {
		if depth == 0 {
			return fmt.Errorf("%q: not a listed recipient of relayed domain %s: %w", x.original, dom.Name, ErrUnknownRecipient)
		}
		x.d.log.Warn("alias target unknown; skipped", "target", a.String(), "original", x.original)
		return nil
	}
	return x.add(Route{External: a.String(), Relay: dom.RelayHost, ViaAlias: via})
}

func (x *expansion) lookup(ctx context.Context, key string) (storage.Recipient, error) {
	r, err := x.d.store.Lookup(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Recipient{}, nil
	}
	if err != nil {
		return r, fmt.Errorf("resolve %q: %w", x.original, err)
	}
	return r, nil
}

// account adds a local mailbox. Disabled accounts take no mail (they are
// suspended or being removed); shared accounts do.
func (x *expansion) account(acct *storage.Account, a Address, via bool) error {
	if !acct.Enabled {
		x.d.log.Info("recipient disabled", "address", a.String(), "original", x.original)
		return nil
	}
	return x.add(Route{Account: acct, ViaAlias: via})
}

// targets expands the targets of an alias or the members of a group.
func (x *expansion) targets(ctx context.Context, ts []string, depth int) error {
	for _, t := range ts {
		ta, err := ParseAddress(t)
		if err != nil {
			x.d.log.Warn("alias target malformed; skipped", "target", t, "original", x.original)
			continue
		}
		if err := x.target(ctx, ta, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func (x *expansion) target(ctx context.Context, ta Address, depth int) error {
	dom, err := x.d.store.Domain(ctx, ta.Domain)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return x.expand(ctx, ta, nil, depth, true)
	case err != nil:
		return fmt.Errorf("resolve %q: %w", x.original, err)
	}
	return x.expand(ctx, ta, &dom, depth, true)
}

// builtin resolves postmaster@ or abuse@ with no targets: the domain's
// oldest enabled user account, else the oldest enabled user account of any
// domain.
func (x *expansion) builtin(ctx context.Context, dom *storage.Domain, a Address) error {
	for _, scope := range []string{dom.Name, ""} {
		as, err := x.d.store.Accounts(ctx, scope)
		if err != nil {
			return fmt.Errorf("resolve %q: %w", x.original, err)
		}
		as = slices.DeleteFunc(as, func(acct storage.Account) bool {
			return !acct.Enabled || acct.Kind != storage.AccountUser
		})
		if len(as) == 0 {
			continue
		}
		oldest := slices.MinFunc(as, func(p, q storage.Account) int {
			if c := p.Created.Compare(q.Created); c != 0 {
				return c
			}
			return int(p.ID - q.ID)
		})
		return x.add(Route{Account: &oldest, ViaAlias: true})
	}
	return fmt.Errorf("%q: no enabled account to receive %s mail: %w", x.original, storage.Fold(a.Local), ErrUnknownRecipient)
}
