package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"

	"github.com/postback/postback/config"
)

// writeSelfSigned writes a certificate for name with the given serial.
func writeSelfSigned(t *testing.T, certPath, keyPath, name string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsGateway runs a gateway whose server block is serverYAML, on ln.
func tlsGateway(t *testing.T, serverYAML string, ln net.Listener, opts Options) *testGateway {
	t.Helper()
	y := fmt.Sprintf(`
server: %s
storage: {path: %q}
admin: {token: %q}
sources: {apple: {enabled: false}, google: {enabled: false}, shopify: {enabled: false}, stripe: {enabled: false}}
`, serverYAML, t.TempDir()+"/pb.db", opsAdminToken)
	cfg, err := config.Parse([]byte(y), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener = ln
	if opts.Logger == nil {
		opts.Logger = NewLogger(io.Discard, cfg.Log, nil)
	}
	g, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tg := &testGateway{g: g, url: "https://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { tg.done <- g.Run(ctx, nil) }()
	t.Cleanup(tg.stop)
	return tg
}

// serialOf handshakes with addr and returns the served certificate.
func serialOf(t *testing.T, addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots, InsecureSkipVerify: roots == nil})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// Issue 16, item 11: server.tls with certificate files; a renewed pair is
// served without a restart; the console's cookies are Secure over TLS and
// behind a trusted proxy that says https, not otherwise.
func TestTLSCertificateFilesReload(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeSelfSigned(t, cert, key, "gw.postback.test", 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := tlsGateway(t, fmt.Sprintf("{listen: \"127.0.0.1:0\", shutdown_timeout: 1s, trusted_proxies: [\"127.0.0.1\"], tls: {cert_file: %q, key_file: %q}}", cert, key), ln, Options{})
	addr := ln.Addr().String()
	var c *x509.Certificate
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err = serialOf(t, addr, "gw.postback.test", nil); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || c.SerialNumber.Int64() != 1 {
		t.Fatalf("first certificate: %v %v", c, err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get(tg.url + "/admin/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if sc := resp.Header.Get("Set-Cookie"); !strings.Contains(sc, "Secure") {
		t.Errorf("cookie over TLS is not Secure: %q", sc)
	}

	// A broken pair keeps the old one; a good new pair is served.
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if c, err := serialOf(t, addr, "gw.postback.test", nil); err != nil || c.SerialNumber.Int64() != 1 {
		t.Errorf("after a broken write: %v %v, want the previous certificate", c, err)
	}
	writeSelfSigned(t, cert, key, "gw.postback.test", 2)
	time.Sleep(1100 * time.Millisecond)
	if c, err := serialOf(t, addr, "gw.postback.test", nil); err != nil || c.SerialNumber.Int64() != 2 {
		t.Errorf("after renewal: %v %v, want serial 2", c, err)
	}
}

func TestSecureCookieBehindTrustedProxy(t *testing.T) {
	for _, tc := range []struct {
		trusted, proto string
		secure         bool
	}{{"127.0.0.1", "https", true}, {"127.0.0.1", "", false}, {"10.0.0.1", "https", false}} {
		tg := opsGateway(t, io.Discard, fmt.Sprintf("# %s\n", tc.trusted))
		tg.g.proxies = mustPrefixes(t, tc.trusted)
		req, _ := http.NewRequest(http.MethodGet, tg.url+"/admin/login", nil)
		if tc.proto != "" {
			req.Header.Set("X-Forwarded-Proto", tc.proto)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := strings.Contains(resp.Header.Get("Set-Cookie"), "Secure"); got != tc.secure {
			t.Errorf("proxy %s, X-Forwarded-Proto %q: Secure %v, want %v", tc.trusted, tc.proto, got, tc.secure)
		}
	}
}

// Issue 16, item 11: automatic certificates over ACME, against Let's
// Encrypt's Pebble test CA run in-process on loopback (TLS-ALPN-01 on the
// gateway's listener; names resolved by challtestsrv's DNS).
func TestACMEWithPebble(t *testing.T) {
	const domain = "gw.postback.test"
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	quiet := log.New(io.Discard, "", 0)

	// DNS: every name is 127.0.0.1, no IPv6.
	dnsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsAddr := dnsLn.Addr().String()
	dnsLn.Close()
	dnsSrv, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{dnsAddr}, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	dnsSrv.SetDefaultDNSIPv4("127.0.0.1")
	dnsSrv.SetDefaultDNSIPv6("")
	go dnsSrv.Run()
	t.Cleanup(dnsSrv.Shutdown)

	// The gateway's listener first: the VA validates on its port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port

	store := db.NewMemoryStore()
	authority := ca.New(quiet, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(quiet, 0, port, false, dnsAddr, store)
	front := wfe.New(quiet, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 1, 1)
	acmeSrv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(acmeSrv.Close)

	cacheDir := t.TempDir()
	start := time.Now()
	tg := tlsGateway(t, fmt.Sprintf("{listen: \"127.0.0.1:0\", shutdown_timeout: 1s, tls: {acme: {domains: [%s], email: ops@postback.test, cache_dir: %q, directory_url: %q}}}",
		domain, cacheDir, acmeSrv.URL+wfe.DirectoryPath), ln, Options{ACMEHTTPClient: acmeSrv.Client()})
	_ = tg

	roots := x509.NewCertPool()
	roots.AddCert(authority.GetRootCert(0).Cert)
	var cert *x509.Certificate
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cert, err = serialOf(t, ln.Addr().String(), domain, roots); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no certificate from Pebble after %v: %v", time.Since(start), err)
	}
	if cert.DNSNames[0] != domain {
		t.Errorf("certificate for %v", cert.DNSNames)
	}
	// Served over HTTPS with that certificate; cached for the next start.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: domain}}}
	resp, err := client.Get("https://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz over HTTPS: %d", resp.StatusCode)
	}
	if entries, _ := os.ReadDir(cacheDir); len(entries) == 0 {
		t.Error("nothing cached in server.tls.acme.cache_dir")
	}
	t.Logf("certificate issued by Pebble in %v", time.Since(start).Round(time.Millisecond))
}
