package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/vault"
)

// User is what the identity store knows about one app user. Emails and
// phones are only ever held hashed (mapping.SetEmail / SetPhone).
type User struct {
	AppUserID   string            `json:"app_user_id"`
	Identifiers map[string]string `json:"identifiers"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

// ErrInvalidUser is returned for an app_user_id that cannot be a key: empty,
// or holding a NUL byte (the separator of the waiting index).
var ErrInvalidUser = errors.New("store: invalid app_user_id")

// CheckUserID validates an app_user_id used as a key.
func CheckUserID(id string) error { return checkUserID(id) }

func checkUserID(id string) error {
	if id == "" || strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%w: %q", ErrInvalidUser, id)
	}
	return nil
}

func jsonUnmarshal(b []byte, v any) error {
	if err := plainRecord(v); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// mergeUser fills identifiers the event lacks from the identity store. Values
// the event already carries (from the notification itself) win.
func (db *DB) mergeUser(users *bolt.Bucket, e *mapping.Event) {
	if e.User.AppUserID == "" {
		return
	}
	if u := db.users.get(db.seal, users, db.seal.UserKey(e.User.AppUserID)); u != nil {
		u.Fill(e)
	}
}

// userCacheSize bounds the decoded identity records kept: a full cache is
// emptied and fills again with the users being read.
const userCacheSize = 8192

// userCache keeps decoded identity records for mergeUser, which reads the
// record of an event's user at every ingest and every claim of a delivery:
// a record read again unchanged is not unsealed and decoded again. An
// entry is used only while the bytes stored under its key are the bytes it
// was decoded from (compared in the reader's own transaction), so it is
// never stale, and DeleteUser drops the erased user's entry at once.
type userCache struct {
	mu sync.Mutex
	m  map[string]cachedUser
}

type cachedUser struct {
	raw []byte
	u   *User // shared: read only
}

// get returns the record stored under the user key uk, read-only; nil when
// there is none or it cannot be read.
func (c *userCache) get(s *Sealer, users *bolt.Bucket, uk string) *User {
	raw := users.Get([]byte(uk))
	if raw == nil {
		return nil
	}
	c.mu.Lock()
	hit, ok := c.m[uk]
	c.mu.Unlock()
	if ok && bytes.Equal(hit.raw, raw) {
		return hit.u
	}
	u := &User{}
	if err := s.DecodeUser(raw, u); err != nil {
		return nil
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= userCacheSize {
		c.m = make(map[string]cachedUser)
	}
	c.m[uk] = cachedUser{bytes.Clone(raw), u}
	c.mu.Unlock()
	return u
}

// forget drops the entry of the user key uk.
func (c *userCache) forget(uk string) {
	c.mu.Lock()
	delete(c.m, uk)
	c.mu.Unlock()
}

// Merge applies a PUT of identifiers to the record: a value of "" removes
// that identifier.
func (u *User) Merge(appUserID string, ids map[string]string, now time.Time) {
	u.AppUserID = appUserID
	if u.Identifiers == nil {
		u.Identifiers = map[string]string{}
	}
	for k, v := range ids {
		if v == "" {
			delete(u.Identifiers, k)
		} else {
			u.Identifiers[k] = v
		}
	}
	u.UpdatedAt = now.UTC()
}

// Fill gives e the identifiers it lacks from the user's record.
func (u *User) Fill(e *mapping.Event) {
	for k, v := range u.Identifiers {
		if e.Identifier(k) == "" {
			e.SetIdentifier(k, v)
		}
	}
}

// PutUser merges identifiers into a user's record (a value of "" removes that
// identifier) and releases deliveries of that user that were waiting for an
// identifier, so they are attempted at once.
func (db *DB) PutUser(ctx context.Context, appUserID string, ids map[string]string) (User, error) {
	if err := checkUserID(appUserID); err != nil {
		return User{}, err
	}
	var u User
	var wake []string
	err := db.submit(ctx, func(tx *bolt.Tx) error {
		wake = wake[:0]
		users := tx.Bucket(bUsers)
		u = User{}
		if _, err := db.getUser(users, appUserID, &u); err != nil {
			return softError{err}
		}
		u.Merge(appUserID, ids, db.opts.Now())
		if err := db.putUser(users, &u); err != nil {
			return err
		}
		// Release waiting deliveries of this user.
		deliveries := tx.Bucket(bDeliveries)
		w := tx.Bucket(bWaiting)
		prefix := []byte(db.seal.UserKey(appUserID) + "\x00")
		var keys [][]byte
		c := w.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		now := db.opts.Now()
		for _, k := range keys {
			dk, _ := storedDelivery(tx, string(k[len(prefix):]))
			var d Delivery
			if ok, err := getJSON(deliveries, dk, &d); err != nil || !ok || d.State != StateWaiting {
				if err := w.Delete(k); err != nil {
					return err
				}
				continue
			}
			if err := delDue(tx, &d); err != nil {
				return err
			}
			d.NextAtMs = now.UnixMilli()
			if err := putDue(tx, &d); err != nil {
				return err
			}
			if err := putJSON(deliveries, dk, &d); err != nil {
				return err
			}
			wake = append(wake, d.Destination)
		}
		return nil
	}, &wake)
	return u, err
}

// GetUser returns a user's identifiers.
func (db *DB) GetUser(appUserID string) (User, error) {
	var u User
	err := db.view(func(tx *bolt.Tx) error {
		ok, err := db.getUser(tx.Bucket(bUsers), appUserID, &u)
		if err == nil && !ok {
			err = fmt.Errorf("%w: user %s", ErrNotFound, appUserID)
		}
		return err
	})
	return u, err
}

// DeleteUser erases a user (a privacy deletion): it destroys the data keys
// of the user's identity record, events, the raw notifications those
// events came from and the per-subscription states that remember the user,
// so every copy of them (freed pages, backups) becomes unreadable; then it
// rewrites the live records without their personal fields and drops the
// user's index entries. It returns how many events were erased. Erasing an
// unknown user erases nothing and is not an error.
func (db *DB) DeleteUser(ctx context.Context, appUserID string) (int, error) {
	if err := checkUserID(appUserID); err != nil {
		return 0, err
	}
	uk := db.seal.UserKey(appUserID)
	needle := db.seal.StateUserNeedle(appUserID)
	var n int
	err := db.submit(ctx, func(tx *bolt.Tx) error {
		n = 0
		users := tx.Bucket(bUsers)
		var evs []eventHit
		var sts []stateHit
		// The user's events come from the user_events index, so an erasure
		// reads only that user's events, not the whole store.
		eb, ue := tx.Bucket(bEvents), tx.Bucket(bUserEvents)
		prefix := userEventKey(uk, "")
		var index [][]byte
		c := ue.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			index = append(index, append([]byte(nil), k...))
			ek := eventKey(tx, string(k[len(prefix):]))
			var e mapping.Event
			if ek == nil {
				continue
			}
			if ok, err := db.getEvent(eb, ek, &e); err != nil || !ok || e.User.AppUserID != appUserID {
				continue
			}
			evs = append(evs, eventHit{ek, e})
		}
		err := tx.Bucket(bStates).ForEach(func(k, v []byte) error {
			if !bytes.Contains(v, needle) {
				return nil
			}
			var s mapping.State
			if db.seal.DecodeState(v, &s) == nil && s.AppUserID == appUserID {
				sts = append(sts, stateHit{append([]byte(nil), k...), s})
			}
			return nil
		})
		if err != nil {
			return err
		}
		kids := map[vault.KID]bool{}
		KIDs(kids).Add(users.Get([]byte(uk)))
		if err := users.Delete([]byte(uk)); err != nil {
			return err
		}
		db.users.forget(uk)
		if err := db.eraseRecords(tx, evs, sts, "", kids); err != nil {
			return err
		}
		if err := db.seal.Destroy(KIDs(kids).List()); err != nil {
			return err
		}
		for _, k := range index {
			if err := ue.Delete(k); err != nil {
				return err
			}
		}
		n = len(evs)
		return nil
	}, nil)
	return n, err
}

func userEventKey(userKey, eventID string) []byte { return []byte(userKey + "\x00" + eventID) }
