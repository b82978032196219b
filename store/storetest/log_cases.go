package storetest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// logMap is FakeMap with a transaction id ("txn-" fact) and a purchase
// token ("tok-" fact) on every event, as the real mappings set them.
func logMap(n *mapping.Notification, st mapping.States) (mapping.Result, error) {
	res, err := FakeMap(n, st)
	for i := range res.Events {
		e := &res.Events[i]
		fact := e.SubscriptionID + "?"
		for _, f := range logFacts {
			if FactID(f) == e.ID {
				fact = f
			}
		}
		e.TransactionID = "txn-" + fact
		e.SetAttribute("purchase_token", "tok-"+fact)
	}
	return res, err
}

var logFacts = []string{"l0", "l1", "l2", "l3", "l4"}

// seedLog ingests l0..l4 one minute apart (l4 newest): sources alternate
// stripe/apple, l1 and l3 are refunds, users u0/u1, subscriptions s0..s4.
// Deliveries: l0|af dead http_400, l1|hook dead http_400, l2|af dead
// http_500, l3|af delivered, l3|hook retrying; the rest pending.
func seedLog(t *testing.T, e *Env) func(f, dest string) string {
	for i, f := range logFacts {
		if i > 0 {
			e.Clock.Add(time.Minute)
		}
		typ := mapping.SubscriptionRenewed
		if i%2 == 1 {
			typ = mapping.Refund
		}
		n := Note("evt_"+f, Body{Facts: []Fact{{Fact: f, Type: typ, User: fmt.Sprint("u", i%2), SubID: fmt.Sprint("s", i)}}})
		if i%2 == 1 {
			n.Source = mapping.SourceApple
		}
		e.MustIngest(t, n)
	}
	k := func(f, dest string) string { return FactID(f) + "|" + dest }
	e.MustComplete(t,
		store.Completion{Key: k("l0", "af"), State: store.StateDead, Reason: "http_400", Attempt: &store.Attempt{Outcome: "dead", Status: 400, Error: "bad request"}},
		store.Completion{Key: k("l1", "hook"), State: store.StateDead, Reason: "http_400", Attempt: &store.Attempt{Outcome: "dead", Status: 400, Error: "no such app"}},
		store.Completion{Key: k("l2", "af"), State: store.StateDead, Reason: "http_500", Attempt: &store.Attempt{Outcome: "dead", Status: 500}},
		store.Completion{Key: k("l3", "af"), State: store.StateDelivered, Attempt: &store.Attempt{Outcome: "delivered", Status: 200}},
		store.Completion{Key: k("l3", "hook"), State: store.StateRetrying, NextAt: e.Clock.Now().Add(time.Hour), Reason: "http_503", Attempt: &store.Attempt{Outcome: "retry", Status: 503}},
	)
	return k
}

func logKeys(p store.LogPage) []string {
	var out []string
	for _, en := range p.Entries {
		out = append(out, en.Key)
	}
	return out
}

