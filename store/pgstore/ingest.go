package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// Ingest stores a verified notification, maps it and stores its events,
// states and deliveries in one transaction (see the package comment). It
// returns after COMMIT returned.
func (db *DB) Ingest(ctx context.Context, n *mapping.Notification) (store.IngestResult, error) {
	if n.Source == "" || n.Key == "" {
		return store.IngestResult{}, errors.New("store: notification without source or key")
	}
	if n.ReceivedAt.IsZero() {
		n.ReceivedAt = db.opts.Now()
	}
	var res store.IngestResult
	var dests []string
	// Map outside the transaction against the states as they are, then
	// write only if the states the mapping read are unchanged (a conflict
	// maps again); after three conflicts in a row map inside the
	// transaction under the states' advisory locks.
	deferred := n.Deferred && n.Enriched == nil
	err := errStale
	for attempt := 0; attempt < 4 && errors.Is(err, errStale); attempt++ {
		var out mapping.Result
		var mapErr error
		snap := &snapStates{ctx: ctx, db: db, read: map[string]int64{}, docs: map[string]*mapping.State{}}
		mapped := *n
		if !deferred {
			out, mapErr = db.opts.Map(&mapped, snap)
			if snap.err != nil {
				return store.IngestResult{}, snap.err
			}
		}
		err = db.inPipe(ctx, func(tx dbtx) error {
			res, dests = store.IngestResult{}, nil
			dup, err := db.claimInbox(ctx, tx, n, &res)
			if dup || err != nil {
				return err
			}
			item := mapped
			if deferred {
				item.Status = mapping.StatusEnriching
				res.Status = item.Status
				return putInbox(ctx, tx, &item)
			}
			dests, err = db.storeMapped(ctx, tx, &item, out, mapErr, &res, true, snap.read)
			return err
		})
	}
	if errors.Is(err, errStale) {
		err = db.inPipe(ctx, func(tx dbtx) error {
			res, dests = store.IngestResult{}, nil
			dup, err := db.claimInbox(ctx, tx, n, &res)
			if dup || err != nil {
				return err
			}
			item := *n
			dests, err = db.mapAndStore(ctx, tx, &item, &res, true)
			return err
		})
	}
	if errors.Is(err, errDuplicate) {
		return res, nil
	}
	if err != nil {
		return store.IngestResult{}, err
	}
	db.woke(dests)
	return res, nil
}

// claimInbox inserts the inbox row and the alternative ids. When the
// notification is already known (by any id) it reports a duplicate with
// the stored item; the caller's transaction then writes nothing.
func (db *DB) claimInbox(ctx context.Context, tx dbtx, n *mapping.Notification, res *store.IngestResult) (bool, error) {
	// One round trip: the inbox row, then each alternative id. Only the
	// inbox insert's outcome matters when it conflicts; the alt inserts of
	// a duplicate are rolled back with the transaction.
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO inbox (source, key, received_at, status, doc) VALUES ($1, $2, $3, '', '\x')
		ON CONFLICT (source, key) DO NOTHING`, n.Source, n.Key, n.ReceivedAt)
	// An alt key listed twice is this notification's own: insert it once.
	alts := dedupe(n.AltKeys)
	for _, a := range alts {
		b.Queue(`INSERT INTO inbox_alt (source, alt_key, key) VALUES ($1, $2, $3) ON CONFLICT (source, alt_key) DO NOTHING`, n.Source, a, n.Key)
	}
	br := tx.SendBatch(ctx, b)
	tag, err := br.Exec()
	if err != nil {
		br.Close()
		return false, err
	}
	existing := ""
	if tag.RowsAffected() == 0 {
		existing = n.Key
	}
	for _, a := range alts {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return false, err
		}
		if existing == "" && tag.RowsAffected() == 0 {
			existing = "alt:" + a
		}
	}
	if err := br.Close(); err != nil {
		return false, err
	}
	if existing == "" {
		return false, nil
	}
	if alt, ok := strings.CutPrefix(existing, "alt:"); ok {
		if err := tx.QueryRow(ctx, `SELECT key FROM inbox_alt WHERE source = $1 AND alt_key = $2`, n.Source, alt).Scan(&existing); err != nil {
			return false, err
		}
	}
	var doc []byte
	if err := tx.QueryRow(ctx, `SELECT doc FROM inbox WHERE source = $1 AND key = $2`, n.Source, existing).Scan(&doc); err != nil {
		return false, err
	}
	var ex mapping.Notification
	if err := json.Unmarshal(doc, &ex); err != nil {
		return false, fmt.Errorf("pgstore: inbox %s/%s unreadable: %w", n.Source, existing, err)
	}
	res.Duplicate, res.Existing, res.Status = true, &ex, ex.Status
	// Nothing of this transaction may stay: an inserted inbox row or alt
	// key would be a half-written record.
	return true, errDuplicate
}

// errDuplicate rolls back a duplicate's transaction; Ingest reports the
// duplicate, not an error.
var errDuplicate = errors.New("duplicate")

func putInbox(ctx context.Context, tx dbtx, n *mapping.Notification) error {
	doc, err := json.Marshal(n)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE inbox SET status = $3, doc = $4 WHERE source = $1 AND key = $2`, n.Source, n.Key, n.Status, doc)
	return err
}

