package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/vault"
)

// Sealer encodes the records that carry personal data, for both stores:
// personal fields (identifiers, app user ids, attributes, notification
// bodies, headers and enrichments, a queued erasure's target) are sealed
// with the data key of the record's subject (see package vault); the rest
// stays clear so indexes, reports and revenue never need a key. It also
// computes the keyed hashes that replace raw identifiers used as keys.
type Sealer struct {
	keys vault.Keyring
	h    vault.Hasher
}

// NewSealer returns the sealer of a keyring.
func NewSealer(keys vault.Keyring) *Sealer {
	return &Sealer{keys: keys, h: vault.NewHasher(keys.Secret())}
}

// Keys is the keyring.
func (s *Sealer) Keys() vault.Keyring { return s.keys }

// UserKey is the stored form of an app user id wherever it is a key or an
// indexed column.
func (s *Sealer) UserKey(appUserID string) string { return s.h.Hash("user", appUserID) }

// MemoryKey is the keyed hash of one part of a forwarder memory key.
func (s *Sealer) MemoryKey(part string) string { return s.h.Hash("memory", part) }

// HashMemoryKey is the stored form of a forwarder memory key such as
// Adjust's "environment|kind:value|token": each "|"-separated part hashed
// on its own, so an erasure finds a device's entries by its hashed
// "kind:value" alone.
func (s *Sealer) HashMemoryKey(key string) string {
	parts := strings.Split(key, "|")
	for i, p := range parts {
		parts[i] = s.MemoryKey(p)
	}
	return strings.Join(parts, "|")
}

// SearchKey is the stored form of a value a store indexes for search
// only (the PostgreSQL store's purchase token column).
func (s *Sealer) SearchKey(v string) string { return s.h.Hash("search", v) }

// OrderKey is the stored form of a forwarder's ordering key (device ids).
func (s *Sealer) OrderKey(key string) string { return s.h.Hash("order", key) }

// AltKeys is the stored form of a notification's secondary dedupe keys
// (Google's purchase token with type and time, Shopify's ids and body
// digest): keyed hashes, so no purchase token is a database key. It is
// idempotent, so a notification ingested twice keeps the same keys.
func (s *Sealer) AltKeys(keys []string) []string {
	if len(keys) == 0 {
		return keys
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		if strings.HasPrefix(k, altPrefix) {
			out[i] = k
		} else {
			out[i] = altPrefix + s.h.Hash("alt", k)
		}
	}
	return out
}

const altPrefix = "h1:"

// WithHashedAltKeys is a copy of n whose alt keys are stored forms (the
// caller's notification is left as it was): both stores ingest this.
func (s *Sealer) WithHashedAltKeys(n *mapping.Notification) *mapping.Notification {
	c := *n
	c.AltKeys = s.AltKeys(n.AltKeys)
	return &c
}

// KID is the key id of a subject.
func (s *Sealer) KID(subject string) vault.KID { return s.h.KID(subject) }

// Subjects: whose data key seals a record. A subject is one person's
// (a subscription, an app user) or one notification's, never shared by
// two people, so destroying it erases nobody else.

// EventSubject is the subject of an event: its subscription, else its app
// user, else the event itself (OwnEventSubject).
func EventSubject(e *mapping.Event) string {
	switch {
	case e.SubscriptionID != "":
		return "sub\x00" + e.Source + "\x00" + e.SubscriptionID
	case e.User.AppUserID != "":
		return UserSubject(e.User.AppUserID)
	}
	return OwnEventSubject(e.ID)
}

// OwnEventSubject is the subject of an event sealed under its own key (no
// subscription, no app user: a one-off order): retention destroys that key
// with the event.
func OwnEventSubject(id string) string { return "event\x00" + id }

// UserSubject is the subject of an app user.
func UserSubject(appUserID string) string { return "user\x00" + appUserID }

// StateSubject is the subject of a per-subscription state.
func StateSubject(key string) string { return "state\x00" + key }

// InboxSubject is the subject of one notification's own key: a
// notification mapped later (enrichment) or one that asks for an erasure.
func InboxSubject(source, key string) string { return "inbox\x00" + source + "\x00" + key }

// DaySubject seals notifications that produced no event (ignored or
// failed): one key per source and day, destroyed when retention prunes the
// day.
func DaySubject(source string, t time.Time) string {
	return "day\x00" + source + "\x00" + t.UTC().Format(time.DateOnly)
}

// NotificationSubject is the subject a notification is first stored
// under: its first event's, its own when it will be mapped later or asks
// for an erasure, else its day's.
func NotificationSubject(n *mapping.Notification, first *mapping.Event, erasure bool) string {
	switch {
	case erasure || n.Deferred:
		return InboxSubject(n.Source, n.Key)
	case first != nil:
		return EventSubject(first)
	}
	return DaySubject(n.Source, n.ReceivedAt)
}

