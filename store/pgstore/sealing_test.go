package pgstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
	"github.com/postback/postback/store/pgstore/pgtest"
	"github.com/postback/postback/store/vault"
)

// What a person's records carry, planted to be looked for in every table.
const (
	plantUser  = "planted-user-7c1e42"
	plantIDFA  = "PLANTED-IDFA-91f2aa"
	plantGAID  = "PLANTED-GAID-33b0cc"
	plantAttr  = "planted-shop-55ab.example"
	plantEmail = "planted.person.0e7d@example.com"
	plantBody  = "planted-body-line-4d19"
)

func plantedIDs() map[string]string {
	ids := map[string]string{mapping.IDIDFA: plantIDFA}
	mapping.SetEmail(ids, plantEmail)
	return ids
}

// plantMap maps every notification to one event of plantUser with the
// planted identifiers and attribute, and a state that remembers them.
func plantMap(n *mapping.Notification, _ mapping.States) (mapping.Result, error) {
	e := mapping.Event{
		ID: mapping.EventID("test", n.Key), Type: mapping.Purchase, Source: n.Source, Environment: "production", AppID: "app",
		SubscriptionID: "sub-" + n.Key, TransactionID: "tx-" + n.Key, SourceEventID: n.Key, OccurredAt: n.ReceivedAt,
		User:       mapping.User{AppUserID: plantUser, Identifiers: plantedIDs()},
		Attributes: map[string]string{"shop_domain": plantAttr, "purchase_token": "tok-" + n.Key},
	}
	st := mapping.State{Key: "test:" + n.Key, AppUserID: plantUser, Identifiers: plantedIDs(), Values: map[string]string{"seen": "1"}}
	return mapping.Result{Events: []mapping.Event{e}, States: []mapping.State{st}}, nil
}

