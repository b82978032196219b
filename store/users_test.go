package store

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/postback/postback/mapping"
)

// usersClock is a settable clock for the identity tests.
type usersClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *usersClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *usersClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

var usersT0 = time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)

// usersMap maps a test notification whose body is a canonical event.
func usersMap(n *mapping.Notification, _ mapping.States) (mapping.Result, error) {
	var e mapping.Event
	if err := jsonUnmarshal(n.Body, &e); err != nil {
		return mapping.Result{}, err
	}
	e.Source, e.SourceEventID = n.Source, n.Key // as every source mapping sets them
	out := mapping.Result{Events: []mapping.Event{e}}
	if e.User.AppUserID != "" {
		out.States = []mapping.State{{Key: "test:" + e.ID, AppUserID: e.User.AppUserID, Identifiers: e.User.Identifiers}}
	}
	return out, nil
}

// openUsersDB opens a real store in a temporary directory, routing every
// event to the destination "af", and checks consistency at the end.
func openUsersDB(t *testing.T) (*DB, *usersClock) {
	t.Helper()
	clk := &usersClock{t: usersT0}
	db, err := Open(filepath.Join(t.TempDir(), "users.db"), &Options{
		Map: usersMap, Now: clk.now,
		Route: func(*mapping.Event) []string { return []string{"af"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("consistency: %v", err)
		}
		db.Close()
	})
	return db, clk
}

func ingestEvent(t *testing.T, db *DB, e mapping.Event) {
	t.Helper()
	body, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.Ingest(context.Background(), &mapping.Notification{Source: "test", Key: e.ID, Body: body})
	if err != nil || len(res.Events) != 1 {
		t.Fatalf("ingest %s: %+v, %v", e.ID, res, err)
	}
}

func TestPutGetUser(t *testing.T) {
	db, clk := openUsersDB(t)
	ctx := context.Background()
	if _, err := db.GetUser("u-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetUser of an unknown user: err = %v, want ErrNotFound", err)
	}
	email := map[string]string{}
	mapping.SetEmail(email, "Jon@Example.com")
	first := map[string]string{mapping.IDAppsFlyer: "af-1", mapping.IDIDFA: "IDFA-1", mapping.IDEmailSHA256: email[mapping.IDEmailSHA256]}
	if _, err := db.PutUser(ctx, "u-1", first); err != nil {
		t.Fatal(err)
	}
	clk.set(usersT0.Add(time.Minute))
	// Merge: a new value replaces, "" removes, others are kept.
	u, err := db.PutUser(ctx, "u-1", map[string]string{mapping.IDIDFA: "IDFA-2", mapping.IDAppsFlyer: "", mapping.IDFBP: "fb.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{mapping.IDIDFA: "IDFA-2", mapping.IDFBP: "fb.1.2.3", mapping.IDEmailSHA256: email[mapping.IDEmailSHA256]}
	if !reflect.DeepEqual(u.Identifiers, want) || !u.UpdatedAt.Equal(usersT0.Add(time.Minute)) {
		t.Errorf("PutUser = %+v, want identifiers %v at %v", u, want, usersT0.Add(time.Minute))
	}
	got, err := db.GetUser("u-1")
	if err != nil || !reflect.DeepEqual(got, u) {
		t.Errorf("GetUser = %+v, %v; want %+v", got, err, u)
	}
}

func TestUserInvalidID(t *testing.T) {
	db, _ := openUsersDB(t)
	for _, id := range []string{"", "a\x00b"} {
		if _, err := db.PutUser(context.Background(), id, map[string]string{"idfa": "x"}); !errors.Is(err, ErrInvalidUser) {
			t.Errorf("PutUser(%q): err = %v, want ErrInvalidUser", id, err)
		}
		if _, err := db.DeleteUser(context.Background(), id); !errors.Is(err, ErrInvalidUser) {
			t.Errorf("DeleteUser(%q): err = %v, want ErrInvalidUser", id, err)
		}
	}
}

func TestDeleteUserScrubsEventsAndStates(t *testing.T) {
	db, _ := openUsersDB(t)
	ctx := context.Background()
	ids := map[string]string{mapping.IDIDFA: "IDFA-1"}
	mapping.SetPhone(ids, "+1 650 555 1212")
	ingestEvent(t, db, mapping.Event{ID: "evt_u1_a", Type: mapping.Purchase, User: mapping.User{AppUserID: "u-1", Identifiers: ids}, ReceivedAt: usersT0})
	ingestEvent(t, db, mapping.Event{ID: "evt_u1_b", Type: mapping.Refund, User: mapping.User{AppUserID: "u-1"}, ReceivedAt: usersT0})
	ingestEvent(t, db, mapping.Event{ID: "evt_u10", Type: mapping.Purchase, User: mapping.User{AppUserID: "u-10", Identifiers: map[string]string{mapping.IDIDFA: "IDFA-10"}}, ReceivedAt: usersT0})
	if _, err := db.PutUser(ctx, "u-1", map[string]string{mapping.IDAppsFlyer: "af-1"}); err != nil {
		t.Fatal(err)
	}
	n, err := db.DeleteUser(ctx, "u-1")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("scrubbed %d events, want 1 (the other event of u-1 had no identifiers)", n)
	}
	if _, err := db.GetUser("u-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the identity record survived the deletion: %v", err)
	}
	e, err := db.Event("evt_u1_a")
	if err != nil {
		t.Fatal(err)
	}
	if e.User.AppUserID != "u-1" || len(e.User.Identifiers) != 0 {
		t.Errorf("event of u-1 after deletion: user = %+v, want the app user without identifiers", e.User)
	}
	var st mapping.State
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		_, err := getJSON(tx.Bucket(bStates), []byte("test:evt_u1_a"), &st)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(st.Identifiers) != 0 {
		t.Errorf("state of u-1 still remembers %v", st.Identifiers)
	}
	// A user whose id has u-1 as a prefix is not touched.
	other, err := db.Event("evt_u10")
	if err != nil || other.Identifier(mapping.IDIDFA) != "IDFA-10" {
		t.Errorf("event of u-10 = %+v, %v; want its identifiers kept", other.User, err)
	}
	// The raw notifications behind u-1's events lose their bodies (they
	// carried the same identifiers) but stay as dedupe keys; u-10's stays.
	for _, key := range []string{"evt_u1_a", "evt_u1_b"} {
		nt, err := db.Notification("test", key)
		if err != nil || nt.Body != nil || len(nt.EventIDs) != 1 {
			t.Errorf("inbox %s after erasure: %+v, %v; want no body, event ids kept", key, nt, err)
		}
		if res, err := db.Ingest(ctx, &mapping.Notification{Source: "test", Key: key, Body: []byte(`{}`)}); err != nil || !res.Duplicate {
			t.Errorf("a retry of %s after erasure: %+v, %v; want a duplicate", key, res, err)
		}
	}
	if nt, err := db.Notification("test", "evt_u10"); err != nil || !strings.Contains(string(nt.Body), "IDFA-10") {
		t.Errorf("inbox of u-10 after u-1's erasure: %v; want its body kept", err)
	}
	// Erasure is idempotent.
	if n, err := db.DeleteUser(ctx, "u-1"); err != nil || n != 0 {
		t.Errorf("second DeleteUser = %d, %v; want 0, nil", n, err)
	}
}

