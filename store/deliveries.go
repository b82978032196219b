package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/vault"
)

// Delivery states.
const (
	StatePending   = "pending"   // queued, never attempted (or replayed)
	StateRetrying  = "retrying"  // attempted, will be retried at NextAt
	StateWaiting   = "waiting"   // waiting for an identifier (identity_wait)
	StateDelivered = "delivered" // accepted by the destination
	StateDead      = "dead"      // failed permanently; can be replayed
	StateSkipped   = "skipped"   // deliberately not sent; Reason says why
)

// Final reports whether a delivery state needs no more work.
func Final(state string) bool {
	return state == StateDelivered || state == StateDead || state == StateSkipped
}

// Delivery is one (event, destination) pair and its progress.
type Delivery struct {
	Key         string    `json:"key"`
	EventID     string    `json:"event_id"`
	Destination string    `json:"destination"`
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	RetryBase   int       `json:"retry_base,omitempty"` // Attempts at the last replay
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	NextAtMs    int64     `json:"next_at_ms,omitempty"` // due time while not final
	LastStatus  int       `json:"last_status,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	WaitUntil   time.Time `json:"wait_until,omitzero"`
	// UserKey is the keyed hash of the event's app user id (Sealer.UserKey),
	// for the deliveries waiting for that user's identifiers.
	UserKey     string    `json:"user_key,omitempty"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	ReplayedAt  time.Time `json:"replayed_at,omitzero"`
	// OrderKey is the hashed ordering key (Options.OrderKey) and OrderAtMs
	// the event time it orders by; empty for unordered destinations.
	OrderKey  string `json:"order_key,omitempty"`
	OrderAtMs int64  `json:"order_at_ms,omitempty"`
	// claim is set by DueFor (Complete's fast path); never stored.
	claim *claimMark
}

// NewDelivery is a new delivery of e to dest, due now. A forwarder's
// ordering key (raw device ids) is stored as a keyed hash: no raw
// identifier is ever a database key.
func (s *Sealer) NewDelivery(e *mapping.Event, dest string, now time.Time, orderKey func(dest string, e *mapping.Event) string) Delivery {
	d := Delivery{
		Key: deliveryKey(e.ID, dest), EventID: e.ID, Destination: dest, State: StatePending,
		CreatedAt: now, UpdatedAt: now, NextAtMs: now.UnixMilli(), UserKey: s.UserKey(e.User.AppUserID),
	}
	if orderKey != nil {
		if k := orderKey(dest, e); k != "" {
			d.OrderKey, d.OrderAtMs = s.OrderKey(k), e.OccurredAt.UnixMilli()
		}
	}
	return d
}

// RetryStart is when the delivery's retry horizon (retry.max_age) began:
// its last replay, else its creation.
func (d *Delivery) RetryStart() time.Time {
	if d.ReplayedAt.After(d.CreatedAt) {
		return d.ReplayedAt
	}
	return d.CreatedAt
}

// NextAt returns the due time.
func (d *Delivery) NextAt() time.Time { return time.UnixMilli(d.NextAtMs) }

// AttemptsSinceReplay is the attempt count that retry limits apply to.
func (d *Delivery) AttemptsSinceReplay() int { return d.Attempts - d.RetryBase }

// Attempt is one logged delivery attempt.
type Attempt struct {
	N        int           `json:"n"`
	At       time.Time     `json:"at"`
	Outcome  string        `json:"outcome"`
	Status   int           `json:"status,omitempty"`
	Latency  time.Duration `json:"latency_ns"`
	Request  string        `json:"request,omitempty"`
	Response string        `json:"response,omitempty"` // first KiB
	Error    string        `json:"error,omitempty"`
	// Replay marks an attempt made after an operator replayed the delivery.
	Replay bool `json:"replay,omitempty"`
}

func deliveryKey(eventID, dest string) string { return eventID + "|" + dest }

// SplitDeliveryKey returns the event id and destination of a delivery key.
func SplitDeliveryKey(k string) (eventID, dest string) {
	eventID, dest, _ = strings.Cut(k, "|")
	return eventID, dest
}

func dueKey(ms int64, key string) []byte {
	k := make([]byte, 8, 8+len(key))
	binary.BigEndian.PutUint64(k, uint64(ms))
	return append(k, key...)
}

