package store

import (
	"bytes"
	"encoding/binary"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
)

// StateHeld is the deliveries log's state for work that waits on its
// destination rather than on its own retry: pending or retrying while the
// destination is paused or its circuit is open. The store does not know
// the dispatcher's health; LogFilter.Held names the held destinations.
const StateHeld = "held"

// LogFilter selects deliveries for the deliveries log. Zero fields match
// everything.
type LogFilter struct {
	// States are delivery states, plus StateHeld (pending or retrying for
	// a destination in Held). A listed pending or retrying state includes
	// the held ones.
	States []string
	// Held names the destinations that are paused or whose circuit is open.
	Held        []string
	Destination string
	Type        string
	Source      string
	// Since and Until bound the event's received time (inclusive).
	Since, Until time.Time
	// Reason is a substring of the delivery's reason or last error.
	Reason string
	// Search matches an event id, transaction id, original transaction id
	// (the subscription id), Google purchase token or app user id exactly.
	Search string
	// Offset and Limit page the log (newest event first, then by
	// destination). Limit defaults to 50, at most 1000.
	Offset, Limit int
}

// LogEntry is one delivery with the event fields the log shows.
type LogEntry struct {
	Delivery
	Type           string    `json:"type"`
	Source         string    `json:"source"`
	ReceivedAt     time.Time `json:"received_at"`
	User           string    `json:"user,omitempty"`
	TransactionID  string    `json:"transaction_id,omitempty"`
	SubscriptionID string    `json:"subscription_id,omitempty"`
}

// LogPage is one page of the deliveries log. Total counts every matching
// delivery; Partial says the backend stopped counting at its scan bound
// (BoltDB: LogScanLimit events), so Total is a lower bound.
type LogPage struct {
	Entries []LogEntry `json:"entries"`
	Total   int        `json:"total"`
	Offset  int        `json:"offset"`
	Limit   int        `json:"limit"`
	Partial bool       `json:"partial,omitempty"`
}

// DeadGroup is the dead deliveries of one destination that died for one
// reason. Sample is the group's first delivery by key, whose last status
// and error stand for the group.
type DeadGroup struct {
	Destination string    `json:"destination"`
	Reason      string    `json:"reason"`
	Count       int       `json:"count"`
	Newest      time.Time `json:"newest"`
	Sample      Delivery  `json:"sample"`
}

// LogScanLimit bounds the events one BoltDB log query reads, so its read
// transaction stays short.
const LogScanLimit = 50000

// Normalize applies the defaults and bounds of a log filter.
func (f *LogFilter) Normalize() {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	if f.Limit > 1000 {
		f.Limit = 1000
	}
	if f.Offset < 0 {
		f.Offset = 0
	}
}

// MatchEvent reports whether an event passes the filter's event fields.
func (f *LogFilter) MatchEvent(e *mapping.Event) bool {
	if f.Type != "" && string(e.Type) != f.Type || f.Source != "" && e.Source != f.Source {
		return false
	}
	if f.Search == "" {
		return true
	}
	s := f.Search
	return e.ID == s || e.TransactionID == s || e.SubscriptionID == s || e.User.AppUserID == s ||
		(e.Attributes != nil && e.Attributes["purchase_token"] == s)
}

// MatchDelivery reports whether a delivery passes the filter's delivery
// fields.
func (f *LogFilter) MatchDelivery(d *Delivery) bool {
	if f.Destination != "" && d.Destination != f.Destination {
		return false
	}
	if f.Reason != "" && !strings.Contains(d.Reason+" "+d.LastError, f.Reason) {
		return false
	}
	if len(f.States) == 0 {
		return true
	}
	for _, s := range f.States {
		if s == d.State {
			return true
		}
		if s == StateHeld && (d.State == StatePending || d.State == StateRetrying) && containsStr(f.Held, d.Destination) {
			return true
		}
	}
	return false
}

// NewLogEntry joins a delivery with its event.
func NewLogEntry(d Delivery, e *mapping.Event) LogEntry {
	return LogEntry{Delivery: d, Type: string(e.Type), Source: e.Source, ReceivedAt: e.ReceivedAt.UTC(),
		User: e.User.AppUserID, TransactionID: e.TransactionID, SubscriptionID: e.SubscriptionID}
}

