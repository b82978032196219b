package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
)

// IngestResult reports what one notification did.
type IngestResult struct {
	// Duplicate is set when the notification (or one of its alt keys) was
	// already in the inbox; nothing was written. Existing is that item.
	Duplicate bool
	Existing  *mapping.Notification
	// Status is the inbox status (mapped, ignored, enriching, failed).
	Status string
	Reason string
	// Events are the canonical events created by this notification. Events
	// it produced that already existed (a fact reported twice) are counted
	// in Repeats and not delivered again.
	Events  []mapping.Event
	Repeats int
	dests   []string
}

// Ingest stores a verified notification durably, maps it, stores the new
// canonical events and queues their deliveries, all in one transaction. It
// returns only after the commit is on disk, so a caller may acknowledge the
// source. A mapping failure is not an ingest failure: the notification is
// kept with status failed for `postback reprocess`.
func (db *DB) Ingest(ctx context.Context, n *mapping.Notification) (IngestResult, error) {
	if n.Source == "" || n.Key == "" {
		return IngestResult{}, errors.New("store: notification without source or key")
	}
	if n.ReceivedAt.IsZero() {
		n.ReceivedAt = db.opts.Now()
	}
	n = db.seal.WithHashedAltKeys(n)
	// Map outside the writer, against a read snapshot, and let the writer
	// re-check only that the subscription states the mapping read are
	// unchanged; on a conflict (another notification of the subscription
	// committed in between), map again. After a few conflicts in a row the
	// mapping runs inside the writer, which always succeeds.
	for attempt := 0; attempt < 4; attempt++ {
		db.mu.RLock()
		shut := db.isShut
		db.mu.RUnlock()
		if shut {
			return IngestResult{}, ErrClosed
		}
		p, err := db.prepare(n)
		if err != nil {
			return IngestResult{}, err
		}
		if p.dup != nil {
			return *p.dup, nil
		}
		var res IngestResult
		err = db.submitSealed(ctx, func(tx *bolt.Tx) error {
			res = IngestResult{}
			return db.commitPrepared(tx, p, &res)
		}, &res.dests, max(db.keys.Gen(), 1))
		if errors.Is(err, errStale) {
			continue
		}
		return res, err
	}
	var res IngestResult
	err := db.submit(ctx, func(tx *bolt.Tx) error {
		res = IngestResult{}
		return db.ingest(tx, n, &res)
	}, &res.dests)
	return res, err
}

// errStale reports that a state a prepared mapping read has changed since.
var errStale = errors.New("store: a subscription state changed while mapping; mapping again")

// prepared is a notification mapped outside the writer, with every record
// the writer stores already encoded.
type prepared struct {
	ik      []byte
	item    mapping.Notification
	inbox   []byte            // the encoded inbox item
	reads   map[string][]byte // state key -> the bytes mapping read (nil: none)
	events  []preparedEvent
	states  []keyValue
	erasure []byte // an encoded erasure job, or nil
	dup     *IngestResult
}

type preparedEvent struct {
	e          mapping.Event
	doc        []byte
	deliveries []preparedDelivery
}

type preparedDelivery struct {
	d   Delivery
	doc []byte
}

type keyValue struct{ k, v []byte }

// snapStates reads states from a read transaction and records what it read.
type snapStates struct {
	seal  *Sealer
	b     *bolt.Bucket
	reads map[string][]byte
}

func (s *snapStates) State(key string) (mapping.State, bool) {
	v := s.b.Get([]byte(key))
	if _, seen := s.reads[key]; !seen {
		s.reads[key] = append([]byte(nil), v...)
		if v == nil {
			s.reads[key] = nil
		}
	}
	var st mapping.State
	if v == nil || s.seal.DecodeState(v, &st) != nil {
		return mapping.State{}, false
	}
	return st, true
}

// prepare maps n against a read snapshot and encodes what the writer will
// store. A notification already stored comes back as dup.
func (db *DB) prepare(n *mapping.Notification) (*prepared, error) {
	p := &prepared{ik: inboxKey(n.Source, n.Key), item: *n, reads: map[string][]byte{}}
	err := db.view(func(tx *bolt.Tx) error {
		var res IngestResult
		if dup, err := db.duplicate(tx, p.ik, n, &res); dup || err != nil {
			if dup {
				p.dup = &res
			}
			return err
		}
		item := &p.item
		if item.Deferred && item.Enriched == nil {
			item.Status = mapping.StatusEnriching
		} else if err := db.prepareMapped(tx, p); err != nil {
			return err
		}
		var err error
		p.inbox, err = db.seal.EncodeNotification(item, db.seal.KID(p.subject()))
		return err
	})
	return p, err
}

