package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"tidings/storage"
)

// Config tunes a Directory. The zero value gets the defaults below.
type Config struct {
	SubaddressSeparator string        // default "+"; NoSubaddress disables subaddressing
	HashWorkers         int           // default runtime.NumCPU()
	HashQueueTimeout    time.Duration // default 5s → ErrTemporary
	Argon2              Argon2Params  // default DefaultArgon2
	FailWindow          time.Duration // default 15m
	MaxFailuresIP       int           // default 20 per window per IP (/64 for IPv6)
	MaxFailuresAccount  int           // default 10 per window per account
	MaxExpansion        int           // default 1000 recipients
	MaxDepth            int           // default 10
	// CacheEntries bounds the argon2 result cache (default 10,000).
	CacheEntries int
	// SessionCheck is how often WatchEnabled re-reads watched accounts
	// (default 30 s).
	SessionCheck time.Duration
	// Now is the clock for policy hours and the limiter window (default
	// time.Now); tests inject a fixed one.
	Now func() time.Time
}

// NoSubaddress as SubaddressSeparator turns subaddressing off. (An empty
// string cannot mean "off": it is the zero value and selects the default.)
const NoSubaddress = "-none-"

// Defaults.
const (
	DefaultSubaddressSeparator = "+"
	DefaultHashQueueTimeout    = 5 * time.Second
	DefaultFailWindow          = 15 * time.Minute
	DefaultMaxFailuresIP       = 20
	DefaultMaxFailuresAccount  = 10
	DefaultMaxExpansion        = 1000
	DefaultMaxDepth            = 10
	DefaultCacheEntries        = 10000
	// purgeBatch is how many messages RemoveUser deletes per transaction.
	purgeBatch = 500
)

// Directory is the one place identity is decided: domains, accounts,
// aliases and groups, password checks, the failed-login limiter, recipient
// routing and access control. It is safe for concurrent use.
type Directory struct {
	store storage.Store
	cfg   Config
	log   *slog.Logger
	sep   string // subaddress separator, "" = off

	sem       chan struct{} // argon2 workers
	cache     *verifyCache
	dummyHash string // verified for unknown users so they cost the same
	watch     sessionWatch
}

// New returns a Directory over store. log may be nil (discard).
func New(store storage.Store, cfg Config, log *slog.Logger) *Directory {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch cfg.SubaddressSeparator {
	case "":
		cfg.SubaddressSeparator = DefaultSubaddressSeparator
	}
	sep := cfg.SubaddressSeparator
	if sep == NoSubaddress {
		sep = ""
	}
	if cfg.HashWorkers <= 0 {
		cfg.HashWorkers = runtime.NumCPU()
	}
	if cfg.HashQueueTimeout <= 0 {
		cfg.HashQueueTimeout = DefaultHashQueueTimeout
	}
	if cfg.Argon2 == (Argon2Params{}) {
		cfg.Argon2 = DefaultArgon2
	}
	if cfg.FailWindow <= 0 {
		cfg.FailWindow = DefaultFailWindow
	}
	if cfg.MaxFailuresIP <= 0 {
		cfg.MaxFailuresIP = DefaultMaxFailuresIP
	}
	if cfg.MaxFailuresAccount <= 0 {
		cfg.MaxFailuresAccount = DefaultMaxFailuresAccount
	}
	if cfg.MaxExpansion <= 0 {
		cfg.MaxExpansion = DefaultMaxExpansion
	}
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if cfg.SessionCheck <= 0 {
		cfg.SessionCheck = DefaultSessionCheck
	}
	if cfg.CacheEntries <= 0 {
		cfg.CacheEntries = DefaultCacheEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	key := make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand since Go 1.24)
	dummy, err := HashPassword(GeneratePassword(), cfg.Argon2)
	if err != nil {
		// Unusable parameters: fall back to the defaults rather than leave
		// unknown users cheaper to check than real ones.
		log.Error("argon2 parameters unusable; using defaults", "err", err)
		cfg.Argon2 = DefaultArgon2
		dummy, _ = HashPassword(GeneratePassword(), cfg.Argon2)
	}
	return &Directory{
		store:     store,
		cfg:       cfg,
		log:       log,
		sep:       sep,
		sem:       make(chan struct{}, cfg.HashWorkers),
		cache:     newVerifyCache(key, cfg.CacheEntries),
		dummyHash: dummy,
	}
}

// Store returns the store the directory sits on.
func (d *Directory) Store() storage.Store { return d.store }

