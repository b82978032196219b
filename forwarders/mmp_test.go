package forwarders

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/postback/postback/mapping"
)

// update rewrites the golden files under testdata/ instead of comparing
// against them: go test ./forwarders -run Golden -update. Declared once for
// the whole package; every forwarder's golden test uses it.
var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// mmpNow is the fixed clock of the MMP tests.
var mmpNow = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func mmpClock() time.Time { return mmpNow }

// mmpCaptured is one request as the test server received it.
type mmpCaptured struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
}

// mmpServer is an httptest server that records every request and answers
// with respond.
type mmpServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []mmpCaptured
}

func newMMPServer(t *testing.T, respond func(c mmpCaptured) (int, string)) *mmpServer {
	t.Helper()
	s := &mmpServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c := mmpCaptured{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body}
		s.mu.Lock()
		s.reqs = append(s.reqs, c)
		s.mu.Unlock()
		status, out := 200, ""
		if respond != nil {
			status, out = respond(c)
		}
		if strings.HasPrefix(out, "{") {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, out)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *mmpServer) requests() []mmpCaptured {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]mmpCaptured(nil), s.reqs...)
}

// mmpSettingsFor builds Settings whose Decode reads the YAML block.
func mmpSettingsFor(t *testing.T, typ, endpoint, block string, names map[string]string) Settings {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(block), &n); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return Settings{
		Name: typ + "-test", Type: typ, Endpoint: endpoint, EventNames: names,
		Decode: func(v any) error {
			if len(n.Content) == 0 {
				return nil
			}
			return n.Content[0].Decode(v)
		},
		Client: NewClient(5 * time.Second),
		Now:    mmpClock,
	}
}

// mmpNew builds a forwarder through the registry, failing the test on error.
func mmpNew(t *testing.T, typ, endpoint, block string, names map[string]string) Forwarder {
	t.Helper()
	f, err := New(mmpSettingsFor(t, typ, endpoint, block, names))
	if err != nil {
		t.Fatalf("New(%s): %v", typ, err)
	}
	return f
}

// mmpEvent returns a fully identified iOS event of the given case.
func mmpEvent(kind string) *mapping.Event {
	e := &mapping.Event{
		ID: "evt_" + kind, Source: mapping.SourceApple, Environment: mapping.Production,
		AppID: "com.example.app", ProductID: "pro_monthly", SubscriptionID: "2000000123456789",
		TransactionID: "2000000987654321",
		User: mapping.User{AppUserID: "user_42", Identifiers: map[string]string{
			mapping.IDAppsFlyer: "1699887556000-6192770", mapping.IDAdjust: "18546f6171f67e29d1cb983322ad1329",
			mapping.IDIDFA: "6D92078A-8246-4BA4-AE5B-76104861E7DC", mapping.IDIDFV: "AB12CD34-0000-4000-8000-1234567890AB",
			mapping.IDKochava: "KA1234567890abcdef", mapping.IDIP: "203.0.113.9",
			mapping.IDUserAgent: "Example/42 CFNetwork/1410 Darwin/22.6.0", mapping.IDOS: "ios", mapping.IDOSVersion: "17.5",
			mapping.IDDeviceModel: "iPhone15,2", mapping.IDATTStatus: "3", mapping.IDCountry: "US",
		}},
		OccurredAt: mmpNow.Add(-90 * time.Minute), ReceivedAt: mmpNow.Add(-89 * time.Minute),
		SourceEventID: "notif-" + kind, Attributes: map[string]string{"period": "P1M"},
	}
	rev := func(m int64) *mapping.Revenue { return &mapping.Revenue{AmountMicros: m, Currency: "USD"} }
	switch kind {
	case "trial_started":
		e.Type = mapping.TrialStarted
		e.Attributes["offer"] = "free_trial"
	case "trial_converted":
		e.Type = mapping.TrialConverted
		e.Revenue = rev(9_990_000)
		e.Attributes["offer"] = "free_trial"
	case "subscription_renewed":
		e.Type = mapping.SubscriptionRenewed
		e.Revenue = rev(9_990_000)
	case "refund":
		e.Type = mapping.Refund
		e.Revenue = rev(-9_990_000)
	case "purchase":
		e.Type = mapping.Purchase
		e.ProductID = "coins_500"
		e.SubscriptionID = ""
		e.Revenue = rev(4_990_000)
		delete(e.Attributes, "period")
	}
	return e
}

