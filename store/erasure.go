package store

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/vault"
	bolt "go.etcd.io/bbolt"
)

// Privacy erasures that a notification carries (mapping.Result.Erase, e.g.
// Shopify's customers/redact) are queued in bErasures in the notification's
// own transaction, so an acknowledged request is never lost, and carried out
// by EraseStep a chunk per commit, so a search through every event never
// holds the writer for long.

// erasureChunk bounds the records one EraseStep examines.
var erasureChunk = 2000 // a variable so tests can make chunks of one

const (
	erasePhaseNamed  = "named"  // the events and states named outright
	erasePhaseEvents = "events" // a scan of the events bucket
	erasePhaseStates = "states" // a scan of the states under StatePrefix
)

// ErasureJob is one queued erasure and its progress, the same record in
// both backends (bErasures: inbox key -> ErasureJob).
type ErasureJob = erasureJob

// Erasure phases, in order.
const (
	ErasePhaseNamed  = erasePhaseNamed
	ErasePhaseEvents = erasePhaseEvents
	ErasePhaseStates = erasePhaseStates
)

// ErasureChunk bounds the records one erasure step examines.
func ErasureChunk() int { return erasureChunk }

type erasureJob struct {
	mapping.Erasure
	Phase  string `json:"phase"`
	Cursor []byte `json:"cursor,omitempty"` // last key examined in the phase's bucket
	Events int    `json:"events"`           // events erased so far
	// Kids are the data keys of what the job erased so far, destroyed when
	// it finishes (so matching across phases still reads the records a
	// shared key seals).
	Kids     []vault.KID `json:"kids,omitempty"`
	States   int         `json:"states"` // states erased so far
	QueuedAt time.Time   `json:"queued_at"`
}

// ErasureDone reports a finished erasure.
type ErasureDone struct {
	Source, Key    string // the notification that asked for it
	Events, States int    // records erased
	QueuedAt       time.Time
}

// NewErasureJob validates a mapping's erasure request and starts its job.
func NewErasureJob(e *mapping.Erasure, now time.Time) (ErasureJob, error) {
	if e.IDKey == "" && (e.EventAttr == "" || e.EventAttrValue == "" || e.StatePrefix == "") {
		// Without an identifier the scope must be explicit, or it would be
		// everything.
		return ErasureJob{}, fmt.Errorf("store: erasure without an identifier needs an event attribute and a state prefix: %+v", *e)
	}
	return ErasureJob{Erasure: *e, Phase: erasePhaseNamed, QueuedAt: now}, nil
}

// MatchEvent reports whether the job erases a (decoded) event.
func (job *erasureJob) MatchEvent(e *mapping.Event) bool {
	if job.IDKey == "" && job.EventAttr == "" {
		return false
	}
	return (job.IDKey == "" || e.User.Identifiers[job.IDKey] == job.IDValue) &&
		(job.EventAttr == "" || e.Attributes[job.EventAttr] == job.EventAttrValue)
}

// MatchState reports whether the job erases a (decoded) state.
func (job *erasureJob) MatchState(s *mapping.State) bool {
	return job.IDKey == "" || s.Identifiers[job.IDKey] == job.IDValue ||
		(job.StateValueKey != "" && s.Values[job.StateValueKey] == job.IDValue)
}

// ForgetEvent clears what ties an event to a person: its user (app user
// id and identifiers) and its attributes. Type, revenue and times stay.
func ForgetEvent(e *mapping.Event) {
	e.User, e.Attributes = mapping.User{}, nil
}

// ForgetState clears what ties a state to a person.
func ForgetState(s *mapping.State, valueKey string) {
	s.Identifiers, s.AppUserID = nil, ""
	if valueKey != "" {
		delete(s.Values, valueKey)
	}
}

// EraseBody erases a stored notification's body, enrichment and metadata,
// keeping the entry (its dedupe key and event ids) so a retry of it is
// still recognised. It reports whether anything changed.
func EraseBody(nt *mapping.Notification, reason string) bool {
	if nt.Body == nil && nt.Enriched == nil && nt.Meta == nil {
		return false
	}
	nt.Body, nt.Enriched, nt.Meta = nil, nil, nil
	nt.Reason = reason
	return true
}

// ErasedReason is the inbox reason of a body erased for a privacy deletion.
const ErasedReason = "body erased for a privacy deletion"

// PendingErasures counts queued erasures.
func (db *DB) PendingErasures() (int, error) {
	n := 0
	err := db.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bErasures).Stats().KeyN
		return nil
	})
	return n, err
}