// builtinAliases are created in every domain (RFC 5321 §4.5.1 postmaster,
// RFC 2142 §2 abuse).
var builtinAliases = [...]string{"postmaster", "abuse"}

// isDefaultAlias reports whether an alias has no real targets: none at
// all, or only its own address (how aliases that merely exist are stored
// when the store insists on a target).
func isDefaultAlias(al *storage.Alias) bool {
	for _, t := range al.Targets {
		k, err := storage.FoldAddress(t)
		if err != nil || k != al.Key {
			return false
		}
	}
	return true
}

func isBuiltin(local string) bool {
	f := storage.Fold(local)
	for _, b := range builtinAliases {
		if f == b {
			return true
		}
	}
	return false
}

// defaultMailboxes are created with every user account (RFC 6154 special use).
func defaultMailboxes() []storage.NewMailbox {
	return []storage.NewMailbox{
		{Name: "INBOX", Subscribed: true},
		{Name: "Sent", SpecialUse: `\Sent`, Subscribed: true},
		{Name: "Drafts", SpecialUse: `\Drafts`, Subscribed: true},
		{Name: "Trash", SpecialUse: `\Trash`, Subscribed: true},
		{Name: "Junk", SpecialUse: `\Junk`, Subscribed: true},
		{Name: "Archive", SpecialUse: `\Archive`, Subscribed: true},
	}
}

// domainName validates and converts a domain for the admin calls.
func domainName(name string) (string, error) {
	a, err := storage.DomainASCII(strings.TrimSpace(name))
	if err != nil {
		return "", fmt.Errorf("malformed domain %q: %w", name, ErrBadAddress)
	}
	return a, nil
}

// servedDomain returns the domain, or an ErrUnknownDomain error with the
// command that fixes it.
func (d *Directory) servedDomain(ctx context.Context, ascii string) (storage.Domain, error) {
	dom, err := d.store.Domain(ctx, ascii)
	if errors.Is(err, storage.ErrNotFound) {
		return dom, lineErrorf(ErrUnknownDomain, "domain %q is not served here; add it with: tidings domain add %s", ascii, ascii)
	}
	if err != nil {
		return dom, fmt.Errorf("domain %q: %w", ascii, err)
	}
	return dom, nil
}

// AddDomain adds a local domain (IDNA input becomes its A-label) with its
// built-in postmaster@ and abuse@ aliases. The built-ins have no targets:
// they resolve to the domain's oldest enabled user (see doc.go).
func (d *Directory) AddDomain(ctx context.Context, name string) (storage.Domain, error) {
	a, err := domainName(name)
	if err != nil {
		return storage.Domain{}, err
	}
	dom, err := d.store.CreateDomain(ctx, storage.Domain{Name: a, Display: storage.DomainUnicode(a), Kind: storage.DomainLocal})
	if errors.Is(err, storage.ErrExists) {
		return dom, lineErrorf(err, "domain %q already exists", a)
	}
	if err != nil {
		return dom, fmt.Errorf("add domain %q: %w", a, err)
	}
	for _, b := range builtinAliases {
		addr := b + "@" + a
		err := d.store.CreateAlias(ctx, storage.Alias{Address: addr, Key: addr})
		if errors.Is(err, storage.ErrInvalid) {
			// The store wants at least one target: an alias naming only
			// itself means the same (see isDefaultAlias).
			err = d.store.CreateAlias(ctx, storage.Alias{Address: addr, Key: addr, Targets: []string{addr}})
		}
		if err != nil && !errors.Is(err, storage.ErrExists) {
			return dom, fmt.Errorf("add domain %q: built-in alias %s: %w", a, addr, err)
		}
	}
	d.log.Info("domain added", "domain", a)
	return dom, nil
}

// Domains lists the served domains.
func (d *Directory) Domains(ctx context.Context) ([]storage.Domain, error) {
	ds, err := d.store.Domains(ctx)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	return ds, nil
}

// RemoveDomain removes a domain with its aliases and groups. It refuses
// while accounts exist in it.
func (d *Directory) RemoveDomain(ctx context.Context, name string) error {
	a, err := domainName(name)
	if err != nil {
		return err
	}
	if _, err := d.servedDomain(ctx, a); err != nil {
		return err
	}
	accts, err := d.store.Accounts(ctx, a)
	if err != nil {
		return fmt.Errorf("remove domain %q: %w", a, err)
	}
	if n := len(accts); n > 0 {
		return fmt.Errorf("domain %q still has %d account(s); remove them first with: tidings user remove <address>: %w", a, n, storage.ErrNotEmpty)
	}
	if err := d.store.DeleteDomain(ctx, a); err != nil {
		if errors.Is(err, storage.ErrNotEmpty) {
			return fmt.Errorf("domain %q still has accounts; remove them first with: tidings user remove <address>: %w", a, err)
		}
		return fmt.Errorf("remove domain %q: %w", a, err)
	}
	d.log.Info("domain removed", "domain", a)
	return nil
}