// KIDOf returns the key id a stored record is sealed with.
func KIDOf(v []byte) (vault.KID, bool) {
	p, err := vault.Split(v)
	return p.KID, err == nil
}

// ClearPart is the clear JSON of a stored record (all of it when it is not
// sealed), for readers that need no personal field.
func ClearPart(v []byte) []byte {
	if p, err := vault.Split(v); err == nil {
		return p.Clear
	}
	return v
}

// ExpiredKID returns the key id of a notification stored under its own
// or its day's key, which retention may destroy with it once the day is
// wholly before cutoff; ok is false for a notification sealed under a
// person's key (kept for that person's other records).
func (s *Sealer) ExpiredKID(n *mapping.Notification, stored []byte, cutoff time.Time) (vault.KID, bool) {
	kid, ok := KIDOf(stored)
	if !ok {
		return kid, false
	}
	if kid == s.KID(InboxSubject(n.Source, n.Key)) {
		return kid, true
	}
	dayEnd := n.ReceivedAt.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	return kid, kid == s.KID(DaySubject(n.Source, n.ReceivedAt)) && !dayEnd.After(cutoff)
}

// KIDs collects the key ids of stored records: the data keys an erasure
// destroys.
type KIDs map[vault.KID]bool

// Add adds the key id a stored record is sealed with (none for a plain
// record).
func (k KIDs) Add(v []byte) {
	if kid, ok := KIDOf(v); ok {
		k[kid] = true
	}
}

// List returns the ids.
func (k KIDs) List() []vault.KID {
	out := make([]vault.KID, 0, len(k))
	for kid := range k {
		out = append(out, kid)
	}
	return out
}

// seal encodes clear and, when personal is not empty, seals it with the
// subject's key.
func (s *Sealer) seal(kid vault.KID, clear any, personal any, empty bool) ([]byte, error) {
	if empty {
		return json.Marshal(clear)
	}
	key, err := s.keys.DataKey(kid, true)
	if err != nil {
		return nil, err
	}
	return sealRecord(kid, key, clear, personal)
}

// sealRecord seals a record's personal part with a key in hand.
func sealRecord(kid vault.KID, key *[32]byte, clear, personal any) ([]byte, error) {
	c, err := json.Marshal(clear)
	if err != nil {
		return nil, err
	}
	p, err := json.Marshal(personal)
	if err != nil {
		return nil, err
	}
	return vault.Seal(kid, key, c, p)
}

// open decodes a stored record into v: the clear part, then the personal
// part when its key still exists. A destroyed key leaves the personal
// fields empty: the record was erased.
func (s *Sealer) open(v []byte, rec any) error {
	return s.openWith(v, rec, func(p []byte) error { return json.Unmarshal(p, rec) })
}

// openWith is open with the personal part read by personal.
func (s *Sealer) openWith(v []byte, rec any, personal func([]byte) error) error {
	if !vault.IsSealed(v) {
		return json.Unmarshal(v, rec)
	}
	p, err := vault.Split(v)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(p.Clear, rec); err != nil {
		return err
	}
	key, err := s.keys.DataKey(p.KID, false)
	if errors.Is(err, vault.ErrNoKey) {
		return nil
	}
	if err != nil {
		return err
	}
	plain, err := p.Open(key)
	if errors.Is(err, vault.ErrNoKey) {
		return nil // sealed with a key destroyed since (and made anew)
	}
	if err != nil {
		return err
	}
	return personal(plain)
}

