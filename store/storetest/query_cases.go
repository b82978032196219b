package storetest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// listed is one event as the listing cases model it.
type listed struct {
	id, source, typ, user, sub string
	at                         time.Time
}

// seedEvents ingests n single-fact notifications received at T0 plus i/3
// seconds (so three share each received time, ties across page
// boundaries), alternating sources, types, users and subscriptions, and
// returns them.
func seedEvents(t *testing.T, e *Env, n int) []listed {
	t.Helper()
	var out []listed
	for i := 0; i < n; i++ {
		l := listed{
			id: FactID(fmt.Sprint("list", i)), source: mapping.SourceStripe, typ: string(mapping.Purchase),
			user: fmt.Sprint("u", i%2), sub: fmt.Sprint("sub", i%3), at: T0.Add(time.Duration(i/3) * time.Second),
		}
		if i%4 == 0 {
			l.source = mapping.SourceApple
		}
		if i%5 == 0 {
			l.typ = string(mapping.SubscriptionRenewed)
		}
		note := Note(fmt.Sprint("evt_list", i), Body{Facts: []Fact{{Fact: fmt.Sprint("list", i), Type: mapping.Type(l.typ), User: l.user, SubID: l.sub}}})
		note.Source, note.ReceivedAt = l.source, l.at
		e.MustIngest(t, note)
		out = append(out, l)
	}
	return out
}

// walk pages through f's listing with the cursor until it ends, checking
// that pages come newest first and no event is listed twice.
func walk(t *testing.T, e *Env, f store.EventFilter) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	var last time.Time
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("the walk of %+v does not end", f)
		}
		p, err := e.Events(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) > f.Limit && f.Limit > 0 {
			t.Fatalf("page of %d events, limit %d", len(p.Events), f.Limit)
		}
		for _, ev := range p.Events {
			if seen[ev.ID] {
				t.Fatalf("event %s listed twice (filter %+v)", ev.ID, f)
			}
			seen[ev.ID] = true
			if !last.IsZero() && ev.ReceivedAt.After(last) {
				t.Fatalf("event %s received %v after its predecessor %v: not newest first", ev.ID, ev.ReceivedAt, last)
			}
			last = ev.ReceivedAt
			ids = append(ids, ev.ID)
		}
		if p.Next == "" {
			return ids
		}
		f.Cursor = p.Next
	}
}

func sameSet(t *testing.T, what string, got []string, want []string) {
	t.Helper()
	g, w := append([]string(nil), got...), append([]string(nil), want...)
	sort.Strings(g)
	sort.Strings(w)
	if strings.Join(g, " ") != strings.Join(w, " ") {
		t.Errorf("%s: listed %d events, want %d\ngot  %v\nwant %v", what, len(g), len(w), g, w)
	}
}

