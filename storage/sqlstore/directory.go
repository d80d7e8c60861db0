package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"tidings/storage"
)

// ---- Domains ----

const domainCols = `id, name, display, kind, relay_host, catch_all, created`

func scanDomain(sc interface{ Scan(...any) error }) (storage.Domain, error) {
	var d storage.Domain
	var kind, created int64
	err := sc.Scan(&d.ID, &d.Name, &d.Display, &kind, &d.RelayHost, &d.CatchAll, &created)
	d.Kind = storage.DomainKind(kind)
	d.Created = fromMicro(created)
	return d, err
}

// CreateDomain implements storage.Store.
func (s *Store) CreateDomain(ctx context.Context, d storage.Domain) (storage.Domain, error) {
	name, err := storage.DomainASCII(d.Name)
	if err != nil {
		return storage.Domain{}, err
	}
	d.Name = name
	if d.Display == "" {
		d.Display = storage.DomainUnicode(name)
	}
	if d.Kind != storage.DomainLocal && d.Kind != storage.DomainRemote {
		return storage.Domain{}, fmt.Errorf("domain kind %d: %w", d.Kind, storage.ErrInvalid)
	}
	d.Created = time.UnixMicro(nowMicro())
	err = s.withTx(ctx, func(tx *Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO domains (name, display, kind, relay_host, catch_all, created)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
			d.Name, d.Display, int64(d.Kind), d.RelayHost, d.CatchAll, d.Created.UnixMicro()).Scan(&d.ID)
		if err != nil && s.d.IsUnique(err) {
			return fmt.Errorf("domain %q: %w", d.Name, storage.ErrExists)
		}
		return err
	})
	if err != nil {
		return storage.Domain{}, err
	}
	return d, nil
}

// Domain implements storage.Store.
func (s *Store) Domain(ctx context.Context, name string) (storage.Domain, error) {
	a, err := storage.DomainASCII(name)
	if err != nil {
		return storage.Domain{}, err
	}
	d, err := scanDomain(s.queryRow(ctx, `SELECT `+domainCols+` FROM domains WHERE name = ?`, a))
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Domain{}, notFound("domain %q is not served here", a)
	}
	return d, s.dbErr(err)
}

// Domains implements storage.Store.
func (s *Store) Domains(ctx context.Context) ([]storage.Domain, error) {
	rows, err := s.query(ctx, `SELECT `+domainCols+` FROM domains ORDER BY name`)
	if err != nil {
		return nil, s.dbErr(err)
	}
	defer rows.Close()
	var out []storage.Domain
	for rows.Next() {
		d, err := scanDomain(rows)
		if err != nil {
			return nil, s.dbErr(err)
		}
		out = append(out, d)
	}
	return out, s.dbErr(rows.Err())
}

// UpdateDomain implements storage.Store.
func (s *Store) UpdateDomain(ctx context.Context, d storage.Domain) error {
	name, err := storage.DomainASCII(d.Name)
	if err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *Tx) error {
		res, err := tx.Exec(ctx, `UPDATE domains SET kind = ?, relay_host = ?, catch_all = ? WHERE name = ?`,
			int64(d.Kind), d.RelayHost, d.CatchAll, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("domain %q is not served here", name)
		}
		return nil
	})
}

