package appletest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"time"

	"golang.org/x/crypto/ocsp"
)

// Apple's certificate extension OIDs: the receipt-signing leaf and the
// Worldwide Developer Relations intermediate.
var (
	OIDLeaf         = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 11, 1}
	OIDIntermediate = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 2, 1}
)

// TB is the part of testing.TB that NewPKI uses; *testing.T and *testing.B
// satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// PKI is a three-level chain shaped like Apple's: a P-384 root and
// intermediate and a P-256 leaf.
type PKI struct {
	Root, Intermediate, Leaf          *x509.Certificate
	RootKey, IntermediateKey, LeafKey *ecdsa.PrivateKey
	x5c                               []string
}

// options shape the generated certificates.
type options struct {
	noLeafOID, noIntermediateOID bool
	leafFrom, leafUntil          time.Time
	leafCurve                    elliptic.Curve
	ocspURL                      string
	name                         string
}

// Option changes how NewPKI builds the chain (broken variants for tests).
type Option func(*options)

// WithoutLeafOID omits the receipt-signing OID from the leaf.
func WithoutLeafOID() Option { return func(o *options) { o.noLeafOID = true } }

// WithoutIntermediateOID omits the WWDR OID from the intermediate.
func WithoutIntermediateOID() Option { return func(o *options) { o.noIntermediateOID = true } }

// WithLeafValidity sets the leaf's NotBefore and NotAfter (default
// 2020-01-01 to 2040-01-01).
func WithLeafValidity(notBefore, notAfter time.Time) Option {
	return func(o *options) { o.leafFrom, o.leafUntil = notBefore, notAfter }
}

// WithLeafCurve uses another curve for the leaf key (Apple's is P-256).
func WithLeafCurve(c elliptic.Curve) Option { return func(o *options) { o.leafCurve = c } }

// WithOCSP puts an OCSP responder URL in the leaf's and intermediate's
// Authority Information Access, as Apple's certificates have.
func WithOCSP(url string) Option { return func(o *options) { o.ocspURL = url } }

// WithName prefixes the certificates' common names (to tell PKIs apart).
func WithName(name string) Option { return func(o *options) { o.name = name } }

// New builds a PKI or reports why it could not.
func New(opts ...Option) (*PKI, error) {
	o := options{
		leafFrom:  time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		leafUntil: time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC),
		leafCurve: elliptic.P256(),
		name:      "Postback Test",
	}
	for _, f := range opts {
		f(&o)
	}
	p := &PKI{}
	var err error
	if p.RootKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		return nil, err
	}
	if p.IntermediateKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		return nil, err
	}
	if p.LeafKey, err = ecdsa.GenerateKey(o.leafCurve, rand.Reader); err != nil {
		return nil, err
	}
	caFrom := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	caUntil := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	root := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: o.name + " Root CA - G3", Organization: []string{"Postback"}},
		NotBefore:             caFrom,
		NotAfter:              caUntil,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if p.Root, err = create(root, root, &p.RootKey.PublicKey, p.RootKey); err != nil {
		return nil, err
	}
	inter := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{CommonName: o.name + " Worldwide Developer Relations CA", OrganizationalUnit: []string{"G6"}},
		NotBefore:             caFrom,
		NotAfter:              caUntil,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if !o.noIntermediateOID {
		inter.ExtraExtensions = append(inter.ExtraExtensions, pkix.Extension{Id: OIDIntermediate, Value: []byte{0x05, 0x00}})
	}
	if o.ocspURL != "" {
		inter.OCSPServer = []string{o.ocspURL}
	}
	if p.Intermediate, err = create(inter, p.Root, &p.IntermediateKey.PublicKey, p.RootKey); err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: o.name + " App Store Receipt Signing"},
		NotBefore:    o.leafFrom,
		NotAfter:     o.leafUntil,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if !o.noLeafOID {
		leaf.ExtraExtensions = append(leaf.ExtraExtensions, pkix.Extension{Id: OIDLeaf, Value: []byte{0x05, 0x00}})
	}
	if o.ocspURL != "" {
		leaf.OCSPServer = []string{o.ocspURL}
	}
	if p.Leaf, err = create(leaf, p.Intermediate, &p.LeafKey.PublicKey, p.IntermediateKey); err != nil {
		return nil, err
	}
	p.x5c = X5C(p.Leaf.Raw, p.Intermediate.Raw, p.Root.Raw)
	return p, nil
}

// NewPKI is New for tests: a failure ends the test through tb, or panics
// when tb is nil.
func NewPKI(tb TB, opts ...Option) *PKI {
	if tb != nil {
		tb.Helper()
	}
	p, err := New(opts...)
	if err != nil {
		if tb == nil {
			panic("appletest: " + err.Error())
		}
		tb.Fatalf("appletest: %v", err)
	}
	return p
}

func create(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("appletest: create %s: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// RootDER returns the root certificate (DER), to configure as a trusted root.
func (p *PKI) RootDER() []byte { return append([]byte(nil), p.Root.Raw...) }

// RootPEM returns the root certificate as PEM.
func (p *PKI) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Root.Raw})
}

// IntermediateDER returns the intermediate certificate (DER).
func (p *PKI) IntermediateDER() []byte { return append([]byte(nil), p.Intermediate.Raw...) }