func putDue(tx *bolt.Tx, d *Delivery) error {
	b, err := tx.Bucket(bDue).CreateBucketIfNotExists([]byte(d.Destination))
	if err != nil {
		return err
	}
	return b.Put(dueKey(d.NextAtMs, d.Key), nil)
}

func delDue(tx *bolt.Tx, d *Delivery) error {
	b := tx.Bucket(bDue).Bucket([]byte(d.Destination))
	if b == nil {
		return nil
	}
	return b.Delete(dueKey(d.NextAtMs, d.Key))
}

// orderKey is the bOrder key of an ordered delivery: within one destination
// and ordering key, entries sort by event time, so the first is the head.
func orderKey(d *Delivery) []byte {
	k := make([]byte, 0, len(d.Destination)+len(d.OrderKey)+10+len(d.Key))
	k = append(append(append(append(k, d.Destination...), 0), d.OrderKey...), 0)
	k = binary.BigEndian.AppendUint64(k, uint64(d.OrderAtMs))
	return append(k, d.Key...)
}

func putOrder(tx *bolt.Tx, d *Delivery) error {
	if d.OrderKey == "" {
		return nil
	}
	return tx.Bucket(bOrder).Put(orderKey(d), nil)
}

func delOrder(tx *bolt.Tx, d *Delivery) error {
	if d.OrderKey == "" {
		return nil
	}
	return tx.Bucket(bOrder).Delete(orderKey(d))
}

// orderHead reports whether d may be claimed under its ordering key: it is
// the earliest unfinished delivery of its destination and key, and no other
// delivery of that key is in flight (inFlight: the caller's leases). A
// replayed earlier delivery becomes the head while a later one may still be
// in flight; it waits for that one.
func orderHead(tx *bolt.Tx, d *Delivery, inFlight func(key string) bool) bool {
	if d.OrderKey == "" {
		return true
	}
	prefix := append(append(append(append([]byte(nil), d.Destination...), 0), d.OrderKey...), 0)
	c := tx.Bucket(bOrder).Cursor()
	k, _ := c.Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) || string(k[len(prefix)+8:]) != d.Key {
		return false
	}
	if inFlight != nil {
		for k, _ = c.Next(); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if inFlight(string(k[len(prefix)+8:])) {
				return false
			}
		}
	}
	return true
}

// Due is a delivery ready to be attempted, with its event. The event's user
// identifiers are refreshed from the identity store at read time, so a PUT
// after ingest is reflected in the next attempt.
type Due struct {
	Delivery Delivery
	Event    mapping.Event
}

// DueFor returns up to limit deliveries of dest due at or before now, oldest
// first, skipping keys for which skip returns true (in-flight leases).
func (db *DB) DueFor(dest string, now time.Time, limit int, skip func(key string) bool) ([]Due, error) {
	var out []Due
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bDue).Bucket([]byte(dest))
		if b == nil {
			return nil
		}
		deliveries, users, events := tx.Bucket(bDeliveries), tx.Bucket(bUsers), tx.Bucket(bEvents)
		end := uint64(now.UnixMilli())
		c := b.Cursor()
		for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
			if binary.BigEndian.Uint64(k[:8]) > end {
				break
			}
			key := string(k[8:])
			if skip != nil && skip(key) {
				continue
			}
			var d Due
			dk, ek := storedDelivery(tx, key)
			if dk == nil {
				continue
			}
			stored := deliveries.Get(dk)
			if stored == nil || jsonUnmarshal(stored, &d.Delivery) != nil {
				continue
			}
			if !orderHead(tx, &d.Delivery, skip) {
				continue // another delivery of its ordering key comes first
			}
			ev := events.Get(ek)
			if ok, err := decodeStored(ev, &d.Event, db.seal.DecodeEvent); err != nil || !ok {
				continue
			}
			d.Delivery.NoteClaim(stored, ev)
			db.mergeUser(users, &d.Event)
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// NextDue returns the earliest due time of dest, or zero when nothing is queued.
func (db *DB) NextDue(dest string) time.Time {
	var t time.Time
	_ = db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bDue).Bucket([]byte(dest))
		if b == nil {
			return nil
		}
		if k, _ := b.Cursor().First(); k != nil {
			t = time.UnixMilli(int64(binary.BigEndian.Uint64(k[:8])))
		}
		return nil
	})
	return t
}

