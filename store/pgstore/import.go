package pgstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// Import writes records exported from a BoltDB store (`postback store
// copy`). A record whose key is already in the database is left as it is
// (ON CONFLICT DO NOTHING), so a copy can be resumed after an interruption
// and running it twice changes nothing. It returns how many records were
// new.
func (db *DB) Import(ctx context.Context, chunk []store.Record) (int, error) {
	var inserted int
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		inserted = 0
		for _, r := range chunk {
			n, err := importRecord(ctx, tx, r)
			if err != nil {
				return fmt.Errorf("pgstore: import %s %q: %w", r.Kind, bytes.ReplaceAll(r.Key, []byte{0}, []byte("/")), err)
			}
			inserted += n
		}
		return nil
	})
	return inserted, err
}

func importRecord(ctx context.Context, tx dbtx, r store.Record) (int, error) {
	exec := func(sql string, args ...any) (int, error) {
		tag, err := tx.Exec(ctx, sql, args...)
		return int(tag.RowsAffected()), err
	}
	switch r.Kind {
	case store.KindInbox:
		var n mapping.Notification
		if err := json.Unmarshal(r.Value, &n); err != nil {
			return 0, err
		}
		c, err := exec(`INSERT INTO inbox (source, key, received_at, status, doc) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, key) DO NOTHING`,
			n.Source, n.Key, n.ReceivedAt, n.Status, r.Value)
		if err != nil {
			return 0, err
		}
		for _, a := range n.AltKeys {
			if _, err := exec(`INSERT INTO inbox_alt (source, alt_key, key) VALUES ($1, $2, $3) ON CONFLICT (source, alt_key) DO NOTHING`, n.Source, a, n.Key); err != nil {
				return 0, err
			}
		}
		return c, nil
	case store.KindEvent:
		var e mapping.Event
		if err := json.Unmarshal(r.Value, &e); err != nil {
			return 0, err
		}
		return exec(`INSERT INTO events (id, received_at, source, type, app_id, environment, app_user_id, subscription_id, source_event_id, doc)
			VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), NULLIF($8, ''), $9, $10) ON CONFLICT (id) DO NOTHING`,
			e.ID, e.ReceivedAt, e.Source, string(e.Type), e.AppID, e.Environment, e.User.AppUserID, e.SubscriptionID, e.SourceEventID, r.Value)
	case store.KindState:
		var s mapping.State
		if err := json.Unmarshal(r.Value, &s); err != nil {
			return 0, err
		}
		return exec(`INSERT INTO states (key, app_user_id, doc) VALUES ($1, NULLIF($2, ''), $3) ON CONFLICT (key) DO NOTHING`, string(r.Key), s.AppUserID, r.Value)
	case store.KindDelivery:
		var d store.Delivery
		if err := json.Unmarshal(r.Value, &d); err != nil {
			return 0, err
		}
		return exec(`INSERT INTO deliveries (key, event_id, destination, state, next_at_ms, order_key, order_at_ms, app_user_id, created_at, reason, doc)
			VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7, NULLIF($8, ''), $9, $10, $11) ON CONFLICT (key) DO NOTHING`,
			d.Key, d.EventID, d.Destination, d.State, nullMs(&d), d.OrderKey, d.OrderAtMs, d.UserKey, d.CreatedAt, reasonText(&d), r.Value)
	case store.KindAttempt:
		// delivery key, NUL, n as 4 big-endian bytes
		i := len(r.Key) - 5
		if i < 1 || r.Key[i] != 0 {
			return 0, fmt.Errorf("attempt key without a number")
		}
		n := binary.BigEndian.Uint32(r.Key[i+1:])
		return exec(`INSERT INTO attempts (delivery_key, n, doc) VALUES ($1, $2, $3) ON CONFLICT (delivery_key, n) DO NOTHING`, string(r.Key[:i]), int(n), r.Value)
	case store.KindUser:
		return exec(`INSERT INTO users (app_user_id, doc) VALUES ($1, $2) ON CONFLICT (app_user_id) DO NOTHING`, string(r.Key), r.Value)
	case store.KindErasure:
		src, key, ok := bytes.Cut(r.Key, []byte{0})
		if !ok {
			return 0, fmt.Errorf("erasure key without a source")
		}
		var job store.ErasureJob
		if err := json.Unmarshal(r.Value, &job); err != nil {
			return 0, err
		}
		return exec(`INSERT INTO erasures (inbox_source, inbox_key, queued_at, doc) VALUES ($1, $2, $3, $4) ON CONFLICT (inbox_source, inbox_key) DO NOTHING`,
			string(src), string(key), job.QueuedAt, r.Value)
	case store.KindFwdMemory:
		dest, key, ok := bytes.Cut(r.Key, []byte{0})
		if !ok || len(r.Value) != 8 {
			return 0, fmt.Errorf("forwarder memory record malformed")
		}
		return exec(`INSERT INTO fwd_memory (destination, key, at_ms) VALUES ($1, $2, $3) ON CONFLICT (destination, key) DO NOTHING`,
			string(dest), string(key), int64(binary.BigEndian.Uint64(r.Value)))
	}
	return 0, fmt.Errorf("unknown record kind %q", r.Kind)
}
