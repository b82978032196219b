package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/vault"
)

// ErrKeys reports a data key file that is missing, damaged or belongs to
// another database.
var ErrKeys = errors.New("store: data key file")

// schemaSealed is the schema of a file whose personal fields are sealed
// and whose user keys are keyed hashes; schemaCurrent's deliveries and
// attempts are stored under their event's time-ordered key as well. Files
// of earlier schemas are upgraded at open.
const (
	schemaSealed  = "2"
	schemaCurrent = "3"
)

// openKeys opens the key file beside the database, creating it for a new
// database (or one from before sealing), and checks that it belongs to
// this database.
func openKeys(tx *bolt.Tx, path, kp string) (*vault.KeyFile, error) {
	m := tx.Bucket(bMeta)
	if kp == "" {
		kp = vault.KeyFilePath(path)
	}
	want := string(m.Get([]byte("keyfile")))
	if want != "" {
		if _, err := os.Stat(kp); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w %s is missing. The personal fields stored in %s are sealed with its keys, so without it they cannot be read. "+
				"Restore %s from where you keep it (a copy made after the last erasure), or move %s aside to start with an empty store", ErrKeys, kp, path, kp, path)
		}
	}
	kf, err := vault.OpenKeyFile(kp, false)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v. Restore it from where you keep it, or move %s aside to start with an empty store", ErrKeys, kp, err, path)
	}
	fp := kf.Fingerprint()
	switch {
	case want != "" && want != fp:
		kf.Close()
		return nil, fmt.Errorf("%w %s belongs to another database than %s (its fingerprint is %s, the database expects %s). Put the key file that was made with this database beside it", ErrKeys, kp, path, fp, want)
	case want == "":
		if err := m.Put([]byte("keyfile"), []byte(fp)); err != nil {
			kf.Close()
			return nil, err
		}
		if m.Get([]byte("schema")) == nil {
			if err := m.Put([]byte("schema"), []byte(schemaCurrent)); err != nil {
				kf.Close()
				return nil, err
			}
		}
	}
	return kf, nil
}

// idKey is the time-ordered key of id in a bucket with a small id index
// (inbox_ids, event_ids: id -> receive time): that time and id; nil when
// id is not stored.
func idKey(ids *bolt.Bucket, id []byte) []byte {
	ms := ids.Get(id)
	if len(ms) != 8 {
		return nil
	}
	return append(append(make([]byte, 0, 8+len(id)), ms...), id...)
}

// docByID is the stored value of id in a time-ordered bucket, nil when
// it is not stored.
func docByID(b, ids *bolt.Bucket, id []byte) []byte {
	if k := idKey(ids, id); k != nil {
		return b.Get(k)
	}
	return nil
}

func inboxKeyOf(tx *bolt.Tx, ik []byte) []byte { return idKey(tx.Bucket(bInboxIDs), ik) }
func inboxDoc(tx *bolt.Tx, ik []byte) []byte {
	return docByID(tx.Bucket(bInbox), tx.Bucket(bInboxIDs), ik)
}
func eventKey(tx *bolt.Tx, id string) []byte { return idKey(tx.Bucket(bEventIDs), []byte(id)) }

// Deliveries are stored under their event's time-ordered key, '|' and the
// destination, and attempts under their delivery's, NUL and the attempt
// number: the deliveries of events received together, and their attempts,
// fill the same pages, as the events do. A delivery's key (event id |
// destination: Delivery.Key) finds its place through the event id index.

// deliveryKeyIn is the stored key of the delivery to dest of the event
// stored under ek.
func deliveryKeyIn(ek []byte, dest string) []byte {
	return append(append(append(make([]byte, 0, len(ek)+1+len(dest)), ek...), '|'), dest...)
}

// storedDelivery returns the stored key of delivery key and its event's
// key; nil when the event is not stored.
func storedDelivery(tx *bolt.Tx, key string) (dk, ek []byte) {
	id, dest := SplitDeliveryKey(key)
	if ek = eventKey(tx, id); ek == nil {
		return nil, nil
	}
	return deliveryKeyIn(ek, dest), ek
}

