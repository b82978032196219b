package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// goldenLog compares got with testdata/NAME.golden: the CLI's output for
// fixed admin API answers; POSTBACK_UPDATE_GOLDEN=1 or -update rewrites it.
func goldenLog(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if os.Getenv("POSTBACK_UPDATE_GOLDEN") != "" || *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (POSTBACK_UPDATE_GOLDEN=1 writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

// standIn is an admin API answering fixed bodies per path and recording
// the queries it got.
type standIn struct {
	mu      sync.Mutex
	queries map[string]string
}

func newStandIn(t *testing.T, answers map[string]string) (string, *standIn) {
	s := &standIn{queries: map[string]string{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.queries[r.Method+" "+r.URL.Path] = r.URL.RawQuery
		s.mu.Unlock()
		body, ok := answers[r.Method+" "+r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no such thing"}}`))
			return
		}
		if strings.HasPrefix(body, "csv:") {
			w.Header().Set("Content-Type", "text/csv")
			_, _ = w.Write([]byte(body[4:]))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, s
}

func (s *standIn) query(k string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[k]
}

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) (string, bool) {
		if k == "POSTBACK_ADMIN_TOKEN" {
			return "golden-token-0123456789", true
		}
		return "", false
	}}
	code := Main(context.Background(), args, env)
	return code, out.String(), errb.String()
}

const logPage = `{"entries":[
 {"key":"evt_b|appsflyer","event_id":"evt_b","destination":"appsflyer","state":"retrying","attempts":3,"created_at":"2026-11-30T03:00:00Z","updated_at":"2026-11-30T03:05:00Z","last_status":401,"reason":"auth_failed","type":"subscription_renewed","source":"apple","received_at":"2026-11-30T03:00:00Z","user":"user-42","transaction_id":"2000000123","subscription_id":"2000000001","shown_state":"held","replay":"none","replay_note":"queued already"},
 {"key":"evt_b|backend","event_id":"evt_b","destination":"backend","state":"delivered","attempts":1,"created_at":"2026-11-30T03:00:00Z","updated_at":"2026-11-30T03:00:01Z","last_status":200,"type":"subscription_renewed","source":"apple","received_at":"2026-11-30T03:00:00Z","user":"user-42","shown_state":"delivered","replay":"confirm"},
 {"key":"evt_a|backend","event_id":"evt_a","destination":"backend","state":"dead","attempts":8,"created_at":"2026-11-30T02:00:00Z","updated_at":"2026-11-30T02:30:00Z","last_status":422,"reason":"max_attempts: http_422","type":"trial_started","source":"stripe","received_at":"2026-11-30T02:00:00Z","shown_state":"dead","replay":"replay"}
],"total":123,"offset":50,"limit":3,"held":["appsflyer"]}`

func TestDeliveriesLogGolden(t *testing.T) {
	addr, s := newStandIn(t, map[string]string{"GET /admin/api/log": logPage})
	code, out, errOut := runCLI("deliveries", "--addr", addr, "--state", "held,dead", "--search", "2000000123", "--type", "trial_started",
		"--source", "apple", "--offset", "50", "--limit", "3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	goldenLog(t, "deliveries", out)
	q := s.query("GET /admin/api/log")
	for _, want := range []string{"state=held%2Cdead", "q=2000000123", "type=trial_started", "source=apple", "offset=50", "limit=3"} {
		if !strings.Contains(q, want) {
			t.Errorf("query %s lacks %s", q, want)
		}
	}
	if code, _, _ := runCLI("deliveries", "--addr", addr, "--export", "xml"); code != 2 {
		t.Errorf("--export xml: exit %d, want 2", code)
	}
}

func TestDeliveriesExport(t *testing.T) {
	csv := "received_at,event_id,destination,state\n2026-11-30T03:00:00Z,evt_b,appsflyer,held\n"
	addr, s := newStandIn(t, map[string]string{"GET /admin/api/log": "csv:" + csv, "GET /admin/api/destinations": `{"destinations":[{"name":"appsflyer"}]}`})
	code, out, errOut := runCLI("deliveries", "--addr", addr, "--export", "csv", "--destination", "appsflyer")
	if code != 0 || out != csv {
		t.Fatalf("exit %d, out %q, err %s", code, out, errOut)
	}
	if q := s.query("GET /admin/api/log"); !strings.Contains(q, "format=csv") || !strings.Contains(q, "destination=appsflyer") {
		t.Errorf("export query %s", q)
	}
}

func TestDeadGroupsGolden(t *testing.T) {
	addr, _ := newStandIn(t, map[string]string{"GET /admin/api/dead/groups": `{"groups":[
 {"destination":"backend","reason":"max_attempts: http_422","count":17,"newest":"2026-11-30T02:30:00Z","sample":{"key":"evt_a|backend","last_status":422},"last_response":"{\"error\":\"unknown customer\"}"},
 {"destination":"meta","reason":"too_old: older than 7 days","count":2,"newest":"2026-11-29T10:00:00Z","sample":{"key":"evt_c|meta"}}
]}`})
	code, out, errOut := runCLI("dead", "--addr", addr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	goldenLog(t, "dead", out)
}

func TestDestinationsHeldGolden(t *testing.T) {
	addr, _ := newStandIn(t, map[string]string{
		"GET /admin/api/destinations": `{"destinations":[
 {"name":"appsflyer","type":"appsflyer","circuit":"closed","paused":true,"paused_reason":"auth_failed","success_5m":{"ok":0,"total":4,"ratio":0},"success_1h":{"ok":10,"total":14,"ratio":0.714},"in_flight":0,"queue":{"depth":12,"waiting":0},"oldest_pending_seconds":300,
  "held":{"reason":"paused","detail":"auth_failed","since":"2026-11-30T03:00:00Z","next_probe":"2026-11-30T03:10:00Z","last_status":401,"last_response":"{\"error\":\"invalid dev key\"}"}},
 {"name":"backend","type":"webhook","circuit":"closed","paused":false,"success_5m":{"ok":5,"total":5,"ratio":1},"success_1h":{"ok":50,"total":50,"ratio":1},"in_flight":0,"queue":{"depth":0,"waiting":0}}
]}`,
		"POST /admin/api/destinations/appsflyer/resume": `{"destination":"appsflyer","was_held":true}`,
		"POST /admin/api/reload":                        `{"applied":["appsflyer","backend"],"added":["meta"],"unchanged":"sources and their secrets, admin, server, storage and the destination list itself (adding, removing, concurrency, rate limits) need a restart"}`,
	})
	code, out, errOut := runCLI("destinations", "--addr", addr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	goldenLog(t, "destinations-held", out)
	code, out, errOut = runCLI("destinations", "--addr", addr, "resume", "appsflyer")
	if code != 0 {
		t.Fatalf("resume: exit %d: %s", code, errOut)
	}
	goldenLog(t, "destinations-resume", out)
	code, out, errOut = runCLI("destinations", "--addr", addr, "reload")
	if code != 0 {
		t.Fatalf("reload: exit %d: %s", code, errOut)
	}
	goldenLog(t, "destinations-reload", out)
	if code, _, _ := runCLI("destinations", "--addr", addr, "resume", "nowhere"); code != 5 {
		t.Errorf("resume of an unknown destination: exit %d, want 5", code)
	}
}

func TestEventsStatusGolden(t *testing.T) {
	addr, _ := newStandIn(t, map[string]string{"GET /admin/api/events": `{"events":[
 {"id":"evt_b","type":"subscription_renewed","source":"apple","environment":"production","app_id":"com.example.app","user":{"app_user_id":"user-42"},"subscription_id":"2000000001","revenue":{"amount_micros":9990000,"currency":"USD"},"received_at":"2026-11-30T03:00:00Z"},
 {"id":"evt_a","type":"trial_started","source":"stripe","environment":"sandbox","app_id":"com.example.app","user":{},"received_at":"2026-11-30T02:00:00Z"}
],"next":"","deliveries":{"evt_b":[{"destination":"appsflyer","state":"held"},{"destination":"backend","state":"delivered"}],"evt_a":[]}}`})
	code, out, errOut := runCLI("events", "--addr", addr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	goldenLog(t, "events", out)
}

func TestReplayDeliveredNeedsConfirm(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, 512)
		n, _ := r.Body.Read(body)
		if strings.Contains(string(body[:n]), `"confirm":true`) {
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"key":"evt_b|backend","state":"pending"}`))
			return
		}
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte(`{"error":{"code":"confirm","message":"confirmation required: already delivered: a destination without deduplication counts it twice; send {\"key\": ..., \"confirm\": true} to re-send it"}}`))
	}))
	t.Cleanup(srv.Close)
	code, _, errOut := runCLI("replay", "--addr", srv.URL, "evt_b|backend")
	if code != 1 || !strings.Contains(errOut, "counts it twice; pass --confirm to re-send it") {
		t.Errorf("without --confirm: exit %d, %s", code, errOut)
	}
	code, out, errOut := runCLI("replay", "--addr", srv.URL, "--confirm", "evt_b|backend")
	if code != 0 || !strings.Contains(out, "queued evt_b|backend (pending)") {
		t.Errorf("with --confirm: exit %d, %s %s", code, out, errOut)
	}
}