// txStates reads subscription states inside an ingest transaction, each
// after taking its key's advisory lock, so concurrent notifications of one
// subscription map one after the other.
type txStates struct {
	ctx   context.Context
	tx    dbtx
	read  map[string]*mapping.State
	found map[string]bool
	err   error
}

func (s *txStates) State(key string) (mapping.State, bool) {
	if st, ok := s.read[key]; ok {
		return copyState(st), s.found[key]
	}
	if s.err != nil {
		return mapping.State{}, false
	}
	// One round trip, two statements: the lock first, then the read, whose
	// READ COMMITTED snapshot is taken after the lock is held, so it sees
	// what the previous holder committed.
	b := &pgx.Batch{}
	b.Queue("SELECT pg_advisory_xact_lock($1)", lockKey("state:"+key))
	b.Queue("SELECT doc FROM states WHERE key = $1", key)
	br := s.tx.SendBatch(s.ctx, b)
	var doc []byte
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&doc)
	}
	if cerr := br.Close(); err == nil || errors.Is(err, pgx.ErrNoRows) && cerr != nil {
		err = cerr
	}
	var st mapping.State
	found := true
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		found = false
	case err != nil:
		s.err = err
		return mapping.State{}, false
	default:
		if err := json.Unmarshal(doc, &st); err != nil {
			s.err = fmt.Errorf("pgstore: state %s unreadable: %w", key, err)
			return mapping.State{}, false
		}
	}
	s.read[key], s.found[key] = &st, found
	return copyState(&st), found
}

