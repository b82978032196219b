package webhooks

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/postback/postback/mapping"
)

// Stripe verifies and accepts Stripe webhooks (POST /webhooks/stripe).
//
// The signature is checked with stripe-go's webhook package against each
// configured secret (several during rotation). The timestamp tolerance is
// enforced here, after a valid signature, with the injected clock and in
// both directions (stripe-go only rejects old timestamps). The event is not
// bound to stripe-go's API version: events from a newer API version are
// accepted and mapped from their raw JSON.
type Stripe struct {
	Deps
	Secrets   []string
	Tolerance time.Duration
	AppID     string
}

// Stripe-specific rejection reasons.
var (
	ErrStripeNoHeader  = errors.New("stripe: missing Stripe-Signature header")
	ErrStripeBadHeader = errors.New("stripe: malformed Stripe-Signature header")
	ErrStripeSignature = errors.New("stripe: no signature matches any configured secret")
	ErrStripeStale     = errors.New("stripe: timestamp outside tolerance")
)

// Verify checks a body and its Stripe-Signature header; now is the clock.
func (s *Stripe) Verify(body []byte, header string, now time.Time) error {
	if header == "" {
		return ErrStripeNoHeader
	}
	ts, ok := stripeTimestamp(header)
	if !ok {
		return ErrStripeBadHeader
	}
	matched := false
	for _, secret := range s.Secrets {
		err := webhook.ValidatePayloadIgnoringTolerance(body, header, secret)
		if err == nil {
			matched = true
			break
		}
		if errors.Is(err, webhook.ErrInvalidHeader) || errors.Is(err, webhook.ErrNotSigned) {
			return ErrStripeBadHeader
		}
	}
	if !matched {
		return ErrStripeSignature
	}
	tol := s.Tolerance
	if tol <= 0 {
		tol = webhook.DefaultTolerance
	}
	if d := now.Sub(ts); d > tol || d < -tol {
		return ErrStripeStale
	}
	return nil
}

// stripeTimestamp extracts t= from the header. A header with more than one
// t= is malformed: stripe-go verifies against the last one, so accepting
// "t=<now>,t=<old>,v1=<old signature>" and checking the tolerance against the
// first would let a captured header be replayed forever.
func stripeTimestamp(header string) (time.Time, bool) {
	var ts time.Time
	found := false
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k != "t" {
			continue
		}
		if found {
			return time.Time{}, false
		}
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil || sec <= 0 {
			return time.Time{}, false
		}
		ts, found = time.Unix(sec, 0), true
	}
	return ts, found
}

// Handle is the echo handler.
func (s *Stripe) Handle(c echo.Context) error {
	const src = mapping.SourceStripe
	s.Metrics.Received.WithLabelValues(src).Inc()
	body, err := ReadBody(c, s.MaxBody)
	if err != nil {
		return s.Reject(src, AsError(err))
	}
	if err := s.Verify(body, c.Request().Header.Get("Stripe-Signature"), s.Now()); err != nil {
		code := CodeSignature
		switch {
		case errors.Is(err, ErrStripeStale):
			code = CodeStale
		case errors.Is(err, ErrStripeNoHeader), errors.Is(err, ErrStripeBadHeader):
			code = CodeUnauthorized
		}
		return s.Reject(src, Wrap(http.StatusBadRequest, code, err.Error(), err))
	}
	// encoding/json turns every invalid byte into U+FFFD, so "u\xff" and
	// "u\xfe" would decode as one user: refuse such bodies outright.
	if !utf8.Valid(body) {
		return s.Reject(src, Errorf(http.StatusBadRequest, CodeMalformed, "body is not valid UTF-8"))
	}
	// Only the envelope is decoded here (stripe.Event would decode the whole
	// data.object generically, which costs more than the rest of the
	// ingest); the mapping reads the object it needs.
	var ev struct {
		ID         string           `json:"id"`
		Type       stripe.EventType `json:"type"`
		Livemode   bool             `json:"livemode"`
		APIVersion string           `json:"api_version"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" || ev.Type == "" {
		return s.Reject(src, Wrap(http.StatusBadRequest, CodeMalformed, "body is not a Stripe event", err))
	}
	env := mapping.Production
	if !ev.Livemode {
		env = mapping.Sandbox
	}
	n := &mapping.Notification{
		Source:      src,
		Key:         ev.ID,
		Type:        string(ev.Type),
		AppID:       s.AppID,
		Environment: env,
		Body:        body,
	}
	if ev.APIVersion != "" {
		n.Meta = map[string]string{"api_version": ev.APIVersion}
	}
	res, err := s.Accept(c.Request().Context(), n)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, AckOf(res))
}