// EraseStep carries the oldest queued erasure one chunk further. It reports
// whether work remains and, when an erasure finished, what it erased.
// Each chunk destroys the data keys of what it found before its commit, so
// every copy of those records (freed pages, backups) becomes unreadable,
// and rewrites the live records without their personal fields.
func (db *DB) EraseStep(ctx context.Context) (more bool, done *ErasureDone, err error) {
	err = db.submit(ctx, func(tx *bolt.Tx) error {
		more, done = false, nil
		jobs := tx.Bucket(bErasures)
		k, v := jobs.Cursor().First()
		if k == nil {
			return nil
		}
		ik := append([]byte(nil), k...)
		job, err := db.seal.DecodeJob(v)
		if err != nil {
			// Unreadable: dropped (and reported once) rather than retried
			// forever ahead of every later erasure.
			db.opts.Logger.Error("privacy erasure unreadable; dropped", "key", string(bytes.ReplaceAll(ik, []byte{0}, []byte("/"))), "err", err)
			if err := jobs.Delete(ik); err != nil {
				return err
			}
			more = hasJobs(jobs)
			return nil
		}
		src, key, _ := bytes.Cut(ik, []byte{0})
		kids := map[vault.KID]bool{}
		for _, k := range job.Kids {
			kids[k] = true
		}
		finished, err := db.eraseChunk(tx, &job, kids)
		if err != nil {
			return err
		}
		job.Kids = KIDs(kids).List()
		if !finished {
			more = true
			nv, err := db.seal.EncodeJob(&job, string(src), string(key))
			if err != nil {
				return err
			}
			return jobs.Put(ik, nv)
		}
		if err := jobs.Delete(ik); err != nil {
			return err
		}
		// Every copy of what it found becomes unreadable; the request
		// itself names the person: its body goes too, and the key it and
		// the job were sealed with.
		reason := fmt.Sprintf("erasure done: %d events, %d states", job.Events, job.States)
		if err := db.eraseInboxBody(tx, ik, reason, kids); err != nil {
			return err
		}
		kids[db.seal.KID(InboxSubject(string(src), string(key)))] = true
		if err := db.seal.Destroy(KIDs(kids).List()); err != nil {
			return err
		}
		done = &ErasureDone{Source: string(src), Key: string(key), Events: job.Events, States: job.States, QueuedAt: job.QueuedAt}
		more = hasJobs(jobs)
		return nil
	}, nil)
	return more, done, err
}

// hasJobs reports whether erasures remain queued (a cursor sees this
// transaction's own deletes).
func hasJobs(jobs *bolt.Bucket) bool {
	k, _ := jobs.Cursor().First()
	return k != nil
}

// checkJob validates a decoded erasure.
func checkJob(job *erasureJob) error {
	switch job.Phase {
	case erasePhaseNamed, erasePhaseEvents, erasePhaseStates:
		return nil
	}
	return fmt.Errorf("unknown phase %q", job.Phase)
}

type eventHit struct {
	k []byte
	e mapping.Event
}

type stateHit struct {
	k []byte
	s mapping.State
}

// eraseChunk does one bounded step of job and reports whether it finished.
func (db *DB) eraseChunk(tx *bolt.Tx, job *erasureJob, kids map[vault.KID]bool) (bool, error) {
	events, states := tx.Bucket(bEvents), tx.Bucket(bStates)
	var evs []eventHit
	var sts []stateHit
	finished := false
	switch job.Phase {
	case erasePhaseNamed:
		for _, id := range job.EventIDs {
			var e mapping.Event
			if k := eventKey(tx, id); k != nil {
				if ok, err := db.getEvent(events, k, &e); err == nil && ok {
					evs = append(evs, eventHit{k, e})
				}
			}
		}
		for _, key := range job.StateKeys {
			var s mapping.State
			if ok, err := db.getState(states, []byte(key), &s); err == nil && ok {
				sts = append(sts, stateHit{[]byte(key), s})
			}
		}
		job.Phase, job.Cursor = erasePhaseEvents, nil
	case erasePhaseEvents:
		c := events.Cursor()
		k, v := seekAfter(c, job.Cursor)
		for i := 0; k != nil && i < erasureChunk; i++ {
			job.Cursor = append(job.Cursor[:0], k...)
			var e mapping.Event
			if db.seal.DecodeEvent(v, &e) == nil && job.MatchEvent(&e) {
				evs = append(evs, eventHit{append([]byte(nil), k...), e})
			}
			k, v = c.Next()
		}
		if k == nil {
			job.Phase, job.Cursor = erasePhaseStates, nil
		}
	case erasePhaseStates:
		prefix := []byte(job.StatePrefix)
		c := states.Cursor()
		var k, v []byte
		if job.Cursor == nil {
			k, v = c.Seek(prefix)
		} else {
			k, v = seekAfter(c, job.Cursor)
		}
		for i := 0; k != nil && bytes.HasPrefix(k, prefix) && i < erasureChunk; i++ {
			job.Cursor = append(job.Cursor[:0], k...)
			var s mapping.State
			if db.seal.DecodeState(v, &s) == nil && job.MatchState(&s) {
				sts = append(sts, stateHit{append([]byte(nil), k...), s})
			}
			k, v = c.Next()
		}
		finished = k == nil || !bytes.HasPrefix(k, prefix)
	default:
		return false, fmt.Errorf("store: erasure in unknown phase %q", job.Phase)
	}
	// Written after the cursors are done with the buckets.
	if err := db.eraseRecords(tx, evs, sts, job.StateValueKey, kids); err != nil {
		return false, err
	}
	job.Events += len(evs)
	job.States += len(sts)
	return finished, nil
}

