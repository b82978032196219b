package webhooks

import (
	"bytes"
	"container/list"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/ocsp"

	"github.com/postback/postback/appstore"
	"github.com/postback/postback/certs"
	"github.com/postback/postback/config"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/store"
)

// Apple's certificate extension OIDs (Apple PKI): every App Store signing
// leaf carries the receipt-signing OID and its intermediate the Worldwide
// Developer Relations OID.
var (
	oidAppleLeaf         = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 11, 1}
	oidAppleIntermediate = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 2, 1}
)

// Apple rejection reasons. Each is a sentinel error of the verifier and a
// reason code in the HTTP error and the rejected-notifications metric.
var (
	ErrAppleMalformed         = errors.New("apple: malformed JWS")
	ErrAppleAlg               = errors.New("apple: JWS alg is not ES256")
	ErrAppleX5CLength         = errors.New("apple: x5c must hold exactly three certificates")
	ErrAppleCrit              = errors.New("apple: JWS header carries crit (RFC 7515 section 4.1.11), which this verifier does not process")
	ErrAppleCertificate       = errors.New("apple: x5c certificate does not parse")
	ErrAppleUntrustedChain    = errors.New("apple: certificate chain does not lead to a configured root")
	ErrAppleExpired           = errors.New("apple: certificate expired at the signing date")
	ErrAppleNotYetValid       = errors.New("apple: certificate not yet valid at the signing date")
	ErrAppleLeafOID           = errors.New("apple: signing certificate lacks Apple's receipt-signing OID")
	ErrAppleIntermediateOID   = errors.New("apple: intermediate certificate lacks Apple's WWDR OID")
	ErrAppleLeafKey           = errors.New("apple: signing certificate key is not ECDSA P-256")
	ErrAppleSignature         = errors.New("apple: JWS signature does not verify")
	ErrAppleRevoked           = errors.New("apple: OCSP does not report the certificate as good")
	ErrAppleOCSPUnavailable   = errors.New("apple: OCSP responder unreachable")
	ErrAppleUnknownApp        = errors.New("apple: bundleId is not a configured app")
	ErrAppleAppAppleID        = errors.New("apple: appAppleId does not match the configured app")
	ErrAppleEnvironment       = errors.New("apple: environment not accepted")
	ErrAppleNestedBundle      = errors.New("apple: nested JWS bundleId differs from the notification's")
	ErrAppleNestedEnvironment = errors.New("apple: nested JWS environment differs from the notification's")
	ErrAppleStale             = errors.New("apple: signedDate outside the dedupe window")
)

// Apple reason codes (Error.Code).
const (
	CodeAppleAlg               = "alg_not_es256"
	CodeAppleX5CLength         = "x5c_length"
	CodeAppleCrit              = "crit_header"
	CodeAppleCertificate       = "invalid_certificate"
	CodeAppleUntrustedChain    = "untrusted_chain"
	CodeAppleExpired           = "certificate_expired"
	CodeAppleNotYetValid       = "certificate_not_yet_valid"
	CodeAppleLeafOID           = "leaf_oid"
	CodeAppleIntermediateOID   = "intermediate_oid"
	CodeAppleLeafKey           = "leaf_key"
	CodeAppleRevoked           = "certificate_revoked"
	CodeAppleOCSPUnavailable   = "ocsp_unavailable"
	CodeAppleAppAppleID        = "app_apple_id_mismatch"
	CodeAppleNestedBundle      = "nested_bundle_mismatch"
	CodeAppleNestedEnvironment = "nested_environment_mismatch"
)

// appleCodes is the one table from verifier errors to HTTP answers: 400 for
// what is not a notification at all, 503 for what may pass later (OCSP
// network trouble: Apple retries), 401 for everything that failed
// verification.
var appleCodes = []struct {
	err    error
	status int
	code   string
}{
	{ErrAppleMalformed, http.StatusBadRequest, CodeMalformed},
	{ErrAppleOCSPUnavailable, http.StatusServiceUnavailable, CodeAppleOCSPUnavailable},
	{ErrAppleAlg, http.StatusUnauthorized, CodeAppleAlg},
	{ErrAppleX5CLength, http.StatusUnauthorized, CodeAppleX5CLength},
	{ErrAppleCrit, http.StatusUnauthorized, CodeAppleCrit},
	{ErrAppleCertificate, http.StatusUnauthorized, CodeAppleCertificate},
	{ErrAppleUntrustedChain, http.StatusUnauthorized, CodeAppleUntrustedChain},
	{ErrAppleExpired, http.StatusUnauthorized, CodeAppleExpired},
	{ErrAppleNotYetValid, http.StatusUnauthorized, CodeAppleNotYetValid},
	{ErrAppleLeafOID, http.StatusUnauthorized, CodeAppleLeafOID},
	{ErrAppleIntermediateOID, http.StatusUnauthorized, CodeAppleIntermediateOID},
	{ErrAppleLeafKey, http.StatusUnauthorized, CodeAppleLeafKey},
	{ErrAppleSignature, http.StatusUnauthorized, CodeSignature},
	{ErrAppleRevoked, http.StatusUnauthorized, CodeAppleRevoked},
	{ErrAppleUnknownApp, http.StatusUnauthorized, CodeUnknownApp},
	{ErrAppleAppAppleID, http.StatusUnauthorized, CodeAppleAppAppleID},
	{ErrAppleEnvironment, http.StatusUnauthorized, CodeEnvironment},
	{ErrAppleNestedBundle, http.StatusUnauthorized, CodeAppleNestedBundle},
	{ErrAppleNestedEnvironment, http.StatusUnauthorized, CodeAppleNestedEnvironment},
	{ErrAppleStale, http.StatusUnauthorized, CodeStale},
}

// AppleError turns a verifier error into the HTTP error the client sees.
func AppleError(err error) *Error {
	for _, c := range appleCodes {
		if errors.Is(err, c.err) {
			return Wrap(c.status, c.code, c.err.Error(), err)
		}
	}
	return Wrap(http.StatusUnauthorized, CodeUnauthorized, "notification failed verification", err)
}

// appleEnvironments maps each environment value Apple sends, compared
// exactly as Apple's SignedDataVerifier does, to its name in
// sources.apple.environments. Any other spelling ("PRODUCTION",
// "production") is refused: a case-insensitive check would accept it while
// the appAppleId check and the canonical environment compare exactly, so
// such an envelope would skip the one and be stored as sandbox.
var appleEnvironments = map[string]string{
	"Production":   "production",
	"Sandbox":      "sandbox",
	"Xcode":        "xcode",
	"LocalTesting": "localtesting",
}

// AppleVerifierConfig configures an AppleVerifier.
type AppleVerifierConfig struct {
	// Roots are the trusted root certificates (DER). Required.
	Roots [][]byte
	// Apps are the accepted apps. An app whose notifications may come from
	// Production needs its AppAppleID.
	Apps []config.AppleApp
	// Environments are the accepted environments: production, sandbox,
	// xcode, localtesting.
	Environments []string
	// Window is how old a notification's signedDate may be: the inbox's
	// dedupe window, so an older replay can never be counted twice.
	Window time.Duration
	// Online checks certificates at the current time with OCSP instead of
	// at the payload's signedDate.
	Online bool
	// HTTPClient makes OCSP requests; default 5 s timeout.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// CacheSize bounds the verified-chain cache; default 64, negative
	// disables it.
	CacheSize int
}

