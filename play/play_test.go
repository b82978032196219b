package play

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/api/googleapi"

	"github.com/postback/postback/webhooks/googletest"
)

const pkg = "com.example.app"

func newClient(t *testing.T) (*Client, *googletest.Publisher) {
	t.Helper()
	pub := googletest.NewPublisher()
	t.Cleanup(pub.Close)
	c, err := New(context.Background(), Options{Endpoint: pub.URL(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c, pub
}

func TestNew(t *testing.T) {
	if _, err := New(context.Background(), Options{}); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("no credentials: got %v, want ErrNoCredentials", err)
	}
	if _, err := New(context.Background(), Options{CredentialsFile: filepath.Join(t.TempDir(), "missing.json")}); err == nil {
		t.Error("a missing credentials file was accepted")
	}
	if _, err := New(context.Background(), Options{HTTPClient: http.DefaultClient}); err != nil {
		t.Errorf("with an HTTP client: %v", err)
	}
}

func TestCalls(t *testing.T) {
	c, pub := newClient(t)
	ctx := context.Background()
	pub.SetSubscription(pkg, "tok/with+odd=chars", map[string]any{"subscriptionState": "SUBSCRIPTION_STATE_ACTIVE", "lineItems": []any{map[string]any{"productId": "pro"}}})
	pub.SetOrder(pkg, "GPA.1..0", map[string]any{"orderId": "GPA.1..0", "total": googletest.Money(16_990_000, "AUD")})
	pub.SetProduct(pkg, "coins", "otp", map[string]any{"orderId": "GPA.2", "purchaseTimeMillis": "1764471600000"})
	raw, err := c.Subscription(ctx, pkg, "tok/with+odd=chars")
	if err != nil || !json.Valid(raw) {
		t.Fatalf("subscription: %s, %v", raw, err)
	}
	raw, err = c.Order(ctx, pkg, "GPA.1..0")
	var o struct {
		Total struct {
			Units string `json:"units"`
			Nanos int64  `json:"nanos"`
		} `json:"total"`
	}
	if err != nil || json.Unmarshal(raw, &o) != nil || o.Total.Units != "16" || o.Total.Nanos != 990_000_000 {
		t.Fatalf("order: %s, %v; want units \"16\" (a string, as Google sends it) and 990000000 nanos", raw, err)
	}
	if _, err := c.Product(ctx, pkg, "coins", "otp"); err != nil {
		t.Fatalf("product: %v", err)
	}
}

func TestErrorKinds(t *testing.T) {
	cases := []struct {
		status int
		want   error
	}{
		{http.StatusNotFound, ErrNotFound},
		{http.StatusGone, ErrNotFound},
		{http.StatusTooManyRequests, ErrTemporary},
		{http.StatusInternalServerError, ErrTemporary},
		{http.StatusServiceUnavailable, ErrTemporary},
		{http.StatusRequestTimeout, ErrTemporary},
		{http.StatusBadRequest, ErrRejected},
		{http.StatusUnauthorized, ErrRejected},
		{http.StatusForbidden, ErrRejected},
	}
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			c, pub := newClient(t)
			pub.SetSubscription(pkg, "t", map[string]any{})
			pub.FailNext(googletest.OpSubscription, tc.status)
			_, err := c.Subscription(context.Background(), pkg, "t")
			var pe *Error
			if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Status != tc.status || pe.Op != "subscriptionsv2.get" {
				t.Errorf("got %v, want %v with status %d", err, tc.want, tc.status)
			}
		})
	}
	t.Run("unknown purchase", func(t *testing.T) {
		c, _ := newClient(t)
		if _, err := c.Order(context.Background(), pkg, "GPA.nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("got %v, want ErrNotFound", err)
		}
	})
	t.Run("network", func(t *testing.T) {
		c, pub := newClient(t)
		pub.Close()
		if _, err := c.Product(context.Background(), pkg, "p", "t"); !errors.Is(err, ErrTemporary) {
			t.Errorf("got %v, want ErrTemporary", err)
		}
	})
}

func TestRetryAfter(t *testing.T) {
	h := http.Header{}
	h.Set("Retry-After", "7")
	e := classify("op", &googleapi.Error{Code: 429, Header: h})
	var pe *Error
	if !errors.As(e, &pe) || pe.RetryAfter != 7*time.Second {
		t.Errorf("got %+v, want RetryAfter 7s", e)
	}
}

func TestVoidedPurchasesPages(t *testing.T) {
	c, pub := newClient(t)
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 5; i++ {
		ms := base.Add(time.Duration(i) * time.Hour).UnixMilli()
		pub.AddVoided(pkg, ms, map[string]any{"orderId": "GPA." + strconv.Itoa(i), "purchaseToken": "t", "voidedTimeMillis": strconv.FormatInt(ms, 10)})
	}
	list, err := c.VoidedPurchases(context.Background(), pkg, base, base.Add(3*time.Hour))
	if err != nil || len(list) != 4 {
		t.Fatalf("got %d, %v; want the 4 voided in the window", len(list), err)
	}
	if list[3].OrderId != "GPA.3" || list[3].VoidedTimeMillis != base.Add(3*time.Hour).UnixMilli() {
		t.Errorf("last entry %+v", list[3])
	}
	if n := pub.Count(googletest.OpVoided); n != 2 {
		t.Errorf("%d page requests, want 2 (page size 2)", n)
	}
}
