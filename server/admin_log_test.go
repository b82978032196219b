package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/postback/postback/store"
)

// logAnswer is GET /admin/api/log.
type logAnswer struct {
	Entries []struct {
		store.LogEntry
		ShownState string `json:"shown_state"`
		Held       bool   `json:"held"`
		Replay     string `json:"replay"`
	} `json:"entries"`
	Total int      `json:"total"`
	Held  []string `json:"held"`
}

func (h *adminHarness) raw(t *testing.T, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminDeliveriesLogHeldResumeReplay(t *testing.T) {
	eachBackend(t, testAdminDeliveriesLogHeldResumeReplay)
}

// A destination refusing its credentials holds its work: the log shows it
// held, the destination says why, Resume sends it at once; delivered work
// is re-sent only when confirmed, the attempt log shows the request sent
// with its signature masked, dead letters group by reason, and a bulk
// replay reports its outcome.
func testAdminDeliveriesLogHeldResumeReplay(t *testing.T, dsn string) {
	a, b := newSink(t, 200), newSink(t, 401)
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, dsn: dsn})
	h.post(t, stripeSub{id: "evt_l1", sub: "sub_L1", user: "u-log-1", status: "active", live: true})
	h.post(t, stripeSub{id: "evt_l2", sub: "sub_L2", user: "u-log-2", status: "active", live: true})
	var l logAnswer
	waitUntil(t, "mmp held", func() bool {
		h.get(t, "/admin/api/log?state=held", &l)
		return l.Total == 2 && len(l.Held) == 1 && l.Held[0] == "mmp"
	})
	for _, e := range l.Entries {
		if e.Destination != "mmp" || e.ShownState != store.StateHeld || !e.Held || e.Replay != store.OfferNone {
			t.Errorf("held entry %+v", e)
		}
	}
	waitUntil(t, "backend delivered", func() bool {
		h.get(t, "/admin/api/log?state=delivered", &l)
		return l.Total == 2
	})
	// Search by user, paging with totals.
	if h.get(t, "/admin/api/log?q=u-log-1", &l); l.Total != 2 || len(l.Entries) != 2 || l.Entries[0].User != "u-log-1" {
		t.Errorf("search by user: %+v", l)
	}
	if h.get(t, "/admin/api/log?q=sub_L2&destination=backend", &l); l.Total != 1 || l.Entries[0].SubscriptionID != "sub_L2" {
		t.Errorf("search by subscription: %+v", l)
	}
	var p1, p2 logAnswer
	h.get(t, "/admin/api/log?limit=1", &p1)
	h.get(t, "/admin/api/log?limit=1&offset=1", &p2)
	if p1.Total != 4 || p2.Total != 4 || len(p1.Entries) != 1 || len(p2.Entries) != 1 || p1.Entries[0].Key == p2.Entries[0].Key {
		t.Errorf("paging: %+v then %+v", p1, p2)
	}
	for _, bad := range []string{"state=lost", "type=bogus", "limit=0", "offset=-1", "format=xml", "since=then"} {
		if code := h.call(t, adminToken, http.MethodGet, "/admin/api/log?"+bad, "", nil); code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", bad, code)
		}
	}
	// Exports: every row.
	code, csvText := h.raw(t, "/admin/api/log?format=csv")
	if code != 200 || strings.Count(csvText, "\n") != 5 || !strings.HasPrefix(csvText, "received_at,event_id,") || !strings.Contains(csvText, ",held,") {
		t.Errorf("csv export: HTTP %d\n%s", code, csvText)
	}
	code, jsText := h.raw(t, "/admin/api/log?format=json&destination=mmp")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(jsText), &rows); code != 200 || err != nil || len(rows) != 2 {
		t.Errorf("json export: HTTP %d %v\n%s", code, err, jsText)
	}

	// Why it is held.
	var dests struct {
		Destinations []struct {
			Name string `json:"name"`
			Held *struct {
				Reason       string `json:"reason"`
				LastStatus   int    `json:"last_status"`
				LastResponse string `json:"last_response"`
				Since        string `json:"since"`
				NextProbe    string `json:"next_probe"`
			} `json:"held"`
		} `json:"destinations"`
	}
	h.get(t, "/admin/api/destinations", &dests)
	for _, d := range dests.Destinations {
		switch {
		case d.Name == "mmp" && (d.Held == nil || d.Held.Reason != "paused" || d.Held.LastStatus != 401 || !strings.Contains(d.Held.LastResponse, "401") || d.Held.Since == "" || d.Held.NextProbe == ""):
			t.Errorf("mmp held %+v", d.Held)
		case d.Name == "backend" && d.Held != nil:
			t.Errorf("backend held %+v", d.Held)
		}
	}

	// The request sent, beside the response, with the signature masked.
	backendKey := l.Entries[0].EventID + "|backend"
	var dv struct {
		Attempts []store.Attempt `json:"attempt_log"`
	}
	h.get(t, "/admin/api/deliveries/"+url.PathEscape(backendKey), &dv)
	if len(dv.Attempts) != 1 {
		t.Fatalf("attempts %+v", dv.Attempts)
	}
	req := dv.Attempts[0].Request
	if !strings.Contains(req, "Webhook-Signature: [masked]") || !strings.Contains(req, `"app_user_id":"`+l.Entries[0].User+`"`) || strings.Contains(req, adminHookSecret) || !strings.HasPrefix(req, "POST http://127.0.0.1") {
		t.Errorf("request shown:\n%s", req)
	}

	// Delivered work is re-sent only when confirmed.
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/deliveries/replay", fmt.Sprintf(`{"key":%q}`, backendKey), nil); code != http.StatusConflict {
		t.Errorf("replay of delivered work without confirm: HTTP %d, want 409", code)
	}
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/deliveries/replay", fmt.Sprintf(`{"key":%q,"confirm":true}`, backendKey), nil); code != http.StatusAccepted {
		t.Errorf("confirmed replay: HTTP %d", code)
	}
	waitUntil(t, "confirmed replay delivered", func() bool {
		h.get(t, "/admin/api/deliveries/"+url.PathEscape(backendKey), &dv)
		return len(dv.Attempts) == 2
	})
	if dv.Attempts[0].Replay || !dv.Attempts[1].Replay {
		t.Errorf("replay marks: %v then %v, want false then true", dv.Attempts[0].Replay, dv.Attempts[1].Replay)
	}
	// Held work is queued already: no replay.
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/deliveries/replay", fmt.Sprintf(`{"key":%q}`, l.Entries[0].EventID+"|mmp"), nil); code != http.StatusConflict {
		t.Errorf("replay of queued work: HTTP %d, want 409", code)
	}

	// Resume: the probe is minutes away, the resume sends now.
	b.status.Store(200)
	var res struct {
		WasHeld bool `json:"was_held"`
	}
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/destinations/mmp/resume", "", &res); code != 200 || !res.WasHeld {
		t.Fatalf("resume: HTTP %d %+v", code, res)
	}
	waitUntil(t, "mmp delivered after resume", func() bool {
		h.get(t, "/admin/api/log?state=delivered&destination=mmp", &l)
		return l.Total == 2
	})
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/destinations/nowhere/resume", "", nil); code != http.StatusNotFound {
		t.Errorf("resume unknown: HTTP %d", code)
	}

	// Dead letters grouped, with the response body; a bulk replay of the
	// group follows its deliveries to the end.
	b.status.Store(400)
	h.post(t, stripeSub{id: "evt_l3", sub: "sub_L3", user: "u-log-3", status: "active", live: true})
	var groups struct {
		Groups []struct {
			store.DeadGroup
			LastResponse string `json:"last_response"`
		} `json:"groups"`
	}
	waitUntil(t, "a dead group", func() bool {
		h.get(t, "/admin/api/dead/groups", &groups)
		return len(groups.Groups) == 1
	})
	if g := groups.Groups[0]; g.Destination != "mmp" || g.Count != 1 || g.Reason != "http_400" || !strings.Contains(g.LastResponse, `"answer":400`) {
		t.Errorf("group %+v", g)
	}
	b.status.Store(200)
	var job struct {
		ID        string         `json:"id"`
		Finished  bool           `json:"finished"`
		Following bool           `json:"following"`
		Outcome   map[string]int `json:"outcome"`
	}
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/replay?destination=mmp&reason=%3Dhttp_400&rate_per_second=100", "", &job); code != http.StatusAccepted {
		t.Fatalf("bulk replay: HTTP %d", code)
	}
	waitUntil(t, "bulk replay followed to the end", func() bool {
		job.Following, job.Outcome = false, nil
		h.get(t, "/admin/api/replay/"+job.ID, &job)
		return job.Finished && !job.Following && job.Outcome["delivered"] == 1
	})
	// Delivered work in a bulk replay needs confirm_delivered.
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/replay?state=delivered&destination=mmp", "", nil); code != http.StatusConflict {
		t.Errorf("bulk replay of delivered work without confirmation: HTTP %d, want 409", code)
	}
}
