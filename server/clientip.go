package server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientIP returns the function that names a request's client. Without
// trusted proxies it is the TCP peer, whatever X-Forwarded-For or X-Real-IP
// say (any client can send them). With server.trusted_proxies, and only
// when the peer is one of them, X-Forwarded-For is read from the right:
// the first address that is not a trusted proxy is the client (the ones
// left of it were written by the client itself); X-Real-IP is used when
// there is no X-Forwarded-For.
//
// ignored, when not nil, is called with the peer of each request whose
// X-Forwarded-For or X-Real-IP was not believed.
func clientIP(trusted []netip.Prefix, ignored ...func(peer string)) func(*http.Request) string {
	note := func(r *http.Request, peer string) {
		if len(ignored) > 0 && (r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("X-Real-IP") != "") {
			ignored[0](peer)
		}
	}
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) string {
		peer := peerAddr(r.RemoteAddr)
		if len(trusted) == 0 {
			note(r, peer)
			return peer
		}
		pa, err := netip.ParseAddr(peer)
		if err != nil || !isTrusted(pa.Unmap()) {
			note(r, peer)
			return peer
		}
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			hops := strings.Split(strings.Join(xff, ","), ",")
			client := peer
			for i := len(hops) - 1; i >= 0; i-- {
				a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
				if err != nil {
					break // a garbled hop: trust nothing further left
				}
				client = a.Unmap().String()
				if !isTrusted(a.Unmap()) {
					break
				}
			}
			return client
		}
		if a, err := netip.ParseAddr(strings.TrimSpace(r.Header.Get("X-Real-IP"))); err == nil {
			return a.Unmap().String()
		}
		return peer
	}
}

// peerAddr is the IP of a RemoteAddr ("1.2.3.4:5678", "[::1]:80").
func peerAddr(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}
