package pgstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/vault"
)

// pruneChunk bounds the rows one prune statement deletes, so that a large
// backlog never holds locks for long.
const pruneChunk = 2000

// Prune removes events (with their deliveries and attempts), inbox items
// and forwarder memory older than retention. Unfinished work is kept and
// counted in Kept, as are inbox items still waiting for enrichment.
// pruneEventsSQL deletes up to $2 events received before $1 whose
// deliveries are all final, with those deliveries and their attempts; it
// returns how many, and the ids and key ids of the sealed ones.
const pruneEventsSQL = `WITH gone AS (
			DELETE FROM events WHERE id IN (
				SELECT x.id FROM events x WHERE x.received_at < $1
				  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = x.id AND d.next_at_ms IS NOT NULL)
				LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING id, substring(doc from 2 for 16) AS kid, get_byte(doc, 0) = 1 AS sealed
		), dels AS (
			DELETE FROM deliveries d USING gone WHERE d.event_id = gone.id RETURNING d.key
		), atts AS (
			DELETE FROM attempts a USING dels WHERE a.delivery_key = dels.key
		)
		SELECT count(*), coalesce(array_agg(id) FILTER (WHERE sealed), '{}'), coalesce(array_agg(kid) FILTER (WHERE sealed), '{}') FROM gone`

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
		{&r.Memory, `WITH gone AS (
			DELETE FROM fwd_memory WHERE (destination, key) IN (
				SELECT destination, key FROM fwd_memory WHERE at_ms < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING 1
		) SELECT count(*) FROM gone`, cutoff.UnixMilli()},
	}
	// Events, with their deliveries and attempts; an event sealed under
	// its own key (no subscription, no app user) takes the key with it, in
	// the same transaction.
	for {
		var n int
		err := db.inTx(ctx, func(tx pgx.Tx) error {
			var ids []string
			var stored [][]byte
			if err := tx.QueryRow(ctx, pruneEventsSQL, cutoff, pruneChunk).Scan(&n, &ids, &stored); err != nil {
				return err
			}
			var kids []vault.KID
			for i, id := range ids {
				if kid := db.seal.KID(store.OwnEventSubject(id)); i < len(stored) && bytes.Equal(stored[i], kid[:]) {
					kids = append(kids, kid)
				}
			}
			return destroyTx(ctx, tx, db.keys, kids)
		})
		if err != nil {
			return r, err
		}
		r.Events += n
		if n < pruneChunk {
			break
		}
		if err := ctx.Err(); err != nil {
			return r, err
		}
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
	for {
		n, err := db.pruneInbox(ctx, cutoff)
		if err != nil {
			return r, err
		}
		r.Notifications += n
		if n < pruneChunk {
			break
		}
		if err := ctx.Err(); err != nil {
			return r, err
		}
	}
	return r, nil
}

// pruneInbox deletes up to pruneChunk old inbox items (not those waiting
// for enrichment) and, in the same transaction, the data keys of their
// own and of their days wholly before cutoff (store.Sealer.ExpiredKID).
func (db *DB) pruneInbox(ctx context.Context, cutoff time.Time) (int, error) {
	var n int
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx, `DELETE FROM inbox WHERE (source, key) IN (
				SELECT source, key FROM inbox WHERE received_at < $1 AND status <> 'enriching' LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING doc`, cutoff, pruneChunk)
		if err != nil {
			return err
		}
		kids := map[vault.KID]bool{}
		for rows.Next() {
			var doc []byte
			if err := rows.Scan(&doc); err != nil {
				rows.Close()
				return err
			}
			n++
			// Source, key and time are in the clear part.
			var nt mapping.Notification
			if json.Unmarshal(store.ClearPart(doc), &nt) != nil {
				continue
			}
			if kid, ok := db.seal.ExpiredKID(&nt, doc, cutoff); ok {
				kids[kid] = true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		return destroyTx(ctx, tx, db.keys, store.KIDs(kids).List())
	})
	return n, err
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
	err := m.db.pool.QueryRow(context.Background(), "SELECT at_ms FROM fwd_memory WHERE destination = $1 AND key = $2", m.dest, m.db.seal.HashMemoryKey(key)).Scan(&ms)
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
		ON CONFLICT (destination, key) DO UPDATE SET at_ms = GREATEST(fwd_memory.at_ms, EXCLUDED.at_ms)`, m.dest, m.db.seal.HashMemoryKey(key), at.UnixMilli())
	return err
}
