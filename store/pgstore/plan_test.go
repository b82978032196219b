package pgstore

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore/pgtest"
)

// TestClaimPlanHasNoSeqScan: the claim's generic plan, made in a new
// database before any ANALYZE (as every connection's first claim after a
// deployment is), reads deliveries through its indexes and the TID scan
// and joins events and users by primary key. A plan with a sequential scan
// is kept for the connection's life and reads whole tables on every claim
// once they have grown.
func TestClaimPlanHasNoSeqScan(t *testing.T) {
	_, tx := planTx(t)
	ctx := context.Background()
	if _, err := tx.Exec(ctx, claimSettings); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `PREPARE claim_plan (text, bigint, int, float8, text, int, text[]) AS `+claimFastSQL); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, `EXPLAIN EXECUTE claim_plan ('dest', 0, 32, 120, 'owner', 64, '{}')`)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if !strings.Contains(text, "Tid Scan") || strings.Contains(text, "Seq Scan") {
		t.Fatalf("claim plan reads a table whole or misses the TID scan:\n%s", text)
	}
}

// TestQueueLargeBacklogShared: Queue counts exactly below queueExact
// queued deliveries and, from there on, returns the cluster's shared count
// instead of reading every queued delivery on each view.
func TestQueueLargeBacklogShared(t *testing.T) {
	db := openTest(t, pgtest.Database(t), &Options{Options: store.Options{Map: plantMap, Route: func(*mapping.Event) []string { return []string{"af"} }}})
	ctx := context.Background()
	ingest := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := db.Ingest(ctx, &mapping.Notification{Source: "test", Key: fmt.Sprintf("b%d", i), Body: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer func(n int) { queueExact = n }(queueExact)
	queueExact = 4
	ingest(0, 3)
	if q, err := db.Queue("af"); err != nil || q.Depth != 3 || q.OldestCreate.IsZero() {
		t.Fatalf("below the cap: %+v %v, want the exact 3", q, err)
	}
	ingest(3, 5)
	shared, err := db.SharedQueue(ctx, "af", 0)
	if err != nil || shared.Depth != 5 {
		t.Fatalf("shared count %+v %v", shared, err)
	}
	ingest(5, 6)
	if q, err := db.Queue("af"); err != nil || q.Depth != 5 {
		t.Fatalf("above the cap: %+v %v, want the shared count (5) that is under 5 s old", q, err)
	}
	queueExact = 2
	if q, err := db.Queue("af"); err != nil || q.Depth != 5 {
		t.Fatalf("above a lower cap: %+v %v, want the shared 5", q, err)
	}
	if _, err := db.SharedQueue(ctx, "af", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().Exec(ctx, "UPDATE queue_stats SET depth = 0"); err != nil {
		t.Fatal(err)
	}
	if q, err := db.Queue("af"); err != nil || q.Depth != 2 {
		t.Fatalf("a shared count below what is queued: %+v %v, want at least the cap's 2 seen", q, err)
	}
	queueExact = 100
	if q, err := db.Queue("af"); err != nil || q.Depth != 6 {
		t.Fatalf("cap raised: %+v %v, want the exact 6", q, err)
	}
}

// TestLookupsSettleOnGenericPlans: the per-notification lookups outside
// the ingest's transaction keep one plan per connection instead of being
// planned on every execution. PostgreSQL never takes the generic plan of
// "= ANY($1)" (it assumes ten elements), so one identity is read with
// "= $1", and the keyring's connections, whose every statement goes by
// primary key, force the generic plan; the main pool's do not.
func TestLookupsSettleOnGenericPlans(t *testing.T) {
	db, tx := planTx(t)
	ctx := context.Background()
	events := []mapping.Event{{User: mapping.User{AppUserID: "user-1"}}}
	for i := 0; i < 8; i++ {
		if err := db.fillUsers(ctx, tx, events); err != nil {
			t.Fatal(err)
		}
	}
	var generic, custom int64
	if err := tx.QueryRow(ctx, `SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1`, userOneSQL).Scan(&generic, &custom); err != nil {
		t.Fatalf("the identity lookup is not a prepared statement of this connection: %v", err)
	}
	if generic == 0 || custom > 5 {
		t.Fatalf("identity lookup: %d generic and %d custom plans in 8 executions; want the generic plan after 5", generic, custom)
	}
	for _, c := range []struct {
		pool interface {
			QueryRow(context.Context, string, ...any) pgx.Row
		}
		want string
	}{{db.keys.pool, "force_generic_plan"}, {db.pool, "auto"}} {
		var mode string
		if err := c.pool.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != c.want {
			t.Errorf("plan_cache_mode %q, want %q", mode, c.want)
		}
	}
}

// planTx opens a store on a new database and begins a transaction on one
// of its connections, rolled back when the test ends.
func planTx(t *testing.T) (*DB, pgx.Tx) {
	t.Helper()
	db := openTest(t, pgtest.Database(t), nil)
	tx, err := db.pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return db, tx
}
