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

// Issue 16, item 10: build info; every series of a configured source and
// destination at zero before any traffic; the circuit state as a label.
func TestSeriesAtZeroBuildInfoAndCircuitLabel(t *testing.T) {
	m := New()
	m.SetBuildInfo("1.2.3", "abc123")
	m.InitSource("stripe", []string{"invalid_signature", "store_unavailable"})
	m.InitDestination("af-ios")
	m.SetCircuit("af-ios", CircuitOpen)
	body := scrape(t, m)
	for _, want := range []string{
		`postback_build_info{commit="abc123",goversion="go`,
		`postback_notifications_received_total{source="stripe"} 0`,
		`postback_notifications_verified_total{source="stripe"} 0`,
		`postback_notifications_rejected_total{reason="invalid_signature",source="stripe"} 0`,
		`postback_notifications_rejected_total{reason="store_unavailable",source="stripe"} 0`,
		`postback_notifications_duplicate_total{source="stripe"} 0`,
		`postback_notifications_ignored_total{source="stripe"} 0`,
		`postback_events_total{source="stripe",type="refund"} 0`,
		`postback_ingest_seconds_count{source="stripe"} 0`,
		`postback_deliveries_total{destination="af-ios",outcome="delivered"} 0`,
		`postback_deliveries_total{destination="af-ios",outcome="dead"} 0`,
		`postback_deliveries_not_sent_total{destination="af-ios",reason="missing_identifier"} 0`,
		`postback_delivery_seconds_count{destination="af-ios"} 0`,
		`postback_queue_depth{destination="af-ios"} 0`,
		`postback_oldest_pending_seconds{destination="af-ios"} 0`,
		`postback_destination_paused{destination="af-ios"} 0`,
		`postback_circuit_state{destination="af-ios",state="open"} 1`,
		`postback_circuit_state{destination="af-ios",state="closed"} 0`,
		`postback_circuit_state{destination="af-ios",state="half-open"} 0`,
		`postback_auth_failures_total{realm="api"} 0`,
		`postback_auth_throttled_total{realm="console"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if !strings.Contains(body, `version="1.2.3"} 1`) {
		t.Error("postback_build_info is not 1 with the version label")
	}
}
