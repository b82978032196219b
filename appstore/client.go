package appstore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/postback/postback/config"
)

// Base URLs of the App Store Server API.
const (
	ProductionURL = "https://api.storekit.itunes.apple.com"
	SandboxURL    = "https://api.storekit-sandbox.itunes.apple.com"
)

// Audience is the aud claim of every App Store Server API token.
const Audience = "appstoreconnect-v1"

// tokenLifetime is how long a request token is valid (Apple: at most 60m).
const tokenLifetime = 20 * time.Minute

// maxResponse caps a response body (a history page holds 20 JWS).
const maxResponse = 8 << 20

// ErrNotConfigured is returned by New when issuer_id, key_id or private_key
// is empty: the API is then off, the source is not.
var ErrNotConfigured = errors.New("appstore: App Store Server API credentials not configured")

// ErrKey reports a private key that is not an App Store Connect .p8 (PKCS #8
// P-256) key. The message never contains key material.
var ErrKey = errors.New("appstore: private_key is not a PKCS #8 P-256 key (.p8 from App Store Connect)")

// ErrEnvironment reports an environment other than production or sandbox.
var ErrEnvironment = errors.New("appstore: environment must be production or sandbox")

// APIError is a non-2xx answer of the App Store Server API.
type APIError struct {
	Status  int
	Code    int64  // Apple's errorCode, when the body had one
	Message string // Apple's errorMessage
}

func (e *APIError) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("appstore: HTTP %d: error %d: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("appstore: HTTP %d", e.Status)
}

// Retryable reports whether the request may succeed later (429, 5xx).
func (e *APIError) Retryable() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// Options are the client's injectable collaborators; zero values get
// defaults.
type Options struct {
	HTTPClient *http.Client     // default: 10 s timeout
	Now        func() time.Time // default time.Now
}

// Client calls the App Store Server API. It is safe for concurrent use.
type Client struct {
	issuer, keyID string
	key           *ecdsa.PrivateKey
	endpoint      string
	http          *http.Client
	now           func() time.Time
}

// New builds a client from sources.apple.api. private_key is the .p8 PEM
// itself or a path to it. It returns ErrNotConfigured when a credential is
// empty, so callers can run without the API.
func New(cfg config.AppleAPI, opts Options) (*Client, error) {
	if cfg.IssuerID == "" || cfg.KeyID == "" || cfg.PrivateKey == "" {
		return nil, ErrNotConfigured
	}
	key, err := LoadKey(cfg.PrivateKey)
	if err != nil {
		return nil, err
	}
	c := &Client{issuer: cfg.IssuerID, keyID: cfg.KeyID, key: key, endpoint: strings.TrimRight(cfg.Endpoint, "/"), http: opts.HTTPClient, now: opts.Now}
	if c.http == nil {
		c.http = &http.Client{Timeout: 10 * time.Second}
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// LoadKey reads an App Store Connect private key: PEM text, or a path to a
// .p8 file.
func LoadKey(v string) (*ecdsa.PrivateKey, error) {
	data := []byte(v)
	if !strings.Contains(v, "-----BEGIN") {
		b, err := os.ReadFile(v)
		if err != nil {
			return nil, fmt.Errorf("appstore: read private_key file: %w", err)
		}
		data = b
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, ErrKey
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, ErrKey
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, ErrKey
	}
	return ec, nil
}

// baseURL returns the endpoint for a canonical environment.
func (c *Client) baseURL(env string) (string, error) {
	if env != "production" && env != "sandbox" {
		return "", fmt.Errorf("%w: %q", ErrEnvironment, env)
	}
	if c.endpoint != "" {
		return c.endpoint, nil
	}
	if env == "production" {
		return ProductionURL, nil
	}
	return SandboxURL, nil
}

// tokenClaims are the App Store Server API token's claims.
type tokenClaims struct {
	jwt.RegisteredClaims
	BundleID string `json:"bid"`
}

// Token returns a signed request token for bundleID.
func (c *Client) Token(bundleID string) (string, error) {
	now := c.now()
	t := jwt.NewWithClaims(jwt.SigningMethodES256, tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    c.issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(tokenLifetime)),
			Audience:  jwt.ClaimStrings{Audience},
		},
		BundleID: bundleID,
	})
	t.Header["kid"] = c.keyID
	s, err := t.SignedString(c.key)
	if err != nil {
		return "", fmt.Errorf("appstore: sign token: %w", err)
	}
	return s, nil
}