// Completion records the outcome of one attempt (or of a decision not to
// attempt: waiting or skipped).
type Completion struct {
	Key     string
	State   string    // new state
	NextAt  time.Time // for retrying / waiting
	Reason  string
	Attempt *Attempt // nil when nothing was sent
	// WaitUntil is set when the delivery starts waiting for an identifier.
	WaitUntil time.Time
	// KeepBudget logs the attempt without spending the retry budget (the
	// destination, not the event, was at fault: paused credentials).
	KeepBudget bool
	// Claimed is the delivery as the caller claimed it, when it has it. A
	// shared store then records the outcome without reading the delivery
	// again, provided the caller's lease still holds it.
	Claimed *Delivery
}

// Complete applies attempt outcomes in one group-committed transaction: the
// attempt is logged, the delivery updated and its due key moved or removed.
//
// An outcome whose Claimed delivery came from DueFor is worked out before
// the transaction, in the caller's goroutine: the new delivery and the
// attempt are encoded (and the attempt sealed) there, and the single
// writer only checks that the delivery is still stored as it was claimed
// (the same bytes) and writes. A delivery changed since (a replay, an
// identifier that arrived, an erasure) is read and updated in the
// transaction instead, as every outcome was before.
func (db *DB) Complete(ctx context.Context, cs []Completion) error {
	now := db.opts.Now()
	pre := make([]preparedOutcome, len(cs))
	for i := range cs {
		if err := db.prepareOutcome(&pre[i], cs[i], now); err != nil {
			return err
		}
	}
	var wake []string
	return db.submit(ctx, func(tx *bolt.Tx) error {
		wake = wake[:0]
		now := db.opts.Now()
		deliveries := tx.Bucket(bDeliveries)
		events := tx.Bucket(bEvents)
		for i, c := range cs {
			dk, ek := storedDelivery(tx, c.Key)
			var stored []byte
			if dk != nil {
				stored = deliveries.Get(dk)
			}
			if p := &pre[i]; p.doc != nil && stored != nil && bytes.Equal(stored, p.from) && p.sameKey(events.Get(ek)) {
				if err := db.recordOutcome(tx, dk, &p.old, &p.d, p.attempt, p.doc); err != nil {
					return err
				}
				db.preparedOutcomes.Add(1)
				continue
			}
			var d Delivery
			if stored != nil {
				if err := jsonUnmarshal(stored, &d); err != nil {
					return err
				}
			}
			if c.Skip(&d, stored != nil) {
				continue
			}
			old := d
			d.Apply(c, now)
			var attempt []byte
			if c.Attempt != nil {
				var err error
				if attempt, err = db.seal.EncodeClaimedAttempt(c.Attempt, c.Claimed, events.Get(ek)); err != nil {
					return err
				}
			}
			doc, err := json.Marshal(&d)
			if err != nil {
				return err
			}
			if err := db.recordOutcome(tx, dk, &old, &d, attempt, doc); err != nil {
				return err
			}
		}
		return nil
	}, &wake)
}

// preparedOutcome is an outcome worked out before Complete's transaction
// from the delivery as it was claimed (from, as stored then; old, as read).
type preparedOutcome struct {
	from    []byte
	mark    *claimMark
	old, d  Delivery
	attempt []byte // the sealed attempt, nil when nothing was sent
	doc     []byte // the new delivery; nil when not prepared
}

// sameKey reports whether the event (as stored now) is still sealed with
// the key the attempt was sealed with: an erasure since the claim rewrote
// it, and its attempt is sealed in the transaction instead.
func (p *preparedOutcome) sameKey(event []byte) bool {
	kid, sealed := KIDOf(event)
	return event != nil && kid == p.mark.kid && sealed == p.mark.sealed
}

// claimMark is what a claim read with a delivery: its stored bytes and the
// data key its event is sealed with, which its attempts are sealed with.
type claimMark struct {
	stored []byte
	kid    vault.KID
	sealed bool
}

