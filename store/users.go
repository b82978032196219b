package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
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

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// mergeUser fills identifiers the event lacks from the identity store. Values
// the event already carries (from the notification itself) win.
func mergeUser(users *bolt.Bucket, e *mapping.Event) {
	if e.User.AppUserID == "" {
		return
	}
	var u User
	if ok, err := getJSON(users, []byte(e.User.AppUserID), &u); err != nil || !ok {
		return
	}
	u.Fill(e)
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
		if _, err := getJSON(users, []byte(appUserID), &u); err != nil {
			return softError{err}
		}
		u.Merge(appUserID, ids, db.opts.Now())
		if err := putJSON(users, []byte(appUserID), &u); err != nil {
			return err
		}
		// Release waiting deliveries of this user.
		deliveries := tx.Bucket(bDeliveries)
		w := tx.Bucket(bWaiting)
		prefix := []byte(appUserID + "\x00")
		var keys [][]byte
		c := w.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		now := db.opts.Now()
		for _, k := range keys {
			dk := k[len(prefix):]
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
		ok, err := getJSON(tx.Bucket(bUsers), []byte(appUserID), &u)
		if err == nil && !ok {
			err = fmt.Errorf("%w: user %s", ErrNotFound, appUserID)
		}
		return err
	})
	return u, err
}

// DeleteUser erases a user's identifiers (a privacy deletion): the identity
// record, the identifiers on that user's stored events, the bodies of the
// raw notifications those events came from, and the identity that
// per-subscription states remember for the user (so that a later
// notification does not bring it back). It returns how many events were
// scrubbed. Erasing an unknown user scrubs nothing and is not an error.
func (db *DB) DeleteUser(ctx context.Context, appUserID string) (int, error) {
	if err := checkUserID(appUserID); err != nil {
		return 0, err
	}
	quoted, err := json.Marshal(appUserID)
	if err != nil {
		return 0, err
	}
	// Cheap pre-filter on the raw JSON before decoding a value.
	needle := append([]byte(`"app_user_id":`), quoted...)
	var n int
	err = db.submit(ctx, func(tx *bolt.Tx) error {
		n = 0
		if err := tx.Bucket(bUsers).Delete([]byte(appUserID)); err != nil {
			return err
		}
		type upd struct {
			k []byte
			v any
		}
		var events, states []upd
		var sources [][]byte // inbox keys of the user's events
		// The user's events come from the user_events index, so an erasure
		// reads only that user's events, not the whole store.
		eb := tx.Bucket(bEvents)
		prefix := userEventKey(appUserID, "")
		c := tx.Bucket(bUserEvents).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			id := k[len(prefix):]
			v := eb.Get(id)
			if v == nil {
				continue
			}
			var e mapping.Event
			if err := json.Unmarshal(v, &e); err != nil {
				continue
			}
			if e.User.AppUserID != appUserID {
				continue
			}
			sources = append(sources, inboxKey(e.Source, e.SourceEventID))
			if len(e.User.Identifiers) > 0 {
				e.User.Identifiers = nil
				events = append(events, upd{append([]byte(nil), id...), &e})
			}
		}
		err := tx.Bucket(bStates).ForEach(func(k, v []byte) error {
			if !bytes.Contains(v, needle) {
				return nil
			}
			var s mapping.State
			if err := json.Unmarshal(v, &s); err != nil {
				return nil
			}
			if s.AppUserID == appUserID {
				s.Identifiers = nil
				states = append(states, upd{append([]byte(nil), k...), &s})
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, u := range events {
			if err := putJSON(tx.Bucket(bEvents), u.k, u.v); err != nil {
				return err
			}
			n++
		}
		// The raw notifications behind those events carry the same
		// identifiers (metadata, note attributes, hashed emails): their
		// bodies are erased too, keeping the inbox entry (the dedupe key and
		// the event ids) so a store retry is still recognised.
		inbox := tx.Bucket(bInbox)
		for _, ik := range sources {
			if err := eraseInboxBody(inbox, ik, ErasedReason); err != nil {
				return err
			}
		}
		for _, u := range states {
			if err := putJSON(tx.Bucket(bStates), u.k, u.v); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	return n, err
}

func userEventKey(user, eventID string) []byte { return []byte(user + "\x00" + eventID) }
