package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/postback/postback/config"
	"github.com/postback/postback/console"
)

// tlsConfig builds the HTTPS configuration of server.tls: certificate files
// reloaded when they change, or certificates obtained and renewed over ACME
// (TLS-ALPN-01 on the same listener). nil when server.tls is not set.
func (g *Gateway) tlsConfig() (*tls.Config, error) {
	t := g.Config.Server.TLS
	switch {
	case t.CertFile != "":
		r := &certReloader{cert: t.CertFile, key: t.KeyFile, log: g.Logger}
		if err := r.load(); err != nil {
			return nil, fmt.Errorf("server.tls: %w", err)
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}, nil
	case len(t.ACME.Domains) > 0:
		if err := os.MkdirAll(t.ACME.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("server.tls.acme.cache_dir: %w", err)
		}
		m := &autocert.Manager{
			Prompt:     autocert.AcceptTOS,
			Cache:      autocert.DirCache(t.ACME.CacheDir),
			HostPolicy: autocert.HostWhitelist(t.ACME.Domains...),
			Email:      t.ACME.Email,
		}
		if t.ACME.DirectoryURL != "" || g.opts.ACMEHTTPClient != nil {
			m.Client = &acme.Client{DirectoryURL: t.ACME.DirectoryURL, HTTPClient: g.opts.ACMEHTTPClient}
			if m.Client.DirectoryURL == "" {
				m.Client.DirectoryURL = autocert.DefaultACMEDirectory
			}
		}
		c := m.TLSConfig()
		c.MinVersion = tls.VersionTLS12
		get := c.GetCertificate
		c.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if h.ServerName == "" && len(t.ACME.Domains) > 0 {
				// Clients that send no SNI (health checks by IP) get the
				// first domain's certificate.
				h.ServerName = t.ACME.Domains[0]
			}
			cert, err := get(h)
			if err != nil {
				g.Logger.Warn("ACME certificate", "server_name", h.ServerName, "err", err)
			}
			return cert, err
		}
		return c, nil
	}
	return nil, nil
}

// certReloader serves a certificate and key from files and loads them again
// when either file changes (a renewal by certbot or a secret mount), checked
// at most once a second; a pair that does not load keeps the previous one.
type certReloader struct {
	cert, key string
	log       *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	stamp   string
	checked time.Time
}

func (r *certReloader) fileStamp() (string, error) {
	var s string
	for _, p := range []string{r.cert, r.key} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

func (r *certReloader) load() error {
	stamp, err := r.fileStamp()
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.current, r.stamp, r.checked = &c, stamp, time.Now()
	r.mu.Unlock()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	due := time.Since(r.checked) >= time.Second
	if due {
		r.checked = time.Now()
	}
	stamp := r.stamp
	r.mu.Unlock()
	if due {
		if now, err := r.fileStamp(); err == nil && now != stamp {
			if err := r.load(); err != nil {
				r.log.Error("server.tls: the changed certificate does not load; serving the previous one", "err", err)
			} else {
				r.log.Info("server.tls: certificate reloaded", "cert_file", r.cert)
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current, nil
}

// viaTrustedHTTPS reports whether r came through a trusted proxy that says
// the client used HTTPS.
func viaTrustedHTTPS(r *http.Request, trusted []netip.Prefix) bool {
	if r.Header.Get("X-Forwarded-Proto") != "https" || len(trusted) == 0 {
		return false
	}
	pa, err := netip.ParseAddr(peerAddr(r.RemoteAddr))
	if err != nil {
		return false
	}
	for _, p := range trusted {
		if p.Contains(pa.Unmap()) {
			return true
		}
	}
	return false
}

// markSecure marks requests that came over HTTPS for the console.
func markSecure(r *http.Request, trusted []netip.Prefix) *http.Request {
	if r.TLS != nil || viaTrustedHTTPS(r, trusted) {
		return r.WithContext(console.WithSecure(r.Context()))
	}
	return r
}

// tlsMode names server.tls's mode for the start-up line.
func tlsMode(t config.TLS) string {
	if t.CertFile != "" {
		return "certificate files (reloaded when they change)"
	}
	return "acme: " + strings.Join(t.ACME.Domains, ", ")
}
