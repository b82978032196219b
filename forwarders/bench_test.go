package forwarders

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/postback/postback/mapping"
)

// benchNew builds a forwarder through the registry from a YAML destination
// block, as adSettings and mmpSettingsFor do for the tests (both need a
// *testing.T), with the production HTTP client.
func benchNew(b *testing.B, typ, endpoint, block string, now func() time.Time) Forwarder {
	b.Helper()
	f, err := New(Settings{
		Name: "bench-" + typ, Type: typ, Endpoint: endpoint,
		Decode: func(v any) error { return yaml.Unmarshal([]byte(block), v) },
		Client: NewClient(5 * time.Second),
		Now:    now,
	})
	if err != nil {
		b.Fatalf("New(%s): %v", typ, err)
	}
	return f
}

// benchServer is a destination that drains each request and answers
// status and answer, the success reply its golden test uses.
func benchServer(b *testing.B, status int, answer string) *httptest.Server {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if answer != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// benchSendOne returns an op that sends one item through f and fails unless
// it is delivered; it sends once first so the op starts on a warm
// keep-alive connection.
func benchSendOne(b *testing.B, f Forwarder, e *mapping.Event) func() {
	b.Helper()
	batch := []Item{{Key: "bench", Attempt: 1, Event: e}}
	send := func() {
		if r := f.Send(context.Background(), batch); len(r) != 1 || r[0].Outcome != Delivered {
			b.Fatalf("Send = %+v, want one delivered result", r)
		}
	}
	send()
	return send
}

// benchWebhookSecret is the e2e tests' signing secret shape: 32 bytes.
var benchWebhookSecret = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))

// BenchmarkPayload measures building the outbound request for one
// trial_converted event with revenue and identifiers, per destination type:
// mmpEvent("trial_converted") for the MMPs (it carries their device ids) and
// adFixture("trial_converted") for the ad networks and the webhook (hashed
// email and phone, IDFA, Firebase id). Where a forwarder has a separate
// build step, an op is that step plus the encoding its send applies, with no
// I/O. Kochava, Singular and the webhook build the request inline in send,
// so their op is a whole Send of one item to a local httptest server: those
// figures include the loopback HTTP exchange and the server's own
// allocations, and are not comparable with the build-only rows.
func BenchmarkPayload(b *testing.B) {
	cases := map[string]func(b *testing.B) func(){
		// Adjust.form, then the form encoding send posts.
		"adjust": func(b *testing.B) func() {
			a := benchNew(b, "adjust", "", adjBlock, mmpClock).(*Adjust)
			e := mmpEvent("trial_converted")
			return func() {
				t := &a.prod
				token := adjustToken(e, t.tokens)
				at, bad := eventTime(e, a.now(), adjustMaxAge)
				if bad != nil || token == "" {
					b.Fatalf("adjust: token %q, time %+v", token, bad)
				}
				rev, bad := a.convert(e)
				if bad != nil {
					b.Fatalf("adjust: convert %+v", bad)
				}
				if len(a.form(e, t, token, at, rev).Encode()) == 0 {
					b.Fatal("adjust: empty form")
				}
			}
		},
		// AppsFlyer.body, which returns the JSON send posts.
		"appsflyer": func(b *testing.B) func() {
			a := benchNew(b, "appsflyer", "", afBlock, mmpClock).(*AppsFlyer)
			e := mmpEvent("trial_converted")
			return func() {
				t := &a.prod
				name := a.eventName(e)
				at, bad := eventTime(e, a.now(), 0)
				if bad != nil || name == "" {
					b.Fatalf("appsflyer: name %q, time %+v", name, bad)
				}
				rev, bad := a.convert(e)
				if bad != nil {
					b.Fatalf("appsflyer: convert %+v", bad)
				}
				if _, err := a.body(e, name, at, rev, t.platform); err != nil {
					b.Fatal(err)
				}
			}
		},
		// Branch.event, then the JSON encoding send posts.
		"branch": func(b *testing.B) func() {
			f := benchNew(b, "branch", "", brBlock, mmpClock).(*Branch)
			e := mmpEvent("trial_converted")
			return func() {
				name := f.eventName(e)
				if name == "" {
					b.Fatal("branch: no event name")
				}
				rev, bad := f.convert(e)
				if bad != nil {
					b.Fatalf("branch: convert %+v", bad)
				}
				if _, err := json.Marshal(f.event(e, &f.prod, name, rev)); err != nil {
					b.Fatal(err)
				}
			}
		},
		// No build step: Send against a server answering {"success":"1"}.
		"kochava": func(b *testing.B) func() {
			srv := benchServer(b, http.StatusOK, `{"success":"1"}`)
			return benchSendOne(b, benchNew(b, "kochava", srv.URL, koBlock, mmpClock), mmpEvent("trial_converted"))
		},
		// Meta.event, then the JSON and form encoding post sends.
		"meta": func(b *testing.B) func() {
			m := benchNew(b, "meta", "", metaTestBlock, adClock).(*Meta)
			e := adFixture("trial_converted")
			return func() { benchMetaBody(b, m, []*mapping.Event{e}) }
		},
		// No build step: Send against a server answering {"status":"ok"}.
		"singular": func(b *testing.B) func() {
			srv := benchServer(b, http.StatusOK, `{"status":"ok"}`)
			return benchSendOne(b, benchNew(b, "singular", srv.URL, sngBlock, mmpClock), mmpEvent("trial_converted"))
		},
		// TikTok.event, then the JSON encoding post sends.
		"tiktok": func(b *testing.B) func() {
			t := benchNew(b, "tiktok", "", tiktokTestBlock, adClock).(*TikTok)
			e := adFixture("trial_converted")
			return func() { benchTikTokBody(b, t, []*mapping.Event{e}) }
		},
		// GA4.event, then the JSON encoding post sends.
		"ga4": func(b *testing.B) func() {
			g := benchNew(b, "ga4", "", ga4AppBlock, adClock).(*GA4)
			e := adFixture("trial_converted")
			return func() { benchGA4Bodies(b, g, []*mapping.Event{e}) }
		},
		// No build step (it encodes and signs inline): Send against a
		// Standard Webhooks receiver answering 204.
		"webhook": func(b *testing.B) func() {
			srv := benchServer(b, http.StatusNoContent, "")
			f := benchNew(b, "webhook", srv.URL, "secret: "+benchWebhookSecret+"\n", adClock)
			return benchSendOne(b, f, adFixture("trial_converted"))
		},
	}
	for _, typ := range Types() {
		setup, ok := cases[typ]
		if !ok {
			b.Errorf("destination type %s has no payload benchmark", typ)
			continue
		}
		b.Run(typ, func(b *testing.B) {
			op := setup(b)
			b.ReportAllocs()
			for b.Loop() {
				op()
			}
		})
	}
}