func (db *DB) prepareMapped(tx *bolt.Tx, p *prepared) error {
	n := &p.item
	out, err := db.opts.Map(n, &snapStates{seal: db.seal, b: tx.Bucket(bStates), reads: p.reads})
	if err != nil {
		if MappingFailed(err) {
			n.Status, n.Reason = mapping.StatusFailed, err.Error()
			db.opts.Logger.Warn("mapping failed; kept for reprocess", "source", n.Source, "key", n.Key, "err", err)
			return nil
		}
		return fmt.Errorf("store: mapping %s/%s: %w", n.Source, n.Key, err)
	}
	users := tx.Bucket(bUsers)
	now := db.opts.Now()
	for i := range out.Events {
		e := &out.Events[i]
		if e.ID == "" {
			return fmt.Errorf("store: mapping %s produced an event without id", n.Source)
		}
		if !containsStr(n.EventIDs, e.ID) {
			n.EventIDs = append(n.EventIDs, e.ID)
		}
		if e.ReceivedAt.IsZero() {
			e.ReceivedAt = n.ReceivedAt
		}
		db.mergeUser(users, e)
		pe := preparedEvent{e: *e}
		if pe.doc, err = db.seal.EncodeEvent(e); err != nil {
			return err
		}
		for _, dest := range db.opts.Route(e) {
			d := db.seal.NewDelivery(e, dest, now, db.opts.OrderKey)
			doc, err := json.Marshal(&d)
			if err != nil {
				return err
			}
			pe.deliveries = append(pe.deliveries, preparedDelivery{d, doc})
		}
		p.events = append(p.events, pe)
	}
	if out.Erase != nil {
		job, err := NewErasureJob(out.Erase, now)
		if err != nil {
			return err
		}
		if p.erasure, err = db.seal.EncodeJob(&job, n.Source, n.Key); err != nil {
			return err
		}
	}
	for i := range out.States {
		s := &out.States[i]
		if s.Key == "" {
			continue
		}
		doc, err := db.seal.EncodeState(s)
		if err != nil {
			return err
		}
		p.states = append(p.states, keyValue{[]byte(s.Key), doc})
	}
	n.Status, n.Reason = mapping.StatusMapped, ""
	if len(out.Events) == 0 {
		n.Status, n.Reason = mapping.StatusIgnored, out.Ignored
	}
	return nil
}

// commitPrepared is the writer's part of an ingest: the duplicate check,
// the re-check of the states the mapping read, and the writes.
func (db *DB) commitPrepared(tx *bolt.Tx, p *prepared, res *IngestResult) error {
	n := &p.item
	if db.opts.commitHook != nil {
		if err := db.opts.commitHook(n); err != nil {
			return err
		}
	}
	if dup, err := db.duplicate(tx, p.ik, n, res); dup || err != nil {
		return err
	}
	states := tx.Bucket(bStates)
	for k, v := range p.reads {
		if !bytes.Equal(states.Get([]byte(k)), v) {
			return softError{errStale}
		}
	}
	if err := db.writePrepared(tx, p, res, true); err != nil {
		return err
	}
	res.Status, res.Reason = n.Status, n.Reason
	return db.putInboxDoc(tx, p.ik, n, p.inbox)
}

func inboxKey(source, key string) []byte { return []byte(source + "\x00" + key) }

func (db *DB) ingest(tx *bolt.Tx, n *mapping.Notification, res *IngestResult) error {
	ik := inboxKey(n.Source, n.Key)
	if dup, err := db.duplicate(tx, ik, n, res); dup || err != nil {
		return err
	}
	item := *n
	if item.Deferred && item.Enriched == nil {
		item.Status = mapping.StatusEnriching
		res.Status = item.Status
		return db.putInbox(tx, ik, &item, InboxSubject(item.Source, item.Key))
	}
	p, err := db.mapAndStore(tx, &item, res, true)
	if err != nil {
		return err
	}
	return db.putInbox(tx, ik, &item, p.subject())
}

// duplicate reports whether the notification is already known by its key or
// one of its alt keys.
func (db *DB) duplicate(tx *bolt.Tx, ik []byte, n *mapping.Notification, res *IngestResult) (bool, error) {
	key := ik
	if tx.Bucket(bInboxIDs).Get(ik) == nil {
		key = nil
		alt := tx.Bucket(bAltKeys)
		for _, a := range n.AltKeys {
			if v := alt.Get(inboxKey(n.Source, a)); v != nil {
				key = append([]byte(nil), v...)
				break
			}
		}
	}
	if key == nil {
		return false, nil
	}
	var existing mapping.Notification
	if _, err := db.getNoteByID(tx, key, &existing); err != nil {
		return true, err
	}
	res.Duplicate, res.Existing, res.Status = true, &existing, existing.Status
	return true, nil
}

