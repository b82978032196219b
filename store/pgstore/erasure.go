package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/vault"
)

// Erasure is cryptographic, as on BoltDB (store/erasure.go, store/users.go):
// an erasure collects the data keys of every record it finds (events, the
// notifications they came from unless sealed under a day's key, states,
// the user's record), rewrites the live rows without their personal
// fields, forgets the forwarder memory of the events' identifiers, and
// deletes the keys in the same transaction (a queued erasure at its last
// step, the keys of earlier steps carried in the job). Every other copy of
// those rows (dead tuples, WAL, backups, replicas) then holds personal
// fields that nothing can open.

// hit is a record an erasure found, with its stored document.
type hit[T any] struct {
	doc []byte
	rec T
}

type (
	eventHit = hit[mapping.Event]
	stateHit = hit[mapping.State]
)

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
		job, err := db.seal.DecodeJob(doc)
		if err != nil {
			// Unreadable: dropped (and reported) rather than retried
			// forever ahead of every later erasure.
			db.opts.Logger.Error("privacy erasure unreadable; dropped", "key", source+"/"+key, "err", err)
			if _, err := tx.Exec(ctx, "DELETE FROM erasures WHERE inbox_source = $1 AND inbox_key = $2", source, key); err != nil {
				return err
			}
			more, err = db.erasuresLeft(ctx, tx)
			return err
		}
		kids := map[vault.KID]bool{}
		for _, k := range job.Kids {
			kids[k] = true
		}
		finished, err := db.eraseChunk(ctx, tx, &job, kids)
		if err != nil {
			return err
		}
		job.Kids = store.KIDs(kids).List()
		if !finished {
			more = true
			if doc, err = db.seal.EncodeJob(&job, source, key); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE erasures SET doc = $3 WHERE inbox_source = $1 AND inbox_key = $2", source, key, doc)
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM erasures WHERE inbox_source = $1 AND inbox_key = $2", source, key); err != nil {
			return err
		}
		// The request itself names the person: its body goes too, and the
		// key it and the job were sealed with.
		reason := fmt.Sprintf("erasure done: %d events, %d states", job.Events, job.States)
		if err := db.eraseInbox(ctx, tx, source, key, reason, kids); err != nil {
			return err
		}
		kids[db.seal.KID(store.InboxSubject(source, key))] = true
		if err := destroyTx(ctx, tx, db.keys, store.KIDs(kids).List()); err != nil {
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
func (db *DB) eraseChunk(ctx context.Context, tx dbtx, job *store.ErasureJob, kids map[vault.KID]bool) (bool, error) {
	chunk := store.ErasureChunk()
	var evs []eventHit
	var sts []stateHit
	finished := false
	switch job.Phase {
	case store.ErasePhaseNamed:
		if len(job.EventIDs) > 0 {
			rows, err := tx.Query(ctx, "SELECT id, doc FROM events WHERE id = ANY($1) ORDER BY id FOR UPDATE", job.EventIDs)
			if err != nil {
				return false, err
			}
			if evs, _, _, err = db.scanEvents(rows, func(*mapping.Event) bool { return true }); err != nil {
				return false, err
			}
		}
		if len(job.StateKeys) > 0 {
			rows, err := tx.Query(ctx, "SELECT key, doc FROM states WHERE key = ANY($1) ORDER BY key FOR UPDATE", job.StateKeys)
			if err != nil {
				return false, err
			}
			if sts, _, _, err = db.scanStates(rows, func(*mapping.State) bool { return true }); err != nil {
				return false, err
			}
		}
		job.Phase, job.Cursor = store.ErasePhaseEvents, nil
	case store.ErasePhaseEvents:
		rows, err := tx.Query(ctx, "SELECT id, doc FROM events WHERE id > $1 ORDER BY id LIMIT $2", string(job.Cursor), chunk)
		if err != nil {
			return false, err
		}
		var last string
		var read int
		if evs, last, read, err = db.scanEvents(rows, job.MatchEvent); err != nil {
			return false, err
		}
		job.Cursor = []byte(last)
		if read < chunk {
			job.Phase, job.Cursor = store.ErasePhaseStates, nil
		}
	case store.ErasePhaseStates:
		rows, err := tx.Query(ctx, `SELECT key, doc FROM states WHERE key >= $1 AND key > $2 AND starts_with(key, $1) ORDER BY key LIMIT $3`,
			job.StatePrefix, string(job.Cursor), chunk)
		if err != nil {
			return false, err
		}
		var last string
		var read int
		if sts, last, read, err = db.scanStates(rows, job.MatchState); err != nil {
			return false, err
		}
		job.Cursor = []byte(last)
		finished = read < chunk
	default:
		return false, fmt.Errorf("store: erasure in unknown phase %q", job.Phase)
	}
	if err := db.eraseRecords(ctx, tx, evs, sts, job.StateValueKey, kids); err != nil {
		return false, err
	}
	job.Events += len(evs)
	job.States += len(sts)
	return finished, nil
}

// scanSealed decodes rows of (key, doc) and keeps those match accepts;
// last is the last key read.
func scanSealed[T any](rows pgx.Rows, decode func([]byte, *T) error, match func(key string, rec *T) bool) (hits []hit[T], last string, read int, err error) {
	defer rows.Close()
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&last, &doc); err != nil {
			return nil, "", 0, err
		}
		read++
		var rec T
		if decode(doc, &rec) == nil && match(last, &rec) {
			hits = append(hits, hit[T]{doc, rec})
		}
	}
	return hits, last, read, rows.Err()
}

