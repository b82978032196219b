package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/store"
)

// Expedite makes dest's pending and retrying deliveries due at now (see
// store.DB.Expedite); deliveries a replica holds a lease on are left alone.
func (db *DB) Expedite(ctx context.Context, dest string, now time.Time) (int, error) {
	n := 0
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx, `SELECT doc FROM deliveries
			WHERE destination = $1 AND next_at_ms > $2 AND state IN ('pending', 'retrying')
			  AND (leased_until IS NULL OR leased_until < $3)
			FOR UPDATE`, dest, now.UnixMilli(), now)
		if err != nil {
			return err
		}
		ds, err := collectJSON[store.Delivery](rows)
		if err != nil {
			return err
		}
		for i := range ds {
			ds[i].NextAtMs = now.UnixMilli()
			if err := updateDelivery(ctx, tx, &ds[i]); err != nil {
				return err
			}
		}
		n = len(ds)
		if n == 0 {
			return nil
		}
		return db.notify(ctx, tx, []string{dest})
	})
	if err == nil && n > 0 {
		db.woke([]string{dest})
	}
	return n, err
}