// DeleteDomain implements storage.Store.
func (s *Store) DeleteDomain(ctx context.Context, name string) error {
	a, err := storage.DomainASCII(name)
	if err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *Tx) error {
		var id int64
		err := tx.QueryRow(ctx, `SELECT id FROM domains WHERE name = ?`+s.d.ForUpdate(), a).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("domain %q is not served here", a)
		}
		if err != nil {
			return err
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM accounts WHERE domain_id = ?`, id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("domain %q still has %d accounts: %w", a, n, storage.ErrNotEmpty)
		}
		for _, q := range []string{
			`DELETE FROM alias_senders WHERE alias_id IN (SELECT id FROM aliases WHERE domain_id = ?)`,
			`DELETE FROM aliases WHERE domain_id = ?`,
			`DELETE FROM group_members WHERE group_id IN (SELECT id FROM mailgroups WHERE domain_id = ?)`,
			`DELETE FROM mailgroups WHERE domain_id = ?`,
			`DELETE FROM acl WHERE object_kind = 'domain' AND object_id = ?`,
			`DELETE FROM domains WHERE id = ?`,
		} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// ---- Accounts ----

const accountCols = `a.id, a.domain_id, a.address, a.key, a.kind, a.display_name, a.password_hash,
	a.cred_gen, a.enabled, a.quota_bytes, a.quota_messages, a.policy, a.created,
	COALESCE(u.used_bytes, 0), COALESCE(u.used_messages, 0)`

const accountFrom = ` FROM accounts a LEFT JOIN account_usage u ON u.account_id = a.id`

func scanAccount(sc interface{ Scan(...any) error }) (storage.Account, error) {
	var a storage.Account
	var kind, enabled, created int64
	var policy string
	err := sc.Scan(&a.ID, &a.Domain, &a.Address, &a.Key, &kind, &a.DisplayName, &a.PasswordHash,
		&a.CredGen, &enabled, &a.QuotaBytes, &a.QuotaMessages, &policy, &created,
		&a.UsedBytes, &a.UsedMessages)
	if err != nil {
		return a, err
	}
	a.Kind = storage.AccountKind(kind)
	a.Enabled = enabled != 0
	a.Created = fromMicro(created)
	if err := a.Policy.UnmarshalText([]byte(policy)); err != nil {
		return a, fmt.Errorf("account %d policy: %v: %w", a.ID, err, storage.ErrUnavailable)
	}
	return a, nil
}

// splitAddress returns the display form (local part as given, U-label
// domain), the key, and the A-label domain.
func splitAddress(addr string) (display, key, domain string, err error) {
	addr = strings.TrimSpace(addr)
	key, err = storage.FoldAddress(addr)
	if err != nil {
		return "", "", "", err
	}
	at := strings.LastIndexByte(key, '@')
	domain = key[at+1:]
	local := addr[:strings.LastIndexByte(addr, '@')]
	return local + "@" + storage.DomainUnicode(domain), key, domain, nil
}

// CreateAccount implements storage.Store.
func (s *Store) CreateAccount(ctx context.Context, na storage.NewAccount) (storage.Account, error) {
	display, key, domain, err := splitAddress(na.Address)
	if err != nil {
		return storage.Account{}, err
	}
	if na.QuotaBytes < 0 || na.QuotaMessages < 0 {
		return storage.Account{}, fmt.Errorf("negative quota: %w", storage.ErrInvalid)
	}
	boxes := []storage.NewMailbox{{Name: "INBOX", Subscribed: true}}
	for _, m := range na.DefaultMailboxes {
		name, nk, err := mailboxName(m.Name)
		if err != nil {
			return storage.Account{}, err
		}
		if nk == "inbox" {
			boxes[0].SpecialUse = m.SpecialUse
			continue
		}
		m.Name = name
		boxes = append(boxes, m)
	}
	policy, err := na.Policy.MarshalText()
	if err != nil {
		return storage.Account{}, fmt.Errorf("policy: %v: %w", err, storage.ErrInvalid)
	}
	var id storage.AccountID
	err = s.withTx(ctx, func(tx *Tx) error {
		var domainID int64
		var kind int64
		err := tx.QueryRow(ctx, `SELECT id, kind FROM domains WHERE name = ?`, domain).Scan(&domainID, &kind)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("domain %q is not served here", domain)
		}
		if err != nil {
			return err
		}
		if storage.DomainKind(kind) != storage.DomainLocal {
			return notFound("domain %q is relayed, not local: no accounts there", domain)
		}
		if err := s.addressFree(ctx, tx, key); err != nil {
			return err
		}
		now := nowMicro()
		err = tx.QueryRow(ctx, `INSERT INTO accounts (domain_id, address, key, kind, display_name, password_hash,
				cred_gen, enabled, quota_bytes, quota_messages, policy, created, account_modseq)
			VALUES (?, ?, ?, ?, ?, ?, 1, 1, ?, ?, ?, ?, 1) RETURNING id`,
			domainID, display, key, int64(na.Kind), na.DisplayName, na.PasswordHash,
			na.QuotaBytes, na.QuotaMessages, string(policy), now).Scan(&id)
		if err != nil {
			if s.d.IsUnique(err) {
				return fmt.Errorf("account %q: %w", key, storage.ErrExists)
			}
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO account_usage (account_id, used_bytes, used_messages, quota_bytes, quota_messages)
			VALUES (?, 0, 0, ?, ?)`, id, na.QuotaBytes, na.QuotaMessages); err != nil {
			return err
		}
		for _, m := range boxes {
			if _, err := s.insertMailbox(ctx, tx, id, m, 1); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return storage.Account{}, err
	}
	return s.Account(ctx, id)
}

