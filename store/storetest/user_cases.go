package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

var _ = register("PutGetUser", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	if _, err := e.GetUser("u-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser of an unknown user: err = %v, want ErrNotFound", err)
	}
	email := map[string]string{}
	mapping.SetEmail(email, "Jon@Example.com")
	first := map[string]string{mapping.IDAppsFlyer: "af-1", mapping.IDIDFA: "IDFA-1", mapping.IDEmailSHA256: email[mapping.IDEmailSHA256]}
	if _, err := e.PutUser(ctx, "u-1", first); err != nil {
		t.Fatal(err)
	}
	e.Clock.Add(time.Minute)
	// Merge: a new value replaces, "" removes, others are kept.
	u, err := e.PutUser(ctx, "u-1", map[string]string{mapping.IDIDFA: "IDFA-2", mapping.IDAppsFlyer: "", mapping.IDFBP: "fb.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{mapping.IDIDFA: "IDFA-2", mapping.IDFBP: "fb.1.2.3", mapping.IDEmailSHA256: email[mapping.IDEmailSHA256]}
	if !reflect.DeepEqual(u.Identifiers, want) || !u.UpdatedAt.Equal(T0.Add(time.Minute)) {
		t.Errorf("PutUser = %+v, want identifiers %v at %v", u, want, T0.Add(time.Minute))
	}
	got, err := e.GetUser("u-1")
	if err != nil || !reflect.DeepEqual(got.Identifiers, u.Identifiers) || got.AppUserID != u.AppUserID || !got.UpdatedAt.Equal(u.UpdatedAt) {
		t.Errorf("GetUser = %+v, %v; want %+v", got, err, u)
	}
	e.Restart(t)
	if again, err := e.GetUser("u-1"); err != nil || !reflect.DeepEqual(again.Identifiers, want) {
		t.Errorf("after a restart: %+v, %v", again, err)
	}
})

var _ = register("UserInvalidID", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	for _, id := range []string{"", "a\x00b"} {
		if _, err := e.PutUser(context.Background(), id, map[string]string{"idfa": "x"}); !errors.Is(err, store.ErrInvalidUser) {
			t.Errorf("PutUser(%q): err = %v, want ErrInvalidUser", id, err)
		}
		if _, err := e.DeleteUser(context.Background(), id); !errors.Is(err, store.ErrInvalidUser) {
			t.Errorf("DeleteUser(%q): err = %v, want ErrInvalidUser", id, err)
		}
	}
})

var _ = register("DeleteUserScrubsEventsStatesAndInbox", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	ids := map[string]string{mapping.IDIDFA: "IDFA-1"}
	mapping.SetPhone(ids, "+1 650 555 1212")
	one := func(key string, f Fact) {
		t.Helper()
		if res := e.MustIngest(t, Note(key, Body{Facts: []Fact{f}})); len(res.Events) != 1 {
			t.Fatalf("ingest %s: %+v", key, res)
		}
	}
	one("evt_u1_a", Fact{Fact: "u1_a", Type: mapping.Purchase, User: "u-1", IDs: ids, State: "test:u1_a"})
	one("evt_u1_b", Fact{Fact: "u1_b", Type: mapping.Refund, User: "u-1"})
	one("evt_u10", Fact{Fact: "u10", Type: mapping.Purchase, User: "u-10", IDs: map[string]string{mapping.IDIDFA: "IDFA-10"}, State: "test:u10"})
	if _, err := e.PutUser(ctx, "u-1", map[string]string{mapping.IDAppsFlyer: "af-1"}); err != nil {
		t.Fatal(err)
	}
	n, err := e.DeleteUser(ctx, "u-1")
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("erased %d events, want both events of u-1", n)
	}
	if _, err := e.GetUser("u-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the identity record survived the deletion: %v", err)
	}
	ev, err := e.Event(FactID("u1_a"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.User.AppUserID != "" || len(ev.User.Identifiers) != 0 || ev.Type != mapping.Purchase {
		t.Errorf("event of u-1 after deletion: %+v, want it kept without its app user id and identifiers", ev)
	}
	if st, ok, err := e.State("test:u1_a"); err != nil || !ok || len(st.Identifiers) != 0 || st.AppUserID != "" {
		t.Errorf("state of u-1 = %+v, %v, %v; want it kept without identifiers", st, ok, err)
	}
	// A user whose id has u-1 as a prefix is not touched.
	other, err := e.Event(FactID("u10"))
	if err != nil || other.Identifier(mapping.IDIDFA) != "IDFA-10" {
		t.Errorf("event of u-10 = %+v, %v; want its identifiers kept", other.User, err)
	}
	if st, _, _ := e.State("test:u10"); st.Identifiers[mapping.IDIDFA] != "IDFA-10" {
		t.Errorf("state of u-10 = %+v; want its identifiers kept", st)
	}
	// The raw notifications behind u-1's events lose their bodies (they
	// carried the same identifiers) but stay as dedupe keys; u-10's stays.
	for _, key := range []string{"evt_u1_a", "evt_u1_b"} {
		nt, err := e.Notification(mapping.SourceStripe, key)
		if err != nil || nt.Body != nil || len(nt.EventIDs) != 1 {
			t.Errorf("inbox %s after erasure: %+v, %v; want no body, event ids kept", key, nt, err)
		}
		if res, err := e.Ingest(ctx, Note(key, Facts("again"))); err != nil || !res.Duplicate {
			t.Errorf("a retry of %s after erasure: %+v, %v; want a duplicate", key, res, err)
		}
	}
	if nt, err := e.Notification(mapping.SourceStripe, "evt_u10"); err != nil || !strings.Contains(string(nt.Body), "IDFA-10") {
		t.Errorf("inbox of u-10 after u-1's erasure: %v; want its body kept", err)
	}
	// Erasure is idempotent.
	if n, err := e.DeleteUser(ctx, "u-1"); err != nil || n != 0 {
		t.Errorf("second DeleteUser = %d, %v; want 0, nil", n, err)
	}
})

