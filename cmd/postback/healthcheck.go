package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// cmdHealthcheck asks a gateway's /readyz (the store is writable and the
// dispatcher runs) and exits 0 when it is ready: the Docker HEALTHCHECK,
// in an image without curl.
func cmdHealthcheck(ctx context.Context, env *Env, args []string) int {
	fs := newFlags("healthcheck", env)
	addr := fs.String("addr", "http://127.0.0.1:8080", "the gateway's address (env POSTBACK_ADDR)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if v, ok := env.Getenv("POSTBACK_ADDR"); ok && v != "" {
		_ = fs.Set("addr", v)
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	u := strings.TrimRight(*addr, "/")
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/readyz", nil)
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback healthcheck:", err)
		return 2
	}
	client := http.DefaultClient
	if h := req.URL.Hostname(); req.URL.Scheme == "https" && (h == "localhost" || net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback()) {
		// server.tls: the certificate names the public host, not the
		// loopback address the check dials; readiness is all it asks.
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(env.Stderr, "postback healthcheck: not reachable:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(env.Stderr, "postback healthcheck: not ready: HTTP %d %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
		return 1
	}
	fmt.Fprintln(env.Stdout, "ready")
	return 0
}
