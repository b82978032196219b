package appstore

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Outcome is what the gateway did with one replayed notification.
type Outcome int

// Outcomes of Receiver.
const (
	// OutcomeNew: verified, stored and mapped for the first time.
	OutcomeNew Outcome = iota
	// OutcomeDuplicate: already in the inbox (its notificationUUID was received
	// before); nothing changed.
	OutcomeDuplicate
	// OutcomeRejected: refused by verification (bad chain, unknown app, older than
	// the dedupe window, ...); nothing stored.
	OutcomeRejected
)

// Receiver runs one signedPayload through the same verify-dedupe-map path
// as POST /webhooks/apple. An error aborts the backfill (the store is
// unavailable); a refused notification is an Outcome, not an error.
type Receiver func(ctx context.Context, signedPayload string) (Outcome, error)

// BackfillResult counts what a backfill did.
type BackfillResult struct {
	Fetched    int `json:"fetched"`
	New        int `json:"new"`
	Duplicates int `json:"duplicates"`
	Rejected   int `json:"rejected"`
	Pages      int `json:"pages"`
}

// ErrRange reports a backfill window whose end is not after its start.
var ErrRange = errors.New("appstore: backfill --until must be after --since")

// maxPages bounds one backfill (20 notifications a page: 200,000 items).
const maxPages = 10000

// Backfill pulls the notification history of bundleID in env between since
// and until and hands every signedPayload to receive, page by page. Because
// receive dedupes on notificationUUID, running it over a window that was
// partly received already only adds what was missed.
func Backfill(ctx context.Context, c *Client, env, bundleID string, since, until time.Time, receive Receiver) (BackfillResult, error) {
	var res BackfillResult
	if !until.After(since) {
		return res, ErrRange
	}
	req := NotificationHistoryRequest{StartDate: since.UnixMilli(), EndDate: until.UnixMilli()}
	token := ""
	for res.Pages < maxPages {
		page, err := c.NotificationHistory(ctx, env, bundleID, req, token)
		if err != nil {
			return res, fmt.Errorf("appstore: notification history page %d: %w", res.Pages+1, err)
		}
		res.Pages++
		for _, it := range page.NotificationHistory {
			if it.SignedPayload == "" {
				continue
			}
			res.Fetched++
			out, err := receive(ctx, it.SignedPayload)
			if err != nil {
				return res, err
			}
			switch out {
			case OutcomeNew:
				res.New++
			case OutcomeDuplicate:
				res.Duplicates++
			default:
				res.Rejected++
			}
		}
		if !page.HasMore || page.PaginationToken == "" {
			return res, nil
		}
		token = page.PaginationToken
	}
	return res, fmt.Errorf("appstore: backfill stopped after %d pages; narrow --since/--until", maxPages)
}