func openTest(t *testing.T, dsn string, o *Options) *DB {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.PoolSize = 6
	db, err := Open(context.Background(), dsn, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// needles are the planted values in the forms a dump could show them:
// raw, hex and base64.
func needles(vals ...string) map[string]string {
	out := map[string]string{}
	for _, v := range vals {
		out[v] = v
		out[v+" (hex)"] = hex.EncodeToString([]byte(v))
		out[v+" (base64)"] = base64.StdEncoding.EncodeToString([]byte(v))
		out[v+" (base64url)"] = base64.RawURLEncoding.EncodeToString([]byte(v))
	}
	return out
}

// findPlanted dumps every table (each row as JSON, bytea as hex) and
// reports where a needle occurs.
func findPlanted(t *testing.T, db *DB, ns map[string]string) []string {
	t.Helper()
	ctx := context.Background()
	rows, err := db.pool.Query(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	if len(tables) < 10 {
		t.Fatalf("only %d tables: %v", len(tables), tables)
	}
	var found []string
	for _, tb := range tables {
		rows, err := db.pool.Query(ctx, `SELECT row_to_json(t)::text FROM "`+tb+`" t`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			low := strings.ToLower(s)
			for what, n := range ns {
				if strings.Contains(s, n) || strings.Contains(low, strings.ToLower(n)) && strings.HasSuffix(what, "(hex)") {
					found = append(found, what+" in "+tb+": "+s)
				}
			}
		}
		rows.Close()
	}
	return found
}

// TestDeleteUserDestroysKeys: personal fields are sealed in every table;
// after DeleteUser the user's data keys are gone from data_keys, the
// planted values are in no table in any form, and the documents as they
// were before the erasure (a backup) no longer open.
func TestDeleteUserDestroysKeys(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()
	db := openTest(t, dsn, &Options{Options: store.Options{Map: plantMap, Route: func(*mapping.Event) []string { return []string{"hook"} }}})
	for _, key := range []string{"n1", "n2"} {
		n := &mapping.Notification{Source: mapping.SourceStripe, Key: key, Body: []byte(`{"line":"` + plantBody + `","idfa":"` + plantIDFA + `","email":"` + plantEmail + `"}`),
			Meta: map[string]string{"x-shop": plantAttr}}
		if res, err := db.Ingest(ctx, n); err != nil || len(res.Events) != 1 {
			t.Fatalf("ingest %s: %+v %v", key, res, err)
		}
	}
	if _, err := db.PutUser(ctx, plantUser, map[string]string{mapping.IDGAID: plantGAID}); err != nil {
		t.Fatal(err)
	}
	if err := db.ForwarderMemory("adj").Put("production|"+mapping.IDIDFA+":"+plantIDFA+"|token", time.Now()); err != nil {
		t.Fatal(err)
	}
	var emailHash string
	for k, v := range plantedIDs() {
		if k != mapping.IDIDFA {
			emailHash = v
		}
	}
	if emailHash == "" {
		t.Fatal("no email hash planted")
	}
	ns := needles(plantUser, plantIDFA, plantGAID, plantAttr, plantEmail, plantBody, emailHash)
	// The dump finds what is stored in the clear (the transaction id).
	if found := findPlanted(t, db, needles("tx-n1")); len(found) == 0 {
		t.Fatal("the dump does not find a clear value")
	}

	// Sealed from the start: nothing planted is readable in the tables.
	if found := findPlanted(t, db, ns); len(found) > 0 {
		t.Fatalf("planted values stored in the clear:\n%s", strings.Join(found, "\n"))
	}
	// And readable through the store.
	e, err := db.Event(mapping.EventID("test", "n1"))
	if err != nil || e.User.AppUserID != plantUser || e.Identifier(mapping.IDIDFA) != plantIDFA || e.Identifier(mapping.IDGAID) != plantGAID || e.Attributes["shop_domain"] != plantAttr {
		t.Fatalf("event before erasure: %+v %v", e, err)
	}
	if page, err := db.DeliveryLog(store.LogFilter{Search: "tok-n1"}); err != nil || page.Total != 1 {
		t.Fatalf("log search by purchase token: %d %v", page.Total, err)
	}
	if page, err := db.DeliveryLog(store.LogFilter{Search: plantUser}); err != nil || page.Total != 2 {
		t.Fatalf("log search by app user id: %d %v", page.Total, err)
	}

	// The documents as a backup taken now holds them.
	type old struct {
		table string
		doc   []byte
	}
	var olds []old
	kids := map[vault.KID]bool{}
	for _, tb := range []string{"inbox", "events", "states", "users"} {
		rows, err := db.pool.Query(ctx, "SELECT doc FROM "+tb)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var d []byte
			if err := rows.Scan(&d); err != nil {
				t.Fatal(err)
			}
			kid, ok := store.KIDOf(d)
			if !ok {
				t.Fatalf("%s document not sealed: %s", tb, d)
			}
			kids[kid] = true
			olds = append(olds, old{tb, d})
		}
		rows.Close()
	}

	n, err := db.DeleteUser(ctx, plantUser)
	if err != nil || n != 2 {
		t.Fatalf("DeleteUser = %d, %v", n, err)
	}
	var left int
	ids := make([][]byte, 0, len(kids))
	for k := range kids {
		ids = append(ids, bytes.Clone(k[:]))
	}
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM data_keys WHERE kid = ANY($1)", ids).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d of the user's %d data keys left (%v)", left, len(kids), err)
	}
	if found := findPlanted(t, db, ns); len(found) > 0 {
		t.Fatalf("planted values left after DeleteUser:\n%s", strings.Join(found, "\n"))
	}
	if _, ok, _ := db.ForwarderMemory("adj").Get("production|" + mapping.IDIDFA + ":" + plantIDFA + "|token"); ok {
		t.Error("forwarder memory of the erased device survived")
	}
	// A backup's documents: the clear parts, nothing personal.
	for _, o := range olds {
		p, err := vault.Split(o.doc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.keys.DataKey(p.KID, false); !errors.Is(err, vault.ErrNoKey) {
			t.Fatalf("%s document's key still there: %v", o.table, err)
		}
		switch o.table {
		case "events":
			var e mapping.Event
			if err := db.seal.DecodeEvent(o.doc, &e); err != nil || e.User.AppUserID != "" || len(e.User.Identifiers) > 0 || len(e.Attributes) > 0 {
				t.Fatalf("old event opened: %+v %v", e, err)
			}
		case "inbox":
			var nt mapping.Notification
			if err := db.seal.DecodeNotification(o.doc, &nt); err != nil || nt.Body != nil || nt.Meta != nil {
				t.Fatalf("old notification opened: %+v %v", nt, err)
			}
		case "states":
			var st mapping.State
			if err := db.seal.DecodeState(o.doc, &st); err != nil || st.AppUserID != "" || len(st.Identifiers) > 0 {
				t.Fatalf("old state opened: %+v %v", st, err)
			}
		case "users":
			var u store.User
			if err := db.seal.DecodeUser(o.doc, &u); err != nil || u.AppUserID != "" || len(u.Identifiers) > 0 {
				t.Fatalf("old user opened: %+v %v", u, err)
			}
		}
	}
	// The erased events stay, without their person.
	e, err = db.Event(mapping.EventID("test", "n1"))
	if err != nil || e.User.AppUserID != "" || e.Type != mapping.Purchase || e.TransactionID != "tx-n1" {
		t.Fatalf("event after erasure: %+v %v", e, err)
	}
}

// TestDestroyReachesOtherReplicas: a key destroyed by one replica is
// dropped from another replica's cache (NOTIFY), so the other seals the
// subject's next record with a new key, not the destroyed one.
func TestDestroyReachesOtherReplicas(t *testing.T) {
	dsn := pgtest.Database(t)
	a := openTest(t, dsn, nil)
	b := openTest(t, dsn, nil)
	kid := a.seal.KID("test\x00subject")
	k1, err := a.keys.DataKey(kid, true)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !b.keys.live.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if k, err := b.keys.DataKey(kid, true); err != nil || *k != *k1 {
		t.Fatalf("replicas disagree on a key: %v", err)
	}
	if b.keys.cached(kid) == nil {
		t.Fatal("the other replica does not cache the key")
	}
	if err := a.keys.Destroy([]vault.KID{kid}); err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(deadline) {
		if b.keys.cached(kid) == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b.keys.cached(kid) != nil {
		t.Fatal("the other replica still caches the destroyed key")
	}
	if _, err := b.keys.DataKey(kid, false); !errors.Is(err, vault.ErrNoKey) {
		t.Fatalf("destroyed key read back: %v", err)
	}
}

// TestMakeKeys: MakeKeys makes several keys in one go; a kid another
// replica made first gets that replica's key, and a kid listed twice one
// key; every key made is in the database and cached.
func TestMakeKeys(t *testing.T) {
	dsn := pgtest.Database(t)
	a := openTest(t, dsn, nil)
	b := openTest(t, dsn, nil)
	deadline := time.Now().Add(5 * time.Second)
	for (!a.keys.live.Load() || !b.keys.live.Load()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	shared, own := a.seal.KID("test\x00shared"), a.seal.KID("test\x00own")
	kb, err := b.keys.DataKey(shared, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.keys.MakeKeys(context.Background(), []vault.KID{own, shared, own}); err != nil {
		t.Fatal(err)
	}
	if k := a.keys.cached(shared); k == nil || *k != *kb {
		t.Fatal("the key another replica made first is not the one cached")
	}
	ko := a.keys.cached(own)
	if ko == nil {
		t.Fatal("a key made is not cached")
	}
	var n int
	if err := a.pool.QueryRow(context.Background(), "SELECT count(*) FROM data_keys WHERE kid = ANY($1)", [][]byte{own[:], shared[:]}).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d keys in the database (%v), want 2", n, err)
	}
	if k, err := b.keys.DataKey(own, false); err != nil || *k != *ko {
		t.Fatalf("the other replica reads another key: %v", err)
	}
	// Cached kids cost nothing: with the pool closed, it would fail.
	a.keys.pool.Close()
	if err := a.keys.MakeKeys(context.Background(), []vault.KID{own, shared}); err != nil {
		t.Fatalf("cached keys made again: %v", err)
	}
	if err := a.keys.MakeKeys(context.Background(), []vault.KID{a.seal.KID("test\x00new")}); err == nil {
		t.Fatal("a key made without its database")
	}
}

func randomKey(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestEncryptionKeyMismatch: a database refuses a key-encryption key that
// is not the one its keys are wrapped with, and the switch between a
// configured key and one kept in the database, naming
// storage.encryption_key.
func TestEncryptionKeyMismatch(t *testing.T) {
	ctx := context.Background()
	quiet := &Options{Options: store.Options{Logger: slog.New(slog.DiscardHandler)}}
	with := func(k []byte) *Options { o := *quiet; o.EncryptionKey = k; return &o }

	dsn := pgtest.Database(t)
	key := randomKey(t)
	db, err := Open(ctx, dsn, with(key))
	if err != nil {
		t.Fatal(err)
	}
	secret := append([]byte(nil), db.keys.Secret()...)
	db.Close()
	db, err = Open(ctx, dsn, with(key))
	if err != nil || !bytes.Equal(db.keys.Secret(), secret) {
		t.Fatalf("reopen with the same key: %v", err)
	}
	db.Close()
	for name, o := range map[string]*Options{"another key": with(randomKey(t)), "no key": with(nil)} {
		_, err := Open(ctx, dsn, o)
		if !errors.Is(err, ErrEncryptionKey) || !strings.Contains(err.Error(), "storage.encryption_key") {
			t.Errorf("%s: err = %v, want ErrEncryptionKey naming storage.encryption_key", name, err)
		}
	}
	if _, err := Open(ctx, dsn, with([]byte("short"))); !errors.Is(err, ErrEncryptionKey) {
		t.Errorf("a short key: err = %v", err)
	}

	// Made without a key: the key kept in the database serves every
	// replica, and a configured one is refused.
	dsn = pgtest.Database(t)
	db, err = Open(ctx, dsn, with(nil))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(ctx, dsn, with(nil))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(ctx, dsn, with(key)); !errors.Is(err, ErrEncryptionKey) || !strings.Contains(err.Error(), "storage.encryption_key") {
		t.Errorf("a key on a database made without one: err = %v", err)
	}
}

// TestUpgradeSchema1: a database that schema 1 filled (plain documents,
// raw app user ids, raw memory keys) is sealed at open and reads as
// before.
func TestUpgradeSchema1(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()
	// Schema 1 only.
	{
		db := openTest(t, dsn, &Options{NoMigrate: true, migrateOnly: true})
		p, sqldb, err := db.provider()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.UpTo(ctx, 1); err != nil {
			t.Fatal(err)
		}
		p.Close()
		sqldb.Close()
		now := time.Now().UTC().Truncate(time.Millisecond)
		e := mapping.Event{ID: "evt_1", Type: mapping.Purchase, Source: mapping.SourceStripe, Environment: "production", AppID: "app",
			SubscriptionID: "sub_1", SourceEventID: "n1", OccurredAt: now, ReceivedAt: now,
			User: mapping.User{AppUserID: plantUser, Identifiers: plantedIDs()}, Attributes: map[string]string{"shop_domain": plantAttr}}
		n := mapping.Notification{Source: mapping.SourceStripe, Key: "n1", ReceivedAt: now, Body: []byte(plantBody), Status: mapping.StatusMapped, EventIDs: []string{"evt_1"}}
		st := mapping.State{Key: "test:s1", AppUserID: plantUser, Identifiers: plantedIDs()}
		u := store.User{AppUserID: plantUser, Identifiers: map[string]string{mapping.IDGAID: plantGAID}, UpdatedAt: now}
		d := map[string]any{"key": "evt_1|hook", "event_id": "evt_1", "destination": "hook", "state": store.StateWaiting, "created_at": now, "updated_at": now,
			"next_at_ms": now.UnixMilli(), "app_user_id": plantUser}
		job := store.ErasureJob{Erasure: mapping.Erasure{IDKey: mapping.IDIDFA, IDValue: "IDFA-other"}, Phase: store.ErasePhaseNamed, QueuedAt: now}
		doc := func(v any) []byte { b, _ := json.Marshal(v); return b }
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"INSERT INTO inbox (source, key, received_at, status, doc) VALUES ($1, $2, $3, $4, $5)", []any{n.Source, n.Key, now, n.Status, doc(&n)}},
			{"INSERT INTO inbox (source, key, received_at, status, doc) VALUES ($1, 'erase-1', $2, 'ignored', $3)", []any{n.Source, now, doc(&mapping.Notification{Source: n.Source, Key: "erase-1", Body: []byte("{}")})}},
			{"INSERT INTO events (id, received_at, source, type, app_id, environment, app_user_id, subscription_id, source_event_id, doc) VALUES ($1, $2, $3, $4, 'app', 'production', $5, 'sub_1', 'n1', $6)",
				[]any{e.ID, now, e.Source, string(e.Type), plantUser, doc(&e)}},
			{"INSERT INTO states (key, app_user_id, doc) VALUES ($1, $2, $3)", []any{st.Key, plantUser, doc(&st)}},
			{"INSERT INTO users (app_user_id, doc) VALUES ($1, $2)", []any{plantUser, doc(&u)}},
			{"INSERT INTO deliveries (key, event_id, destination, state, next_at_ms, app_user_id, created_at, doc) VALUES ('evt_1|hook', 'evt_1', 'hook', 'waiting', $1, $2, $3, $4)",
				[]any{now.UnixMilli(), plantUser, now, doc(d)}},
			{"INSERT INTO erasures (inbox_source, inbox_key, queued_at, doc) VALUES ($1, 'erase-1', $2, $3)", []any{n.Source, now, doc(&job)}},
			{"INSERT INTO fwd_memory (destination, key, at_ms) VALUES ('adj', $1, 1234)", []any{"production|idfa:" + plantIDFA + "|tok"}},
		} {
			if _, err := db.pool.Exec(ctx, q.sql, q.args...); err != nil {
				t.Fatalf("%s: %v", q.sql, err)
			}
		}
		db.Close()
	}

	db := openTest(t, dsn, nil)
	if found := findPlanted(t, db, needles(plantUser, plantIDFA, plantGAID, plantAttr, plantBody, "IDFA-other")); len(found) > 0 {
		t.Fatalf("planted values left in the clear after the upgrade:\n%s", strings.Join(found, "\n"))
	}
	var pending bool
	if err := db.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM meta WHERE name LIKE 'seal_upgrade%')").Scan(&pending); err != nil || pending {
		t.Fatalf("upgrade marker left: %v %v", pending, err)
	}
	e, err := db.Event("evt_1")
	if err != nil || e.User.AppUserID != plantUser || e.Identifier(mapping.IDIDFA) != plantIDFA || e.Identifier(mapping.IDGAID) != plantGAID || e.Attributes["shop_domain"] != plantAttr {
		t.Fatalf("event after upgrade: %+v %v", e, err)
	}
	if nt, err := db.Notification(mapping.SourceStripe, "n1"); err != nil || string(nt.Body) != plantBody {
		t.Fatalf("notification after upgrade: %+v %v", nt, err)
	}
	if st, ok, err := db.State("test:s1"); err != nil || !ok || st.AppUserID != plantUser || st.Identifiers[mapping.IDIDFA] != plantIDFA {
		t.Fatalf("state after upgrade: %+v %v %v", st, ok, err)
	}
	if at, ok, err := db.ForwarderMemory("adj").Get("production|idfa:" + plantIDFA + "|tok"); err != nil || !ok || at.UnixMilli() != 1234 {
		t.Fatalf("memory after upgrade: %v %v %v", at, ok, err)
	}
	if page, err := db.Events(store.EventFilter{AppUserID: plantUser}); err != nil || len(page.Events) != 1 {
		t.Fatalf("events of the user after upgrade: %+v %v", page, err)
	}
	// The waiting delivery is found by the user's key.
	if _, err := db.PutUser(ctx, plantUser, map[string]string{mapping.IDIDFA: plantIDFA}); err != nil {
		t.Fatal(err)
	}
	var nextMs int64
	if err := db.pool.QueryRow(ctx, "SELECT next_at_ms FROM deliveries WHERE key = 'evt_1|hook'").Scan(&nextMs); err != nil || nextMs <= 0 {
		t.Fatalf("waiting delivery: %d %v", nextMs, err)
	}
	// The queued erasure still names its target.
	var jdoc []byte
	if err := db.pool.QueryRow(ctx, "SELECT doc FROM erasures").Scan(&jdoc); err != nil {
		t.Fatal(err)
	}
	if job, err := db.seal.DecodeJob(jdoc); err != nil || job.IDValue != "IDFA-other" {
		t.Fatalf("erasure job after upgrade: %+v %v", job, err)
	}
	// Erasure works on upgraded records.
	if n, err := db.DeleteUser(ctx, plantUser); err != nil || n != 1 {
		t.Fatalf("DeleteUser after upgrade: %d %v", n, err)
	}
	if e, _ := db.Event("evt_1"); e.User.AppUserID != "" {
		t.Fatalf("event after DeleteUser: %+v", e)
	}
}

