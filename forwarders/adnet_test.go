package forwarders

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/postback/postback/mapping"
)

// adNow is the fixed clock of the ad-network tests.
var adNow = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func adClock() time.Time { return adNow }

// adRecorder is a fake ad network: it records every request and answers
// with respond (200 {} when nil).
type adRecorder struct {
	mu       sync.Mutex
	requests []adRequest
	respond  func(r adRequest) (int, string)
	srv      *httptest.Server
}

// adRequest is one request as the fake received it.
type adRequest struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
}

func newAdRecorder(t *testing.T, respond func(r adRequest) (int, string)) *adRecorder {
	t.Helper()
	rec := &adRecorder{respond: respond}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := adRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
		rec.mu.Lock()
		rec.requests = append(rec.requests, req)
		rec.mu.Unlock()
		status, answer := http.StatusOK, "{}"
		if rec.respond != nil {
			status, answer = rec.respond(req)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (r *adRecorder) all() []adRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]adRequest(nil), r.requests...)
}

// adSettings builds Settings from a YAML destination block, as the gateway
// does from config.yaml.
func adSettings(t *testing.T, typ, endpoint, block string, names map[string]string, client *http.Client) Settings {
	t.Helper()
	return Settings{
		Name: "test-" + typ, Type: typ, Endpoint: endpoint, EventNames: names,
		Decode: func(v any) error { return yaml.Unmarshal([]byte(block), v) },
		Client: client, Now: adClock,
	}
}

// adFixture returns one of the canonical events the golden tests send.
func adFixture(name string) *mapping.Event {
	e := &mapping.Event{
		Environment: mapping.Production, AppID: "com.example.app", ProductID: "pro_monthly",
		SubscriptionID: "2000000123456789", OccurredAt: adNow.Add(-time.Hour), ReceivedAt: adNow.Add(-time.Hour + time.Second),
		User: mapping.User{AppUserID: "6f1c2a9e-user", Identifiers: map[string]string{}},
	}
	ids := e.User.Identifiers
	mapping.SetEmail(ids, " John_Smith@gmail.com ")
	mapping.SetPhone(ids, "+1 (650) 555-1212")
	ids[mapping.IDIP] = "203.0.113.9"
	usd := func(micros int64) *mapping.Revenue { return &mapping.Revenue{AmountMicros: micros, Currency: "USD"} }
	switch name {
	case "trial_started", "trial_converted":
		e.Source, e.Type = mapping.SourceApple, mapping.TrialStarted
		e.TransactionID = "2000000987654321"
		ids[mapping.IDIDFA] = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
		ids[mapping.IDIDFV] = "9F7E1B1C-3E2A-4B1D-8C6F-0A1B2C3D4E5F"
		ids[mapping.IDFacebookAnon] = "XZ1A2B3C4D-5E6F-7A8B-9C0D-1E2F3A4B5C6D"
		ids[mapping.IDATTStatus] = "3"
		ids[mapping.IDOS] = "ios"
		ids[mapping.IDOSVersion] = "17.5"
		ids[mapping.IDDeviceModel] = "iPhone15,2"
		ids[mapping.IDLocale] = "en_US"
		ids[mapping.IDCountry] = "US"
		ids[mapping.IDUserAgent] = "Example/1.2.3 CFNetwork/1490 Darwin/23.5.0"
		ids[mapping.IDFirebase] = "f9a3c1e2b4d64b7a8c0d1e2f3a4b5c6d"
		e.Attributes = map[string]string{"app_version": "1.2.3"}
		if name == "trial_converted" {
			e.Type, e.TransactionID, e.Revenue = mapping.TrialConverted, "2000000987654399", usd(9_990_000)
		}
	case "renewal":
		e.Source, e.Type = mapping.SourceGoogle, mapping.SubscriptionRenewed
		e.AppID, e.TransactionID, e.Revenue = "com.example.app", "GPA.3312-4567-8901-23456..1", &mapping.Revenue{AmountMicros: 8_490_000, Currency: "EUR"}
		ids[mapping.IDGAID] = "38400000-8cf0-11bd-b23e-10b96e40000d"
		ids[mapping.IDOS] = "android"
		ids[mapping.IDOSVersion] = "14"
		ids[mapping.IDDeviceModel] = "Pixel 8"
		ids[mapping.IDLocale] = "de_DE"
		ids[mapping.IDFirebase] = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
	case "refund", "purchase":
		e.Source, e.Type, e.Revenue = mapping.SourceStripe, mapping.Refund, usd(-9_990_000)
		e.TransactionID = "ch_3PqR7sLkdIwHu7ix0abcdEFG"
		ids[mapping.IDExternalID] = "cus_PqR7sLkdIwHu7i"
		ids[mapping.IDUserAgent] = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15"
		ids[mapping.IDFBP] = "fb.1.1732960000000.1098115397"
		ids[mapping.IDFBC] = "fb.1.1732960000000.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"
		ids[mapping.IDTTCLID] = "E.C.P.v3XbbQAAAAAvCw"
		ids[mapping.IDTTP] = "2F7h37YkS1j57AYSKTI7IHhJPYH"
		ids[mapping.IDGAClient] = "1197596843.1732960000"
		e.Attributes = map[string]string{"page_url": "https://example.com/checkout"}
		if name == "purchase" {
			e.Source, e.Type, e.Revenue = mapping.SourceShopify, mapping.Purchase, usd(49_000_000)
			e.TransactionID, e.ProductID, e.SubscriptionID = "5678901234567", "lifetime_unlock", ""
		}
	default:
		panic("no fixture " + name)
	}
	e.ID = mapping.EventID(e.Source, e.TransactionID, string(e.Type))
	e.SourceEventID = "src_" + name
	return e
}