var _ = register("DeliveryLog", func(t *testing.T, b Backend) {
	e := Open(t, b, func(o *store.Options) { o.Map = logMap })
	k := seedLog(t, e)
	all := []string{k("l4", "af"), k("l4", "hook"), k("l3", "af"), k("l3", "hook"), k("l2", "af"), k("l2", "hook"),
		k("l1", "af"), k("l1", "hook"), k("l0", "af"), k("l0", "hook")}
	tests := []struct {
		name  string
		f     store.LogFilter
		want  []string
		total int
	}{
		{"all", store.LogFilter{}, all, 10},
		{"first page", store.LogFilter{Limit: 3}, all[:3], 10},
		{"middle page", store.LogFilter{Offset: 3, Limit: 3}, all[3:6], 10},
		{"last page", store.LogFilter{Offset: 9, Limit: 3}, all[9:], 10},
		{"past the end", store.LogFilter{Offset: 20, Limit: 3}, nil, 10},
		{"destination", store.LogFilter{Destination: "hook", Limit: 2}, []string{k("l4", "hook"), k("l3", "hook")}, 5},
		{"dead", store.LogFilter{States: []string{store.StateDead}}, []string{k("l2", "af"), k("l1", "hook"), k("l0", "af")}, 3},
		{"delivered or retrying", store.LogFilter{States: []string{store.StateDelivered, store.StateRetrying}}, []string{k("l3", "af"), k("l3", "hook")}, 2},
		{"pending", store.LogFilter{States: []string{store.StatePending}, Destination: "af"}, []string{k("l4", "af"), k("l1", "af")}, 2},
		{"held", store.LogFilter{States: []string{store.StateHeld}, Held: []string{"hook"}}, []string{k("l4", "hook"), k("l3", "hook"), k("l2", "hook"), k("l0", "hook")}, 4},
		{"held, none held", store.LogFilter{States: []string{store.StateHeld}}, nil, 0},
		{"held or dead", store.LogFilter{States: []string{store.StateHeld, store.StateDead}, Held: []string{"af"}}, []string{k("l4", "af"), k("l2", "af"), k("l1", "af"), k("l1", "hook"), k("l0", "af")}, 5},
		{"type", store.LogFilter{Type: string(mapping.Refund)}, []string{k("l3", "af"), k("l3", "hook"), k("l1", "af"), k("l1", "hook")}, 4},
		{"source", store.LogFilter{Source: mapping.SourceApple, Destination: "af"}, []string{k("l3", "af"), k("l1", "af")}, 2},
		{"since", store.LogFilter{Since: T0.Add(3 * time.Minute)}, all[:4], 4},
		{"until", store.LogFilter{Until: T0.Add(time.Minute)}, all[6:], 4},
		{"search event id", store.LogFilter{Search: FactID("l2")}, []string{k("l2", "af"), k("l2", "hook")}, 2},
		{"search transaction id", store.LogFilter{Search: "txn-l3"}, []string{k("l3", "af"), k("l3", "hook")}, 2},
		{"search original transaction id", store.LogFilter{Search: "s0"}, []string{k("l0", "af"), k("l0", "hook")}, 2},
		{"search purchase token", store.LogFilter{Search: "tok-l4", Destination: "af"}, []string{k("l4", "af")}, 1},
		{"search user", store.LogFilter{Search: "u1", States: []string{store.StateDead}}, []string{k("l1", "hook")}, 1},
		{"reason", store.LogFilter{Reason: "http_400"}, []string{k("l1", "hook"), k("l0", "af")}, 2},
		{"reason in the last error", store.LogFilter{Reason: "no such app"}, []string{k("l1", "hook")}, 1},
		{"search is exact", store.LogFilter{Search: "txn-l"}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := e.DeliveryLog(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := logKeys(p); !reflect.DeepEqual(got, tt.want) || p.Total != tt.total || p.Partial {
				t.Errorf("log %+v = %v total %d partial %v; want %v total %d", tt.f, got, p.Total, p.Partial, tt.want, tt.total)
			}
		})
	}
	// Entries carry the event's fields beside the delivery.
	p, err := e.DeliveryLog(store.LogFilter{Search: "txn-l3", Destination: "af"})
	if err != nil || len(p.Entries) != 1 {
		t.Fatalf("log: %+v, %v", p, err)
	}
	en := p.Entries[0]
	if en.Type != string(mapping.Refund) || en.Source != mapping.SourceApple || en.User != "u1" || en.TransactionID != "txn-l3" ||
		en.SubscriptionID != "s3" || !en.ReceivedAt.Equal(T0.Add(3*time.Minute)) || en.State != store.StateDelivered || en.LastStatus != 200 {
		t.Errorf("entry %+v", en)
	}
	if p.Limit != 50 || p.Offset != 0 {
		t.Errorf("default paging offset %d limit %d; want 0 and 50", p.Offset, p.Limit)
	}
})

