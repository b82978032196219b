package play

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/api/androidpublisher/v3"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

// Errors, each wrapped by *Error.
var (
	// ErrNotFound is Google's 404 or 410: the purchase, token or order does
	// not exist (any more). It is final; retrying does not help.
	ErrNotFound = errors.New("play: not found")
	// ErrTemporary is a 408, 429, 5xx or a network failure: retry later.
	ErrTemporary = errors.New("play: temporary failure")
	// ErrRejected is any other answer (400, 401, 403): usually credentials
	// or API access that an operator must fix; retrying later may succeed
	// once they have.
	ErrRejected = errors.New("play: request rejected")
	// ErrNoCredentials is returned by New without a credentials file and
	// without an endpoint override.
	ErrNoCredentials = errors.New("play: no service account credentials (sources.google.play_api.credentials_file)")
)

// Error is a failed Play API call. It never carries credentials; Message is
// Google's error message.
type Error struct {
	Op         string        // e.g. "subscriptionsv2.get"
	Status     int           // HTTP status, 0 for network errors
	Message    string        // Google's message or the network error
	RetryAfter time.Duration // from a Retry-After header, if any
	Kind       error         // ErrNotFound, ErrTemporary or ErrRejected
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("play: %s: %s", e.Op, e.Message)
	}
	return fmt.Sprintf("play: %s: HTTP %d: %s", e.Op, e.Status, e.Message)
}

// Unwrap returns the error's kind, for errors.Is.
func (e *Error) Unwrap() error { return e.Kind }

// Options configure a Client.
type Options struct {
	// CredentialsFile is the service account JSON key with access to the
	// Play Console's API (sources.google.play_api.credentials_file).
	CredentialsFile string
	// Endpoint overrides the API base URL (tests, proxies). With an
	// endpoint and no credentials file the client sends no credentials.
	Endpoint string
	// HTTPClient, when set, is used as is (it must authenticate itself);
	// it takes precedence over CredentialsFile.
	HTTPClient *http.Client
	// Timeout bounds each call; default 20s.
	Timeout time.Duration
}

// Client calls the Android Publisher API. Each call is made once; callers
// own retries (the enrichment worker keeps per-item backoff).
type Client struct {
	svc     *androidpublisher.Service
	timeout time.Duration
}

// New builds a client. It reads the credentials file but makes no request.
func New(ctx context.Context, o Options) (*Client, error) {
	var opts []option.ClientOption
	switch {
	case o.HTTPClient != nil:
		opts = append(opts, option.WithHTTPClient(o.HTTPClient))
	case o.CredentialsFile != "":
		opts = append(opts, option.WithAuthCredentialsFile(option.ServiceAccount, o.CredentialsFile))
	case o.Endpoint != "":
		opts = append(opts, option.WithoutAuthentication())
	default:
		return nil, ErrNoCredentials
	}
	if o.Endpoint != "" {
		ep := o.Endpoint
		if !strings.HasSuffix(ep, "/") {
			ep += "/"
		}
		opts = append(opts, option.WithEndpoint(ep))
	}
	svc, err := androidpublisher.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("play: create client: %w", err)
	}
	t := o.Timeout
	if t <= 0 {
		t = 20 * time.Second
	}
	return &Client{svc: svc, timeout: t}, nil
}

// Subscription calls purchases.subscriptionsv2.get and returns the
// SubscriptionPurchaseV2 JSON.
func (c *Client) Subscription(ctx context.Context, pkg, token string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := c.svc.Purchases.Subscriptionsv2.Get(pkg, token).Context(ctx).Do()
	if err != nil {
		return nil, classify("subscriptionsv2.get", err)
	}
	return marshal("subscriptionsv2.get", r)
}

// Order calls orders.get and returns the Order JSON (amount charged, tax,
// offer phase of the order, refund history).
func (c *Client) Order(ctx context.Context, pkg, orderID string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := c.svc.Orders.Get(pkg, orderID).Context(ctx).Do()
	if err != nil {
		return nil, classify("orders.get", err)
	}
	return marshal("orders.get", r)
}

// Product calls purchases.products.get for a one-time product and returns
// the ProductPurchase JSON.
func (c *Client) Product(ctx context.Context, pkg, productID, token string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := c.svc.Purchases.Products.Get(pkg, productID, token).Context(ctx).Do()
	if err != nil {
		return nil, classify("products.get", err)
	}
	return marshal("products.get", r)
}

// VoidedPurchase is one entry of purchases.voidedpurchases.list.
type VoidedPurchase = androidpublisher.VoidedPurchase

// maxPages bounds one listing (1000 results a page by default).
const maxPages = 1000

// VoidedPurchases lists purchases voided between start and end (Google keeps
// 30 days), subscriptions included and quantity-based partial refunds as
// separate entries, following page tokens.
func (c *Client) VoidedPurchases(ctx context.Context, pkg string, start, end time.Time) ([]*VoidedPurchase, error) {
	var out []*VoidedPurchase
	token := ""
	for page := 0; page < maxPages; page++ {
		call := c.svc.Purchases.Voidedpurchases.List(pkg).Type(1).IncludeQuantityBasedPartialRefund(true)
		if token != "" {
			call = call.Token(token)
		} else {
			if !start.IsZero() {
				call = call.StartTime(start.UnixMilli())
			}
			if !end.IsZero() {
				call = call.EndTime(end.UnixMilli())
			}
		}
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		r, err := call.Context(cctx).Do()
		cancel()
		if err != nil {
			return out, classify("voidedpurchases.list", err)
		}
		out = append(out, r.VoidedPurchases...)
		if r.TokenPagination == nil || r.TokenPagination.NextPageToken == "" || r.TokenPagination.NextPageToken == token {
			return out, nil
		}
		token = r.TokenPagination.NextPageToken
	}
	return out, &Error{Op: "voidedpurchases.list", Message: fmt.Sprintf("more than %d pages", maxPages), Kind: ErrRejected}
}

func marshal(op string, v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &Error{Op: op, Message: "encode answer: " + err.Error(), Kind: ErrRejected}
	}
	return b, nil
}

// classify turns a client error into an *Error of the right kind.
func classify(op string, err error) error {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		e := &Error{Op: op, Status: ge.Code, Message: ge.Message, Kind: ErrRejected}
		if e.Message == "" {
			e.Message = http.StatusText(ge.Code)
		}
		switch {
		case ge.Code == http.StatusNotFound || ge.Code == http.StatusGone:
			e.Kind = ErrNotFound
		case ge.Code == http.StatusRequestTimeout || ge.Code == http.StatusTooManyRequests || ge.Code >= 500:
			e.Kind = ErrTemporary
		}
		if s := ge.Header.Get("Retry-After"); s != "" {
			if sec, perr := strconv.Atoi(s); perr == nil && sec > 0 {
				e.RetryAfter = time.Duration(sec) * time.Second
			} else if t, perr := http.ParseTime(s); perr == nil {
				e.RetryAfter = time.Until(t)
			}
		}
		return e
	}
	// Anything else is the network (refused, reset, timeout, EOF): retry.
	return &Error{Op: op, Message: err.Error(), Kind: ErrTemporary}
}
