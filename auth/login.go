package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"tidings/storage"
)

// Login is one authentication attempt, from any protocol.
type Login struct {
	Proto    string     // "imap", "pop3", "smtp", "http", ... (policy Protocols, log)
	IP       netip.Addr // client address; the zero Addr skips the IP limiter and Networks policy fails
	User     string     // login name: the full address
	Password string
	AuthzID  string // SASL authorization identity (RFC 4616 §2); "" = same as User
}

// maxLoginName bounds what a client-supplied login name may put into
// limiter keys and logs.
const maxLoginName = 320

// Authenticate checks a login. Every failure the client may see is
// ErrAuthFailed (or ErrRateLimited / ErrTemporary); the log line says why.
//
// Order: limiter (no hashing when over the limit), authzid, account row,
// password (cached argon2 result or a fresh hash under the worker
// semaphore), then enabled and policy, which are checked after the
// password so a disabled account costs the same as any other.
func (d *Directory) Authenticate(ctx context.Context, l Login) (storage.Account, error) {
	user := l.User
	if len(user) > maxLoginName {
		user = user[:maxLoginName]
	}
	userKey := storage.Fold(user)
	a, perr := ParseAddress(l.User)
	if perr == nil {
		userKey = a.Key()
	}
	ipKey := ipLimitKey(l.IP)
	acctKey := "acct:" + userKey
	now := d.cfg.Now()
	since := now.Add(-d.cfg.FailWindow)

	// Limiter first: over the limit, no argon2 work is spent at all.
	if ipKey != "" {
		n, err := d.store.LoginFailures(ctx, ipKey, since)
		if err != nil {
			return storage.Account{}, d.temporary(l, "limiter", err)
		}
		if n >= d.cfg.MaxFailuresIP {
			d.logFail(l, "rate limited (ip)")
			return storage.Account{}, ErrRateLimited
		}
	}
	n, err := d.store.LoginFailures(ctx, acctKey, since)
	if err != nil {
		return storage.Account{}, d.temporary(l, "limiter", err)
	}
	if n >= d.cfg.MaxFailuresAccount {
		d.logFail(l, "rate limited (account)")
		return storage.Account{}, ErrRateLimited
	}

	fail := func(reason string) (storage.Account, error) {
		d.logFail(l, reason)
		for _, k := range []string{ipKey, acctKey} {
			if k == "" {
				continue
			}
			if _, err := d.store.LoginFailure(ctx, k, now, since); err != nil {
				d.log.Error("record login failure", "key", k, "err", err)
			}
		}
		return storage.Account{}, ErrAuthFailed
	}

	// RFC 4616 §2: an authorization identity other than the login asks to
	// act as someone else; there are no proxy rights, so refuse.
	if l.AuthzID != "" {
		z := storage.Fold(l.AuthzID)
		if za, err := ParseAddress(l.AuthzID); err == nil {
			z = za.Key()
		}
		if z != userKey {
			return fail("authzid")
		}
	}

	var acct storage.Account
	found := false
	if perr == nil {
		acct, err = d.store.AccountByAddress(ctx, userKey)
		switch {
		case err == nil:
			found = true
		case errors.Is(err, storage.ErrNotFound):
		default:
			return storage.Account{}, d.temporary(l, "account lookup", err)
		}
	}
	if !found || acct.Kind != storage.AccountUser || acct.PasswordHash == "" {
		// Same work as a real check, same answer.
		if _, err := d.verify(ctx, 0, 0, userKey, d.dummyHash, l.Password); err != nil {
			return storage.Account{}, d.temporary(l, "hash", err)
		}
		switch {
		case !found:
			return fail("unknown user")
		case acct.Kind != storage.AccountUser:
			return fail("shared account")
		default:
			return fail("no password")
		}
	}
	ok, err := d.verify(ctx, acct.ID, acct.CredGen, "", acct.PasswordHash, l.Password)
	if err != nil {
		return storage.Account{}, d.temporary(l, "hash", err)
	}
	if !ok {
		return fail("bad password")
	}
	if !acct.Enabled {
		return fail("disabled")
	}
	if why := checkPolicy(acct.Policy, l, now); why != "" {
		d.log.Info("login refused by policy", "user", acct.Address, "detail", why)
		return fail("policy")
	}
	if err := d.store.ClearLoginFailures(ctx, acctKey); err != nil {
		d.log.Error("clear login failures", "key", acctKey, "err", err)
	}
	return acct, nil
}

// logFail writes the one stable failure line that fail2ban-style tools
// match (DESIGN.md §Conventions).
func (d *Directory) logFail(l Login, reason string) {
	ip := ""
	if l.IP.IsValid() {
		ip = l.IP.String()
	}
	user := l.User
	if len(user) > maxLoginName {
		user = user[:maxLoginName]
	}
	d.log.Warn("auth failed", "proto", l.Proto, "ip", ip, "user", user, "reason", reason)
}

func (d *Directory) temporary(l Login, what string, err error) error {
	d.log.Error("auth unavailable", "proto", l.Proto, "user", l.User, "stage", what, "err", err)
	return fmt.Errorf("%s: %w: %w", what, ErrTemporary, err)
}

// ipLimitKey groups client addresses for the limiter: one IPv4 address, or
// the /64 of an IPv6 address (one subscriber usually owns a whole /64, so
// per-address counting would be trivial to evade).
func ipLimitKey(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return "ip:" + ip.String()
	}
	p, _ := ip.WithZone("").Prefix(64)
	return "ip:" + p.String()
}

// errQueueTimeout is wrapped in ErrTemporary when no hash worker frees up
// within HashQueueTimeout.
var errQueueTimeout = errors.New("password hashing queue full")