var _ = register("PutUserReleasesWaiting", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	e.MustIngest(t, Note("evt_1", Body{Facts: []Fact{{Fact: "f", Type: mapping.TrialStarted, User: "u1", IDs: map[string]string{"idfv": "from-event"}}}}))
	key := FactID("f") + "|af"
	waitUntil := e.Clock.Now().Add(10 * time.Minute)
	e.MustComplete(t, store.Completion{Key: key, State: store.StateWaiting, Reason: "waiting for idfa", NextAt: waitUntil, WaitUntil: waitUntil})
	if got := e.DueKeys(t, "af", e.Clock.Now()); len(got) != 0 {
		t.Fatalf("a waiting delivery is due: %v", got)
	}
	if q, _ := e.Queue("af"); q.Waiting != 1 {
		t.Errorf("queue %+v, want 1 waiting", q)
	}
	// A PUT for another user releases nothing.
	if _, err := e.PutUser(ctx, "u2", map[string]string{mapping.IDAppsFlyer: "af-2"}); err != nil {
		t.Fatal(err)
	}
	if got := e.DueKeys(t, "af", e.Clock.Now().Add(time.Minute)); len(got) != 0 {
		t.Fatalf("another user's PUT released the delivery: %v", got)
	}
	e.Clock.Add(time.Minute)
	e.ResetWoken()
	if _, err := e.PutUser(ctx, "u1", map[string]string{"idfa": "AEBE52E7-03EE-455A-B3C4-E57283966239", "idfv": "from-user"}); err != nil {
		t.Fatal(err)
	}
	if !e.WokenFor("af") {
		t.Errorf("the released delivery woke nobody: %v", e.Woken())
	}
	ds := e.Due(t, "af", e.Clock.Now(), 10, nil)
	if len(ds) != 1 || ds[0].Delivery.Key != key {
		t.Fatalf("due after PutUser %+v", ds)
	}
	ev := ds[0].Event
	if ev.Identifier("idfa") != "AEBE52E7-03EE-455A-B3C4-E57283966239" {
		t.Errorf("identifiers %v: the user's idfa is not merged", ev.User.Identifiers)
	}
	if ev.Identifier("idfv") != "from-event" {
		t.Errorf("idfv %q: the event's own value must win", ev.Identifier("idfv"))
	}
	if ds[0].Delivery.NextAtMs != e.Clock.Now().UnixMilli() {
		t.Errorf("released delivery due %v, want now", ds[0].Delivery.NextAt())
	}
	// The dispatcher then delivers it.
	e.MustComplete(t, store.Completion{Key: key, State: store.StateDelivered, Attempt: &store.Attempt{At: e.Clock.Now(), Outcome: "delivered", Status: 200}})
	if got, _ := e.Delivery(key); got.State != store.StateDelivered {
		t.Errorf("state = %s, want delivered", got.State)
	}
	t.Run("other users stay waiting", func(t *testing.T) {
		e.MustIngest(t, Note("evt_3", Body{Facts: []Fact{{Fact: "h", Type: mapping.Purchase, User: "u2"}}}))
		hk := FactID("h") + "|af"
		e.MustComplete(t, store.Completion{Key: hk, State: store.StateWaiting, NextAt: e.Clock.Now().Add(time.Hour), WaitUntil: e.Clock.Now().Add(time.Hour)})
		if _, err := e.PutUser(ctx, "u1", map[string]string{"gaid": "x"}); err != nil {
			t.Fatal(err)
		}
		if contains(e.DueKeys(t, "af", e.Clock.Now()), hk) {
			t.Error("u2's delivery was released by u1's update")
		}
	})
})

