package webhooks

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/metrics"
	"github.com/postback/postback/store"
)

// blockingIngester returns when the request's context ends, as a store
// does when the client hangs up mid-commit.
type blockingIngester struct{}

func (blockingIngester) Ingest(ctx context.Context, _ *mapping.Notification) (store.IngestResult, error) {
	<-ctx.Done()
	return store.IngestResult{}, ctx.Err()
}

// Issue 16, item 9: a client that disconnects while its notification is
// stored is client_closed (499), not store_unavailable.
func TestAcceptClientClosed(t *testing.T) {
	var logs bytes.Buffer
	d := Deps{Store: blockingIngester{}, Metrics: metrics.New(), Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: time.Now}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	_, err := d.Accept(ctx, &mapping.Notification{Source: "stripe", Key: "stripe:evt_1"})
	var we *Error
	if !errors.As(err, &we) || we.Status != StatusClientClosed || we.Code != CodeClientClosed {
		t.Fatalf("err = %v", err)
	}
	if n := counterValue(t, d.Metrics.Rejected.WithLabelValues("stripe", CodeUnavailable)); n != 0 {
		t.Errorf("store_unavailable counted %v", n)
	}
	if n := counterValue(t, d.Metrics.Rejected.WithLabelValues("stripe", CodeClientClosed)); n != 1 {
		t.Errorf("client_closed counted %v", n)
	}
	if strings.Contains(logs.String(), "store failed") || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("logged as a store failure: %s", logs.String())
	}
}
