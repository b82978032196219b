package webhooks

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/ocsp"

	"github.com/postback/postback/appstore"
	"github.com/postback/postback/config"
	"github.com/postback/postback/mapping"
	"github.com/postback/postback/webhooks/appletest"
)

const (
	appleTestBundle = "com.example.app"
	appleTestAppID  = int64(1234567890)
	appleTestOrig   = "2000000000000001"
	appleTestUser   = "6f1c2a9e-5b7d-4c3e-9a1f-2b8d7e6c5a40"
)

// appleSigned is 2026-11-29T12:00:00Z, the signedDate of the fixtures
// (testNow is 2026-11-30T03:00:00Z).
var appleSigned = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func appleVerifierConfig(roots ...*appletest.PKI) AppleVerifierConfig {
	cfg := AppleVerifierConfig{
		Apps:         []config.AppleApp{{BundleID: appleTestBundle, AppAppleID: appleTestAppID}},
		Environments: []string{"production", "sandbox"},
		Window:       720 * time.Hour,
		Now:          func() time.Time { return testNow },
	}
	for _, p := range roots {
		cfg.Roots = append(cfg.Roots, p.RootDER())
	}
	return cfg
}

func newAppleForTest(t testing.TB, st Ingester, cfg AppleVerifierConfig) *Apple {
	t.Helper()
	v, err := NewAppleVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Apple{Deps: testDeps(st, nil), Verifier: v}
}

// signApple turns a decoded fixture into what Apple sends: the nested
// transaction, renewal info and app transaction signed into their JWS
// fields, then the whole payload signed.
func signApple(pki *appletest.PKI, decoded map[string]any) string {
	b, _ := json.Marshal(decoded)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	nest := func(obj, from, to string) {
		o, ok := m[obj].(map[string]any)
		if !ok {
			return
		}
		if v, ok := o[from]; ok {
			o[to] = pki.SignJWS(v)
			delete(o, from)
		}
	}
	nest("data", "transactionInfo", "signedTransactionInfo")
	nest("data", "renewalInfo", "signedRenewalInfo")
	nest("appData", "appTransactionInfo", "signedAppTransactionInfo")
	return pki.SignJWS(m)
}

