package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
)

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	Source         string
	Type           string
	AppID          string
	Environment    string
	AppUserID      string
	SubscriptionID string
	Since, Until   time.Time
	// Cursor continues a previous listing (opaque; from EventPage.Next).
	Cursor string
	Limit  int
}

// EventPage is one page of events, newest first.
type EventPage struct {
	Events []mapping.Event `json:"events"`
	Next   string          `json:"next,omitempty"`
}

func (f *EventFilter) match(e *mapping.Event) bool {
	return (f.Source == "" || e.Source == f.Source) &&
		(f.Type == "" || string(e.Type) == f.Type) &&
		(f.AppID == "" || e.AppID == f.AppID) &&
		(f.Environment == "" || e.Environment == f.Environment) &&
		(f.AppUserID == "" || e.User.AppUserID == f.AppUserID) &&
		(f.SubscriptionID == "" || e.SubscriptionID == f.SubscriptionID)
}

// maxScan bounds the keys one listing reads, so a selective filter over a
// large store cannot hold a read transaction for long (bbolt pitfall: long
// readers stall remaps). The cursor lets the caller continue.
const maxScan = 20000

// Events lists events newest first.
func (db *DB) Events(f EventFilter) (EventPage, error) {
	if f.Limit <= 0 || f.Limit > 500 {
		f.Limit = 50
	}
	var p EventPage
	err := db.view(func(tx *bolt.Tx) error {
		events := tx.Bucket(bEvents)
		c := events.Cursor()
		var k []byte
		switch {
		case f.Cursor != "":
			ck, err := hex.DecodeString(f.Cursor)
			if err != nil {
				return nil
			}
			k, _ = c.Seek(ck)
			if k != nil && bytes.Equal(k, ck) {
				k, _ = c.Prev()
			} else if k == nil {
				k, _ = c.Last()
			} else {
				k, _ = c.Prev()
			}
		case !f.Until.IsZero():
			k, _ = c.Seek(msKey(f.Until.Add(time.Millisecond)))
			if k == nil {
				k, _ = c.Last()
			} else {
				k, _ = c.Prev()
			}
		default:
			k, _ = c.Last()
		}
		since := uint64(0)
		if !f.Since.IsZero() {
			since = uint64(f.Since.UnixMilli())
		}
		scanned := 0
		for ; k != nil; k, _ = c.Prev() {
			if binary.BigEndian.Uint64(k[:8]) < since {
				return nil
			}
			scanned++
			var e mapping.Event
			if ok, err := db.getEvent(events, k, &e); err != nil || !ok {
				continue
			}
			if f.match(&e) {
				p.Events = append(p.Events, e)
			}
			if len(p.Events) >= f.Limit || scanned >= maxScan {
				if pk, _ := c.Prev(); pk != nil && binary.BigEndian.Uint64(pk[:8]) >= since {
					p.Next = hex.EncodeToString(k)
				}
				return nil
			}
		}
		return nil
	})
	return p, err
}

// Event returns one event.
func (db *DB) Event(id string) (mapping.Event, error) {
	var e mapping.Event
	err := db.view(func(tx *bolt.Tx) error {
		ok, err := db.getEventByID(tx, id, &e)
		if err == nil && !ok {
			err = ErrNotFound
		}
		if err == nil {
			db.mergeUser(tx.Bucket(bUsers), &e)
		}
		return err
	})
	return e, err
}

// NotificationOf returns the inbox item that produced an event (the first
// one, when several reported the same fact).
func (db *DB) NotificationOf(e *mapping.Event) (*mapping.Notification, error) {
	return db.Notification(e.Source, e.SourceEventID)
}

// DeliveryFilter selects deliveries.
type DeliveryFilter struct {
	Destination  string
	States       []string
	Reason       string // substring of the reason
	Since, Until time.Time
	Limit        int
}

func (f *DeliveryFilter) match(d *Delivery) bool {
	if f.Destination != "" && d.Destination != f.Destination {
		return false
	}
	if len(f.States) > 0 && !containsStr(f.States, d.State) {
		return false
	}
	if f.Reason != "" && !bytes.Contains([]byte(d.Reason+" "+d.LastError), []byte(f.Reason)) {
		return false
	}
	if !f.Since.IsZero() && d.CreatedAt.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && d.CreatedAt.After(f.Until) {
		return false
	}
	return true
}

// Deliveries lists deliveries matching f (unordered by time; newest events
// first via the event index).
func (db *DB) Deliveries(f DeliveryFilter) ([]Delivery, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var out []Delivery
	err := db.view(func(tx *bolt.Tx) error {
		deliveries := tx.Bucket(bDeliveries)
		c := tx.Bucket(bEvents).Cursor()
		for k, _ := c.Last(); k != nil && len(out) < f.Limit; k, _ = c.Prev() {
			if !f.Since.IsZero() && int64(binary.BigEndian.Uint64(k[:8])) < f.Since.UnixMilli() {
				break
			}
			prefix := deliveriesOf(k)
			dc := deliveries.Cursor()
			for dk, v := dc.Seek(prefix); dk != nil && bytes.HasPrefix(dk, prefix); dk, v = dc.Next() {
				var d Delivery
				if err := jsonUnmarshal(v, &d); err != nil {
					continue
				}
				if f.match(&d) {
					out = append(out, d)
					if len(out) >= f.Limit {
						return nil
					}
				}
			}
		}
		return nil
	})
	return out, err
}

// ReplayMatching replays every delivery matching f, at most perSecond per
// second so replays never starve live traffic, calling progress after each.
// With dryRun it only counts.
func (db *DB) ReplayMatching(ctx context.Context, f DeliveryFilter, perSecond float64, dryRun bool, progress func(done, total int)) (int, error) {
	return ReplayMatching(ctx, db, f, perSecond, dryRun, progress)
}

// ReplayMatching is Operator.ReplayMatching for any backend: it lists the
// final deliveries matching f and replays them one by one.
func ReplayMatching(ctx context.Context, s interface {
	Deliveries(f DeliveryFilter) ([]Delivery, error)
	Replay(ctx context.Context, key string) (Delivery, error)
}, f DeliveryFilter, perSecond float64, dryRun bool, progress func(done, total int)) (int, error) {
	f.Limit = 1 << 30
	ds, err := s.Deliveries(f)
	if err != nil {
		return 0, err
	}
	var keys []string
	for _, d := range ds {
		if Final(d.State) {
			keys = append(keys, d.Key)
		}
	}
	if dryRun {
		return len(keys), nil
	}
	var tick *time.Ticker
	if perSecond > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / perSecond))
		defer tick.Stop()
	}
	for i, k := range keys {
		if tick != nil && i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return i, ctx.Err()
			}
		}
		if _, err := s.Replay(ctx, k); err != nil {
			return i, err
		}
		if progress != nil {
			progress(i+1, len(keys))
		}
	}
	return len(keys), nil
}