// deliveriesOf is the prefix of the stored keys of the deliveries of the
// event stored under ek.
func deliveriesOf(ek []byte) []byte { return append(append(make([]byte, 0, len(ek)+1), ek...), '|') }
func eventDoc(tx *bolt.Tx, id string) []byte {
	return docByID(tx.Bucket(bEvents), tx.Bucket(bEventIDs), []byte(id))
}

// decodeStored decodes a stored value (ok false when there is none).
func decodeStored[T any](v []byte, rec *T, decode func([]byte, *T) error) (bool, error) {
	if v == nil {
		return false, nil
	}
	return true, decode(v, rec)
}

// put encodes rec and stores it under k.
func put[T any](b *bolt.Bucket, k []byte, rec *T, encode func(*T) ([]byte, error)) error {
	v, err := encode(rec)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

func (db *DB) getNoteByID(tx *bolt.Tx, ik []byte, n *mapping.Notification) (bool, error) {
	return decodeStored(inboxDoc(tx, ik), n, db.seal.DecodeNotification)
}

func (db *DB) getEventByID(tx *bolt.Tx, id string, e *mapping.Event) (bool, error) {
	return decodeStored(eventDoc(tx, id), e, db.seal.DecodeEvent)
}

// getEvent reads the event stored under key k of b (the events bucket).
func (db *DB) getEvent(b *bolt.Bucket, k []byte, e *mapping.Event) (bool, error) {
	return decodeStored(b.Get(k), e, db.seal.DecodeEvent)
}

func (db *DB) putEvent(b *bolt.Bucket, k []byte, e *mapping.Event) error {
	return put(b, k, e, db.seal.EncodeEvent)
}

func (db *DB) getState(b *bolt.Bucket, k []byte, s *mapping.State) (bool, error) {
	return decodeStored(b.Get(k), s, db.seal.DecodeState)
}

func (db *DB) putState(b *bolt.Bucket, k []byte, s *mapping.State) error {
	return put(b, k, s, db.seal.EncodeState)
}

func (db *DB) getNote(b *bolt.Bucket, k []byte, n *mapping.Notification) (bool, error) {
	return decodeStored(b.Get(k), n, db.seal.DecodeNotification)
}

func (db *DB) getUser(b *bolt.Bucket, appUserID string, u *User) (bool, error) {
	return decodeStored(b.Get([]byte(db.seal.UserKey(appUserID))), u, db.seal.DecodeUser)
}

func (db *DB) putUser(b *bolt.Bucket, u *User) error {
	return put(b, []byte(db.seal.UserKey(u.AppUserID)), u, db.seal.EncodeUser)
}

// upgrade brings a file of an earlier schema to schemaCurrent: a schema 1
// file is sealed (personal fields sealed, app user ids and forwarder
// memory keys replaced by keyed hashes), then deliveries and attempts move
// to their events' time-ordered keys.
func (db *DB) upgrade() error {
	var schema string
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		schema = string(tx.Bucket(bMeta).Get([]byte("schema")))
		return nil
	}); err != nil {
		return err
	}
	if schema == schemaCurrent {
		return nil
	}
	if n, err := strconv.Atoi(schema); err == nil && n > 3 {
		return fmt.Errorf("%w: %s is at schema version %d, this postback knows up to %s; run the newer postback (or restore a backup from before the upgrade)", ErrSchemaNewer, db.bolt.Path(), n, schemaCurrent)
	}
	err := db.guard(func() error {
		return db.bolt.Update(func(tx *bolt.Tx) error {
			if schema != schemaSealed {
				if err := db.upgradeRecords(tx); err != nil {
					return err
				}
			}
			if err := upgradeDeliveryKeys(tx); err != nil {
				return err
			}
			if err := tx.Bucket(bMeta).Put([]byte("schema"), []byte(schemaCurrent)); err != nil {
				return err
			}
			return db.keys.Sync()
		})
	})
	if err == nil && schema == schemaSealed {
		db.opts.Logger.Info("moved deliveries and attempts to time-ordered keys (schema 3)", "file", db.bolt.Path())
	} else if err == nil {
		db.opts.Logger.Warn("sealed the personal fields of a file written by an earlier version; its freed pages hold the old plain copies until they are reused: stop the gateway and run `postback store compact` to remove them", "file", db.bolt.Path())
	}
	return err
}