// adGoldenNames are the five events every ad network has golden requests for.
var adGoldenNames = []string{"trial_started", "trial_converted", "renewal", "refund", "purchase"}

// checkGolden compares got with testdata/<path>, or rewrites it with -update.
func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	path = filepath.Join("testdata", path)
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
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("request differs from %s (run with -update if intended)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// indentJSON re-encodes a JSON document with sorted keys and indentation,
// for golden files.
func indentJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestHashVectors(t *testing.T) {
	// Published normalization examples: Meta's customer information
	// parameters page (developers.facebook.com/docs/marketing-api/
	// conversions-api/parameters/customer-information-parameters).
	// TikTok publishes its rules (trim and lower-case emails; phones in
	// E.164 with '+') without digests; its rows check the rule's output.
	tests := []struct {
		name, input, normalized, sha string
		norm                         func(string) string
	}{
		{"meta email", "John_Smith@gmail.com", "john_smith@gmail.com",
			"62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f", mapping.NormalizeEmail},
		{"meta email trimmed", "  John_Smith@gmail.com\t", "john_smith@gmail.com",
			"62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f", mapping.NormalizeEmail},
		{"meta phone with country code", "+1 (650)555-1212", "16505551212",
			"e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176", mapping.NormalizePhone},
		{"meta phone international prefix", "001 650 555 1212", "16505551212",
			"e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176", mapping.NormalizePhone},
		{"meta first name", "Mary", "mary",
			"6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec", strings.ToLower},
		{"meta first name UTF-8", "Valéry", "valéry",
			"08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c", strings.ToLower},
		{"tiktok phone E.164", "+1 (650) 555-1212", "+16505551212",
			"1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8", func(s string) string { return "+" + mapping.NormalizePhone(s) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.norm(tt.input)
			if n != tt.normalized {
				t.Fatalf("normalized %q = %q, want %q", tt.input, n, tt.normalized)
			}
			if got := mapping.SHA256Hex(n); got != tt.sha {
				t.Errorf("SHA256Hex(%q) = %s, want %s", n, got, tt.sha)
			}
		})
	}
	t.Run("identity hashing matches the vectors", func(t *testing.T) {
		ids := map[string]string{}
		mapping.SetEmail(ids, "John_Smith@gmail.com")
		mapping.SetPhone(ids, "+1 (650)555-1212")
		if got, want := ids[mapping.IDEmailSHA256], "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"; got != want {
			t.Errorf("email_sha256 = %s, want %s", got, want)
		}
		if got, want := ids[mapping.IDPhoneSHA256], "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"; got != want {
			t.Errorf("phone_sha256 = %s, want %s", got, want)
		}
		if got, want := ids[mapping.IDPhoneE164SHA256], mapping.SHA256Hex("+16505551212"); got != want {
			t.Errorf("phone_e164_sha256 = %s, want %s", got, want)
		}
	})
	t.Run("already hashed ids are not hashed twice", func(t *testing.T) {
		h := "62A14E44F765419D10FEA99367361A727C12365E2520F32218D505ED9AA0F62F"
		if got := hashID(h); got != strings.ToLower(h) {
			t.Errorf("hashID(hash) = %s, want it lower-cased unchanged", got)
		}
		if got, want := hashID(" user-42 "), mapping.SHA256Hex("user-42"); got != want {
			t.Errorf("hashID = %s, want %s", got, want)
		}
		if got := hashID("  "); got != "" {
			t.Errorf("hashID(blank) = %q", got)
		}
	})
	t.Run("TikTok advertising ids are raw, IDFA upper-case, GAID lower-case", func(t *testing.T) {
		if got, want := tiktokIDFA(" 6d92078a-8246-4ba4-ae5b-76104861e7dc "), "6D92078A-8246-4BA4-AE5B-76104861E7DC"; got != want {
			t.Errorf("tiktokIDFA = %s, want %s", got, want)
		}
		h := mapping.SHA256Hex("6D92078A-8246-4BA4-AE5B-76104861E7DC")
		if got := tiktokIDFA(strings.ToUpper(h)); got != h {
			t.Errorf("tiktokIDFA(hash) = %s, want it lower-cased unchanged", got)
		}
		if got, want := tiktokGAID(" 38400000-8CF0-11BD-B23E-10B96E40000D "), "38400000-8cf0-11bd-b23e-10b96e40000d"; got != want {
			t.Errorf("tiktokGAID = %s, want %s", got, want)
		}
	})
}

func TestChunk(t *testing.T) {
	items := make([]Item, 2500)
	for i := range items {
		items[i].Key = fmt.Sprint(i)
	}
	tests := []struct {
		name  string
		n     int
		size  int
		sizes []int
	}{
		{"meta 2500 in thousands", 2500, 1000, []int{1000, 1000, 500}},
		{"exact", 2000, 1000, []int{1000, 1000}},
		{"ga4 26", 26, 25, []int{25, 1}},
		{"empty", 0, 25, nil},
		{"size below one", 3, 0, []int{1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunks := Chunk(items[:tt.n], tt.size)
			var sizes []int
			next := 0
			for _, c := range chunks {
				sizes = append(sizes, len(c))
				for _, it := range c {
					if it.Key != fmt.Sprint(next) {
						t.Fatalf("item %s out of order, want %d", it.Key, next)
					}
					next++
				}
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tt.sizes) {
				t.Errorf("chunk sizes = %v, want %v", sizes, tt.sizes)
			}
		})
	}
}

func TestAdChannelAndPlatform(t *testing.T) {
	tests := []struct {
		name              string
		source, channel   string
		os                string
		wantCh, wantPlatf string
	}{
		{"apple", mapping.SourceApple, "", "", "app", "ios"},
		{"google", mapping.SourceGoogle, "", "", "app", "android"},
		{"stripe", mapping.SourceStripe, "", "", "web", ""},
		{"shopify", mapping.SourceShopify, "", "", "web", ""},
		{"custom default app", mapping.SourceCustom, "", "android", "app", "android"},
		{"custom web", mapping.SourceCustom, "WEB", "", "web", ""},
		{"stripe in app", mapping.SourceStripe, "app", "ios", "app", "ios"},
		{"custom unknown os", mapping.SourceCustom, "app", "", "app", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &mapping.Event{Source: tt.source}
			e.SetAttribute("channel", tt.channel)
			e.SetIdentifier(mapping.IDOS, tt.os)
			if got := adChannel(e); got != tt.wantCh {
				t.Errorf("adChannel = %q, want %q", got, tt.wantCh)
			}
			if got := adPlatform(e); got != tt.wantPlatf {
				t.Errorf("adPlatform = %q, want %q", got, tt.wantPlatf)
			}
		})
	}
	t.Run("zeroed advertising ids are dropped", func(t *testing.T) {
		e := &mapping.Event{Source: mapping.SourceApple}
		e.SetIdentifier(mapping.IDIDFA, "00000000-0000-0000-0000-000000000000")
		if got := adID(e); got != "" {
			t.Errorf("adID = %q, want empty", got)
		}
	})
}

func TestBisectBudget(t *testing.T) {
	// Every event is bad: bisection must stop at the budget and leave the
	// unresolved events for a later retry instead of killing them.
	idx := make([]int, 1000)
	for i := range idx {
		idx[i] = i
	}
	out := make([]Result, len(idx))
	calls := 0
	budget := bisectBudget
	bisect(idx, &budget, func(idx []int) Result {
		calls++
		return Result{Outcome: Dead, Reason: "bad"}
	}, out)
	if calls > bisectBudget {
		t.Errorf("made %d requests, budget is %d", calls, bisectBudget)
	}
	var dead, retry int
	for _, r := range out {
		switch r.Outcome {
		case Dead:
			dead++
		case Retry:
			retry++
			if !strings.HasPrefix(r.Reason, "bisect_budget") {
				t.Errorf("retry reason = %q", r.Reason)
			}
		default:
			t.Fatalf("unexpected outcome %s", r.Outcome)
		}
	}
	if dead+retry != len(idx) || retry == 0 {
		t.Errorf("dead %d retry %d, want all resolved and some left for retry", dead, retry)
	}
}
