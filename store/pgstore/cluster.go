package pgstore

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/store"
)

var _ store.Cluster = (*DB)(nil)

// TakeTokens refills and spends dest's token bucket in one statement: the
// row lock makes concurrent replicas take turns, and the bucket never
// hands out more than burst + perSecond × elapsed tokens in all.
func (db *DB) TakeTokens(ctx context.Context, dest string, n int, perSecond float64, burst int) (int, time.Duration, error) {
	if n < 1 {
		n = 1
	}
	var granted int
	var avail float64
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO rate_buckets (destination, tokens, at) VALUES ($1, $2, clock_timestamp()) ON CONFLICT (destination) DO NOTHING`, dest, float64(burst)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `WITH cur AS (
				SELECT least($3::float8, tokens + $2::float8 * extract(epoch FROM clock_timestamp() - at)) AS avail
				FROM rate_buckets WHERE destination = $1 FOR UPDATE)
			UPDATE rate_buckets r SET tokens = cur.avail - least($4::float8, floor(cur.avail)), at = clock_timestamp()
			FROM cur WHERE r.destination = $1
			RETURNING least($4::float8, floor(cur.avail))::int, cur.avail`, dest, perSecond, float64(burst), float64(n)).Scan(&granted, &avail)
	})
	if err != nil {
		return 0, 0, err
	}
	if granted > 0 {
		return granted, 0, nil
	}
	wait := time.Duration(math.Ceil((1 - avail) / perSecond * float64(time.Second)))
	return 0, max(wait, time.Millisecond), nil
}

// LoadHealth reads dest's shared state.
func (db *DB) LoadHealth(ctx context.Context, dest string) (store.SharedHealth, bool, error) {
	var h store.SharedHealth
	var hold *time.Time
	var cooldownMs int64
	err := db.pool.QueryRow(ctx, "SELECT hold_until, circuit, cooldown_ms, paused, paused_why FROM destination_health WHERE destination = $1", dest).
		Scan(&hold, &h.Circuit, &cooldownMs, &h.Paused, &h.PausedWhy)
	if errors.Is(err, pgx.ErrNoRows) {
		return h, false, nil
	}
	if err != nil {
		return h, false, err
	}
	if hold != nil {
		h.HoldUntil = *hold
	}
	h.Cooldown = time.Duration(cooldownMs) * time.Millisecond
	return h, true, nil
}

// SaveHealth writes dest's shared state.
func (db *DB) SaveHealth(ctx context.Context, dest string, h store.SharedHealth) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO destination_health (destination, hold_until, circuit, cooldown_ms, paused, paused_why, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, now())
		ON CONFLICT (destination) DO UPDATE SET hold_until = EXCLUDED.hold_until, circuit = EXCLUDED.circuit, cooldown_ms = EXCLUDED.cooldown_ms,
			paused = EXCLUDED.paused, paused_why = EXCLUDED.paused_why, updated_at = now()`,
		dest, optTime(h.HoldUntil), h.Circuit, h.Cooldown.Milliseconds(), h.Paused, h.PausedWhy)
	return err
}

// TakeProbe moves an open circuit's (or a pause's) ended hold to until for the one
// replica whose update wins; it reports whether this replica won.
func (db *DB) TakeProbe(ctx context.Context, dest string, now, until time.Time) (bool, error) {
	tag, err := db.pool.Exec(ctx, `UPDATE destination_health SET hold_until = $3,
			circuit = CASE WHEN circuit = 'open' THEN 'half-open' ELSE circuit END, updated_at = now()
		WHERE destination = $1 AND (circuit <> 'closed' OR paused) AND (hold_until IS NULL OR hold_until <= $2)`, dest, now, until)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}
