package pgstore

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// logWhere is the deliveries log's filter over deliveries d joined with
// events e. Parameters: $1 destination, $2 states, $3 held wanted, $4 held
// destinations, $5 type, $6 source, $7 since, $8 until, $9 search, $10
// reason. The
// search compares the columns: the app user id and the purchase token by
// their keyed hashes ($11, $12; the documents are sealed).
const logWhere = `
	WHERE ($1 = '' OR d.destination = $1)
	  AND (cardinality($2::text[]) = 0 OR d.state = ANY($2)
	       OR ($3 AND d.state IN ('pending', 'retrying') AND d.destination = ANY($4)))
	  AND ($5 = '' OR e.type = $5) AND ($6 = '' OR e.source = $6)
	  AND ($7::timestamptz IS NULL OR e.received_at >= $7)
	  AND ($8::timestamptz IS NULL OR e.received_at < $8)
	  AND ($9 = '' OR e.id = $9 OR e.user_key = $11 OR e.subscription_id = $9
	       OR e.transaction_id = $9 OR e.token_key = $12)
	  AND ($10 = '' OR strpos(d.reason, $10) > 0)`

// DeliveryLog lists deliveries for the log (see store.DB.DeliveryLog),
// with the exact total.
func (db *DB) DeliveryLog(f store.LogFilter) (store.LogPage, error) {
	f.Normalize()
	p := store.LogPage{Entries: []store.LogEntry{}, Offset: f.Offset, Limit: f.Limit}
	states := slices.DeleteFunc(slices.Clone(f.States), func(s string) bool { return s == store.StateHeld })
	held := slices.Contains(f.States, store.StateHeld)
	if len(f.States) > 0 && len(states) == 0 {
		states = []string{"-"} // only held: no plain state matches
	}
	if states == nil {
		states = []string{}
	}
	heldDests := f.Held
	if heldDests == nil {
		heldDests = []string{}
	}
	var until *time.Time
	if !f.Until.IsZero() {
		u := f.Until.Truncate(time.Millisecond).Add(time.Millisecond)
		until = &u
	}
	args := []any{f.Destination, states, held, heldDests, f.Type, f.Source, optTime(f.Since.Truncate(time.Millisecond)), until, f.Search, f.Reason}
	args = append(args, db.seal.UserKey(f.Search), db.seal.SearchKey(f.Search))
	ctx := context.Background()
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_id`+logWhere, args...).Scan(&p.Total); err != nil {
		return p, err
	}
	if p.Total <= f.Offset {
		return p, nil
	}
	rows, err := db.pool.Query(ctx, `SELECT d.doc, e.doc FROM deliveries d JOIN events e ON e.id = d.event_id`+logWhere+`
		ORDER BY e.received_at DESC, e.id DESC, d.destination
		OFFSET $13 LIMIT $14`, append(args, f.Offset, f.Limit)...)
	if err != nil {
		return p, err
	}
	defer rows.Close()
	for rows.Next() {
		var ddoc, edoc []byte
		if err := rows.Scan(&ddoc, &edoc); err != nil {
			return p, err
		}
		var d store.Delivery
		var e mapping.Event
		if err := json.Unmarshal(ddoc, &d); err != nil {
			return p, err
		}
		if err := db.seal.DecodeEvent(edoc, &e); err != nil {
			return p, err
		}
		p.Entries = append(p.Entries, store.NewLogEntry(d, &e))
	}
	return p, rows.Err()
}

// DeadGroups counts dead deliveries per destination and reason (see
// store.DB.DeadGroups), from the partial index of dead deliveries. The
// reason column also holds the last error, so groups read the document's.
func (db *DB) DeadGroups(destination string) ([]store.DeadGroup, error) {
	rows, err := db.pool.Query(context.Background(), `WITH dead AS (
		    SELECT key, destination, convert_from(doc, 'UTF8')::jsonb AS j FROM deliveries
		    WHERE state = 'dead' AND ($1 = '' OR destination = $1)),
		  g AS (
		    SELECT count(*) AS n, max((j ->> 'updated_at')::timestamptz) AS newest, min(key) AS k
		    FROM dead GROUP BY destination, coalesce(j ->> 'reason', ''))
		SELECT g.n, g.newest, d.doc FROM g JOIN deliveries d ON d.key = g.k`, destination)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	groups := map[[2]string]*store.DeadGroup{}
	for rows.Next() {
		var n int
		var newest *time.Time
		var doc []byte
		if err := rows.Scan(&n, &newest, &doc); err != nil {
			return nil, err
		}
		var s store.Delivery
		if err := json.Unmarshal(doc, &s); err != nil {
			return nil, err
		}
		g := &store.DeadGroup{Destination: s.Destination, Reason: s.Reason, Count: n, Sample: s}
		if newest != nil {
			g.Newest = newest.UTC()
		}
		groups[[2]string{s.Destination, s.Reason}] = g
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return store.SortDeadGroups(groups), nil
}