// addressFree refuses a key already used by an account, alias or group.
func (s *Store) addressFree(ctx context.Context, tx *Tx, key string) error {
	var n int64
	err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts WHERE key = ?) +
		(SELECT count(*) FROM aliases WHERE key = ?) + (SELECT count(*) FROM mailgroups WHERE key = ?)`,
		key, key, key).Scan(&n)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("address %q: %w", key, storage.ErrExists)
	}
	return nil
}

// Account implements storage.Store.
func (s *Store) Account(ctx context.Context, id storage.AccountID) (storage.Account, error) {
	a, err := scanAccount(s.queryRow(ctx, `SELECT `+accountCols+accountFrom+` WHERE a.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return a, notFound("account %d", id)
	}
	return a, s.dbErr(err)
}

// AccountByAddress implements storage.Store.
func (s *Store) AccountByAddress(ctx context.Context, addr string) (storage.Account, error) {
	key, err := storage.FoldAddress(strings.TrimSpace(addr))
	if err != nil {
		return storage.Account{}, err
	}
	a, err := scanAccount(s.queryRow(ctx, `SELECT `+accountCols+accountFrom+` WHERE a.key = ?`, key))
	if errors.Is(err, sql.ErrNoRows) {
		return a, notFound("account %q", key)
	}
	return a, s.dbErr(err)
}

// Accounts implements storage.Store.
func (s *Store) Accounts(ctx context.Context, domain string) ([]storage.Account, error) {
	q := `SELECT ` + accountCols + accountFrom
	var args []any
	if domain != "" {
		d, err := s.Domain(ctx, domain)
		if err != nil {
			return nil, err
		}
		q += ` WHERE a.domain_id = ?`
		args = append(args, d.ID)
	}
	rows, err := s.query(ctx, q+` ORDER BY a.key`, args...)
	if err != nil {
		return nil, s.dbErr(err)
	}
	defer rows.Close()
	var out []storage.Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, s.dbErr(err)
		}
		out = append(out, a)
	}
	return out, s.dbErr(rows.Err())
}

func (s *Store) updateAccount(ctx context.Context, id storage.AccountID, q string, args ...any) error {
	return s.withTx(ctx, func(tx *Tx) error {
		res, err := tx.Exec(ctx, q, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("account %d", id)
		}
		return nil
	})
}

// SetPassword implements storage.Store.
func (s *Store) SetPassword(ctx context.Context, id storage.AccountID, hash string) (int64, error) {
	var gen int64
	err := s.withTx(ctx, func(tx *Tx) error {
		err := tx.QueryRow(ctx, `UPDATE accounts SET password_hash = ?, cred_gen = cred_gen + 1 WHERE id = ? RETURNING cred_gen`,
			hash, id).Scan(&gen)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("account %d", id)
		}
		return err
	})
	return gen, err
}

// SetEnabled implements storage.Store. Disabling bumps the credential
// generation too, so cached logins end.
func (s *Store) SetEnabled(ctx context.Context, id storage.AccountID, enabled bool) error {
	return s.updateAccount(ctx, id, `UPDATE accounts SET enabled = ?, cred_gen = cred_gen + 1 WHERE id = ?`, b2i(enabled), id)
}