var _ = register("EventsFiltersAndCursor", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	all := seedEvents(t, e, 42) // 14 received times, three events each
	pick := func(keep func(l listed) bool) []string {
		var out []string
		for _, l := range all {
			if keep(l) {
				out = append(out, l.id)
			}
		}
		return out
	}
	tests := []struct {
		name string
		f    store.EventFilter
		keep func(l listed) bool
	}{
		{"all", store.EventFilter{}, func(listed) bool { return true }},
		{"source", store.EventFilter{Source: mapping.SourceApple}, func(l listed) bool { return l.source == mapping.SourceApple }},
		{"type", store.EventFilter{Type: string(mapping.SubscriptionRenewed)}, func(l listed) bool { return l.typ == string(mapping.SubscriptionRenewed) }},
		{"user", store.EventFilter{AppUserID: "u1"}, func(l listed) bool { return l.user == "u1" }},
		{"subscription", store.EventFilter{SubscriptionID: "sub2"}, func(l listed) bool { return l.sub == "sub2" }},
		{"app", store.EventFilter{AppID: "com.example.app"}, func(listed) bool { return true }},
		{"other app", store.EventFilter{AppID: "com.other"}, func(listed) bool { return false }},
		{"environment", store.EventFilter{Environment: mapping.Production}, func(listed) bool { return true }},
		{"source and user", store.EventFilter{Source: mapping.SourceStripe, AppUserID: "u0"}, func(l listed) bool { return l.source == mapping.SourceStripe && l.user == "u0" }},
		{"since", store.EventFilter{Since: T0.Add(5 * time.Second)}, func(l listed) bool { return !l.at.Before(T0.Add(5 * time.Second)) }},
		{"until (inclusive)", store.EventFilter{Until: T0.Add(7 * time.Second)}, func(l listed) bool { return !l.at.After(T0.Add(7 * time.Second)) }},
		{"window", store.EventFilter{Since: T0.Add(3 * time.Second), Until: T0.Add(9 * time.Second)}, func(l listed) bool {
			return !l.at.Before(T0.Add(3*time.Second)) && !l.at.After(T0.Add(9*time.Second))
		}},
		{"window and type", store.EventFilter{Type: string(mapping.Purchase), Since: T0.Add(2 * time.Second), Until: T0.Add(11 * time.Second)}, func(l listed) bool {
			return l.typ == string(mapping.Purchase) && !l.at.Before(T0.Add(2*time.Second)) && !l.at.After(T0.Add(11*time.Second))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := pick(tt.keep)
			// One page, then every page size from 1: each walk lists every
			// matching event exactly once, whatever the page boundaries.
			one := tt.f
			one.Limit = 500
			p, err := e.Events(one)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, ev := range p.Events {
				ids = append(ids, ev.ID)
			}
			sameSet(t, "one page", ids, want)
			for _, limit := range []int{1, 2, 3, 4, 7} {
				f := tt.f
				f.Limit = limit
				sameSet(t, fmt.Sprint("walk by ", limit), walk(t, e, f), want)
			}
		})
	}
	t.Run("newest first", func(t *testing.T) {
		p, err := e.Events(store.EventFilter{Limit: 3})
		if err != nil || len(p.Events) != 3 || p.Next == "" {
			t.Fatalf("first page %d events, next %q, %v", len(p.Events), p.Next, err)
		}
		newest := all[len(all)-1].at
		for _, ev := range p.Events {
			if !ev.ReceivedAt.Equal(newest) {
				t.Errorf("first page holds %s received %v, want the newest (%v)", ev.ID, ev.ReceivedAt, newest)
			}
		}
	})
	t.Run("default limit", func(t *testing.T) {
		if p, err := e.Events(store.EventFilter{}); err != nil || len(p.Events) == 0 || len(p.Events) > 50 {
			t.Errorf("default page %d events, %v", len(p.Events), err)
		}
	})
})

// EventsCursorWalkWhileIngesting: a walk continues where it left off while
// events arrive. Coming from the newest end towards the oldest, an event
// received after the walk began (above the cursor) is not listed, one
// received before its position (below the cursor) is, and nothing is
// listed twice or skipped.
var _ = register("EventsCursorWalkWhileIngesting", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	all := seedEvents(t, e, 20)
	f := store.EventFilter{Limit: 4}
	p, err := e.Events(f)
	if err != nil || p.Next == "" {
		t.Fatalf("first page %+v, %v", p, err)
	}
	var ids []string
	for _, ev := range p.Events {
		ids = append(ids, ev.ID)
	}
	newer := Note("evt_newer", Body{Facts: []Fact{{Fact: "newer", Type: mapping.Purchase}}})
	newer.ReceivedAt = T0.Add(time.Hour)
	older := Note("evt_older", Body{Facts: []Fact{{Fact: "older", Type: mapping.Purchase}}})
	older.ReceivedAt = T0.Add(-time.Hour)
	e.MustIngest(t, newer)
	e.MustIngest(t, older)
	f.Cursor = p.Next
	rest := walk(t, e, f)
	for _, id := range rest {
		for _, prev := range ids {
			if id == prev {
				t.Fatalf("event %s listed on the first page and again after it", id)
			}
		}
	}
	ids = append(ids, rest...)
	want := []string{FactID("older")}
	for _, l := range all {
		want = append(want, l.id)
	}
	sameSet(t, "walk while ingesting", ids, want)
	// From the newest end again, the new event leads.
	if p, err := e.Events(store.EventFilter{Limit: 1}); err != nil || len(p.Events) != 1 || p.Events[0].ID != FactID("newer") {
		t.Errorf("first event %+v, %v; want the newest", p.Events, err)
	}
	// And the last event of a complete walk is the oldest.
	if w := walk(t, e, store.EventFilter{Limit: 5}); len(w) != len(all)+2 || w[len(w)-1] != FactID("older") {
		t.Errorf("a full walk of %d ends with %v; want %d events ending with the oldest", len(w), w[len(w)-1:], len(all)+2)
	}
})