// TestPruneDestroysOwnEventKey: an event with no subscription and no app
// user is sealed under its own key, which retention deletes with the event.
func TestPruneDestroysOwnEventKey(t *testing.T) {
	dsn := pgtest.Database(t)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	clock := now
	db := openTest(t, dsn, &Options{Options: store.Options{Now: func() time.Time { return clock },
		Map: func(n *mapping.Notification, _ mapping.States) (mapping.Result, error) {
			return mapping.Result{Events: []mapping.Event{{ID: "evt_" + n.Key, Type: mapping.Purchase, Source: n.Source, SourceEventID: n.Key,
				OccurredAt: n.ReceivedAt, ReceivedAt: n.ReceivedAt, User: mapping.User{Identifiers: map[string]string{"ip": "203.0.113.9"}}}}}, nil
		}}})
	ctx := context.Background()
	if _, err := db.Ingest(ctx, &mapping.Notification{Source: "shopify", Key: "order-1", Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	kid := db.seal.KID(store.OwnEventSubject("evt_order-1"))
	count := func() int {
		var n int
		if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM data_keys WHERE kid = $1", kid[:]).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if count() != 1 {
		t.Fatal("the event is not sealed under its own key")
	}
	clock = now.Add(48 * time.Hour)
	if r, err := db.Prune(ctx, time.Hour); err != nil || r.Events != 1 {
		t.Fatalf("prune: %+v %v", r, err)
	}
	if count() != 0 {
		t.Error("the pruned event's own key is still in data_keys")
	}
}

// TestAttemptsSealed: an attempt's request and answer are sealed with its
// event's key; attempts a release before that stored as plain JSON are
// sealed at the next start (dropping request and answer where the event
// is not sealed), and an erasure makes them unreadable.
func TestAttemptsSealed(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()
	opts := func() *Options {
		return &Options{Options: store.Options{Map: plantMap, Route: func(*mapping.Event) []string { return []string{"hook"} }}}
	}
	db := openTest(t, dsn, opts())
	var keys []string
	for _, key := range []string{"a1", "a2"} {
		if _, err := db.Ingest(ctx, &mapping.Notification{Source: mapping.SourceStripe, Key: key, Body: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := db.Claim(ctx, "hook", time.Now().Add(time.Minute), store.ClaimOptions{Limit: 10, Lease: time.Minute})
	if err != nil || len(ds) != 2 {
		t.Fatalf("claim: %d %v", len(ds), err)
	}
	for i := range ds {
		d := &ds[i]
		keys = append(keys, d.Delivery.Key)
		err := db.Complete(ctx, []store.Completion{{Key: d.Delivery.Key, State: store.StateDelivered, Claimed: &d.Delivery,
			Attempt: &store.Attempt{At: time.Now(), Outcome: "delivered", Status: 200, Request: "POST /x idfa=" + d.Event.Identifier(mapping.IDIDFA), Response: "ok " + plantEmail}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if found := findPlanted(t, db, needles(plantIDFA, plantEmail)); len(found) > 0 {
		t.Fatalf("attempts stored in the clear:\n%s", strings.Join(found, "\n"))
	}
	if as, err := db.Attempts(keys[0]); err != nil || len(as) != 1 || !strings.Contains(as[0].Request, plantIDFA) {
		t.Fatalf("attempt log: %+v %v", as, err)
	}
	// As an earlier release left them: plain attempts, and the second
	// event stored without a seal.
	for _, k := range keys {
		plain, _ := json.Marshal(store.Attempt{N: 1, Outcome: "delivered", Status: 200, Request: "POST /x idfa=" + plantIDFA, Response: "ok"})
		if _, err := db.pool.Exec(ctx, "UPDATE attempts SET doc = $2 WHERE delivery_key = $1", k, plain); err != nil {
			t.Fatal(err)
		}
	}
	eid, _ := store.SplitDeliveryKey(keys[1])
	if _, err := db.pool.Exec(ctx, `UPDATE events SET doc = '{"id":"x"}'::bytea WHERE id = $1`, eid); err != nil {
		t.Fatal(err)
	}
	if _, err := db.pool.Exec(ctx, "DELETE FROM meta WHERE name = 'attempts_sealed'"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openTest(t, dsn, opts())
	if found := findPlanted(t, db, needles(plantIDFA)); len(found) > 0 {
		t.Fatalf("plain attempts not sealed at start:\n%s", strings.Join(found, "\n"))
	}
	if as, err := db.Attempts(keys[0]); err != nil || len(as) != 1 || !strings.Contains(as[0].Request, plantIDFA) || as[0].Status != 200 {
		t.Fatalf("sealed attempt: %+v %v", as, err)
	}
	if as, err := db.Attempts(keys[1]); err != nil || len(as) != 1 || as[0].Request != "" || as[0].Status != 200 {
		t.Fatalf("attempt of an unsealed event: %+v %v; want its request dropped, its status kept", as, err)
	}
	if _, err := db.DeleteUser(ctx, plantUser); err != nil {
		t.Fatal(err)
	}
	if as, err := db.Attempts(keys[0]); err != nil || len(as) != 1 || as[0].Request != "" {
		t.Fatalf("attempt after the erasure: %+v %v", as, err)
	}
}
