package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
)

func TestExposition(t *testing.T) {
	m := New()
	m.Received.WithLabelValues("stripe").Inc()
	m.CountEvents([]mapping.Event{{Source: "apple", Type: mapping.TrialConverted}, {Source: "apple", Type: mapping.TrialConverted}})
	m.ObserveIngest("stripe", 3*time.Millisecond)
	m.Paused.WithLabelValues("af").Set(1)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`postback_notifications_received_total{source="stripe"} 1`,
		`postback_events_total{source="apple",type="trial_converted"} 2`,
		`postback_ingest_seconds_count{source="stripe"} 1`,
		`postback_destination_paused{destination="af"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	// Two gateways in one process do not share collectors.
	if strings.Contains(scrape(t, New()), `postback_notifications_received_total{source="stripe"} 1`) {
		t.Error("a new Metrics sees another's counts")
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}
