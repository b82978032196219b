package forwarders

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/postback/postback/mapping"
)

// This file holds what the ad-network forwarders (Meta, TikTok, GA4) share:
// web-or-app channel detection, identifier hashing, the too-old filter,
// batch splitting and the bisection that isolates a bad event in a rejected
// batch.

// ErrAdNetwork reports a request an ad network refused or could not take;
// the wrapped message carries the network's own code, never a secret.
var ErrAdNetwork = errors.New("forwarders: ad network refused the request")

// Channel values of an event, as ad networks distinguish them.
const (
	channelApp = "app"
	channelWeb = "web"
)

// adChannel tells whether an event happened in an app or on the web: Stripe
// and Shopify are web, Apple and Google app, and a custom event says so in
// attributes["channel"] (app when it does not).
func adChannel(e *mapping.Event) string {
	if c := strings.ToLower(strings.TrimSpace(e.Attributes["channel"])); c == channelWeb || c == channelApp {
		return c
	}
	switch e.Source {
	case mapping.SourceStripe, mapping.SourceShopify:
		return channelWeb
	}
	return channelApp
}

// adPlatform returns "ios", "android" or "" for an app event: the os
// identifier when set, else what the store implies.
func adPlatform(e *mapping.Event) string {
	switch strings.ToLower(e.Identifier(mapping.IDOS)) {
	case "ios", "ipados":
		return "ios"
	case "android":
		return "android"
	}
	switch e.Source {
	case mapping.SourceApple:
		return "ios"
	case mapping.SourceGoogle:
		return "android"
	}
	return ""
}

// zeroAdID reports an advertising id that carries no information: the
// all-zero IDFA/GAID a device reports when tracking is limited.
func zeroAdID(v string) bool {
	return strings.Trim(v, "0-") == ""
}

// adID returns the advertising id of an app event for its platform (IDFA on
// iOS, GAID on Android), or "" when absent or zeroed.
func adID(e *mapping.Event) string {
	var v string
	switch adPlatform(e) {
	case "ios":
		v = e.Identifier(mapping.IDIDFA)
	case "android":
		v = e.Identifier(mapping.IDGAID)
	}
	if zeroAdID(v) {
		return ""
	}
	return v
}

// hashID returns the SHA-256 hex of a trimmed identifier such as an
// external id, or the value itself (lower-cased) when it already is a
// SHA-256 hex digest, so that nothing is hashed twice.
func hashID(v string) string {
	v = strings.TrimSpace(v)
	if v == "" {
		return ""
	}
	if l := strings.ToLower(v); mapping.IsSHA256Hex(l) {
		return l
	}
	return mapping.SHA256Hex(v)
}

// externalID returns the event's external id for Meta and TikTok: the
// external_id identifier, else the app user id, hashed.
func externalID(e *mapping.Event) string {
	if v := e.Identifier(mapping.IDExternalID); v != "" {
		return hashID(v)
	}
	return hashID(e.User.AppUserID)
}

// attStatus returns Apple's ATT authorization status (0 not determined,
// 1 restricted, 2 denied, 3 authorized) or -1 when unknown.
func attStatus(e *mapping.Event) int {
	v, err := strconv.Atoi(strings.TrimSpace(e.Identifier(mapping.IDATTStatus)))
	if err != nil || v < 0 || v > 3 {
		return -1
	}
	return v
}

// pageURL returns the web page an event happened on, when the source or the
// app recorded one.
func pageURL(e *mapping.Event) string {
	if v := e.Attributes["event_source_url"]; v != "" {
		return v
	}
	return e.Attributes["page_url"]
}

// revenueValue returns the absolute amount of an event's revenue as an
// exact decimal and its currency, or "" without revenue. Ad networks take
// no negative values: a refund is the refunded amount under a refund event
// name, the sign being carried by the name.
func revenueValue(e *mapping.Event) (value, currency string) {
	if e.Revenue == nil || e.Revenue.Currency == "" {
		return "", ""
	}
	r := *e.Revenue
	if r.AmountMicros < 0 {
		r = r.Negate()
	}
	return r.Decimal(), strings.ToUpper(r.Currency)
}

