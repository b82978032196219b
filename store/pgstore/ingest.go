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
	n = db.seal.WithHashedAltKeys(n)
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
		// The inbox row is inserted with its final document: what the
		// mapping makes of the notification is known before the
		// transaction, and the keys sealing its records are made in one
		// round trip ahead of it.
		final := mapped
		var subject string
		if deferred {
			final.Status, subject = mapping.StatusEnriching, store.InboxSubject(n.Source, n.Key)
		} else if subject, err = settle(&final, &out, mapErr); err != nil {
			// A mapping error that fails the ingest, reported as before
			// once the transaction has found the notification is new.
			err = db.inPipe(ctx, func(tx dbtx) error {
				res, dests = store.IngestResult{}, nil
				dup, err := db.claimInbox(ctx, tx, n, &res)
				if dup || err != nil {
					return err
				}
				item := mapped
				_, err = db.storeMapped(ctx, tx, &item, nil, out, mapErr, &res, true, snap.read)
				return err
			})
			break
		}
		// The events' users are read before the transaction, from the
		// identity records as they are, as the embedded store does.
		if err := db.fillUsers(ctx, db.pool, out.Events); err != nil {
			return store.IngestResult{}, err
		}
		if err := db.keys.MakeKeys(ctx, db.seal.KIDsFor(&final, subject, out.Events, out.States)); err != nil {
			return store.IngestResult{}, err
		}
		doc, encErr := db.seal.EncodeNotification(&final, db.seal.KID(subject))
		if encErr != nil {
			return store.IngestResult{}, encErr
		}
		err = db.inPipe(ctx, func(tx dbtx) error {
			res, dests = store.IngestResult{}, nil
			if deferred {
				dup, err := db.claimInboxDoc(ctx, tx, n, final.Status, doc, &res)
				if !dup && err == nil {
					res.Status = final.Status
				}
				return err
			}
			item := final
			claim := &inboxClaim{n: n, status: final.Status, doc: doc}
			dests, err = db.storeSettled(ctx, tx, &item, nil, out, mapErr, &res, true, snap.read, claim)
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
			dests, err = db.mapAndStore(ctx, tx, &item, nil, &res, true)
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
	return db.claimInboxDoc(ctx, tx, n, "", []byte{}, res)
}

// inboxClaim is the insert of a new inbox row with its alternative ids,
// queued in a batch of a transaction (queue) and read back from its
// results (read).
type inboxClaim struct {
	n      *mapping.Notification
	status string
	doc    []byte
	alts   []string
}

// queue queues the inbox row, then each alternative id. Only the inbox
// insert's outcome matters when it conflicts; the alt inserts of a
// duplicate are rolled back with the transaction.
func (c *inboxClaim) queue(b *pgx.Batch) {
	n := c.n
	b.Queue(`INSERT INTO inbox (source, key, received_at, status, doc) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (source, key) DO NOTHING`, n.Source, n.Key, n.ReceivedAt, c.status, c.doc)
	// An alt key listed twice is this notification's own: insert it once.
	c.alts = dedupe(n.AltKeys)
	for _, a := range c.alts {
		b.Queue(`INSERT INTO inbox_alt (source, alt_key, key) VALUES ($1, $2, $3) ON CONFLICT (source, alt_key) DO NOTHING`, n.Source, a, n.Key)
	}
}

// read reads the queued inserts' results: the id the notification is
// already known by ("alt:" and an alternative id), or "" when it is new.
func (c *inboxClaim) read(br pgx.BatchResults) (string, error) {
	tag, err := br.Exec()
	if err != nil {
		return "", err
	}
	existing := ""
	if tag.RowsAffected() == 0 {
		existing = c.n.Key
	}
	for _, a := range c.alts {
		tag, err := br.Exec()
		if err != nil {
			return "", err
		}
		if existing == "" && tag.RowsAffected() == 0 {
			existing = "alt:" + a
		}
	}
	return existing, nil
}

// claimInboxDoc is claimInbox inserting the inbox row with its status and
// document (claimInbox: empty, written later in the transaction), in one
// round trip.
func (db *DB) claimInboxDoc(ctx context.Context, tx dbtx, n *mapping.Notification, status string, inboxDoc []byte, res *store.IngestResult) (bool, error) {
	c := &inboxClaim{n: n, status: status, doc: inboxDoc}
	b := &pgx.Batch{}
	c.queue(b)
	br := tx.SendBatch(ctx, b)
	existing, err := c.read(br)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	return db.known(ctx, tx, n, existing, res)
}

// known reports a notification already known as existing (see
// inboxClaim.read; "" when it is new) as a duplicate with the stored item,
// and errDuplicate so that the caller's transaction writes nothing.
func (db *DB) known(ctx context.Context, tx dbtx, n *mapping.Notification, existing string, res *store.IngestResult) (bool, error) {
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
	if err := db.seal.DecodeNotification(doc, &ex); err != nil {
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

// putInbox rewrites an inbox item under the key its previous version prev
// was sealed with, else subject's.
func (db *DB) putInbox(ctx context.Context, tx dbtx, n *mapping.Notification, prev []byte, subject string) error {
	doc, err := db.seal.ReencodeNotification(n, prev, subject)
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
	seal  *store.Sealer
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
		if err := s.seal.DecodeState(doc, &st); err != nil {
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
// prev is the stored inbox document n was read from (nil: a new item).
func (db *DB) mapAndStore(ctx context.Context, tx dbtx, n *mapping.Notification, prev []byte, res *store.IngestResult, writeStates bool) ([]string, error) {
	st := &txStates{seal: db.seal, ctx: ctx, tx: tx, read: map[string]*mapping.State{}, found: map[string]bool{}}
	out, err := db.opts.Map(n, st)
	if st.err != nil {
		return nil, st.err
	}
	return db.storeMapped(ctx, tx, n, prev, out, err, res, writeStates, nil)
}

// storeMapped writes a mapping's outcome (see mapAndStore). With read
// (the versions of the states a mapping made outside the transaction
// read; 0: the state did not exist), the states are written only if
// those versions still hold, and errStale reports that one changed.
func (db *DB) storeMapped(ctx context.Context, tx dbtx, n *mapping.Notification, prev []byte, out mapping.Result, err error, res *store.IngestResult, writeStates bool, read map[string]int64) ([]string, error) {
	return db.storeSettled(ctx, tx, n, prev, out, err, res, writeStates, read, nil)
}

// settle sets what a mapping's outcome makes of a notification: its
// status, reason and event ids (and the events' receive time), and
// returns the subject it is stored under. A mapping error that does not
// fail the notification (store.MappingFailed) is returned.
func settle(n *mapping.Notification, out *mapping.Result, err error) (string, error) {
	if err != nil {
		if !store.MappingFailed(err) {
			return "", fmt.Errorf("store: mapping %s/%s: %w", n.Source, n.Key, err)
		}
		n.Status, n.Reason = mapping.StatusFailed, err.Error()
		return store.NotificationSubject(n, nil, false), nil
	}
	for i := range out.Events {
		e := &out.Events[i]
		if e.ID == "" {
			return "", fmt.Errorf("store: mapping %s produced an event without id", n.Source)
		}
		if !containsStr(n.EventIDs, e.ID) {
			n.EventIDs = append(n.EventIDs, e.ID)
		}
		if e.ReceivedAt.IsZero() {
			e.ReceivedAt = n.ReceivedAt
		}
	}
	n.Status, n.Reason = mapping.StatusMapped, ""
	var first *mapping.Event
	if len(out.Events) > 0 {
		first = &out.Events[0]
	} else {
		n.Status, n.Reason = mapping.StatusIgnored, out.Ignored
	}
	return store.NotificationSubject(n, first, out.Erase != nil), nil
}

// storeSettled is storeMapped. With claim, the inbox row is inserted with
// its final document in the transaction's first batch, ahead of the state
// checks and the events (a duplicate is found there and the rest rolled
// back), not written at the end, and the events' users were filled before
// the transaction: the transaction is two round trips.
func (db *DB) storeSettled(ctx context.Context, tx dbtx, n *mapping.Notification, prev []byte, out mapping.Result, err error, res *store.IngestResult, writeStates bool, read map[string]int64, claim *inboxClaim) ([]string, error) {
	subject, err := settle(n, &out, err)
	if err != nil {
		return nil, err
	}
	res.Status, res.Reason = n.Status, n.Reason
	if n.Status == mapping.StatusFailed {
		if claim != nil {
			if dup, err := db.claimInboxDoc(ctx, tx, claim.n, claim.status, claim.doc, res); dup || err != nil {
				return nil, err
			}
		}
		db.opts.Logger.Warn("mapping failed; kept for reprocess", "source", n.Source, "key", n.Key, "err", n.Reason)
		if claim != nil {
			return nil, nil
		}
		return nil, db.putInbox(ctx, tx, n, prev, subject)
	}
	now := db.opts.Now()
	if claim == nil {
		if err := db.fillUsers(ctx, tx, out.Events); err != nil {
			return nil, err
		}
	}
	fresh := make([]bool, len(out.Events))
	checks := 0 // state writes and checks queued ahead of the events
	b := &pgx.Batch{}
	if claim != nil {
		claim.queue(b)
	}
	if read != nil {
		var err error
		if checks, err = db.queueStateChecks(b, out.States, read, writeStates); err != nil {
			return nil, err
		}
	}
	if len(out.Events) > 0 || checks > 0 || claim != nil {
		for i := range out.Events {
			e := &out.Events[i]
			if err := db.queueEvent(b, e, false); err != nil {
				return nil, err
			}
		}
		br := tx.SendBatch(ctx, b)
		if claim != nil {
			if existing, err := claim.read(br); err != nil || existing != "" {
				if cerr := br.Close(); err == nil {
					err = cerr
				}
				if err == nil {
					_, err = db.known(ctx, tx, claim.n, existing, res)
				}
				return nil, err
			}
		}
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
			d := db.seal.NewDelivery(e, dest, now, db.opts.OrderKey)
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
		doc, err := db.seal.EncodeJob(&job, n.Source, n.Key)
		if err != nil {
			return nil, err
		}
		w.Queue(`INSERT INTO erasures (inbox_source, inbox_key, queued_at, doc) VALUES ($1, $2, $3, $4)
			ON CONFLICT (inbox_source, inbox_key) DO UPDATE SET doc = EXCLUDED.doc`, n.Source, n.Key, now, doc)
	}
	if writeStates && read == nil {
		for i := range out.States {
			if err := db.queueState(w, &out.States[i]); err != nil {
				return nil, err
			}
		}
	}
	if claim == nil {
		if err := db.queueInbox(w, n, prev, subject); err != nil {
			return nil, err
		}
	}
	if len(dests) > 0 {
		w.Queue(notifySQL, dedupe(dests), db.opts.Owner)
	}
	return dests, commitWith(ctx, tx, w)
}

// userOneSQL reads one identity record (fillUsers).
const userOneSQL = "SELECT doc FROM users WHERE user_key = $1"

// fillUsers gives the events the identifiers they lack from the identity
// store, in one query.
func (db *DB) fillUsers(ctx context.Context, tx dbtx, events []mapping.Event) error {
	var ids []string
	for i := range events {
		if id := events[i].User.AppUserID; id != "" && !containsStr(ids, db.seal.UserKey(id)) {
			ids = append(ids, db.seal.UserKey(id))
		}
	}
	if len(ids) == 0 {
		return nil
	}
	// One identity (the usual case) is looked up by equality: PostgreSQL
	// keeps planning "= ANY($1)" afresh on every execution (its generic
	// plan assumes ten array elements and always costs more than a custom
	// plan for one), while "= $1" settles on its generic plan after five.
	var rows pgx.Rows
	var err error
	if len(ids) == 1 {
		rows, err = tx.Query(ctx, userOneSQL, ids[0])
	} else {
		rows, err = tx.Query(ctx, "SELECT doc FROM users WHERE user_key = ANY($1)", ids)
	}
	if err != nil {
		return err
	}
	users, err := collectSealed(rows, db.seal.DecodeUser)
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
func (db *DB) queueStateChecks(b *pgx.Batch, states []mapping.State, read map[string]int64, writeStates bool) (int, error) {
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
			doc, err := db.seal.EncodeState(s)
			if err != nil {
				return 0, err
			}
			uk := db.seal.UserKey(s.AppUserID)
			v, wasRead := read[s.Key]
			switch {
			case !wasRead: // written without being read: last writer wins, as before
				byKey[s.Key] = stmt{`INSERT INTO states (key, user_key, doc) VALUES ($1, NULLIF($2, ''), $3)
					ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, user_key = EXCLUDED.user_key, version = states.version + 1`,
					[]any{s.Key, uk, doc}}
			case v == 0:
				byKey[s.Key] = stmt{`INSERT INTO states (key, user_key, doc) VALUES ($1, NULLIF($2, ''), $3) ON CONFLICT (key) DO NOTHING`,
					[]any{s.Key, uk, doc}}
			default:
				byKey[s.Key] = stmt{`UPDATE states SET doc = $2, user_key = NULLIF($3, ''), version = version + 1 WHERE key = $1 AND version = $4`,
					[]any{s.Key, doc, uk, v}}
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
	if err := s.db.seal.DecodeState(doc, &st); err != nil {
		s.err = fmt.Errorf("pgstore: state %s unreadable: %w", key, err)
		return mapping.State{}, false
	}
	s.read[key], s.docs[key] = v, &st
	return copyState(&st), true
}

func (db *DB) queueState(b *pgx.Batch, s *mapping.State) error {
	if s.Key == "" {
		return nil
	}
	doc, err := db.seal.EncodeState(s)
	if err != nil {
		return err
	}
	b.Queue(`INSERT INTO states (key, user_key, doc) VALUES ($1, NULLIF($2, ''), $3)
		ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, user_key = EXCLUDED.user_key, version = states.version + 1`,
		s.Key, db.seal.UserKey(s.AppUserID), doc)
	return nil
}

// queueEvent queues the insert of a new event (ON CONFLICT DO NOTHING) or,
// with update, the rewrite of a stored one, with its indexed columns.
func (db *DB) queueEvent(b *pgx.Batch, e *mapping.Event, update bool) error {
	doc, err := db.seal.EncodeEvent(e)
	if err != nil {
		return err
	}
	uk, tk := db.seal.UserKey(e.User.AppUserID), db.seal.SearchKey(e.Attributes["purchase_token"])
	if update {
		b.Queue(`UPDATE events SET doc = $2, user_key = NULLIF($3, ''), transaction_id = NULLIF($4, ''), token_key = NULLIF($5, '') WHERE id = $1`,
			e.ID, doc, uk, e.TransactionID, tk)
		return nil
	}
	b.Queue(`INSERT INTO events (id, received_at, source, type, app_id, environment, user_key, subscription_id, source_event_id, transaction_id, token_key, doc)
		VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), NULLIF($8, ''), $9, NULLIF($10, ''), NULLIF($11, ''), $12) ON CONFLICT (id) DO NOTHING`,
		e.ID, e.ReceivedAt, e.Source, string(e.Type), e.AppID, e.Environment, uk, e.SubscriptionID, e.SourceEventID, e.TransactionID, tk, doc)
	return nil
}

// queueInbox queues the rewrite of an inbox item (see putInbox).
func (db *DB) queueInbox(b *pgx.Batch, n *mapping.Notification, prev []byte, subject string) error {
	doc, err := db.seal.ReencodeNotification(n, prev, subject)
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
	b.Queue(`INSERT INTO deliveries (key, event_id, destination, state, next_at_ms, order_key, order_at_ms, user_key, created_at, reason, doc)
		VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7, NULLIF($8, ''), $9, $10, $11)`,
		d.Key, d.EventID, d.Destination, d.State, nullMs(d), d.OrderKey, d.OrderAtMs, d.UserKey, d.CreatedAt, reasonText(d), doc)
	return nil
}

func (db *DB) putState(ctx context.Context, tx dbtx, s *mapping.State) error {
	if s.Key == "" {
		return nil
	}
	doc, err := db.seal.EncodeState(s)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO states (key, user_key, doc) VALUES ($1, NULLIF($2, ''), $3)
		ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, user_key = EXCLUDED.user_key, version = states.version + 1`,
		s.Key, db.seal.UserKey(s.AppUserID), doc)
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

func (db *DB) getUser(ctx context.Context, q querier, id string) (store.User, bool, error) {
	var doc []byte
	err := q.QueryRow(ctx, "SELECT doc FROM users WHERE user_key = $1", db.seal.UserKey(id)).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.User{}, false, nil
	}
	if err != nil {
		return store.User{}, false, err
	}
	var u store.User
	return u, true, db.seal.DecodeUser(doc, &u)
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
	return st, true, db.seal.DecodeState(doc, &st)
}

// Enrich stores a deferred notification's enrichment and maps it.
func (db *DB) Enrich(ctx context.Context, source, key string, enriched []byte) (store.IngestResult, error) {
	var res store.IngestResult
	var dests []string
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		res, dests = store.IngestResult{}, nil
		n, prev, err := db.lockInbox(ctx, tx, source, key)
		if err != nil {
			return err
		}
		if n.Status != mapping.StatusEnriching {
			res.Duplicate, res.Existing, res.Status = true, n, n.Status
			return nil
		}
		n.Enriched = enriched
		dests, err = db.mapAndStore(ctx, tx, n, prev, &res, true)
		return err
	})
	if err != nil {
		return store.IngestResult{}, err
	}
	db.woke(dests)
	return res, nil
}

// lockInbox reads an inbox item for update, with its stored document.
func (db *DB) lockInbox(ctx context.Context, tx dbtx, source, key string) (*mapping.Notification, []byte, error) {
	var doc []byte
	err := tx.QueryRow(ctx, "SELECT doc FROM inbox WHERE source = $1 AND key = $2 FOR UPDATE", source, key).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, store.ErrNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	var n mapping.Notification
	if err := db.seal.DecodeNotification(doc, &n); err != nil {
		return nil, nil, fmt.Errorf("pgstore: inbox %s/%s unreadable: %w", source, key, err)
	}
	return &n, doc, nil
}

// Pending lists inbox items of source waiting for enrichment, oldest first.
func (db *DB) Pending(source string, limit int) ([]mapping.Notification, error) {
	rows, err := db.pool.Query(context.Background(), "SELECT doc FROM inbox WHERE source = $1 AND status = 'enriching' ORDER BY received_at LIMIT $2", source, limit)
	if err != nil {
		return nil, err
	}
	return collectSealed(rows, db.seal.DecodeNotification)
}

// collectSealed decodes a one-column result of sealed documents.
func collectSealed[T any](rows pgx.Rows, decode func([]byte, *T) error) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		var v T
		if err := decode(doc, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// collectJSON decodes a one-column result of plain documents (deliveries:
// nothing personal).
func collectJSON[T any](rows pgx.Rows) ([]T, error) {
	return collectSealed(rows, func(doc []byte, v *T) error { return json.Unmarshal(doc, v) })
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
			n, prev, err := db.lockInbox(ctx, tx, k.source, k.key)
			if err != nil {
				return err
			}
			writeStates := n.Status == mapping.StatusFailed
			dests, err = db.mapAndStore(ctx, tx, n, prev, &res, writeStates)
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
	return &n, db.seal.DecodeNotification(doc, &n)
}

// NotificationOf returns the inbox item that produced an event.
func (db *DB) NotificationOf(e *mapping.Event) (*mapping.Notification, error) {
	return db.Notification(e.Source, e.SourceEventID)
}
