package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// Claim leases up to o.Limit due deliveries of dest (see the package
// comment). Claims of one destination are serialised by an advisory lock,
// so the in-flight cap counts every replica's leases exactly.
func (db *DB) Claim(ctx context.Context, dest string, now time.Time, o store.ClaimOptions) ([]store.Due, error) {
	if o.Limit <= 0 {
		return nil, nil
	}
	lease := o.Lease
	if lease <= 0 {
		lease = 2 * time.Minute
	}
	if o.Skip == nil {
		return db.claimFast(ctx, dest, now, o.Limit, o.MaxInFlight, o.Answered, lease)
	}
	var out []store.Due
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		out = nil
		if _, err := tx.Exec(ctx, claimSettings); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey("claim:"+dest)); err != nil {
			return err
		}
		limit := o.Limit
		if o.MaxInFlight > 0 {
			var inflight int
			if err := tx.QueryRow(ctx, inFlight("$1", "$2", "$3"), dest, o.MaxInFlight, o.Answered).Scan(&inflight); err != nil {
				return err
			}
			limit = min(limit, o.MaxInFlight-inflight)
			if limit <= 0 {
				return nil
			}
		}
		var rows pgx.Rows
		var err error
		if o.Skip == nil {
			rows, err = tx.Query(ctx, `UPDATE deliveries SET leased_until = now() + make_interval(secs => $4), lease_owner = $5
			WHERE ctid = ANY(ARRAY(
				SELECT d.ctid FROM deliveries d
				WHERE `+claimable+`
				ORDER BY d.next_at_ms, d.key
				LIMIT $3
				FOR UPDATE SKIP LOCKED))
			RETURNING doc`, dest, now.UnixMilli(), limit, lease.Seconds(), db.opts.Owner)
		} else {
			var keys []string
			if keys, err = claimKeys(ctx, tx, dest, now, limit, o.Skip); err != nil || len(keys) == 0 {
				return err
			}
			rows, err = tx.Query(ctx, `UPDATE deliveries SET leased_until = now() + make_interval(secs => $2), lease_owner = $3
			WHERE key = ANY($1) RETURNING doc`, keys, lease.Seconds(), db.opts.Owner)
		}
		if err != nil {
			return err
		}
		ds, err := collectJSON[store.Delivery](rows)
		if err != nil {
			return err
		}
		if len(ds) == 0 {
			return nil
		}
		ids := make([]string, len(ds))
		for i := range ds {
			ids[i] = ds[i].EventID
		}
		events, err := db.eventsByID(ctx, tx, ids)
		if err != nil {
			return err
		}
		for _, d := range ds {
			ce, ok := events[d.EventID]
			if !ok {
				continue
			}
			d.NoteClaim(nil, ce.doc)
			out = append(out, store.Due{Delivery: d, Event: ce.e})
		}
		sortDue(out)
		return nil
	})
	return out, err
}

// sortDue orders claimed deliveries as they fell due: by due time, then
// key.
func sortDue(ds []store.Due) {
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].Delivery.NextAtMs != ds[j].Delivery.NextAtMs {
			return ds[i].Delivery.NextAtMs < ds[j].Delivery.NextAtMs
		}
		return ds[i].Delivery.Key < ds[j].Delivery.Key
	})
}