// SetRelay makes a domain remote (mail for its listed recipients is
// relayed to host[:port]) or, with host "", local again.
func (d *Directory) SetRelay(ctx context.Context, name, host string) error {
	a, err := domainName(name)
	if err != nil {
		return err
	}
	dom, err := d.servedDomain(ctx, a)
	if err != nil {
		return err
	}
	dom.RelayHost = host
	dom.Kind = storage.DomainLocal
	if host != "" {
		dom.Kind = storage.DomainRemote
	}
	if err := d.store.UpdateDomain(ctx, dom); err != nil {
		return fmt.Errorf("set relay of %q: %w", a, err)
	}
	return nil
}

// SetCatchAll sets the address that receives mail for unknown local parts
// of a domain ("" removes it).
func (d *Directory) SetCatchAll(ctx context.Context, name, target string) error {
	a, err := domainName(name)
	if err != nil {
		return err
	}
	dom, err := d.servedDomain(ctx, a)
	if err != nil {
		return err
	}
	if target != "" {
		t, err := ParseAddress(target)
		if err != nil {
			return err
		}
		target = t.String()
	}
	dom.CatchAll = target
	if err := d.store.UpdateDomain(ctx, dom); err != nil {
		return fmt.Errorf("set catch-all of %q: %w", a, err)
	}
	return nil
}

// UserOptions are the optional settings of AddUser.
type UserOptions struct {
	QuotaBytes    int64
	QuotaMessages int64
	DisplayName   string
}

// AddUser creates a user account in a served local domain with its default
// mailboxes (INBOX, Sent, Drafts, Trash, Junk, Archive; special-use and
// subscribed) in one transaction. An empty password means no password login.
func (d *Directory) AddUser(ctx context.Context, addr, password string, opt UserOptions) (storage.Account, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return storage.Account{}, err
	}
	dom, err := d.servedDomain(ctx, a.Domain)
	if err != nil {
		return storage.Account{}, err
	}
	if dom.Kind == storage.DomainRemote {
		return storage.Account{}, fmt.Errorf("domain %q is relayed to %s and holds no mailboxes here: %w", a.Domain, dom.RelayHost, storage.ErrInvalid)
	}
	if err := d.addressFree(ctx, a, "user"); err != nil {
		return storage.Account{}, err
	}
	var hash string
	if password != "" {
		if hash, err = d.hash(ctx, password); err != nil {
			return storage.Account{}, err
		}
	}
	acct, err := d.store.CreateAccount(ctx, storage.NewAccount{
		Address:          a.String(),
		Kind:             storage.AccountUser,
		DisplayName:      opt.DisplayName,
		PasswordHash:     hash,
		QuotaBytes:       opt.QuotaBytes,
		QuotaMessages:    opt.QuotaMessages,
		DefaultMailboxes: defaultMailboxes(),
	})
	if errors.Is(err, storage.ErrExists) {
		return acct, lineErrorf(err, "user %q already exists", a.String())
	}
	if err != nil {
		return acct, fmt.Errorf("add user %q: %w", a.String(), err)
	}
	d.log.Info("user added", "user", acct.Address, "id", acct.ID)
	return acct, nil
}

// addressFree refuses an address that is already an account, alias or
// group (what says which).
func (d *Directory) addressFree(ctx context.Context, a Address, what string) error {
	r, err := d.store.Lookup(ctx, a.Key())
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("add %s %q: %w", what, a.String(), err)
	}
	var is, article string
	switch r.Kind {
	case storage.RecipientAccount:
		is, article = "user", "a"
	case storage.RecipientAlias:
		is, article = "alias", "an"
	case storage.RecipientGroup:
		is, article = "group", "a"
	default:
		return nil
	}
	if is == what {
		return lineErrorf(storage.ErrExists, "%s %q already exists", what, a.String())
	}
	return fmt.Errorf("address %q is already %s %s: %w", a.String(), article, is, storage.ErrExists)
}