// AppleVerifier verifies App Store signed data the way Apple's
// app-store-server-library SignedDataVerifier does, or more strictly:
//
//   - compact JWS whose header alg is exactly ES256 and whose x5c holds
//     exactly three certificates; a header with crit is refused (stricter
//     than Apple's library, which ignores it);
//   - the environment is one of the four values Apple sends, compared
//     exactly (Production, Sandbox, Xcode, LocalTesting), as Apple's
//     library does;
//   - the chain is built from the leaf and the intermediate only (x5c[2] is
//     ignored) and must end at a configured root; the leaf must carry OID
//     1.2.840.113635.100.6.11.1, the intermediate OID
//     1.2.840.113635.100.6.2.1, and the leaf key must be P-256;
//   - certificates must be valid at the payload's signedDate (so leaf
//     rotation and Apple's multi-day retries keep working), or, with
//     online checks, now with OCSP (an unreachable responder is retryable);
//   - the signature verifies with the leaf key.
//
// Verified chains are cached, bounded in size, with the validity window
// they hold in, keyed by the exact header bytes of the JWS they came in and
// by the SHA-256 of the leaf and intermediate bytes, so a notification
// normally costs only its signature checks.
type AppleVerifier struct {
	cores    coreGate
	bufs     sync.Pool // *[]byte scratch for notification tokens and payloads
	roots    *x509.CertPool
	apps     map[string]config.AppleApp
	envs     map[string]bool
	window   time.Duration
	online   bool
	client   *http.Client
	now      func() time.Time
	cache    *chainCache
	maxAhead time.Duration
}

// ocspTTL is how long a good OCSP answer is reused (Apple's libraries: 15m).
const ocspTTL = 15 * time.Minute

// NewAppleVerifier validates cfg and builds a verifier. It does no I/O.
func NewAppleVerifier(cfg AppleVerifierConfig) (*AppleVerifier, error) {
	if len(cfg.Roots) == 0 {
		return nil, errors.New("apple: at least one root certificate is required")
	}
	v := &AppleVerifier{
		roots: x509.NewCertPool(), apps: map[string]config.AppleApp{}, envs: map[string]bool{},
		window: cfg.Window, online: cfg.Online, client: cfg.HTTPClient, now: cfg.Now, maxAhead: 5 * time.Minute,
	}
	for i, der := range cfg.Roots {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("apple: root certificate %d does not parse: %w", i, err)
		}
		v.roots.AddCert(c)
	}
	for _, e := range cfg.Environments {
		v.envs[strings.ToLower(e)] = true
	}
	for _, a := range cfg.Apps {
		if a.BundleID == "" {
			return nil, errors.New("apple: an app without bundle_id")
		}
		if v.envs["production"] && a.AppAppleID == 0 {
			return nil, fmt.Errorf("apple: app %s needs app_apple_id (App Store Connect > App Information > Apple ID) while production is accepted", a.BundleID)
		}
		v.apps[a.BundleID] = a
	}
	if v.window <= 0 {
		return nil, errors.New("apple: the dedupe window must be positive")
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: 5 * time.Second}
	}
	if v.now == nil {
		v.now = time.Now
	}
	size := cfg.CacheSize
	if size == 0 {
		size = 64
	}
	if size > 0 {
		v.cache = &chainCache{max: size, ll: list.New(), m: map[string]*list.Element{}}
	}
	return v, nil
}

// jwsHeader is the part of a JWS header the verifier reads.
type jwsHeader struct {
	Alg string   `json:"alg"`
	X5C []string `json:"x5c"`
	// Crit lists header extensions the recipient must understand (RFC
	// 7515 section 4.1.11). Apple never sends it and this verifier
	// understands no extension, so any crit, even empty or null, is
	// refused. Apple's SignedDataVerifier ignores crit: this is stricter.
	Crit json.RawMessage `json:"crit"`
}

// JWS segments and x5c certificates must be canonical base64: the lenient
// decoders accept several spellings (spare trailing bits) of the same bytes.
var (
	jwsBase64 = base64.RawURLEncoding.Strict()
	x5cBase64 = base64.StdEncoding.Strict()
)

// jwsDates are the payload fields that choose the certificate check date.
type jwsDates struct {
	SignedDate          mapping.AppleMillis `json:"signedDate"`
	ReceiptCreationDate mapping.AppleMillis `json:"receiptCreationDate"`
}

// scratch returns a pooled buffer, empty, of any capacity.
func (v *AppleVerifier) scratch() *[]byte {
	if b, ok := v.bufs.Get().(*[]byte); ok {
		return b
	}
	return new([]byte)
}

// release pools b again unless it grew past 64 KiB (an App Store
// notification is about 10 KiB; a rare big one is left to the collector).
func (v *AppleVerifier) release(b *[]byte) {
	if cap(*b) <= 64<<10 {
		*b = (*b)[:0]
		v.bufs.Put(b)
	}
}

// jsonInto decodes a payload into dst.
func jsonInto(dst any) func([]byte) error {
	return func(b []byte) error { return json.Unmarshal(b, dst) }
}

// VerifyJWS verifies one App Store compact JWS (a signedPayload, a signed
// transaction, renewal info or app transaction) and returns its payload.
func (v *AppleVerifier) VerifyJWS(ctx context.Context, token string) ([]byte, error) {
	v.cores.enter()
	defer v.cores.leave()
	var d jwsDates
	return v.verify(ctx, []byte(token), nil, nil, "", jsonInto(&d), func() (mapping.AppleMillis, mapping.AppleMillis) { return d.SignedDate, d.ReceiptCreationDate })
}

// verify verifies token, decoding each segment once: the header only when
// its exact bytes are not in the cache, the payload (into scratch when it
// is large enough) with decode (which fills the caller's typed value), the
// signature. dates reads the signedDate and receiptCreationDate decode
// found, to choose the certificate check date. It returns the payload
// bytes.
//
// With later, the signature check itself (and caching the header under
// which it passes) is put off: its digest and signature go to later, under
// label, and the caller runs them with checkAll (see pendingSigs).
func (v *AppleVerifier) verify(ctx context.Context, token, scratch []byte, later *pendingSigs, label string, decode func(payload []byte) error, dates func() (signed, receipt mapping.AppleMillis)) ([]byte, error) {
	// A nested JWS normally carries the notification's own header: found
	// by comparing its first bytes, it needs no search for its first dot
	// and no cache look-up.
	var hit chainEntry
	var key string
	var cached bool
	first := -1
	if n := len(later.header()); n > 0 && len(token) > n && token[n] == '.' && string(token[:n]) == later.header() {
		first, key, hit, cached = n, later.known, later.knownEntry, true
	} else {
		first = bytes.IndexByte(token, '.')
	}
	second := -1
	if first > 0 {
		second = bytes.IndexByte(token[first+1:], '.')
	}
	if second < 0 || bytes.IndexByte(token[first+1+second+1:], '.') >= 0 {
		return nil, fmt.Errorf("%w: not three dot-separated parts", ErrAppleMalformed)
	}
	last := first + 1 + second
	header, body, sigSeg := token[:first], token[first+1:last], token[last+1:]
	// Every JWS signed with one chain carries the same header bytes: a
	// header already verified (alg ES256, no crit, three certificates,
	// chain to a root, no line break) is found in the cache by its exact
	// bytes, without decoding its ~3 KB of certificates again. Only entries
	// put under a header hold its signing prefix; a chain entry is never
	// taken for header bytes.
	if !cached {
		key, hit, cached = v.cache.lookup(header)
		cached = cached && hit.prefix != nil
	}
	var x5c []string
	if !cached {
		if hasLineBreak(token) {
			return nil, errAppleLineBreak
		}
		var err error
		if x5c, err = parseJWSHeader(header); err != nil {
			return nil, err
		}
	}
	w := jwsWorks.Get().(*jwsWork)
	defer jwsWorks.Put(w)
	payload := scratch
	if l := jwsBase64.DecodedLen(len(body)); cap(payload) >= l {
		payload = payload[:l]
	} else {
		payload = make([]byte, l)
	}
	var sig []byte
	if l := jwsBase64.DecodedLen(len(sigSeg)); l <= len(w.sig) {
		sig = w.sig[:l]
	} else {
		sig = make([]byte, l)
	}
	// The segments of a well-formed JWS hold base64url characters only and
	// decode on the fast path. Anything else is decoded again by the strict
	// decoder for its error, after the check for line breaks (which the
	// strict decoder skips) that a cached header did not need.
	n, bodyOK := decodeJWSFast(payload, body)
	sn, sigOK := 0, false
	if bodyOK {
		sn, sigOK = decodeJWSFast(sig, sigSeg)
	}
	if !sigOK && cached && hasLineBreak(token) {
		return nil, errAppleLineBreak
	}
	if !bodyOK {
		var err error
		if n, err = jwsBase64.Decode(payload, body); err != nil {
			return nil, fmt.Errorf("%w: payload base64: %v", ErrAppleMalformed, err)
		}
	}
	payload = payload[:n]
	if err := decode(payload); err != nil {
		return nil, fmt.Errorf("%w: payload JSON: %v", ErrAppleMalformed, err)
	}
	if !sigOK {
		var err error
		if sn, err = jwsBase64.Decode(sig, sigSeg); err != nil {
			return nil, fmt.Errorf("%w: signature base64: %v", ErrAppleMalformed, err)
		}
	}
	sig = sig[:sn]
	at := v.now()
	if signed, receipt := dates(); !v.online {
		switch {
		case signed != 0:
			at = signed.Time()
		case receipt != 0:
			at = receipt.Time()
		}
	}
	var e chainEntry
	var err error
	if cached {
		if e, err = v.cachedChain(ctx, header, hit, at); err == nil && later != nil {
			later.known, later.knownEntry = key, e
		}
	} else {
		e, err = v.chain(ctx, x5c, at)
	}
	if err != nil {
		return nil, err
	}
	digest := w.digest(e.prefix, header, body)
	// A header is cached once a JWS under it has verified, and only at a
	// size Apple's headers have (about 5 KB): the key is the header itself.
	var cacheKey string
	if !cached && v.cache != nil && len(header) <= maxCachedHeader {
		if e.prefix = signingPrefix(header); e.prefix != nil {
			cacheKey = string(header)
		}
	}
	if later != nil {
		later.add(label, e.pub, digest, sig, cacheKey, e)
		return payload, nil
	}
	if err := verifyES256(e.pub, digest, sig, &w.der); err != nil {
		return nil, err
	}
	if cacheKey != "" {
		v.cache.put(cacheKey, e)
	}
	return payload, nil
}