// mmpGoldenCases are the cases every MMP destination has a golden file for.
var mmpGoldenCases = []string{"trial_started", "trial_converted", "subscription_renewed", "refund", "purchase"}

// mmpRender prints a captured request: method and path, sorted query and
// relevant headers with secrets masked, and the body (pretty JSON, or one
// form field a line).
func mmpRender(t *testing.T, c mmpCaptured, secrets ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(c.Method + " " + c.Path + "\n")
	if len(c.Query) > 0 {
		b.WriteString("query:\n")
		writeValues(&b, c.Query)
	}
	b.WriteString("headers:\n")
	for _, h := range []string{"Accept", "Authentication", "Authorization", "Content-Type", "User-Agent"} {
		if v := c.Header.Get(h); v != "" {
			b.WriteString("  " + h + ": " + v + "\n")
		}
	}
	if len(c.Body) > 0 {
		b.WriteString("body:\n")
		switch {
		case strings.HasPrefix(c.Header.Get("Content-Type"), "application/json"):
			var out bytes.Buffer
			if err := json.Indent(&out, c.Body, "", "  "); err != nil {
				t.Fatalf("body is not JSON: %v\n%s", err, c.Body)
			}
			b.Write(out.Bytes())
			b.WriteString("\n")
		case strings.HasPrefix(c.Header.Get("Content-Type"), "application/x-www-form-urlencoded"):
			v, err := url.ParseQuery(string(c.Body))
			if err != nil {
				t.Fatalf("body is not a form: %v", err)
			}
			writeValues(&b, v)
		default:
			b.Write(c.Body)
			b.WriteString("\n")
		}
	}
	return []byte(maskSecrets(b.String(), secrets))
}

func writeValues(b *bytes.Buffer, v url.Values) {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, x := range v[k] {
			b.WriteString("  " + k + "=" + x + "\n")
		}
	}
}

// mmpCheckGolden compares got with testdata/<dir>/<name>.golden.
func mmpCheckGolden(t *testing.T, dir, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", dir, name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s mismatch (run with -update after checking):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// mmpGolden sends every golden case through a forwarder built from block
// and compares each request the server received with its golden file.
func mmpGolden(t *testing.T, typ, block string, respond func(c mmpCaptured) (int, string), secrets ...string) {
	t.Helper()
	for _, kind := range mmpGoldenCases {
		t.Run(kind, func(t *testing.T) {
			srv := newMMPServer(t, respond)
			f := mmpNew(t, typ, srv.URL, block, nil)
			res := f.Send(context.Background(), []Item{{Key: "d1", Attempt: 1, Event: mmpEvent(kind)}})
			if len(res) != 1 || res[0].Outcome != Delivered {
				t.Fatalf("Send = %+v, want one delivered result", res)
			}
			reqs := srv.requests()
			if len(reqs) != 1 {
				t.Fatalf("server got %d requests, want 1", len(reqs))
			}
			mmpCheckGolden(t, typ, kind, mmpRender(t, reqs[0], secrets...))
		})
	}
}

// mmpClassifyCase is one row of a response classification table.
type mmpClassifyCase struct {
	name       string
	status     int
	body       string
	header     map[string]string
	attempt    int
	want       Outcome
	reason     string
	throttle   bool
	retryAfter time.Duration
}

// mmpClassify runs a classification table against an httptest server.
func mmpClassify(t *testing.T, typ, block string, kind string, cases []mmpClassifyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			f := mmpNew(t, typ, srv.URL, block, nil)
			attempt := tc.attempt
			if attempt == 0 {
				attempt = 1
			}
			r := f.Send(context.Background(), []Item{{Key: "d", Attempt: attempt, Event: mmpEvent(kind)}})[0]
			if r.Outcome != tc.want {
				t.Errorf("outcome = %s, want %s (%+v)", r.Outcome, tc.want, r)
			}
			if tc.reason != "" && r.Reason != tc.reason {
				t.Errorf("reason = %q, want %q", r.Reason, tc.reason)
			}
			if r.Throttle != tc.throttle {
				t.Errorf("throttle = %v, want %v", r.Throttle, tc.throttle)
			}
			if r.RetryAfter != tc.retryAfter {
				t.Errorf("retry after = %s, want %s", r.RetryAfter, tc.retryAfter)
			}
			if r.Status != tc.status {
				t.Errorf("status = %d, want %d", r.Status, tc.status)
			}
			if (r.Outcome == Delivered || r.Outcome == Duplicate) != (r.Err == nil) {
				t.Errorf("err = %v for outcome %s", r.Err, r.Outcome)
			}
		})
	}
}

