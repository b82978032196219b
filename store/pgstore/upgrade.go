package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/vault"
)

// A database that schema 1 filled holds plain documents and raw app user
// ids. Migration 00002 marks it (meta seal_upgrade); the first replica that
// opens it afterwards seals it here, under the migration advisory lock (the
// other replicas wait for it), a batch per transaction. Each table's
// progress is kept in meta (seal_upgrade:<table>) in the transaction of
// its batch, so an interrupted upgrade resumes where it stopped.

const upgradeBatch = 500

// upgradeStep is one table's rewrite: query reads a batch after the
// cursor (the key columns, $1.. in order; then the limit) returning the
// key columns then doc; fix rewrites one row.
type upgradeStep struct {
	table string
	keys  int
	query string
	fix   func(ctx context.Context, tx pgx.Tx, key []string, doc []byte) error
}

// upgrade seals the records of a schema 1 database, once across replicas.
func (db *DB) upgrade(ctx context.Context) error {
	return db.onceUnderMigrationLock(ctx, func() (bool, error) {
		var pending bool
		err := db.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM meta WHERE name = 'seal_upgrade')").Scan(&pending)
		return !pending, err
	}, db.sealRecords)
}

// onceUnderMigrationLock runs fn unless done reports the work is done,
// under the migration advisory lock, checking done again once the lock is
// held: replicas starting together do the work once, the others wait.
func (db *DB) onceUnderMigrationLock(ctx context.Context, done func() (bool, error), fn func(ctx context.Context) error) error {
	if ok, err := done(); err != nil || ok {
		return err
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLockID)); err != nil {
		return err
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(migrationLockID)); err != nil {
			_ = conn.Conn().Close(context.Background())
		}
	}()
	if ok, err := done(); err != nil || ok {
		return err // another replica did it while this one waited
	}
	return fn(ctx)
}