// acquire takes a hash worker slot, waiting at most HashQueueTimeout
// (errQueueTimeout) or until ctx ends.
func (d *Directory) acquire(ctx context.Context) (release func(), err error) {
	select {
	case d.sem <- struct{}{}:
		return func() { <-d.sem }, nil
	default:
	}
	t := time.NewTimer(d.cfg.HashQueueTimeout)
	defer t.Stop()
	select {
	case d.sem <- struct{}{}:
		return func() { <-d.sem }, nil
	case <-t.C:
		return nil, errQueueTimeout
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// verify checks pw against hash, consulting the result cache first.
func (d *Directory) verify(ctx context.Context, id storage.AccountID, gen int64, user, hash, pw string) (bool, error) {
	k := d.cache.cacheKey(id, gen, user, pw)
	if ok, hit := d.cache.get(k); hit {
		return ok, nil
	}
	release, err := d.acquire(ctx)
	if err != nil {
		return false, err
	}
	ok, err := CheckPassword(hash, pw)
	release()
	if err != nil {
		// A corrupt stored hash is a failed login, not an outage; say so
		// in the log.
		d.log.Error("unusable password hash", "account", id, "err", err)
		return false, nil
	}
	d.cache.put(k, ok)
	return ok, nil
}

// hash computes a new password hash under the worker semaphore.
func (d *Directory) hash(ctx context.Context, pw string) (string, error) {
	release, err := d.acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("hash password: %w: %w", ErrTemporary, err)
	}
	defer release()
	return HashPassword(pw, d.cfg.Argon2)
}

// checkPolicy returns why a login breaks the account's policy, or "".
func checkPolicy(p storage.Policy, l Login, now time.Time) string {
	if len(p.Protocols) > 0 && !slices.ContainsFunc(p.Protocols, func(s string) bool { return strings.EqualFold(s, l.Proto) }) {
		return "protocol " + l.Proto + " not allowed"
	}
	if len(p.Networks) > 0 {
		if !l.IP.IsValid() {
			return "client address unknown"
		}
		ip := l.IP.Unmap().WithZone("")
		in := false
		for _, n := range p.Networks {
			pfx, err := parseNetwork(n)
			if err != nil {
				return err.Error()
			}
			if pfx.Contains(ip) {
				in = true
				break
			}
		}
		if !in {
			return "network " + ip.String() + " not allowed"
		}
	}
	us := now.UnixMicro()
	if p.NotBefore != 0 && us < p.NotBefore {
		return "before not_before"
	}
	if p.NotAfter != 0 && us > p.NotAfter {
		return "after not_after"
	}
	if p.Hours == "" && p.Days == "" {
		return ""
	}
	loc := time.UTC
	if p.Zone != "" {
		z, err := time.LoadLocation(p.Zone)
		if err != nil {
			return "zone " + strconv.Quote(p.Zone) + " unknown"
		}
		loc = z
	}
	t := now.In(loc)
	if p.Days != "" {
		ok, err := dayAllowed(p.Days, t.Weekday())
		if err != nil {
			return err.Error()
		}
		if !ok {
			return "day " + t.Weekday().String() + " not allowed"
		}
	}
	if p.Hours != "" {
		ok, err := hourAllowed(p.Hours, t.Hour()*60+t.Minute())
		if err != nil {
			return err.Error()
		}
		if !ok {
			return "time " + t.Format("15:04") + " not allowed"
		}
	}
	return ""
}

// checkPolicySyntax validates a policy before it is stored, so a typo
// does not silently lock someone out.
func checkPolicySyntax(p storage.Policy) error {
	for _, n := range p.Networks {
		if _, err := parseNetwork(n); err != nil {
			return err
		}
	}
	if p.Zone != "" {
		if _, err := time.LoadLocation(p.Zone); err != nil {
			return fmt.Errorf("zone %q unknown", p.Zone)
		}
	}
	if p.Days != "" {
		if _, err := dayAllowed(p.Days, time.Monday); err != nil {
			return err
		}
	}
	if p.Hours != "" {
		if _, err := hourAllowed(p.Hours, 0); err != nil {
			return err
		}
	}
	return nil
}

func parseNetwork(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("network %q malformed", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("network %q malformed", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// dayAllowed evaluates a Days spec: comma-separated days or ranges
// ("mon-fri", "mon,wed,fri", "fri-mon" wraps over the weekend).
func dayAllowed(spec string, day time.Weekday) (bool, error) {
	for _, part := range strings.Split(spec, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		from, to, isRange := strings.Cut(part, "-")
		f, ok1 := weekdays[strings.TrimSpace(from)]
		t := f
		ok2 := true
		if isRange {
			t, ok2 = weekdays[strings.TrimSpace(to)]
		}
		if !ok1 || !ok2 {
			return false, fmt.Errorf("days %q malformed (want e.g. mon-fri)", spec)
		}
		if f <= t && day >= f && day <= t || f > t && (day >= f || day <= t) {
			return true, nil
		}
	}
	return false, nil
}

// hourAllowed evaluates an Hours spec: comma-separated "HH:MM-HH:MM"
// ranges, end exclusive; a range whose end is before its start wraps
// midnight ("22:00-06:00").
func hourAllowed(spec string, minute int) (bool, error) {
	for _, part := range strings.Split(spec, ",") {
		from, to, ok := strings.Cut(strings.TrimSpace(part), "-")
		f, err1 := clockMinute(from)
		t, err2 := clockMinute(to)
		if !ok || err1 != nil || err2 != nil {
			return false, fmt.Errorf("hours %q malformed (want e.g. 08:00-18:00)", spec)
		}
		if f <= t && minute >= f && minute < t || f > t && (minute >= f || minute < t) {
			return true, nil
		}
	}
	return false, nil
}

func clockMinute(s string) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("bad clock time %q", s)
	}
	return hh*60 + mm, nil
}