// NoteClaim marks a claimed delivery with what the claim read: the
// delivery as stored (nil when the store fences outcomes otherwise) and
// its event as stored (eventDoc). Its attempts are then sealed with the
// key the event was sealed with when the request was built, even if an
// erasure has rewritten the event since (EncodeClaimedAttempt).
func (d *Delivery) NoteClaim(stored, eventDoc []byte) {
	m := &claimMark{stored: bytes.Clone(stored)}
	m.kid, m.sealed = KIDOf(eventDoc)
	d.claim = m
}

// ClaimNoted reports whether d carries NoteClaim's mark.
func (d *Delivery) ClaimNoted() bool { return d != nil && d.claim != nil }

// prepareOutcome works c out from its claimed delivery, when DueFor marked
// it; otherwise p stays empty and the transaction does the work.
func (db *DB) prepareOutcome(p *preparedOutcome, c Completion, now time.Time) error {
	if c.Claimed == nil || c.Claimed.claim == nil || c.Claimed.Key != c.Key {
		return nil
	}
	m := c.Claimed.claim
	p.old = *c.Claimed
	p.old.claim = nil
	if c.Skip(&p.old, true) {
		return nil
	}
	p.d = p.old
	p.d.Apply(c, now)
	var err error
	if c.Attempt != nil {
		if p.attempt, err = db.seal.encodeAttempt(c.Attempt, m.kid, m.sealed); err != nil {
			return err
		}
	}
	if p.doc, err = json.Marshal(&p.d); err != nil {
		return err
	}
	p.from, p.mark = m.stored, m
	return nil
}

// recordOutcome writes a delivery moved from old to d: its due, waiting
// and ordering index entries, its attempt and the delivery itself (doc).
func (db *DB) recordOutcome(tx *bolt.Tx, dk []byte, old, d *Delivery, attempt, doc []byte) error {
	if err := delDue(tx, old); err != nil {
		return err
	}
	if old.State == StateWaiting && old.UserKey != "" {
		if err := tx.Bucket(bWaiting).Delete(waitKey(old.UserKey, old.Key)); err != nil {
			return err
		}
	}
	if attempt != nil {
		if err := tx.Bucket(bAttempts).Put(attemptKey(dk, d.Attempts), attempt); err != nil {
			return err
		}
	}
	if Final(d.State) {
		if err := delOrder(tx, d); err != nil {
			return err
		}
	} else {
		if err := putDue(tx, d); err != nil {
			return err
		}
		if d.State == StateWaiting && d.UserKey != "" {
			if err := tx.Bucket(bWaiting).Put(waitKey(d.UserKey, d.Key), nil); err != nil {
				return err
			}
		}
	}
	return tx.Bucket(bDeliveries).Put(dk, doc)
}

// Apply moves d to the outcome c at now: the attempt (numbered here) is
// counted, the state, reason and due time set. Both backends record
// outcomes with it.
func (d *Delivery) Apply(c Completion, now time.Time) {
	if c.Attempt != nil {
		d.Attempts++
		if c.KeepBudget {
			d.RetryBase++
		}
		c.Attempt.N = d.Attempts
		d.LastStatus = c.Attempt.Status
		d.LastError = c.Attempt.Error
	}
	d.State, d.Reason, d.UpdatedAt = c.State, c.Reason, now
	if c.State == StateDelivered {
		d.DeliveredAt = now
	}
	if !c.WaitUntil.IsZero() {
		d.WaitUntil = c.WaitUntil
	}
	if Final(d.State) {
		d.NextAtMs = 0
		return
	}
	next := c.NextAt
	if next.IsZero() {
		next = now // never park a live delivery at the epoch
	}
	d.NextAtMs = next.UnixMilli()
}

// Skip reports whether a completion changes nothing: the delivery is gone,
// or already final and nothing was sent.
func (c *Completion) Skip(d *Delivery, found bool) bool {
	return !found || Final(d.State) && c.Attempt == nil
}

// Requeue moves a final delivery back to pending at now (a replay): its
// retry budget starts afresh.
func (d *Delivery) Requeue(now time.Time) {
	d.State, d.Reason, d.UpdatedAt, d.NextAtMs = StatePending, "replayed", now, now.UnixMilli()
	d.ReplayedAt = now
	d.RetryBase = d.Attempts
	d.WaitUntil = time.Time{}
}