type kv struct{ k, v []byte }

// rewrite replaces every entry of b by what fn returns (nil key: dropped).
// The new keys may differ from the old ones; all old entries are read
// before any is written.
func rewrite(b *bolt.Bucket, fn func(k, v []byte) ([]byte, []byte, error)) error {
	var old []kv
	if err := b.ForEach(func(k, v []byte) error {
		old = append(old, kv{append([]byte(nil), k...), append([]byte(nil), v...)})
		return nil
	}); err != nil {
		return err
	}
	for _, e := range old {
		nk, nv, err := fn(e.k, e.v)
		if err != nil {
			return err
		}
		if err := b.Delete(e.k); err != nil {
			return err
		}
		if nk != nil {
			if err := b.Put(nk, nv); err != nil {
				return err
			}
		}
	}
	return nil
}

func (db *DB) upgradeRecords(tx *bolt.Tx) error {
	s := db.seal
	events := tx.Bucket(bEvents)
	erasures := tx.Bucket(bErasures)
	err := rewrite(tx.Bucket(bInbox), func(k, v []byte) ([]byte, []byte, error) {
		var n mapping.Notification
		if err := json.Unmarshal(v, &n); err != nil {
			return k, v, nil
		}
		n.AltKeys = s.AltKeys(n.AltKeys)
		var first *mapping.Event
		if len(n.EventIDs) > 0 {
			var e mapping.Event
			if ev := events.Get([]byte(n.EventIDs[0])); ev != nil && json.Unmarshal(ev, &e) == nil {
				first = &e
			}
		}
		nv, err := s.EncodeNotification(&n, s.KID(NotificationSubject(&n, first, erasures.Get(k) != nil)))
		if err != nil {
			return nil, nil, err
		}
		// Time-ordered, with the id index beside it.
		if err := tx.Bucket(bInboxIDs).Put(k, msKey(n.ReceivedAt)); err != nil {
			return nil, nil, err
		}
		return timeKey(n.ReceivedAt, string(k)), nv, nil
	})
	if err != nil {
		return err
	}
	if tx.Bucket([]byte("inbox_time")) != nil {
		if err := tx.DeleteBucket([]byte("inbox_time")); err != nil {
			return err
		}
	}
	// Events move to time-ordered keys with the id index beside them; the
	// old time index goes.
	ids := tx.Bucket(bEventIDs)
	err = rewrite(events, func(k, v []byte) ([]byte, []byte, error) {
		var e mapping.Event
		if err := json.Unmarshal(v, &e); err != nil {
			return k, v, nil
		}
		nv, err := s.EncodeEvent(&e)
		if err != nil {
			return nil, nil, err
		}
		if err := ids.Put([]byte(e.ID), msKey(e.ReceivedAt)); err != nil {
			return nil, nil, err
		}
		return timeKey(e.ReceivedAt, e.ID), nv, nil
	})
	if err != nil {
		return err
	}
	if tx.Bucket([]byte("events_time")) != nil {
		if err := tx.DeleteBucket([]byte("events_time")); err != nil {
			return err
		}
	}
	err = rewrite(tx.Bucket(bStates), func(k, v []byte) ([]byte, []byte, error) {
		var st mapping.State
		if err := json.Unmarshal(v, &st); err != nil {
			return k, v, nil
		}
		nv, err := s.EncodeState(&st)
		return k, nv, err
	})
	if err != nil {
		return err
	}
	err = rewrite(tx.Bucket(bUsers), func(k, v []byte) ([]byte, []byte, error) {
		var u User
		if err := json.Unmarshal(v, &u); err != nil {
			return k, v, nil
		}
		if u.AppUserID == "" {
			u.AppUserID = string(k)
		}
		nv, err := s.EncodeUser(&u)
		return []byte(s.UserKey(u.AppUserID)), nv, err
	})
	if err != nil {
		return err
	}
	err = rewrite(tx.Bucket(bAltKeys), func(k, v []byte) ([]byte, []byte, error) {
		src, alt, ok := bytes.Cut(k, []byte{0})
		if !ok {
			return k, v, nil
		}
		return inboxKey(string(src), s.AltKeys([]string{string(alt)})[0]), v, nil
	})
	if err != nil {
		return err
	}
	userKeyed := func(k, v []byte) ([]byte, []byte, error) {
		user, rest, ok := bytes.Cut(k, []byte{0})
		if !ok {
			return nil, nil, nil
		}
		return append([]byte(s.UserKey(string(user))+"\x00"), rest...), v, nil
	}
	if err := rewrite(tx.Bucket(bUserEvents), userKeyed); err != nil {
		return err
	}
	if err := rewrite(tx.Bucket(bWaiting), userKeyed); err != nil {
		return err
	}
	err = rewrite(tx.Bucket(bDeliveries), func(k, v []byte) ([]byte, []byte, error) {
		var d struct {
			Delivery
			AppUserID string `json:"app_user_id"`
		}
		if err := json.Unmarshal(v, &d); err != nil || d.AppUserID == "" {
			return k, v, nil
		}
		d.Delivery.UserKey = s.UserKey(d.AppUserID)
		nv, err := json.Marshal(&d.Delivery)
		return k, nv, err
	})
	if err != nil {
		return err
	}
	err = rewrite(erasures, func(k, v []byte) ([]byte, []byte, error) {
		var job ErasureJob
		if err := json.Unmarshal(v, &job); err != nil {
			return k, v, nil
		}
		src, key, _ := bytes.Cut(k, []byte{0})
		nv, err := s.EncodeJob(&job, string(src), string(key))
		return k, nv, err
	})
	if err != nil {
		return err
	}
	return rewrite(tx.Bucket(bFwdMemory), func(k, v []byte) ([]byte, []byte, error) {
		dest, key, ok := bytes.Cut(k, []byte{0})
		if !ok {
			return nil, nil, nil
		}
		return []byte(string(dest) + "\x00" + s.HashMemoryKey(string(key))), v, nil
	})
}