// copyState gives the mapping its own maps (mapping.Map copies too; this
// keeps the cache clean whatever a mapping does).
func copyState(s *mapping.State) mapping.State {
	c := *s
	c.Identifiers = cloneMap(s.Identifiers)
	c.Values = cloneMap(s.Values)
	return c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// mapAndStore maps n and writes, in two round trips, its events, then
// their deliveries, the states, the queued erasure, the inbox document
// (with n's new status) and the wake-up of the destinations that got work,
// which it returns.
func (db *DB) mapAndStore(ctx context.Context, tx dbtx, n *mapping.Notification, res *store.IngestResult, writeStates bool) ([]string, error) {
	st := &txStates{ctx: ctx, tx: tx, read: map[string]*mapping.State{}, found: map[string]bool{}}
	out, err := db.opts.Map(n, st)
	if st.err != nil {
		return nil, st.err
	}
	return db.storeMapped(ctx, tx, n, out, err, res, writeStates, nil)
}

// storeMapped writes a mapping's outcome (see mapAndStore). With read
// (the versions of the states a mapping made outside the transaction
// read; 0: the state did not exist), the states are written only if
// those versions still hold, and errStale reports that one changed.
func (db *DB) storeMapped(ctx context.Context, tx dbtx, n *mapping.Notification, out mapping.Result, err error, res *store.IngestResult, writeStates bool, read map[string]int64) ([]string, error) {
	if err != nil {
		if !store.MappingFailed(err) {
			return nil, fmt.Errorf("store: mapping %s/%s: %w", n.Source, n.Key, err)
		}
		n.Status, n.Reason = mapping.StatusFailed, err.Error()
		res.Status, res.Reason = n.Status, n.Reason
		db.opts.Logger.Warn("mapping failed; kept for reprocess", "source", n.Source, "key", n.Key, "err", err)
		return nil, putInbox(ctx, tx, n)
	}
	now := db.opts.Now()
	for i := range out.Events {
		e := &out.Events[i]
		if e.ID == "" {
			return nil, fmt.Errorf("store: mapping %s produced an event without id", n.Source)
		}
		if !containsStr(n.EventIDs, e.ID) {
			n.EventIDs = append(n.EventIDs, e.ID)
		}
		if e.ReceivedAt.IsZero() {
			e.ReceivedAt = n.ReceivedAt
		}
	}
	if err := db.fillUsers(ctx, tx, out.Events); err != nil {
		return nil, err
	}
	fresh := make([]bool, len(out.Events))
	checks := 0 // state writes and checks queued ahead of the events
	b := &pgx.Batch{}
	if read != nil {
		var err error
		if checks, err = queueStateChecks(b, out.States, read, writeStates); err != nil {
			return nil, err
		}
	}
	if len(out.Events) > 0 || checks > 0 {
		for i := range out.Events {
			e := &out.Events[i]
			doc, err := json.Marshal(e)
			if err != nil {
				return nil, err
			}
			b.Queue(`INSERT INTO events (id, received_at, source, type, app_id, environment, app_user_id, subscription_id, source_event_id, doc)
				VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), NULLIF($8, ''), $9, $10) ON CONFLICT (id) DO NOTHING`,
				e.ID, e.ReceivedAt, e.Source, string(e.Type), e.AppID, e.Environment, e.User.AppUserID, e.SubscriptionID, e.SourceEventID, doc)
		}
		br := tx.SendBatch(ctx, b)
		for i := 0; i < checks; i++ {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return nil, err
			}
			if tag.RowsAffected() != 1 {
				br.Close()
				return nil, errStale
			}
		}
		for i := range out.Events {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return nil, err
			}
			fresh[i] = tag.RowsAffected() == 1
		}
		if err := br.Close(); err != nil {
			return nil, err
		}
	}
	w := &pgx.Batch{}
	var dests []string
	for i := range out.Events {
		e := &out.Events[i]
		if !fresh[i] {
			res.Repeats++ // a fact reported twice: stored and delivered once
			continue
		}
		for _, dest := range db.opts.Route(e) {
			d := store.Delivery{
				Key: e.ID + "|" + dest, EventID: e.ID, Destination: dest, State: store.StatePending,
				CreatedAt: now, UpdatedAt: now, NextAtMs: now.UnixMilli(), UserKey: e.User.AppUserID,
			}
			if db.opts.OrderKey != nil {
				if k := db.opts.OrderKey(dest, e); k != "" {
					d.OrderKey, d.OrderAtMs = k, e.OccurredAt.UnixMilli()
				}
			}
			if err := queueDelivery(w, &d); err != nil {
				return nil, err
			}
			dests = append(dests, dest)
		}
		res.Events = append(res.Events, *e)
	}
	if writeStates && out.Erase != nil {
		job, err := store.NewErasureJob(out.Erase, now)
		if err != nil {
			return nil, err
		}
		doc, err := json.Marshal(&job)
		if err != nil {
			return nil, err
		}
		w.Queue(`INSERT INTO erasures (inbox_source, inbox_key, queued_at, doc) VALUES ($1, $2, $3, $4)
			ON CONFLICT (inbox_source, inbox_key) DO UPDATE SET doc = EXCLUDED.doc`, n.Source, n.Key, now, doc)
	}
	if writeStates && read == nil {
		for i := range out.States {
			if err := queueState(w, &out.States[i]); err != nil {
				return nil, err
			}
		}
	}
	n.Status, n.Reason = mapping.StatusMapped, ""
	if len(out.Events) == 0 {
		n.Status, n.Reason = mapping.StatusIgnored, out.Ignored
	}
	res.Status, res.Reason = n.Status, n.Reason
	if err := queueInbox(w, n); err != nil {
		return nil, err
	}
	if len(dests) > 0 {
		w.Queue("SELECT pg_notify('"+notifyChannel+"', d) FROM unnest($1::text[]) AS d", dedupe(dests))
	}
	return dests, commitWith(ctx, tx, w)
}

