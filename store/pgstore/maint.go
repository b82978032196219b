package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// pruneChunk bounds the rows one prune statement deletes, so that a large
// backlog never holds locks for long.
const pruneChunk = 2000

// Prune removes events (with their deliveries and attempts), inbox items
// and forwarder memory older than retention. Unfinished work is kept and
// counted in Kept, as are inbox items still waiting for enrichment.
func (db *DB) Prune(ctx context.Context, retention time.Duration) (store.PruneResult, error) {
	var r store.PruneResult
	cutoff := db.opts.Now().Add(-retention)
	if err := db.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM events e WHERE e.received_at < $1 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.next_at_ms IS NOT NULL))
		+ (SELECT count(*) FROM inbox WHERE received_at < $1 AND status = 'enriching')`, cutoff).Scan(&r.Kept); err != nil {
		return r, err
	}
	steps := []struct {
		n     *int
		q     string
		bound any // $1: the cutoff as the step's table stores it
	}{
		{&r.Events, `WITH gone AS (
			DELETE FROM events WHERE id IN (
				SELECT x.id FROM events x WHERE x.received_at < $1
				  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = x.id AND d.next_at_ms IS NOT NULL)
				LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING id
		), dels AS (
			DELETE FROM deliveries d USING gone WHERE d.event_id = gone.id RETURNING d.key
		), atts AS (
			DELETE FROM attempts a USING dels WHERE a.delivery_key = dels.key
		)
		SELECT count(*) FROM gone`, cutoff},
		{&r.Notifications, `WITH gone AS (
			DELETE FROM inbox WHERE (source, key) IN (
				SELECT source, key FROM inbox WHERE received_at < $1 AND status <> 'enriching' LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING 1
		) SELECT count(*) FROM gone`, cutoff},
		{&r.Memory, `WITH gone AS (
			DELETE FROM fwd_memory WHERE (destination, key) IN (
				SELECT destination, key FROM fwd_memory WHERE at_ms < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING 1
		) SELECT count(*) FROM gone`, cutoff.UnixMilli()},
	}
	for _, s := range steps {
		for {
			var n int
			if err := db.pool.QueryRow(ctx, s.q, s.bound, pruneChunk).Scan(&n); err != nil {
				return r, err
			}
			*s.n += n
			if n < pruneChunk {
				break
			}
			if err := ctx.Err(); err != nil {
				return r, err
			}
		}
	}
	return r, nil
}

// PendingErasures counts queued erasures.
func (db *DB) PendingErasures() (int, error) {
	var n int
	err := db.pool.QueryRow(context.Background(), "SELECT count(*) FROM erasures").Scan(&n)
	return n, err
}

// EraseStep carries the oldest queued erasure one chunk further (the same
// phases and chunks as the BoltDB store). A job is locked while a step
// works on it, so replicas never step the same job at once.
func (db *DB) EraseStep(ctx context.Context) (more bool, done *store.ErasureDone, err error) {
	err = db.inTx(ctx, func(tx pgx.Tx) error {
		more, done = false, nil
		var source, key string
		var doc []byte
		err := tx.QueryRow(ctx, "SELECT inbox_source, inbox_key, doc FROM erasures ORDER BY queued_at, inbox_source, inbox_key LIMIT 1 FOR UPDATE SKIP LOCKED").Scan(&source, &key, &doc)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		var job store.ErasureJob
		if err := json.Unmarshal(doc, &job); err != nil || (job.Phase != store.ErasePhaseNamed && job.Phase != store.ErasePhaseEvents && job.Phase != store.ErasePhaseStates) {
			db.opts.Logger.Error("privacy erasure unreadable; dropped", "key", source+"/"+key, "err", err, "phase", job.Phase)
			if _, err := tx.Exec(ctx, "DELETE FROM erasures WHERE inbox_source = $1 AND inbox_key = $2", source, key); err != nil {
				return err
			}
			more, err = db.erasuresLeft(ctx, tx)
			return err
		}
		finished, err := db.eraseChunk(ctx, tx, &job)
		if err != nil {
			return err
		}
		if !finished {
			more = true
			if doc, err = json.Marshal(&job); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE erasures SET doc = $3 WHERE inbox_source = $1 AND inbox_key = $2", source, key, doc)
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM erasures WHERE inbox_source = $1 AND inbox_key = $2", source, key); err != nil {
			return err
		}
		reason := fmt.Sprintf("erasure done: %d events, %d states", job.Events, job.States)
		if err := eraseInbox(ctx, tx, source, key, reason); err != nil {
			return err
		}
		done = &store.ErasureDone{Source: source, Key: key, Events: job.Events, States: job.States, QueuedAt: job.QueuedAt}
		more, err = db.erasuresLeft(ctx, tx)
		return err
	})
	return more, done, err
}

func (db *DB) erasuresLeft(ctx context.Context, tx pgx.Tx) (bool, error) {
	var more bool
	err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM erasures)").Scan(&more)
	return more, err
}

// eraseChunk does one bounded step of job and reports whether it finished.
func (db *DB) eraseChunk(ctx context.Context, tx dbtx, job *store.ErasureJob) (bool, error) {
	chunk := store.ErasureChunk()
	switch job.Phase {
	case store.ErasePhaseNamed:
		if len(job.EventIDs) > 0 {
			rows, err := tx.Query(ctx, "SELECT doc FROM events WHERE id = ANY($1) ORDER BY id FOR UPDATE", job.EventIDs)
			if err != nil {
				return false, err
			}
			evs, err := collectJSON[mapping.Event](rows)
			if err != nil {
				return false, err
			}
			for i := range evs {
				if err := eraseEvent(ctx, tx, &evs[i]); err != nil {
					return false, err
				}
				job.Events++
			}
		}
		if len(job.StateKeys) > 0 {
			rows, err := tx.Query(ctx, "SELECT doc FROM states WHERE key = ANY($1) ORDER BY key FOR UPDATE", job.StateKeys)
			if err != nil {
				return false, err
			}
			sts, err := collectJSON[mapping.State](rows)
			if err != nil {
				return false, err
			}
			for i := range sts {
				store.ForgetState(&sts[i], job.StateValueKey)
				if err := putState(ctx, tx, &sts[i]); err != nil {
					return false, err
				}
				job.States++
			}
		}
		job.Phase, job.Cursor = store.ErasePhaseEvents, nil
		return false, nil
	case store.ErasePhaseEvents:
		rows, err := tx.Query(ctx, "SELECT id, doc FROM events WHERE id > $1 ORDER BY id LIMIT $2", string(job.Cursor), chunk)
		if err != nil {
			return false, err
		}
		var hits []mapping.Event
		seen := 0
		for rows.Next() {
			var id string
			var doc []byte
			if err := rows.Scan(&id, &doc); err != nil {
				rows.Close()
				return false, err
			}
			seen++
			job.Cursor = []byte(id)
			var e mapping.Event
			if json.Unmarshal(doc, &e) == nil && job.MatchEvent(&e) {
				hits = append(hits, e)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return false, err
		}
		for i := range hits {
			if err := eraseEvent(ctx, tx, &hits[i]); err != nil {
				return false, err
			}
			job.Events++
		}
		if seen < chunk {
			job.Phase, job.Cursor = store.ErasePhaseStates, nil
		}
		return false, nil
	case store.ErasePhaseStates:
		rows, err := tx.Query(ctx, `SELECT key, doc FROM states WHERE key >= $1 AND key > $2 AND starts_with(key, $1) ORDER BY key LIMIT $3`,
			job.StatePrefix, string(job.Cursor), chunk)
		if err != nil {
			return false, err
		}
		var hits []mapping.State
		seen := 0
		for rows.Next() {
			var key string
			var doc []byte
			if err := rows.Scan(&key, &doc); err != nil {
				rows.Close()
				return false, err
			}
			seen++
			job.Cursor = []byte(key)
			var s mapping.State
			if json.Unmarshal(doc, &s) == nil && job.MatchState(&s) {
				s.Key = key
				hits = append(hits, s)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return false, err
		}
		for i := range hits {
			store.ForgetState(&hits[i], job.StateValueKey)
			if err := putState(ctx, tx, &hits[i]); err != nil {
				return false, err
			}
			job.States++
		}
		return seen < chunk, nil
	}
	return false, fmt.Errorf("store: erasure in unknown phase %q", job.Phase)
}

// eraseEvent clears an event's identifiers and erases the notification it
// came from.
func eraseEvent(ctx context.Context, tx dbtx, e *mapping.Event) error {
	if len(e.User.Identifiers) > 0 {
		e.User.Identifiers = nil
		if err := putEvent(ctx, tx, e); err != nil {
			return err
		}
	}
	return eraseInbox(ctx, tx, e.Source, e.SourceEventID, store.ErasedReason)
}

// forwarderMemory is a destination's forwarder memory in fwd_memory.
type forwarderMemory struct {
	db   *DB
	dest string
}

// ForwarderMemory returns the durable memory of destination name.
func (db *DB) ForwarderMemory(name string) store.Memory { return &forwarderMemory{db: db, dest: name} }

func (m *forwarderMemory) Get(key string) (time.Time, bool, error) {
	var ms int64
	err := m.db.pool.QueryRow(context.Background(), "SELECT at_ms FROM fwd_memory WHERE destination = $1 AND key = $2", m.dest, key).Scan(&ms)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	return time.UnixMilli(ms), true, nil
}

// Put stores at for key unless a later time is stored: a key only advances.
func (m *forwarderMemory) Put(key string, at time.Time) error {
	_, err := m.db.pool.Exec(context.Background(), `INSERT INTO fwd_memory (destination, key, at_ms) VALUES ($1, $2, $3)
		ON CONFLICT (destination, key) DO UPDATE SET at_ms = GREATEST(fwd_memory.at_ms, EXCLUDED.at_ms)`, m.dest, key, at.UnixMilli())
	return err
}
