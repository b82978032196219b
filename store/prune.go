package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
)

// PruneResult counts what a prune removed.
type PruneResult struct {
	Events        int `json:"events"`
	Notifications int `json:"notifications"`
	Kept          int `json:"kept_unfinished"`
}

// pruneChunk bounds keys deleted per transaction (bbolt: mass deletes in one
// transaction create huge freelists).
const pruneChunk = 2000

// Prune removes events, deliveries, attempts and inbox items received before
// now-retention. It never removes undelivered work: an event with a delivery
// that is not final is kept (and counted in Kept), as is an inbox item still
// waiting for enrichment.
func (db *DB) Prune(ctx context.Context, retention time.Duration) (PruneResult, error) {
	var total PruneResult
	cutoff := uint64(db.opts.Now().Add(-retention).UnixMilli())
	for {
		var r PruneResult
		var more bool
		err := db.submit(ctx, func(tx *bolt.Tx) error {
			r, more = PruneResult{}, false
			var err error
			more, err = db.pruneEvents(tx, cutoff, &r)
			if err != nil {
				return err
			}
			m2, err := db.pruneInbox(tx, cutoff, &r)
			more = more || m2
			return err
		}, nil)
		if err != nil {
			return total, err
		}
		total.Events += r.Events
		total.Notifications += r.Notifications
		total.Kept += r.Kept
		if !more || ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
}

// pruneEvents deletes up to pruneChunk old events whose deliveries are final.
// It scans from the oldest and skips (keeps) unfinished ones.
func (db *DB) pruneEvents(tx *bolt.Tx, cutoff uint64, r *PruneResult) (bool, error) {
	idx := tx.Bucket(bEventsTime)
	events, deliveries, attempts := tx.Bucket(bEvents), tx.Bucket(bDeliveries), tx.Bucket(bAttempts)
	var drop [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k[:8]) < cutoff; k, _ = c.Next() {
		if len(drop) >= pruneChunk {
			break
		}
		id := k[8:]
		prefix := append(append([]byte(nil), id...), '|')
		unfinished := false
		dc := deliveries.Cursor()
		for dk, v := dc.Seek(prefix); dk != nil && bytes.HasPrefix(dk, prefix); dk, v = dc.Next() {
			var d Delivery
			if jsonUnmarshal(v, &d) == nil && !Final(d.State) {
				unfinished = true
				break
			}
		}
		if unfinished {
			r.Kept++
			continue
		}
		drop = append(drop, append([]byte(nil), k...))
	}
	for _, k := range drop {
		id := k[8:]
		prefix := append(append([]byte(nil), id...), '|')
		var dkeys [][]byte
		dc := deliveries.Cursor()
		for dk, _ := dc.Seek(prefix); dk != nil && bytes.HasPrefix(dk, prefix); dk, _ = dc.Next() {
			dkeys = append(dkeys, append([]byte(nil), dk...))
		}
		for _, dk := range dkeys {
			ap := append(append([]byte(nil), dk...), 0)
			var akeys [][]byte
			ac := attempts.Cursor()
			for ak, _ := ac.Seek(ap); ak != nil && bytes.HasPrefix(ak, ap); ak, _ = ac.Next() {
				akeys = append(akeys, append([]byte(nil), ak...))
			}
			for _, ak := range akeys {
				if err := attempts.Delete(ak); err != nil {
					return false, err
				}
			}
			if err := deliveries.Delete(dk); err != nil {
				return false, err
			}
		}
		if err := events.Delete(id); err != nil {
			return false, err
		}
		if err := idx.Delete(k); err != nil {
			return false, err
		}
		r.Events++
	}
	return len(drop) >= pruneChunk, nil
}

func (db *DB) pruneInbox(tx *bolt.Tx, cutoff uint64, r *PruneResult) (bool, error) {
	idx, inbox, alt := tx.Bucket(bInboxTime), tx.Bucket(bInbox), tx.Bucket(bAltKeys)
	var drop [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k[:8]) < cutoff && len(drop) < pruneChunk; k, _ = c.Next() {
		var n mapping.Notification
		if ok, _ := getJSON(inbox, k[8:], &n); ok && n.Status == mapping.StatusEnriching {
			r.Kept++
			continue
		}
		drop = append(drop, append([]byte(nil), k...))
	}
	for _, k := range drop {
		ik := k[8:]
		var n mapping.Notification
		if ok, _ := getJSON(inbox, ik, &n); ok {
			for _, a := range n.AltKeys {
				if err := alt.Delete(inboxKey(n.Source, a)); err != nil {
					return false, err
				}
			}
		}
		if err := inbox.Delete(ik); err != nil {
			return false, err
		}
		if err := idx.Delete(k); err != nil {
			return false, err
		}
		r.Notifications++
	}
	return len(drop) >= pruneChunk, nil
}
