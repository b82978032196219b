package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/vault"
)

// PruneResult counts what a prune removed.
type PruneResult struct {
	Events        int `json:"events"`
	Notifications int `json:"notifications"`
	Kept          int `json:"kept_unfinished"`
	Memory        int `json:"forwarder_memory"` // forwarder memory entries (Adjust's order) past retention
}

// pruneChunk bounds keys deleted per transaction (bbolt: mass deletes in one
// transaction create huge freelists). Event ids and inbox keys are hashes,
// so each deleted key dirties its own leaf page in several buckets, and
// bbolt keeps every dirty page's node in memory until the commit: at 2000
// keys a chunk held about 14 MB of nodes, which showed as spikes of 20-37
// MiB of live heap while a short retention pruned (docs/PERFORMANCE.md,
// "Memory over 10 minutes"). 256 keys bound that to about 2 MB.
const pruneChunk = 256

// Prune removes events, deliveries, attempts and inbox items received before
// now-retention. It never removes undelivered work: an event with a delivery
// that is not final is kept (and counted in Kept), as is an inbox item still
// waiting for enrichment.
func (db *DB) Prune(ctx context.Context, retention time.Duration) (PruneResult, error) {
	var total PruneResult
	cutoff := uint64(db.opts.Now().Add(-retention).UnixMilli())
	// Each chunk resumes where the previous one stopped, so work kept in
	// an earlier chunk is neither rescanned nor counted twice.
	var evFrom, inFrom, memFrom []byte
	evDone, inDone, memDone := false, false, false
	for !evDone || !inDone || !memDone {
		var r PruneResult
		var evNext, inNext, memNext []byte
		err := db.submit(ctx, func(tx *bolt.Tx) error {
			r, evNext, inNext, memNext = PruneResult{}, nil, nil, nil
			var err error
			if !evDone {
				if evNext, err = db.pruneEvents(tx, cutoff, evFrom, &r); err != nil {
					return err
				}
			}
			if !inDone {
				if inNext, err = db.pruneInbox(tx, cutoff, inFrom, &r); err != nil {
					return err
				}
			}
			if !memDone {
				memNext, err = pruneMemory(tx, cutoff, memFrom, &r.Memory)
			}
			return err
		}, nil)
		if err != nil {
			return total, err
		}
		total.Events += r.Events
		total.Notifications += r.Notifications
		total.Kept += r.Kept
		total.Memory += r.Memory
		evFrom, inFrom, memFrom = evNext, inNext, memNext
		evDone, inDone, memDone = evDone || evNext == nil, inDone || inNext == nil, memDone || memNext == nil
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
	return total, nil
}

// pruneEvents deletes up to pruneChunk old events whose deliveries are final.
// It scans from the index key from (the oldest when nil) and skips (keeps)
// unfinished ones. It returns the key to resume from, or nil when done.
func (db *DB) pruneEvents(tx *bolt.Tx, cutoff uint64, from []byte, r *PruneResult) ([]byte, error) {
	events, deliveries, attempts := tx.Bucket(bEvents), tx.Bucket(bDeliveries), tx.Bucket(bAttempts)
	drop, next := oldKeys(events, cutoff, from, r, func(k []byte) bool {
		prefix := deliveriesOf(k)
		dc := deliveries.Cursor()
		for dk, v := dc.Seek(prefix); dk != nil && bytes.HasPrefix(dk, prefix); dk, v = dc.Next() {
			var d Delivery
			if jsonUnmarshal(v, &d) == nil && !Final(d.State) {
				return true // unfinished work is never pruned
			}
		}
		return false
	})
	var kids []vault.KID
	for _, k := range drop {
		id := k[8:]
		// An event sealed under its own key takes the key with it.
		if kid, ok := KIDOf(events.Get(k)); ok && kid == db.seal.KID(OwnEventSubject(string(id))) {
			kids = append(kids, kid)
		}
		prefix := deliveriesOf(k)
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
					return nil, err
				}
			}
			if err := deliveries.Delete(dk); err != nil {
				return nil, err
			}
		}
		var ev mapping.Event
		if v := events.Get(k); v != nil && db.seal.DecodeEvent(v, &ev) == nil && ev.User.AppUserID != "" {
			if err := tx.Bucket(bUserEvents).Delete(userEventKey(db.seal.UserKey(ev.User.AppUserID), string(id))); err != nil {
				return nil, err
			}
		}
		if err := events.Delete(k); err != nil {
			return nil, err
		}
		if err := tx.Bucket(bEventIDs).Delete(id); err != nil {
			return nil, err
		}
		r.Events++
	}
	if err := db.seal.Destroy(kids); err != nil {
		return nil, err
	}
	return next, nil
}

// pruneInbox deletes up to pruneChunk old inbox items, keeping those still
// waiting for enrichment, from the index key from (the oldest when nil). It
// returns the key to resume from, or nil when done.
func (db *DB) pruneInbox(tx *bolt.Tx, cutoff uint64, from []byte, r *PruneResult) ([]byte, error) {
	ids, inbox, alt := tx.Bucket(bInboxIDs), tx.Bucket(bInbox), tx.Bucket(bAltKeys)
	drop, next := oldKeys(inbox, cutoff, from, r, func(k []byte) bool {
		var n mapping.Notification
		ok, _ := db.getNote(inbox, k, &n)
		return ok && n.Status == mapping.StatusEnriching
	})
	var kids []vault.KID
	for _, k := range drop {
		ik := k[8:]
		var n mapping.Notification
		if ok, _ := db.getNote(inbox, k, &n); ok {
			for _, a := range n.AltKeys {
				if err := alt.Delete(inboxKey(n.Source, a)); err != nil {
					return nil, err
				}
			}
			if kid, ok := db.seal.ExpiredKID(&n, inbox.Get(k), time.UnixMilli(int64(cutoff))); ok {
				kids = append(kids, kid)
			}
		}
		if err := inbox.Delete(k); err != nil {
			return nil, err
		}
		if err := ids.Delete(ik); err != nil {
			return nil, err
		}
		r.Notifications++
	}
	// Their own and their expired days' keys go with them.
	if err := db.seal.Destroy(kids); err != nil {
		return nil, err
	}
	return next, nil
}

// oldKeys collects up to pruneChunk keys of a time index older than cutoff,
// starting at from (the oldest when nil) and passing over the keys keep
// reports (counted in r.Kept). next is the key to resume from, nil when the
// scan reached the cutoff.
func oldKeys(idx *bolt.Bucket, cutoff uint64, from []byte, r *PruneResult, keep func(k []byte) bool) (drop [][]byte, next []byte) {
	c := idx.Cursor()
	k, _ := c.First()
	if from != nil {
		k, _ = c.Seek(from)
	}
	for ; k != nil && binary.BigEndian.Uint64(k[:8]) < cutoff; k, _ = c.Next() {
		if len(drop) >= pruneChunk {
			return drop, append([]byte(nil), k...)
		}
		if keep(k) {
			r.Kept++
			continue
		}
		drop = append(drop, append([]byte(nil), k...))
	}
	return drop, nil
}