// BenchmarkPayloadBatch measures building the requests for a batch of 100
// trial_converted events of 100 different users (what a dispatcher batch
// holds) for the batching ad networks: one Meta request, one TikTok request,
// and for GA4, which takes one user per request, 100 one-event requests.
// ns/event is ns/op divided by the batch size.
func BenchmarkPayloadBatch(b *testing.B) {
	const size = 100
	events := make([]*mapping.Event, size)
	for i := range events {
		e := adFixture("trial_converted")
		e.User.AppUserID = fmt.Sprintf("user-%03d", i)
		e.User.Identifiers[mapping.IDFirebase] = fmt.Sprintf("f9a3c1e2b4d64b7a8c0d1e2f3a4b5%03d", i)
		e.TransactionID = fmt.Sprintf("2000000987654%03d", i)
		e.ID = mapping.EventID(e.Source, e.TransactionID, string(e.Type))
		events[i] = e
	}
	cases := []struct {
		typ, block string
		op         func(b *testing.B, f Forwarder)
	}{
		{"meta", metaTestBlock, func(b *testing.B, f Forwarder) { benchMetaBody(b, f.(*Meta), events) }},
		{"tiktok", tiktokTestBlock, func(b *testing.B, f Forwarder) { benchTikTokBody(b, f.(*TikTok), events) }},
		{"ga4", ga4AppBlock, func(b *testing.B, f Forwarder) { benchGA4Bodies(b, f.(*GA4), events) }},
	}
	for _, tc := range cases {
		b.Run(tc.typ, func(b *testing.B) {
			f := benchNew(b, tc.typ, "", tc.block, adClock)
			if lim := f.Limits().BatchSize; lim < size && tc.typ != "ga4" {
				b.Fatalf("%s batches %d events, fewer than %d", tc.typ, lim, size)
			}
			b.ReportAllocs()
			for b.Loop() {
				tc.op(b, f)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(b.N, 1)*size), "ns/event")
		})
	}
}

// benchMetaBody builds one Conversions API request body for events, as
// Send and post do: Meta.event for each, then the data JSON inside the form
// with the access token.
func benchMetaBody(b *testing.B, m *Meta, events []*mapping.Event) {
	now := m.now()
	data := make([]metaEvent, len(events))
	for i, e := range events {
		name := EventName(e, m.names, metaDefaultNames)
		ev, r := m.event(e, name, now)
		if r != nil || name == "" {
			b.Fatalf("meta: name %q, result %+v", name, r)
		}
		data[i] = ev
	}
	js, err := json.Marshal(data)
	if err != nil {
		b.Fatal(err)
	}
	form := url.Values{"data": {string(js)}, "access_token": {m.prod.AccessToken}}
	if len(form.Encode()) == 0 {
		b.Fatal("meta: empty form")
	}
}

// benchTikTokBody builds one Events API request body for events, as Send
// and post do: TikTok.event for each, then the JSON envelope.
func benchTikTokBody(b *testing.B, t *TikTok, events []*mapping.Event) {
	now := t.now()
	ch := adChannel(events[0])
	c := t.creds(events[0])
	body := tiktokRequest{EventSource: ch, EventSourceID: c.sourceID(ch), TestEventCode: c.TestEventCode, Data: make([]tiktokEvent, len(events))}
	if body.EventSourceID == "" {
		b.Fatalf("tiktok: no event source id for %s", ch)
	}
	for i, e := range events {
		name := t.name(e)
		if name == "" {
			b.Fatalf("tiktok: no event name for %s", e.Type)
		}
		body.Data[i] = t.event(e, name, now)
	}
	if _, err := json.Marshal(body); err != nil {
		b.Fatal(err)
	}
}

// benchGA4Bodies builds the Measurement Protocol bodies for events of
// distinct users, as Send and post do: GA4.event for each, then one JSON
// request per user.
func benchGA4Bodies(b *testing.B, g *GA4, events []*mapping.Event) {
	now := g.now()
	for _, e := range events {
		c, why := g.creds(e)
		if c == nil {
			b.Fatalf("ga4: %s", why)
		}
		name := EventName(e, g.names, ga4DefaultNames)
		device := e.Identifier(c.userKey())
		if name == "" || device == "" {
			b.Fatalf("ga4: name %q, %s %q", name, c.userKey(), device)
		}
		ev := g.event(e, name, now)
		body := ga4Request{AppInstanceID: device, UserID: e.User.AppUserID, TimestampMicros: ev.TimestampMicros, Events: []ga4Event{ev}}
		if _, err := json.Marshal(body); err != nil {
			b.Fatal(err)
		}
	}
}
