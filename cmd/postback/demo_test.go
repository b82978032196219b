package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	var liveEvents int
	sum, err := runDemo(ctx, &out, io.Discard, "127.0.0.1:0", func(s *DemoSummary) {
		// While the demo waits for Ctrl-C its admin API answers.
		req, _ := http.NewRequest(http.MethodGet, s.ConsoleURL+"/admin/api/events", nil)
		req.Header.Set("Authorization", "Bearer "+s.Token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var page struct {
				Events []json.RawMessage `json:"events"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			liveEvents = len(page.Events)
		}
		if resp, err := http.Get(s.ConsoleURL + "/admin/login"); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("console login page: HTTP %d", resp.StatusCode)
			}
		}
		cancel()
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sum.Sources, []string{"stripe", "shopify"}) {
		t.Errorf("sources %v", sum.Sources)
	}
	want := map[string][]string{
		"stripe":  {"trial_started", "trial_converted", "subscription_renewed", "refund"},
		"shopify": {"purchase", "subscription_renewed", "refund"},
	}
	got := map[string][]string{}
	var ids []string
	for _, e := range sum.Events {
		got[e.Source] = append(got[e.Source], e.Type)
		ids = append(ids, e.ID)
	}
	for src, types := range want {
		// Events received in the same millisecond list in id order.
		slices.Sort(types)
		slices.Sort(got[src])
		if !slices.Equal(got[src], types) {
			t.Errorf("%s story: events %v, want %v", src, got[src], types)
		}
	}
	if liveEvents != len(sum.Events) {
		t.Errorf("admin API listed %d events, want %d", liveEvents, len(sum.Events))
	}
	if sum.Unfinished != 0 {
		t.Errorf("%d deliveries unfinished", sum.Unfinished)
	}
	if len(sum.Destinations) != 3 {
		t.Fatalf("destinations %+v", sum.Destinations)
	}
	for _, d := range sum.Destinations {
		t.Run(d.Name, func(t *testing.T) {
			if d.States["dead"] != 0 || d.States["pending"]+d.States["retrying"]+d.States["waiting"] != 0 {
				t.Errorf("states %v", d.States)
			}
			if total := d.States["delivered"] + d.States["skipped"]; total != len(ids) {
				t.Errorf("%d final deliveries, want one per event (%d)", total, len(ids))
			}
			switch d.Type {
			case "webhook":
				var gotIDs []string
				for _, r := range d.Requests {
					var e struct {
						ID string `json:"id"`
					}
					if err := json.Unmarshal([]byte(r.Body), &e); err != nil {
						t.Fatal(err)
					}
					gotIDs = append(gotIDs, e.ID)
				}
				slices.Sort(gotIDs)
				want := slices.Sorted(slices.Values(ids))
				if !slices.Equal(gotIDs, want) {
					t.Errorf("backend received %v, want every event once %v", gotIDs, want)
				}
			case "appsflyer":
				if len(d.Requests) != len(ids) {
					t.Fatalf("%d requests, want %d", len(d.Requests), len(ids))
				}
				for i, r := range d.Requests {
					if r.Path != "/inappevent/id1234567890" || !strings.Contains(r.Body, `"appsflyer_id":"1700000000000-`) {
						t.Errorf("request %d: %s %s", i, r.Path, r.Body)
					}
				}
				names := map[string]int{}
				for _, r := range d.Requests {
					var b struct {
						EventName string `json:"eventName"`
					}
					_ = json.Unmarshal([]byte(r.Body), &b)
					names[b.EventName]++
				}
				if names["af_start_trial"] != 1 || names["af_subscribe"] != 1 || names["refund"] != 2 {
					t.Errorf("appsflyer event names %v", names)
				}
			case "tiktok":
				// TikTok batches; refunds have no TikTok event name.
				if len(d.Requests) == 0 || d.States["delivered"] != 5 || d.States["skipped"] != 2 {
					t.Errorf("%d requests, states %v, want 5 delivered and 2 refunds skipped", len(d.Requests), d.States)
				}
				sent := 0
				for _, r := range d.Requests {
					sent += strings.Count(r.Body, `"event_id":"evt_`)
				}
				if sent != 5 {
					t.Errorf("tiktok got %d events, want 5", sent)
				}
			}
		})
	}
	for _, s := range []string{"trial_started", "appsflyer-demo (appsflyer) received 7 requests", "my-backend (webhook) received 7 requests"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("printed summary lacks %q:\n%s", s, out.String())
		}
	}
}