// DeleteUserSharedNotification: a notification reporting facts of two
// users; erasing one leaves the other's event as it was.
var _ = register("DeleteUserSharedNotification", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	e.MustIngest(t, Note("evt_1", Body{Facts: []Fact{
		{Fact: "a", Type: mapping.TrialStarted, User: "u1", IDs: map[string]string{"email_sha256": mapping.SHA256Hex("a@b.co"), "idfa": "X"}},
		{Fact: "b", Type: mapping.TrialStarted, User: "u2", IDs: map[string]string{"idfa": "Y"}},
	}}))
	if _, err := e.PutUser(ctx, "u1", map[string]string{"gaid": "G"}); err != nil {
		t.Fatal(err)
	}
	n, err := e.DeleteUser(ctx, "u1")
	if err != nil || n != 1 {
		t.Fatalf("DeleteUser = %d, %v", n, err)
	}
	if a, _ := e.Event(FactID("a")); len(a.User.Identifiers) != 0 {
		t.Errorf("u1's event keeps %v", a.User.Identifiers)
	}
	if b, _ := e.Event(FactID("b")); b.Identifier("idfa") != "Y" {
		t.Errorf("u2's event lost its identifiers: %v", b.User.Identifiers)
	}
	if _, err := e.GetUser("u1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser after delete: %v", err)
	}
	// The deliveries of u1's event go out without anything of u1.
	for _, d := range e.Due(t, "af", e.Clock.Now(), 10, nil) {
		if d.Event.ID == FactID("a") && len(d.Event.User.Identifiers) != 0 {
			t.Errorf("u1's due event carries %v", d.Event.User.Identifiers)
		}
	}
})

// DeleteUserErasesAttempts: the attempt log of a user's deliveries (the
// requests as sent, which carry the identifiers) is unreadable after the
// user is erased, and so is the attempt of a request that was in flight
// during the erasure and recorded after it; statuses and counts stay.
var _ = register("DeleteUserErasesAttempts", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := context.Background()
	e.MustIngest(t, Note("evt_at", Body{Facts: []Fact{{Fact: "at", Type: mapping.Purchase, User: "u-at", IDs: map[string]string{mapping.IDIDFA: "IDFA-AT"}}}}))
	claim := func() store.Due {
		t.Helper()
		ds, err := e.Claim(ctx, "af", e.Clock.Now(), store.ClaimOptions{Limit: 10, Lease: time.Minute})
		if err != nil || len(ds) != 1 {
			t.Fatalf("claim: %d %v", len(ds), err)
		}
		return ds[0]
	}
	sent := func(d *store.Due, n int) store.Completion {
		return store.Completion{Key: d.Delivery.Key, State: store.StateRetrying, NextAt: e.Clock.Now(), Reason: "http_503", Claimed: &d.Delivery,
			Attempt: &store.Attempt{At: e.Clock.Now(), Outcome: "retry", Status: 503, Request: fmt.Sprintf("POST /x {\"idfa\":%q,\"n\":%d}", d.Event.Identifier(mapping.IDIDFA), n), Response: "busy IDFA-AT"}}
	}
	d := claim()
	if d.Event.Identifier(mapping.IDIDFA) != "IDFA-AT" {
		t.Fatalf("claimed event without its identifier: %+v", d.Event.User)
	}
	e.MustComplete(t, sent(&d, 1))
	as, err := e.Attempts(d.Delivery.Key)
	if err != nil || len(as) != 1 || !strings.Contains(as[0].Request, "IDFA-AT") {
		t.Fatalf("attempt log before the erasure: %+v %v", as, err)
	}
	inFlight := claim()
	if _, err := e.DeleteUser(ctx, "u-at"); err != nil {
		t.Fatal(err)
	}
	e.MustComplete(t, sent(&inFlight, 2))
	as, err = e.Attempts(d.Delivery.Key)
	if err != nil || len(as) != 2 {
		t.Fatalf("attempt log after the erasure: %+v %v", as, err)
	}
	for _, a := range as {
		if strings.Contains(a.Request+a.Response, "IDFA-AT") || a.Status != 503 {
			t.Errorf("attempt %d after the erasure: %+v; want its request and answer unreadable, its status kept", a.N, a)
		}
	}
})
