package webhooks

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postback/postback/mapping"
	"github.com/postback/postback/webhooks/appletest"
)

// TestAppleHeaderCache: a header found in the cache by its bytes skips only
// the header and chain checks; the signature, the payload and the chain's
// validity at the signing date are checked every time, and any other
// header bytes (another x5c, another alg) go through every check again.
func TestAppleHeaderCache(t *testing.T) {
	good := appletest.NewPKI(t)
	foreign := appletest.NewPKI(t, appletest.WithName("Foreign"))
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	v, err := NewAppleVerifier(appleVerifierConfig(good))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	valid := good.SignJWS(testTxn(nil))
	if _, err := v.VerifyJWS(ctx, valid); err != nil {
		t.Fatal(err)
	}
	header := valid[:strings.IndexByte(valid, '.')]
	if _, ok := v.cache.get([]byte(header)); !ok {
		t.Fatal("the verified header is not cached")
	}
	parts := strings.Split(valid, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[10] ^= 1
	forgedSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	otherPayload := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"bundleId":"com.evil.app","signedDate":1795953600000}`)) + "." + parts[2]
	byOtherKey := good.Sign(testTxn(nil), appletest.JWS{Key: otherKey})
	if !strings.HasPrefix(byOtherKey, header+".") {
		t.Fatal("the JWS signed by another key does not share the cached header")
	}
	foreignJWS := foreign.SignJWS(testTxn(nil))
	mixedChain := good.Sign(testTxn(nil), appletest.JWS{X5C: appletest.X5C(foreign.LeafDER(), good.IntermediateDER(), good.RootDER())})
	tests := []struct {
		name string
		jws  string
		want error
	}{
		{"cached header, signature altered", forgedSig, ErrAppleSignature},
		{"cached header, payload swapped", otherPayload, ErrAppleSignature},
		{"cached header, signed by another key", byOtherKey, ErrAppleSignature},
		{"cached header, signed after the leaf expired", good.SignJWS(testTxn(map[string]any{"signedDate": ms(time.Date(2041, 1, 1, 0, 0, 0, 0, time.UTC))})), ErrAppleExpired},
		{"another x5c: untrusted chain", foreignJWS, ErrAppleUntrustedChain},
		{"another x5c: foreign leaf under the cached intermediate", mixedChain, ErrAppleUntrustedChain},
		{"cached x5c under alg ES384", good.Sign(testTxn(nil), appletest.JWS{Alg: "ES384"}), ErrAppleAlg},
		{"cached x5c with crit", good.Sign(testTxn(nil), appletest.JWS{Header: map[string]any{"crit": []string{"b64"}}}), ErrAppleCrit},
		{"cached header, payload not base64", parts[0] + "." + parts[1][:40] + "*" + parts[1][41:] + "." + parts[2], ErrAppleMalformed},
		{"cached header, signature not base64", parts[0] + "." + parts[1] + "." + parts[2][:40] + "*" + parts[2][41:], ErrAppleMalformed},
		{"cached header, signature in non-canonical base64", parts[0] + "." + parts[1] + "." + spareBits(t, parts[2]), ErrAppleMalformed},
		{"cached header, line break in the payload", parts[0] + "." + parts[1][:40] + "\n" + parts[1][40:] + "." + parts[2], errAppleLineBreak},
		{"cached header, line break in the signature", parts[0] + "." + parts[1] + "." + parts[2][:40] + "\r" + parts[2][40:], errAppleLineBreak},
		{"cached header, line break at the end", valid + "\n", errAppleLineBreak},
		{"cached chain key as the header", string(chainKey(good.LeafDER(), good.IntermediateDER())) + "." + parts[1] + "." + parts[2], ErrAppleMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // the second time with whatever the first one cached
				if _, err := v.VerifyJWS(ctx, tc.jws); !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
			}
		})
	}
	// The same chain under other header bytes (an extra kid) verifies from
	// the chain cache and is cached under its own header.
	before := v.Len()
	withKid := good.Sign(testTxn(nil), appletest.JWS{Header: map[string]any{"kid": "k1"}})
	if _, err := v.VerifyJWS(ctx, withKid); err != nil {
		t.Fatal(err)
	}
	if v.Len() != before+1 {
		t.Errorf("cache holds %d entries after a new header with a known chain, want %d", v.Len(), before+1)
	}
	// Only a header under which a JWS verified is cached, and only up to
	// maxCachedHeader bytes.
	before = v.Len()
	if _, err := v.VerifyJWS(ctx, good.Sign(testTxn(nil), appletest.JWS{Key: otherKey, Header: map[string]any{"kid": "forged"}})); !errors.Is(err, ErrAppleSignature) {
		t.Fatalf("forged signature under a new header: %v", err)
	}
	big := good.Sign(testTxn(nil), appletest.JWS{Header: map[string]any{"pad": strings.Repeat("x", maxCachedHeader)}})
	if _, err := v.VerifyJWS(ctx, big); err != nil {
		t.Fatal(err)
	}
	if v.Len() != before {
		t.Errorf("cache holds %d entries after a forged and an oversize header, want %d", v.Len(), before)
	}
	// A cached header still verifies afterwards.
	if _, err := v.VerifyJWS(ctx, valid); err != nil {
		t.Fatal(err)
	}
}

// TestSigningDigest: the digest continued from a cached "header." state is
// the SHA-256 of the whole signing input, and resuming leaves the state
// untouched for the next JWS, also when the work buffer is reused.
func TestSigningDigest(t *testing.T) {
	header := bytes.Repeat([]byte("eyJhbGciOiJFUzI1NiJ9"), 37)
	prefix := signingPrefix(header)
	if prefix == nil {
		t.Fatal("sha256 state does not marshal")
	}
	saved := bytes.Clone(prefix)
	w := jwsWorks.New().(*jwsWork)
	for range 2 {
		for _, payload := range [][]byte{nil, []byte("e30"), bytes.Repeat([]byte("abcdefgh"), 300)} {
			want := sha256.Sum256(append(append(append([]byte{}, header...), '.'), payload...))
			if got := w.digest(prefix, header, payload); !bytes.Equal(got, want[:]) {
				t.Errorf("from the cached state: %x, want %x", got, want)
			}
			if got := w.digest(nil, header, payload); !bytes.Equal(got, want[:]) {
				t.Errorf("without a cached state: %x, want %x", got, want)
			}
		}
	}
	if !bytes.Equal(prefix, saved) {
		t.Error("the cached state was written")
	}
	if got, want := w.digest([]byte("not a sha256 state"), header, nil), sha256.Sum256(append(bytes.Clone(header), '.')); !bytes.Equal(got, want[:]) {
		t.Errorf("from an unusable state: %x, want %x", got, want)
	}
}

// TestVerifyES256 checks the R || S to DER re-encoding against
// ecdsa.Verify, including values with leading zero bytes and with the top
// bit set, and refuses zero, out-of-range and wrongly sized signatures.
func TestVerifyES256(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("header.payload"))
	var der es256DER
	fixed := func(r, s *big.Int) []byte {
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig
	}
	var leadingZero, topBit int
	for i := 0; i < 3000 && (leadingZero < 3 || topBit < 3 || i < 200); i++ {
		r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := fixed(r, s)
		if sig[0] == 0 || sig[32] == 0 {
			leadingZero++
		}
		if sig[0]&0x80 != 0 || sig[32]&0x80 != 0 {
			topBit++
		}
		if err := verifyES256(&key.PublicKey, digest[:], sig, &der); err != nil {
			t.Fatalf("valid signature %x refused: %v", sig, err)
		}
		sig[63] ^= 1
		if err := verifyES256(&key.PublicKey, digest[:], sig, &der); !errors.Is(err, ErrAppleSignature) {
			t.Fatalf("altered signature %x: %v", sig, err)
		}
	}
	if leadingZero == 0 || topBit == 0 {
		t.Fatalf("no signature with a leading zero byte (%d) or the top bit set (%d)", leadingZero, topBit)
	}
	n := elliptic.P256().Params().N
	r, s, _ := ecdsa.Sign(rand.Reader, key, digest[:])
	for name, sig := range map[string][]byte{
		"zero R":      fixed(big.NewInt(0), s),
		"zero S":      fixed(r, big.NewInt(0)),
		"R = n":       fixed(n, s),
		"R = 2^256-1": fixed(new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1)), s),
		"S = n":       fixed(r, n),
		"63 bytes":    fixed(r, s)[:63],
		"65 bytes":    append(fixed(r, s), 0),
		"ASN.1 bytes": func() []byte { b, _ := ecdsa.SignASN1(rand.Reader, key, digest[:]); return b }(),
	} {
		if err := verifyES256(&key.PublicKey, digest[:], sig, &der); !errors.Is(err, ErrAppleSignature) {
			t.Errorf("%s: %v, want ErrAppleSignature", name, err)
		}
	}
}

// TestCoreGate: a helper goroutine is taken only while fewer verifications
// than the limit are in progress, and pair returns the first error in
// order whichever way it ran.
func TestCoreGate(t *testing.T) {
	g := &coreGate{limit: 2}
	g.enter()
	if !g.tryExtra() {
		t.Fatal("no helper with one of two slots held")
	}
	if g.tryExtra() {
		t.Fatal("a helper beyond the limit")
	}
	g.leave()
	g.leave()
	if g.busy.Load() != 0 {
		t.Fatalf("busy %d after leaving", g.busy.Load())
	}

	// Parallel: second runs while first waits for it.
	g.enter()
	started := make(chan struct{})
	err := g.pair(func() error {
		select {
		case <-started:
			return nil
		case <-time.After(5 * time.Second):
			return errors.New("second did not run alongside first")
		}
	}, func() error { close(started); return nil })
	g.leave()
	if err != nil {
		t.Fatal(err)
	}

	errA, errB := errors.New("a"), errors.New("b")
	for _, limit := range []int{1, 2} {
		g := &coreGate{limit: limit}
		g.enter()
		secondRan := false
		if err := g.pair(func() error { return errA }, func() error { secondRan = true; return errB }); err != errA {
			t.Errorf("limit %d: both failing: %v, want a", limit, err)
		}
		if limit == 1 && secondRan {
			t.Error("serial: second ran after first failed")
		}
		if err := g.pair(func() error { return nil }, func() error { return errB }); err != errB {
			t.Errorf("limit %d: second failing: %v, want b", limit, err)
		}
		if err := g.pair(func() error { return nil }, func() error { return nil }); err != nil {
			t.Errorf("limit %d: %v", limit, err)
		}
		g.leave()
		if !settled(g) {
			t.Errorf("limit %d: busy %d after the pairs", limit, g.busy.Load())
		}
	}

	// A helper that has not started when first is done: second runs in
	// the caller, once, and the helper does nothing.
	g = &coreGate{limit: 2}
	g.enter()
	var runs atomic.Int32
	if err := g.pair(func() error { return nil }, func() error { runs.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	g.leave()
	if !settled(g) || runs.Load() != 1 {
		t.Errorf("second ran %d times, busy %d", runs.Load(), g.busy.Load())
	}
}

// settled waits up to 5 s for every slot of g to be released: a helper
// that found its task taken by the caller leaves when it gets to run.
func settled(g *coreGate) bool {
	for deadline := time.Now().Add(5 * time.Second); g.busy.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// TestAppleNestedSerialAndParallel: the same notifications verified with
// the nested JWS one after the other and side by side give the same
// result, or the same error, including when only one nested JWS is bad.
func TestAppleNestedSerialAndParallel(t *testing.T) {
	pki := appletest.NewPKI(t)
	foreign := appletest.NewPKI(t, appletest.WithName("Foreign"))
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	renewal := map[string]any{"originalTransactionId": appleTestOrig, "autoRenewProductId": "pro_monthly", "productId": "pro_monthly",
		"autoRenewStatus": 1, "signedDate": ms(appleSigned), "environment": "Production"}
	envelope := func(txn, ren string) string {
		m := testNotification("par", "DID_RENEW", "", nil, nil)
		d := m["data"].(map[string]any)
		delete(d, "transactionInfo")
		delete(d, "renewalInfo")
		if txn != "" {
			d["signedTransactionInfo"] = txn
		}
		if ren != "" {
			d["signedRenewalInfo"] = ren
		}
		return pki.SignJWS(m)
	}
	goodTxn, goodRen := pki.SignJWS(testTxn(nil)), pki.SignJWS(renewal)
	badTxn := pki.Sign(testTxn(nil), appletest.JWS{Key: otherKey})
	otherRenewal := map[string]any{}
	for k, v := range renewal {
		otherRenewal[k] = v
	}
	otherRenewal["environment"] = "Sandbox"
	cases := map[string]string{
		"both valid":                       envelope(goodTxn, goodRen),
		"transaction only":                 envelope(goodTxn, ""),
		"renewal only":                     envelope("", goodRen),
		"transaction bad signature":        envelope(badTxn, goodRen),
		"renewal untrusted chain":          envelope(goodTxn, foreign.SignJWS(renewal)),
		"renewal of another environment":   envelope(goodTxn, pki.SignJWS(otherRenewal)),
		"transaction of another bundle id": envelope(pki.SignJWS(testTxn(map[string]any{"bundleId": "com.other.app"})), goodRen),
		"both bad":                         envelope(badTxn, foreign.SignJWS(renewal)),
		"renewal malformed":                envelope(goodTxn, "a.b.c"),
	}
	verifier := func(limit int) *AppleVerifier {
		v, err := NewAppleVerifier(appleVerifierConfig(pki))
		if err != nil {
			t.Fatal(err)
		}
		v.cores.limit = limit
		return v
	}
	serial, parallel := verifier(1), verifier(8)
	for name, sp := range cases {
		t.Run(name, func(t *testing.T) {
			for range 2 { // cold, then cached chains
				a, errA := serial.VerifyNotification(context.Background(), sp)
				b, errB := parallel.VerifyNotification(context.Background(), sp)
				if (errA == nil) != (errB == nil) || (errA != nil && errA.Error() != errB.Error()) {
					t.Fatalf("serial: %v\nparallel: %v", errA, errB)
				}
				if errA != nil {
					if AppleError(errA).Code != AppleError(errB).Code {
						t.Fatalf("codes %s and %s", AppleError(errA).Code, AppleError(errB).Code)
					}
					continue
				}
				if !reflect.DeepEqual(a, b) {
					t.Fatalf("serial %+v\nparallel %+v", a, b)
				}
			}
		})
	}
	if !settled(&serial.cores) || !settled(&parallel.cores) {
		t.Error("core slots left held")
	}
	for _, name := range []string{"transaction bad signature", "both bad"} {
		if _, err := parallel.VerifyNotification(context.Background(), cases[name]); !errors.Is(err, ErrAppleSignature) || !strings.HasPrefix(err.Error(), "signedTransactionInfo: ") {
			t.Errorf("%s: %v, want the transaction's signature error", name, err)
		}
	}
}

// TestAppleDecodeAroundNested: the payload is decoded with the nested JWS
// cut out only when that provably reads the same values as decoding it
// whole; every other payload takes the full decode, and both verify to the
// same notification and stored body.
func TestAppleDecodeAroundNested(t *testing.T) {
	pki := appletest.NewPKI(t)
	txn := pki.SignJWS(testTxn(nil))
	ren := pki.SignJWS(map[string]any{"originalTransactionId": appleTestOrig, "autoRenewStatus": 1, "signedDate": ms(appleSigned), "environment": "Production"})
	top := `"notificationType":"DID_RENEW","notificationUUID":"dec","version":"2.0","signedDate":` + fmtInt(ms(appleSigned))
	data := `"appAppleId":1234567890,"bundleId":"com.example.app","environment":"Production","status":1`
	escaped := strings.Replace(txn, ".", `\u002e`, 1)
	cases := []struct {
		name    string
		payload string
		fast    bool
	}{
		{"compact", `{` + top + `,"data":{` + data + `,"signedTransactionInfo":"` + txn + `","signedRenewalInfo":"` + ren + `"}}`, true},
		{"renewal first", `{"data":{"signedRenewalInfo":"` + ren + `",` + data + `,"signedTransactionInfo":"` + txn + `"},` + top + `}`, true},
		{"transaction only", `{` + top + `,"data":{` + data + `,"signedTransactionInfo":"` + txn + `"}}`, true},
		{"empty transaction", `{` + top + `,"data":{` + data + `,"signedTransactionInfo":"","signedRenewalInfo":"` + ren + `"}}`, true},
		{"key also in an unknown object first", `{"extra":{"signedTransactionInfo":"x.y.z"},` + top + `,"data":{` + data + `,"signedTransactionInfo":"` + txn + `"}}`, false},
		{"key also in an unknown object after", `{` + top + `,"data":{` + data + `,"signedTransactionInfo":"` + txn + `"},"extra":{"signedTransactionInfo":"x.y.z"}}`, true},
		{"duplicate key, the later one counts", `{` + top + `,"data":{` + data + `,"signedTransactionInfo":"x.y.z","signedTransactionInfo":"` + txn + `"}}`, false},
		{"key in another case", `{` + top + `,"data":{` + data + `,"SignedTransactionInfo":"` + txn + `"}}`, false},
		{"exact key then another case", `{` + top + `,"data":{` + data + `,"signedTransactionInfo":"x.y.z","SIGNEDTRANSACTIONINFO":"` + txn + `"}}`, false},
		{"escape inside the JWS", `{` + top + `,"data":{` + data + `,"signedTransactionInfo":"` + escaped + `"}}`, false},
		{"NUL escape elsewhere", `{` + top + `,"data":{` + data + `,"signedTransactionInfo":"` + txn + `"},"note":"\u0000"}`, false},
		{"space after the colon", `{` + top + `,"data":{` + data + `,"signedTransactionInfo": "` + txn + `"}}`, false},
		{"app transaction", `{` + top + `,"appData":{"appAppleId":1234567890,"bundleId":"com.example.app","environment":"Production","signedAppTransactionInfo":"` +
			pki.SignJWS(map[string]any{"bundleId": appleTestBundle, "receiptType": "Production", "signedDate": ms(appleSigned)}) + `"}}`, true},
	}
	v, err := NewAppleVerifier(appleVerifierConfig(pki))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := []byte(tc.payload)
			var fast mapping.AppleNotification
			var fastNested [len(nestedFields)]nestedJWS
			if got := decodeAroundNested(raw, &fast, &fastNested); got != tc.fast {
				t.Fatalf("fast path taken: %v, want %v", got, tc.fast)
			}
			var full mapping.AppleNotification
			if err := json.Unmarshal(raw, &full); err != nil {
				t.Fatal(err)
			}
			if tc.fast {
				for i := range nestedFields {
					want := ""
					if s := nestedSlot(&full, i); s != nil {
						want, *s = *s, ""
					}
					if got := string(fastNested[i].jws); got != want {
						t.Errorf("nested %d: %.40q, want %.40q", i, got, want)
					}
				}
				if !reflect.DeepEqual(fast, full) {
					t.Errorf("decoded\n%+v\nwant\n%+v", fast, full)
				}
			}
			got, err := v.VerifyNotification(context.Background(), pki.SignJWS(raw))
			if strings.Contains(tc.name, "duplicate") || strings.Contains(tc.name, "then another case") || strings.Contains(tc.name, "unknown object") {
				// x.y.z is what the decoder reads for the field in some of
				// these: it must fail, not slip past.
				if s := nestedSlot(&full, 0); s != nil && *s == "x.y.z" {
					if !errors.Is(err, ErrAppleMalformed) {
						t.Fatalf("x.y.z verified: %v", err)
					}
					return
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			// The stored body is the payload with the nested JWS decoded:
			// every spelling of its key gives way to the decoded payload.
			var want map[string]any
			_ = json.Unmarshal(raw, &want)
			var fullAgain mapping.AppleNotification
			_ = json.Unmarshal(raw, &fullAgain)
			for i, f := range nestedFields {
				obj, _ := want[f.object].(map[string]any)
				s := nestedSlot(&fullAgain, i)
				if obj == nil || s == nil || *s == "" {
					continue
				}
				payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(*s, ".")[1])
				var decoded any
				_ = json.Unmarshal(payload, &decoded)
				for k := range obj {
					if strings.EqualFold(k, f.signedKey) {
						delete(obj, k)
					}
				}
				obj[f.decodedKey] = decoded
			}
			wantBody, _ := json.Marshal(want)
			if !jsonEqual(t, got.Body, wantBody) {
				t.Errorf("body\ngot:  %s\nwant: %s", got.Body, wantBody)
			}
			if bytes.Contains(got.Body, []byte(`"signedTransactionInfo":"ey`)) {
				t.Errorf("a verified JWS left in the body: %s", got.Body)
			}
		})
	}
}

