package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// expediteBatch bounds the deliveries one BoltDB write moves.
const expediteBatch = 2000

// Expedite makes dest's pending and retrying deliveries due at now
// (deliveries waiting for an identifier keep their wait): after an operator
// resumes a held destination its work goes at once, not at the next probe.
// It returns how many deliveries it moved.
func (db *DB) Expedite(ctx context.Context, dest string, now time.Time) (int, error) {
	total := 0
	nowMs := now.UnixMilli()
	for {
		n := 0
		var wake []string
		err := db.submit(ctx, func(tx *bolt.Tx) error {
			n, wake = 0, wake[:0]
			due := tx.Bucket(bDue).Bucket([]byte(dest))
			if due == nil {
				return nil
			}
			deliveries := tx.Bucket(bDeliveries)
			var keys [][]byte
			c := due.Cursor()
			for k, _ := c.Seek(msKey(now.Add(time.Millisecond))); k != nil && len(keys) < expediteBatch; k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				var d Delivery
				dk, _ := storedDelivery(tx, string(k[8:]))
				if ok, err := getJSON(deliveries, dk, &d); err != nil || !ok || int64(binary.BigEndian.Uint64(k[:8])) != d.NextAtMs {
					continue
				}
				if d.State != StatePending && d.State != StateRetrying {
					continue
				}
				if err := delDue(tx, &d); err != nil {
					return err
				}
				d.NextAtMs = nowMs
				if err := putDue(tx, &d); err != nil {
					return err
				}
				if err := putJSON(deliveries, dk, &d); err != nil {
					return err
				}
				n++
			}
			if n > 0 {
				wake = append(wake, dest)
			}
			return nil
		}, &wake)
		total += n
		if err != nil || n < expediteBatch {
			return total, err
		}
	}
}