// fillUsers gives the events the identifiers they lack from the identity
// store, in one query.
func (db *DB) fillUsers(ctx context.Context, tx dbtx, events []mapping.Event) error {
	var ids []string
	for i := range events {
		if id := events[i].User.AppUserID; id != "" && !containsStr(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, "SELECT doc FROM users WHERE app_user_id = ANY($1)", ids)
	if err != nil {
		return err
	}
	users, err := collectJSON[store.User](rows)
	if err != nil {
		return err
	}
	for _, u := range users {
		for i := range events {
			if events[i].User.AppUserID == u.AppUserID {
				u.Fill(&events[i])
			}
		}
	}
	return nil
}

// errStale reports that a state a mapping read outside the transaction has
// changed since: the notification is mapped again.
var errStale = errors.New("pgstore: a subscription state changed while mapping; mapping again")

// queueStateChecks queues, for a mapping made against read versions, each
// state write conditioned on its version (an insert on its absence) and,
// for each state read but not written, a check that it is unchanged (a
// share lock holds it so until the commit). Each key's statement follows
// that key's advisory lock, the one the in-transaction mapping takes, so
// the two schemes order themselves; keys go in sorted order. Each queued
// statement must affect or return exactly one row; it returns how many it
// queued.
func queueStateChecks(b *pgx.Batch, states []mapping.State, read map[string]int64, writeStates bool) (int, error) {
	type stmt struct {
		sql  string
		args []any
	}
	byKey := map[string]stmt{}
	if writeStates {
		for i := range states {
			s := &states[i]
			if s.Key == "" {
				continue
			}
			doc, err := json.Marshal(s)
			if err != nil {
				return 0, err
			}
			v, wasRead := read[s.Key]
			switch {
			case !wasRead: // written without being read: last writer wins, as before
				byKey[s.Key] = stmt{`INSERT INTO states (key, app_user_id, doc) VALUES ($1, NULLIF($2, ''), $3)
					ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, app_user_id = EXCLUDED.app_user_id, version = states.version + 1`,
					[]any{s.Key, s.AppUserID, doc}}
			case v == 0:
				byKey[s.Key] = stmt{`INSERT INTO states (key, app_user_id, doc) VALUES ($1, NULLIF($2, ''), $3) ON CONFLICT (key) DO NOTHING`,
					[]any{s.Key, s.AppUserID, doc}}
			default:
				byKey[s.Key] = stmt{`UPDATE states SET doc = $2, app_user_id = NULLIF($3, ''), version = version + 1 WHERE key = $1 AND version = $4`,
					[]any{s.Key, doc, s.AppUserID, v}}
			}
		}
	}
	for key, v := range read {
		if _, written := byKey[key]; written {
			continue
		}
		if v == 0 {
			// Read as absent and not written: a state another notification
			// creates meanwhile is ordered after this one.
			continue
		}
		byKey[key] = stmt{`SELECT 1 FROM states WHERE key = $1 AND version = $2 FOR SHARE`, []any{key, v}}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.Queue("SELECT pg_advisory_xact_lock($1)", lockKey("state:"+k))
		st := byKey[k]
		b.Queue(st.sql, st.args...)
	}
	return 2 * len(keys), nil
}

// snapStates reads states for a mapping made outside any transaction and
// records the version of each (0: absent).
type snapStates struct {
	ctx  context.Context
	db   *DB
	read map[string]int64
	docs map[string]*mapping.State
	err  error
}

func (s *snapStates) State(key string) (mapping.State, bool) {
	if st, ok := s.docs[key]; ok {
		if st == nil {
			return mapping.State{}, false
		}
		return copyState(st), true
	}
	if s.err != nil {
		return mapping.State{}, false
	}
	var doc []byte
	var v int64
	err := s.db.pool.QueryRow(s.ctx, "SELECT doc, version FROM states WHERE key = $1", key).Scan(&doc, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		s.read[key], s.docs[key] = 0, nil
		return mapping.State{}, false
	}
	if err != nil {
		s.err = err
		return mapping.State{}, false
	}
	var st mapping.State
	if err := json.Unmarshal(doc, &st); err != nil {
		s.err = fmt.Errorf("pgstore: state %s unreadable: %w", key, err)
		return mapping.State{}, false
	}
	s.read[key], s.docs[key] = v, &st
	return copyState(&st), true
}

func queueState(b *pgx.Batch, s *mapping.State) error {
	if s.Key == "" {
		return nil
	}
	doc, err := json.Marshal(s)
	if err != nil {
		return err
	}
	b.Queue(`INSERT INTO states (key, app_user_id, doc) VALUES ($1, NULLIF($2, ''), $3)
		ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, app_user_id = EXCLUDED.app_user_id, version = states.version + 1`,
		s.Key, s.AppUserID, doc)
	return nil
}

func queueInbox(b *pgx.Batch, n *mapping.Notification) error {
	doc, err := json.Marshal(n)
	if err != nil {
		return err
	}
	b.Queue(`UPDATE inbox SET status = $3, doc = $4 WHERE source = $1 AND key = $2`, n.Source, n.Key, n.Status, doc)
	return nil
}

// queueDelivery queues the insert of a new delivery row.
func queueDelivery(b *pgx.Batch, d *store.Delivery) error {
	doc, err := json.Marshal(d)
	if err != nil {
		return err
	}
	b.Queue(`INSERT INTO deliveries (key, event_id, destination, state, next_at_ms, order_key, order_at_ms, app_user_id, created_at, reason, doc)
		VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7, NULLIF($8, ''), $9, $10, $11)`,
		d.Key, d.EventID, d.Destination, d.State, nullMs(d), d.OrderKey, d.OrderAtMs, d.UserKey, d.CreatedAt, reasonText(d), doc)
	return nil
}

func putState(ctx context.Context, tx dbtx, s *mapping.State) error {
	if s.Key == "" {
		return nil
	}
	doc, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO states (key, app_user_id, doc) VALUES ($1, NULLIF($2, ''), $3)
		ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, app_user_id = EXCLUDED.app_user_id, version = states.version + 1`,
		s.Key, s.AppUserID, doc)
	return err
}

// updateDelivery writes a changed delivery and ends any lease on it.
func updateDelivery(ctx context.Context, tx dbtx, d *store.Delivery) error {
	doc, err := json.Marshal(d)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE deliveries SET state = $2, next_at_ms = $3, reason = $4, doc = $5, leased_until = NULL, lease_owner = NULL WHERE key = $1`,
		d.Key, d.State, nullMs(d), reasonText(d), doc)
	return err
}