func fmtInt(n int64) string { return big.NewInt(n).String() }

// TestPlainJSONEnd compares the word-at-a-time scan with a byte loop for
// every byte value at every position of a block of four words, a word and
// the tail, and for every pair of byte values in one word, with and
// without a quote after them.
func TestPlainJSONEnd(t *testing.T) {
	naive := func(b []byte) int {
		for i, c := range b {
			switch {
			case c == '"':
				return i
			case c < 0x20 || c >= 0x80 || c == '\\':
				return -1
			}
		}
		return -1
	}
	for _, n := range []int{0, 1, 7, 8, 9, 16, 23, 31, 32, 33, 40, 64, 71} {
		for _, end := range []string{"", `"`, `"x`, "\\", "\x00"} {
			for pos := 0; pos < n; pos++ {
				for c := 0; c < 256; c++ {
					b := append(bytes.Repeat([]byte("A"), n), end...)
					b[pos] = byte(c)
					if got, want := plainJSONEnd(b), naive(b); got != want {
						t.Fatalf("%q: %d, want %d", b, got, want)
					}
				}
			}
		}
	}
	for c1 := range 256 {
		for c2 := range 256 {
			for _, b := range [][]byte{[]byte("AAAAAAAA"), []byte("AAAAAAAAAA\"AA"), []byte("AAAAAAA\"")} {
				b[2], b[5] = byte(c1), byte(c2)
				if got, want := plainJSONEnd(b), naive(b); got != want {
					t.Fatalf("%q: %d, want %d", b, got, want)
				}
			}
		}
	}
	jws := "eyJhbGciOiJFUzI1NiJ9.e30.c2ln-_~\x7f !"
	if got := plainJSONEnd([]byte(jws + `"}`)); got != len(jws) {
		t.Errorf("base64url, dots and printable ASCII: end %d, want %d", got, len(jws))
	}
}