func (db *DB) scanEvents(rows pgx.Rows, match func(*mapping.Event) bool) ([]eventHit, string, int, error) {
	return scanSealed(rows, db.seal.DecodeEvent, func(_ string, e *mapping.Event) bool { return match(e) })
}

func (db *DB) scanStates(rows pgx.Rows, match func(*mapping.State) bool) ([]stateHit, string, int, error) {
	return scanSealed(rows, db.seal.DecodeState, func(key string, st *mapping.State) bool {
		if !match(st) {
			return false
		}
		if st.Key == "" {
			st.Key = key
		}
		return true
	})
}

// eraseRecords erases events (with the notifications they came from) and
// states: it adds the data keys they are sealed with to kids, for the
// caller to destroy, and rewrites them without their personal fields.
func (db *DB) eraseRecords(ctx context.Context, tx dbtx, evs []eventHit, sts []stateHit, valueKey string, kids map[vault.KID]bool) error {
	if len(evs) == 0 && len(sts) == 0 {
		return nil
	}
	for i := range evs {
		store.KIDs(kids).Add(evs[i].doc)
	}
	for i := range sts {
		store.KIDs(kids).Add(sts[i].doc)
	}
	if err := db.forgetMemory(ctx, tx, evs); err != nil {
		return err
	}
	b := &pgx.Batch{}
	for i := range evs {
		e := &evs[i].rec
		store.ForgetEvent(e)
		if err := db.queueEvent(b, e, true); err != nil {
			return err
		}
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
	}
	for i := range evs {
		if err := db.eraseInbox(ctx, tx, evs[i].rec.Source, evs[i].rec.SourceEventID, store.ErasedReason, kids); err != nil {
			return err
		}
	}
	for i := range sts {
		store.ForgetState(&sts[i].rec, valueKey)
		if err := db.putState(ctx, tx, &sts[i].rec); err != nil {
			return err
		}
	}
	return nil
}

// forgetMemory deletes what forwarders remember about the events'
// identifiers: memory keys are stored with each "|"-separated part hashed
// (Sealer.HashMemoryKey), so an identifier's entries are found by its
// hashed "kind:value" alone.
func (db *DB) forgetMemory(ctx context.Context, tx dbtx, evs []eventHit) error {
	var parts []string
	for i := range evs {
		for k, v := range evs[i].rec.User.Identifiers {
			parts = append(parts, db.seal.MemoryKey(k+":"+v))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, "DELETE FROM fwd_memory WHERE string_to_array(key, '|') && $1::text[]", parts)
	return err
}

// eraseInbox erases a stored notification's body, enrichment and metadata,
// keeping the row (its dedupe key and event ids) so a retry of it is still
// recognised. The key it was sealed with joins kids, unless it is a day's
// key (which seals other people's notifications too: retention destroys
// it).
func (db *DB) eraseInbox(ctx context.Context, tx dbtx, source, key, reason string, kids map[vault.KID]bool) error {
	var prev []byte
	err := tx.QueryRow(ctx, "SELECT doc FROM inbox WHERE source = $1 AND key = $2 FOR UPDATE", source, key).Scan(&prev)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	var n mapping.Notification
	if err := db.seal.DecodeNotification(prev, &n); err != nil {
		return nil // nothing readable to erase
	}
	if kid, ok := store.KIDOf(prev); ok && kid != db.seal.KID(store.DaySubject(n.Source, n.ReceivedAt)) {
		kids[kid] = true
	}
	store.EraseBody(&n, reason)
	doc, err := db.seal.EncodeNotification(&n, vault.KID{})
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE inbox SET status = $3, doc = $4 WHERE source = $1 AND key = $2`, source, key, n.Status, doc)
	return err
}

// DeleteUser erases a user (see store.DB.DeleteUser): the data keys of the
// user's identity record, events, the notifications they came from and
// the states that remember the user are deleted in the transaction that
// rewrites those rows without their personal fields. It returns how many
// events were erased.
func (db *DB) DeleteUser(ctx context.Context, appUserID string) (int, error) {
	if err := store.CheckUserID(appUserID); err != nil {
		return 0, err
	}
	uk := db.seal.UserKey(appUserID)
	var n int
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		n = 0
		kids := map[vault.KID]bool{}
		var udoc []byte
		err := tx.QueryRow(ctx, "DELETE FROM users WHERE user_key = $1 RETURNING doc", uk).Scan(&udoc)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		store.KIDs(kids).Add(udoc)
		rows, err := tx.Query(ctx, "SELECT id, doc FROM events WHERE user_key = $1 ORDER BY id FOR UPDATE", uk)
		if err != nil {
			return err
		}
		evs, _, _, err := db.scanEvents(rows, func(e *mapping.Event) bool { return e.User.AppUserID == appUserID })
		if err != nil {
			return err
		}
		rows, err = tx.Query(ctx, "SELECT key, doc FROM states WHERE user_key = $1 ORDER BY key FOR UPDATE", uk)
		if err != nil {
			return err
		}
		sts, _, _, err := db.scanStates(rows, func(s *mapping.State) bool { return s.AppUserID == appUserID })
		if err != nil {
			return err
		}
		if err := db.eraseRecords(ctx, tx, evs, sts, "", kids); err != nil {
			return err
		}
		if err := destroyTx(ctx, tx, db.keys, store.KIDs(kids).List()); err != nil {
			return err
		}
		n = len(evs)
		return nil
	})
	return n, err
}