// do sends one request and decodes a 200 answer into out.
func (c *Client) do(ctx context.Context, method, env, bundleID, path string, query url.Values, body, out any) error {
	base, err := c.baseURL(env)
	if err != nil {
		return err
	}
	u := base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("appstore: %w", err)
	}
	tok, err := c.Token(bundleID)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("appstore: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("appstore: read %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &APIError{Status: resp.StatusCode}
		var ab struct {
			ErrorCode    int64  `json:"errorCode"`
			ErrorMessage string `json:"errorMessage"`
		}
		if json.Unmarshal(data, &ab) == nil {
			e.Code, e.Message = ab.ErrorCode, ab.ErrorMessage
		}
		return e
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("appstore: decode %s: %w", path, err)
	}
	return nil
}

// NotificationHistoryRequest is the body of Get Notification History.
// StartDate and EndDate are required (ms since the epoch).
type NotificationHistoryRequest struct {
	StartDate           int64  `json:"startDate"`
	EndDate             int64  `json:"endDate"`
	NotificationType    string `json:"notificationType,omitempty"`
	NotificationSubtype string `json:"notificationSubtype,omitempty"`
	TransactionID       string `json:"transactionId,omitempty"`
	OnlyFailures        bool   `json:"onlyFailures,omitempty"`
}

// SendAttempt is one delivery attempt Apple made for a notification.
type SendAttempt struct {
	AttemptDate       int64  `json:"attemptDate"`
	SendAttemptResult string `json:"sendAttemptResult"`
}

// NotificationHistoryItem is one notification Apple sent or tried to send.
type NotificationHistoryItem struct {
	SignedPayload string        `json:"signedPayload"`
	SendAttempts  []SendAttempt `json:"sendAttempts,omitempty"`
}

// NotificationHistoryPage is one page of Get Notification History.
type NotificationHistoryPage struct {
	NotificationHistory []NotificationHistoryItem `json:"notificationHistory"`
	HasMore             bool                      `json:"hasMore"`
	PaginationToken     string                    `json:"paginationToken,omitempty"`
}

// NotificationHistory fetches one page of notification history for bundleID
// in env (production or sandbox); pass the previous page's PaginationToken
// to continue.
func (c *Client) NotificationHistory(ctx context.Context, env, bundleID string, r NotificationHistoryRequest, paginationToken string) (NotificationHistoryPage, error) {
	var q url.Values
	if paginationToken != "" {
		q = url.Values{"paginationToken": {paginationToken}}
	}
	var page NotificationHistoryPage
	err := c.do(ctx, http.MethodPost, env, bundleID, "/inApps/v1/notifications/history", q, r, &page)
	return page, err
}

// TransactionQuery filters Get Transaction History.
type TransactionQuery struct {
	Revision     string   // the previous page's Revision, to continue
	Sort         string   // ASCENDING or DESCENDING
	ProductTypes []string // AUTO_RENEWABLE, NON_RENEWABLE, CONSUMABLE, NON_CONSUMABLE
	StartDate    int64    // ms; purchaseDate >= StartDate
	EndDate      int64    // ms; purchaseDate < EndDate
}

// TransactionHistoryPage is one page of Get Transaction History (v2).
type TransactionHistoryPage struct {
	Revision           string   `json:"revision"`
	HasMore            bool     `json:"hasMore"`
	BundleID           string   `json:"bundleId"`
	AppAppleID         int64    `json:"appAppleId"`
	Environment        string   `json:"environment"`
	SignedTransactions []string `json:"signedTransactions"`
}

// TransactionHistory fetches one page of the transaction history of the
// customer who owns transactionID.
func (c *Client) TransactionHistory(ctx context.Context, env, bundleID, transactionID string, tq TransactionQuery) (TransactionHistoryPage, error) {
	q := url.Values{}
	if tq.Revision != "" {
		q.Set("revision", tq.Revision)
	}
	if tq.Sort != "" {
		q.Set("sort", tq.Sort)
	}
	for _, t := range tq.ProductTypes {
		q.Add("productType", t)
	}
	if tq.StartDate > 0 {
		q.Set("startDate", strconv.FormatInt(tq.StartDate, 10))
	}
	if tq.EndDate > 0 {
		q.Set("endDate", strconv.FormatInt(tq.EndDate, 10))
	}
	var page TransactionHistoryPage
	err := c.do(ctx, http.MethodGet, env, bundleID, "/inApps/v2/history/"+url.PathEscape(transactionID), q, nil, &page)
	return page, err
}