// sealRecords seals what schema 1 stored in clear.
func (db *DB) sealRecords(ctx context.Context) error {
	start := time.Now()
	db.opts.Logger.Info("sealing the records schema 1 stored (personal fields encrypted, app user ids hashed); other replicas wait", "db", db.where)
	for _, s := range db.upgradeSteps() {
		if err := db.upgradeTable(ctx, s); err != nil {
			return fmt.Errorf("pgstore: seal %s at %s (start again to resume): %w", s.table, db.where, err)
		}
	}
	if err := db.upgradeMemory(ctx); err != nil {
		return fmt.Errorf("pgstore: seal fwd_memory at %s (start again to resume): %w", db.where, err)
	}
	if err := db.upgradeAltKeys(ctx); err != nil {
		return fmt.Errorf("pgstore: hash inbox_alt at %s (start again to resume): %w", db.where, err)
	}
	if _, err := db.pool.Exec(ctx, "DELETE FROM meta WHERE name = 'seal_upgrade' OR name LIKE 'seal_upgrade:%'"); err != nil {
		return err
	}
	db.opts.Logger.Info("records sealed", "db", db.where, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (db *DB) upgradeTable(ctx context.Context, s upgradeStep) error {
	name := "seal_upgrade:" + s.table
	for {
		done := false
		err := db.inTx(ctx, func(tx pgx.Tx) error {
			var cur string
			err := tx.QueryRow(ctx, "SELECT value FROM meta WHERE name = $1", name).Scan(&cur)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if cur == "done" {
				done = true
				return nil
			}
			cursor := make([]string, s.keys)
			if cur != "" {
				if err := json.Unmarshal([]byte(cur), &cursor); err != nil || len(cursor) != s.keys {
					return fmt.Errorf("upgrade cursor %q unreadable", cur)
				}
			}
			args := make([]any, 0, s.keys+1)
			for _, c := range cursor {
				args = append(args, c)
			}
			rows, err := tx.Query(ctx, s.query, append(args, upgradeBatch)...)
			if err != nil {
				return err
			}
			type row struct {
				key []string
				doc []byte
			}
			var batch []row
			for rows.Next() {
				r := row{key: make([]string, s.keys)}
				dst := make([]any, 0, s.keys+1)
				for i := range r.key {
					dst = append(dst, &r.key[i])
				}
				if err := rows.Scan(append(dst, &r.doc)...); err != nil {
					rows.Close()
					return err
				}
				batch = append(batch, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, r := range batch {
				if err := s.fix(ctx, tx, r.key, r.doc); err != nil {
					return fmt.Errorf("%v: %w", r.key, err)
				}
			}
			next := "done"
			if len(batch) == upgradeBatch {
				b, _ := json.Marshal(batch[len(batch)-1].key)
				next = string(b)
			} else {
				done = true
			}
			_, err = tx.Exec(ctx, "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", name, next)
			return err
		})
		if err != nil || done {
			return err
		}
	}
}

func (db *DB) upgradeSteps() []upgradeStep {
	s := db.seal
	return []upgradeStep{
		{"inbox", 2, "SELECT source, key, doc FROM inbox WHERE (source, key) > ($1, $2) ORDER BY source, key LIMIT $3",
			func(ctx context.Context, tx pgx.Tx, key []string, doc []byte) error {
				if vault.IsSealed(doc) {
					return nil
				}
				var n mapping.Notification
				if json.Unmarshal(doc, &n) != nil {
					return nil // left as it is, as on BoltDB
				}
				n.AltKeys = s.AltKeys(n.AltKeys)
				var first *mapping.Event
				if len(n.EventIDs) > 0 {
					var edoc []byte
					var e mapping.Event
					if tx.QueryRow(ctx, "SELECT doc FROM events WHERE id = $1", n.EventIDs[0]).Scan(&edoc) == nil && s.DecodeEvent(edoc, &e) == nil {
						first = &e
					}
				}
				var erasure bool
				if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM erasures WHERE inbox_source = $1 AND inbox_key = $2)", key[0], key[1]).Scan(&erasure); err != nil {
					return err
				}
				nd, err := s.EncodeNotification(&n, s.KID(store.NotificationSubject(&n, first, erasure)))
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, "UPDATE inbox SET doc = $3 WHERE source = $1 AND key = $2", key[0], key[1], nd)
				return err
			}},
		{"events", 1, "SELECT id, doc FROM events WHERE id > $1 ORDER BY id LIMIT $2",
			func(ctx context.Context, tx pgx.Tx, key []string, doc []byte) error {
				var e mapping.Event
				if s.DecodeEvent(doc, &e) != nil {
					return nil
				}
				b := &pgx.Batch{}
				if err := db.queueEvent(b, &e, true); err != nil {
					return err
				}
				return tx.SendBatch(ctx, b).Close()
			}},
		{"states", 1, "SELECT key, doc FROM states WHERE key > $1 ORDER BY key LIMIT $2",
			func(ctx context.Context, tx pgx.Tx, key []string, doc []byte) error {
				var st mapping.State
				if s.DecodeState(doc, &st) != nil {
					return nil
				}
				nd, err := s.EncodeState(&st)
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, "UPDATE states SET doc = $2, user_key = NULLIF($3, '') WHERE key = $1", key[0], nd, s.UserKey(st.AppUserID))
				return err
			}},
		// Rows move (their key becomes the user key): one seen again is
		// sealed already and keeps its key.
		{"users", 1, "SELECT user_key, doc FROM users WHERE user_key > $1 ORDER BY user_key LIMIT $2",
			func(ctx context.Context, tx pgx.Tx, key []string, doc []byte) error {
				var u store.User
				if s.DecodeUser(doc, &u) != nil {
					return nil
				}
				if u.AppUserID == "" && !vault.IsSealed(doc) {
					u.AppUserID = key[0]
				}
				if u.AppUserID == "" {
					return nil
				}
				nd, err := s.EncodeUser(&u)
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, "UPDATE users SET user_key = $2, doc = $3 WHERE user_key = $1", key[0], s.UserKey(u.AppUserID), nd)
				return err
			}},
		{"deliveries", 1, "SELECT key, doc FROM deliveries WHERE key > $1 ORDER BY key LIMIT $2",
			func(ctx context.Context, tx pgx.Tx, key []string, doc []byte) error {
				var d struct {
					store.Delivery
					AppUserID string `json:"app_user_id"`
				}
				if json.Unmarshal(doc, &d) != nil || d.AppUserID == "" {
					return nil
				}
				d.Delivery.UserKey = s.UserKey(d.AppUserID)
				nd, err := json.Marshal(&d.Delivery)
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, "UPDATE deliveries SET doc = $2, user_key = $3 WHERE key = $1", key[0], nd, d.Delivery.UserKey)
				return err
			}},
		{"erasures", 2, "SELECT inbox_source, inbox_key, doc FROM erasures WHERE (inbox_source, inbox_key) > ($1, $2) ORDER BY inbox_source, inbox_key LIMIT $3",
			func(ctx context.Context, tx pgx.Tx, key []string, doc []byte) error {
				if vault.IsSealed(doc) {
					return nil
				}
				var job store.ErasureJob
				if json.Unmarshal(doc, &job) != nil {
					return nil
				}
				nd, err := s.EncodeJob(&job, key[0], key[1])
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, "UPDATE erasures SET doc = $3 WHERE inbox_source = $1 AND inbox_key = $2", key[0], key[1], nd)
				return err
			}},
	}
}

