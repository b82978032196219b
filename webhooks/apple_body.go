package webhooks

import (
	"bytes"
	"encoding/json"
)

// signedPayloadOf returns the signedPayload of an App Store Server
// Notifications V2 request body. Apple sends it as compact JSON with one
// member whose value is a JWS (base64url parts and dots): that form is cut
// out of the body directly, since encoding/json would scan and copy the
// many-kilobyte string twice; anything else (whitespace inside, other
// members, escapes, another spelling of the key) goes to encoding/json,
// which gives the same answer for the fast form. ok is false when there is
// no non-empty signedPayload string.
func signedPayloadOf(body []byte) (string, bool, error) {
	const open, end = `{"signedPayload":"`, `"}`
	b := bytes.Trim(body, " \t\r\n")
	if len(b) > len(open)+len(end) && string(b[:len(open)]) == open && string(b[len(b)-len(end):]) == end {
		v := b[len(open) : len(b)-len(end)]
		if jwsChars(v) {
			return string(v), true, nil
		}
	}
	var req struct {
		SignedPayload string `json:"signedPayload"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return "", false, err
	}
	return req.SignedPayload, req.SignedPayload != "", nil
}

// jwsChars reports whether v holds only the characters of a compact JWS:
// the base64url alphabet and the dots between its parts.
func jwsChars(v []byte) bool {
	for _, c := range v {
		if !jwsChar[c] {
			return false
		}
	}
	return true
}

var jwsChar = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") {
		t[c] = true
	}
	return t
}()
