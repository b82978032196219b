package appletest

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

func TestSignJWSShape(t *testing.T) {
	p := NewPKI(t)
	tok := p.SignJWS(map[string]any{"signedDate": 1})
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts", len(parts))
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Alg string   `json:"alg"`
		X5C []string `json:"x5c"`
	}
	if err := json.Unmarshal(hb, &h); err != nil || h.Alg != "ES256" || len(h.X5C) != 3 {
		t.Fatalf("header %s: %v", hb, err)
	}
	for i, want := range [][]byte{p.LeafDER(), p.IntermediateDER(), p.RootDER()} {
		if got, err := base64.StdEncoding.DecodeString(h.X5C[i]); err != nil || !bytes.Equal(got, want) {
			t.Errorf("x5c[%d] is not standard base64 of the certificate", i)
		}
	}
	if sig, _ := base64.RawURLEncoding.DecodeString(parts[2]); len(sig) != 64 {
		t.Errorf("signature is %d bytes, want 64 (R||S)", len(sig))
	}
	if !bytes.Contains(p.RootPEM(), []byte("BEGIN CERTIFICATE")) {
		t.Error("RootPEM is not PEM")
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.Root)
	inter := x509.NewCertPool()
	inter.AddCert(p.Intermediate)
	if _, err := p.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("chain does not verify: %v", err)
	}
	tok = p.Sign([]byte("raw"), JWS{X5C: []string{}})
	hb, _ = base64.RawURLEncoding.DecodeString(tok[:strings.IndexByte(tok, '.')])
	if bytes.Contains(hb, []byte("x5c")) {
		t.Errorf("empty X5C still wrote x5c: %s", hb)
	}
}

func TestNewPKIWithoutTBPanicsOnlyOnError(t *testing.T) {
	if p := NewPKI(nil, WithName("x")); p.Leaf == nil {
		t.Fatal("no leaf")
	}
}

func TestOCSPHandler(t *testing.T) {
	p := NewPKI(t, WithOCSP("http://127.0.0.1/ocsp"))
	srv := httptest.NewServer(p.OCSPHandler(ocsp.Good, time.Now()))
	defer srv.Close()
	ask := func(body []byte) *http.Response {
		t.Helper()
		resp, err := http.Post(srv.URL, "application/ocsp-request", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	req, _ := ocsp.CreateRequest(p.Leaf, p.Intermediate, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if resp := ask(req); resp.StatusCode != 200 {
		t.Errorf("leaf: %d", resp.StatusCode)
	}
	if resp := ask([]byte("junk")); resp.StatusCode != 400 {
		t.Errorf("junk: %d", resp.StatusCode)
	}
	other := *p.Leaf
	other.SerialNumber = big.NewInt(99)
	req, _ = ocsp.CreateRequest(&other, p.Intermediate, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if resp := ask(req); resp.StatusCode != 404 {
		t.Errorf("unknown serial: %d", resp.StatusCode)
	}
	if pemKey, key, err := P8(); err != nil || key == nil || !bytes.Contains(pemKey, []byte("PRIVATE KEY")) {
		t.Errorf("P8: %v", err)
	}
}