// eraseRecords erases events (with the notifications they came from) and
// states: it adds the data keys they are sealed with to kids, for the
// caller to destroy, and rewrites them without their personal fields.
func (db *DB) eraseRecords(tx *bolt.Tx, evs []eventHit, sts []stateHit, valueKey string, kids map[vault.KID]bool) error {
	if len(evs) == 0 && len(sts) == 0 {
		return nil
	}
	events, states := tx.Bucket(bEvents), tx.Bucket(bStates)
	var sources [][]byte
	for i := range evs {
		KIDs(kids).Add(events.Get(evs[i].k))
		sources = append(sources, inboxKey(evs[i].e.Source, evs[i].e.SourceEventID))
	}
	for i := range sts {
		KIDs(kids).Add(states.Get(sts[i].k))
	}
	if err := db.forgetMemory(tx, evs); err != nil {
		return err
	}
	for i := range evs {
		e := &evs[i].e
		ForgetEvent(e)
		if err := db.putEvent(events, evs[i].k, e); err != nil {
			return err
		}
	}
	for _, ik := range sources {
		if err := db.eraseInboxBody(tx, ik, ErasedReason, kids); err != nil {
			return err
		}
	}
	for i := range sts {
		ForgetState(&sts[i].s, valueKey)
		if err := db.putState(states, sts[i].k, &sts[i].s); err != nil {
			return err
		}
	}
	return nil
}

// forgetMemory deletes what forwarders remember about the events'
// identifiers (Adjust's per-device order). Memory keys are stored with
// each "|"-separated part hashed (see hashMemoryKey), so the entries of an
// identifier ("kind:value") are recognised without the raw value.
func (db *DB) forgetMemory(tx *bolt.Tx, evs []eventHit) error {
	parts := map[string]bool{}
	for i := range evs {
		for k, v := range evs[i].e.User.Identifiers {
			parts[db.seal.MemoryKey(k+":"+v)] = true
		}
	}
	if len(parts) == 0 {
		return nil
	}
	b := tx.Bucket(bFwdMemory)
	var del [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		_, hk, _ := bytes.Cut(k, []byte{0})
		for _, p := range strings.Split(string(hk), "|") {
			if parts[p] {
				del = append(del, append([]byte(nil), k...))
				break
			}
		}
	}
	for _, k := range del {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// seekAfter positions c on the first key after last (the first key when
// last is nil).
func seekAfter(c *bolt.Cursor, last []byte) ([]byte, []byte) {
	if last == nil {
		return c.First()
	}
	k, v := c.Seek(last)
	if k != nil && bytes.Equal(k, last) {
		k, v = c.Next()
	}
	return k, v
}

// eraseInboxBody erases a stored notification's body, enrichment and
// metadata, keeping the entry (its dedupe key and event ids) so that a
// retry of it is still recognised. The key it was sealed with joins kids,
// for the caller to destroy.
func (db *DB) eraseInboxBody(tx *bolt.Tx, ik []byte, reason string, kids map[vault.KID]bool) error {
	k := inboxKeyOf(tx, ik)
	if k == nil {
		return nil
	}
	inbox := tx.Bucket(bInbox)
	v := inbox.Get(k)
	if v == nil {
		return nil
	}
	var nt mapping.Notification
	if err := db.seal.DecodeNotification(v, &nt); err != nil {
		return nil // nothing readable to erase
	}
	// A day's key (a notification first stored as ignored, mapped later
	// by a reprocess) seals other people's notifications too: it is left
	// to retention.
	if kid, ok := KIDOf(v); ok && kid != db.seal.KID(DaySubject(nt.Source, nt.ReceivedAt)) {
		kids[kid] = true
	}
	EraseBody(&nt, reason)
	nv, err := db.seal.EncodeNotification(&nt, vault.KID{})
	if err != nil {
		return err
	}
	return inbox.Put(k, nv)
}