func deliveryKeys(ds []store.Delivery) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.Key)
	}
	return out
}

var _ = register("DeliveriesListing", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	for i, f := range []string{"f1", "f2", "f3"} {
		if i > 0 {
			e.Clock.Add(time.Minute)
		}
		e.MustIngest(t, Note("evt_"+f, Facts(f)))
	}
	k := func(f, dest string) string { return FactID(f) + "|" + dest }
	e.MustComplete(t,
		store.Completion{Key: k("f1", "af"), State: store.StateDead, Reason: "http_400", Attempt: &store.Attempt{Outcome: "dead", Status: 400, Error: "bad request"}},
		store.Completion{Key: k("f2", "hook"), State: store.StateRetrying, NextAt: e.Clock.Now().Add(time.Hour), Reason: "http_503", Attempt: &store.Attempt{Outcome: "retry", Status: 503, Error: "upstream timeout"}},
		store.Completion{Key: k("f3", "af"), State: store.StateDelivered, Attempt: &store.Attempt{Outcome: "delivered", Status: 200}},
	)
	tests := []struct {
		name string
		f    store.DeliveryFilter
		want []string // in order: newest event first, then by key
	}{
		{"all", store.DeliveryFilter{}, []string{k("f3", "af"), k("f3", "hook"), k("f2", "af"), k("f2", "hook"), k("f1", "af"), k("f1", "hook")}},
		{"limit", store.DeliveryFilter{Limit: 3}, []string{k("f3", "af"), k("f3", "hook"), k("f2", "af")}},
		{"destination", store.DeliveryFilter{Destination: "hook"}, []string{k("f3", "hook"), k("f2", "hook"), k("f1", "hook")}},
		{"states", store.DeliveryFilter{States: []string{store.StateDead, store.StateDelivered}}, []string{k("f3", "af"), k("f1", "af")}},
		{"pending", store.DeliveryFilter{Destination: "af", States: []string{store.StatePending}}, []string{k("f2", "af")}},
		{"reason", store.DeliveryFilter{Reason: "http_400"}, []string{k("f1", "af")}},
		{"reason in the last error", store.DeliveryFilter{Reason: "timeout"}, []string{k("f2", "hook")}},
		{"since", store.DeliveryFilter{Since: T0.Add(time.Minute)}, []string{k("f3", "af"), k("f3", "hook"), k("f2", "af"), k("f2", "hook")}},
		{"until", store.DeliveryFilter{Until: T0.Add(time.Minute)}, []string{k("f2", "af"), k("f2", "hook"), k("f1", "af"), k("f1", "hook")}},
		{"nothing", store.DeliveryFilter{Destination: "none"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds, err := e.Deliveries(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := deliveryKeys(ds); strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
	if d, err := e.Delivery(k("f1", "af")); err != nil || d.LastStatus != 400 || d.LastError != "bad request" || d.Reason != "http_400" {
		t.Errorf("dead delivery %+v, %v", d, err)
	}
})

var _ = register("EventReadsMergeTheUser", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	e.MustIngest(t, Note("evt_1", Body{Facts: []Fact{{Fact: "f", Type: mapping.Purchase, User: "u1", IDs: map[string]string{"idfv": "from-event"}}}}))
	e.MustIngest(t, Note("evt_2", Body{Facts: []Fact{{Fact: "f", Type: mapping.Purchase, User: "u1"}}}))
	if _, err := e.PutUser(t.Context(), "u1", map[string]string{"idfa": "IDFA-1", "idfv": "from-user"}); err != nil {
		t.Fatal(err)
	}
	ev, err := e.Event(FactID("f"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Identifier("idfa") != "IDFA-1" || ev.Identifier("idfv") != "from-event" {
		t.Errorf("event identifiers %v: the user's fill the gaps, the event's own win", ev.User.Identifiers)
	}
	n, err := e.NotificationOf(&ev)
	if err != nil || n.Key != "evt_1" {
		t.Errorf("NotificationOf = %+v, %v; want the first report, evt_1", n, err)
	}
	if _, err := e.NotificationOf(&mapping.Event{Source: mapping.SourceStripe, SourceEventID: "none"}); err == nil {
		t.Error("NotificationOf an unknown event: no error")
	}
})

// Durable: what a restart must keep, read through every reader.
var _ = register("DurableAcrossRestart", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	ctx := t.Context()
	e.MustIngest(t, Note("evt_1", Facts("a", "b")))
	e.MustIngest(t, &mapping.Notification{Source: mapping.SourceGoogle, Key: "msg-1", Deferred: true, Body: []byte(`{}`)})
	e.MustComplete(t,
		store.Completion{Key: FactID("a") + "|af", State: store.StateRetrying, NextAt: T0.Add(time.Minute), Attempt: &store.Attempt{At: T0, Outcome: "retry", Status: 503}},
		store.Completion{Key: FactID("b") + "|af", State: store.StateDead, Attempt: &store.Attempt{At: T0, Outcome: "dead", Status: 400}},
	)
	if _, err := e.PutUser(ctx, "u1", map[string]string{"idfa": "X"}); err != nil {
		t.Fatal(err)
	}
	e.Restart(t)
	if st, ok, err := e.State("test:count"); err != nil || !ok || st.Value("count") != "1" {
		t.Errorf("state %+v %v %v", st, ok, err)
	}
	if d, err := e.Delivery(FactID("a") + "|af"); err != nil || d.State != store.StateRetrying || d.Attempts != 1 || d.NextAtMs != T0.Add(time.Minute).UnixMilli() {
		t.Errorf("delivery %+v, %v", d, err)
	}
	if as, err := e.Attempts(FactID("a") + "|af"); err != nil || len(as) != 1 || as[0].Status != 503 {
		t.Errorf("attempts %+v, %v", as, err)
	}
	if pend, err := e.Pending(mapping.SourceGoogle, 10); err != nil || len(pend) != 1 {
		t.Errorf("pending %+v, %v", pend, err)
	}
	if u, err := e.GetUser("u1"); err != nil || u.Identifiers["idfa"] != "X" {
		t.Errorf("user %+v, %v", u, err)
	}
	if q, err := e.Queue("af"); err != nil || q.Depth != 1 || !q.Oldest.Equal(T0.Add(time.Minute)) {
		t.Errorf("queue %+v, %v", q, err)
	}
	if got := e.DueKeys(t, "hook", T0); len(got) != 2 {
		t.Errorf("due for hook %v", got)
	}
	if dead, err := e.DeadCounts(); err != nil || dead["af"] != 1 {
		t.Errorf("dead counts %v, %v", dead, err)
	}
	// A duplicate is still a duplicate.
	if res := e.MustIngest(t, Note("evt_1", Facts("c"))); !res.Duplicate {
		t.Errorf("re-ingest after restart %+v", res)
	}
})