// pendingSigs are the signature checks of one notification's JWS, put off
// so that its three P-256 verifications run one after the other at the
// end (the decoding between them is done, and each runs with what the
// one before left in the caches), in the order the JWS were verified.
// Every error found meanwhile is returned only after checkAll has found
// no bad signature before it, so the error is the one checking each JWS
// in turn would give: a bad signature wins over anything read from the
// payload it signs, or from a later JWS.
type pendingSigs struct {
	n     int
	items [1 + len(nestedFields)]pendingSig
	// known is the last cached header a JWS of the notification was found
	// under (the notification's own, normally shared by the nested JWS)
	// and knownEntry its entry, as cachedChain last returned it.
	known      string
	knownEntry chainEntry
}

// header is known, or "" without ps.
func (ps *pendingSigs) header() string {
	if ps == nil {
		return ""
	}
	return ps.known
}

// pendingSig is one put-off check; it holds no pointer into the
// notification's buffers, which are reused before it runs.
type pendingSig struct {
	// label names the nested field ("" for the notification itself) and
	// prefixes the error.
	label  string
	pub    *ecdsa.PublicKey
	digest [sha256.Size]byte
	sigLen int
	sigBuf [96]byte
	long   []byte // a signature longer than sigBuf (refused: not 64 bytes)
	// cacheKey, when not empty, is a header cached with entry once the
	// signature under it verifies.
	cacheKey string
	entry    chainEntry
}

func (ps *pendingSigs) add(label string, pub *ecdsa.PublicKey, digest, sig []byte, cacheKey string, e chainEntry) {
	s := &ps.items[ps.n]
	ps.n++
	s.label, s.pub, s.cacheKey, s.entry = label, pub, cacheKey, e
	copy(s.digest[:], digest)
	s.long = nil
	if s.sigLen = len(sig); s.sigLen > len(s.sigBuf) {
		s.long = bytes.Clone(sig)
	} else {
		copy(s.sigBuf[:], sig)
	}
}

// checkAll runs the put-off checks in order, each once, and returns the
// first failure. With parallel, the transaction's and the renewal info's
// run side by side when a core is idle (see coreGate); the error is the
// same either way.
func (v *AppleVerifier) checkAll(ps *pendingSigs, parallel bool) error {
	items := ps.items[:ps.n]
	ps.n = 0
	for i := 0; i < len(items); i++ {
		if parallel && i+1 < len(items) && items[i].label == nestedFields[0].signedKey && items[i+1].label == nestedFields[1].signedKey && v.cores.tryExtra() {
			// The helper reads a copy on the heap, not this call's stack.
			h := new([2]pendingSig)
			h[0], h[1] = items[i], items[i+1]
			if err := v.cores.pairTaken(func() error { return v.checkPending(&h[0]) }, func() error { return v.checkPending(&h[1]) }); err != nil {
				return err
			}
			i++
			continue
		}
		if err := v.checkPending(&items[i]); err != nil {
			return err
		}
	}
	return nil
}

// checkPending runs one put-off check, and caches its header once it
// passes.
func (v *AppleVerifier) checkPending(s *pendingSig) error {
	w := jwsWorks.Get().(*jwsWork)
	defer jwsWorks.Put(w)
	sig := s.long
	if sig == nil {
		sig = w.sig[:copy(w.sig[:], s.sigBuf[:s.sigLen])]
	}
	copy(w.sum[:], s.digest[:])
	if err := verifyES256(s.pub, w.sum[:], sig, &w.der); err != nil {
		if s.label != "" {
			return fmt.Errorf("%s: %w", s.label, err)
		}
		return err
	}
	if s.cacheKey != "" {
		v.cache.put(s.cacheKey, s.entry)
	}
	return nil
}

// errAppleLineBreak refuses a JWS with CR or LF in it: strict base64
// decoding would skip them, and a JWS never contains them.
var errAppleLineBreak = fmt.Errorf("%w: line break in the JWS", ErrAppleMalformed)

func hasLineBreak(token []byte) bool {
	return bytes.IndexByte(token, '\n') >= 0 || bytes.IndexByte(token, '\r') >= 0
}

// parseJWSHeader decodes and checks a header segment that is not cached:
// alg exactly ES256, no crit, three certificates. It returns x5c.
func parseJWSHeader(header []byte) ([]string, error) {
	var h jwsHeader
	hb := make([]byte, jwsBase64.DecodedLen(len(header)))
	n, err := jwsBase64.Decode(hb, header)
	if err != nil {
		return nil, fmt.Errorf("%w: header base64: %v", ErrAppleMalformed, err)
	}
	if err := json.Unmarshal(hb[:n], &h); err != nil {
		return nil, fmt.Errorf("%w: header JSON: %v", ErrAppleMalformed, err)
	}
	if h.Alg != "ES256" {
		return nil, fmt.Errorf("%w: %q", ErrAppleAlg, h.Alg)
	}
	if h.Crit != nil {
		return nil, fmt.Errorf("%w: %s", ErrAppleCrit, h.Crit)
	}
	if len(h.X5C) != 3 {
		return nil, fmt.Errorf("%w: got %d", ErrAppleX5CLength, len(h.X5C))
	}
	return h.X5C, nil
}

// maxCachedHeader bounds the header bytes one cache entry keeps.
const maxCachedHeader = 16 << 10

// jwsWork is the scratch of one signature check, pooled so that a
// verification allocates none of it: the hash, the decoded signature, the
// digest and the DER signature.
type jwsWork struct {
	h      hash.Hash
	state  encoding.BinaryUnmarshaler // h, to resume a signing prefix
	sig    [96]byte
	sum    [sha256.Size]byte
	der    es256DER
	dotBuf [1]byte
}

var jwsWorks = sync.Pool{New: func() any {
	w := &jwsWork{h: sha256.New(), dotBuf: [1]byte{'.'}}
	w.state, _ = w.h.(encoding.BinaryUnmarshaler)
	return w
}}

// signingPrefix is the SHA-256 state (binary-marshalled) after the first
// part of every signing input under this header, "header.": a cached
// header is hashed once, and each JWS then hashes only its payload
// segment. It is nil if the hash cannot save its state.
func signingPrefix(header []byte) []byte {
	h := sha256.New()
	h.Write(header)
	h.Write([]byte{'.'})
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return nil
	}
	state, err := m.MarshalBinary()
	if err != nil {
		return nil
	}
	return state
}