// DeliveryLog lists deliveries for the log: newest event first, then by
// destination, with the total. The scan reads at most LogScanLimit events
// (then Partial is set).
func (db *DB) DeliveryLog(f LogFilter) (LogPage, error) {
	f.Normalize()
	p := LogPage{Entries: []LogEntry{}, Offset: f.Offset, Limit: f.Limit}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		events, deliveries := tx.Bucket(bEvents), tx.Bucket(bDeliveries)
		c := events.Cursor()
		var k []byte
		if f.Until.IsZero() {
			k, _ = c.Last()
		} else if k, _ = c.Seek(msKey(f.Until.Add(time.Millisecond))); k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		since := uint64(0)
		if !f.Since.IsZero() {
			since = uint64(max(0, f.Since.UnixMilli()))
		}
		dc := deliveries.Cursor()
		for scanned := 0; k != nil; k, _ = c.Prev() {
			if binary.BigEndian.Uint64(k[:8]) < since {
				break
			}
			if scanned++; scanned > LogScanLimit {
				p.Partial = true
				break
			}
			var e mapping.Event
			if ok, err := db.getEvent(events, k, &e); err != nil || !ok || !f.MatchEvent(&e) {
				continue
			}
			prefix := deliveriesOf(k)
			for dk, v := dc.Seek(prefix); dk != nil && bytes.HasPrefix(dk, prefix); dk, v = dc.Next() {
				var d Delivery
				if err := jsonUnmarshal(v, &d); err != nil || !f.MatchDelivery(&d) {
					continue
				}
				if p.Total >= f.Offset && len(p.Entries) < f.Limit {
					p.Entries = append(p.Entries, NewLogEntry(d, &e))
				}
				p.Total++
			}
		}
		return nil
	})
	return p, err
}

// deadChunk bounds the deliveries one read transaction of DeadGroups
// reads: the scan continues in a new transaction, so none stays open long.
var deadChunk = 20000

// DeadGroups counts dead deliveries per destination and reason
// (destination, when set, narrows them), most numerous first. It reads the
// deliveries in chunks of short read transactions.
func (db *DB) DeadGroups(destination string) ([]DeadGroup, error) {
	marker := []byte(`"state":"` + StateDead + `"`)
	groups := map[[2]string]*DeadGroup{}
	var after []byte
	for {
		n := 0
		err := db.bolt.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bDeliveries).Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil; k, v = c.Next() {
				if n++; n > deadChunk {
					return nil
				}
				after = append(after[:0], k...)
				if !bytes.Contains(v, marker) {
					continue
				}
				var d Delivery
				if jsonUnmarshal(v, &d) != nil || d.State != StateDead || destination != "" && d.Destination != destination {
					continue
				}
				addDead(groups, d)
			}
			return nil
		})
		if err != nil || n <= deadChunk {
			return SortDeadGroups(groups), err
		}
	}
}

func addDead(groups map[[2]string]*DeadGroup, d Delivery) {
	k := [2]string{d.Destination, d.Reason}
	g := groups[k]
	if g == nil {
		g = &DeadGroup{Destination: d.Destination, Reason: d.Reason, Sample: d}
		groups[k] = g
	}
	g.Count++
	if d.UpdatedAt.After(g.Newest) {
		g.Newest = d.UpdatedAt.UTC()
	}
	if d.Key < g.Sample.Key {
		g.Sample = d
	}
}

// SortDeadGroups orders groups by count (descending), destination and
// reason.
func SortDeadGroups(groups map[[2]string]*DeadGroup) []DeadGroup {
	out := make([]DeadGroup, 0, len(groups))
	for _, g := range groups {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		return a.Reason < b.Reason
	})
	return out
}

// Replay offers, as ReplayOffer returns them.
const (
	OfferReplay  = "replay"  // dead, or skipped for a reason that may have changed
	OfferConfirm = "confirm" // delivered: a destination without dedupe counts it twice
	OfferNone    = "none"    // queued already, or a replay can only be skipped again
)

// neverAgain are skip reasons a replay cannot change: time only makes an
// event older, and the event's own content does not change.
var neverAgain = []string{"too_old", "out_of_order", "missing revenue", "missing product_id", "missing os", "unknown_platform", "device_opted_out", "revenue_overflow"}

// ReplayOffer says whether a delivery may be replayed: OfferReplay,
// OfferConfirm (only after the operator confirms) or OfferNone with why.
func ReplayOffer(d *Delivery) (offer, why string) {
	switch d.State {
	case StateDead:
		return OfferReplay, ""
	case StateDelivered:
		return OfferConfirm, "already delivered: a destination without deduplication counts it twice"
	case StateSkipped:
		for _, r := range neverAgain {
			if len(d.Reason) >= len(r) && d.Reason[:len(r)] == r {
				return OfferNone, "a replay would be skipped again (" + r + ")"
			}
		}
		return OfferReplay, ""
	}
	return OfferNone, "queued already"
}