// TestMMPNoSecretLeaks sends through every MMP destination against servers
// that echo the secrets back, fail, or are unreachable, and checks that no
// secret appears in what the dispatcher logs and stores (request summary,
// response excerpt, reason, error).
func TestMMPNoSecretLeaks(t *testing.T) {
	const (
		afKey   = "af-s2s-token-SECRET-1"
		adjTok  = "adjust-s2s-SECRET-2"
		sngKey  = "singular_sdk_SECRET_3"
		brKey   = "key_live_branchSECRET4"
		kochava = "kochavaguid-SECRET-5"
	)
	dests := []struct{ typ, block, secret string }{
		{"appsflyer", "app_id: id123456789\ns2s_token: " + afKey, afKey},
		{"adjust", "app_token: abc123def456\ns2s_token: " + adjTok + "\nevent_tokens: {subscription_renewed: f0ob4r}", adjTok},
		{"singular", "sdk_key: " + sngKey, sngKey},
		{"branch", "branch_key: " + brKey, brKey},
		{"kochava", "app_guid: " + kochava, kochava},
	}
	responses := []struct {
		status int
		body   func(secret string) string
	}{
		{200, func(s string) string {
			return `{"status":"error","reason":"bad key ` + s + `","success":"0","error":"app ` + s + `"}`
		}},
		{400, func(s string) string { return "Failed to authenticate " + s }},
		{401, func(s string) string { return `{"error":"token ` + s + ` refused"}` }},
		{500, func(s string) string { return "internal " + s }},
	}
	for _, d := range dests {
		for _, resp := range responses {
			t.Run(d.typ+"/"+http.StatusText(resp.status), func(t *testing.T) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(resp.status)
					_, _ = io.WriteString(w, resp.body(d.secret))
				}))
				defer srv.Close()
				f := mmpNew(t, d.typ, srv.URL, d.block, nil)
				r := f.Send(context.Background(), []Item{{Key: "d", Attempt: 1, Event: mmpEvent("subscription_renewed")}})[0]
				mmpAssertNoSecret(t, r, d.secret)
			})
		}
		t.Run(d.typ+"/network", func(t *testing.T) {
			srv := httptest.NewServer(http.NotFoundHandler())
			u := srv.URL
			srv.Close() // connection refused: the error carries the URL
			f := mmpNew(t, d.typ, u, d.block, nil)
			r := f.Send(context.Background(), []Item{{Key: "d", Attempt: 1, Event: mmpEvent("subscription_renewed")}})[0]
			if r.Outcome != Retry || r.Reason != "network" {
				t.Errorf("outcome = %s %q, want retry network", r.Outcome, r.Reason)
			}
			mmpAssertNoSecret(t, r, d.secret)
		})
	}
}

func mmpAssertNoSecret(t *testing.T, r Result, secret string) {
	t.Helper()
	text := r.Request + "\n" + r.Response + "\n" + r.Reason
	if r.Err != nil {
		text += "\n" + r.Err.Error()
	}
	if strings.Contains(text, secret) {
		t.Errorf("secret leaked into the result:\n%s", text)
	}
}

func TestRevenueCompileErrors(t *testing.T) {
	cases := []struct {
		name string
		rs   RevenueSettings
		key  string
	}{
		{"unknown revenue mode", RevenueSettings{Revenue: "net"}, "revenue"},
		{"commission without proceeds", RevenueSettings{Commission: map[string]string{"apple": "15"}}, "commission"},
		{"commission unknown source", RevenueSettings{Revenue: "proceeds", Commission: map[string]string{"amazon": "20"}}, "commission.amazon"},
		{"commission not a number", RevenueSettings{Revenue: "proceeds", Commission: map[string]string{"apple": "fifteen"}}, "commission.apple"},
		{"commission 100", RevenueSettings{Revenue: "proceeds", Commission: map[string]string{"apple": "100"}}, "commission.apple"},
		{"commission negative", RevenueSettings{Revenue: "proceeds", Commission: map[string]string{"google": "-1"}}, "commission.google"},
		{"commission fraction syntax", RevenueSettings{Revenue: "proceeds", Commission: map[string]string{"google": "3/20"}}, "commission.google"},
		{"unknown currency mode", RevenueSettings{Currency: "EUR"}, "currency"},
		{"fx_rates without USD", RevenueSettings{FXRates: map[string]string{"EUR": "1.08"}}, "fx_rates"},
		{"fx_rates bad code", RevenueSettings{Currency: "USD", FXRates: map[string]string{"EURO": "1.08"}}, "fx_rates.EURO"},
		{"fx_rates zero", RevenueSettings{Currency: "USD", FXRates: map[string]string{"EUR": "0"}}, "fx_rates.EUR"},
		{"fx_rates exponent", RevenueSettings{Currency: "USD", FXRates: map[string]string{"EUR": "1e0"}}, "fx_rates.EUR"},
		{"fx_rates USD not 1", RevenueSettings{Currency: "USD", FXRates: map[string]string{"USD": "1.1"}}, "fx_rates.USD"},
	}
	s := Settings{Name: "d"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.rs.Compile(s)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			if !strings.Contains(err.Error(), "destinations[d]."+tc.key+":") {
				t.Errorf("err = %v, want it to name %s", err, tc.key)
			}
		})
	}
}