// SetQuota implements storage.Store.
func (s *Store) SetQuota(ctx context.Context, id storage.AccountID, bytes, messages int64) error {
	if bytes < 0 || messages < 0 {
		return fmt.Errorf("negative quota: %w", storage.ErrInvalid)
	}
	return s.withTx(ctx, func(tx *Tx) error {
		res, err := tx.Exec(ctx, `UPDATE accounts SET quota_bytes = ?, quota_messages = ? WHERE id = ?`, bytes, messages, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("account %d", id)
		}
		_, err = tx.Exec(ctx, `UPDATE account_usage SET quota_bytes = ?, quota_messages = ? WHERE account_id = ?`, bytes, messages, id)
		return err
	})
}

// SetPolicy implements storage.Store.
func (s *Store) SetPolicy(ctx context.Context, id storage.AccountID, p storage.Policy) error {
	b, err := p.MarshalText()
	if err != nil {
		return fmt.Errorf("policy: %v: %w", err, storage.ErrInvalid)
	}
	return s.updateAccount(ctx, id, `UPDATE accounts SET policy = ? WHERE id = ?`, string(b), id)
}

// ---- Aliases and groups ----

// domainOf returns the domain row id of a folded address's domain.
func (s *Store) domainOf(ctx context.Context, tx *Tx, domain string) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `SELECT id FROM domains WHERE name = ?`, domain).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, notFound("domain %q is not served here", domain)
	}
	return id, err
}

