package webhooks

import "encoding/binary"

// jwsBase64Table maps a base64url character, by its place in a quantum of
// four, to its six bits at that place; anything else has the top byte set.
var jwsBase64Table = func() (t [4][256]uint32) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range t {
		for c := range t[i] {
			t[i][c] = 0xff000000
		}
	}
	for v, c := range []byte(alphabet) {
		t[0][c] = uint32(v) << 18
		t[1][c] = uint32(v) << 12
		t[2][c] = uint32(v) << 6
		t[3][c] = uint32(v)
	}
	return t
}()

// decodeJWSSegment is jwsBase64.Decode (strict, unpadded base64url), about
// 1.6 times as fast on a notification payload: see decodeJWSFast. On any
// character outside the alphabet the whole input is decoded again by
// jwsBase64, so the bytes, the count and the error are always exactly
// jwsBase64's (FuzzDecodeJWSSegment checks this). dst must hold
// jwsBase64.DecodedLen(len(src)) bytes.
func decodeJWSSegment(dst, src []byte) (int, error) {
	if n, ok := decodeJWSFast(dst, src); ok {
		return n, nil
	}
	return jwsBase64.Decode(dst, src)
}

// decodeJWSFast decodes src as jwsBase64.Decode does when src holds only
// base64url characters (no CR or LF, which jwsBase64 would skip) and
// decodes without error; otherwise it reports false and leaves dst in any
// state. Eight characters become six bytes with eight table look-ups; the
// last, partial quantum is left to jwsBase64. dst must hold
// jwsBase64.DecodedLen(len(src)) bytes.
func decodeJWSFast(dst, src []byte) (int, bool) {
	t := &jwsBase64Table
	n, i := 0, 0
	for ; i+8 <= len(src) && n+8 <= len(dst); i += 8 {
		s := src[i : i+8 : i+8]
		v := t[0][s[0]] | t[1][s[1]] | t[2][s[2]] | t[3][s[3]]
		w := t[0][s[4]] | t[1][s[5]] | t[2][s[6]] | t[3][s[7]]
		if (v|w)&0xff000000 != 0 {
			return 0, false
		}
		// Six bytes decoded; the two spare bytes are overwritten next.
		binary.BigEndian.PutUint64(dst[n:], uint64(v)<<40|uint64(w)<<16)
		n += 6
	}
	tail := src[i:]
	for _, c := range tail {
		if c == '\n' || c == '\r' {
			return 0, false
		}
	}
	m, err := jwsBase64.Decode(dst[n:], tail)
	if err != nil {
		return 0, false
	}
	return n + m, true
}