// putInbox stores an inbox item under the key it already has, else
// subject's.
func (db *DB) putInbox(tx *bolt.Tx, ik []byte, n *mapping.Notification, subject string) error {
	doc, err := db.seal.ReencodeNotification(n, inboxDoc(tx, ik), subject)
	if err != nil {
		return err
	}
	return db.putInboxDoc(tx, ik, n, doc)
}

// putInboxDoc stores an inbox item already encoded as doc, under the key
// it already has, else its receive time.
func (db *DB) putInboxDoc(tx *bolt.Tx, ik []byte, n *mapping.Notification, doc []byte) error {
	k := inboxKeyOf(tx, ik)
	if k == nil {
		k = timeKey(n.ReceivedAt, string(ik))
		if err := tx.Bucket(bInboxIDs).Put(ik, k[:8]); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bInbox).Put(k, doc); err != nil {
		return err
	}
	alt := tx.Bucket(bAltKeys)
	for _, a := range n.AltKeys {
		if err := alt.Put(inboxKey(n.Source, a), ik); err != nil {
			return err
		}
	}
	return nil
}

// mapAndStore maps n and writes its events, deliveries and states. It sets
// n's status fields. Mapping happens before any write, so a mapping error
// leaves the transaction untouched. writeStates is false when reprocessing
// an item that was already mapped (its state effects already happened).
func (db *DB) mapAndStore(tx *bolt.Tx, n *mapping.Notification, res *IngestResult, writeStates bool) (*prepared, error) {
	p := &prepared{ik: inboxKey(n.Source, n.Key), item: *n, reads: map[string][]byte{}}
	if err := db.prepareMapped(tx, p); err != nil {
		return nil, err
	}
	*n = p.item
	res.Status, res.Reason = n.Status, n.Reason
	return p, db.writePrepared(tx, p, res, writeStates)
}

// subject is the subject a prepared notification is first stored under.
func (p *prepared) subject() string {
	var first *mapping.Event
	if len(p.events) > 0 {
		first = &p.events[0].e
	}
	return NotificationSubject(&p.item, first, p.erasure != nil)
}

// writePrepared stores a prepared notification's new events with their
// indexes and deliveries and, with writeStates, its states and queued
// erasure (an item reprocessed after it was mapped does not write state
// again). Events that already exist are counted as repeats.
func (db *DB) writePrepared(tx *bolt.Tx, p *prepared, res *IngestResult, writeStates bool) error {
	events, deliveries := tx.Bucket(bEvents), tx.Bucket(bDeliveries)
	for i := range p.events {
		pe := &p.events[i]
		e := &pe.e
		ids := tx.Bucket(bEventIDs)
		if ids.Get([]byte(e.ID)) != nil {
			res.Repeats++
			continue
		}
		ek := timeKey(e.ReceivedAt, e.ID)
		if err := events.Put(ek, pe.doc); err != nil {
			return err
		}
		if err := ids.Put([]byte(e.ID), msKey(e.ReceivedAt)); err != nil {
			return err
		}
		if e.User.AppUserID != "" {
			if err := tx.Bucket(bUserEvents).Put(userEventKey(db.seal.UserKey(e.User.AppUserID), e.ID), nil); err != nil {
				return err
			}
		}
		for j := range pe.deliveries {
			pd := &pe.deliveries[j]
			if err := deliveries.Put(deliveryKeyIn(ek, pd.d.Destination), pd.doc); err != nil {
				return err
			}
			if err := putDue(tx, &pd.d); err != nil {
				return err
			}
			if err := putOrder(tx, &pd.d); err != nil {
				return err
			}
			res.dests = append(res.dests, pd.d.Destination)
		}
		res.Events = append(res.Events, *e)
	}
	if writeStates && p.erasure != nil {
		if err := tx.Bucket(bErasures).Put(p.ik, p.erasure); err != nil {
			return err
		}
	}
	if !writeStates {
		return nil
	}
	states := tx.Bucket(bStates)
	for _, kv := range p.states {
		if err := states.Put(kv.k, kv.v); err != nil {
			return err
		}
	}
	return nil
}