// account finds an account by address with a clear not-found message.
func (d *Directory) account(ctx context.Context, addr string) (storage.Account, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return storage.Account{}, err
	}
	acct, err := d.store.AccountByAddress(ctx, a.Key())
	if errors.Is(err, storage.ErrNotFound) {
		return acct, lineErrorf(err, "user %q does not exist", a.String())
	}
	if err != nil {
		return acct, fmt.Errorf("user %q: %w", a.String(), err)
	}
	return acct, nil
}

// Users lists the accounts of a domain ("" = all domains).
func (d *Directory) Users(ctx context.Context, domain string) ([]storage.Account, error) {
	if domain != "" {
		a, err := domainName(domain)
		if err != nil {
			return nil, err
		}
		if _, err := d.servedDomain(ctx, a); err != nil {
			return nil, err
		}
		domain = a
	}
	as, err := d.store.Accounts(ctx, domain)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return as, nil
}

// SetPassword replaces an account's password ("" = no password login).
// The credential generation moves on, so cached results of the old
// password no longer apply.
func (d *Directory) SetPassword(ctx context.Context, addr, password string) error {
	acct, err := d.account(ctx, addr)
	if err != nil {
		return err
	}
	var hash string
	if password != "" {
		if hash, err = d.hash(ctx, password); err != nil {
			return err
		}
	}
	if _, err := d.store.SetPassword(ctx, acct.ID, hash); err != nil {
		return fmt.Errorf("set password of %q: %w", acct.Address, err)
	}
	d.log.Info("password changed", "user", acct.Address)
	return nil
}

// SetEnabled enables or disables an account. Front ends end the sessions
// of a disabled account (they poll Enabled).
func (d *Directory) SetEnabled(ctx context.Context, addr string, enabled bool) error {
	acct, err := d.account(ctx, addr)
	if err != nil {
		return err
	}
	if err := d.store.SetEnabled(ctx, acct.ID, enabled); err != nil {
		return fmt.Errorf("set enabled of %q: %w", acct.Address, err)
	}
	d.log.Info("account enabled changed", "user", acct.Address, "enabled", enabled)
	return nil
}

// SetPolicy replaces an account's access policy.
func (d *Directory) SetPolicy(ctx context.Context, addr string, p storage.Policy) error {
	acct, err := d.account(ctx, addr)
	if err != nil {
		return err
	}
	if err := checkPolicySyntax(p); err != nil {
		return fmt.Errorf("policy of %q: %v: %w", acct.Address, err, storage.ErrInvalid)
	}
	if err := d.store.SetPolicy(ctx, acct.ID, p); err != nil {
		return fmt.Errorf("set policy of %q: %w", acct.Address, err)
	}
	return nil
}

// SetQuota sets an account's quota (0 = unlimited).
func (d *Directory) SetQuota(ctx context.Context, addr string, bytes, messages int64) error {
	acct, err := d.account(ctx, addr)
	if err != nil {
		return err
	}
	if err := d.store.SetQuota(ctx, acct.ID, bytes, messages); err != nil {
		return fmt.Errorf("set quota of %q: %w", acct.Address, err)
	}
	return nil
}

// Enabled reports whether an account exists and is enabled; front ends
// call it to end the sessions of a disabled or removed account.
func (d *Directory) Enabled(ctx context.Context, id storage.AccountID) (bool, error) {
	acct, err := d.store.Account(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("account %d: %w", id, err)
	}
	return acct.Enabled, nil
}

// RemoveUser disables the account at once (no new logins or deliveries)
// and then purges its messages in batches, each its own short transaction,
// until the account itself is gone. Interrupted, it can simply be run again.
func (d *Directory) RemoveUser(ctx context.Context, addr string) error {
	acct, err := d.account(ctx, addr)
	if err != nil {
		return err
	}
	if acct.Enabled {
		if err := d.store.SetEnabled(ctx, acct.ID, false); err != nil {
			return fmt.Errorf("remove user %q: disable: %w", acct.Address, err)
		}
	}
	for batches := 1; ; batches++ {
		done, err := d.store.PurgeAccount(ctx, acct.ID, purgeBatch)
		if err != nil {
			return fmt.Errorf("remove user %q: purge: %w", acct.Address, err)
		}
		if done {
			d.log.Info("user removed", "user", acct.Address, "batches", batches)
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("remove user %q: interrupted (the account stays disabled; run again to finish): %w", acct.Address, err)
		}
	}
}

