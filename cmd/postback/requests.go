package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// requestOutcomes are the values of `postback requests --outcome`.
var requestOutcomes = []string{"accepted", "duplicate", "ignored", "failed", "rejected", "client_closed"}

type apiInbound struct {
	At         time.Time `json:"at"`
	RequestID  string    `json:"request_id"`
	Source     string    `json:"source"`
	Method     string    `json:"method"`
	Path       string    `json:"path"`
	Status     int       `json:"status"`
	Outcome    string    `json:"outcome"`
	Reason     string    `json:"reason,omitempty"`
	Type       string    `json:"type,omitempty"`
	Key        string    `json:"key,omitempty"`
	EventIDs   []string  `json:"event_ids,omitempty"`
	Remote     string    `json:"remote"`
	DurationMs float64   `json:"duration_ms"`
}

func cmdRequests(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("requests", env)
	addr, asJSON := clientFlags(fs, env)
	source := fs.String("source", "", "only this source (apple, google, stripe, shopify, custom)")
	outcome := fs.String("outcome", "", "only this outcome: "+strings.Join(requestOutcomes, ", "))
	limit := fs.Int("limit", 50, "at most this many, newest first (1-1000)")
	fs.Usage = func() {
		flagUsage(fs, "usage: postback requests [flags]   recent inbound webhook and API requests, newest first",
			"       (the gateway process's memory: the newest 1000 since it started; never a body)")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		return exitErr(env, usageError("unexpected argument %q (filters are flags: --source stripe --outcome rejected)", pos[0]))
	}
	if err := checkChoice("source", *source, sourceNames, nil); err != nil {
		return exitErr(env, err)
	}
	if err := checkChoice("outcome", *outcome, requestOutcomes, nil); err != nil {
		return exitErr(env, err)
	}
	c, err := newAdminClient(env, *addr)
	if err != nil {
		return exitErr(env, err)
	}
	q := url.Values{}
	setQuery(q, map[string]string{"source": *source, "outcome": *outcome})
	q.Set("limit", strconv.Itoa(*limit))
	var out struct {
		Requests []apiInbound `json:"requests"`
		Seen     int64        `json:"seen_since_start"`
		Capacity int          `json:"capacity"`
		Note     string       `json:"note"`
	}
	if err := c.do(ctx, http.MethodGet, "/admin/api/requests", q, nil, &out); err != nil {
		return exitErr(env, err)
	}
	if *asJSON {
		printJSON(env.Stdout, out)
		return 0
	}
	tw := table(env.Stdout)
	fmt.Fprintln(tw, "RECEIVED\tSOURCE\tSTATUS\tOUTCOME\tREASON\tTYPE\tEVENTS\tREQUEST ID")
	for _, r := range out.Requests {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", ts(r.At), r.Source, r.Status, r.Outcome, dash(clip(r.Reason, 50)),
			dash(r.Type), dash(strings.Join(r.EventIDs, ",")), r.RequestID)
	}
	tw.Flush()
	if len(out.Requests) == 0 {
		fmt.Fprintln(env.Stderr, "no requests match (the log is per process and starts empty at each start)")
	}
	fmt.Fprintf(env.Stderr, "%d requests seen since the gateway started; the newest %d are kept in its memory\n", out.Seen, out.Capacity)
	return 0
}
