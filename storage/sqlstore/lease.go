package sqlstore

import (
	"context"
	"time"
)

// AcquireLease implements storage.Store. It takes the lease when nobody holds
// it, when it has expired, or when holder already holds it.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	now := time.Now()
	var ok bool
	err := s.withTx(ctx, func(tx *Tx) error {
		res, err := tx.Exec(ctx, `INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
			WHERE leases.expires < ? OR leases.holder = excluded.holder`,
			name, holder, now.Add(ttl).UnixMicro(), now.UnixMicro())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return err
	})
	return ok, err
}

// RefreshLease implements storage.Store.
func (s *Store) RefreshLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	var ok bool
	err := s.withTx(ctx, func(tx *Tx) error {
		res, err := tx.Exec(ctx, `UPDATE leases SET expires = ? WHERE name = ? AND holder = ?`,
			time.Now().Add(ttl).UnixMicro(), name, holder)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return err
	})
	return ok, err
}

// ReleaseLease implements storage.Store.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	return s.withTx(ctx, func(tx *Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder)
		return err
	})
}