type eventPersonal struct {
	User       mapping.User      `json:"user"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// EncodeEvent is the stored form of an event.
func (s *Sealer) EncodeEvent(e *mapping.Event) ([]byte, error) {
	c := *e
	c.User, c.Attributes = mapping.User{}, nil
	p := eventPersonal{User: e.User, Attributes: e.Attributes}
	return s.seal(s.h.KID(EventSubject(e)), &c, &p, !eventPersonalOf(e))
}

// eventPersonalOf reports whether an event has a personal part to seal.
func eventPersonalOf(e *mapping.Event) bool {
	return e.User.AppUserID != "" || len(e.User.Identifiers) > 0 || len(e.Attributes) > 0
}

// statePersonalOf reports whether a state has a personal part to seal.
func statePersonalOf(st *mapping.State) bool {
	return st.AppUserID != "" || len(st.Identifiers) > 0 || len(st.Values) > 0
}

// notePersonalOf reports whether a notification has a personal part to seal.
func notePersonalOf(n *mapping.Notification) bool {
	return len(n.Body) > 0 || len(n.Meta) > 0 || len(n.Enriched) > 0
}

// KIDsFor lists the keys that sealing a new notification stored under
// subject, its events and its states will use, once each: a store whose
// keys are made in a round trip of their own makes them all in one
// beforehand (the PostgreSQL keyring's MakeKeys).
func (s *Sealer) KIDsFor(n *mapping.Notification, subject string, events []mapping.Event, states []mapping.State) []vault.KID {
	var kids []vault.KID
	add := func(subject string) {
		kid := s.h.KID(subject)
		for _, k := range kids {
			if k == kid {
				return
			}
		}
		kids = append(kids, kid)
	}
	if notePersonalOf(n) {
		add(subject)
	}
	for i := range events {
		if eventPersonalOf(&events[i]) {
			add(EventSubject(&events[i]))
		}
	}
	for i := range states {
		if states[i].Key != "" && statePersonalOf(&states[i]) {
			add(StateSubject(states[i].Key))
		}
	}
	return kids
}

// DecodeEvent reads a stored event.
func (s *Sealer) DecodeEvent(v []byte, e *mapping.Event) error { return s.open(v, e) }

type stateClear struct {
	*mapping.State
	// UserKey lets a store find a user's states without a key.
	UserKey string `json:"uk,omitempty"`
}

type statePersonal struct {
	AppUserID   string            `json:"app_user_id,omitempty"`
	Identifiers map[string]string `json:"identifiers,omitempty"`
	Values      map[string]string `json:"values,omitempty"`
}

// EncodeState is the stored form of a per-subscription state.
func (s *Sealer) EncodeState(st *mapping.State) ([]byte, error) {
	c := *st
	c.AppUserID, c.Identifiers, c.Values = "", nil, nil
	p := statePersonal{AppUserID: st.AppUserID, Identifiers: st.Identifiers, Values: st.Values}
	return s.seal(s.h.KID(StateSubject(st.Key)), stateClear{State: &c, UserKey: s.UserKey(st.AppUserID)}, &p, !statePersonalOf(st))
}

// DecodeState reads a stored state.
func (s *Sealer) DecodeState(v []byte, st *mapping.State) error { return s.open(v, st) }

// StateUserNeedle is the text a stored state of appUserID contains.
func (s *Sealer) StateUserNeedle(appUserID string) []byte {
	return []byte(`"uk":"` + s.UserKey(appUserID) + `"`)
}

// A notification's personal part is framed, not JSON, so its raw body and
// enrichment (JSON documents themselves) are stored as they are, without a
// base64 layer:
//
//	0x02 | uvarint len(meta JSON) | meta JSON | uvarint len(enriched) | enriched | body
const framedNotification = 0x02

func frameNotification(n *mapping.Notification) ([]byte, error) {
	var meta []byte
	if len(n.Meta) > 0 {
		var err error
		if meta, err = json.Marshal(n.Meta); err != nil {
			return nil, err
		}
	}
	out := make([]byte, 0, 1+2*binary.MaxVarintLen32+len(meta)+len(n.Enriched)+len(n.Body))
	out = append(out, framedNotification)
	out = binary.AppendUvarint(out, uint64(len(meta)))
	out = append(out, meta...)
	out = binary.AppendUvarint(out, uint64(len(n.Enriched)))
	out = append(out, n.Enriched...)
	return append(out, n.Body...), nil
}

func unframeNotification(p []byte, n *mapping.Notification) error {
	if len(p) == 0 || p[0] != framedNotification {
		return json.Unmarshal(p, n) // written as JSON by an earlier build
	}
	p = p[1:]
	field := func() ([]byte, error) {
		l, w := binary.Uvarint(p)
		if w <= 0 || l > uint64(len(p)-w) {
			return nil, vault.ErrSealed
		}
		f := p[w : w+int(l)]
		p = p[w+int(l):]
		return f, nil
	}
	meta, err := field()
	if err != nil {
		return err
	}
	enriched, err := field()
	if err != nil {
		return err
	}
	if len(meta) > 0 {
		if err := json.Unmarshal(meta, &n.Meta); err != nil {
			return err
		}
	}
	if len(enriched) > 0 {
		n.Enriched = append([]byte(nil), enriched...)
	}
	if len(p) > 0 {
		n.Body = append([]byte(nil), p...)
	}
	return nil
}

// EncodeNotification is the stored form of a notification, sealed under
// kid (see NotificationSubject; a rewrite keeps the kid it was stored
// under).
func (s *Sealer) EncodeNotification(n *mapping.Notification, kid vault.KID) ([]byte, error) {
	c := *n
	c.Body, c.Meta, c.Enriched = nil, nil, nil
	clear, err := json.Marshal(&c)
	if err != nil || !notePersonalOf(n) {
		return clear, err
	}
	p, err := frameNotification(n)
	if err != nil {
		return nil, err
	}
	key, err := s.keys.DataKey(kid, true)
	if err != nil {
		return nil, err
	}
	return vault.Seal(kid, key, clear, p)
}

// ReencodeNotification stores a changed notification under the key its
// previous version prev used (or subject's, when prev was not sealed).
func (s *Sealer) ReencodeNotification(n *mapping.Notification, prev []byte, subject string) ([]byte, error) {
	kid, ok := KIDOf(prev)
	if !ok {
		kid = s.h.KID(subject)
	}
	return s.EncodeNotification(n, kid)
}

// DecodeNotification reads a stored notification.
func (s *Sealer) DecodeNotification(v []byte, n *mapping.Notification) error {
	return s.openWith(v, n, func(p []byte) error { return unframeNotification(p, n) })
}

type userPersonal struct {
	AppUserID   string            `json:"app_user_id"`
	Identifiers map[string]string `json:"identifiers"`
}

// EncodeUser is the stored form of a user's identifiers.
func (s *Sealer) EncodeUser(u *User) ([]byte, error) {
	c := User{UpdatedAt: u.UpdatedAt}
	return s.seal(s.h.KID(UserSubject(u.AppUserID)), &c, &userPersonal{AppUserID: u.AppUserID, Identifiers: u.Identifiers}, false)
}

// DecodeUser reads a stored user.
func (s *Sealer) DecodeUser(v []byte, u *User) error { return s.open(v, u) }

type jobPersonal struct {
	IDValue        string `json:"id_value,omitempty"`
	EventAttrValue string `json:"event_attr_value,omitempty"`
}

// EncodeJob is the stored form of a queued erasure: the person it names is
// sealed with the key of the notification that asked for it, destroyed
// when the erasure is done.
func (s *Sealer) EncodeJob(j *ErasureJob, source, key string) ([]byte, error) {
	c := *j
	c.IDValue, c.EventAttrValue = "", ""
	return s.seal(s.h.KID(InboxSubject(source, key)), &c, &jobPersonal{IDValue: j.IDValue, EventAttrValue: j.EventAttrValue}, false)
}

// DecodeJob reads a queued erasure. A job whose key is gone cannot name
// its target any more.
func (s *Sealer) DecodeJob(v []byte) (ErasureJob, error) {
	var job ErasureJob
	if err := s.open(v, &job); err != nil {
		return job, err
	}
	if err := checkJob(&job); err != nil {
		return job, err
	}
	if job.IDValue == "" && job.EventAttrValue == "" {
		return job, fmt.Errorf("store: erasure job names nobody (its key is gone)")
	}
	return job, nil
}

// Destroy destroys data keys (an erasure), durably.
func (s *Sealer) Destroy(kids []vault.KID) error { return s.keys.Destroy(kids) }

type attemptPersonal struct {
	Request  string `json:"request,omitempty"`
	Response string `json:"response,omitempty"`
}

// EncodeAttempt is the stored form of a delivery attempt: the request as
// sent (which carries the event's identifiers) and the answer are sealed
// with the key of the event's record, eventDoc as stored; an event with
// nothing personal leaves the attempt plain.
// Without its event (gone: pruned), the request and answer are dropped.
func (s *Sealer) EncodeAttempt(a *Attempt, eventDoc []byte) ([]byte, error) {
	if eventDoc == nil {
		c := *a
		c.Request, c.Response = "", ""
		return json.Marshal(&c)
	}
	kid, sealed := KIDOf(eventDoc)
	return s.encodeAttempt(a, kid, sealed)
}

// EncodeClaimedAttempt is EncodeAttempt for an attempt at a claimed
// delivery: sealed with the key its event had when claimed (NoteClaim),
// else with eventDoc's (the event as stored now).
func (s *Sealer) EncodeClaimedAttempt(a *Attempt, claimed *Delivery, eventDoc []byte) ([]byte, error) {
	if claimed.ClaimNoted() {
		return s.encodeAttempt(a, claimed.claim.kid, claimed.claim.sealed)
	}
	return s.EncodeAttempt(a, eventDoc)
}

// encodeAttempt is EncodeAttempt with the event's data key already known.
// An attempt never makes a key: its event was sealed with it first. When
// that key is gone (the event was erased while the request was in flight),
// the request and answer, which carry the erased identifiers, are dropped.
func (s *Sealer) encodeAttempt(a *Attempt, kid vault.KID, sealed bool) ([]byte, error) {
	if !sealed {
		return json.Marshal(a)
	}
	c := *a
	c.Request, c.Response = "", ""
	if a.Request == "" && a.Response == "" {
		return json.Marshal(&c)
	}
	key, err := s.keys.DataKey(kid, false)
	if errors.Is(err, vault.ErrNoKey) {
		return json.Marshal(&c)
	}
	if err != nil {
		return nil, err
	}
	return sealRecord(kid, key, &c, &attemptPersonal{Request: a.Request, Response: a.Response})
}

// DecodeAttempt reads a stored attempt.
func (s *Sealer) DecodeAttempt(v []byte, a *Attempt) error { return s.open(v, a) }