// upgradeAltKeys replaces the raw secondary dedupe keys (Google purchase
// tokens) by their keyed hashes (Sealer.AltKeys, which leaves a hashed key
// as it is, so a resumed run is safe).
func (db *DB) upgradeAltKeys(ctx context.Context) error {
	rows, err := db.pool.Query(ctx, "SELECT source, alt_key FROM inbox_alt WHERE alt_key NOT LIKE 'h1:%'")
	if err != nil {
		return err
	}
	type alt struct{ source, key string }
	var all []alt
	for rows.Next() {
		var a alt
		if err := rows.Scan(&a.source, &a.key); err != nil {
			rows.Close()
			return err
		}
		all = append(all, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for len(all) > 0 {
		n := min(len(all), 500)
		b := &pgx.Batch{}
		for _, a := range all[:n] {
			b.Queue("UPDATE inbox_alt SET alt_key = $3 WHERE source = $1 AND alt_key = $2", a.source, a.key, db.seal.AltKeys([]string{a.key})[0])
		}
		if err := db.pool.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		all = all[n:]
	}
	return nil
}

// upgradeMemory hashes the forwarder memory keys in one transaction (a
// key hashed twice would be lost, so it is all or nothing; the table holds
// at most retention's worth of devices).
func (db *DB) upgradeMemory(ctx context.Context) error {
	return db.inTx(ctx, func(tx pgx.Tx) error {
		var done bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM meta WHERE name = 'seal_upgrade:fwd_memory')").Scan(&done); err != nil || done {
			return err
		}
		rows, err := tx.Query(ctx, "DELETE FROM fwd_memory RETURNING destination, key, at_ms")
		if err != nil {
			return err
		}
		type mem struct {
			dest, key string
			at        int64
		}
		var all []mem
		for rows.Next() {
			var m mem
			if err := rows.Scan(&m.dest, &m.key, &m.at); err != nil {
				rows.Close()
				return err
			}
			all = append(all, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		b := &pgx.Batch{}
		for _, m := range all {
			b.Queue(`INSERT INTO fwd_memory (destination, key, at_ms) VALUES ($1, $2, $3)
				ON CONFLICT (destination, key) DO UPDATE SET at_ms = GREATEST(fwd_memory.at_ms, EXCLUDED.at_ms)`, m.dest, db.seal.HashMemoryKey(m.key), m.at)
		}
		b.Queue("INSERT INTO meta (name, value) VALUES ('seal_upgrade:fwd_memory', 'done')")
		return tx.SendBatch(ctx, b).Close()
	})
}

// Attempts written before they were sealed (releases before December 2026
// stored them as plain JSON, requests and answers readable, and an erasure
// did not reach them) are sealed once, at the first start of a binary that
// seals them, under the migration advisory lock: with their event's data
// key when the event is sealed (an erased event's key is gone, and the
// request and answer go with it), and without request and answer when the
// event is not sealed, since its personal fields may have been erased.
// Meta attempts_sealed records that it is done.
func (db *DB) sealAttempts(ctx context.Context) error {
	return db.onceUnderMigrationLock(ctx, func() (bool, error) {
		var ok bool
		err := db.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM meta WHERE name = 'attempts_sealed')").Scan(&ok)
		return ok, err
	}, db.sealPlainAttempts)
}

func (db *DB) sealPlainAttempts(ctx context.Context) error {
	s := db.seal
	step := upgradeStep{"attempts_plain", 2,
		"SELECT delivery_key, n::text, doc FROM attempts WHERE (delivery_key, n) > ($1, COALESCE(NULLIF($2, ''), '-1')::int) ORDER BY delivery_key, n LIMIT $3",
		func(ctx context.Context, tx pgx.Tx, key []string, doc []byte) error {
			if vault.IsSealed(doc) {
				return nil
			}
			var a store.Attempt
			if json.Unmarshal(doc, &a) != nil || a.Request == "" && a.Response == "" {
				return nil
			}
			var edoc []byte
			err := tx.QueryRow(ctx, "SELECT e.doc FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.key = $1", key[0]).Scan(&edoc)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if !vault.IsSealed(edoc) {
				edoc = nil // no key to keep the request under: dropped
			}
			nd, err := s.EncodeAttempt(&a, edoc)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "UPDATE attempts SET doc = $3 WHERE delivery_key = $1 AND n = $2::int", key[0], key[1], nd)
			return err
		}}
	if err := db.upgradeTable(ctx, step); err != nil {
		return fmt.Errorf("pgstore: seal attempts at %s (start again to resume): %w", db.where, err)
	}
	_, err := db.pool.Exec(ctx, `WITH gone AS (DELETE FROM meta WHERE name = 'seal_upgrade:attempts_plain')
		INSERT INTO meta (name, value) VALUES ('attempts_sealed', 'true') ON CONFLICT (name) DO NOTHING`)
	return err
}