// claimFast claims in one round trip: BEGIN, the destination's claim
// lock, one UPDATE whose LIMIT subtracts the destination's live leases
// from the in-flight cap and whose claimed rows are joined with their
// events and their users' identity records, and COMMIT travel as one
// batch. The claimed keys are an ARRAY(...) of the locking sub-select, not
// an IN (...): the planner cannot estimate a LIMIT that is an expression,
// takes it for a tenth of the table, and then reads the whole deliveries
// and events tables in hash joins (14 ms a claim with 5 000 rows, growing
// with the table); "= ANY(array)" it estimates as a few rows (1.4 ms).
// The array holds the locked rows' ctids, not their keys: a TID scan goes
// straight to the row versions the sub-select locked (141 buffers for 32
// rows where the primary key's bitmap scan, through every dead version
// left since the last VACUUM, read 1 260). A locked row cannot move before
// the UPDATE; one that another transaction updated between this
// statement's snapshot and its lock is left unclaimed this time (the
// UPDATE does not see the newer version), never claimed twice.
func (db *DB) claimFast(ctx context.Context, dest string, now time.Time, limit, maxInFlight int, answered []string, lease time.Duration) ([]store.Due, error) {
	if maxInFlight <= 0 {
		maxInFlight = 1 << 30
	}
	type claimedRow struct{ d, e, u []byte }
	var claimed []claimedRow
	err := db.inPipe(ctx, func(tx dbtx) error {
		claimed = claimed[:0]
		b := &pgx.Batch{}
		// A claim need not wait for its WAL flush: a claim lost in a
		// database crash leaves the delivery claimable again (sent at
		// least once), and the claim lock is held only while the claim
		// runs, not for a disk flush, so claims do not queue behind fsync.
		b.Queue(claimSettings)
		b.Queue("SELECT pg_advisory_xact_lock($1)", lockKey("claim:"+dest))
		b.Queue(claimFastSQL, dest, now.UnixMilli(), limit, lease.Seconds(), db.opts.Owner, maxInFlight, answered)
		b.Queue("COMMIT")
		br := tx.SendBatch(ctx, b)
		for i := 0; i < 2; i++ {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
		}
		rows, err := br.Query()
		if err != nil {
			br.Close()
			return err
		}
		for rows.Next() {
			var r claimedRow
			if err := rows.Scan(&r.d, &r.e, &r.u); err != nil {
				rows.Close()
				br.Close()
				return err
			}
			claimed = append(claimed, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			br.Close()
			return err
		}
		if err := br.Close(); err != nil {
			return err
		}
		tx.(*pipe).committed = true
		return nil
	})
	if err != nil || len(claimed) == 0 {
		return nil, err
	}
	ds := make([]store.Delivery, len(claimed))
	keys := make([]string, 0, len(claimed))
	for i := range claimed {
		if err = json.Unmarshal(claimed[i].d, &ds[i]); err != nil {
			break
		}
		keys = append(keys, ds[i].Key)
	}
	out := make([]store.Due, 0, len(claimed))
	for i := 0; err == nil && i < len(claimed); i++ {
		if claimed[i].e == nil {
			continue // its event is gone (pruned): the lease expires
		}
		var ce claimedEvent
		if ce, err = db.decodeClaimed(claimed[i].e, claimed[i].u); err == nil {
			ds[i].NoteClaim(nil, ce.doc)
			out = append(out, store.Due{Delivery: ds[i], Event: ce.e})
		}
	}
	if err != nil {
		// The claims stand and expire; say why nothing comes of them.
		_ = db.Release(context.WithoutCancel(ctx), keys)
		return nil, err
	}
	sortDue(out)
	return out, nil
}

// claimFastSQL is claimFast's claim: $1 the destination, $2 now (Unix
// ms), $3 the most to claim, $4 the lease in seconds, $5 the owner, $6
// the in-flight cap, $7 the answered keys (see inFlight).
var claimFastSQL = `WITH c AS (UPDATE deliveries SET leased_until = now() + make_interval(secs => $4), lease_owner = $5
			WHERE ctid = ANY(ARRAY(
				SELECT d.ctid FROM deliveries d
				WHERE ` + claimable + `
				ORDER BY d.next_at_ms, d.key
				LIMIT greatest(0, least($3::int, $6::int - ` + inFlight("$1", "$6", "$7") + `))
				FOR UPDATE SKIP LOCKED))
			RETURNING doc, event_id)
			SELECT c.doc, e.doc, u.doc FROM c LEFT JOIN events e ON e.id = c.event_id LEFT JOIN users u ON u.user_key = e.user_key`

// claimSettings are a claim transaction's settings: its commit does not
// wait for the WAL flush (see claimFast), and its statements run their
// generic plan, built once per connection. Left to choose, PostgreSQL
// planned the claim afresh for one execution in five (249 of 1 195 in a
// 1000/s run), at 0.8-1.2 ms a plan, about as long as the claim runs; the
// generic plan has the same shape (index scans of deliveries_due and
// deliveries_leased, the TID scan, primary-key look-ups of events and
// users). Sequential scans are ruled out: a plan is kept for the
// connection's life, and one made before autovacuum's first ANALYZE (a
// new database, the first minute of a deployment) takes the tables for
// ten pages and reads the whole of deliveries for the TID look-up and the
// whole of events for the join (auto_explain: 1 824 buffers and 9.9 ms
// for 9 deliveries out of 4 917, growing with the tables; 3.8 ms a claim
// on average over a 1000/s run); every part of the claim has an index
// that fits.
const claimSettings = `SELECT set_config('synchronous_commit', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true),
	set_config('enable_seqscan', 'off', true)`

// inFlight counts dest's live leases, up to max (the in-flight cap),
// less the caller's answered ones (store.ClaimOptions.Answered, a text
// array), with dest, max and answered the statement's parameters named.
// Read in lease order with a LIMIT, the count is an index scan of
// deliveries_leased that stops at the cap; a plain count(*) became a bitmap scan that visited a
// heap page for every lease since the last VACUUM (each claim and outcome
// leaves a dead version behind: 2.1 of a claim's 4.4 ms with 7 400 of
// them), whereas an index scan marks the dead entries it meets so the next
// one passes over them.
func inFlight(dest, max, answered string) string {
	return `(SELECT count(*) FROM (SELECT 1 FROM deliveries l WHERE l.destination = ` + dest +
		` AND l.leased_until > now() AND l.key <> ALL(coalesce(` + answered + `::text[], '{}'))
		ORDER BY l.leased_until LIMIT ` + max + `) AS live)`
}

// claimable is the condition on a delivery d of destination $1 that Claim
// may take at $2 (Unix ms): due, not leased, and the head of its ordering
// key with no other delivery of that key in flight (a replayed earlier
// delivery waits for a later one that is leased).
const claimable = `d.destination = $1 AND d.next_at_ms IS NOT NULL AND d.next_at_ms <= $2
				  AND (d.leased_until IS NULL OR d.leased_until <= now())
				  AND (d.order_key IS NULL OR NOT EXISTS (
					SELECT 1 FROM deliveries o WHERE o.destination = d.destination AND o.order_key = d.order_key AND o.key <> d.key
					  AND o.next_at_ms IS NOT NULL
					  AND ((o.order_at_ms, o.key) < (d.order_at_ms, d.key) OR o.leased_until > now())))`

// claimKeys locks up to limit claimable deliveries of dest, oldest first,
// passing over those skip reports (the caller's in-memory leases): it reads
// candidates a page at a time until it has limit keys or none are left.
func claimKeys(ctx context.Context, tx pgx.Tx, dest string, now time.Time, limit int, skip func(string) bool) ([]string, error) {
	page := max(2*limit, 100)
	var keys []string
	lastMs, lastKey := int64(-1<<62), ""
	for len(keys) < limit {
		rows, err := tx.Query(ctx, `SELECT d.key, d.next_at_ms FROM deliveries d
			WHERE `+claimable+` AND (d.next_at_ms, d.key) > ($4, $5)
			ORDER BY d.next_at_ms, d.key
			LIMIT $3
			FOR UPDATE SKIP LOCKED`, dest, now.UnixMilli(), page, lastMs, lastKey)
		if err != nil {
			return nil, err
		}
		n := 0
		for rows.Next() {
			if err := rows.Scan(&lastKey, &lastMs); err != nil {
				rows.Close()
				return nil, err
			}
			n++
			if len(keys) < limit && !skip(lastKey) {
				keys = append(keys, lastKey)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if n < page {
			break
		}
	}
	return keys, nil
}

// claimedEvent is an event as a claim reads it: decoded, with its user's
// identifiers, and its document as stored (whose data key seals the
// attempts).
type claimedEvent struct {
	e   mapping.Event
	doc []byte
}

// eventsByID reads events with their identity-store identifiers merged,
// in one query.
func (db *DB) eventsByID(ctx context.Context, q querier, ids []string) (map[string]claimedEvent, error) {
	rows, err := q.Query(ctx, "SELECT e.doc, u.doc FROM events e LEFT JOIN users u ON u.user_key = e.user_key WHERE e.id = ANY($1)", ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]claimedEvent, len(ids))
	for rows.Next() {
		var edoc, udoc []byte
		if err := rows.Scan(&edoc, &udoc); err != nil {
			return nil, err
		}
		ce, err := db.decodeClaimed(edoc, udoc)
		if err != nil {
			return nil, err
		}
		out[ce.e.ID] = ce
	}
	return out, rows.Err()
}

// decodeClaimed decodes a claimed delivery's event and fills in its user's
// identifiers from the identity record udoc (nil: none).
func (db *DB) decodeClaimed(edoc, udoc []byte) (claimedEvent, error) {
	var e mapping.Event
	if err := db.seal.DecodeEvent(edoc, &e); err != nil {
		return claimedEvent{}, err
	}
	if udoc != nil {
		var u store.User
		if err := db.seal.DecodeUser(udoc, &u); err != nil {
			return claimedEvent{}, err
		}
		if u.AppUserID == e.User.AppUserID {
			u.Fill(&e)
		}
	}
	return claimedEvent{e, edoc}, nil
}

// Release ends this replica's leases on deliveries it claimed but did not
// send.
func (db *DB) Release(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := db.pool.Exec(ctx, "UPDATE deliveries SET leased_until = NULL, lease_owner = NULL WHERE key = ANY($1) AND lease_owner = $2", keys, db.opts.Owner)
	return err
}

// Complete records attempt outcomes and ends the leases. An outcome whose
// Claimed delivery is still leased by this replica is written without
// reading the row again: one batch for all of them, fenced by the lease
// owner, with BEGIN and COMMIT in the same round trip. Any other (and one
// whose lease turned out not to be ours) is applied to the row as it is
// now, under its row lock, in a second transaction.
//
// Outcomes commit without waiting for their WAL flush (synchronous_commit
// off): an outcome lost in a database crash leaves its delivery leased
// until the lease expires, then it is sent again with the same idempotency
// key, which is the at-least-once promise a crash of a replica already
// gives. Nothing a source was answered 2xx for depends on it, and a later
// synchronous commit (every ingest) flushes it with its own WAL.
//
// Calls that arrive while completions are being written are combined:
// at most completeRounds rounds run at once, each a caller that writes the
// completions of every call waiting when it starts (its own among them, or
// not) in one transaction, so a busy dispatcher's outcomes take a few
// connections and round trips, not one each, and its claims do not wait
// for a connection behind them. An error fails every call of its round.
func (db *DB) Complete(ctx context.Context, cs []store.Completion) error {
	if len(cs) == 0 {
		return nil
	}
	r := &completeCall{cs: cs, done: make(chan struct{})}
	q := &db.completions
	q.mu.Lock()
	q.waiting = append(q.waiting, r)
	q.mu.Unlock()
	select {
	case q.rounds <- struct{}{}:
		q.mu.Lock()
		round := q.waiting
		q.waiting = nil
		q.mu.Unlock()
		if len(round) > 0 {
			var all []store.Completion
			for _, c := range round {
				all = append(all, c.cs...)
			}
			// The round is every caller's: one caller's end (its context
			// cancelled) must not cut it short.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			err := db.complete(rctx, all)
			cancel()
			for _, c := range round {
				c.err = err
				close(c.done)
			}
		}
		<-q.rounds
		<-r.done
	case <-r.done:
	}
	return r.err
}

// completeRounds bounds the rounds of completions written at once.
const completeRounds = 2

// completions combines concurrent Complete calls (see Complete).
type completions struct {
	mu      sync.Mutex
	waiting []*completeCall
	rounds  chan struct{}
}

type completeCall struct {
	cs   []store.Completion
	err  error
	done chan struct{}
}

// complete writes completions in one transaction (see Complete).
func (db *DB) complete(ctx context.Context, cs []store.Completion) error {
	// Rows are locked in key order so that concurrent completions cannot
	// deadlock.
	sorted := slices.Clone(cs)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Key < sorted[j].Key })
	now := db.opts.Now()
	var slow, fastCs []store.Completion
	fast := &pgx.Batch{}
	fast.Queue("SET LOCAL synchronous_commit TO OFF")
	for _, c := range sorted {
		if c.Attempt != nil {
			a := *c.Attempt // a retried transaction numbers afresh
			c.Attempt = &a
		}
		if c.Claimed == nil || store.Final(c.Claimed.State) || c.Attempt != nil && !c.Claimed.ClaimNoted() {
			slow = append(slow, c)
			continue
		}
		d := *c.Claimed
		d.Apply(c, now)
		doc, err := json.Marshal(&d)
		if err != nil {
			return err
		}
		if c.Attempt == nil {
			fast.Queue(`WITH upd AS (UPDATE deliveries SET state = $2, next_at_ms = $3, reason = $4, doc = $5, leased_until = NULL, lease_owner = NULL
				WHERE key = $1 AND lease_owner = $6 RETURNING key) SELECT count(*) FROM upd`,
				d.Key, d.State, nullMs(&d), reasonText(&d), doc, db.opts.Owner)
		} else {
			adoc, err := db.seal.EncodeClaimedAttempt(c.Attempt, c.Claimed, nil)
			if err != nil {
				return err
			}
			fast.Queue(`WITH upd AS (UPDATE deliveries SET state = $2, next_at_ms = $3, reason = $4, doc = $5, leased_until = NULL, lease_owner = NULL
				WHERE key = $1 AND lease_owner = $6 RETURNING key),
			ins AS (INSERT INTO attempts (delivery_key, n, doc) SELECT key, $7, $8 FROM upd
				ON CONFLICT (delivery_key, n) DO UPDATE SET doc = EXCLUDED.doc)
			SELECT count(*) FROM upd`,
				d.Key, d.State, nullMs(&d), reasonText(&d), doc, db.opts.Owner, d.Attempts, adoc)
		}
		fastCs = append(fastCs, c)
	}
	if len(fastCs) > 0 {
		fast.Queue("COMMIT")
		var lost []store.Completion
		err := db.inPipe(ctx, func(tx dbtx) error {
			lost = lost[:0]
			br := tx.SendBatch(ctx, fast)
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
			for _, c := range fastCs {
				var n int
				if err := br.QueryRow().Scan(&n); err != nil {
					br.Close()
					return err
				}
				if n == 0 {
					// The lease is no longer ours (it expired and another
					// replica took the delivery, or it was given back):
					// apply the outcome to the row as it is now.
					lost = append(lost, c)
				}
			}
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
			if err := br.Close(); err != nil {
				return err
			}
			tx.(*pipe).committed = true
			return nil
		})
		if err != nil {
			return err
		}
		slow = append(slow, lost...)
		sort.SliceStable(slow, func(i, j int) bool { return slow[i].Key < slow[j].Key })
	}
	if len(slow) == 0 {
		return nil
	}
	return db.inPipe(ctx, func(tx dbtx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit TO OFF"); err != nil {
			return err
		}
		for _, c := range slow {
			if err := db.completeLocked(ctx, tx, c, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// completeLocked applies one outcome to the delivery under its row lock.
func (db *DB) completeLocked(ctx context.Context, tx dbtx, c store.Completion, now time.Time) error {
	d, ok, err := lockDelivery(ctx, tx, c.Key)
	if err != nil {
		return err
	}
	if c.Skip(&d, ok) {
		if ok {
			_, err := tx.Exec(ctx, "UPDATE deliveries SET leased_until = NULL, lease_owner = NULL WHERE key = $1", c.Key)
			return err
		}
		return nil
	}
	d.Apply(c, now)
	if c.Attempt != nil {
		// Sealed with its event's key: the one the claim saw, else the
		// event's as stored now (none when it is gone).
		var edoc []byte
		if !c.Claimed.ClaimNoted() {
			if err := tx.QueryRow(ctx, "SELECT doc FROM events WHERE id = $1", d.EventID).Scan(&edoc); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		doc, err := db.seal.EncodeClaimedAttempt(c.Attempt, c.Claimed, edoc)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO attempts (delivery_key, n, doc) VALUES ($1, $2, $3) ON CONFLICT (delivery_key, n) DO UPDATE SET doc = EXCLUDED.doc", d.Key, d.Attempts, doc); err != nil {
			return err
		}
	}
	return updateDelivery(ctx, tx, &d)
}

func lockDelivery(ctx context.Context, tx dbtx, key string) (store.Delivery, bool, error) {
	var doc []byte
	err := tx.QueryRow(ctx, "SELECT doc FROM deliveries WHERE key = $1 FOR UPDATE", key).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Delivery{}, false, nil
	}
	if err != nil {
		return store.Delivery{}, false, err
	}
	var d store.Delivery
	if err := json.Unmarshal(doc, &d); err != nil {
		return d, false, fmt.Errorf("pgstore: delivery %s unreadable: %w", key, err)
	}
	return d, true, nil
}

// Replay queues a final delivery again now; an unfinished one is left as
// it is.
func (db *DB) Replay(ctx context.Context, key string) (store.Delivery, error) {
	var d store.Delivery
	var queued bool
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		queued = false
		var ok bool
		var err error
		d, ok, err = lockDelivery(ctx, tx, key)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: delivery %s", store.ErrNotFound, key)
		}
		if !store.Final(d.State) {
			return nil
		}
		d.Requeue(db.opts.Now())
		if err := updateDelivery(ctx, tx, &d); err != nil {
			return err
		}
		queued = true
		return db.notify(ctx, tx, []string{d.Destination})
	})
	if err == nil && queued {
		db.woke([]string{d.Destination})
	}
	return d, err
}

