package forwarders

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func TestDumpRequestMasksCredentials(t *testing.T) {
	js := `{"events":[{"name":"purchase"}],"api_key":"k-123456","user":{"id":"u1","token":"t-123456"}}`
	req, _ := http.NewRequest(http.MethodPost, "https://user:pw@api.example.com/collect?measurement_id=G-1&api_secret=s3cr3t-value", bytes.NewReader([]byte(js)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer abcdef")
	req.Header.Set("Access-Token", "tok-abcdef")
	req.Header.Set("X-Custom", "has OTHER-SECRET inside")
	got := DumpRequest(req, "POST https://api.example.com/collect (1 events)", "OTHER-SECRET")
	for _, leak := range []string{"s3cr3t-value", "abcdef", "k-123456", "t-123456", "OTHER-SECRET", "pw@"} {
		if strings.Contains(got, leak) {
			t.Errorf("dump leaks %q:\n%s", leak, got)
		}
	}
	for _, want := range []string{"POST https://api.example.com/collect (1 events)\n\nPOST https://api.example.com/collect?", "measurement_id=G-1",
		"Authorization: [masked]", "Content-Type: application/json", `"name":"purchase"`, `"id":"u1"`} {
		if !strings.Contains(got, want) {
			t.Errorf("dump lacks %q:\n%s", want, got)
		}
	}
	// A form body (Meta) masks its access_token field; the request can
	// still be sent afterwards.
	req, _ = http.NewRequest(http.MethodPost, "https://graph.example.com/v1/events", strings.NewReader("data=%5B%5D&access_token=EAAB-secret"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if got := DumpRequest(req, "POST"); strings.Contains(got, "EAAB-secret") || !strings.Contains(got, "data=%5B%5D") {
		t.Errorf("form dump:\n%s", got)
	}
	if rest, _ := req.GetBody(); rest == nil {
		t.Error("no body left")
	}
}