// nullMs is the due column: NULL once the delivery is final.
func nullMs(d *store.Delivery) *int64 {
	if store.Final(d.State) {
		return nil
	}
	v := d.NextAtMs
	return &v
}

// reasonText is what the reason filter searches.
func reasonText(d *store.Delivery) string { return d.Reason + " " + d.LastError }

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func getUser(ctx context.Context, q querier, id string) (store.User, bool, error) {
	var doc []byte
	err := q.QueryRow(ctx, "SELECT doc FROM users WHERE app_user_id = $1", id).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.User{}, false, nil
	}
	if err != nil {
		return store.User{}, false, err
	}
	var u store.User
	return u, true, json.Unmarshal(doc, &u)
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// State reads a subscription state outside any ingest.
func (db *DB) State(key string) (mapping.State, bool, error) {
	var doc []byte
	err := db.pool.QueryRow(context.Background(), "SELECT doc FROM states WHERE key = $1", key).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return mapping.State{}, false, nil
	}
	if err != nil {
		return mapping.State{}, false, err
	}
	var st mapping.State
	return st, true, json.Unmarshal(doc, &st)
}

// Enrich stores a deferred notification's enrichment and maps it.
func (db *DB) Enrich(ctx context.Context, source, key string, enriched []byte) (store.IngestResult, error) {
	var res store.IngestResult
	var dests []string
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		res, dests = store.IngestResult{}, nil
		n, err := lockInbox(ctx, tx, source, key)
		if err != nil {
			return err
		}
		if n.Status != mapping.StatusEnriching {
			res.Duplicate, res.Existing, res.Status = true, n, n.Status
			return nil
		}
		n.Enriched = enriched
		dests, err = db.mapAndStore(ctx, tx, n, &res, true)
		return err
	})
	if err != nil {
		return store.IngestResult{}, err
	}
	db.woke(dests)
	return res, nil
}

