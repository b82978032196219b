// Package metrics holds Postback's Prometheus collectors. One Metrics value
// is created per gateway with its own registry (no package-level state), so
// tests can run several gateways in one process.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/postback/postback/mapping"
)

// Metrics is the set of gateway collectors.
type Metrics struct {
	Registry *prometheus.Registry

	Received   *prometheus.CounterVec // source
	Verified   *prometheus.CounterVec // source
	Rejected   *prometheus.CounterVec // source, reason
	Duplicates *prometheus.CounterVec // source
	Ignored    *prometheus.CounterVec // source
	Events     *prometheus.CounterVec // source, type
	Ingest     *prometheus.HistogramVec
	// RevenueUnknown counts events made without their amount because the
	// order look-up kept failing or found nothing (source, reason).
	RevenueUnknown *prometheus.CounterVec

	Deliveries      *prometheus.CounterVec   // destination, outcome
	DeliveryLatency *prometheus.HistogramVec // destination
	QueueDepth      *prometheus.GaugeVec     // destination
	OldestPending   *prometheus.GaugeVec     // destination, seconds
	Paused          *prometheus.GaugeVec     // destination: 1 while paused for auth/config
	Circuit         *prometheus.GaugeVec     // destination, state: 1 for the current state (SetCircuit)
	NotSent         *prometheus.CounterVec   // destination, reason (no event name, sandbox, too old)

	ErasuresPending prometheus.Gauge   // privacy erasures queued
	ErasuresDone    prometheus.Counter // privacy erasures carried out

	AuthFailures  *prometheus.CounterVec // realm: admin, console, api
	AuthThrottled *prometheus.CounterVec // realm: requests refused while an address is held back

	BuildInfo *prometheus.GaugeVec // version, commit, goversion: always 1
}

// Circuit states, the values of postback_circuit_state's state label.
const (
	CircuitClosed   = "closed"
	CircuitOpen     = "open"
	CircuitHalfOpen = "half-open"
)

// CircuitStates lists the circuit states.
var CircuitStates = []string{CircuitClosed, CircuitOpen, CircuitHalfOpen}

// DeliveryOutcomes are the outcome label values of postback_deliveries_total.
var DeliveryOutcomes = []string{"delivered", "duplicate", "retry", "dead", "skipped", "pause"}

// NotSentReasons are the usual reason labels of
// postback_deliveries_not_sent_total (a forwarder may add others).
var NotSentReasons = []string{"missing", "missing_identifier", "no_event_name", "platform_mismatch", "sandbox_not_configured", "too_old"}

// AuthRealms are the realm label values of the auth counters.
var AuthRealms = []string{"admin", "console", "api"}