// TestAppleSignatureFirst: a notification's signatures are checked last
// (pendingSigs), yet the error is the one checking each JWS in turn gives:
// a bad signature wins over whatever is wrong in the payload it signs and
// in every JWS after it, and the first bad signature in order wins, with
// the nested checks run serially or side by side.
func TestAppleSignatureFirst(t *testing.T) {
	good := appletest.NewPKI(t)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged := appletest.JWS{Key: otherKey}
	txn := func(over map[string]any) map[string]any { return testTxn(over) }
	renewal := func(env string) map[string]any {
		return map[string]any{"originalTransactionId": appleTestOrig, "productId": "pro_monthly", "autoRenewStatus": 1, "signedDate": ms(appleSigned), "environment": env}
	}
	type nestedJWS struct{ txn, ren, appTxn string }
	notification := func(n nestedJWS, over map[string]any, envJWS appletest.JWS) string {
		m := testNotification("sig-first", "DID_RENEW", "", nil, over)
		d := m["data"].(map[string]any)
		delete(d, "transactionInfo")
		delete(d, "renewalInfo")
		if n.txn != "" {
			d["signedTransactionInfo"] = n.txn
		}
		if n.ren != "" {
			d["signedRenewalInfo"] = n.ren
		}
		if n.appTxn != "" {
			m["appData"] = map[string]any{"signedAppTransactionInfo": n.appTxn}
		}
		return good.Sign(m, envJWS)
	}
	goodTxn, goodRen := good.SignJWS(txn(nil)), good.SignJWS(renewal("Production"))
	badTxn, badRen := good.Sign(txn(nil), forged), good.Sign(renewal("Production"), forged)
	tests := []struct {
		name   string
		jws    string
		want   error
		prefix string
	}{
		{"forged notification of an unknown app", notification(nestedJWS{goodTxn, goodRen, ""}, map[string]any{"data": map[string]any{"bundleId": "com.other.app"}}, forged), ErrAppleSignature, "apple: JWS signature"},
		{"forged notification without UUID", notification(nestedJWS{goodTxn, goodRen, ""}, map[string]any{"notificationUUID": nil}, forged), ErrAppleSignature, "apple: JWS signature"},
		{"forged notification, stale", notification(nestedJWS{goodTxn, goodRen, ""}, map[string]any{"signedDate": ms(testNow.Add(-721 * time.Hour))}, forged), ErrAppleSignature, "apple: JWS signature"},
		{"forged notification, transaction not JSON", notification(nestedJWS{good.SignJWS([]byte("[")), goodRen, ""}, nil, forged), ErrAppleSignature, "apple: JWS signature"},
		{"forged notification, forged transaction", notification(nestedJWS{badTxn, goodRen, ""}, nil, forged), ErrAppleSignature, "apple: JWS signature"},
		{"forged transaction of another app", notification(nestedJWS{good.Sign(txn(map[string]any{"bundleId": "com.evil.app"}), forged), goodRen, ""}, nil, appletest.JWS{}), ErrAppleSignature, "signedTransactionInfo: apple: JWS signature"},
		{"forged transaction, renewal of another environment", notification(nestedJWS{badTxn, good.SignJWS(renewal("Sandbox")), ""}, nil, appletest.JWS{}), ErrAppleSignature, "signedTransactionInfo: apple: JWS signature"},
		{"forged transaction and renewal", notification(nestedJWS{badTxn, badRen, ""}, nil, appletest.JWS{}), ErrAppleSignature, "signedTransactionInfo: apple: JWS signature"},
		{"forged transaction, app transaction of another app", notification(nestedJWS{badTxn, goodRen, good.SignJWS(map[string]any{"bundleId": "com.evil.app", "receiptType": "Production", "signedDate": ms(appleSigned)})}, nil, appletest.JWS{}), ErrAppleSignature, "signedTransactionInfo: apple: JWS signature"},
		{"forged renewal of another environment", notification(nestedJWS{goodTxn, good.Sign(renewal("Sandbox"), forged), ""}, nil, appletest.JWS{}), ErrAppleSignature, "signedRenewalInfo: apple: JWS signature"},
		{"forged renewal alone", notification(nestedJWS{"", badRen, ""}, nil, appletest.JWS{}), ErrAppleSignature, "signedRenewalInfo: apple: JWS signature"},
		{"forged app transaction", notification(nestedJWS{goodTxn, goodRen, good.Sign(map[string]any{"bundleId": appleTestBundle, "receiptType": "Production", "signedDate": ms(appleSigned)}, forged)}, nil, appletest.JWS{}), ErrAppleSignature, "signedAppTransactionInfo: apple: JWS signature"},
		{"transaction not JSON before a forged renewal", notification(nestedJWS{good.SignJWS([]byte("[")), badRen, ""}, nil, appletest.JWS{}), ErrAppleMalformed, "signedTransactionInfo: apple: malformed"},
		{"renewal of another environment", notification(nestedJWS{goodTxn, good.SignJWS(renewal("Sandbox")), ""}, nil, appletest.JWS{}), ErrAppleNestedEnvironment, "signedRenewalInfo: apple: nested"},
		// The nested JWS share the notification's header: its chain is
		// still checked at each one's own signedDate.
		{"transaction signed after the leaf expired", notification(nestedJWS{good.SignJWS(txn(map[string]any{"signedDate": ms(time.Date(2041, 1, 1, 0, 0, 0, 0, time.UTC))})), goodRen, ""}, nil, appletest.JWS{}), ErrAppleExpired, "signedTransactionInfo: apple: certificate expired"},
		{"forged renewal under another header", notification(nestedJWS{goodTxn, good.Sign(renewal("Production"), appletest.JWS{Key: otherKey, Header: map[string]any{"kid": "r"}}), ""}, nil, appletest.JWS{}), ErrAppleSignature, "signedRenewalInfo: apple: JWS signature"},
	}
	for _, cores := range []int{1, 2} {
		v, err := NewAppleVerifier(appleVerifierConfig(good))
		if err != nil {
			t.Fatal(err)
		}
		v.cores.limit = cores
		ctx := context.Background()
		for _, tc := range tests {
			for round := range 2 { // the second time with the chain cached
				_, err := v.VerifyNotification(ctx, tc.jws)
				if !errors.Is(err, tc.want) || !strings.HasPrefix(fmt.Sprint(err), tc.prefix) {
					t.Errorf("cores %d, %s, round %d: %v, want %v starting %q", cores, tc.name, round, err, tc.want, tc.prefix)
				}
			}
		}
		for _, n := range []nestedJWS{{goodTxn, goodRen, ""}, {good.Sign(txn(nil), appletest.JWS{Header: map[string]any{"kid": "t"}}), goodRen, ""}} {
			if _, err := v.VerifyNotification(ctx, notification(n, nil, appletest.JWS{})); err != nil {
				t.Fatalf("cores %d: valid notification: %v", cores, err)
			}
		}
		// A header is cached only once a JWS under it has verified.
		withKid := notification(nestedJWS{goodTxn, goodRen, ""}, nil, appletest.JWS{Key: otherKey, Header: map[string]any{"kid": "k1"}})
		if _, err := v.VerifyNotification(ctx, withKid); !errors.Is(err, ErrAppleSignature) {
			t.Fatalf("cores %d: forged notification under a new header: %v", cores, err)
		}
		if _, ok := v.cache.get([]byte(withKid[:strings.IndexByte(withKid, '.')])); ok {
			t.Errorf("cores %d: the header of a forged notification was cached", cores)
		}
	}
}