func appleRequest(signedPayload string) []byte {
	b, _ := json.Marshal(map[string]string{"signedPayload": signedPayload})
	return b
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func testTxn(over map[string]any) map[string]any {
	m := map[string]any{
		"transactionId": "2000000000000002", "originalTransactionId": appleTestOrig, "bundleId": appleTestBundle,
		"productId": "pro_monthly", "purchaseDate": ms(appleSigned.Add(-26 * time.Hour)), "originalPurchaseDate": ms(appleSigned.Add(-8 * 24 * time.Hour)),
		"expiresDate": ms(appleSigned.Add(29 * 24 * time.Hour)), "type": "Auto-Renewable Subscription", "appAccountToken": appleTestUser,
		"inAppOwnershipType": "PURCHASED", "signedDate": ms(appleSigned), "environment": "Production", "transactionReason": "RENEWAL",
		"storefront": "USA", "price": 9990, "currency": "USD",
	}
	for k, v := range over {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func testTrialTxn() map[string]any {
	return testTxn(map[string]any{"transactionId": appleTestOrig, "purchaseDate": ms(appleSigned.Add(-8 * 24 * time.Hour)), "expiresDate": ms(appleSigned.Add(-26 * time.Hour)),
		"transactionReason": "PURCHASE", "offerType": 1, "offerDiscountType": "FREE_TRIAL", "offerPeriod": "P1W", "price": 0})
}

func testNotification(uuid, typ, sub string, txn map[string]any, over map[string]any) map[string]any {
	data := map[string]any{"appAppleId": appleTestAppID, "bundleId": appleTestBundle, "environment": "Production", "status": 1,
		"transactionInfo": txn,
		"renewalInfo": map[string]any{"originalTransactionId": appleTestOrig, "autoRenewProductId": "pro_monthly", "productId": "pro_monthly",
			"autoRenewStatus": 1, "signedDate": ms(appleSigned), "environment": "Production"}}
	n := map[string]any{"notificationType": typ, "notificationUUID": uuid, "version": "2.0", "signedDate": ms(appleSigned), "data": data}
	if sub != "" {
		n["subtype"] = sub
	}
	for k, v := range over {
		if v == nil {
			delete(n, k)
		} else {
			n[k] = v
		}
	}
	return n
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	return reflect.DeepEqual(x, y)
}

// TestAppleEveryType signs every fixture of the mapping's type x subtype
// table, posts it through echo into a real BoltDB and checks that it is
// accepted, stored exactly as the decoded fixture the mapping golden files
// were made from, and produces the golden events.
func TestAppleEveryType(t *testing.T) {
	pki := appletest.NewPKI(t)
	files, err := filepath.Glob(filepath.Join("..", "mapping", "testdata", "apple", "in", "*.golden"))
	if err != nil || len(files) < 40 {
		t.Fatalf("fixtures: %d files, %v", len(files), err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".golden")
		t.Run(name, func(t *testing.T) {
			fixture, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var decoded map[string]any
			if err := json.Unmarshal(fixture, &decoded); err != nil {
				t.Fatal(err)
			}
			db := boltForTest(t)
			a := newAppleForTest(t, db, appleVerifierConfig(pki))
			rec := post(t, a.Handle, appleRequest(signApple(pki, decoded)), nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d, body %s", rec.Code, rec.Body)
			}
			ack := ackOf(t, rec.Body.Bytes())
			uuid := decoded["notificationUUID"].(string)
			n, err := db.Notification(mapping.SourceApple, uuid)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, n.Body, fixture) {
				t.Errorf("stored body differs from the decoded fixture\ngot:  %s\nwant: %s", n.Body, fixture)
			}
			if n.Status == mapping.StatusFailed {
				t.Errorf("mapping failed: %s", n.Reason)
			}
			if strings.Contains(name, "_with_state") {
				return // the golden output assumes a prior state this fresh store lacks
			}
			var want struct {
				Events []mapping.Event
			}
			g, err := os.ReadFile(filepath.Join("..", "mapping", "testdata", "apple", name+".golden"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(g, &want); err != nil {
				t.Fatal(err)
			}
			var wantIDs []string
			for _, e := range want.Events {
				wantIDs = append(wantIDs, e.ID)
			}
			if !reflect.DeepEqual(ack.EventIDs, wantIDs) {
				t.Errorf("event ids %v, want golden %v", ack.EventIDs, wantIDs)
			}
		})
	}
}

// rejectionPKIs are the chains of the rejection table: all trusted except
// foreign.
type rejectionPKIs struct {
	good, foreign, noLeafOID, noInterOID, expired, notYet, p384 *appletest.PKI
}

func newRejectionPKIs(t *testing.T) rejectionPKIs {
	return rejectionPKIs{
		good:       appletest.NewPKI(t),
		foreign:    appletest.NewPKI(t, appletest.WithName("Foreign")),
		noLeafOID:  appletest.NewPKI(t, appletest.WithoutLeafOID()),
		noInterOID: appletest.NewPKI(t, appletest.WithoutIntermediateOID()),
		expired:    appletest.NewPKI(t, appletest.WithLeafValidity(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), appleSigned.Add(-time.Hour))),
		notYet:     appletest.NewPKI(t, appletest.WithLeafValidity(appleSigned.Add(time.Hour), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))),
		p384:       appletest.NewPKI(t, appletest.WithLeafCurve(elliptic.P384())),
	}
}

func TestAppleRejections(t *testing.T) {
	k := newRejectionPKIs(t)
	good := k.good
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafPub, _ := x509.MarshalPKIXPublicKey(good.Leaf.PublicKey)
	env := func(over map[string]any) map[string]any {
		return testNotification("rej-uuid", "DID_RENEW", "", testTxn(nil), over)
	}
	signedEnv := func(p *appletest.PKI, over map[string]any) []byte { return appleRequest(signApple(p, env(over))) }
	withNested := func(txn string) []byte {
		m := env(nil)
		d := m["data"].(map[string]any)
		delete(d, "transactionInfo")
		delete(d, "renewalInfo")
		d["signedTransactionInfo"] = txn
		return appleRequest(good.SignJWS(m))
	}
	withData := func(over map[string]any) []byte {
		m := env(nil)
		for k, v := range over {
			if v == nil {
				delete(m["data"].(map[string]any), k)
			} else {
				m["data"].(map[string]any)[k] = v
			}
		}
		return appleRequest(signApple(good, m))
	}
	valid := signApple(good, env(nil))
	parts := strings.Split(valid, ".")
	otherPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"notificationType":"REFUND","notificationUUID":"x","signedDate":1795953600000}`))

	tests := []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"alg none", appleRequest(good.Sign(env(nil), appletest.JWS{Alg: "none", Sign: func([]byte) []byte { return nil }})), 401, CodeAppleAlg},
		{"HS256 keyed with the leaf public key", appleRequest(good.Sign(env(nil), appletest.JWS{Alg: "HS256", Sign: func(in []byte) []byte {
			m := hmac.New(sha256.New, leafPub)
			m.Write(in)
			return m.Sum(nil)
		}})), 401, CodeAppleAlg},
		{"RS256", appleRequest(good.Sign(env(nil), appletest.JWS{Alg: "RS256", Sign: func(in []byte) []byte {
			s, err := jwt.SigningMethodRS256.Sign(string(in), rsaKey)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}})), 401, CodeAppleAlg},
		{"ES384 header", appleRequest(good.Sign(env(nil), appletest.JWS{Alg: "ES384"})), 401, CodeAppleAlg},
		{"no x5c", appleRequest(good.Sign(env(nil), appletest.JWS{X5C: []string{}})), 401, CodeAppleX5CLength},
		{"two-certificate x5c", appleRequest(good.Sign(env(nil), appletest.JWS{X5C: good.X5C()[:2]})), 401, CodeAppleX5CLength},
		{"four-certificate x5c", appleRequest(good.Sign(env(nil), appletest.JWS{X5C: append(good.X5C(), good.X5C()[2])})), 401, CodeAppleX5CLength},
		{"x5c not base64", appleRequest(good.Sign(env(nil), appletest.JWS{X5C: []string{"%%%", "%%%", "%%%"}})), 401, CodeAppleCertificate},
		{"x5c not a certificate", appleRequest(good.Sign(env(nil), appletest.JWS{X5C: appletest.X5C([]byte("junk"), good.IntermediateDER(), good.RootDER())})), 401, CodeAppleCertificate},
		{"x5c intermediate not a certificate", appleRequest(good.Sign(env(nil), appletest.JWS{X5C: appletest.X5C(good.LeafDER(), []byte("junk"), good.RootDER())})), 401, CodeAppleCertificate},
		{"chain to an untrusted root", signedEnv(k.foreign, nil), 401, CodeAppleUntrustedChain},
		{"trusted root in x5c, foreign intermediate", appleRequest(k.foreign.Sign(env(nil), appletest.JWS{X5C: appletest.X5C(k.foreign.LeafDER(), k.foreign.IntermediateDER(), good.RootDER())})), 401, CodeAppleUntrustedChain},
		{"leaf without its OID", signedEnv(k.noLeafOID, nil), 401, CodeAppleLeafOID},
		{"intermediate without its OID", signedEnv(k.noInterOID, nil), 401, CodeAppleIntermediateOID},
		{"leaf expired before signedDate", signedEnv(k.expired, nil), 401, CodeAppleExpired},
		{"leaf not yet valid at signedDate", signedEnv(k.notYet, nil), 401, CodeAppleNotYetValid},
		{"leaf key P-384", signedEnv(k.p384, nil), 401, CodeAppleLeafKey},
		{"tampered payload", appleRequest(parts[0] + "." + otherPayload + "." + parts[2]), 401, CodeSignature},
		{"signed by another key", appleRequest(good.Sign(env(nil), appletest.JWS{Key: otherKey})), 401, CodeSignature},
		{"truncated signature", appleRequest(parts[0] + "." + parts[1] + "." + parts[2][:20]), 401, CodeSignature},
		{"nested transaction signed by another key", withNested(good.Sign(testTxn(nil), appletest.JWS{Key: otherKey})), 401, CodeSignature},
		{"nested transaction from an untrusted chain", withNested(k.foreign.SignJWS(testTxn(nil))), 401, CodeAppleUntrustedChain},
		{"nested transaction of another bundleId", withNested(good.SignJWS(testTxn(map[string]any{"bundleId": "com.evil.app"}))), 401, CodeAppleNestedBundle},
		{"nested transaction of another environment", withNested(good.SignJWS(testTxn(map[string]any{"environment": "Sandbox"}))), 401, CodeAppleNestedEnvironment},
		{"nested renewal info of another environment", withData(map[string]any{"renewalInfo": map[string]any{"environment": "Sandbox", "signedDate": ms(appleSigned)}}), 401, CodeAppleNestedEnvironment},
		{"nested renewal info tampered", withData(map[string]any{"renewalInfo": nil, "signedRenewalInfo": parts[0] + "." + otherPayload + "." + parts[2]}), 401, CodeSignature},
		{"bundleId not configured", withData(map[string]any{"bundleId": "com.other.app"}), 401, CodeUnknownApp},
		{"no data, summary or token", signedEnv(good, map[string]any{"data": nil}), 401, CodeUnknownApp},
		{"environment not accepted", withData(map[string]any{"environment": "Xcode", "transactionInfo": testTxn(map[string]any{"environment": "Xcode"})}), 401, CodeEnvironment},
		// Apple's values are compared exactly: "PRODUCTION" used to pass
		// a case-insensitive check, skip the appAppleId check (exact) and
		// be stored as sandbox (issue 13, item 6).
		{"environment PRODUCTION", withData(map[string]any{"environment": "PRODUCTION", "appAppleId": 42,
			"transactionInfo": testTxn(map[string]any{"environment": "PRODUCTION"}), "renewalInfo": map[string]any{"environment": "PRODUCTION", "signedDate": ms(appleSigned)}}), 401, CodeEnvironment},
		{"environment production", withData(map[string]any{"environment": "production",
			"transactionInfo": testTxn(map[string]any{"environment": "production"}), "renewalInfo": map[string]any{"environment": "production", "signedDate": ms(appleSigned)}}), 401, CodeEnvironment},
		{"environment sandbox in lower case", withData(map[string]any{"environment": "sandbox",
			"transactionInfo": testTxn(map[string]any{"environment": "sandbox"}), "renewalInfo": map[string]any{"environment": "sandbox", "signedDate": ms(appleSigned)}}), 401, CodeEnvironment},
		{"environment missing", withData(map[string]any{"environment": nil}), 401, CodeEnvironment},
		{"crit header", appleRequest(good.Sign(env(nil), appletest.JWS{Header: map[string]any{"crit": []string{"exp"}, "exp": 1}})), 401, CodeAppleCrit},
		{"empty crit header", appleRequest(good.Sign(env(nil), appletest.JWS{Header: map[string]any{"crit": []string{}}})), 401, CodeAppleCrit},
		{"null crit header", appleRequest(good.Sign(env(nil), appletest.JWS{Header: map[string]any{"crit": nil}})), 401, CodeAppleCrit},
		{"crit header on the nested transaction", withNested(good.Sign(testTxn(nil), appletest.JWS{Header: map[string]any{"crit": []string{"b64"}, "b64": true}})), 401, CodeAppleCrit},
		{"appAppleId mismatch in Production", withData(map[string]any{"appAppleId": 42}), 401, CodeAppleAppAppleID},
		{"older than the dedupe window", signedEnv(good, map[string]any{"signedDate": ms(testNow.Add(-721 * time.Hour))}), 401, CodeStale},
		{"signed in the future", signedEnv(good, map[string]any{"signedDate": ms(testNow.Add(time.Hour))}), 401, CodeStale},
		{"no signedDate", signedEnv(good, map[string]any{"signedDate": nil}), 401, CodeStale},
		{"malformed base64", appleRequest("!!!.???.###"), 400, CodeMalformed},
		{"not three parts", appleRequest("abc.def"), 400, CodeMalformed},
		{"header not JSON", appleRequest(base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".e30.AA"), 400, CodeMalformed},
		{"payload not base64", appleRequest(parts[0] + ".***." + parts[2]), 400, CodeMalformed},
		{"signature not base64", appleRequest(parts[0] + "." + parts[1] + ".***"), 400, CodeMalformed},
		{"signature in non-canonical base64", appleRequest(parts[0] + "." + parts[1] + "." + spareBits(t, parts[2])), 400, CodeMalformed},
		{"line break inside the JWS", appleRequest(parts[0] + "." + parts[1] + "." + parts[2][:10] + "\n" + parts[2][10:]), 400, CodeMalformed},
		{"payload not JSON", appleRequest(good.SignJWS([]byte("not json"))), 400, CodeMalformed},
		{"payload without notificationUUID", signedEnv(good, map[string]any{"notificationUUID": nil}), 400, CodeMalformed},
		{"payload with a wrongly typed field", signedEnv(good, map[string]any{"version": 2}), 400, CodeMalformed},
		{"nested transaction not JSON", withNested(good.SignJWS([]byte(`[1]`))), 400, CodeMalformed},
		{"body not JSON", []byte(`{"signedPayload":`), 400, CodeMalformed},
		{"body without signedPayload", []byte(`{}`), 400, CodeMalformed},
		{"oversize body", bytes.Repeat([]byte("a"), 70<<10), 413, CodeTooLarge},
	}
	cfg := appleVerifierConfig(good, k.noLeafOID, k.noInterOID, k.expired, k.notYet, k.p384)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeIngester{}
			a := newAppleForTest(t, st, cfg)
			rec := post(t, a.Handle, tc.body, nil)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d (body %s)", rec.Code, tc.status, rec.Body)
			}
			if got := errCode(t, rec); got != tc.code {
				t.Errorf("code %q, want %q (body %s)", got, tc.code, rec.Body)
			}
			if st.count() != 0 {
				t.Errorf("a rejected notification was stored")
			}
			if got := counterValue(t, a.Metrics.Rejected.WithLabelValues(mapping.SourceApple, tc.code)); got != 1 {
				t.Errorf("rejected metric for %s = %v, want 1", tc.code, got)
			}
		})
	}
	t.Run("valid control", func(t *testing.T) {
		st := &fakeIngester{}
		if rec := post(t, newAppleForTest(t, st, cfg).Handle, appleRequest(valid), nil); rec.Code != 200 || st.count() != 1 {
			t.Fatalf("status %d, stored %d: %s", rec.Code, st.count(), rec.Body)
		}
	})
	t.Run("appAppleId not checked in Sandbox", func(t *testing.T) {
		st := &fakeIngester{}
		m := testNotification("sandbox-uuid", "DID_RENEW", "", testTxn(map[string]any{"environment": "Sandbox"}), nil)
		d := m["data"].(map[string]any)
		d["environment"], d["appAppleId"] = "Sandbox", 7
		d["renewalInfo"].(map[string]any)["environment"] = "Sandbox"
		rec := post(t, newAppleForTest(t, st, cfg).Handle, appleRequest(signApple(good, m)), nil)
		if rec.Code != 200 || st.count() != 1 || st.got[0].Environment != mapping.Sandbox {
			t.Fatalf("status %d, stored %d: %s", rec.Code, st.count(), rec.Body)
		}
	})
}

// spareBits re-spells an unpadded base64url segment with a spare trailing
// bit set: lenient decoders read it as the same bytes.
func spareBits(t *testing.T, seg string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := []byte(seg)
	b[len(b)-1] = alphabet[strings.IndexByte(alphabet, b[len(b)-1])+1]
	want, _ := base64.RawURLEncoding.DecodeString(seg)
	if got, err := base64.RawURLEncoding.DecodeString(string(b)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%q is not another spelling of %q", b, seg)
	}
	return string(b)
}

// TestAppleSandboxEnvironments: Sandbox, Xcode and LocalTesting are all the
// canonical sandbox environment, accepted only when configured.
func TestAppleSandboxEnvironments(t *testing.T) {
	pki := appletest.NewPKI(t)
	for _, appleEnv := range []string{"Sandbox", "Xcode", "LocalTesting"} {
		t.Run(appleEnv, func(t *testing.T) {
			m := testNotification("env-"+appleEnv, "DID_RENEW", "", testTxn(map[string]any{"environment": appleEnv}), nil)
			d := m["data"].(map[string]any)
			d["environment"] = appleEnv
			d["renewalInfo"].(map[string]any)["environment"] = appleEnv
			cfg := appleVerifierConfig(pki)
			cfg.Environments = []string{"sandbox", "xcode", "localtesting"}
			cfg.Apps = []config.AppleApp{{BundleID: appleTestBundle}}
			st := &fakeIngester{}
			rec := post(t, newAppleForTest(t, st, cfg).Handle, appleRequest(signApple(pki, m)), nil)
			if rec.Code != 200 || st.count() != 1 || st.got[0].Environment != mapping.Sandbox {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			cfg.Environments = []string{"production"}
			cfg.Apps = []config.AppleApp{{BundleID: appleTestBundle, AppAppleID: appleTestAppID}}
			rec = post(t, newAppleForTest(t, &fakeIngester{}, cfg).Handle, appleRequest(signApple(pki, m)), nil)
			if rec.Code != 401 || errCode(t, rec) != CodeEnvironment {
				t.Fatalf("production-only gateway: status %d: %s", rec.Code, rec.Body)
			}
		})
	}
}

// TestAppleTrialConversion: SUBSCRIBED with a free trial then DID_RENEW are
// trial_started then trial_converted with revenue; the same DID_RENEW
// re-sent under a new notificationUUID adds no event; the same notification
// posted twice is a duplicate.
func TestAppleTrialConversion(t *testing.T) {
	pki := appletest.NewPKI(t)
	db := boltForTest(t)
	a := newAppleForTest(t, db, appleVerifierConfig(pki))
	send := func(n map[string]any) Ack {
		t.Helper()
		rec := post(t, a.Handle, appleRequest(signApple(pki, n)), nil)
		if rec.Code != 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		return ackOf(t, rec.Body.Bytes())
	}
	sub := send(testNotification("uuid-sub", "SUBSCRIBED", "INITIAL_BUY", testTrialTxn(), nil))
	renew := send(testNotification("uuid-renew", "DID_RENEW", "", testTxn(nil), nil))
	again := send(testNotification("uuid-renew-resent", "DID_RENEW", "", testTxn(nil), nil))
	dup := send(testNotification("uuid-renew", "DID_RENEW", "", testTxn(nil), nil))
	events := countEvents(t, db, mapping.SourceApple)
	if len(events) != 2 {
		t.Fatalf("%d events, want 2: %+v", len(events), events)
	}
	byID := map[string]mapping.Event{}
	for _, e := range events {
		byID[e.ID] = e
	}
	if len(sub.EventIDs) != 1 || byID[sub.EventIDs[0]].Type != mapping.TrialStarted || byID[sub.EventIDs[0]].Revenue != nil {
		t.Errorf("SUBSCRIBED: %+v", sub)
	}
	conv := byID[renew.EventIDs[0]]
	if len(renew.EventIDs) != 1 || conv.Type != mapping.TrialConverted || conv.Revenue == nil || conv.Revenue.AmountMicros != 9990000 || conv.User.AppUserID != appleTestUser {
		t.Errorf("DID_RENEW: %+v -> %+v", renew, conv)
	}
	if again.Duplicate || len(again.EventIDs) != 0 {
		t.Errorf("re-sent DID_RENEW: %+v, want a new notification with no new event", again)
	}
	if !dup.Duplicate || !reflect.DeepEqual(dup.EventIDs, renew.EventIDs) {
		t.Errorf("same notification twice: %+v, want duplicate of %v", dup, renew.EventIDs)
	}
	n, err := db.Notification(mapping.SourceApple, "uuid-renew-resent")
	if err != nil || !reflect.DeepEqual(n.EventIDs, renew.EventIDs) {
		t.Errorf("re-sent notification maps to %v (%v), want %v", n.EventIDs, err, renew.EventIDs)
	}
}

// fakeAppStore is a fake App Store Server API: it checks each request's
// token and serves notification history and transaction history pages.
type fakeAppStore struct {
	t        *testing.T
	key      *ecdsa.PublicKey
	mu       sync.Mutex
	history  []string // signedPayloads
	pageSize int
	txns     []string // signed transactions, newest first
	fail     int      // answer this status instead, when non-zero
	calls    atomic.Int32
	requests []map[string]any
}

func (f *fakeAppStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	if f.fail != 0 {
		w.WriteHeader(f.fail)
		_, _ = w.Write([]byte(`{"errorCode":5000000,"errorMessage":"An unknown error occurred."}`))
		return
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	var claims struct {
		jwt.RegisteredClaims
		BID string `json:"bid"`
	}
	parsed, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return f.key, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience("appstoreconnect-v1"), jwt.WithIssuer("issuer-1"),
		jwt.WithTimeFunc(func() time.Time { return testNow }), jwt.WithIssuedAt(), jwt.WithExpirationRequired())
	if err != nil || parsed.Header["kid"] != "KEY123" || claims.BID != appleTestBundle || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > time.Hour {
		f.t.Errorf("bad token: %v kid=%v bid=%q", err, parsed.Header["kid"], claims.BID)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/inApps/v1/notifications/history":
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.requests = append(f.requests, req)
		if req["startDate"] == nil || req["endDate"] == nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		start := 0
		if tok := r.URL.Query().Get("paginationToken"); tok != "" {
			fmt.Sscanf(tok, "page-%d", &start)
		}
		end := min(start+f.pageSize, len(f.history))
		page := appstore.NotificationHistoryPage{HasMore: end < len(f.history)}
		for _, s := range f.history[start:end] {
			page.NotificationHistory = append(page.NotificationHistory, appstore.NotificationHistoryItem{SignedPayload: s, SendAttempts: []appstore.SendAttempt{{AttemptDate: ms(appleSigned), SendAttemptResult: "TIMED_OUT"}}})
		}
		if page.HasMore {
			page.PaginationToken = fmt.Sprintf("page-%d", end)
		}
		_ = json.NewEncoder(w).Encode(page)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/inApps/v2/history/"):
		q := r.URL.Query()
		if q.Get("sort") != "DESCENDING" || q.Get("productType") != "AUTO_RENEWABLE" || q.Get("endDate") == "" {
			f.t.Errorf("transaction history query %v", q)
		}
		_ = json.NewEncoder(w).Encode(appstore.TransactionHistoryPage{BundleID: appleTestBundle, Environment: "Production", SignedTransactions: f.txns})
	default:
		http.NotFound(w, r)
	}
}

func newFakeAppStore(t *testing.T) (*fakeAppStore, config.AppleAPI) {
	pemKey, key, err := appletest.P8()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAppStore{t: t, key: &key.PublicKey, pageSize: 8}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, config.AppleAPI{IssuerID: "issuer-1", KeyID: "KEY123", PrivateKey: string(pemKey), Endpoint: srv.URL}
}

func withAPI(t *testing.T, a *Apple, api config.AppleAPI) {
	t.Helper()
	c, err := appstore.New(api, appstore.Options{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	a.API = c
}

// TestAppleBackfill: after an outage, a gap of 20 notifications of which 5
// were received is backfilled: 15 new, 5 recognised as already received,
// and every notification counted exactly once (20 events, no duplicates).
// A second run changes nothing.
func TestAppleBackfill(t *testing.T) {
	pki := appletest.NewPKI(t)
	db := boltForTest(t)
	a := newAppleForTest(t, db, appleVerifierConfig(pki))
	f, api := newFakeAppStore(t)
	withAPI(t, a, api)
	for i := range 20 {
		orig := fmt.Sprintf("30000000000000%02d", i)
		txn := testTxn(map[string]any{"transactionId": orig, "originalTransactionId": orig, "transactionReason": "PURCHASE"})
		n := testNotification(fmt.Sprintf("gap-%02d", i), "SUBSCRIBED", "INITIAL_BUY", txn, nil)
		n["data"].(map[string]any)["renewalInfo"].(map[string]any)["originalTransactionId"] = orig
		f.history = append(f.history, signApple(pki, n))
		if i%4 == 0 { // 5 of them arrived before the outage
			if rec := post(t, a.Handle, appleRequest(f.history[i]), nil); rec.Code != 200 {
				t.Fatalf("pre-outage notification: %d %s", rec.Code, rec.Body)
			}
		}
	}
	since, until := appleSigned.Add(-time.Hour), appleSigned.Add(time.Hour)
	res, err := appstore.Backfill(context.Background(), a.API, "production", appleTestBundle, since, until, a.Receiver())
	if err != nil {
		t.Fatal(err)
	}
	want := appstore.BackfillResult{Fetched: 20, New: 15, Duplicates: 5, Rejected: 0, Pages: 3}
	if res != want {
		t.Errorf("backfill = %+v, want %+v", res, want)
	}
	if got := len(countEvents(t, db, mapping.SourceApple)); got != 20 {
		t.Errorf("%d events, want 20 (each notification once)", got)
	}
	if got := f.requests[0]; got["startDate"] != float64(since.UnixMilli()) || got["endDate"] != float64(until.UnixMilli()) {
		t.Errorf("history request %v", got)
	}
	res, err = appstore.Backfill(context.Background(), a.API, "production", appleTestBundle, since, until, a.Receiver())
	if err != nil || res.New != 0 || res.Duplicates != 20 {
		t.Errorf("second backfill = %+v, %v; want 0 new, 20 duplicates", res, err)
	}
	if got := len(countEvents(t, db, mapping.SourceApple)); got != 20 {
		t.Errorf("%d events after a second backfill, want 20", got)
	}
}

// TestAppleBackfillOutcomes: a notification the gateway refuses is counted
// as rejected; a store failure stops the backfill with an error.
func TestAppleBackfillOutcomes(t *testing.T) {
	pki, foreign := appletest.NewPKI(t), appletest.NewPKI(t, appletest.WithName("Foreign"))
	st := &fakeIngester{}
	a := newAppleForTest(t, st, appleVerifierConfig(pki))
	f, api := newFakeAppStore(t)
	withAPI(t, a, api)
	f.history = []string{
		signApple(pki, testNotification("ok-1", "DID_RENEW", "", testTxn(nil), nil)),
		signApple(foreign, testNotification("forged", "DID_RENEW", "", testTxn(nil), nil)),
	}
	res, err := appstore.Backfill(context.Background(), a.API, "production", appleTestBundle, appleSigned.Add(-time.Hour), appleSigned, a.Receiver())
	if err != nil || res.New != 1 || res.Rejected != 1 {
		t.Errorf("backfill = %+v, %v; want 1 new, 1 rejected", res, err)
	}
	st.err = errors.New("disk full")
	f.history = f.history[:1]
	st.seen = nil
	if _, err := appstore.Backfill(context.Background(), a.API, "production", appleTestBundle, appleSigned.Add(-time.Hour), appleSigned, a.Receiver()); err == nil {
		t.Error("a store failure did not stop the backfill")
	}
}

// TestAppleHistoryLookup: a renewal for a subscription without state asks
// the transaction history whether the previous period was a free trial.
func TestAppleHistoryLookup(t *testing.T) {
	pki := appletest.NewPKI(t)
	renewal := func(uuid string) []byte {
		return appleRequest(signApple(pki, testNotification(uuid, "DID_RENEW", "", testTxn(nil), nil)))
	}
	tests := []struct {
		name     string
		txns     []string
		fail     int
		preState bool
		want     mapping.Type
		meta     map[string]string
		calls    int32
	}{
		{"previous period was a free trial", []string{pki.SignJWS(testTxn(nil)), pki.SignJWS(testTrialTxn())}, 0, false, mapping.TrialConverted, map[string]string{"previous_offer": "free_trial"}, 1},
		{"previous period was paid", []string{pki.SignJWS(testTxn(map[string]any{"transactionId": "1999", "purchaseDate": ms(appleSigned.Add(-30 * 24 * time.Hour))}))}, 0, false, mapping.SubscriptionRenewed, map[string]string{"previous_offer": "paid"}, 1},
		{"no previous period", nil, 0, false, mapping.SubscriptionRenewed, nil, 1},
		{"history of another app is refused", []string{pki.SignJWS(testTxn(map[string]any{"bundleId": "com.other", "transactionId": "5"}))}, 0, false, mapping.SubscriptionRenewed, map[string]string{"previous_offer_lookup": "failed"}, 1},
		{"API failure falls back", nil, http.StatusInternalServerError, false, mapping.SubscriptionRenewed, map[string]string{"previous_offer_lookup": "failed"}, 1},
		{"state exists: no look-up", nil, 0, true, mapping.TrialConverted, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := boltForTest(t)
			a := newAppleForTest(t, db, appleVerifierConfig(pki))
			f, api := newFakeAppStore(t)
			f.txns, f.fail = tc.txns, tc.fail
			if tc.preState {
				if rec := post(t, a.Handle, appleRequest(signApple(pki, testNotification("first", "SUBSCRIBED", "INITIAL_BUY", testTrialTxn(), nil))), nil); rec.Code != 200 {
					t.Fatal(rec.Body)
				}
			}
			withAPI(t, a, api)
			rec := post(t, a.Handle, renewal("renewal"), nil)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			n, err := db.Notification(mapping.SourceApple, "renewal")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(n.Meta, tc.meta) {
				t.Errorf("meta %v, want %v", n.Meta, tc.meta)
			}
			if got := f.calls.Load(); got != tc.calls {
				t.Errorf("%d API calls, want %d", got, tc.calls)
			}
			ev, err := db.Event(n.EventIDs[0])
			if err != nil || ev.Type != tc.want {
				t.Errorf("event %v (%v), want %s", ev.Type, err, tc.want)
			}
		})
	}
}

// TestAppleOnlineChecks: with online checks, certificates are checked now
// and with OCSP; an unreachable responder is a 503 so Apple retries, a
// revoked certificate a 401, and a good answer is reused within its TTL.
func TestAppleOnlineChecks(t *testing.T) {
	var handler atomic.Value
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		handler.Load().(http.Handler).ServeHTTP(w, r)
	}))
	defer srv.Close()
	pki := appletest.NewPKI(t, appletest.WithOCSP(srv.URL))
	noOCSP := appletest.NewPKI(t, appletest.WithName("No OCSP"))
	body := appleRequest(signApple(pki, testNotification("online", "DID_RENEW", "", testTxn(nil), nil)))
	status := func(code int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) })
	}
	now := testNow
	tests := []struct {
		name    string
		h       http.Handler
		pki     *appletest.PKI
		status  int
		code    string
		ocspReq int32
	}{
		{"good", pki.OCSPHandler(ocsp.Good, now), pki, 200, "", 6},
		{"revoked", pki.OCSPHandler(ocsp.Revoked, now), pki, 401, CodeAppleRevoked, 1},
		{"unknown", pki.OCSPHandler(ocsp.Unknown, now), pki, 401, CodeAppleRevoked, 1},
		{"stale answer", pki.OCSPHandler(ocsp.Good, now.Add(-3*time.Hour)), pki, 401, CodeAppleRevoked, 1},
		{"answer from the future", pki.OCSPHandler(ocsp.Good, now.Add(3*time.Hour)), pki, 401, CodeAppleRevoked, 1},
		{"answer signed by another CA", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			req, err := ocsp.ParseRequest(b)
			if err != nil {
				t.Error(err)
				return
			}
			resp, err := ocsp.CreateResponse(noOCSP.Intermediate, noOCSP.Intermediate, ocsp.Response{Status: ocsp.Good, SerialNumber: req.SerialNumber, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, noOCSP.IntermediateKey)
			if err != nil {
				t.Error(err)
			}
			_, _ = w.Write(resp)
		}), pki, 401, CodeAppleRevoked, 1},
		{"responder down", status(http.StatusInternalServerError), pki, 503, CodeAppleOCSPUnavailable, 1},
		{"responder answers garbage", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("garbage")) }), pki, 401, CodeAppleRevoked, 1},
		{"no responder in the certificate", pki.OCSPHandler(ocsp.Good, now), noOCSP, 401, CodeAppleRevoked, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			handler.Store(tc.h)
			requests.Store(0)
			cfg := appleVerifierConfig(tc.pki)
			cfg.Online = true
			cfg.HTTPClient = srv.Client()
			st := &fakeIngester{}
			a := newAppleForTest(t, st, cfg)
			b := body
			if tc.pki != pki {
				b = appleRequest(signApple(tc.pki, testNotification("online", "DID_RENEW", "", testTxn(nil), nil)))
			}
			rec := post(t, a.Handle, b, nil)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.code != "" && errCode(t, rec) != tc.code {
				t.Errorf("code %q, want %q", errCode(t, rec), tc.code)
			}
			// Envelope + transaction + renewal share one chain: two OCSP
			// requests (leaf, intermediate), then the cache.
			if tc.status == 200 {
				if got := requests.Load(); got != 2 {
					t.Errorf("%d OCSP requests, want 2 (cached within one notification)", got)
				}
				rec = post(t, a.Handle, body, nil)
				if got := requests.Load(); rec.Code != 200 || got != 2 {
					t.Errorf("second notification: status %d, %d OCSP requests, want 2", rec.Code, got)
				}
			} else if got := requests.Load(); got != tc.ocspReq {
				t.Errorf("%d OCSP requests, want %d", got, tc.ocspReq)
			}
		})
	}
	t.Run("OCSP answer reused for its TTL only", func(t *testing.T) {
		handler.Store(pki.OCSPHandler(ocsp.Good, now))
		requests.Store(0)
		clock := now
		cfg := appleVerifierConfig(pki)
		cfg.Online, cfg.HTTPClient, cfg.Now = true, srv.Client(), func() time.Time { return clock }
		v, err := NewAppleVerifier(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tok := pki.SignJWS(testTxn(nil))
		for i, at := range []time.Duration{0, 10 * time.Minute, 16 * time.Minute} {
			clock = now.Add(at)
			if _, err := v.VerifyJWS(context.Background(), tok); err != nil {
				t.Fatalf("verify %d: %v", i, err)
			}
		}
		if got := requests.Load(); got != 4 {
			t.Errorf("%d OCSP requests, want 4 (first check, then again after 15 minutes)", got)
		}
	})
}

// TestAppleChainCache: the cache is bounded and keeps each chain's validity
// window, so a cached chain is still refused outside it.
func TestAppleChainCache(t *testing.T) {
	a, b, c := appletest.NewPKI(t), appletest.NewPKI(t), appletest.NewPKI(t)
	cfg := appleVerifierConfig(a, b, c)
	cfg.CacheSize = 2
	v, err := NewAppleVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, p := range []*appletest.PKI{a, b, c, a} {
		if _, err := v.VerifyJWS(ctx, p.SignJWS(testTxn(nil))); err != nil {
			t.Fatal(err)
		}
	}
	if v.Len() != 2 {
		t.Errorf("cache holds %d chains, want 2", v.Len())
	}
	late := a.SignJWS(testTxn(map[string]any{"signedDate": ms(time.Date(2041, 1, 1, 0, 0, 0, 0, time.UTC))}))
	if _, err := v.VerifyJWS(ctx, late); !errors.Is(err, ErrAppleExpired) {
		t.Errorf("cached chain after the leaf expired: %v, want ErrAppleExpired", err)
	}
	early := a.SignJWS(testTxn(map[string]any{"signedDate": ms(time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC))}))
	if _, err := v.VerifyJWS(ctx, early); !errors.Is(err, ErrAppleNotYetValid) {
		t.Errorf("cached chain before the leaf was valid: %v, want ErrAppleNotYetValid", err)
	}
	cfg.CacheSize = -1
	nc, _ := NewAppleVerifier(cfg)
	if _, err := nc.VerifyJWS(ctx, a.SignJWS(testTxn(nil))); err != nil || nc.Len() != 0 {
		t.Errorf("uncached verifier: %v, len %d", err, nc.Len())
	}
	// The receipt creation date chooses the check date of app transactions.
	at := a.SignJWS(map[string]any{"receiptCreationDate": ms(time.Date(2041, 1, 1, 0, 0, 0, 0, time.UTC))})
	if _, err := nc.VerifyJWS(ctx, at); !errors.Is(err, ErrAppleExpired) {
		t.Errorf("receiptCreationDate after expiry: %v, want ErrAppleExpired", err)
	}
}

func TestNewApple(t *testing.T) {
	pki := appletest.NewPKI(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	der, pemFile := write("root.der", pki.RootDER()), write("root.pem", pki.RootPEM())
	garbage, noCert := write("garbage.cer", []byte("not a certificate")), write("key.pem", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	p8, _, _ := appletest.P8()
	apps := []config.AppleApp{{BundleID: appleTestBundle, AppAppleID: appleTestAppID}}
	both := []string{"production", "sandbox"}
	tests := []struct {
		name    string
		cfg     config.Apple
		wantErr string
		api     bool
	}{
		{"embedded Apple root", config.Apple{Apps: apps, Environments: both}, "", false},
		{"DER root file", config.Apple{Apps: apps, Environments: both, RootCertificates: []string{der}}, "", false},
		{"PEM root file", config.Apple{Apps: apps, Environments: both, RootCertificates: []string{pemFile}}, "", false},
		{"with API credentials", config.Apple{Apps: apps, Environments: both, API: config.AppleAPI{IssuerID: "i", KeyID: "k", PrivateKey: string(p8)}}, "", true},
		{"missing root file", config.Apple{Apps: apps, Environments: both, RootCertificates: []string{filepath.Join(dir, "nope.cer")}}, "root_certificates", false},
		{"garbage root file", config.Apple{Apps: apps, Environments: both, RootCertificates: []string{garbage}}, "not a DER or PEM certificate", false},
		{"PEM without certificate", config.Apple{Apps: apps, Environments: both, RootCertificates: []string{noCert}}, "no PEM CERTIFICATE", false},
		{"production app without app_apple_id", config.Apple{Apps: []config.AppleApp{{BundleID: "b"}}, Environments: both}, "app_apple_id", false},
		{"app without bundle_id", config.Apple{Apps: []config.AppleApp{{AppAppleID: 1}}, Environments: both}, "bundle_id", false},
		{"bad API key", config.Apple{Apps: apps, Environments: both, API: config.AppleAPI{IssuerID: "i", KeyID: "k", PrivateKey: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}}, "sources.apple.api", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewApple(tc.cfg, 720*time.Hour, testDeps(&fakeIngester{}, nil))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (a.API != nil) != tc.api {
				t.Errorf("API configured = %v, want %v", a.API != nil, tc.api)
			}
		})
	}
	if _, err := NewAppleVerifier(AppleVerifierConfig{Window: time.Hour}); err == nil {
		t.Error("a verifier without roots was built")
	}
	if _, err := NewAppleVerifier(AppleVerifierConfig{Roots: [][]byte{[]byte("x")}, Window: time.Hour}); err == nil {
		t.Error("a verifier with an unparsable root was built")
	}
	if _, err := NewAppleVerifier(AppleVerifierConfig{Roots: [][]byte{pki.RootDER()}}); err == nil {
		t.Error("a verifier without a dedupe window was built")
	}
}

// TestAppleStoreFailureIs503: Apple must retry when the store fails.
func TestAppleStoreFailureIs503(t *testing.T) {
	pki := appletest.NewPKI(t)
	a := newAppleForTest(t, &fakeIngester{err: errors.New("disk full")}, appleVerifierConfig(pki))
	rec := post(t, a.Handle, appleRequest(signApple(pki, testNotification("u", "DID_RENEW", "", testTxn(nil), nil))), nil)
	if rec.Code != http.StatusServiceUnavailable || errCode(t, rec) != CodeUnavailable {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}

// TestAppleErrorsLeakNothing: rejection messages and logs carry reason
// codes, never payload content such as the app user id.
func TestAppleErrorsLeakNothing(t *testing.T) {
	pki := appletest.NewPKI(t)
	var logs bytes.Buffer
	v, _ := NewAppleVerifier(appleVerifierConfig(pki))
	a := &Apple{Deps: testDeps(&fakeIngester{}, &logs), Verifier: v}
	m := testNotification("u", "DID_RENEW", "", testTxn(nil), nil)
	m["data"].(map[string]any)["appAppleId"] = 1
	rec := post(t, a.Handle, appleRequest(signApple(pki, m)), nil)
	if rec.Code != 401 {
		t.Fatalf("status %d", rec.Code)
	}
	if strings.Contains(rec.Body.String()+logs.String(), appleTestUser) {
		t.Errorf("app user id leaked: %s %s", rec.Body, logs.String())
	}
	if AppleError(errors.New("other")).Code != CodeUnauthorized {
		t.Error("unknown verifier error is not unauthorized")
	}
}

// benchmarkApple verifies one DID_RENEW notification (envelope,
// transaction, renewal info) per iteration. cores is the verifier's core
// limit: 1 keeps every notification serial, so ns/op is its CPU cost; 0
// lets the nested JWS run on a second core when it idles, so ns/op is the
// latency of a lone notification.
//
// After each notification the timer stops for three P-256 verifications of
// a fixed signature (BenchmarkP256Verify's operation), timed on their own.
// p256-equivalents is the median over the iterations of the notification's
// time divided by the mean of those three, so a burst of load from other
// processes, which hits both halves of a pair alike, does not move it;
// p256-equivalents-mean is the same from the totals.
func benchmarkApple(b *testing.B, cacheSize, cores int) {
	pki := appletest.NewPKI(b)
	cfg := appleVerifierConfig(pki)
	cfg.CacheSize = cacheSize
	v, err := NewAppleVerifier(cfg)
	if err != nil {
		b.Fatal(err)
	}
	v.cores.limit = cores
	sp := signApple(pki, testNotification("bench", "DID_RENEW", "", testTxn(nil), nil))
	ctx := context.Background()
	if _, err := v.VerifyNotification(ctx, sp); err != nil {
		b.Fatal(err)
	}
	ref := newP256Ref()
	var ratios []float64
	var total, refTotal time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if _, err := v.VerifyNotification(ctx, sp); err != nil {
			b.Fatal(err)
		}
		t := time.Since(start)
		b.StopTimer()
		r := ref.time(3)
		b.StartTimer()
		ratios = append(ratios, float64(t)/(float64(r)/3))
		total += t
		refTotal += r
	}
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "p256-equivalents")
	b.ReportMetric(float64(total)/(float64(refTotal)/3), "p256-equivalents-mean")
}

// p256Ref is the reference operation: one ECDSA P-256 verification, the
// same call BenchmarkP256Verify makes.
type p256Ref struct {
	pub       *ecdsa.PublicKey
	hash, sig []byte
}

func newP256Ref() p256Ref {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h := sha256.Sum256([]byte("header.payload"))
	sig, _ := ecdsa.SignASN1(rand.Reader, key, h[:])
	return p256Ref{&key.PublicKey, h[:], sig}
}

// time runs n verifications and returns their total time.
func (r p256Ref) time(n int) time.Duration {
	start := time.Now()
	for range n {
		if !ecdsa.VerifyASN1(r.pub, r.hash, r.sig) {
			panic("p256 reference does not verify")
		}
	}
	return time.Since(start)
}

// BenchmarkAppleVerifyColdChain verifies a whole notification (envelope,
// transaction, renewal info) with the chain cache off: three P-384 chain
// checks and three P-256 signatures, serially.
func BenchmarkAppleVerifyColdChain(b *testing.B) { benchmarkApple(b, -1, 1) }

// BenchmarkAppleVerifyCachedChain is the same with the chain cached, the
// normal case: three P-256 signature checks and the decoding around them,
// serially, so ns/op is the CPU cost of one notification.
func BenchmarkAppleVerifyCachedChain(b *testing.B) { benchmarkApple(b, 0, 1) }

// BenchmarkAppleVerifyCachedChainIdle is the cached case on an otherwise
// idle machine: the transaction and renewal info are verified side by side
// on two cores, so ns/op is the latency of one notification, not its cost.
func BenchmarkAppleVerifyCachedChainIdle(b *testing.B) { benchmarkApple(b, 0, 0) }

// BenchmarkAppleVerifyCachedChainLoaded verifies from GOMAXPROCS×4
// goroutines at once, as under full load: every core already holds a
// notification, so none takes a helper goroutine; ns/op is the machine's
// time per notification.
func BenchmarkAppleVerifyCachedChainLoaded(b *testing.B) {
	pki := appletest.NewPKI(b)
	v, err := NewAppleVerifier(appleVerifierConfig(pki))
	if err != nil {
		b.Fatal(err)
	}
	sp := signApple(pki, testNotification("bench", "DID_RENEW", "", testTxn(nil), nil))
	ctx := context.Background()
	if _, err := v.VerifyNotification(ctx, sp); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.VerifyNotification(ctx, sp); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkP256Verify is the baseline: one ECDSA P-256 verification.
func BenchmarkP256Verify(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h := sha256.Sum256([]byte("header.payload"))
	sig, _ := ecdsa.SignASN1(rand.Reader, key, h[:])
	b.ResetTimer()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&key.PublicKey, h[:], sig) {
			b.Fatal("verify")
		}
	}
}

// TestAppleNonCompactPayload: a payload that is not compact JSON (spaces,
// indentation) is decoded through the slow path with the same result, and
// fields unknown to the models are kept.
func TestAppleNonCompactPayload(t *testing.T) {
	pki := appletest.NewPKI(t)
	v, err := NewAppleVerifier(appleVerifierConfig(pki))
	if err != nil {
		t.Fatal(err)
	}
	txn := testTxn(map[string]any{"futureTxnField": "kept"})
	m := testNotification("indented", "DID_RENEW", "", nil, map[string]any{"futureTopField": []int{1, 2}})
	d := m["data"].(map[string]any)
	delete(d, "transactionInfo")
	d["signedTransactionInfo"] = pki.SignJWS(txn)
	d["signedRenewalInfo"] = pki.SignJWS(d["renewalInfo"])
	ren := d["renewalInfo"]
	delete(d, "renewalInfo")
	indented, _ := json.MarshalIndent(m, "", "  ")
	got, err := v.VerifyNotification(context.Background(), pki.SignJWS(indented))
	if err != nil {
		t.Fatal(err)
	}
	delete(d, "signedTransactionInfo")
	delete(d, "signedRenewalInfo")
	d["transactionInfo"], d["renewalInfo"] = txn, ren
	want, _ := json.Marshal(m)
	if !jsonEqual(t, got.Body, want) {
		t.Errorf("body\ngot:  %s\nwant: %s", got.Body, want)
	}
	if got.Payload.Data.TransactionInfo == nil || got.Payload.Data.RenewalInfo == nil {
		t.Error("typed nested payloads missing")
	}
	if _, err := decodedBodySlow(nil, []nestedJWS{{object: "data"}}, []byte(`{"data":1}`)); !errors.Is(err, ErrAppleMalformed) {
		t.Errorf("data not an object: %v", err)
	}
	if _, err := decodedBodySlow(nil, nil, []byte(`[`)); !errors.Is(err, ErrAppleMalformed) {
		t.Errorf("payload not an object: %v", err)
	}
}
