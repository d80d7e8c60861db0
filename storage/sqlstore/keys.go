package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"tidings/storage"
)

// PutDKIMKey implements storage.Keys.
func (s *Store) PutDKIMKey(ctx context.Context, k storage.DKIMKey) error {
	domain, err := storage.DomainASCII(k.Domain)
	if err != nil {
		return err
	}
	if k.Selector == "" || len(k.PrivatePEM) == 0 {
		return fmt.Errorf("dkim key for %s without selector or key: %w", domain, storage.ErrInvalid)
	}
	created := k.Created
	if created.IsZero() {
		created = time.Now()
	}
	return s.withTx(ctx, func(tx *Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO dkim_keys (domain, selector, algorithm, private_pem, created) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (domain, selector) DO UPDATE SET algorithm = excluded.algorithm, private_pem = excluded.private_pem, created = excluded.created`,
			domain, k.Selector, k.Algorithm, k.PrivatePEM, created.UnixMicro())
		return err
	})
}

// DKIMKeys implements storage.Keys.
func (s *Store) DKIMKeys(ctx context.Context, domain string) ([]storage.DKIMKey, error) {
	d, err := storage.DomainASCII(domain)
	if err != nil {
		return nil, err
	}
	rows, err := s.query(ctx, `SELECT domain, selector, algorithm, private_pem, created FROM dkim_keys WHERE domain = ? ORDER BY selector`, d)
	if err != nil {
		return nil, s.dbErr(err)
	}
	defer rows.Close()
	var out []storage.DKIMKey
	for rows.Next() {
		var k storage.DKIMKey
		var created int64
		if err := rows.Scan(&k.Domain, &k.Selector, &k.Algorithm, &k.PrivatePEM, &created); err != nil {
			return nil, s.dbErr(err)
		}
		k.Created = fromMicro(created)
		out = append(out, k)
	}
	return out, s.dbErr(rows.Err())
}

// Secret implements storage.Keys. gen runs outside any transaction; the
// insert does nothing when another node got there first, and everyone reads
// back the stored value.
func (s *Store) Secret(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error) {
	var v []byte
	err := s.queryRow(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, s.dbErr(err)
	}
	fresh, err := gen()
	if err != nil {
		return nil, fmt.Errorf("generate secret %q: %w", name, err)
	}
	err = s.withTx(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`, name, fresh); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v)
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

var _ storage.Keys = (*Store)(nil)
