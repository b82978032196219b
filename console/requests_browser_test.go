package console_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"
)

// Issue 16, item 6, in a real browser: the Requests page from the nav,
// a rejected request with its reason, the outcome filter, and the link from
// an accepted request to its event. POSTBACK_SCREENSHOTS=1 writes
// docs/screenshots/requests.png.
func TestBrowserRequestsPage(t *testing.T) {
	c := browser(t)
	bg := startBrowserGateway(t, time.Hour)
	bg.post(t, "evt_req_browser", "customer.subscription.created", subscription("sub_rb", "user-rb", "trialing"), "", true)
	req, _ := http.NewRequest(http.MethodPost, bg.url+"/webhooks/stripe", bytes.NewReader([]byte(`{"id":"evt_forged"}`)))
	req.Header.Set("Stripe-Signature", "t=1,v1=00")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}

	navigate(t, c, bg.url+"/admin/")
	waitJS(t, c, "login form", `!!document.querySelector('#token')`)
	if _, err := c.eval(`document.querySelector('#token').value = ` + jsString(browserToken) + `; document.querySelector('#login').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "overview", `location.pathname === '/admin/'`)
	if _, err := c.eval(`document.querySelector('a[href="/admin/requests"]').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "requests page with both requests", `location.pathname === '/admin/requests' && document.querySelectorAll('table.requests tbody tr').length === 2`)
	waitJS(t, c, "the rejected one with its reason", `document.querySelector('table.requests tbody tr').innerText.includes('invalid_signature')`)
	screenshot(t, c, "requests.png")
	if _, err := c.eval(`document.querySelector('select[name=outcome]').value = 'accepted'; document.querySelector('form.filters button').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "filtered to the accepted one", `location.search.includes('outcome=accepted') && document.querySelectorAll('table.requests tbody tr').length === 1`)
	if _, err := c.eval(`document.querySelector('table.requests tbody a').click(); true`); err != nil {
		t.Fatal(err)
	}
	waitJS(t, c, "its event", `location.pathname.startsWith('/admin/events/evt_')`)
}
