package pgstore

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// Events lists events newest first. The cursor is opaque: the received
// time in microseconds and the id of the last event of the previous page.
func (db *DB) Events(f store.EventFilter) (store.EventPage, error) {
	if f.Limit <= 0 || f.Limit > 500 {
		f.Limit = 50
	}
	var p store.EventPage
	var curAt *time.Time
	curID := ""
	if f.Cursor != "" {
		b, err := hex.DecodeString(f.Cursor)
		if err != nil || len(b) < 8 {
			return p, nil // an unreadable cursor lists nothing, as on BoltDB
		}
		t := time.UnixMicro(int64(binary.BigEndian.Uint64(b[:8])))
		curAt, curID = &t, string(b[8:])
	}
	var until *time.Time
	if !f.Until.IsZero() {
		u := f.Until.Truncate(time.Millisecond).Add(time.Millisecond)
		until = &u
	}
	rows, err := db.pool.Query(context.Background(), `SELECT doc, received_at FROM events
		WHERE ($1 = '' OR source = $1) AND ($2 = '' OR type = $2) AND ($3 = '' OR app_id = $3)
		  AND ($4 = '' OR environment = $4) AND ($5 = '' OR user_key = $5) AND ($6 = '' OR subscription_id = $6)
		  AND ($7::timestamptz IS NULL OR received_at >= $7)
		  AND ($8::timestamptz IS NULL OR received_at < $8)
		  AND ($9::timestamptz IS NULL OR (received_at, id) < ($9, $10))
		ORDER BY received_at DESC, id DESC
		LIMIT $11`,
		f.Source, f.Type, f.AppID, f.Environment, db.seal.UserKey(f.AppUserID), f.SubscriptionID,
		optTime(f.Since.Truncate(time.Millisecond)), until, curAt, curID, f.Limit+1)
	if err != nil {
		return p, err
	}
	defer rows.Close()
	var lastAt time.Time
	for rows.Next() {
		var doc []byte
		var at time.Time
		if err := rows.Scan(&doc, &at); err != nil {
			return p, err
		}
		if len(p.Events) == f.Limit {
			last := p.Events[len(p.Events)-1]
			k := binary.BigEndian.AppendUint64(nil, uint64(lastAt.UnixMicro()))
			p.Next = hex.EncodeToString(append(k, last.ID...))
			break
		}
		var e mapping.Event
		if err := db.seal.DecodeEvent(doc, &e); err != nil {
			continue
		}
		p.Events = append(p.Events, e)
		lastAt = at
	}
	return p, rows.Err()
}

// Event returns one event with its identity-store identifiers.
func (db *DB) Event(id string) (mapping.Event, error) {
	evs, err := db.eventsByID(context.Background(), db.pool, []string{id})
	if err != nil {
		return mapping.Event{}, err
	}
	ce, ok := evs[id]
	if !ok {
		return mapping.Event{}, store.ErrNotFound
	}
	return ce.e, nil
}

// Stats counts the events received in [since, until) per bucket and type,
// and their deliveries per destination and state.
func (db *DB) Stats(since, until time.Time, bucket time.Duration) (store.Stats, error) {
	if bucket < time.Minute {
		bucket = time.Minute
	}
	if !until.After(since) {
		until = since.Add(bucket)
	}
	n := int((until.Sub(since) + bucket - 1) / bucket)
	s := store.Stats{Since: since.UTC(), Until: until.UTC(), Bucket: bucket, Buckets: make([]map[string]int, n), Deliveries: map[string]map[string]int{}}
	for i := range s.Buckets {
		s.Buckets[i] = map[string]int{}
	}
	ctx := context.Background()
	lo, hi := since.Truncate(time.Millisecond), until.Truncate(time.Millisecond)
	rows, err := db.pool.Query(ctx, `SELECT floor(extract(epoch FROM (date_trunc('milliseconds', received_at) - $1)) * 1000 / $3)::int, type, count(*)
		FROM events WHERE received_at >= $1 AND received_at < $2 GROUP BY 1, 2`, lo, hi, float64(bucket.Milliseconds()))
	if err != nil {
		return s, err
	}
	for rows.Next() {
		var i, c int
		var typ string
		if err := rows.Scan(&i, &typ, &c); err != nil {
			rows.Close()
			return s, err
		}
		if i >= 0 && i < n {
			s.Buckets[i][typ] += c
		}
		s.Events += c
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, err
	}
	rows, err = db.pool.Query(ctx, `SELECT d.destination, d.state, count(*) FROM deliveries d JOIN events e ON e.id = d.event_id
		WHERE e.received_at >= $1 AND e.received_at < $2 GROUP BY 1, 2`, lo, hi)
	if err != nil {
		return s, err
	}
	defer rows.Close()
	for rows.Next() {
		var dest, state string
		var c int
		if err := rows.Scan(&dest, &state, &c); err != nil {
			return s, err
		}
		m := s.Deliveries[dest]
		if m == nil {
			m = map[string]int{}
			s.Deliveries[dest] = m
		}
		m[state] += c
	}
	return s, rows.Err()
}

// DeadCounts counts dead deliveries per destination.
func (db *DB) DeadCounts() (map[string]int, error) {
	rows, err := db.pool.Query(context.Background(), "SELECT destination, count(*) FROM deliveries WHERE state = 'dead' GROUP BY 1")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var d string
		var c int
		if err := rows.Scan(&d, &c); err != nil {
			return nil, err
		}
		out[d] = c
	}
	return out, rows.Err()
}

// PutUser merges identifiers into a user's record and releases that user's
// deliveries waiting for an identifier.
func (db *DB) PutUser(ctx context.Context, appUserID string, ids map[string]string) (store.User, error) {
	if err := store.CheckUserID(appUserID); err != nil {
		return store.User{}, err
	}
	var u store.User
	var dests []string
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		dests = nil
		var doc []byte
		u = store.User{}
		uk := db.seal.UserKey(appUserID)
		err := tx.QueryRow(ctx, "SELECT doc FROM users WHERE user_key = $1 FOR UPDATE", uk).Scan(&doc)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			if err := db.seal.DecodeUser(doc, &u); err != nil {
				return err
			}
		}
		u.Merge(appUserID, ids, db.opts.Now())
		if doc, err = db.seal.EncodeUser(&u); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO users (user_key, doc) VALUES ($1, $2) ON CONFLICT (user_key) DO UPDATE SET doc = EXCLUDED.doc", uk, doc); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT doc FROM deliveries WHERE user_key = $1 AND state = 'waiting' ORDER BY key FOR UPDATE", uk)
		if err != nil {
			return err
		}
		waiting, err := collectJSON[store.Delivery](rows)
		if err != nil {
			return err
		}
		now := db.opts.Now()
		for i := range waiting {
			d := &waiting[i]
			d.NextAtMs = now.UnixMilli()
			doc, err := json.Marshal(d)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE deliveries SET next_at_ms = $2, doc = $3 WHERE key = $1", d.Key, d.NextAtMs, doc); err != nil {
				return err
			}
			dests = append(dests, d.Destination)
		}
		return db.notify(ctx, tx, dests)
	})
	if err != nil {
		return store.User{}, err
	}
	db.woke(dests)
	return u, nil
}

// GetUser returns a user's identifiers.
func (db *DB) GetUser(appUserID string) (store.User, error) {
	u, ok, err := db.getUser(context.Background(), db.pool, appUserID)
	if err == nil && !ok {
		err = fmt.Errorf("%w: user %s", store.ErrNotFound, appUserID)
	}
	return u, err
}
