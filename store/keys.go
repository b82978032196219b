package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/vault"
)

// ErrKeys reports a data key file that is missing, damaged or belongs to
// another database.
var ErrKeys = errors.New("store: data key file")

// schemaSealed is the schema of a file whose personal fields are sealed
// and whose user keys are keyed hashes; schema 1 files are upgraded at
// open.
const schemaSealed = "2"

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
			if err := m.Put([]byte("schema"), []byte(schemaSealed)); err != nil {
				kf.Close()
				return nil, err
			}
		}
	}
	return kf, nil
}

// inboxKeyOf is the inbox bucket key of inbox item ik (nil when it is not
// stored): its receive time, from the small id index, and ik.
func inboxKeyOf(tx *bolt.Tx, ik []byte) []byte {
	ms := tx.Bucket(bInboxIDs).Get(ik)
	if len(ms) != 8 {
		return nil
	}
	return append(append(make([]byte, 0, 8+len(ik)), ms...), ik...)
}

// inboxDoc is the stored form of inbox item ik, nil when it is not stored.
func inboxDoc(tx *bolt.Tx, ik []byte) []byte {
	k := inboxKeyOf(tx, ik)
	if k == nil {
		return nil
	}
	return tx.Bucket(bInbox).Get(k)
}

// getNoteByID reads inbox item ik.
func (db *DB) getNoteByID(tx *bolt.Tx, ik []byte, n *mapping.Notification) (bool, error) {
	v := inboxDoc(tx, ik)
	if v == nil {
		return false, nil
	}
	return true, db.seal.DecodeNotification(v, n)
}

// eventKey is the events bucket key of event id ("" when it is not
// stored): its receive time, found in the small id index, and the id.
func eventKey(tx *bolt.Tx, id string) []byte {
	ms := tx.Bucket(bEventIDs).Get([]byte(id))
	if len(ms) != 8 {
		return nil
	}
	return append(append(make([]byte, 0, 8+len(id)), ms...), id...)
}

// eventDoc is the stored form of event id, nil when it is not stored.
func eventDoc(tx *bolt.Tx, id string) []byte {
	k := eventKey(tx, id)
	if k == nil {
		return nil
	}
	return tx.Bucket(bEvents).Get(k)
}

// getEventByID reads event id.
func (db *DB) getEventByID(tx *bolt.Tx, id string, e *mapping.Event) (bool, error) {
	v := eventDoc(tx, id)
	if v == nil {
		return false, nil
	}
	return true, db.seal.DecodeEvent(v, e)
}

// getEvent reads the event stored under key k of b (the events bucket).
func (db *DB) getEvent(b *bolt.Bucket, k []byte, e *mapping.Event) (bool, error) {
	v := b.Get(k)
	if v == nil {
		return false, nil
	}
	return true, db.seal.DecodeEvent(v, e)
}

func (db *DB) putEvent(b *bolt.Bucket, k []byte, e *mapping.Event) error {
	v, err := db.seal.EncodeEvent(e)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

func (db *DB) getState(b *bolt.Bucket, k []byte, s *mapping.State) (bool, error) {
	v := b.Get(k)
	if v == nil {
		return false, nil
	}
	return true, db.seal.DecodeState(v, s)
}

func (db *DB) putState(b *bolt.Bucket, k []byte, s *mapping.State) error {
	v, err := db.seal.EncodeState(s)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

func (db *DB) getNote(b *bolt.Bucket, k []byte, n *mapping.Notification) (bool, error) {
	v := b.Get(k)
	if v == nil {
		return false, nil
	}
	return true, db.seal.DecodeNotification(v, n)
}

func (db *DB) getUser(b *bolt.Bucket, appUserID string, u *User) (bool, error) {
	v := b.Get([]byte(db.seal.UserKey(appUserID)))
	if v == nil {
		return false, nil
	}
	return true, db.seal.DecodeUser(v, u)
}

func (db *DB) putUser(b *bolt.Bucket, u *User) error {
	v, err := db.seal.EncodeUser(u)
	if err != nil {
		return err
	}
	return b.Put([]byte(db.seal.UserKey(u.AppUserID)), v)
}

// upgrade seals a schema 1 file: personal fields sealed, app user ids and
// forwarder memory keys replaced by keyed hashes.
func (db *DB) upgrade() error {
	var schema string
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		schema = string(tx.Bucket(bMeta).Get([]byte("schema")))
		return nil
	}); err != nil {
		return err
	}
	if schema == schemaSealed {
		return nil
	}
	err := db.guard(func() error {
		return db.bolt.Update(func(tx *bolt.Tx) error {
			if err := db.upgradeRecords(tx); err != nil {
				return err
			}
			if err := tx.Bucket(bMeta).Put([]byte("schema"), []byte(schemaSealed)); err != nil {
				return err
			}
			return db.keys.Sync()
		})
	})
	if err == nil {
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
