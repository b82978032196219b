package pgstore

import (
	"context"
	"strings"
	"testing"

	"github.com/postback/postback/store/pgstore/pgtest"
)

// TestClaimPlanHasNoSeqScan: the claim's generic plan, made in a new
// database before any ANALYZE (as every connection's first claim after a
// deployment is), reads deliveries through its indexes and the TID scan
// and joins events and users by primary key. A plan with a sequential scan
// is kept for the connection's life and reads whole tables on every claim
// once they have grown.
func TestClaimPlanHasNoSeqScan(t *testing.T) {
	db := openTest(t, pgtest.Database(t), nil)
	ctx := context.Background()
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
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