// waitingDelivery ingests an event of u-1 without an AppsFlyer id and parks
// its delivery as the dispatcher does when a destination requires one.
func waitingDelivery(t *testing.T, db *DB, wait time.Duration) Delivery {
	t.Helper()
	ingestEvent(t, db, mapping.Event{ID: "evt_wait", Type: mapping.Purchase, User: mapping.User{AppUserID: "u-1"}, ReceivedAt: usersT0})
	due, err := db.DueFor("af", usersT0, 10, nil)
	if err != nil || len(due) != 1 {
		t.Fatalf("due before waiting = %d, %v; want 1", len(due), err)
	}
	deadline := usersT0.Add(wait)
	if err := db.Complete(context.Background(), []Completion{{Key: due[0].Delivery.Key, State: StateWaiting, NextAt: deadline, WaitUntil: deadline, Reason: "waiting for appsflyer_id"}}); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueFor("af", usersT0.Add(wait-time.Second), 10, nil); len(due) != 0 {
		t.Fatalf("a waiting delivery is due before its deadline")
	}
	return due[0].Delivery
}

func TestWaitingDeliveryReleasedByPut(t *testing.T) {
	db, clk := openUsersDB(t)
	ctx := context.Background()
	d := waitingDelivery(t, db, 10*time.Minute)
	// A PUT for another user releases nothing.
	if _, err := db.PutUser(ctx, "u-2", map[string]string{mapping.IDAppsFlyer: "af-2"}); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueFor("af", usersT0.Add(time.Minute), 10, nil); len(due) != 0 {
		t.Fatalf("another user's PUT released the delivery")
	}
	clk.set(usersT0.Add(2 * time.Minute))
	if _, err := db.PutUser(ctx, "u-1", map[string]string{mapping.IDAppsFlyer: "af-1"}); err != nil {
		t.Fatal(err)
	}
	due, err := db.DueFor("af", usersT0.Add(2*time.Minute), 10, nil)
	if err != nil || len(due) != 1 {
		t.Fatalf("after the PUT: due = %d, %v; want the waiting delivery released at once", len(due), err)
	}
	if due[0].Delivery.Key != d.Key || due[0].Event.Identifier(mapping.IDAppsFlyer) != "af-1" {
		t.Errorf("released delivery %s carries identifiers %v; want %s with appsflyer_id af-1", due[0].Delivery.Key, due[0].Event.User.Identifiers, d.Key)
	}
	// The dispatcher then delivers it.
	if err := db.Complete(ctx, []Completion{{Key: d.Key, State: StateDelivered, Attempt: &Attempt{At: clk.now(), Outcome: "delivered", Status: 200}}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Delivery(d.Key); got.State != StateDelivered {
		t.Errorf("state = %s, want delivered", got.State)
	}
}