// LeafDER returns the leaf certificate (DER).
func (p *PKI) LeafDER() []byte { return append([]byte(nil), p.Leaf.Raw...) }

// X5C returns the header chain [leaf, intermediate, root] as the App Store
// sends it: standard base64 with padding.
func (p *PKI) X5C() []string { return append([]string(nil), p.x5c...) }

// X5C encodes DER certificates as x5c entries.
func X5C(ders ...[]byte) []string {
	out := make([]string, len(ders))
	for i, d := range ders {
		out[i] = base64.StdEncoding.EncodeToString(d)
	}
	return out
}

// JWS describes a signature; the zero value signs like the App Store.
type JWS struct {
	// Alg is the header's alg (default ES256).
	Alg string
	// X5C replaces the header's chain (nil: the PKI's; empty: none).
	X5C []string
	// Key signs with another ECDSA key than the leaf's.
	Key *ecdsa.PrivateKey
	// Sign replaces the signature entirely (HS256, RS256, none variants).
	Sign func(signingInput []byte) []byte
	// Header adds parameters to the protected header (crit, kid, ...).
	Header map[string]any
}

// SignJWS signs payload as the App Store does: ES256 with the leaf key and
// the chain in x5c. payload may be a []byte or json.RawMessage (used as is)
// or any value to encode as JSON.
func (p *PKI) SignJWS(payload any) string { return p.Sign(payload, JWS{}) }

// Sign signs payload with the variations in j.
func (p *PKI) Sign(payload any, j JWS) string {
	body, err := encode(payload)
	if err != nil {
		panic("appletest: encode payload: " + err.Error())
	}
	alg := j.Alg
	if alg == "" {
		alg = "ES256"
	}
	x5c := p.x5c
	if j.X5C != nil {
		x5c = j.X5C
	}
	hdr := map[string]any{"alg": alg}
	for k, v := range j.Header {
		hdr[k] = v
	}
	if len(x5c) > 0 {
		hdr["x5c"] = x5c
	}
	hb, _ := json.Marshal(hdr)
	input := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(body)
	var sig []byte
	switch {
	case j.Sign != nil:
		sig = j.Sign([]byte(input))
	default:
		key := p.LeafKey
		if j.Key != nil {
			key = j.Key
		}
		sig, err = SignES256(key, []byte(input))
		if err != nil {
			panic("appletest: sign: " + err.Error())
		}
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// SignES256 returns the JWS ES256 signature (R||S, 32 bytes each) of input.
func SignES256(key *ecdsa.PrivateKey, input []byte) ([]byte, error) {
	h := sha256.Sum256(input)
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		return nil, err
	}
	size := (key.Curve.Params().BitSize + 7) / 8
	sig := make([]byte, 2*size)
	r.FillBytes(sig[:size])
	s.FillBytes(sig[size:])
	return sig, nil
}

func encode(payload any) ([]byte, error) {
	switch v := payload.(type) {
	case []byte:
		return v, nil
	case json.RawMessage:
		return v, nil
	case string:
		return []byte(v), nil
	}
	return json.Marshal(payload)
}

// OCSPHandler answers OCSP requests for the leaf (signed by the
// intermediate) and the intermediate (signed by the root) with status
// (ocsp.Good, ocsp.Revoked, ocsp.Unknown), valid from at-1m to at+1h. A
// request for another certificate gets 404.
func (p *PKI) OCSPHandler(status int, at time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, err := ocsp.ParseRequest(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var cert, issuer *x509.Certificate
		var key crypto.Signer
		switch {
		case req.SerialNumber.Cmp(p.Leaf.SerialNumber) == 0 && bytes.Equal(issuerKeyHash(req, p.Intermediate), req.IssuerKeyHash):
			cert, issuer, key = p.Leaf, p.Intermediate, p.IntermediateKey
		case req.SerialNumber.Cmp(p.Intermediate.SerialNumber) == 0 && bytes.Equal(issuerKeyHash(req, p.Root), req.IssuerKeyHash):
			cert, issuer, key = p.Intermediate, p.Root, p.RootKey
		default:
			http.NotFound(w, r)
			return
		}
		tmpl := ocsp.Response{
			Status:       status,
			SerialNumber: cert.SerialNumber,
			ThisUpdate:   at.Add(-time.Minute),
			NextUpdate:   at.Add(time.Hour),
		}
		if status == ocsp.Revoked {
			tmpl.RevokedAt = at.Add(-time.Hour)
		}
		resp, err := ocsp.CreateResponse(issuer, issuer, tmpl, key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		_, _ = w.Write(resp)
	})
}

// issuerKeyHash hashes the issuer's public key the way the request did.
func issuerKeyHash(req *ocsp.Request, issuer *x509.Certificate) []byte {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil
	}
	if !req.HashAlgorithm.Available() {
		return nil
	}
	h := req.HashAlgorithm.New()
	h.Write(spki.PublicKey.RightAlign())
	return h.Sum(nil)
}

// P8 returns a new App Store Connect-style API key: a P-256 key as PKCS #8
// PEM (the .p8 file format) and the key itself, for API client tests.
func P8() ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), key, nil
}