// ReplayMatching replays every final delivery matching f.
func (db *DB) ReplayMatching(ctx context.Context, f store.DeliveryFilter, perSecond float64, dryRun bool, progress func(done, total int)) (int, error) {
	return store.ReplayMatching(ctx, db, f, perSecond, dryRun, progress)
}

// NextDue returns the earliest due time of dest, zero when nothing is
// queued.
func (db *DB) NextDue(dest string) time.Time {
	var ms *int64
	if err := db.pool.QueryRow(context.Background(), "SELECT min(next_at_ms) FROM deliveries WHERE destination = $1 AND next_at_ms IS NOT NULL", dest).Scan(&ms); err != nil || ms == nil {
		return time.Time{}
	}
	return time.UnixMilli(*ms)
}

// queueExact is the backlog up to which Queue counts exactly; above it
// Queue returns the cluster's shared count (SharedQueue), at most
// queueSharedAge old.
var queueExact = 20_000

const queueSharedAge = 5 * time.Second

// Queue summarises dest's backlog: exactly while it holds fewer than
// queueExact deliveries (which an index-only look at most that many
// entries long tells), else from the cluster's shared count, so that the
// console and the admin API, each view counting every destination, cost
// a large backlog nothing more than the gauges already do (a count reads
// every queued delivery: 160 ms for 111 000).
func (db *DB) Queue(dest string) (store.QueueStats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n int
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM deliveries
		WHERE destination = $1 AND next_at_ms IS NOT NULL LIMIT $2) AS q`, dest, queueExact).Scan(&n); err != nil {
		return store.QueueStats{}, err
	}
	if n >= queueExact {
		q, err := db.SharedQueue(ctx, dest, queueSharedAge)
		// A count made before a burst may be lower than what is queued
		// now: never below what was just seen (a drained queue's count
		// must not hide a new backlog).
		q.Depth = max(q.Depth, n)
		return q, err
	}
	return scanQueue(db.pool.QueryRow(ctx, queueSQL, dest))
}

// queueSQL counts dest's ($1) queue: depth, waiting, oldest due, oldest
// created.
const queueSQL = `SELECT count(*), count(*) FILTER (WHERE state = 'waiting'), min(next_at_ms), min(created_at)
		FROM deliveries WHERE destination = $1 AND next_at_ms IS NOT NULL`

// SharedQueue is store.Cluster's: under dest's queue lock, the figures in
// queue_stats are returned while younger than maxAge, else counted again
// (queueSQL) and written back, without waiting for the WAL flush (they
// are a gauge, counted again after a crash).
func (db *DB) SharedQueue(ctx context.Context, dest string, maxAge time.Duration) (store.QueueStats, error) {
	var q store.QueueStats
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock($1)", lockKey("queue:"+dest)); err != nil {
			return err
		}
		var err error
		q, err = scanQueue(tx.QueryRow(ctx, `SELECT depth, waiting, oldest_due_ms, oldest_created FROM queue_stats
			WHERE destination = $1 AND counted_at > clock_timestamp() - make_interval(secs => $2)`, dest, maxAge.Seconds()))
		if errors.Is(err, pgx.ErrNoRows) {
			q, err = scanQueue(tx.QueryRow(ctx, `WITH c AS (`+queueSQL+`)
				INSERT INTO queue_stats (destination, depth, waiting, oldest_due_ms, oldest_created, counted_at)
				SELECT $1, c.*, clock_timestamp() FROM c
				ON CONFLICT (destination) DO UPDATE SET depth = EXCLUDED.depth, waiting = EXCLUDED.waiting,
					oldest_due_ms = EXCLUDED.oldest_due_ms, oldest_created = EXCLUDED.oldest_created, counted_at = EXCLUDED.counted_at
				RETURNING depth, waiting, oldest_due_ms, oldest_created`, dest))
		}
		return err
	})
	return q, err
}

// scanQueue reads queue figures in queueSQL's order: depth, waiting,
// oldest due (Unix ms), oldest created.
func scanQueue(row pgx.Row) (store.QueueStats, error) {
	var q store.QueueStats
	var oldest *int64
	var created *time.Time
	if err := row.Scan(&q.Depth, &q.Waiting, &oldest, &created); err != nil {
		return store.QueueStats{}, err
	}
	if oldest != nil {
		q.Oldest = time.UnixMilli(*oldest)
	}
	if created != nil {
		q.OldestCreate = *created
	}
	return q, nil
}

// Delivery returns one delivery.
func (db *DB) Delivery(key string) (store.Delivery, error) {
	var doc []byte
	err := db.pool.QueryRow(context.Background(), "SELECT doc FROM deliveries WHERE key = $1", key).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Delivery{}, fmt.Errorf("%w: delivery %s", store.ErrNotFound, key)
	}
	if err != nil {
		return store.Delivery{}, err
	}
	var d store.Delivery
	return d, json.Unmarshal(doc, &d)
}

// Attempts returns a delivery's attempt log, oldest first.
func (db *DB) Attempts(key string) ([]store.Attempt, error) {
	rows, err := db.pool.Query(context.Background(), "SELECT doc FROM attempts WHERE delivery_key = $1 ORDER BY n", key)
	if err != nil {
		return nil, err
	}
	return collectSealed(rows, db.seal.DecodeAttempt)
}

// EventDeliveries returns the deliveries of one event.
func (db *DB) EventDeliveries(eventID string) ([]store.Delivery, error) {
	rows, err := db.pool.Query(context.Background(), "SELECT doc FROM deliveries WHERE event_id = $1 ORDER BY key", eventID)
	if err != nil {
		return nil, err
	}
	return collectJSON[store.Delivery](rows)
}

// Deliveries lists deliveries matching f, newest events first.
func (db *DB) Deliveries(f store.DeliveryFilter) ([]store.Delivery, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	states := f.States
	if states == nil {
		states = []string{}
	}
	rows, err := db.pool.Query(context.Background(), `SELECT d.doc FROM deliveries d JOIN events e ON e.id = d.event_id
		WHERE ($1 = '' OR d.destination = $1)
		  AND (cardinality($2::text[]) = 0 OR d.state = ANY($2))
		  AND ($3 = '' OR strpos(d.reason, $3) > 0)
		  AND ($4::timestamptz IS NULL OR (d.created_at >= $4 AND e.received_at >= $4))
		  AND ($5::timestamptz IS NULL OR d.created_at <= $5)
		ORDER BY e.received_at DESC, e.id DESC, d.key
		LIMIT $6`, f.Destination, states, f.Reason, optTime(f.Since), optTime(f.Until), f.Limit)
	if err != nil {
		return nil, err
	}
	return collectJSON[store.Delivery](rows)
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
