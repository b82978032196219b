package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/metrics"
	"github.com/postback/postback/play"
	"github.com/postback/postback/store"
	"github.com/postback/postback/webhooks/googletest"
)

// listInbox is a GoogleInbox fake: a list of waiting items; Enrich takes an
// item off the list and reports its key on done.
type listInbox struct {
	mu    sync.Mutex
	items []mapping.Notification
	done  chan string
}

func (l *listInbox) add(t *testing.T, key, token string) {
	t.Helper()
	body, err := json.Marshal(googletest.SubscriptionNotification(gPackage, token, "pro_monthly", 3, testNow))
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.items = append(l.items, mapping.Notification{Source: mapping.SourceGoogle, Key: key, Body: body, Deferred: true})
	l.mu.Unlock()
}

func (l *listInbox) Pending(string, int) ([]mapping.Notification, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]mapping.Notification(nil), l.items...), nil
}

func (l *listInbox) Enrich(_ context.Context, _, key string, _ []byte) (store.IngestResult, error) {
	l.mu.Lock()
	for i := range l.items {
		if l.items[i].Key == key {
			l.items = append(l.items[:i], l.items[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
	l.done <- key
	return store.IngestResult{Status: mapping.StatusMapped}, nil
}

// hangingAPI answers every look-up at once, except for the token hang,
// whose call blocks until its context ends (a Publisher API call that
// hangs). It reports each hung call's context error on hung.
type hangingAPI struct {
	hang    string
	started chan struct{}
	hung    chan error
}

func (h *hangingAPI) Subscription(ctx context.Context, _, token string) (json.RawMessage, error) {
	if token == h.hang {
		h.started <- struct{}{}
		<-ctx.Done()
		h.hung <- ctx.Err()
		return nil, &play.Error{Op: "subscriptionsv2.get", Message: ctx.Err().Error(), Kind: play.ErrTemporary}
	}
	return json.RawMessage(`{"subscriptionState":"SUBSCRIPTION_STATE_CANCELED","lineItems":[{"productId":"pro_monthly"}]}`), nil
}

func (h *hangingAPI) Order(context.Context, string, string) (json.RawMessage, error) {
	return nil, errors.New("not used")
}

func (h *hangingAPI) Product(context.Context, string, string, string) (json.RawMessage, error) {
	return nil, errors.New("not used")
}

// waitKey waits for key on done; the bound only turns a hang into a
// failure, the test does not depend on it.
func waitKey(t *testing.T, done chan string, key string) {
	t.Helper()
	select {
	case got := <-done:
		if got != key {
			t.Fatalf("enriched %q, want %q", got, key)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s was never enriched: held behind the hanging item", key)
	}
}

// Issue 13, item 5: one Publisher API call that hangs held every other
// notification until the client timeout, because a pass waited for all of
// its items. Now each item progresses on its own: items stored after the
// hang started are enriched while it still hangs.
func TestGoogleEnricherHangHoldsNoOtherItem(t *testing.T) {
	inbox := &listInbox{done: make(chan string, 8)}
	api := &hangingAPI{hang: "tok-hang", started: make(chan struct{}, 1), hung: make(chan error, 1)}
	en := NewGoogleEnricher(inbox, api, GoogleEnricherOptions{Logger: slog.New(slog.DiscardHandler), Concurrency: 2, ItemTimeout: time.Hour, Interval: time.Hour})
	inbox.add(t, "hang", "tok-hang")
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- en.Run(ctx) }()
	<-api.started
	for _, k := range []string{"a", "b", "c"} {
		inbox.add(t, k, "tok-"+k)
		en.Nudge()
		waitKey(t, inbox.done, k)
	}
	cancel()
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	if err := <-api.hung; !errors.Is(err, context.Canceled) {
		t.Errorf("the hung call ended with %v, want the cancellation", err)
	}
}

// The per-item deadline ends a hanging call: the item fails this attempt
// and waits for its retry, and the items beside it are enriched.
func TestGoogleEnricherItemDeadline(t *testing.T) {
	inbox := &listInbox{done: make(chan string, 8)}
	api := &hangingAPI{hang: "tok-hang", started: make(chan struct{}, 1), hung: make(chan error, 1)}
	en := NewGoogleEnricher(inbox, api, GoogleEnricherOptions{Logger: slog.New(slog.DiscardHandler), ItemTimeout: time.Millisecond, BaseDelay: time.Hour})
	inbox.add(t, "hang", "tok-hang")
	inbox.add(t, "a", "tok-a")
	r := en.Pass(context.Background())
	if r.Pending != 2 || r.Enriched != 1 || r.Failed != 1 || r.NextTry.IsZero() {
		t.Errorf("pass %+v, want 2 pending, 1 enriched, 1 failed with a retry time", r)
	}
	if err := <-api.hung; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the hung call ended with %v, want its deadline", err)
	}
	if k := <-inbox.done; k != "a" {
		t.Errorf("enriched %q, want a", k)
	}
}

// Issue 13, item 5: an order look-up that keeps failing yielded, after a 404,
// an event without revenue and nothing to say so, and after 5xx retried
// forever. Now it is retried OrderAttempts times, then the event carries
// revenue_unknown=true, is counted in postback_revenue_unknown_total and
// logged.
func TestGoogleOrderLookupGivesUpExplicitly(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failures []int
		reason   string // "" when the revenue must be there
	}{
		{"order unavailable on every attempt", []int{503, 503, 503}, mapping.GoogleOrderUnavailable},
		{"order rejected on every attempt", []int{403, 403, 403}, mapping.GoogleOrderUnavailable},
		{"order not found", []int{404}, mapping.GoogleOrderNotFound},
		{"order back before the last attempt", []int{503, 503}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newE2E(t)
			var logs bytes.Buffer
			m := metrics.New()
			en := NewGoogleEnricher(x.db, x.api, GoogleEnricherOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: m,
				BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, OrderAttempts: 3})
			x.pub.SetSubscription(gPackage, "tok-1", subscription("GPA.1", false))
			x.pub.SetOrder(gPackage, "GPA.1", order("GPA.1", "BASE", money(4_990_000, "EUR")))
			x.pub.FailNext(googletest.OpOrder, tc.failures...)
			x.push("1", googletest.SubscriptionNotification(gPackage, "tok-1", "pro_monthly", 4, testNow))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := en.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			evs := x.events()
			if len(evs) != 1 || evs[0].Type != mapping.SubscriptionStarted {
				t.Fatalf("got %+v, want one subscription_started", evs)
			}
			e := evs[0]
			got := counterValue(t, m.RevenueUnknown.WithLabelValues(mapping.SourceGoogle, tc.reason))
			if tc.reason == "" {
				if e.Revenue == nil || e.Attributes["revenue_unknown"] != "" {
					t.Errorf("revenue %+v, attributes %v; want EUR 4.99 and no revenue_unknown", e.Revenue, e.Attributes)
				}
				if strings.Contains(logs.String(), "without revenue") {
					t.Errorf("logged a missing revenue: %s", logs.String())
				}
				return
			}
			if e.Revenue != nil || e.Attributes["revenue_unknown"] != "true" || e.Attributes["revenue_unknown_reason"] != tc.reason {
				t.Errorf("revenue %+v, attributes %v; want none, revenue_unknown=true, reason %s", e.Revenue, e.Attributes, tc.reason)
			}
			if got != 1 {
				t.Errorf("postback_revenue_unknown_total{reason=%q} = %v, want 1", tc.reason, got)
			}
			if !strings.Contains(logs.String(), "without revenue") || !strings.Contains(logs.String(), tc.reason) {
				t.Errorf("no log line names the missing revenue: %s", logs.String())
			}
			if c := x.pub.Count(googletest.OpOrder); c != len(tc.failures) {
				t.Errorf("orders.get called %d times, want %d", c, len(tc.failures))
			}
		})
	}
	// Only order failures count toward OrderAttempts: after three failed
	// purchase look-ups, one failed order look-up is retried, not given up.
	t.Run("subscription look-up failures are still retried, not given up", func(t *testing.T) {
		x := newE2E(t)
		en := NewGoogleEnricher(x.db, x.api, GoogleEnricherOptions{Logger: slog.New(slog.DiscardHandler), BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, OrderAttempts: 2})
		x.pub.SetSubscription(gPackage, "tok-1", subscription("GPA.1", false))
		x.pub.SetOrder(gPackage, "GPA.1", order("GPA.1", "BASE", money(4_990_000, "EUR")))
		x.pub.FailNext(googletest.OpSubscription, http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusServiceUnavailable)
		x.pub.FailNext(googletest.OpOrder, http.StatusServiceUnavailable)
		x.push("1", googletest.SubscriptionNotification(gPackage, "tok-1", "pro_monthly", 4, testNow))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := en.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		if evs := x.events(); len(evs) != 1 || evs[0].Revenue == nil || evs[0].Attributes["revenue_unknown"] != "" {
			t.Errorf("got %+v, want one event with its revenue", evs)
		}
		if c := x.pub.Count(googletest.OpOrder); c != 2 {
			t.Errorf("orders.get called %d times, want 2 (503, 200)", c)
		}
	})
}
