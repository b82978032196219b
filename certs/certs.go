package certs

import (
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
)

// appleRootG3 is the DER of Apple Root CA - G3 as published at
// https://www.apple.com/certificateauthority/AppleRootCA-G3.cer.
//
//go:embed AppleRootCA-G3.cer
var appleRootG3 []byte

// AppleRootG3SHA256 is the SHA-256 fingerprint (hex, lower case) of Apple
// Root CA - G3, as published by Apple:
// 63:34:3A:BF:B8:9A:6A:03:EB:B5:7E:9B:3F:5F:A7:BE:7C:4F:5C:75:6F:30:17:B3:A8:C4:88:C3:65:3E:91:79.
const AppleRootG3SHA256 = "63343abfb89a6a03ebb57e9b3f5fa7be7c4f5c756f3017b3a8c488c3653e9179"

// ErrFingerprint reports an embedded root whose bytes are not Apple's.
var ErrFingerprint = errors.New("certs: embedded Apple Root CA - G3 does not match its pinned SHA-256 fingerprint")

// AppleRootG3 returns a copy of the embedded Apple Root CA - G3 (DER) after
// checking its fingerprint and that it parses.
func AppleRootG3() ([]byte, error) {
	return checkRoot(appleRootG3, AppleRootG3SHA256)
}

// checkRoot verifies der against a hex SHA-256 fingerprint and parses it.
func checkRoot(der []byte, fingerprint string) ([]byte, error) {
	sum := sha256.Sum256(der)
	if got := hex.EncodeToString(sum[:]); got != fingerprint {
		return nil, fmt.Errorf("%w: got %s, want %s (replace certs/AppleRootCA-G3.cer with the file from https://www.apple.com/certificateauthority/)", ErrFingerprint, got, fingerprint)
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("certs: Apple Root CA - G3 does not parse: %w", err)
	}
	return append([]byte(nil), der...), nil
}