var _ = register("DeadGroups", func(t *testing.T, b Backend) {
	e := Open(t, b, func(o *store.Options) { o.Map = logMap })
	k := seedLog(t, e)
	gs, err := e.DeadGroups("")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		dest, reason string
		n            int
		sample       string
		status       int
	}
	var got []row
	for _, g := range gs {
		got = append(got, row{g.Destination, g.Reason, g.Count, g.Sample.Key, g.Sample.LastStatus})
		if g.Newest.IsZero() {
			t.Errorf("group %s/%s has no newest time", g.Destination, g.Reason)
		}
	}
	want := []row{{"af", "http_400", 1, k("l0", "af"), 400}, {"af", "http_500", 1, k("l2", "af"), 500}, {"hook", "http_400", 1, k("l1", "hook"), 400}}
	// Two more dead of af for http_400 make it the biggest group.
	e.MustComplete(t,
		store.Completion{Key: k("l4", "af"), State: store.StateDead, Reason: "http_400", Attempt: &store.Attempt{Outcome: "dead", Status: 400}},
		store.Completion{Key: k("l1", "af"), State: store.StateDead, Reason: "http_400", Attempt: &store.Attempt{Outcome: "dead", Status: 400}},
	)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("groups %+v; want %+v", got, want)
	}
	gs, err = e.DeadGroups("af")
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, g := range gs {
		got = append(got, row{g.Destination, g.Reason, g.Count, g.Sample.Key, g.Sample.LastStatus})
	}
	first := k("l0", "af")
	for _, f := range []string{"l1", "l4"} {
		if k(f, "af") < first {
			first = k(f, "af")
		}
	}
	want = []row{{"af", "http_400", 3, first, 400}, {"af", "http_500", 1, k("l2", "af"), 500}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("groups of af %+v; want %+v", got, want)
	}
	if gs, err := e.DeadGroups("none"); err != nil || len(gs) != 0 {
		t.Errorf("groups of an unknown destination: %+v, %v", gs, err)
	}
})

var _ = register("Expedite", func(t *testing.T, b Backend) {
	e := Open(t, b, nil)
	e.MustIngest(t, Note("evt_x1", Facts("x1")))
	e.MustIngest(t, Note("evt_x2", Facts("x2")))
	k := func(f, dest string) string { return FactID(f) + "|" + dest }
	later := e.Clock.Now().Add(time.Hour)
	e.MustComplete(t,
		store.Completion{Key: k("x1", "af"), State: store.StateRetrying, NextAt: later, KeepBudget: true, Reason: "auth", Attempt: &store.Attempt{Outcome: "pause", Status: 401}},
		store.Completion{Key: k("x2", "af"), State: store.StateRetrying, NextAt: later, Reason: "http_503", Attempt: &store.Attempt{Outcome: "retry", Status: 503}},
		store.Completion{Key: k("x1", "hook"), State: store.StateWaiting, NextAt: later, WaitUntil: later, Reason: "waiting for idfa"},
		store.Completion{Key: k("x2", "hook"), State: store.StateDead, Reason: "http_400"},
	)
	e.Clock.Add(time.Minute)
	now := e.Clock.Now()
	if got := e.DueKeys(t, "af", now); len(got) != 0 {
		t.Fatalf("due before expedite: %v", got)
	}
	ctx := context.Background()
	if n, err := e.Expedite(ctx, "af", now); err != nil || n != 2 {
		t.Fatalf("expedite af = %d, %v; want 2", n, err)
	}
	if got := e.DueKeys(t, "af", now); !sameKeys(got, []string{k("x1", "af"), k("x2", "af")}) {
		t.Errorf("due after expedite: %v", got)
	}
	d, err := e.Delivery(k("x1", "af"))
	if err != nil || d.State != store.StateRetrying || !d.NextAt().Equal(now.Truncate(time.Millisecond)) || d.Attempts != 1 {
		t.Errorf("expedited delivery %+v, %v", d, err)
	}
	// Waiting and final deliveries keep their state and time.
	if n, err := e.Expedite(ctx, "hook", now); err != nil || n != 0 {
		t.Errorf("expedite hook = %d, %v; want 0", n, err)
	}
	if d, err := e.Delivery(k("x1", "hook")); err != nil || d.State != store.StateWaiting || !d.NextAt().Equal(later) {
		t.Errorf("waiting delivery %+v, %v", d, err)
	}
	if n, err := e.Expedite(ctx, "af", now); err != nil || n != 0 {
		t.Errorf("second expedite = %d, %v; want 0", n, err)
	}
	if n, err := e.Expedite(ctx, "none", now); err != nil || n != 0 {
		t.Errorf("expedite of an unknown destination = %d, %v", n, err)
	}
})

func sameKeys(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
