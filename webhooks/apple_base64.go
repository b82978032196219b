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
// 1.6 times as fast on a notification payload: eight characters become six
// bytes with eight table look-ups. The last, partial quantum is left to
// jwsBase64, and on any character outside the alphabet the whole input is
// decoded again by jwsBase64, so the bytes, the count and the error are
// always exactly jwsBase64's (FuzzDecodeJWSSegment checks this). dst must
// hold jwsBase64.DecodedLen(len(src)) bytes.
func decodeJWSSegment(dst, src []byte) (int, error) {
	t := &jwsBase64Table
	n, i := 0, 0
	for ; i+8 <= len(src) && n+8 <= len(dst); i += 8 {
		s := src[i : i+8 : i+8]
		v := t[0][s[0]] | t[1][s[1]] | t[2][s[2]] | t[3][s[3]]
		w := t[0][s[4]] | t[1][s[5]] | t[2][s[6]] | t[3][s[7]]
		if (v|w)&0xff000000 != 0 {
			return jwsBase64.Decode(dst, src)
		}
		// Six bytes decoded; the two spare bytes are overwritten next.
		binary.BigEndian.PutUint64(dst[n:], uint64(v)<<40|uint64(w)<<16)
		n += 6
	}
	m, err := jwsBase64.Decode(dst[n:], src[i:])
	if err != nil {
		return jwsBase64.Decode(dst, src)
	}
	return n + m, nil
}
