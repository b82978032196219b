package server_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postback/postback/config"
	"github.com/stripe/stripe-go/v76/webhook"
)

var newHookSecret = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))

// A reload gives running destinations their new endpoint and secret
// without a restart; a broken file changes nothing; a destination added
// by the file is reported as needing a restart.
func TestAdminReloadDestinations(t *testing.T) {
	a, b, moved := newSink(t, 200), newSink(t, 401), newSink(t, 200)
	var yaml atomic.Value
	write := func(mmpURL, extra string) {
		yaml.Store(fmt.Sprintf(`
storage: {path: %q}
admin: {token: %q}
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [%q], app_id: %s}
destinations:
  - {name: backend, type: webhook, endpoint: %q, secret: %q, match: {environments: [production, sandbox]}, retry: {max_attempts: 3}}
  - {name: mmp, type: webhook, endpoint: %q, secret: %q, match: {environments: [production, sandbox]}, retry: {max_attempts: 3}}
%s`, t.TempDir()+"/other.db", adminToken, adminStripe, adminAppID, a.srv.URL, adminHookSecret, mmpURL, newHookSecret, extra))
	}
	write(b.srv.URL, "")
	h := startAdmin(t, a, b, harnessOpts{token: adminToken, reload: func() (*config.Config, error) {
		return config.Parse([]byte(yaml.Load().(string)), func(string) (string, bool) { return "", false })
	}})
	h.post(t, stripeSub{id: "evt_r1", sub: "sub_R1", user: "u-r1", status: "active", live: true})
	var l logAnswer
	waitUntil(t, "mmp held on the old credentials", func() bool {
		h.get(t, "/admin/api/log?state=held", &l)
		return l.Total == 1
	})
	// A broken file: 422, nothing changes.
	yaml.Store("destinations: [{name: mmp, type: nope}]")
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/reload", "", nil); code != http.StatusUnprocessableEntity {
		t.Errorf("broken reload: HTTP %d, want 422", code)
	}
	// The fixed file points mmp elsewhere and adds a destination.
	write(moved.srv.URL, "  - {name: extra, type: webhook, endpoint: "+fmt.Sprintf("%q", a.srv.URL)+", secret: "+fmt.Sprintf("%q", adminHookSecret)+", match: {environments: [production]}}\n")
	var r struct {
		Applied []string `json:"applied"`
		Added   []string `json:"added"`
	}
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/reload", "", &r); code != 200 || len(r.Applied) != 2 || len(r.Added) != 1 || r.Added[0] != "extra" {
		t.Fatalf("reload: HTTP %d %+v", code, r)
	}
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/destinations/mmp/resume", "", nil); code != 200 {
		t.Fatalf("resume: HTTP %d", code)
	}
	waitUntil(t, "held work delivered to the new endpoint", func() bool {
		h.get(t, "/admin/api/log?state=delivered&destination=mmp", &l)
		return l.Total == 1 && moved.count() == 1
	})
	// The added destination gets nothing until a restart.
	h.post(t, stripeSub{id: "evt_r2", sub: "sub_R2", user: "u-r2", status: "active", live: true})
	waitUntil(t, "the new event delivered", func() bool {
		h.get(t, "/admin/api/log?q=u-r2", &l)
		return l.Total == 2
	})
	for _, e := range l.Entries {
		if strings.Contains(e.Destination, "extra") {
			t.Errorf("work queued for a destination that waits for a restart: %+v", e)
		}
	}
}

func TestAdminReloadWithoutFile(t *testing.T) {
	h := startAdmin(t, newSink(t, 200), newSink(t, 200), harnessOpts{token: adminToken})
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/reload", "", nil); code != http.StatusConflict {
		t.Errorf("reload without a file: HTTP %d, want 409", code)
	}
}

// A reload gives the running sources their new secrets: Stripe signing
// secrets and the /v1 API keys change without a restart; the old ones stop
// working at once.
func TestAdminReloadSourceSecrets(t *testing.T) {
	const newStripe = "whsec_rotated_0123456789abcdef"
	var yaml atomic.Value
	write := func(stripeSecret, apiKey string) {
		yaml.Store(fmt.Sprintf(`
storage: {path: %q}
admin: {token: %q}
api_keys: [%q]
sources:
  apple: {enabled: false}
  google: {enabled: false}
  shopify: {enabled: false}
  stripe: {enabled: true, secrets: [%q], app_id: %s}
destinations: []
`, t.TempDir()+"/other.db", adminToken, apiKey, stripeSecret, adminAppID))
	}
	write(newStripe, "api-key-after-reload")
	h := startAdmin(t, newSink(t, 200), newSink(t, 200), harnessOpts{token: adminToken, reload: func() (*config.Config, error) {
		return config.Parse([]byte(yaml.Load().(string)), func(string) (string, bool) { return "", false })
	}})
	stripe := func(id, secret string) int {
		body := stripeSub{id: id, sub: "sub_" + id, user: "u-" + id, status: "active", live: true}.body()
		sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: time.Now()}).Header
		req, _ := http.NewRequest(http.MethodPost, h.url+"/webhooks/stripe", bytes.NewReader(body))
		req.Header.Set("Stripe-Signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	v1 := func(key string) int {
		req, _ := http.NewRequest(http.MethodPut, h.url+"/v1/users/u-1", strings.NewReader(`{"identifiers":{"idfa":"6D92078A-8246-4BA4-AE5B-76104861E7DC"}}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := stripe("evt_before", adminStripe); code != 200 {
		t.Fatalf("before the reload, the configured secret: HTTP %d", code)
	}
	if code := v1("api-key-after-reload"); code != http.StatusNotFound {
		t.Fatalf("before the reload /v1 is off (no api_keys): HTTP %d, want 404", code)
	}
	var r struct {
		Sources []string `json:"sources_applied"`
	}
	if code := h.call(t, adminToken, http.MethodPost, "/admin/api/reload", "", &r); code != 200 || !slices.Contains(r.Sources, "stripe") || !slices.Contains(r.Sources, "api_keys") {
		t.Fatalf("reload: HTTP %d %+v", code, r)
	}
	if code := stripe("evt_old_secret", adminStripe); code == 200 {
		t.Error("the replaced Stripe secret still verifies after the reload")
	}
	if code := stripe("evt_new_secret", newStripe); code != 200 {
		t.Errorf("the new Stripe secret: HTTP %d", code)
	}
	if code := v1("api-key-after-reload"); code != http.StatusOK {
		t.Errorf("the new API key: HTTP %d, want 200", code)
	}
	if code := v1("some-other-key"); code != http.StatusUnauthorized {
		t.Errorf("an unknown API key: HTTP %d, want 401", code)
	}
}