// attemptKey is the stored key of attempt n of the delivery stored under dk.
func attemptKey(dk []byte, n int) []byte {
	k := append(append(make([]byte, 0, len(dk)+5), dk...), 0)
	return binary.BigEndian.AppendUint32(k, uint32(n))
}

func waitKey(user, key string) []byte { return []byte(user + "\x00" + key) }

// Replay queues a delivery again now, whatever its state; its retry budget
// starts afresh. Replaying a delivery that is already queued is a no-op.
func (db *DB) Replay(ctx context.Context, key string) (Delivery, error) {
	var d Delivery
	var wake []string
	err := db.submit(ctx, func(tx *bolt.Tx) error {
		wake = wake[:0]
		deliveries := tx.Bucket(bDeliveries)
		dk, _ := storedDelivery(tx, key)
		ok, err := getJSON(deliveries, dk, &d)
		if err != nil {
			return softError{err}
		}
		if !ok {
			return softError{fmt.Errorf("%w: delivery %s", ErrNotFound, key)}
		}
		if !Final(d.State) {
			return nil
		}
		d.Requeue(db.opts.Now())
		if err := putDue(tx, &d); err != nil {
			return err
		}
		if err := putOrder(tx, &d); err != nil {
			return err
		}
		wake = append(wake, d.Destination)
		return putJSON(deliveries, dk, &d)
	}, &wake)
	return d, err
}

// QueueStats summarises a destination's backlog.
type QueueStats struct {
	Depth        int       `json:"depth"`
	Oldest       time.Time `json:"oldest_due,omitzero"`
	Waiting      int       `json:"waiting"`
	OldestCreate time.Time `json:"oldest_created,omitzero"`
}

// Queue returns the number of queued deliveries of dest and the oldest due.
func (db *DB) Queue(dest string) (QueueStats, error) {
	var q QueueStats
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bDue).Bucket([]byte(dest))
		if b == nil {
			return nil
		}
		deliveries := tx.Bucket(bDeliveries)
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if q.Depth == 0 {
				q.Oldest = time.UnixMilli(int64(binary.BigEndian.Uint64(k[:8])))
			}
			q.Depth++
			if q.Depth <= 1000 {
				var d Delivery
				dk, _ := storedDelivery(tx, string(k[8:]))
				if ok, _ := getJSON(deliveries, dk, &d); dk != nil && ok {
					if q.OldestCreate.IsZero() || d.CreatedAt.Before(q.OldestCreate) {
						q.OldestCreate = d.CreatedAt
					}
					if d.State == StateWaiting {
						q.Waiting++
					}
				}
			}
		}
		return nil
	})
	return q, err
}

// Destinations returns the destination names that have a due queue.
func (db *DB) Destinations() []string {
	var out []string
	_ = db.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bDue).ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out
}

// Delivery returns one delivery.
func (db *DB) Delivery(key string) (Delivery, error) {
	var d Delivery
	err := db.view(func(tx *bolt.Tx) error {
		dk, _ := storedDelivery(tx, key)
		ok, err := getJSON(tx.Bucket(bDeliveries), dk, &d)
		if err == nil && !ok {
			err = fmt.Errorf("%w: delivery %s", ErrNotFound, key)
		}
		return err
	})
	return d, err
}

// Attempts returns the attempt log of a delivery, oldest first.
func (db *DB) Attempts(key string) ([]Attempt, error) {
	var out []Attempt
	err := db.view(func(tx *bolt.Tx) error {
		dk, _ := storedDelivery(tx, key)
		if dk == nil {
			return nil
		}
		c := tx.Bucket(bAttempts).Cursor()
		prefix := append(dk, 0)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var a Attempt
			if err := db.seal.DecodeAttempt(v, &a); err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// EventDeliveries returns the deliveries of one event.
func (db *DB) EventDeliveries(eventID string) ([]Delivery, error) {
	var out []Delivery
	err := db.view(func(tx *bolt.Tx) error {
		ek := eventKey(tx, eventID)
		if ek == nil {
			return nil
		}
		c := tx.Bucket(bDeliveries).Cursor()
		prefix := deliveriesOf(ek)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var d Delivery
			if err := jsonUnmarshal(v, &d); err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}
