package play

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// VoidedLister lists voided purchases (Client.VoidedPurchases).
type VoidedLister interface {
	VoidedPurchases(ctx context.Context, pkg string, start, end time.Time) ([]*VoidedPurchase, error)
}

// Ingester stores a notification in the inbox (store.DB.Ingest).
type Ingester interface {
	Ingest(ctx context.Context, n *mapping.Notification) (store.IngestResult, error)
}

// VoidedWindow is how far back Google lists voided purchases.
const VoidedWindow = 30 * 24 * time.Hour

// ErrReconcileWindow reports a window that ends before it starts.
var ErrReconcileWindow = errors.New("play: reconcile window is empty")

// ReconcileOptions select what a reconciliation sweep covers.
type ReconcileOptions struct {
	Packages []string
	Since    time.Time // clamped to Google's 30-day window
	Until    time.Time // zero means now
	Now      func() time.Time
}

// ReconcileResult counts what a sweep found.
type ReconcileResult struct {
	Listed  int       `json:"listed"`  // voided purchases Google returned
	New     int       `json:"new"`     // not seen before: queued for enrichment and a refund event
	Known   int       `json:"known"`   // already received (by RTDN or an earlier sweep)
	Since   time.Time `json:"since"`   // the window actually used
	Until   time.Time `json:"until"`   //
	Clamped bool      `json:"clamped"` // Since was older than Google keeps
}

var voidedSources = map[int64]string{0: "user", 1: "developer", 2: "google"}

var voidedReasons = map[int64]string{
	0: "other", 1: "remorse", 2: "not_received", 3: "defective", 4: "accidental_purchase",
	5: "fraud", 6: "friendly_fraud", 7: "chargeback", 8: "unacknowledged_purchase",
}

// Reconcile lists purchases voided in the window and stores each one that
// the inbox does not know yet as a voided-purchase notification waiting for
// enrichment, under the same dedupe key an RTDN voidedPurchaseNotification
// for that order gets (mapping.GoogleVoidedKey). A refund that RTDN already
// delivered is therefore recognised and not counted twice, and running the
// sweep again changes nothing. The enrichment worker then reads the order
// and the mapping emits the refund.
func Reconcile(ctx context.Context, api VoidedLister, in Ingester, o ReconcileOptions) (ReconcileResult, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	t := now().UTC()
	r := ReconcileResult{Since: o.Since.UTC(), Until: o.Until.UTC()}
	if o.Until.IsZero() || o.Until.After(t) {
		r.Until = t
	}
	if oldest := t.Add(-VoidedWindow).Add(time.Minute); r.Since.Before(oldest) {
		r.Since, r.Clamped = oldest, true
	}
	if !r.Since.Before(r.Until) {
		return r, ErrReconcileWindow
	}
	for _, pkg := range o.Packages {
		list, err := api.VoidedPurchases(ctx, pkg, r.Since, r.Until)
		if err != nil {
			return r, fmt.Errorf("play: list voided purchases of %s: %w", pkg, err)
		}
		for _, vp := range list {
			if vp == nil || vp.OrderId == "" || vp.PurchaseToken == "" {
				continue
			}
			r.Listed++
			n, err := voidedNotification(pkg, vp, t)
			if err != nil {
				return r, err
			}
			res, err := in.Ingest(ctx, n)
			if err != nil {
				return r, fmt.Errorf("play: store voided purchase %s: %w", vp.OrderId, err)
			}
			if res.Duplicate {
				r.Known++
			} else {
				r.New++
			}
		}
	}
	return r, nil
}

// voidedNotification renders a listed voided purchase as the developer
// notification RTDN would have sent for it.
func voidedNotification(pkg string, vp *VoidedPurchase, now time.Time) (*mapping.Notification, error) {
	partial := vp.VoidedQuantity > 0
	refundType := mapping.GoogleRefundFull
	if partial {
		refundType = mapping.GoogleRefundPartial
	}
	body, err := json.Marshal(map[string]any{
		"version":         "1.0",
		"packageName":     pkg,
		"eventTimeMillis": strconv.FormatInt(vp.VoidedTimeMillis, 10),
		"voidedPurchaseNotification": map[string]any{
			"purchaseToken": vp.PurchaseToken, "orderId": vp.OrderId, "refundType": refundType,
		},
	})
	if err != nil {
		return nil, err
	}
	key := mapping.GoogleVoidedKey(vp.OrderId, partial)
	meta := map[string]string{
		"origin":        "reconcile",
		"voided_source": voidedSources[vp.VoidedSource],
		"voided_reason": voidedReasons[vp.VoidedReason],
	}
	if partial {
		meta["voided_quantity"] = strconv.FormatInt(vp.VoidedQuantity, 10)
	}
	return &mapping.Notification{
		Source:     mapping.SourceGoogle,
		Key:        key,
		AltKeys:    []string{key},
		Type:       "VOIDED_PURCHASE",
		AppID:      pkg,
		ReceivedAt: now,
		Body:       body,
		Meta:       meta,
		Deferred:   true,
	}, nil
}