// New creates and registers the collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: r,
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_notifications_received_total", Help: "Requests received on a source's webhook path (or POST /v1/events), before verification.",
		}, []string{"source"}),
		Verified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_notifications_verified_total", Help: "Notifications that passed verification (signature, app, environment) and were handed to the store.",
		}, []string{"source"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_notifications_rejected_total", Help: "Requests answered with an error, by source and reason code (verification failures, malformed bodies, store_unavailable, client_closed).",
		}, []string{"source", "reason"}),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_notifications_duplicate_total", Help: "Notifications already in the inbox (source retries).",
		}, []string{"source"}),
		Ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_notifications_ignored_total", Help: "Authentic notifications that produce no event (unhandled types, other apps).",
		}, []string{"source"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_events_total", Help: "Canonical events created, by type.",
		}, []string{"source", "type"}),
		Ingest: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postback_ingest_seconds", Help: "Time to store a verified notification durably (the store commit), in seconds.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"source"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_deliveries_total", Help: "Delivery attempts by destination and outcome (delivered, duplicate, retry, dead, skipped, pause).",
		}, []string{"destination", "outcome"}),
		DeliveryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postback_delivery_seconds", Help: "Latency of delivery requests to a destination, in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"destination"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postback_queue_depth", Help: "Deliveries queued (pending, retrying, waiting) per destination.",
		}, []string{"destination"}),
		OldestPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postback_oldest_pending_seconds", Help: "Age in seconds of the oldest queued delivery per destination (0 when none).",
		}, []string{"destination"}),
		Paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postback_destination_paused", Help: "1 while a destination is paused for an authentication or configuration failure.",
		}, []string{"destination"}),
		Circuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postback_circuit_state", Help: "Circuit breaker state per destination: 1 for its current state (closed, open, half-open), 0 for the others.",
		}, []string{"destination", "state"}),
		NotSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_deliveries_not_sent_total", Help: "Deliveries ended without being sent (skipped), by destination and reason.",
		}, []string{"destination", "reason"}),
		RevenueUnknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_revenue_unknown_total", Help: "Events made without their amount because the order could not be read (attribute revenue_unknown).",
		}, []string{"source", "reason"}),
		ErasuresPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postback_privacy_erasures_pending", Help: "Privacy erasures (Shopify customers/redact, shop/redact) queued and not yet carried out.",
		}),
		ErasuresDone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postback_privacy_erasures_total", Help: "Privacy erasures carried out.",
		}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_auth_failures_total", Help: "Failed admin-token, console-login and API-key attempts, by realm.",
		}, []string{"realm"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postback_build_info", Help: "Always 1; the labels name the running build (version, commit, Go version).",
		}, []string{"version", "commit", "goversion"}),
		AuthThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postback_auth_throttled_total", Help: "Requests refused (429) because their address failed authentication too often, by realm.",
		}, []string{"realm"}),
	}
	r.MustRegister(m.Received, m.Verified, m.Rejected, m.Duplicates, m.Ignored, m.Events, m.Ingest, m.RevenueUnknown,
		m.Deliveries, m.DeliveryLatency, m.QueueDepth, m.OldestPending, m.Paused, m.Circuit, m.NotSent,
		m.ErasuresPending, m.ErasuresDone, m.AuthFailures, m.AuthThrottled, m.BuildInfo)
	for _, realm := range AuthRealms {
		m.AuthFailures.WithLabelValues(realm)
		m.AuthThrottled.WithLabelValues(realm)
	}
	return m
}

// SetBuildInfo sets postback_build_info.
func (m *Metrics) SetBuildInfo(version, commit string) {
	m.BuildInfo.Reset()
	m.BuildInfo.WithLabelValues(version, commit, runtime.Version()).Set(1)
}

// SetCircuit marks state as the destination's circuit state.
func (m *Metrics) SetCircuit(destination, state string) {
	for _, s := range CircuitStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.Circuit.WithLabelValues(destination, s).Set(v)
	}
}

// InitSource creates every series of a source at zero, so that rates and
// alerts see it before its first request: rejectReasons are the reason
// codes the source can answer.
func (m *Metrics) InitSource(source string, rejectReasons []string) {
	m.Received.WithLabelValues(source)
	m.Verified.WithLabelValues(source)
	m.Duplicates.WithLabelValues(source)
	m.Ignored.WithLabelValues(source)
	m.Ingest.WithLabelValues(source)
	for _, r := range rejectReasons {
		m.Rejected.WithLabelValues(source, r)
	}
	for _, t := range mapping.Types {
		m.Events.WithLabelValues(source, string(t))
	}
}

// InitDestination creates every series of a destination at zero (its
// circuit closed).
func (m *Metrics) InitDestination(name string) {
	for _, o := range DeliveryOutcomes {
		m.Deliveries.WithLabelValues(name, o)
	}
	for _, r := range NotSentReasons {
		m.NotSent.WithLabelValues(name, r)
	}
	m.DeliveryLatency.WithLabelValues(name)
	m.QueueDepth.WithLabelValues(name)
	m.OldestPending.WithLabelValues(name)
	m.Paused.WithLabelValues(name)
	m.SetCircuit(name, CircuitClosed)
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// CountEvents counts newly created canonical events.
func (m *Metrics) CountEvents(events []mapping.Event) {
	for i := range events {
		m.Events.WithLabelValues(events[i].Source, string(events[i].Type)).Inc()
	}
}

// ObserveIngest records the ingest latency of one notification.
func (m *Metrics) ObserveIngest(source string, d time.Duration) {
	m.Ingest.WithLabelValues(source).Observe(d.Seconds())
}