// throttleDelay is how long a destination that answered with a throttling
// code (not HTTP 429) is asked to wait when it gave no Retry-After.
const throttleDelay = time.Minute

// tooOld reports whether an event happened longer than maxAge before now.
func tooOld(e *mapping.Event, now time.Time, maxAge time.Duration) bool {
	return maxAge > 0 && now.Sub(e.OccurredAt) > maxAge
}

// skipped is the result of an event deliberately not sent.
func skipped(reason string) Result { return Result{Outcome: Skipped, Reason: reason} }

// Chunk splits a batch into consecutive slices of at most size items, the
// way the dispatcher hands a destination its due deliveries (size is
// Limits().BatchSize). A size below 1 means one item per chunk.
func Chunk(batch []Item, size int) [][]Item {
	if size < 1 {
		size = 1
	}
	out := make([][]Item, 0, (len(batch)+size-1)/size)
	for len(batch) > size {
		out = append(out, batch[:size:size])
		batch = batch[size:]
	}
	if len(batch) > 0 {
		out = append(out, batch)
	}
	return out
}

// bisectBudget bounds the requests spent on one batch of at most the API's
// limit, bisection included: enough to isolate a handful of bad events in
// 1000.
const bisectBudget = 64

// bisect sends the events at idx with send. When a multi-event request is
// rejected as invalid (Dead), a whole batch has failed for what may be one
// event: the batch is split in halves and each half resent, recursively,
// so good events are delivered and only the bad ones end dead. budget caps
// the number of requests; events still unresolved when it runs out are
// retried later rather than killed.
func bisect(idx []int, budget *int, send func(idx []int) Result, out []Result) {
	if *budget <= 0 {
		for _, i := range idx {
			out[i] = Result{Outcome: Retry, Reason: "bisect_budget: batch rejected and the request budget is spent"}
		}
		return
	}
	*budget--
	r := send(idx)
	if r.Outcome != Dead || len(idx) == 1 {
		for _, i := range idx {
			out[i] = r
		}
		return
	}
	if *budget < 2 {
		r.Outcome, r.Reason = Retry, "bisect_budget: "+r.Reason
		for _, i := range idx {
			out[i] = r
		}
		return
	}
	half := len(idx) / 2
	bisect(idx[:half], budget, send, out)
	bisect(idx[half:], budget, send, out)
}

// adResponse is one HTTP exchange with an ad network.
type adResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// adDo performs req and reads at most 64 KiB of the answer. A transport
// error comes back as a Retry result with the URL (and its query, where
// GA4's secret lives) scrubbed.
func adDo(client *http.Client, req *http.Request, summary string) (adResponse, *Result) {
	resp, err := client.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			err = ctxErr
		}
		return adResponse{}, &Result{Outcome: Retry, Reason: "network", Request: summary,
			Err: fmt.Errorf("%s: %w", summary, scrubURLError(err))}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return adResponse{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// redact replaces every secret in s by "[redacted]", for response excerpts
// and error texts that might echo a credential back.
func redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

// adCancelled returns a Retry result when ctx is done, so that an ad
// forwarder does not spend requests after the dispatcher gave up.
func adCancelled(ctx context.Context) *Result {
	if err := ctx.Err(); err != nil {
		return &Result{Outcome: Retry, Reason: "cancelled", Err: err}
	}
	return nil
}

// adExchange sends req and classifies the answer with classify, masking
// secret in the response excerpt and prefixing errors with the request
// summary (never the secret).
func adExchange(client *http.Client, req *http.Request, summary, secret string, now time.Time, classify func(adResponse, time.Time, string) Result) Result {
	sent := DumpRequest(req, summary, secret)
	resp, rr := adDo(client, req, summary)
	if rr != nil {
		rr.Request = sent
		return *rr
	}
	r := classify(resp, now, secret)
	r.Request = sent
	r.Response = redact(Excerpt(resp.Body), secret)
	if r.Err != nil {
		r.Err = fmt.Errorf("%s: %w", summary, r.Err)
	}
	return r
}