// MappingFailed reports a mapping error that fails the notification (kept
// with status failed for reprocess) rather than the ingest.
func MappingFailed(err error) bool {
	return errors.Is(err, mapping.ErrMalformed) || errors.Is(err, mapping.ErrUnknownSource) || errors.Is(err, mapping.ErrCurrency) || errors.Is(err, mapping.ErrAmount)
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Enrich stores the enrichment of a deferred notification (Google's Play API
// answer) and maps it, in one transaction. Enriching an item twice is a
// no-op the second time.
func (db *DB) Enrich(ctx context.Context, source, key string, enriched []byte) (IngestResult, error) {
	var res IngestResult
	err := db.submit(ctx, func(tx *bolt.Tx) error {
		res = IngestResult{}
		ik := inboxKey(source, key)
		var n mapping.Notification
		ok, err := db.getNoteByID(tx, ik, &n)
		if err != nil {
			return softError{err}
		}
		if !ok {
			return softError{ErrNotFound}
		}
		if n.Status != mapping.StatusEnriching {
			res.Duplicate, res.Existing, res.Status = true, &n, n.Status
			return nil
		}
		n.Enriched = enriched
		if _, err := db.mapAndStore(tx, &n, &res, true); err != nil {
			return err
		}
		return db.putInbox(tx, ik, &n, InboxSubject(source, key))
	}, &res.dests)
	return res, err
}

// Pending returns up to limit inbox items of source waiting for enrichment,
// oldest first.
func (db *DB) Pending(source string, limit int) ([]mapping.Notification, error) {
	var out []mapping.Notification
	err := db.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bInbox).Cursor()
		prefix := source + "\x00"
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			ik := k[8:]
			if len(ik) < len(prefix) || string(ik[:len(prefix)]) != prefix {
				continue
			}
			var n mapping.Notification
			if db.seal.DecodeNotification(v, &n) != nil {
				continue
			}
			if n.Status == mapping.StatusEnriching {
				out = append(out, n)
			}
		}
		return nil
	})
	return out, err
}

// ReprocessFilter selects inbox items to re-map.
type ReprocessFilter struct {
	Source string
	Since  time.Time
	Until  time.Time
	// Statuses limits to these inbox statuses; empty means failed and ignored.
	Statuses []string
	DryRun   bool
}

// ReprocessResult counts what a reprocess did.
type ReprocessResult struct {
	Scanned   int `json:"scanned"`
	Matched   int `json:"matched"`
	NewEvents int `json:"new_events"`
	Repeats   int `json:"existing_events"`
	Failed    int `json:"failed"`
}

// Reprocess re-maps stored inbox items (after a mapping fix). Event ids are
// deterministic, so events emitted before are recognised and not duplicated;
// only what the fixed mapping adds is stored and delivered. Items that were
// mapped before do not write state again.
func (db *DB) Reprocess(ctx context.Context, f ReprocessFilter) (ReprocessResult, error) {
	var r ReprocessResult
	statuses := f.Statuses
	if len(statuses) == 0 {
		statuses = []string{mapping.StatusFailed, mapping.StatusIgnored}
	}
	var keys [][]byte
	err := db.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bInbox).Cursor()
		// A zero Since means from the start: msKey of the zero time is a
		// huge unsigned key that would seek past everything.
		k, v := c.First()
		if !f.Since.IsZero() {
			k, v = c.Seek(msKey(f.Since))
		}
		for ; k != nil; k, v = c.Next() {
			if !f.Until.IsZero() && string(k[:8]) > string(msKey(f.Until)) {
				break
			}
			r.Scanned++
			ik := append([]byte(nil), k[8:]...)
			var n mapping.Notification
			if db.seal.DecodeNotification(v, &n) != nil {
				continue
			}
			if f.Source != "" && n.Source != f.Source {
				continue
			}
			if !containsStr(statuses, n.Status) {
				continue
			}
			r.Matched++
			keys = append(keys, ik)
		}
		return nil
	})
	if err != nil || f.DryRun {
		return r, err
	}
	for _, ik := range keys {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		var res IngestResult
		err := db.submit(ctx, func(tx *bolt.Tx) error {
			res = IngestResult{}
			var n mapping.Notification
			if ok, err := db.getNoteByID(tx, ik, &n); err != nil || !ok {
				return softError{ErrNotFound}
			}
			writeStates := n.Status == mapping.StatusFailed
			p, err := db.mapAndStore(tx, &n, &res, writeStates)
			if err != nil {
				return err
			}
			return db.putInbox(tx, ik, &n, p.subject())
		}, &res.dests)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return r, err
		}
		r.NewEvents += len(res.Events)
		r.Repeats += res.Repeats
		if res.Status == mapping.StatusFailed {
			r.Failed++
		}
	}
	return r, nil
}

// Notification returns an inbox item.
func (db *DB) Notification(source, key string) (*mapping.Notification, error) {
	var n mapping.Notification
	err := db.view(func(tx *bolt.Tx) error {
		ok, err := db.getNoteByID(tx, inboxKey(source, key), &n)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &n, nil
}