// digest is the SHA-256 of the signing input "header.payload", continued
// from prefix when there is one. It is valid until w is used again.
func (w *jwsWork) digest(prefix, header, payload []byte) []byte {
	if prefix == nil || w.state == nil || w.state.UnmarshalBinary(prefix) != nil {
		w.h.Reset()
		w.h.Write(header)
		w.h.Write(w.dotBuf[:])
	}
	w.h.Write(payload)
	return w.h.Sum(w.sum[:0])
}

// es256DER holds the DER encoding of an ES256 signature: a SEQUENCE of two
// INTEGERs of at most 33 bytes.
type es256DER [2 + 2*(2+1+32)]byte

// verifyES256 checks a JWS ES256 signature, R || S of 32 bytes each
// (RFC 7518 section 3.4), over digest. R and S are re-encoded, in der, as
// the DER SEQUENCE of two INTEGERs that crypto/ecdsa.VerifyASN1 reads (what
// ecdsa.Verify does too, through big.Int and a builder).
func verifyES256(pub *ecdsa.PublicKey, digest, sig []byte, der *es256DER) error {
	if len(sig) != 64 {
		return fmt.Errorf("%w: %d signature bytes, want 64", ErrAppleSignature, len(sig))
	}
	r, s := sig[:32], sig[32:]
	if allZero(r) || allZero(s) {
		return fmt.Errorf("%w: zero R or S", ErrAppleSignature)
	}
	b := append(der[:0], 0x30, 0)
	b = appendDERInt(b, r)
	b = appendDERInt(b, s)
	b[1] = byte(len(b) - 2)
	if !ecdsa.VerifyASN1(pub, digest, b) {
		return fmt.Errorf("%w: ECDSA P-256 verification failed", ErrAppleSignature)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// appendDERInt appends the DER INTEGER of the positive big-endian b (at
// most 32 bytes, not zero): leading zeros dropped, a zero byte added when
// the top bit is set.
func appendDERInt(der, b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	pad := b[0]&0x80 != 0
	n := len(b)
	if pad {
		n++
	}
	der = append(der, 0x02, byte(n))
	if pad {
		der = append(der, 0)
	}
	return append(der, b...)
}

// cachedChain checks a cached chain's validity window at time at (and,
// online, renews a stale OCSP answer) and returns the entry to use.
func (v *AppleVerifier) cachedChain(ctx context.Context, key []byte, e chainEntry, at time.Time) (chainEntry, error) {
	if err := e.validAt(at); err != nil {
		return chainEntry{}, err
	}
	if v.online && v.now().Sub(e.ocspAt) > ocspTTL {
		if err := v.revocation(ctx, e.leaf, e.inter, e.root); err != nil {
			return chainEntry{}, err
		}
		e.ocspAt = v.now()
		v.cache.put(string(key), e)
	}
	return e, nil
}

// chain verifies x5c[0] and x5c[1] against the roots at time at and returns
// the verified chain, using the cache (keyed by the SHA-256 of the leaf and
// intermediate bytes) when the same chain was verified before.
func (v *AppleVerifier) chain(ctx context.Context, x5c []string, at time.Time) (chainEntry, error) {
	leafDER, err1 := x5cBase64.DecodeString(x5c[0])
	interDER, err2 := x5cBase64.DecodeString(x5c[1])
	if err := errors.Join(err1, err2); err != nil {
		return chainEntry{}, fmt.Errorf("%w: base64: %v", ErrAppleCertificate, err)
	}
	key := chainKey(leafDER, interDER)
	if e, ok := v.cache.get(key); ok {
		return v.cachedChain(ctx, key, e, at)
	}
	e, err := v.verifyChain(ctx, leafDER, interDER, at)
	if err != nil {
		return chainEntry{}, err
	}
	if v.cache != nil {
		v.cache.put(string(key), e)
	}
	return e, nil
}

// verifyChain does the full check of a leaf and intermediate (the cold
// path): parse, dates, path to a root, Apple's OIDs, P-256 key, OCSP.
func (v *AppleVerifier) verifyChain(ctx context.Context, leafDER, interDER []byte, at time.Time) (chainEntry, error) {
	fail := func(err error) (chainEntry, error) { return chainEntry{}, err }
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return fail(fmt.Errorf("%w: leaf: %v", ErrAppleCertificate, err))
	}
	inter, err := x509.ParseCertificate(interDER)
	if err != nil {
		return fail(fmt.Errorf("%w: intermediate: %v", ErrAppleCertificate, err))
	}
	for _, c := range []*x509.Certificate{leaf, inter} {
		if at.Before(c.NotBefore) {
			return fail(fmt.Errorf("%w: %s valid from %s, checked at %s", ErrAppleNotYetValid, c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)))
		}
		if at.After(c.NotAfter) {
			return fail(fmt.Errorf("%w: %s valid until %s, checked at %s", ErrAppleExpired, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)))
		}
	}
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: v.roots, Intermediates: inters, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrAppleUntrustedChain, err))
	}
	var root *x509.Certificate
	for _, ch := range chains {
		if len(ch) == 3 && ch[1].Equal(inter) {
			root = ch[2]
			break
		}
	}
	if root == nil {
		return fail(fmt.Errorf("%w: no chain leaf -> intermediate -> root", ErrAppleUntrustedChain))
	}
	if !hasExtension(leaf, oidAppleLeaf) {
		return fail(ErrAppleLeafOID)
	}
	if !hasExtension(inter, oidAppleIntermediate) {
		return fail(ErrAppleIntermediateOID)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return fail(ErrAppleLeafKey)
	}
	e := chainEntry{pub: pub, leaf: leaf, inter: inter, root: root}
	e.from, e.until = leaf.NotBefore, leaf.NotAfter
	for _, c := range []*x509.Certificate{inter, root} {
		if c.NotBefore.After(e.from) {
			e.from = c.NotBefore
		}
		if c.NotAfter.Before(e.until) {
			e.until = c.NotAfter
		}
	}
	if v.online {
		if err := v.revocation(ctx, leaf, inter, root); err != nil {
			return fail(err)
		}
		e.ocspAt = v.now()
	}
	return e, nil
}

func hasExtension(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true
		}
	}
	return false
}

// chainKey is the cache key of a leaf and intermediate: "chain:" and the
// SHA-256 of the length-prefixed leaf and the intermediate. Header keys
// are base64url and never contain ':'.
func chainKey(leaf, inter []byte) []byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(leaf)))
	h.Write(n[:])
	h.Write(leaf)
	h.Write(inter)
	return h.Sum([]byte("chain:"))
}

// revocation asks OCSP about the leaf (issued by the intermediate) and the
// intermediate (issued by the root).
func (v *AppleVerifier) revocation(ctx context.Context, leaf, inter, root *x509.Certificate) error {
	if err := v.ocspCheck(ctx, leaf, inter); err != nil {
		return err
	}
	return v.ocspCheck(ctx, inter, root)
}

// ocspCheck performs one OCSP request. Network failures and non-200
// answers are ErrAppleOCSPUnavailable (retryable); anything else that is
// not a fresh, well-signed "good" is ErrAppleRevoked.
func (v *AppleVerifier) ocspCheck(ctx context.Context, cert, issuer *x509.Certificate) error {
	if len(cert.OCSPServer) == 0 {
		return fmt.Errorf("%w: %s names no OCSP responder", ErrAppleRevoked, cert.Subject.CommonName)
	}
	req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return fmt.Errorf("%w: build request: %v", ErrAppleRevoked, err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, cert.OCSPServer[0], bytes.NewReader(req))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAppleRevoked, err)
	}
	hr.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := v.client.Do(hr)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAppleOCSPUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAppleOCSPUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: HTTP %d", ErrAppleOCSPUnavailable, resp.StatusCode)
	}
	r, err := ocsp.ParseResponseForCert(body, cert, issuer)
	if err != nil {
		var re ocsp.ResponseError
		if errors.As(err, &re) && (re.Status == ocsp.TryLater || re.Status == ocsp.InternalError) {
			return fmt.Errorf("%w: %v", ErrAppleOCSPUnavailable, err)
		}
		return fmt.Errorf("%w: %v", ErrAppleRevoked, err)
	}
	now := v.now()
	const skew = time.Minute
	switch {
	case r.Status != ocsp.Good:
		return fmt.Errorf("%w: %s status %d", ErrAppleRevoked, cert.Subject.CommonName, r.Status)
	case r.ThisUpdate.After(now.Add(skew)):
		return fmt.Errorf("%w: response from the future", ErrAppleRevoked)
	case !r.NextUpdate.IsZero() && r.NextUpdate.Before(now.Add(-skew)):
		return fmt.Errorf("%w: response expired", ErrAppleRevoked)
	}
	return nil
}

