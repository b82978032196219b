package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/postback/postback/config"
	"github.com/postback/postback/forwarders"
	"github.com/postback/postback/mapping"
)

// TestAdjustOrderIsDurable: the gateway hands Adjust its store-backed memory,
// so the latest delivered time per device and token outlives the process.
func TestAdjustOrderIsDurable(t *testing.T) {
	adjust := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer adjust.Close()
	dbPath := filepath.Join(t.TempDir(), "postback.db")
	cfg := e2eConfig(t, dbPath, "http://127.0.0.1:9/", `  - name: adjust
    type: adjust
    endpoint: `+adjust.URL+`
    app_token: 4w565xzmb54d
    event_tokens: {subscription_renewed: f0ob4r}
`)
	g, err := New(cfg, Options{Logger: NewLogger(io.Discard, config.Log{Level: "error"}, nil)})
	if err != nil {
		t.Fatal(err)
	}
	f, ok := g.Dispatcher.Forwarder("adjust")
	if !ok {
		t.Fatal("no adjust destination")
	}
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	e := &mapping.Event{ID: "evt_1", Type: mapping.SubscriptionRenewed, Source: mapping.SourceStripe, Environment: mapping.Production,
		AppID: "com.example.app", OccurredAt: at, ReceivedAt: at,
		User: mapping.User{AppUserID: "u1", Identifiers: map[string]string{mapping.IDAdjust: "adid-1", mapping.IDOS: "ios"}}}
	if r := f.Send(context.Background(), []forwarders.Item{{Key: "d1", Attempt: 1, Event: e}}); r[0].Outcome != forwarders.Delivered {
		t.Fatalf("send: %+v", r[0])
	}
	got, ok, err := g.Store.ForwarderMemory("adjust").Get("production|adid:adid-1|f0ob4r")
	if err != nil || !ok || !got.Equal(at) {
		t.Fatalf("memory = %v %v %v, want %v", got, ok, err, at)
	}
	g.Store.Close()
}
