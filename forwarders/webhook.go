package forwarders

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Webhook POSTs the canonical event JSON to any URL, signed per the Standard
// Webhooks spec: webhook-id is the event id (stable across retries and
// replays, the receiver's idempotency key), webhook-timestamp the attempt's
// Unix seconds, and webhook-signature "v1,<base64 HMAC-SHA256>" over
// "{id}.{timestamp}.{body}" keyed with the decoded whsec_ secret.
type Webhook struct {
	url     string
	key     []byte
	headers map[string]string
	client  *http.Client
	now     func() time.Time
}

var _ Forwarder = (*Webhook)(nil)

// webhookSettings is the type-specific configuration.
type webhookSettings struct {
	Secret  string            `yaml:"secret"`
	Headers map[string]string `yaml:"headers"`
}

// NewWebhook validates a webhook destination.
func NewWebhook(s Settings) (Forwarder, error) {
	var cfg webhookSettings
	if err := s.Decode(&cfg); err != nil {
		return nil, configError(s, "", err.Error())
	}
	if s.Endpoint == "" {
		return nil, configError(s, "endpoint", "the receiver's URL is required for type webhook")
	}
	if cfg.Secret == "" {
		return nil, configError(s, "secret", "a whsec_<base64> signing secret is required (generate one with: echo whsec_$(head -c 32 /dev/urandom | base64))")
	}
	key, err := DecodeWebhookSecret(cfg.Secret)
	if err != nil {
		return nil, configError(s, "secret", err.Error())
	}
	for k := range cfg.Headers {
		if strings.HasPrefix(strings.ToLower(k), "webhook-") {
			return nil, configError(s, "headers."+k, "webhook-* headers are set by the signature and cannot be overridden")
		}
	}
	return &Webhook{url: s.Endpoint, key: key, headers: cfg.Headers, client: s.Client, now: s.Now}, nil
}

// DecodeWebhookSecret decodes a "whsec_<base64>" secret to its key bytes.
func DecodeWebhookSecret(secret string) ([]byte, error) {
	raw, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, fmt.Errorf("secret must start with whsec_")
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("secret after whsec_ is not valid base64")
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("secret must decode to 24..64 bytes, got %d", len(key))
	}
	return key, nil
}

// SignWebhook returns the webhook-signature value for a message.
func SignWebhook(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.", id, ts)
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Limits implements Forwarder: one event per request.
func (w *Webhook) Limits() Limits { return Limits{BatchSize: 1} }

// Send implements Forwarder.
func (w *Webhook) Send(ctx context.Context, batch []Item) []Result {
	out := make([]Result, len(batch))
	for i, it := range batch {
		out[i] = w.send(ctx, it)
	}
	return out
}

func (w *Webhook) send(ctx context.Context, it Item) Result {
	body, err := json.Marshal(it.Event)
	if err != nil {
		return Result{Outcome: Dead, Reason: "encode", Err: err}
	}
	ts := w.now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return Result{Outcome: Pause, Reason: "bad_url", Err: err}
	}
	for k, v := range w.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "postback")
	req.Header.Set("webhook-id", it.Event.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", SignWebhook(w.key, it.Event.ID, ts, body))
	summary := "POST " + RedactURL(w.url)
	return Do(w.client, req, summary, func(status int, _ []byte) Outcome {
		if status == http.StatusGone {
			return Pause // Standard Webhooks: 410 means the endpoint is gone
		}
		return Classify(status)
	}, w.now)
}

// Do performs a request and classifies its response with classify. Shared by
// every forwarder: it captures the first KiB of the body, honours
// Retry-After, and never puts the URL's query (where keys live) in errors.
func Do(client *http.Client, req *http.Request, summary string, classify func(status int, body []byte) Outcome, now func() time.Time) Result {
	sent := DumpRequest(req, summary)
	resp, err := client.Do(req)
	if err != nil {
		return Result{Outcome: Retry, Reason: "network", Request: sent, Err: fmt.Errorf("%s: %w", summary, scrubURLError(err))}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	r := Result{
		Outcome:  classify(resp.StatusCode, body),
		Status:   resp.StatusCode,
		Request:  sent,
		Response: Excerpt(body),
	}
	if r.Outcome == Retry || r.Outcome == Pause {
		r.RetryAfter = RetryAfter(resp.Header, now())
	}
	if r.Outcome != Delivered && r.Outcome != Duplicate {
		r.Reason = "http_" + strconv.Itoa(resp.StatusCode)
		r.Err = fmt.Errorf("%s: HTTP %d", summary, resp.StatusCode)
	}
	return r
}

// Excerpt returns at most the first KiB of a response body as text.
func Excerpt(b []byte) string {
	if len(b) > 1024 {
		b = b[:1024]
	}
	return strings.ToValidUTF8(string(b), "?")
}

// RedactURL returns scheme://host/path of a URL: queries and user info, where
// API keys live, are never logged.
func RedactURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	if i := strings.Index(u, "://"); i >= 0 {
		if at := strings.Index(u[i+3:], "@"); at >= 0 && !strings.Contains(u[i+3:i+3+at], "/") {
			u = u[:i+3] + u[i+3+at+1:]
		}
	}
	return u
}

// scrubURLError strips the URL (with its query) from a *url.Error.
func scrubURLError(err error) error {
	type unwrapper interface{ Unwrap() error }
	if ue, ok := err.(unwrapper); ok && strings.Contains(err.Error(), "?") {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