// AddAlias creates an alias in a served domain. Targets may be local or
// external; each must be a well-formed address. In a remote domain an
// alias with no targets lists the address as a recipient to relay.
func (d *Directory) AddAlias(ctx context.Context, addr string, targets []string) error {
	a, dom, ts, err := d.prepareList(ctx, addr, targets, "alias")
	if err != nil {
		return err
	}
	if len(ts) == 0 {
		if dom.Kind != storage.DomainRemote {
			return fmt.Errorf("alias %q needs at least one target: %w", a.String(), storage.ErrInvalid)
		}
		// In a relayed domain an alias only lists the address; its targets
		// are never expanded here. The store wants at least one, so the
		// address names itself ("relay as is").
		ts = []string{a.String()}
	}
	err = d.store.CreateAlias(ctx, storage.Alias{Address: a.String(), Key: a.Key(), Targets: ts})
	if errors.Is(err, storage.ErrExists) {
		return lineErrorf(err, "alias %q already exists", a.String())
	}
	if err != nil {
		return fmt.Errorf("add alias %q: %w", a.String(), err)
	}
	return nil
}

// prepareList validates the address and targets of a new alias or group.
func (d *Directory) prepareList(ctx context.Context, addr string, targets []string, what string) (Address, storage.Domain, []string, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return a, storage.Domain{}, nil, err
	}
	dom, err := d.servedDomain(ctx, a.Domain)
	if err != nil {
		return a, dom, nil, err
	}
	if err := d.addressFree(ctx, a, what); err != nil {
		return a, dom, nil, err
	}
	ts := make([]string, 0, len(targets))
	for _, t := range targets {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		ta, err := ParseAddress(t)
		if err != nil {
			return a, dom, nil, fmt.Errorf("%s %q: target: %w", what, a.String(), err)
		}
		if ta.Key() == a.Key() {
			return a, dom, nil, fmt.Errorf("%s %q cannot point to itself: %w", what, a.String(), storage.ErrInvalid)
		}
		ts = append(ts, ta.String())
	}
	return a, dom, ts, nil
}

// Aliases lists the aliases of a domain ("" = all).
func (d *Directory) Aliases(ctx context.Context, domain string) ([]storage.Alias, error) {
	if domain != "" {
		a, err := domainName(domain)
		if err != nil {
			return nil, err
		}
		domain = a
	}
	as, err := d.store.Aliases(ctx, domain)
	if err != nil {
		return nil, fmt.Errorf("list aliases: %w", err)
	}
	return as, nil
}

// RemoveAlias deletes an alias.
func (d *Directory) RemoveAlias(ctx context.Context, addr string) error {
	a, err := ParseAddress(addr)
	if err != nil {
		return err
	}
	err = d.store.DeleteAlias(ctx, a.Key())
	if errors.Is(err, storage.ErrNotFound) {
		return lineErrorf(err, "alias %q does not exist", a.String())
	}
	if err != nil {
		return fmt.Errorf("remove alias %q: %w", a.String(), err)
	}
	return nil
}

// AddGroup creates a distribution list whose members each receive mail
// sent to the group address.
func (d *Directory) AddGroup(ctx context.Context, addr string, members []string) error {
	a, _, ms, err := d.prepareList(ctx, addr, members, "group")
	if err != nil {
		return err
	}
	err = d.store.CreateGroup(ctx, storage.Group{Address: a.String(), Key: a.Key(), Members: ms})
	if errors.Is(err, storage.ErrExists) {
		return lineErrorf(err, "group %q already exists", a.String())
	}
	if err != nil {
		return fmt.Errorf("add group %q: %w", a.String(), err)
	}
	return nil
}

// Groups lists the groups of a domain ("" = all).
func (d *Directory) Groups(ctx context.Context, domain string) ([]storage.Group, error) {
	if domain != "" {
		a, err := domainName(domain)
		if err != nil {
			return nil, err
		}
		domain = a
	}
	gs, err := d.store.Groups(ctx, domain)
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return gs, nil
}

// RemoveGroup deletes a group.
func (d *Directory) RemoveGroup(ctx context.Context, addr string) error {
	a, err := ParseAddress(addr)
	if err != nil {
		return err
	}
	err = d.store.DeleteGroup(ctx, a.Key())
	if errors.Is(err, storage.ErrNotFound) {
		return lineErrorf(err, "group %q does not exist", a.String())
	}
	if err != nil {
		return fmt.Errorf("remove group %q: %w", a.String(), err)
	}
	return nil
}
