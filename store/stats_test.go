package store

import (
	"context"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
)

func TestStatsAndDeadCounts(t *testing.T) {
	base := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	db := mustOpen(t, &Options{
		Now:   func() time.Time { return base },
		Route: func(*mapping.Event) []string { return []string{"a", "b"} },
		Map: func(n *mapping.Notification, _ mapping.States) (mapping.Result, error) {
			return mapping.Result{Events: []mapping.Event{{ID: "evt_" + n.Key, Type: mapping.Type(n.Type), Source: n.Source}}}, nil
		},
	})
	ctx := context.Background()
	ingest := func(key, typ string, at time.Time) {
		t.Helper()
		if _, err := db.Ingest(ctx, &mapping.Notification{Source: "custom", Key: key, Type: typ, ReceivedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	ingest("1", "trial_started", base.Add(10*time.Minute))
	ingest("2", "trial_started", base.Add(50*time.Minute))
	ingest("3", "refund", base.Add(70*time.Minute))
	ingest("4", "refund", base.Add(3*time.Hour))  // outside the window
	ingest("0", "refund", base.Add(-time.Minute)) // before the window
	if err := db.Complete(ctx, []Completion{
		{Key: "evt_1|a", State: StateDelivered, Attempt: &Attempt{Outcome: "delivered", Status: 200}},
		{Key: "evt_2|a", State: StateDead, Attempt: &Attempt{Outcome: "dead", Status: 400}},
		{Key: "evt_4|b", State: StateDead, Attempt: &Attempt{Outcome: "dead", Status: 400}},
	}); err != nil {
		t.Fatal(err)
	}

	s, err := db.Stats(base, base.Add(2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Buckets) != 2 || s.Events != 3 || s.Truncated {
		t.Fatalf("buckets %d events %d truncated %v, want 2, 3, false", len(s.Buckets), s.Events, s.Truncated)
	}
	if got := s.Buckets[0]; got["trial_started"] != 2 || len(got) != 1 {
		t.Errorf("hour 0: %v, want trial_started 2", got)
	}
	if got := s.Buckets[1]; got["refund"] != 1 || len(got) != 1 {
		t.Errorf("hour 1: %v, want refund 1", got)
	}
	if a := s.Deliveries["a"]; a[StateDelivered] != 1 || a[StateDead] != 1 || a[StatePending] != 1 {
		t.Errorf("destination a: %v", a)
	}
	if b := s.Deliveries["b"]; b[StatePending] != 3 || b[StateDead] != 0 {
		t.Errorf("destination b: %v", b)
	}

	for _, tc := range []struct {
		name          string
		since, until  time.Time
		bucket        time.Duration
		buckets, evts int
	}{
		{"empty window", base.Add(10 * time.Hour), base.Add(11 * time.Hour), time.Hour, 1, 0},
		{"bucket below a minute", base, base.Add(11 * time.Minute), time.Second, 11, 1},
		{"until before since", base.Add(time.Hour), base, time.Hour, 1, 1},
		{"partial last bucket", base, base.Add(90 * time.Minute), time.Hour, 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := db.Stats(tc.since, tc.until, tc.bucket)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Buckets) != tc.buckets || s.Events != tc.evts {
				t.Errorf("buckets %d events %d, want %d %d", len(s.Buckets), s.Events, tc.buckets, tc.evts)
			}
		})
	}

	dead, err := db.DeadCounts()
	if err != nil {
		t.Fatal(err)
	}
	if dead["a"] != 1 || dead["b"] != 1 || len(dead) != 2 {
		t.Errorf("dead counts %v, want a 1, b 1", dead)
	}
}
