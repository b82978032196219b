package console_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Issue 16, item 6: the Requests page lists accepted and rejected requests
// with their reason code, filters by outcome, says the log is per process,
// and runs under the strict CSP (no inline script or style).
func TestConsoleRequestsPage(t *testing.T) {
	bg := startBrowserGateway(t, time.Hour)
	bg.post(t, "evt_req_1", "customer.subscription.created", subscription("sub_req", "user-req", "trialing"), "", true)
	// A request with a bad signature: refused with its reason code.
	req, _ := http.NewRequest(http.MethodPost, bg.url+"/webhooks/stripe", bytes.NewReader([]byte(`{"id":"evt_secret_body_marker"}`)))
	req.Header.Set("Stripe-Signature", "t=1,v1=00")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	v := newVisitor(t, bg.url)
	if resp, _ := v.do(http.MethodGet, "/admin/requests", nil); resp.StatusCode/100 != 3 {
		t.Fatalf("without a session: HTTP %d", resp.StatusCode)
	}
	v.login(t)
	resp, page := v.do(http.MethodGet, "/admin/requests", nil)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("HTTP %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	for _, want := range []string{">Requests</a>", "in memory only", "invalid_signature", `bad">rejected<`, `ok">accepted<`, "customer.subscription.created", "/admin/events/evt_"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"evt_secret_body_marker", "<script", "style="} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	_, page = v.do(http.MethodGet, "/admin/requests?outcome=rejected", nil)
	if strings.Contains(page, `ok">accepted<`) || !strings.Contains(page, "invalid_signature") {
		t.Errorf("outcome filter does not filter:\n%s", page)
	}
}
