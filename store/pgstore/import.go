package pgstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/vault"
)

// ErrOtherSecret reports a copy into a database that already holds data
// keyed with another installation secret.
var ErrOtherSecret = errors.New("pgstore: the target database belongs to another installation")

// ImportKeys adopts a BoltDB store's keyring before its records are copied
// (`postback store copy`): the records stay sealed with its data keys and
// keyed with its installation secret. The secret replaces this database's
// when they differ and this database holds no data yet (else
// ErrOtherSecret); every data key is inserted wrapped with this database's
// key-encryption key (ON CONFLICT DO NOTHING: a resumed copy inserts only
// what is missing). It returns how many keys were new. No replica may use
// the database while it is copied into.
func (db *DB) ImportKeys(ctx context.Context, kf *vault.KeyFile) (int, error) {
	if secret := kf.Secret(); !bytes.Equal(secret, db.keys.Secret()) {
		var used bool
		if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM data_keys) OR EXISTS (SELECT 1 FROM inbox) OR EXISTS (SELECT 1 FROM events)
			OR EXISTS (SELECT 1 FROM states) OR EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM deliveries)
			OR EXISTS (SELECT 1 FROM erasures) OR EXISTS (SELECT 1 FROM fwd_memory)`).Scan(&used); err != nil {
			return 0, err
		}
		if used {
			return 0, fmt.Errorf("%w: %s already holds records keyed with its own installation secret, not the one of the BoltDB store being copied; copy into an empty database", ErrOtherSecret, db.where)
		}
		var s [32]byte
		if len(secret) != len(s) {
			return 0, fmt.Errorf("pgstore: the BoltDB key file's secret is %d bytes", len(secret))
		}
		copy(s[:], secret)
		wrapped, err := vault.Wrap(db.keys.kek, secretKID, &s)
		if err != nil {
			return 0, err
		}
		if _, err := db.pool.Exec(ctx, "UPDATE installation SET secret = $1 WHERE id", wrapped); err != nil {
			return 0, err
		}
		db.keys.secret = append([]byte(nil), secret...)
		db.keys.reset()
		db.seal = store.NewSealer(db.keys)
	}
	var fresh int
	b := &pgx.Batch{}
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		br := db.pool.SendBatch(ctx, b)
		for i := 0; i < b.Len(); i++ {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return err
			}
			fresh += int(tag.RowsAffected())
		}
		b = &pgx.Batch{}
		return br.Close()
	}
	err := kf.Each(func(kid vault.KID, key *[32]byte) error {
		w, err := vault.Wrap(db.keys.kek, kid, key)
		if err != nil {
			return err
		}
		b.Queue("INSERT INTO data_keys (kid, wrapped) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING", kid[:], w)
		if b.Len() >= 1000 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fresh, fmt.Errorf("pgstore: import data keys: %w", err)
	}
	return fresh, nil
}

// Import writes records exported from a BoltDB store (`postback store
// copy`), as they are stored: sealed with the data keys ImportKeys
// brought over first, keyed with its secret. The indexed columns come from
// the records' clear parts, or (an event's user and purchase token) from
// the decoded record. A record whose key is already in the database is
// left as it is (ON CONFLICT DO NOTHING), so a copy can be resumed after
// an interruption and running it twice changes nothing. It returns how
// many records were new.
func (db *DB) Import(ctx context.Context, chunk []store.Record) (int, error) {
	var inserted int
	err := db.inTx(ctx, func(tx pgx.Tx) error {
		inserted = 0
		for _, r := range chunk {
			n, err := db.importRecord(ctx, tx, r)
			if err != nil {
				return fmt.Errorf("pgstore: import %s %q: %w", r.Kind, bytes.ReplaceAll(r.Key, []byte{0}, []byte("/")), err)
			}
			inserted += n
		}
		return nil
	})
	return inserted, err
}

func (db *DB) importRecord(ctx context.Context, tx dbtx, r store.Record) (int, error) {
	exec := func(sql string, args ...any) (int, error) {
		tag, err := tx.Exec(ctx, sql, args...)
		return int(tag.RowsAffected()), err
	}
	switch r.Kind {
	case store.KindInbox:
		var n mapping.Notification
		if err := json.Unmarshal(store.ClearPart(r.Value), &n); err != nil {
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
		if err := db.seal.DecodeEvent(r.Value, &e); err != nil {
			return 0, err
		}
		return exec(`INSERT INTO events (id, received_at, source, type, app_id, environment, user_key, subscription_id, source_event_id, transaction_id, token_key, doc)
			VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), NULLIF($8, ''), $9, NULLIF($10, ''), NULLIF($11, ''), $12) ON CONFLICT (id) DO NOTHING`,
			e.ID, e.ReceivedAt, e.Source, string(e.Type), e.AppID, e.Environment, db.seal.UserKey(e.User.AppUserID), e.SubscriptionID, e.SourceEventID,
			e.TransactionID, db.seal.SearchKey(e.Attributes["purchase_token"]), r.Value)
	case store.KindState:
		var s struct {
			UserKey string `json:"uk"`
		}
		if err := json.Unmarshal(store.ClearPart(r.Value), &s); err != nil {
			return 0, err
		}
		return exec(`INSERT INTO states (key, user_key, doc) VALUES ($1, NULLIF($2, ''), $3) ON CONFLICT (key) DO NOTHING`, string(r.Key), s.UserKey, r.Value)
	case store.KindDelivery:
		var d store.Delivery
		if err := json.Unmarshal(r.Value, &d); err != nil {
			return 0, err
		}
		return exec(`INSERT INTO deliveries (key, event_id, destination, state, next_at_ms, order_key, order_at_ms, user_key, created_at, reason, doc)
			VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7, NULLIF($8, ''), $9, $10, $11) ON CONFLICT (key) DO NOTHING`,
			d.Key, d.EventID, d.Destination, d.State, nullMs(&d), d.OrderKey, d.OrderAtMs, d.UserKey, d.CreatedAt, reasonText(&d), r.Value)
	case store.KindAttempt:
		// the event's receive time (8 bytes), the delivery key, NUL, n as
		// 4 big-endian bytes
		i := len(r.Key) - 5
		if i < 9 || r.Key[i] != 0 {
			return 0, fmt.Errorf("attempt key without a time or a number")
		}
		n := binary.BigEndian.Uint32(r.Key[i+1:])
		return exec(`INSERT INTO attempts (delivery_key, n, doc) VALUES ($1, $2, $3) ON CONFLICT (delivery_key, n) DO NOTHING`, string(r.Key[8:i]), int(n), r.Value)
	case store.KindUser:
		// The key is the user key (Sealer.UserKey) already.
		return exec(`INSERT INTO users (user_key, doc) VALUES ($1, $2) ON CONFLICT (user_key) DO NOTHING`, string(r.Key), r.Value)
	case store.KindErasure:
		src, key, ok := bytes.Cut(r.Key, []byte{0})
		if !ok {
			return 0, fmt.Errorf("erasure key without a source")
		}
		var job store.ErasureJob
		if err := json.Unmarshal(store.ClearPart(r.Value), &job); err != nil {
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