// upgradeDeliveryKeys moves deliveries and attempts from their delivery
// key (event id | destination) to their event's time-ordered key (schema
// 2 to 3). A delivery whose event is gone could no longer be found and is
// dropped, with its attempts and queue entries.
func upgradeDeliveryKeys(tx *bolt.Tx) error {
	ids := tx.Bucket(bEventIDs)
	stored := func(k []byte) []byte {
		id, _, _ := bytes.Cut(k, []byte("|"))
		ms := ids.Get(id)
		if len(ms) != 8 {
			return nil
		}
		return append(append(make([]byte, 0, 8+len(k)), ms...), k...)
	}
	var orphans []Delivery
	err := rewrite(tx.Bucket(bDeliveries), func(k, v []byte) ([]byte, []byte, error) {
		nk := stored(k)
		if nk == nil {
			var d Delivery
			if json.Unmarshal(v, &d) == nil {
				orphans = append(orphans, d)
			}
		}
		return nk, v, nil
	})
	if err != nil {
		return err
	}
	for i := range orphans {
		d := &orphans[i]
		if err := delDue(tx, d); err != nil {
			return err
		}
		if err := delOrder(tx, d); err != nil {
			return err
		}
		if d.UserKey != "" {
			if err := tx.Bucket(bWaiting).Delete(waitKey(d.UserKey, d.Key)); err != nil {
				return err
			}
		}
	}
	return rewrite(tx.Bucket(bAttempts), func(k, v []byte) ([]byte, []byte, error) { return stored(k), v, nil })
}