// CreateAlias implements storage.Store.
func (s *Store) CreateAlias(ctx context.Context, a storage.Alias) error {
	display, key, domain, err := splitAddress(a.Address)
	if err != nil {
		return err
	}
	if len(a.Targets) == 0 {
		return fmt.Errorf("alias %q has no targets: %w", key, storage.ErrInvalid)
	}
	targets, _ := json.Marshal(a.Targets)
	return s.withTx(ctx, func(tx *Tx) error {
		did, err := s.domainOf(ctx, tx, domain)
		if err != nil {
			return err
		}
		if err := s.addressFree(ctx, tx, key); err != nil {
			return err
		}
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO aliases (domain_id, address, key, targets) VALUES (?, ?, ?, ?) RETURNING id`,
			did, display, key, string(targets)).Scan(&id); err != nil {
			return err
		}
		seen := map[storage.AccountID]bool{}
		for _, acc := range a.SendAs {
			if seen[acc] {
				continue
			}
			seen[acc] = true
			if _, err := tx.Exec(ctx, `INSERT INTO alias_senders (alias_id, account_id) VALUES (?, ?)`, id, acc); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteAlias implements storage.Store.
func (s *Store) DeleteAlias(ctx context.Context, addr string) error {
	return s.deleteList(ctx, addr, "alias", `DELETE FROM alias_senders WHERE alias_id IN (SELECT id FROM aliases WHERE key = ?)`,
		`DELETE FROM aliases WHERE key = ?`)
}

// deleteList removes an alias or group by address: first its child rows
// (deleteChildren), then the row itself (deleteRow); ErrNotFound when no
// such row existed.
func (s *Store) deleteList(ctx context.Context, addr, kind, deleteChildren, deleteRow string) error {
	key, err := storage.FoldAddress(strings.TrimSpace(addr))
	if err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(ctx, deleteChildren, key); err != nil {
			return err
		}
		res, err := tx.Exec(ctx, deleteRow, key)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("%s %q", kind, key)
		}
		return nil
	})
}

// Aliases implements storage.Store.
func (s *Store) Aliases(ctx context.Context, domain string) ([]storage.Alias, error) {
	q := `SELECT id, address, key, targets FROM aliases`
	var args []any
	if domain != "" {
		d, err := s.Domain(ctx, domain)
		if err != nil {
			return nil, err
		}
		q += ` WHERE domain_id = ?`
		args = append(args, d.ID)
	}
	var out []storage.Alias
	err := s.readTx(ctx, func(tx *Tx) error {
		out = nil
		rows, err := tx.Query(ctx, q+` ORDER BY key`, args...)
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			var a storage.Alias
			var targets string
			if err := rows.Scan(&id, &a.Address, &a.Key, &targets); err != nil {
				rows.Close()
				return err
			}
			json.Unmarshal([]byte(targets), &a.Targets)
			ids = append(ids, id)
			out = append(out, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i, id := range ids {
			senders, err := s.aliasSenders(ctx, tx, id)
			if err != nil {
				return err
			}
			out[i].SendAs = senders
		}
		return nil
	})
	return out, err
}

func (s *Store) aliasSenders(ctx context.Context, tx *Tx, id int64) ([]storage.AccountID, error) {
	rows, err := tx.Query(ctx, `SELECT account_id FROM alias_senders WHERE alias_id = ? ORDER BY account_id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.AccountID
	for rows.Next() {
		var a storage.AccountID
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// CreateGroup implements storage.Store.
func (s *Store) CreateGroup(ctx context.Context, g storage.Group) error {
	display, key, domain, err := splitAddress(g.Address)
	if err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *Tx) error {
		did, err := s.domainOf(ctx, tx, domain)
		if err != nil {
			return err
		}
		if err := s.addressFree(ctx, tx, key); err != nil {
			return err
		}
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO mailgroups (domain_id, address, key) VALUES (?, ?, ?) RETURNING id`,
			did, display, key).Scan(&id); err != nil {
			return err
		}
		for i, m := range g.Members {
			if _, err := tx.Exec(ctx, `INSERT INTO group_members (group_id, seq, member) VALUES (?, ?, ?)`, id, i, m); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteGroup implements storage.Store.
func (s *Store) DeleteGroup(ctx context.Context, addr string) error {
	return s.deleteList(ctx, addr, "group", `DELETE FROM group_members WHERE group_id IN (SELECT id FROM mailgroups WHERE key = ?)`,
		`DELETE FROM mailgroups WHERE key = ?`)
}

// Groups implements storage.Store.
func (s *Store) Groups(ctx context.Context, domain string) ([]storage.Group, error) {
	q := `SELECT id, address, key FROM mailgroups`
	var args []any
	if domain != "" {
		d, err := s.Domain(ctx, domain)
		if err != nil {
			return nil, err
		}
		q += ` WHERE domain_id = ?`
		args = append(args, d.ID)
	}
	var out []storage.Group
	err := s.readTx(ctx, func(tx *Tx) error {
		out = nil
		rows, err := tx.Query(ctx, q+` ORDER BY key`, args...)
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			var g storage.Group
			if err := rows.Scan(&id, &g.Address, &g.Key); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
			out = append(out, g)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i, id := range ids {
			m, err := s.groupMembers(ctx, tx, id)
			if err != nil {
				return err
			}
			out[i].Members = m
		}
		return nil
	})
	return out, err
}

func (s *Store) groupMembers(ctx context.Context, tx *Tx, id int64) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT member FROM group_members WHERE group_id = ? ORDER BY seq`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Lookup implements storage.Store. An unknown address is Kind
// RecipientNone with an error wrapping ErrNotFound.
func (s *Store) Lookup(ctx context.Context, addr string) (storage.Recipient, error) {
	key, err := storage.FoldAddress(strings.TrimSpace(addr))
	if err != nil {
		return storage.Recipient{}, err
	}
	var r storage.Recipient
	err = s.readTx(ctx, func(tx *Tx) error {
		r = storage.Recipient{}
		a, err := scanAccount(tx.QueryRow(ctx, `SELECT `+accountCols+accountFrom+` WHERE a.key = ?`, key))
		if err == nil {
			r.Kind, r.Account = storage.RecipientAccount, &a
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var id int64
		var al storage.Alias
		var targets string
		err = tx.QueryRow(ctx, `SELECT id, address, key, targets FROM aliases WHERE key = ?`, key).Scan(&id, &al.Address, &al.Key, &targets)
		if err == nil {
			json.Unmarshal([]byte(targets), &al.Targets)
			if al.SendAs, err = s.aliasSenders(ctx, tx, id); err != nil {
				return err
			}
			r.Kind, r.Alias = storage.RecipientAlias, &al
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var g storage.Group
		err = tx.QueryRow(ctx, `SELECT id, address, key FROM mailgroups WHERE key = ?`, key).Scan(&id, &g.Address, &g.Key)
		if err == nil {
			if g.Members, err = s.groupMembers(ctx, tx, id); err != nil {
				return err
			}
			r.Kind, r.Group = storage.RecipientGroup, &g
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return notFound("address %q", key)
	})
	return r, err
}

// ---- ACL ----

// normRights returns the rights letters sorted and deduplicated.
func normRights(r storage.Rights) (storage.Rights, error) {
	set := map[byte]bool{}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !strings.ContainsRune("lrswipkxteacd0123456789", rune(c)) {
			return "", fmt.Errorf("right %q: %w", c, storage.ErrInvalid)
		}
		set[c] = true
	}
	b := make([]byte, 0, len(set))
	for c := range set {
		b = append(b, c)
	}
	sort.Slice(b, func(i, j int) bool { return b[i] < b[j] })
	return storage.Rights(b), nil
}

// SetRights implements storage.Store.
func (s *Store) SetRights(ctx context.Context, g storage.Grant) error {
	r, err := normRights(g.Rights)
	if err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *Tx) error {
		if r == "" {
			_, err := tx.Exec(ctx, `DELETE FROM acl WHERE object_kind = ? AND object_id = ? AND grantee = ?`,
				g.Object.Kind, g.Object.ID, g.Grantee)
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO acl (object_kind, object_id, grantee, rights) VALUES (?, ?, ?, ?)
			ON CONFLICT (object_kind, object_id, grantee) DO UPDATE SET rights = excluded.rights`,
			g.Object.Kind, g.Object.ID, g.Grantee, string(r))
		return err
	})
}

// Rights implements storage.Store. No row: no rights (owners are decided
// by auth, not here).
func (s *Store) Rights(ctx context.Context, obj storage.ACLObject, grantee storage.AccountID) (storage.Rights, error) {
	var r string
	err := s.queryRow(ctx, `SELECT rights FROM acl WHERE object_kind = ? AND object_id = ? AND grantee = ?`,
		obj.Kind, obj.ID, grantee).Scan(&r)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return storage.Rights(r), s.dbErr(err)
}

// Grants implements storage.Store.
func (s *Store) Grants(ctx context.Context, obj storage.ACLObject) ([]storage.Grant, error) {
	rows, err := s.query(ctx, `SELECT grantee, rights FROM acl WHERE object_kind = ? AND object_id = ? ORDER BY grantee`, obj.Kind, obj.ID)
	if err != nil {
		return nil, s.dbErr(err)
	}
	defer rows.Close()
	var out []storage.Grant
	for rows.Next() {
		g := storage.Grant{Object: obj}
		var r string
		if err := rows.Scan(&g.Grantee, &r); err != nil {
			return nil, s.dbErr(err)
		}
		g.Rights = storage.Rights(r)
		out = append(out, g)
	}
	return out, s.dbErr(rows.Err())
}

// ---- Failed-login limiter ----

// LoginFailure implements storage.Store. Rows older than a day are pruned
// for the key on the way.
func (s *Store) LoginFailure(ctx context.Context, key string, at, since time.Time) (int, error) {
	var n int
	err := s.withTx(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO login_failures (key, at) VALUES (?, ?)`, key, at.UnixMicro()); err != nil {
			return err
		}
		prune := earlier(since, at.Add(-24*time.Hour))
		if _, err := tx.Exec(ctx, `DELETE FROM login_failures WHERE key = ? AND at < ?`, key, prune.UnixMicro()); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM login_failures WHERE key = ? AND at >= ?`, key, since.UnixMicro()).Scan(&n)
	})
	return n, err
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// LoginFailures implements storage.Store.
func (s *Store) LoginFailures(ctx context.Context, key string, since time.Time) (int, error) {
	var n int
	err := s.queryRow(ctx, `SELECT count(*) FROM login_failures WHERE key = ? AND at >= ?`, key, since.UnixMicro()).Scan(&n)
	return n, s.dbErr(err)
}

// ClearLoginFailures implements storage.Store.
func (s *Store) ClearLoginFailures(ctx context.Context, key string) error {
	return s.withTx(ctx, func(tx *Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM login_failures WHERE key = ?`, key)
		return err
	})
}