// chainEntry is one verified chain: the leaf key and the window in which
// every certificate of the chain is valid.
type chainEntry struct {
	pub               *ecdsa.PublicKey
	leaf, inter, root *x509.Certificate
	from, until       time.Time
	ocspAt            time.Time
	// prefix, in entries keyed by a JWS header, is the SHA-256 state after
	// "header." (see signingPrefix), never written once cached; entries
	// keyed by chainKey have none.
	prefix []byte
}

func (e *chainEntry) validAt(at time.Time) error {
	if at.Before(e.from) {
		return fmt.Errorf("%w: chain valid from %s, checked at %s", ErrAppleNotYetValid, e.from.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	if at.After(e.until) {
		return fmt.Errorf("%w: chain valid until %s, checked at %s", ErrAppleExpired, e.until.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	return nil
}

// chainCache is a bounded LRU of verified chains under two kinds of key:
// the exact header segment of a JWS (its alg, crit and x5c were checked
// when it was added) and chainKey of a leaf and intermediate. A nil
// *chainCache is an empty, disabled cache.
type chainCache struct {
	mu  sync.Mutex
	max int
	ll  *list.List
	m   map[string]*list.Element
}

type cacheItem struct {
	key string
	e   chainEntry
}

func (c *chainCache) get(k []byte) (chainEntry, bool) {
	_, e, ok := c.lookup(k)
	return e, ok
}

// lookup is get that also returns the key as the cache holds it.
func (c *chainCache) lookup(k []byte) (string, chainEntry, bool) {
	if c == nil {
		return "", chainEntry{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[string(k)]
	if !ok {
		return "", chainEntry{}, false
	}
	c.ll.MoveToFront(el)
	item := el.Value.(*cacheItem)
	return item.key, item.e, true
}

func (c *chainCache) put(k string, e chainEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		el.Value.(*cacheItem).e = e
		c.ll.MoveToFront(el)
		return
	}
	c.m[k] = c.ll.PushFront(&cacheItem{key: k, e: e})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*cacheItem).key)
	}
}

// Len reports how many cache entries (headers and chains) are held
// (tests, metrics).
func (v *AppleVerifier) Len() int {
	if v.cache == nil {
		return 0
	}
	v.cache.mu.Lock()
	defer v.cache.mu.Unlock()
	return v.cache.ll.Len()
}

// AppleVerified is a verified notification.
type AppleVerified struct {
	// Payload is the typed notification with the nested transaction and
	// renewal info verified and decoded.
	Payload mapping.AppleNotification
	// Body is the payload JSON with every nested JWS replaced by its
	// verified, decoded payload (transactionInfo, renewalInfo,
	// appTransactionInfo); fields unknown to Payload are kept.
	Body []byte
	// BundleID is the app; Environment the canonical environment.
	BundleID    string
	Environment string
}

// VerifyNotification verifies a signedPayload and everything nested in it,
// then applies the semantic checks: configured bundleId, accepted
// environment, appAppleId in Production, nested bundleId and environment
// equal to the notification's, and signedDate within the dedupe window.
//
// The signatures are checked last, one after the other (see
// pendingSigs); those of the signedTransactionInfo and signedRenewalInfo
// side by side when a core is idle (see coreGate). The result and the
// error are the same as checking each JWS in turn.
func (v *AppleVerifier) VerifyNotification(ctx context.Context, signedPayload string) (*AppleVerified, error) {
	v.cores.enter()
	defer v.cores.leave()
	out := &AppleVerified{}
	p := &out.Payload
	var nested [len(nestedFields)]nestedJWS
	var later pendingSigs
	// The token and its decoded payload are scratch: the nested JWS are
	// verified from the payload and the body is built anew, so neither is
	// kept beyond this call and both buffers go back to the pool.
	token, scratch := v.scratch(), v.scratch()
	defer v.release(token)
	defer v.release(scratch)
	*token = append(*token, signedPayload...)
	raw, err := v.verify(ctx, *token, *scratch, &later, "", func(b []byte) error { return decodeNotification(b, p, &nested) },
		func() (mapping.AppleMillis, mapping.AppleMillis) { return p.SignedDate, 0 })
	if cap(raw) > cap(*scratch) {
		*scratch = raw[:0]
	}
	if err != nil {
		return nil, err
	}
	// fail returns err unless a put-off signature check fails first.
	fail := func(err error) (*AppleVerified, error) {
		if serr := v.checkAll(&later, false); serr != nil {
			return nil, serr
		}
		return nil, err
	}
	if p.NotificationUUID == "" || p.NotificationType == "" {
		return fail(fmt.Errorf("%w: notification without notificationUUID or notificationType", ErrAppleMalformed))
	}
	out.BundleID = p.BundleID()
	app, ok := v.apps[out.BundleID]
	if !ok {
		return fail(fmt.Errorf("%w: %q", ErrAppleUnknownApp, out.BundleID))
	}
	appleEnv := p.AppleEnvironment()
	if name, ok := appleEnvironments[appleEnv]; !ok || !v.envs[name] {
		return fail(fmt.Errorf("%w: %q", ErrAppleEnvironment, appleEnv))
	}
	if appleEnv == "Production" && p.AppAppleID() != app.AppAppleID {
		return fail(fmt.Errorf("%w: got %d", ErrAppleAppAppleID, p.AppAppleID()))
	}
	now := v.now()
	switch signed := p.SignedDate.Time(); {
	case signed.IsZero():
		return fail(fmt.Errorf("%w: no signedDate", ErrAppleStale))
	case now.Sub(signed) > v.window:
		return fail(fmt.Errorf("%w: signed %s, older than %s", ErrAppleStale, signed.Format(time.RFC3339), v.window))
	case signed.Sub(now) > v.maxAhead:
		return fail(fmt.Errorf("%w: signed %s, in the future", ErrAppleStale, signed.Format(time.RFC3339)))
	}
	out.Environment = mapping.AppleCanonicalEnvironment(appleEnv)
	// The stored body is the payload with each nested JWS replaced by its
	// verified, decoded payload; every other byte is kept as Apple sent it.
	txn, ren, appTxn := &nested[0], &nested[1], &nested[2]
	// The token is decoded and hashed and no longer read: its buffer,
	// larger than both nested JWS together, takes their decoded payloads
	// side by side (decodedBody copies them out before it goes back to the
	// pool).
	buf := (*token)[:0]
	if txn.jws != nil {
		t, b, err := v.verifyTransaction(ctx, txn.jws, buf[:0:len(txn.jws)], &later, out.BundleID, appleEnv)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", nestedFields[0].signedKey, err))
		}
		p.Data.TransactionInfo, txn.payload = t, b
	}
	if ren.jws != nil {
		renewal := new(mapping.AppleRenewalInfo)
		renScratch := buf[len(txn.jws):len(txn.jws):min(cap(buf), len(txn.jws)+len(ren.jws))]
		b, err := v.verify(ctx, ren.jws, renScratch, &later, nestedFields[1].signedKey, func(b []byte) error { return decodeJSON(appleRenewalPlan, b, renewal) }, func() (mapping.AppleMillis, mapping.AppleMillis) { return renewal.SignedDate, 0 })
		if err != nil {
			return fail(fmt.Errorf("%s: %w", nestedFields[1].signedKey, err))
		}
		if renewal.Environment != appleEnv {
			return fail(fmt.Errorf("%s: %w: %q", nestedFields[1].signedKey, ErrAppleNestedEnvironment, renewal.Environment))
		}
		p.Data.RenewalInfo, ren.payload = renewal, b
	}
	if appTxn.jws != nil {
		var at struct {
			BundleID            string              `json:"bundleId"`
			ReceiptType         string              `json:"receiptType"`
			SignedDate          mapping.AppleMillis `json:"signedDate"`
			ReceiptCreationDate mapping.AppleMillis `json:"receiptCreationDate"`
		}
		label := nestedFields[2].signedKey
		b, err := v.verify(ctx, appTxn.jws, nil, &later, label, jsonInto(&at), func() (mapping.AppleMillis, mapping.AppleMillis) { return at.SignedDate, at.ReceiptCreationDate })
		if err != nil {
			return fail(fmt.Errorf("%s: %w", label, err))
		}
		if at.BundleID != out.BundleID {
			return fail(fmt.Errorf("%s: %w", label, ErrAppleNestedBundle))
		}
		if at.ReceiptType != appleEnv {
			return fail(fmt.Errorf("%s: %w: %q", label, ErrAppleNestedEnvironment, at.ReceiptType))
		}
		p.AppData.AppTransactionInfo, appTxn.payload = b, b
	}
	if err := v.checkAll(&later, true); err != nil {
		return nil, err
	}
	if out.Body, err = decodedBody(raw, nested[:]); err != nil {
		return nil, err
	}
	return out, nil
}

// nestedField is one place a notification carries a nested JWS, and the
// key its decoded payload takes in the stored body.
type nestedField struct {
	object, signedKey, decodedKey string
	// pattern is `"signedKey":"`, how the key and the start of its value
	// read in compact JSON.
	pattern []byte
	// placeholder (a JSON string body) stands for the JWS while the rest of
	// the payload is decoded; placeholderValue is what it decodes to.
	placeholder, placeholderValue string
}

// nestedFields are the nested JWS of a notification, in the order they are
// verified. The placeholders are runs of \u0000: NUL can only be spelled
// \u0000 in JSON, so a payload without that escape has no other string that
// decodes to a placeholder value.
var nestedFields = [...]nestedField{
	{"data", "signedTransactionInfo", "transactionInfo", []byte(`"signedTransactionInfo":"`), `\u0000`, "\x00"},
	{"data", "signedRenewalInfo", "renewalInfo", []byte(`"signedRenewalInfo":"`), `\u0000\u0000`, "\x00\x00"},
	{"appData", "signedAppTransactionInfo", "appTransactionInfo", []byte(`"signedAppTransactionInfo":"`), `\u0000\u0000\u0000`, "\x00\x00\x00"},
}

// nestedSlot is where the typed payload holds nested field i, nil when its
// object is absent.
func nestedSlot(p *mapping.AppleNotification, i int) *string {
	switch {
	case i == 0 && p.Data != nil:
		return &p.Data.SignedTransactionInfo
	case i == 1 && p.Data != nil:
		return &p.Data.SignedRenewalInfo
	case i == 2 && p.AppData != nil:
		return &p.AppData.SignedAppTransactionInfo
	}
	return nil
}

// nestedJWS is one nested JWS of a notification payload.
type nestedJWS struct {
	object, signedKey, decodedKey string
	// jws is the compact JWS, nil when the notification has none here.
	jws []byte
	// payload is its verified, decoded payload.
	payload []byte
	// at is where `"signedKey":"` starts in the payload and end where the
	// JWS's closing quote is, or at is -1 when the JWS was found by a full
	// JSON decode.
	at, end int
}

// decodeNotification decodes a notification payload into p and finds its
// nested JWS. The nested JWS are most of a payload's bytes (each carries
// its own certificates), so they are not run through the JSON decoder: in
// compact JSON each sits between `"signedKey":"` and the next quote (a
// JWS has no quote or backslash), and the rest of the payload is decoded
// with a placeholder in place of the first such value. The placeholder
// must come back in exactly the field it stands for, which proves that the
// JSON decoder reads this very value for that field (the rest of the
// document is unchanged, and no other string in it can decode to the
// placeholder); the same key elsewhere, a duplicate, another spelling of
// the key or an escape inside the value all make the field read something
// else, and then the whole payload is decoded as before.
func decodeNotification(raw []byte, p *mapping.AppleNotification, nested *[len(nestedFields)]nestedJWS) error {
	if decodeAroundNested(raw, p, nested) {
		return nil
	}
	*p = mapping.AppleNotification{}
	*nested = [len(nestedFields)]nestedJWS{}
	if err := json.Unmarshal(raw, p); err != nil {
		return err
	}
	for i, f := range nestedFields {
		if s := nestedSlot(p, i); s != nil && *s != "" {
			nested[i] = nestedJWS{object: f.object, signedKey: f.signedKey, decodedKey: f.decodedKey, jws: []byte(*s), at: -1}
			*s = ""
		}
	}
	return nil
}

// decodeAroundNested is the fast path of decodeNotification; false means
// the payload needs the full decode.
func decodeAroundNested(raw []byte, p *mapping.AppleNotification, nested *[len(nestedFields)]nestedJWS) bool {
	var spans [len(nestedFields)]struct{ at, start, end int }
	for i := range spans {
		spans[i].at = -1
	}
	// One pass finds the first occurrence of each pattern: every pattern
	// starts with `"signed`, and a value found is passed over whole (it
	// holds no quote, so no pattern can start inside it). The spans come
	// in the order they appear.
	var order [len(nestedFields)]int
	size, found, nuls := len(raw), 0, 0
	for from := 0; found < len(nestedFields); {
		k := bytes.Index(raw[from:], nestedPrefix)
		if k < 0 {
			break
		}
		at := from + k
		from = at + 1
		i := -1
		for j, f := range nestedFields {
			if spans[j].at < 0 && bytes.HasPrefix(raw[at+len(nestedPrefix):], f.pattern[len(nestedPrefix):]) {
				i = j
				break
			}
		}
		if i < 0 {
			continue
		}
		f := &nestedFields[i]
		start := at + len(f.pattern)
		q := plainJSONEnd(raw[start:])
		if q < 0 {
			return false
		}
		end := start + q
		spans[i].at, spans[i].start, spans[i].end = at, start, end
		order[found] = i
		size += len(f.placeholder) - q
		found++
		nuls += len(f.placeholder) / len(`\u0000`)
		from = end
	}
	if found == 0 {
		return false
	}
	// Cut the JWS out. The document is built as a string, which the
	// decoded strings are slices of.
	var sb strings.Builder
	sb.Grow(size)
	prev := 0
	for _, i := range order[:found] {
		sb.Write(raw[prev:spans[i].start])
		sb.WriteString(nestedFields[i].placeholder)
		prev = spans[i].end
	}
	sb.Write(raw[prev:])
	stripped := sb.String()
	// No \u0000 but the placeholders' (none can be inside a cut-out value).
	if strings.Count(stripped, `\u0000`) != nuls {
		return false
	}
	if decodeJSONString(appleNotificationPlan, stripped, p) != nil {
		return false
	}
	for i, f := range nestedFields {
		s := nestedSlot(p, i)
		if spans[i].at < 0 {
			if s != nil && *s != "" {
				return false // spelled otherwise (escapes, spaces): full decode
			}
			continue
		}
		if s == nil || *s != f.placeholderValue {
			return false
		}
		*s = ""
		if sp := spans[i]; sp.end > sp.start {
			nested[i] = nestedJWS{object: f.object, signedKey: f.signedKey, decodedKey: f.decodedKey, jws: raw[sp.start:sp.end:sp.end], at: sp.at, end: sp.end}
		}
	}
	return true
}

// nestedPrefix is how every nestedField pattern starts.
var nestedPrefix = []byte(`"signed`)

// plainJSONEnd returns where the first quote in b is, when every byte
// before it, inside a JSON string, decodes to itself: no backslash (an
// escape), no control characters (invalid JSON) and no bytes from 0x80
// (the decoder replaces invalid UTF-8). It returns -1 when another byte
// comes first or there is no quote. A JWS is base64url and dots, so the
// value of every real one ends at the quote found.
func plainJSONEnd(b []byte) int {
	q := bytes.IndexByte(b, '"')
	if q < 0 || bytes.IndexByte(b[:q], '\\') >= 0 || !printableASCII(b[:q]) {
		return -1
	}
	return q
}

// printableASCII reports whether every byte of b is from 0x20 to 0x7f.
// Word at a time: a byte of 0x80 or more has its high bit set, and a byte
// under 0x20, when no byte below it in the word is, borrows through its
// high bit in w - 0x20 of each byte (and its own high bit is clear); so
// the high bits gathered are clear exactly when every byte is printable.
func printableASCII(b []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	var acc uint64
	for len(b) >= 32 {
		w0 := binary.LittleEndian.Uint64(b)
		w1 := binary.LittleEndian.Uint64(b[8:])
		w2 := binary.LittleEndian.Uint64(b[16:])
		w3 := binary.LittleEndian.Uint64(b[24:32])
		acc |= w0 | (w0-0x20*ones)&^w0 | w1 | (w1-0x20*ones)&^w1 |
			w2 | (w2-0x20*ones)&^w2 | w3 | (w3-0x20*ones)&^w3
		b = b[32:]
	}
	for len(b) >= 8 {
		w := binary.LittleEndian.Uint64(b)
		acc |= w | (w-0x20*ones)&^w
		b = b[8:]
	}
	if acc&highs != 0 {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c >= 0x80 {
			return false
		}
	}
	return true
}

// decodedBody replaces each nested JWS in raw by its decoded payload: the
// bytes `"signedKey":"<jws>"` become `"decodedKey":<payload>`. When
// decodeNotification cut the JWS out it knows where they are; otherwise,
// in compact JSON (what Apple sends) each key is found once, with exactly
// this JWS, as such bytes cannot occur inside a JSON string (its quotes
// would be escaped). Anything else goes through a JSON round trip that
// keeps unknown fields.
func decodedBody(raw []byte, all []nestedJWS) ([]byte, error) {
	var buf [len(nestedFields)]nestedJWS
	nested := buf[:0]
	spans := true
	size := len(raw)
	for _, n := range all {
		if n.jws != nil {
			nested = append(nested, n)
			spans = spans && n.at >= 0
			size += len(n.decodedKey) + 3 + len(n.payload) - (n.end + 1 - n.at)
		}
	}
	if spans {
		for i := 1; i < len(nested); i++ { // in the order they appear
			for j := i; j > 0 && nested[j].at < nested[j-1].at; j-- {
				nested[j], nested[j-1] = nested[j-1], nested[j]
			}
		}
		out := make([]byte, 0, size)
		prev := 0
		for _, n := range nested {
			out = append(out, raw[prev:n.at]...)
			out = append(out, '"')
			out = append(out, n.decodedKey...)
			out = append(out, '"', ':')
			out = append(out, bytes.TrimSpace(n.payload)...)
			prev = n.end + 1
		}
		return append(out, raw[prev:]...), nil
	}
	body := raw
	for i, n := range nested {
		// Find the key with a short-pattern search (fast), check it occurs
		// once and carries exactly this JWS, then splice: scanning for the
		// multi-KB JWS itself cost more than verifying its signature.
		prefix := []byte(`"` + n.signedKey + `":"`)
		at := bytes.Index(body, prefix)
		start := at + len(prefix)
		end := start + len(n.jws)
		if at < 0 || bytes.Contains(body[start:], prefix) || end >= len(body) ||
			!bytes.Equal(body[start:end], n.jws) || body[end] != '"' {
			return decodedBodySlow(raw, nested[i:], body)
		}
		payload := bytes.TrimSpace(n.payload)
		out := make([]byte, 0, len(body)-(end+1-at)+len(n.decodedKey)+3+len(payload))
		out = append(out, body[:at]...)
		out = append(out, `"`+n.decodedKey+`":`...)
		out = append(out, payload...)
		body = append(out, body[end+1:]...)
	}
	return body, nil
}

// decodedBodySlow is decodedBody for payloads that are not compact JSON.
func decodedBodySlow(_ []byte, nested []nestedJWS, body []byte) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("%w: notification payload: %v", ErrAppleMalformed, err)
	}
	for _, n := range nested {
		fields := map[string]json.RawMessage{}
		if err := json.Unmarshal(top[n.object], &fields); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrAppleMalformed, n.object, err)
		}
		// encoding/json reads a key in any case into the field, so every
		// spelling of the signed key held (at most) this JWS.
		for k := range fields {
			if strings.EqualFold(k, n.signedKey) {
				delete(fields, k)
			}
		}
		fields[n.decodedKey] = n.payload
		b, err := json.Marshal(fields)
		if err != nil {
			return nil, err
		}
		top[n.object] = b
	}
	return json.Marshal(top)
}

