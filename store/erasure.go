package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/postback/postback/mapping"
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
	Phase    string    `json:"phase"`
	Cursor   []byte    `json:"cursor,omitempty"` // last key examined in the phase's bucket
	Events   int       `json:"events"`           // events erased so far
	States   int       `json:"states"`           // states erased so far
	QueuedAt time.Time `json:"queued_at"`
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

// EventNeedle is the JSON text an event must contain to be in the job's
// scope: a cheap pre-filter before decoding.
func (job *erasureJob) EventNeedle() ([]byte, error) {
	if job.IDKey == "" {
		return identifierNeedle(job.EventAttr, job.EventAttrValue)
	}
	return identifierNeedle(job.IDKey, job.IDValue)
}

// MatchEvent decodes an encoded event that contains needle and reports
// whether the job erases it.
func (job *erasureJob) MatchEvent(v, needle []byte) (mapping.Event, bool) {
	var e mapping.Event
	if !bytes.Contains(v, needle) || json.Unmarshal(v, &e) != nil {
		return e, false
	}
	return e, (job.IDKey == "" || e.User.Identifiers[job.IDKey] == job.IDValue) &&
		(job.EventAttr == "" || e.Attributes[job.EventAttr] == job.EventAttrValue)
}

// MatchState decodes an encoded state and reports whether the job erases
// it.
func (job *erasureJob) MatchState(v []byte) (mapping.State, bool) {
	var s mapping.State
	idNeedle, err1 := identifierNeedle(job.IDKey, job.IDValue)
	valNeedle, err2 := identifierNeedle(job.StateValueKey, job.IDValue)
	if err1 != nil || err2 != nil {
		return s, false
	}
	if job.IDKey != "" && !bytes.Contains(v, idNeedle) && (job.StateValueKey == "" || !bytes.Contains(v, valNeedle)) {
		return s, false
	}
	if json.Unmarshal(v, &s) != nil {
		return s, false
	}
	return s, job.IDKey == "" || s.Identifiers[job.IDKey] == job.IDValue ||
		(job.StateValueKey != "" && s.Values[job.StateValueKey] == job.IDValue)
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
func (db *DB) EraseStep(ctx context.Context) (more bool, done *ErasureDone, err error) {
	err = db.submit(ctx, func(tx *bolt.Tx) error {
		more, done = false, nil
		jobs := tx.Bucket(bErasures)
		k, v := jobs.Cursor().First()
		if k == nil {
			return nil
		}
		ik := append([]byte(nil), k...)
		job, err := decodeJob(v)
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
		finished, err := db.eraseChunk(tx, &job)
		if err != nil {
			return err
		}
		if !finished {
			more = true
			return putJSON(jobs, ik, &job)
		}
		if err := jobs.Delete(ik); err != nil {
			return err
		}
		// The request itself names the person: its body goes too.
		reason := fmt.Sprintf("erasure done: %d events, %d states", job.Events, job.States)
		if err := eraseInboxBody(tx.Bucket(bInbox), ik, reason); err != nil {
			return err
		}
		src, key, _ := bytes.Cut(ik, []byte{0})
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

// decodeJob reads a queued erasure.
func decodeJob(v []byte) (erasureJob, error) {
	var job erasureJob
	if err := json.Unmarshal(v, &job); err != nil {
		return job, err
	}
	switch job.Phase {
	case erasePhaseNamed, erasePhaseEvents, erasePhaseStates:
		return job, nil
	}
	return job, fmt.Errorf("unknown phase %q", job.Phase)
}

// eraseChunk does one bounded step of job and reports whether it finished.
func (db *DB) eraseChunk(tx *bolt.Tx, job *erasureJob) (bool, error) {
	events, states := tx.Bucket(bEvents), tx.Bucket(bStates)
	switch job.Phase {
	case erasePhaseNamed:
		for _, id := range job.EventIDs {
			var e mapping.Event
			if ok, err := getJSON(events, []byte(id), &e); err != nil || !ok {
				continue
			}
			if err := eraseEvent(tx, []byte(id), &e); err != nil {
				return false, err
			}
			job.Events++
		}
		for _, key := range job.StateKeys {
			var s mapping.State
			if ok, err := getJSON(states, []byte(key), &s); err != nil || !ok {
				continue
			}
			if err := eraseState(states, []byte(key), &s, job.StateValueKey); err != nil {
				return false, err
			}
			job.States++
		}
		job.Phase, job.Cursor = erasePhaseEvents, nil
		return false, nil
	case erasePhaseEvents:
		needle, err := job.EventNeedle()
		if err != nil {
			return false, err
		}
		type hit struct {
			k []byte
			e mapping.Event
		}
		var hits []hit
		c := events.Cursor()
		k, v := seekAfter(c, job.Cursor)
		for i := 0; k != nil && i < erasureChunk; i++ {
			job.Cursor = append(job.Cursor[:0], k...)
			if e, ok := job.MatchEvent(v, needle); ok {
				hits = append(hits, hit{append([]byte(nil), k...), e})
			}
			k, v = c.Next()
		}
		// Written after the cursor is done with the bucket.
		for i := range hits {
			if err := eraseEvent(tx, hits[i].k, &hits[i].e); err != nil {
				return false, err
			}
			job.Events++
		}
		if k == nil {
			job.Phase, job.Cursor = erasePhaseStates, nil
		}
		return false, nil
	case erasePhaseStates:
		type hit struct {
			k []byte
			s mapping.State
		}
		var hits []hit
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
			if s, ok := job.MatchState(v); ok {
				hits = append(hits, hit{append([]byte(nil), k...), s})
			}
			k, v = c.Next()
		}
		for i := range hits {
			if err := eraseState(states, hits[i].k, &hits[i].s, job.StateValueKey); err != nil {
				return false, err
			}
			job.States++
		}
		return k == nil || !bytes.HasPrefix(k, prefix), nil
	}
	return false, fmt.Errorf("store: erasure in unknown phase %q", job.Phase)
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

// identifierNeedle is the JSON text "key":"value", a cheap pre-filter on
// encoded events and states before one is decoded.
func identifierNeedle(key, value string) ([]byte, error) {
	k, err := json.Marshal(key)
	if err != nil {
		return nil, err
	}
	v, err := json.Marshal(value)
	if err != nil {
		return nil, err
	}
	return append(append(k, ':'), v...), nil
}

// eraseEvent clears an event's identifiers and erases the raw notification
// it came from.
func eraseEvent(tx *bolt.Tx, id []byte, e *mapping.Event) error {
	if len(e.User.Identifiers) > 0 {
		e.User.Identifiers = nil
		if err := putJSON(tx.Bucket(bEvents), id, e); err != nil {
			return err
		}
	}
	return eraseInboxBody(tx.Bucket(bInbox), inboxKey(e.Source, e.SourceEventID), ErasedReason)
}

// eraseState clears what ties a state to a person.
func eraseState(b *bolt.Bucket, key []byte, s *mapping.State, valueKey string) error {
	ForgetState(s, valueKey)
	return putJSON(b, key, s)
}

// eraseInboxBody erases a stored notification's body, enrichment and
// metadata, keeping the entry (its dedupe key and event ids) so that a
// retry of it is still recognised.
func eraseInboxBody(inbox *bolt.Bucket, ik []byte, reason string) error {
	var nt mapping.Notification
	if ok, err := getJSON(inbox, ik, &nt); err != nil || !ok || !EraseBody(&nt, reason) {
		return nil // nothing (readable) to erase
	}
	return putJSON(inbox, ik, &nt)
}