// lockInbox reads an inbox item for update.
func lockInbox(ctx context.Context, tx dbtx, source, key string) (*mapping.Notification, error) {
	var doc []byte
	err := tx.QueryRow(ctx, "SELECT doc FROM inbox WHERE source = $1 AND key = $2 FOR UPDATE", source, key).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var n mapping.Notification
	if err := json.Unmarshal(doc, &n); err != nil {
		return nil, fmt.Errorf("pgstore: inbox %s/%s unreadable: %w", source, key, err)
	}
	return &n, nil
}

// Pending lists inbox items of source waiting for enrichment, oldest first.
func (db *DB) Pending(source string, limit int) ([]mapping.Notification, error) {
	rows, err := db.pool.Query(context.Background(), "SELECT doc FROM inbox WHERE source = $1 AND status = 'enriching' ORDER BY received_at LIMIT $2", source, limit)
	if err != nil {
		return nil, err
	}
	return collectJSON[mapping.Notification](rows)
}

// collectJSON decodes a one-column result of documents.
func collectJSON[T any](rows pgx.Rows) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		var v T
		if err := json.Unmarshal(doc, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Reprocess re-maps stored inbox items (see store.DB.Reprocess).
func (db *DB) Reprocess(ctx context.Context, f store.ReprocessFilter) (store.ReprocessResult, error) {
	var r store.ReprocessResult
	statuses := f.Statuses
	if len(statuses) == 0 {
		statuses = []string{mapping.StatusFailed, mapping.StatusIgnored}
	}
	since, until := f.Since, f.Until
	if since.IsZero() {
		since = time.Unix(0, 0)
	}
	if until.IsZero() {
		until = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM inbox WHERE received_at >= $1 AND received_at <= $2", since, until).Scan(&r.Scanned); err != nil {
		return r, err
	}
	rows, err := db.pool.Query(ctx, `SELECT source, key FROM inbox WHERE received_at >= $1 AND received_at <= $2
		AND ($3 = '' OR source = $3) AND status = ANY($4) ORDER BY received_at, source, key`, since, until, f.Source, statuses)
	if err != nil {
		return r, err
	}
	type ik struct{ source, key string }
	var keys []ik
	for rows.Next() {
		var k ik
		if err := rows.Scan(&k.source, &k.key); err != nil {
			rows.Close()
			return r, err
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}
	r.Matched = len(keys)
	if f.DryRun {
		return r, nil
	}
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		var res store.IngestResult
		var dests []string
		err := db.inTx(ctx, func(tx pgx.Tx) error {
			res, dests = store.IngestResult{}, nil
			n, err := lockInbox(ctx, tx, k.source, k.key)
			if err != nil {
				return err
			}
			writeStates := n.Status == mapping.StatusFailed
			dests, err = db.mapAndStore(ctx, tx, n, &res, writeStates)
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return r, err
		}
		db.woke(dests)
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
	var doc []byte
	err := db.pool.QueryRow(context.Background(), "SELECT doc FROM inbox WHERE source = $1 AND key = $2", source, key).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var n mapping.Notification
	return &n, json.Unmarshal(doc, &n)
}

// NotificationOf returns the inbox item that produced an event.
func (db *DB) NotificationOf(e *mapping.Event) (*mapping.Notification, error) {
	return db.Notification(e.Source, e.SourceEventID)
}