// VerifyTransaction verifies a signed transaction and checks that it
// belongs to bundleID in appleEnv (Apple's environment name).
func (v *AppleVerifier) VerifyTransaction(ctx context.Context, jws, bundleID, appleEnv string) (*mapping.AppleTransaction, []byte, error) {
	v.cores.enter()
	defer v.cores.leave()
	return v.verifyTransaction(ctx, []byte(jws), nil, nil, bundleID, appleEnv)
}

// verifyTransaction is VerifyTransaction; the payload returned is decoded
// into scratch when it fits, and with later its signature check is put off
// (see verify).
func (v *AppleVerifier) verifyTransaction(ctx context.Context, jws, scratch []byte, later *pendingSigs, bundleID, appleEnv string) (*mapping.AppleTransaction, []byte, error) {
	var txn mapping.AppleTransaction
	b, err := v.verify(ctx, jws, scratch, later, nestedFields[0].signedKey, func(b []byte) error { return decodeJSON(appleTransactionPlan, b, &txn) }, func() (mapping.AppleMillis, mapping.AppleMillis) { return txn.SignedDate, 0 })
	if err != nil {
		return nil, nil, err
	}
	if txn.BundleID != bundleID {
		return nil, nil, fmt.Errorf("%w: %q", ErrAppleNestedBundle, txn.BundleID)
	}
	if txn.Environment != appleEnv {
		return nil, nil, fmt.Errorf("%w: %q", ErrAppleNestedEnvironment, txn.Environment)
	}
	return &txn, b, nil
}