func TestRevenueConvert(t *testing.T) {
	ev := func(source string, micros int64, cur string) *mapping.Event {
		return &mapping.Event{Source: source, Revenue: &mapping.Revenue{AmountMicros: micros, Currency: cur}}
	}
	cases := []struct {
		name string
		rs   RevenueSettings
		e    *mapping.Event
		want *mapping.Revenue
		err  error
	}{
		{"gross as stored", RevenueSettings{}, ev("apple", 9_990_000, "eur"), &mapping.Revenue{AmountMicros: 9_990_000, Currency: "EUR"}, nil},
		{"no revenue", RevenueSettings{Revenue: "proceeds"}, &mapping.Event{Source: "apple"}, nil, nil},
		{"proceeds apple default 30%", RevenueSettings{Revenue: "proceeds"}, ev("apple", 9_990_000, "USD"), &mapping.Revenue{AmountMicros: 6_993_000, Currency: "USD"}, nil},
		{"proceeds google default 15%", RevenueSettings{Revenue: "proceeds"}, ev("google", 9_990_000, "USD"), &mapping.Revenue{AmountMicros: 8_491_500, Currency: "USD"}, nil},
		{"proceeds stripe default 0%", RevenueSettings{Revenue: "proceeds"}, ev("stripe", 9_990_000, "USD"), &mapping.Revenue{AmountMicros: 9_990_000, Currency: "USD"}, nil},
		{"proceeds configured 15%", RevenueSettings{Revenue: "proceeds", Commission: map[string]string{"Apple": "15"}}, ev("apple", 9_990_000, "USD"), &mapping.Revenue{AmountMicros: 8_491_500, Currency: "USD"}, nil},
		{"proceeds refund mirrors purchase", RevenueSettings{Revenue: "proceeds", Commission: map[string]string{"apple": "17.5"}}, ev("apple", -1, "USD"), &mapping.Revenue{AmountMicros: -1, Currency: "USD"}, nil},
		{"to USD", RevenueSettings{Currency: "USD", FXRates: map[string]string{"EUR": "1.08"}}, ev("apple", 9_990_000, "EUR"), &mapping.Revenue{AmountMicros: 10_789_200, Currency: "USD"}, nil},
		{"USD stays", RevenueSettings{Currency: "USD"}, ev("apple", 9_990_000, "USD"), &mapping.Revenue{AmountMicros: 9_990_000, Currency: "USD"}, nil},
		{"to USD rounds half away from zero", RevenueSettings{Currency: "USD", FXRates: map[string]string{"JPY": "0.0065"}}, ev("apple", -100_000_000, "JPY"), &mapping.Revenue{AmountMicros: -650_000, Currency: "USD"}, nil},
		{"proceeds then USD", RevenueSettings{Revenue: "proceeds", Currency: "USD", FXRates: map[string]string{"GBP": "1.25"}}, ev("google", 1_000_000, "GBP"), &mapping.Revenue{AmountMicros: 1_062_500, Currency: "USD"}, nil},
		{"missing rate", RevenueSettings{Currency: "USD"}, ev("apple", 1_000_000, "BRL"), nil, ErrNoFXRate},
		{"overflow", RevenueSettings{Currency: "USD", FXRates: map[string]string{"IDR": "100000"}}, ev("apple", 1<<62, "IDR"), nil, mapping.ErrAmount},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.rs.Compile(Settings{Name: "d"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.Convert(tc.e)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Convert = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRoundRat(t *testing.T) {
	for _, tc := range []struct {
		num, den int64
		want     int64
	}{{5, 2, 3}, {-5, 2, -3}, {7, 3, 2}, {-7, 3, -2}, {1, 2, 1}, {-1, 2, -1}, {1, 3, 0}} {
		got, ok := roundRat(big.NewRat(tc.num, tc.den))
		if !ok || got != tc.want {
			t.Errorf("roundRat(%d/%d) = %d %v, want %d", tc.num, tc.den, got, ok, tc.want)
		}
	}
}

func TestMoneyAccessors(t *testing.T) {
	m, err := RevenueSettings{Currency: "USD", FXRates: map[string]string{"eur": "1.1"}}.Compile(Settings{Name: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if !m.ConvertsToUSD() || !reflect.DeepEqual(m.Currencies(), []string{"EUR", "USD"}) {
		t.Errorf("ConvertsToUSD %v Currencies %v", m.ConvertsToUSD(), m.Currencies())
	}
	if Positive(&mapping.Revenue{AmountMicros: 999}) || !Positive(&mapping.Revenue{AmountMicros: 1000}) || Positive(nil) {
		t.Error("Positive boundary at 0.001 is wrong")
	}
}

func TestEventTime(t *testing.T) {
	cases := []struct {
		name   string
		at     time.Time
		maxAge time.Duration
		want   time.Time
		reason string
	}{
		{"past", mmpNow.Add(-time.Hour), 0, mmpNow.Add(-time.Hour), ""},
		{"slightly ahead is clamped to now", mmpNow.Add(30 * time.Second), 0, mmpNow, ""},
		{"future", mmpNow.Add(2 * time.Minute), 0, time.Time{}, ReasonFutureTimestamp},
		{"too old", mmpNow.Add(-59 * 24 * time.Hour), adjustMaxAge, time.Time{}, ReasonTooOld},
		{"within age", mmpNow.Add(-57 * 24 * time.Hour), adjustMaxAge, mmpNow.Add(-57 * 24 * time.Hour), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, bad := eventTime(&mapping.Event{OccurredAt: tc.at}, mmpNow, tc.maxAge)
			if tc.reason != "" {
				if bad == nil || bad.Outcome != Skipped || bad.Reason != tc.reason || bad.Err == nil {
					t.Fatalf("result = %+v, want skipped %s", bad, tc.reason)
				}
				return
			}
			if bad != nil || !got.Equal(tc.want) {
				t.Errorf("eventTime = %v %+v, want %v", got, bad, tc.want)
			}
		})
	}
	t.Run("zero occurred_at falls back to received_at", func(t *testing.T) {
		got, _ := eventTime(&mapping.Event{ReceivedAt: mmpNow.Add(-time.Minute)}, mmpNow, 0)
		if !got.Equal(mmpNow.Add(-time.Minute)) {
			t.Errorf("got %v", got)
		}
		got, _ = eventTime(&mapping.Event{}, mmpNow, 0)
		if !got.Equal(mmpNow) {
			t.Errorf("got %v", got)
		}
	})
}

func TestPlatformAndATT(t *testing.T) {
	for _, tc := range []struct {
		source, os, want string
	}{
		{"apple", "", "ios"}, {"google", "", "android"}, {"stripe", "", ""},
		{"stripe", "iOS", "ios"}, {"shopify", "Android", "android"}, {"apple", "android", "android"}, {"stripe", "windows", ""},
	} {
		e := &mapping.Event{Source: tc.source}
		e.SetIdentifier(mapping.IDOS, tc.os)
		if got := platformOf(e); got != tc.want {
			t.Errorf("platformOf(%s, %q) = %q, want %q", tc.source, tc.os, got, tc.want)
		}
	}
	for in, want := range map[string]int{"0": 0, "restricted": 1, "Denied": 2, "3": 3, "authorized": 3} {
		e := &mapping.Event{}
		e.SetIdentifier(mapping.IDATTStatus, in)
		if got, ok := mmpATT(e); !ok || got != want {
			t.Errorf("mmpATT(%q) = %d %v, want %d", in, got, ok, want)
		}
	}
	if _, ok := mmpATT(&mapping.Event{}); ok {
		t.Error("mmpATT of no status reports ok")
	}
}

func TestMMPSharedConfigErrors(t *testing.T) {
	cases := []struct {
		name  string
		typ   string
		block string
		names map[string]string
		key   string
	}{
		{"unknown preset", "singular", "sdk_key: k\npreset: adapty", nil, "preset"},
		{"event_names unknown type", "singular", "sdk_key: k", map[string]string{"renewal": "x"}, "event_names.renewal"},
		{"event_names empty custom", "singular", "sdk_key: k", map[string]string{"custom:": "x"}, "event_names.custom:"},
		{"event_names too long", "singular", "sdk_key: k", map[string]string{"refund": strings.Repeat("r", 33)}, "event_names.refund"},
		{"bad revenue", "kochava", "app_guid: koapp-1\nrevenue: net", nil, "revenue"},
		{"yaml type error", "kochava", "app_guid: [1, 2]", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(mmpSettingsFor(t, tc.typ, "", tc.block, tc.names))
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			if !strings.Contains(err.Error(), "destinations["+tc.typ+"-test]."+tc.key) {
				t.Errorf("err = %v, want it to name %q", err, tc.key)
			}
		})
	}
}

func TestMMPNames(t *testing.T) {
	t.Run("revenuecat preset with override and disable", func(t *testing.T) {
		m, err := newMMP(mmpSettingsFor(t, "singular", "", "", map[string]string{"trial_started": "my_trial", "refund": ""}),
			mmpSettings{Preset: "RevenueCat"}, singularNames, 32)
		if err != nil {
			t.Fatal(err)
		}
		for typ, want := range map[mapping.Type]string{
			mapping.TrialStarted: "my_trial", mapping.TrialConverted: "rc_trial_converted_event",
			mapping.SubscriptionRenewed: "rc_renewal_event", mapping.Refund: "", mapping.Purchase: "rc_non_subscription_purchase_event",
			mapping.BillingRecovered: "",
		} {
			if got := m.eventName(&mapping.Event{Type: typ}); got != want {
				t.Errorf("%s = %q, want %q", typ, got, want)
			}
		}
	})
	t.Run("defaults leave the optional types off", func(t *testing.T) {
		names := appsFlyerNames()
		for _, typ := range []mapping.Type{mapping.SubscriptionUncancelled, mapping.SubscriptionExpired, mapping.SubscriptionPaused, mapping.BillingRecovered} {
			if n, ok := names[string(typ)]; ok {
				t.Errorf("%s is on by default as %q", typ, n)
			}
		}
		if names["refund"] != "refund" || names["trial_started"] != "af_start_trial" {
			t.Errorf("names = %v", names)
		}
	})
	t.Run("custom events", func(t *testing.T) {
		m, err := newMMP(mmpSettingsFor(t, "singular", "", "", map[string]string{"custom:level_up": "sng_level"}), mmpSettings{}, singularNames, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.eventName(&mapping.Event{Type: mapping.Custom, Name: "level_up"}); got != "sng_level" {
			t.Errorf("got %q", got)
		}
		if got := m.eventName(&mapping.Event{Type: mapping.Custom, Name: "other"}); got != "other" {
			t.Errorf("got %q", got)
		}
	})
}

func TestScrub(t *testing.T) {
	base := errors.New("boom SECRET-VALUE")
	r := scrub(Result{Request: "GET x?a=SECRET-VALUE", Response: "SECRET-VALUE", Reason: "r SECRET-VALUE", Err: base}, []string{"SECRET-VALUE", "", "abc"})
	if strings.Contains(r.Request+r.Response+r.Reason+r.Err.Error(), "SECRET-VALUE") {
		t.Errorf("not scrubbed: %+v", r)
	}
	if !errors.Is(r.Err, base) {
		t.Error("scrubbed error no longer unwraps to the original")
	}
	if got := maskSecrets("abc", []string{"abc"}); got != "abc" {
		t.Errorf("short secrets must not be masked (they would mangle text): %q", got)
	}
}

func TestSendEachCancelledAndNil(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := 0
	res := sendEach(ctx, []Item{{Key: "a", Event: &mapping.Event{}}}, func(context.Context, Item) Result { called++; return Result{Outcome: Delivered} })
	if called != 0 || res[0].Outcome != Retry {
		t.Errorf("cancelled: called %d, %+v", called, res)
	}
	res = sendEach(context.Background(), []Item{{Key: "a"}}, func(context.Context, Item) Result { called++; return Result{} })
	if called != 0 || res[0].Outcome != Dead {
		t.Errorf("nil event: called %d, %+v", called, res)
	}
}
