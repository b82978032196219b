package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// adminClient calls a running gateway's admin API.
type adminClient struct {
	addr  string
	token string
	http  *http.Client
}

// clientError is an admin API failure with an exit code scripts can trust:
// 1 the server refused or failed, 2 bad usage, 3 gateway unreachable,
// 4 authentication failed, 5 not found.
type clientError struct {
	status int
	code   string
	msg    string
	err    error
}

func (e *clientError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("%s (HTTP %d %s)", e.msg, e.status, e.code)
}

func (e *clientError) exitCode() int {
	switch {
	case e.err != nil:
		return 3
	case e.status == http.StatusUnauthorized || e.status == http.StatusForbidden:
		return 4
	case e.status == http.StatusNotFound:
		return 5
	case e.status == http.StatusBadRequest:
		return 2
	}
	return 1
}

// clientFlags registers --addr, --token and --json on fs.
func clientFlags(fs *flag.FlagSet, env *Env) (addr *string, asJSON *bool) {
	def := "http://127.0.0.1:8080"
	if v, ok := env.Getenv("POSTBACK_ADDR"); ok && v != "" {
		def = v
	}
	addr = fs.String("addr", def, "gateway admin address (env POSTBACK_ADDR)")
	fs.StringVar(&env.token, "token", "", "admin token (default env POSTBACK_ADMIN_TOKEN; the environment keeps it out of ps and shell history)")
	asJSON = fs.Bool("json", false, "print JSON instead of a table")
	return addr, asJSON
}

func newAdminClient(env *Env, addr string) (*adminClient, error) {
	tok := env.token
	if tok == "" {
		tok, _ = env.Getenv("POSTBACK_ADMIN_TOKEN")
	}
	if tok == "" {
		return nil, &clientError{status: http.StatusBadRequest, code: "usage", msg: "set POSTBACK_ADMIN_TOKEN (or pass --token) to the gateway's admin.token"}
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &adminClient{addr: strings.TrimRight(addr, "/"), token: tok, http: &http.Client{Timeout: 60 * time.Second}}, nil
}

// do calls method path?query with an optional JSON body and decodes the
// JSON answer into out.
func (c *adminClient) do(ctx context.Context, method, path string, q url.Values, body any, out any) error {
	u := c.addr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return &clientError{status: http.StatusBadRequest, code: "usage", msg: err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &clientError{err: fmt.Errorf("cannot reach the gateway at %s: %w", c.addr, errors.Unwrap(err))}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 300 {
		var eb struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal(data, &eb)
		if eb.Error.Message == "" {
			eb.Error.Message = strings.TrimSpace(string(data))
		}
		return &clientError{status: resp.StatusCode, code: eb.Error.Code, msg: eb.Error.Message}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("unexpected answer from %s: %w", path, err)
		}
	}
	return nil
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func cmdReprocess(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("reprocess", env)
	addr, asJSON := clientFlags(fs, env)
	source := fs.String("source", "", "only this source (apple, google, stripe, shopify, custom)")
	since := fs.String("since", "", "received at or after (RFC 3339 or a duration ago, e.g. 24h)")
	until := fs.String("until", "", "received at or before (RFC 3339)")
	status := fs.String("status", "", "inbox statuses to re-map: failed,ignored (default) or mapped")
	dry := fs.Bool("dry-run", false, "only count what would be re-mapped")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := checkChoice("source", *source, sourceNames, nil); err != nil {
		return exitErr(env, err)
	}
	c, err := newAdminClient(env, *addr)
	if err != nil {
		return exitErr(env, err)
	}
	q := url.Values{}
	for k, v := range map[string]string{"source": *source, "since": *since, "until": *until, "status": *status} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *dry {
		q.Set("dry_run", "true")
	}
	var out struct {
		DryRun bool `json:"dry_run"`
		Result struct {
			Scanned, Matched, Failed int
			NewEvents                int `json:"new_events"`
			Existing                 int `json:"existing_events"`
		} `json:"result"`
	}
	if err := c.do(ctx, http.MethodPost, "/admin/api/reprocess", q, nil, &out); err != nil {
		return exitErr(env, err)
	}
	if *asJSON {
		printJSON(env.Stdout, out)
		return 0
	}
	r := out.Result
	fmt.Fprintf(env.Stdout, "scanned %d, matched %d", r.Scanned, r.Matched)
	if !out.DryRun {
		fmt.Fprintf(env.Stdout, ", new events %d, already emitted %d, still failing %d", r.NewEvents, r.Existing, r.Failed)
	}
	fmt.Fprintln(env.Stdout)
	return 0
}
