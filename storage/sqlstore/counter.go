package sqlstore

import (
	"context"
	"time"

	"tidings/storage"
)

// CountEvent implements storage.Counter. Rows older than both the window
// and a day are pruned for the key on the way, as LoginFailure does.
func (s *Store) CountEvent(ctx context.Context, key string, n int, at, since time.Time) (int, error) {
	var total int64
	err := s.withTx(ctx, func(tx *Tx) error {
		if n != 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO events (key, at, n) VALUES (?, ?, ?)`, key, at.UnixMicro(), int64(n)); err != nil {
				return err
			}
		}
		prune := earlier(since, at.Add(-24*time.Hour))
		if _, err := tx.Exec(ctx, `DELETE FROM events WHERE key = ? AND at < ?`, key, prune.UnixMicro()); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT COALESCE(CAST(sum(n) AS BIGINT), 0) FROM events WHERE key = ? AND at >= ?`, key, since.UnixMicro()).Scan(&total)
	})
	return int(total), err
}

var _ storage.Counter = (*Store)(nil)