// LoadAppleRoots returns the trusted roots: the embedded Apple Root CA - G3
// (fingerprint-checked) when paths is empty, else each file, DER or PEM.
// Every failure names the file, so a mangled root fails start-up clearly.
func LoadAppleRoots(paths []string) ([][]byte, error) {
	if len(paths) == 0 {
		der, err := certs.AppleRootG3()
		if err != nil {
			return nil, err
		}
		return [][]byte{der}, nil
	}
	var out [][]byte
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("sources.apple.root_certificates: %w", err)
		}
		ders := [][]byte{data}
		if bytes.Contains(data, []byte("-----BEGIN")) {
			ders = nil
			for rest := data; ; {
				var b *pem.Block
				b, rest = pem.Decode(rest)
				if b == nil {
					break
				}
				if b.Type == "CERTIFICATE" {
					ders = append(ders, b.Bytes)
				}
			}
			if len(ders) == 0 {
				return nil, fmt.Errorf("sources.apple.root_certificates: %s holds no PEM CERTIFICATE block", p)
			}
		}
		for _, der := range ders {
			if _, err := x509.ParseCertificate(der); err != nil {
				return nil, fmt.Errorf("sources.apple.root_certificates: %s is not a DER or PEM certificate: %w", p, err)
			}
			out = append(out, der)
		}
	}
	return out, nil
}

// Apple receives App Store Server Notifications V2 (POST /webhooks/apple):
// {"signedPayload": "<JWS>"}. The notification is verified with Verifier,
// deduplicated on notificationUUID and stored with its nested JWS decoded,
// so mapping never parses a JWS. When App Store Server API credentials are
// configured, a renewal for a subscription without state triggers a
// transaction-history look-up first, so a trial conversion is recognised
// even when Postback was installed mid-trial.
type Apple struct {
	Deps
	Verifier *AppleVerifier
	// API is the App Store Server API client; nil when not configured.
	API *appstore.Client
	// HistoryTimeout bounds the transaction-history look-up (default 3 s):
	// Apple expects an answer within seconds.
	HistoryTimeout time.Duration
}

