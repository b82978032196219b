package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store/vault"
)

// TestCryptoErasure: the data keys of an erased user are gone from the key
// file and the database (not a byte of them is left), the records they
// sealed stay in the file as ciphertext that no key opens, and another
// user's records still open.
func TestCryptoErasure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "postback.db")
	db := mustOpenAt(t, path)
	ctx := context.Background()
	for _, u := range []string{"victim", "bystander"} {
		n := &mapping.Notification{Source: mapping.SourceCustom, Key: "k-" + u, ReceivedAt: time.Now(),
			Body: []byte(`{"events":[{"type":"purchase","app_id":"a","app_user_id":"` + u + `","transaction_id":"t-` + u + `","identifiers":{"idfa":"IDFA-` + u + `"},"attributes":{"nick":"NICK-` + u + `"}}]}`)}
		if _, err := db.Ingest(ctx, n); err != nil {
			t.Fatal(err)
		}
		if _, err := db.PutUser(ctx, u, map[string]string{"adid": "ADID-" + u}); err != nil {
			t.Fatal(err)
		}
	}
	// The victim's keys: those its records are sealed with.
	var victimKeys []*[32]byte
	var sealed [][]byte
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bEvents, bUsers} {
			err := tx.Bucket(b).ForEach(func(k, v []byte) error {
				var e mapping.Event
				var u User
				if bytes.Equal(b, bEvents) && (db.seal.DecodeEvent(v, &e) != nil || e.User.AppUserID != "victim") ||
					bytes.Equal(b, bUsers) && (db.seal.DecodeUser(v, &u) != nil || u.AppUserID != "victim") {
					return nil
				}
				if kid, ok := KIDOf(v); ok {
					key, err := db.keys.DataKey(kid, false)
					if err != nil {
						return err
					}
					victimKeys = append(victimKeys, key)
					sealed = append(sealed, append([]byte(nil), v...))
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(victimKeys) < 2 {
		t.Fatal("no sealed record of the victim: the test would prove nothing")
	}
	keyFile := path + ".keys"
	if raw, _ := os.ReadFile(keyFile); !bytes.Contains(raw, victimKeys[0][:]) {
		t.Fatal("the victim's key is not in the key file before the erasure")
	}
	if n, err := db.DeleteUser(ctx, "victim"); err != nil || n != 1 {
		t.Fatalf("DeleteUser: %d %v", n, err)
	}
	db.Close()
	for _, f := range []string{path, keyFile} {
		raw, _ := os.ReadFile(f)
		for _, k := range victimKeys {
			if bytes.Contains(raw, k[:]) {
				t.Errorf("%s still holds a destroyed data key", filepath.Base(f))
			}
		}
		if bytes.Contains(raw, []byte("IDFA-victim")) || bytes.Contains(raw, []byte("NICK-victim")) {
			t.Errorf("%s holds a planted value in clear", filepath.Base(f))
		}
	}
	db = mustOpenAt(t, path)
	for _, v := range sealed {
		var e mapping.Event
		if err := db.seal.DecodeEvent(v, &e); err != nil {
			t.Fatal(err)
		}
		if e.User.AppUserID != "" || len(e.User.Identifiers) != 0 || len(e.Attributes) != 0 {
			t.Errorf("an old copy of the victim's record still opens: %+v", e.User)
		}
	}
	p, err := db.Events(EventFilter{AppUserID: "bystander"})
	if err != nil || len(p.Events) != 1 || p.Events[0].Identifier("idfa") != "IDFA-bystander" || p.Events[0].Attributes["nick"] != "NICK-bystander" {
		t.Fatalf("the bystander's event: %+v %v", p.Events, err)
	}
	if u, err := db.GetUser("bystander"); err != nil || u.Identifiers["adid"] != "ADID-bystander" {
		t.Fatalf("the bystander's identity: %+v %v", u, err)
	}
}

// TestKeyFileMustMatch: a database refuses to start without its key file,
// or with another database's, naming the file and what to do.
func TestKeyFileMustMatch(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	mustOpenAt(t, a).Close()
	mustOpenAt(t, b).Close()
	if err := os.Rename(a+".keys", a+".keys.moved"); err != nil {
		t.Fatal(err)
	}
	_, err := Open(a, nil)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(a+".keys is missing")) || !bytes.Contains([]byte(err.Error()), []byte("Restore")) {
		t.Fatalf("missing key file: %v", err)
	}
	raw, _ := os.ReadFile(b + ".keys")
	if err := os.WriteFile(a+".keys", raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(a, nil); err == nil || !bytes.Contains([]byte(err.Error()), []byte("belongs to another database")) {
		t.Fatalf("another database's key file: %v", err)
	}
}

// TestUpgradeSealsSchema1: a file written before sealing (plain records,
// raw app user ids as keys) is sealed at open; every record reads back the
// same and the user's index entries move to their keyed hashes.
func TestUpgradeSealsSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	ev := mapping.Event{ID: "evt_old", Type: mapping.Purchase, Source: mapping.SourceCustom, AppID: "a", SourceEventID: "n-old",
		User: mapping.User{AppUserID: "u-old", Identifiers: map[string]string{"idfa": "IDFA-OLD"}}, ReceivedAt: at, OccurredAt: at}
	put := func(tx *bolt.Tx, b []byte, k string, v any) {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Bucket(b).Put([]byte(k), data); err != nil {
			t.Fatal(err)
		}
	}
	if err := bdb.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		put(tx, bEvents, ev.ID, &ev)
		put(tx, bInbox, "custom\x00n-old", &mapping.Notification{Source: "custom", Key: "n-old", ReceivedAt: at, Body: []byte(`{"idfa":"IDFA-OLD"}`), Status: mapping.StatusMapped, EventIDs: []string{ev.ID}})
		put(tx, bStates, "custom:s", &mapping.State{Key: "custom:s", AppUserID: "u-old", Identifiers: map[string]string{"idfa": "IDFA-OLD"}})
		put(tx, bUsers, "u-old", &User{AppUserID: "u-old", Identifiers: map[string]string{"adid": "ADID-OLD"}})
		put(tx, bDeliveries, "evt_old|hook", map[string]any{"key": "evt_old|hook", "event_id": "evt_old", "destination": "hook", "state": StateWaiting, "app_user_id": "u-old"})
		if err := tx.Bucket(bUserEvents).Put([]byte("u-old\x00evt_old"), nil); err != nil {
			return err
		}
		if err := tx.Bucket(bWaiting).Put([]byte("u-old\x00evt_old|hook"), nil); err != nil {
			return err
		}
		if err := tx.Bucket(bFwdMemory).Put([]byte("adjust\x00production|idfa:IDFA-OLD|tok"), msKey(at)); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put([]byte("schema"), []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	bdb.Close()

	db := mustOpenAt(t, path)
	if e, err := db.Event("evt_old"); err != nil || e.Identifier("idfa") != "IDFA-OLD" || e.User.AppUserID != "u-old" {
		t.Fatalf("event after the upgrade: %+v %v", e, err)
	}
	if u, err := db.GetUser("u-old"); err != nil || u.Identifiers["adid"] != "ADID-OLD" {
		t.Fatalf("user after the upgrade: %+v %v", u, err)
	}
	if at2, ok, err := db.ForwarderMemory("adjust").Get("production|idfa:IDFA-OLD|tok"); err != nil || !ok || !at2.Equal(at) {
		t.Fatalf("forwarder memory after the upgrade: %v %v %v", at2, ok, err)
	}
	d, err := db.Delivery("evt_old|hook")
	if err != nil || d.UserKey != db.seal.UserKey("u-old") {
		t.Fatalf("delivery after the upgrade: %+v %v", d, err)
	}
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bEvents, bInbox, bStates, bUsers} {
			if err := tx.Bucket(b).ForEach(func(k, v []byte) error {
				if !vault.IsSealed(v) {
					t.Errorf("%s %q not sealed", b, k)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if tx.Bucket(bWaiting).Get([]byte(db.seal.UserKey("u-old")+"\x00evt_old|hook")) == nil {
			t.Error("waiting index not moved to the user key")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := db.DeleteUser(context.Background(), "u-old"); err != nil || n != 1 {
		t.Fatalf("DeleteUser after the upgrade: %d %v", n, err)
	}
	db.Close()
	if _, _, err := Compact(path, false); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	for _, s := range []string{"IDFA-OLD", "ADID-OLD", "u-old"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("%q left in the upgraded, erased and compacted file", s)
		}
	}
}

func mustOpenAt(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, &Options{Map: mapping.Map})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestNotificationBodyNotBase64: a stored notification's body and
// enrichment sit in its sealed part as they are (framed, not base64 inside
// JSON), and read back byte-exact, also from the JSON form of earlier
// builds.
func TestNotificationBodyNotBase64(t *testing.T) {
	db := mustOpenAt(t, filepath.Join(t.TempDir(), "n.db"))
	n := &mapping.Notification{Source: "google", Key: "m-1", ReceivedAt: time.Now().UTC(), Deferred: true,
		Body: []byte(`{"message":{"data":"eyJ2ZXJzaW9uIjoiMS4wIn0="}}`), Enriched: []byte(`{"kind":"androidpublisher#subscriptionPurchaseV2"}`),
		Meta: map[string]string{"subscription": "projects/p/subscriptions/s"}}
	kid := db.seal.KID(InboxSubject(n.Source, n.Key))
	v, err := db.seal.EncodeNotification(n, kid)
	if err != nil {
		t.Fatal(err)
	}
	p, err := vault.Split(v)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := db.keys.DataKey(kid, false)
	plain, err := p.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	if plain[0] != framedNotification || !bytes.HasSuffix(plain, n.Body) || !bytes.Contains(plain, n.Enriched) || bytes.Contains(p.Clear, []byte(`"body":"`)) {
		t.Fatalf("personal part %q, clear %s", plain, p.Clear)
	}
	var got mapping.Notification
	if err := db.seal.DecodeNotification(v, &got); err != nil || !bytes.Equal(got.Body, n.Body) || !bytes.Equal(got.Enriched, n.Enriched) || got.Meta["subscription"] != n.Meta["subscription"] {
		t.Fatalf("read back %+v, %v", got, err)
	}
	// The JSON personal part an earlier build wrote still reads.
	old, _ := json.Marshal(map[string]any{"body": n.Body, "meta": n.Meta})
	v2, err := vault.Seal(kid, key, p.Clear, old)
	if err != nil {
		t.Fatal(err)
	}
	got = mapping.Notification{}
	if err := db.seal.DecodeNotification(v2, &got); err != nil || !bytes.Equal(got.Body, n.Body) {
		t.Fatalf("JSON personal part: %+v, %v", got, err)
	}
}

// TestAltKeysHashed: a notification's secondary dedupe keys (Google's
// purchase token) are stored as keyed hashes, and a re-send under another
// id is still recognised by them.
func TestAltKeysHashed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alt.db")
	db := mustOpenAt(t, path)
	ctx := context.Background()
	const token = "purchase-token-RAW-0123456789|4|1700000000000"
	n := &mapping.Notification{Source: mapping.SourceCustom, Key: "k-1", AltKeys: []string{token}, ReceivedAt: time.Now(),
		Body: []byte(`{"events":[{"type":"purchase","app_id":"a","app_user_id":"u","transaction_id":"t-1"}]}`)}
	if _, err := db.Ingest(ctx, n); err != nil {
		t.Fatal(err)
	}
	if n.AltKeys[0] != token {
		t.Fatal("the caller's notification was changed")
	}
	again := *n
	again.Key = "k-2"
	if res, err := db.Ingest(ctx, &again); err != nil || !res.Duplicate {
		t.Fatalf("re-send under another id: %+v %v", res, err)
	}
	db.Close()
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte("purchase-token-RAW")) {
		t.Error("a raw purchase token is in the file")
	}
}

// TestPruneDestroysOwnEventKey: an event with no subscription and no app
// user (a one-off order) is sealed under its own key, which retention
// destroys with the event, so the key file does not grow with orders.
func TestPruneDestroysOwnEventKey(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	clock := now
	db, err := Open(filepath.Join(t.TempDir(), "own.db"), &Options{Now: func() time.Time { return clock },
		Map: func(n *mapping.Notification, _ mapping.States) (mapping.Result, error) {
			return mapping.Result{Events: []mapping.Event{{ID: "evt_" + n.Key, Type: mapping.Purchase, Source: n.Source, SourceEventID: n.Key,
				OccurredAt: n.ReceivedAt, ReceivedAt: n.ReceivedAt, User: mapping.User{Identifiers: map[string]string{"ip": "203.0.113.9"}}}}}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Ingest(context.Background(), &mapping.Notification{Source: "shopify", Key: "order-1", Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	kid := db.seal.KID(OwnEventSubject("evt_order-1"))
	if _, err := db.keys.DataKey(kid, false); err != nil {
		t.Fatalf("the event is not sealed under its own key: %v", err)
	}
	clock = now.Add(48 * time.Hour)
	if r, err := db.Prune(context.Background(), time.Hour); err != nil || r.Events != 1 {
		t.Fatalf("prune: %+v %v", r, err)
	}
	if _, err := db.keys.DataKey(kid, false); !errors.Is(err, vault.ErrNoKey) {
		t.Errorf("the pruned event's own key is still there: %v", err)
	}
}

// TestKIDsFor: the keys listed for a new notification are exactly those
// its sealed records use: its own (with a body), its events' with a
// personal part and its states' with one, each once; nothing for records
// stored clear.
func TestKIDsFor(t *testing.T) {
	kf, err := vault.OpenKeyFile(filepath.Join(t.TempDir(), "k.keys"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	s := NewSealer(kf)
	n := &mapping.Notification{Source: mapping.SourceStripe, Key: "evt_1", Body: []byte(`{}`)}
	withUser := mapping.Event{ID: "e1", Source: mapping.SourceStripe, SubscriptionID: "sub_1", User: mapping.User{AppUserID: "u1"}}
	sameSub := mapping.Event{ID: "e2", Source: mapping.SourceStripe, SubscriptionID: "sub_1", Attributes: map[string]string{"a": "b"}}
	clearEvent := mapping.Event{ID: "e3", Source: mapping.SourceStripe, SubscriptionID: "sub_2"}
	states := []mapping.State{{Key: "stripe:sub:sub_1", AppUserID: "u1"}, {Key: "stripe:sub:sub_2"}, {AppUserID: "no key"}}
	subject := NotificationSubject(n, &withUser, false)
	got := s.KIDsFor(n, subject, []mapping.Event{withUser, sameSub, clearEvent}, states)
	want := []vault.KID{s.KID(subject), s.KID(StateSubject("stripe:sub:sub_1"))}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("KIDsFor = %v, want %v (the events share the notification's subject)", got, want)
	}
	// Each listed key is the one sealing uses.
	for _, enc := range []func() ([]byte, error){
		func() ([]byte, error) { return s.EncodeNotification(n, s.KID(subject)) },
		func() ([]byte, error) { return s.EncodeEvent(&withUser) },
		func() ([]byte, error) { return s.EncodeState(&states[0]) },
	} {
		v, err := enc()
		if err != nil {
			t.Fatal(err)
		}
		kid, ok := KIDOf(v)
		if !ok || kid != want[0] && kid != want[1] {
			t.Errorf("a record sealed under %v, not a listed key", kid)
		}
	}
	ev, err := s.EncodeEvent(&clearEvent)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := s.EncodeState(&states[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range [][]byte{ev, sv} {
		if _, ok := KIDOf(v); ok {
			t.Error("a record without a personal part was sealed")
		}
	}
	if kids := s.KIDsFor(&mapping.Notification{Source: "x", Key: "y"}, "day", nil, nil); len(kids) != 0 {
		t.Errorf("a notification without body or records lists %v", kids)
	}
}