// NewApple builds the Apple source from its configuration. retention is
// storage.retention: the inbox keeps notificationUUIDs that long, so it is
// also the replay bound. The roots are loaded and checked here, so a bad
// root certificate stops start-up with a message naming it.
func NewApple(cfg config.Apple, retention time.Duration, deps Deps) (*Apple, error) {
	roots, err := LoadAppleRoots(cfg.RootCertificates)
	if err != nil {
		return nil, err
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	v, err := NewAppleVerifier(AppleVerifierConfig{
		Roots: roots, Apps: cfg.Apps, Environments: cfg.Environments, Window: retention,
		Online: cfg.OnlineChecks, Now: deps.Now,
	})
	if err != nil {
		return nil, err
	}
	api, err := appstore.New(cfg.API, appstore.Options{Now: deps.Now})
	if errors.Is(err, appstore.ErrNotConfigured) {
		api = nil
	} else if err != nil {
		return nil, fmt.Errorf("sources.apple.api: %w", err)
	}
	return &Apple{Deps: deps, Verifier: v, API: api}, nil
}

// Handle is the echo handler.
func (a *Apple) Handle(c echo.Context) error {
	const src = mapping.SourceApple
	a.Metrics.Received.WithLabelValues(src).Inc()
	body, err := ReadBody(c, a.MaxBody)
	if err != nil {
		return a.Reject(src, AsError(err))
	}
	signed, ok, err := signedPayloadOf(body)
	if !ok {
		return a.Reject(src, Wrap(http.StatusBadRequest, CodeMalformed, `body is not {"signedPayload": "..."}`, err))
	}
	res, err := a.Receive(c.Request().Context(), signed)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, AckOf(res))
}

// Receive verifies one signedPayload and ingests it: the path shared by the
// HTTP handler and backfill. A verification failure is returned as an
// *Error already counted and logged.
func (a *Apple) Receive(ctx context.Context, signedPayload string) (store.IngestResult, error) {
	const src = mapping.SourceApple
	v, err := a.Verifier.VerifyNotification(ctx, signedPayload)
	if err != nil {
		return store.IngestResult{}, a.Reject(src, AppleError(err))
	}
	p := &v.Payload
	if p.NotificationType == mapping.AppleTest {
		a.Logger.Info("apple TEST notification received", "bundle_id", v.BundleID, "environment", v.Environment, "key", p.NotificationUUID)
	}
	n := &mapping.Notification{
		Source:      src,
		Key:         p.NotificationUUID,
		Type:        p.TypeKey(),
		AppID:       v.BundleID,
		Environment: v.Environment,
		Body:        v.Body,
	}
	a.previousOffer(ctx, v, n)
	return a.Accept(ctx, n)
}

// Receiver adapts Receive for appstore.Backfill: a refused notification is
// counted as rejected, a store failure stops the backfill.
func (a *Apple) Receiver() appstore.Receiver {
	return func(ctx context.Context, signedPayload string) (appstore.Outcome, error) {
		res, err := a.Receive(ctx, signedPayload)
		if err != nil {
			if AsError(err).Status >= 500 {
				return appstore.OutcomeRejected, err
			}
			return appstore.OutcomeRejected, nil
		}
		if res.Duplicate {
			return appstore.OutcomeDuplicate, nil
		}
		return appstore.OutcomeNew, nil
	}
}

// stateReader is the optional store method that tells whether a
// subscription has state yet.
type stateReader interface {
	State(key string) (mapping.State, bool, error)
}

// historyPages bounds the transaction-history look-up.
const historyPages = 3

// previousOffer fills n.Meta["previous_offer"] for a renewal of a
// subscription Postback has no state for, from the App Store Server API's
// transaction history: "free_trial" when the period before this renewal was
// a free trial, "paid" otherwise. Without credentials, or when the look-up
// fails, nothing is set and the mapping falls back to a plain renewal.
func (a *Apple) previousOffer(ctx context.Context, v *AppleVerified, n *mapping.Notification) {
	p := &v.Payload
	if a.API == nil || p.NotificationType != mapping.AppleDidRenew || p.Subtype != "" || p.Data == nil || p.Data.TransactionInfo == nil {
		return
	}
	txn := p.Data.TransactionInfo
	orig := txn.OriginalTransactionID
	if orig == "" {
		return
	}
	sr, ok := a.Store.(stateReader)
	if !ok {
		return
	}
	if _, found, err := sr.State(mapping.AppleStateKey(orig)); err != nil || found {
		return
	}
	timeout := a.HistoryTimeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	offer, err := a.lookupPrevious(ctx, v, txn)
	if err != nil {
		a.Logger.Warn("apple transaction history look-up failed; mapping without it", "key", n.Key, "err", err)
		n.Meta = map[string]string{"previous_offer_lookup": "failed"}
		return
	}
	if offer != "" {
		n.Meta = map[string]string{mapping.AppleMetaPreviousOffer: offer}
	}
}

// lookupPrevious finds the newest transaction of the same subscription
// purchased before txn.
func (a *Apple) lookupPrevious(ctx context.Context, v *AppleVerified, txn *mapping.AppleTransaction) (string, error) {
	appleEnv := v.Payload.AppleEnvironment()
	q := appstore.TransactionQuery{Sort: "DESCENDING", ProductTypes: []string{"AUTO_RENEWABLE"}, EndDate: int64(txn.PurchaseDate)}
	for i := 0; i < historyPages; i++ {
		page, err := a.API.TransactionHistory(ctx, v.Environment, v.BundleID, txn.OriginalTransactionID, q)
		if err != nil {
			return "", err
		}
		for _, s := range page.SignedTransactions {
			prev, _, err := a.Verifier.VerifyTransaction(ctx, s, v.BundleID, appleEnv)
			if err != nil {
				return "", fmt.Errorf("history transaction: %w", err)
			}
			if prev.OriginalTransactionID != txn.OriginalTransactionID || prev.TransactionID == txn.TransactionID || prev.PurchaseDate >= txn.PurchaseDate {
				continue
			}
			if prev.FreeTrial() {
				return "free_trial", nil
			}
			return "paid", nil
		}
		if !page.HasMore || page.Revision == "" {
			return "", nil
		}
		q.Revision = page.Revision
	}
	return "", nil
}

// coreGate lets one notification use a second core for its nested JWS only
// while a core would otherwise idle. Every verification in progress holds
// one slot (enter, leave); a helper goroutine takes a further slot only if
// fewer than limit are held (GOMAXPROCS by default). Under load every
// slot is held by a notification of its own, so each verifies serially,
// without goroutine overhead; a lone notification on an idle machine
// checks its transaction and renewal info side by side.
type coreGate struct {
	busy atomic.Int64
	// limit overrides GOMAXPROCS; 1 keeps every verification serial.
	limit int
}

func (g *coreGate) enter() { g.busy.Add(1) }
func (g *coreGate) leave() { g.busy.Add(-1) }

// tryExtra takes a slot for a helper if one is free.
func (g *coreGate) tryExtra() bool {
	limit := int64(g.limit)
	if limit <= 0 {
		limit = int64(runtime.GOMAXPROCS(0))
	}
	for {
		n := g.busy.Load()
		if n >= limit {
			return false
		}
		if g.busy.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// pair runs first and second and returns the first error in that order.
// With a free slot a helper goroutine takes second while first runs here;
// if first is done before the helper has started (its core was busy after
// all), second runs here too. Without a free slot second runs after first,
// and not at all if first failed. Either way the error returned is the
// same.
func (g *coreGate) pair(first, second func() error) error {
	if !g.tryExtra() {
		if err := first(); err != nil {
			return err
		}
		return second()
	}
	return g.pairTaken(first, second)
}

// pairTaken is pair once tryExtra has taken the helper's slot, which the
// helper gives back.
func (g *coreGate) pairTaken(first, second func() error) error {
	var claimed atomic.Bool
	done := make(chan error, 1)
	go func() {
		defer g.leave()
		if claimed.CompareAndSwap(false, true) {
			done <- second()
		}
	}()
	err1 := first()
	if claimed.CompareAndSwap(false, true) {
		if err1 != nil {
			return err1
		}
		return second()
	}
	// The helper has second, which reads buffers this call owns: wait.
	err2 := <-done
	if err1 != nil {
		return err1
	}
	return err2
}
