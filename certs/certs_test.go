package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"testing"
)

func TestAppleRootG3(t *testing.T) {
	der, err := AppleRootG3()
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "Apple Root CA - G3" || !c.IsCA {
		t.Errorf("subject %q, CA %v", c.Subject.CommonName, c.IsCA)
	}
	der[0] ^= 0xff // a copy: the embedded bytes stay intact
	if _, err := AppleRootG3(); err != nil {
		t.Errorf("embedded root changed through a returned copy: %v", err)
	}
}

func TestCheckRoot(t *testing.T) {
	if _, err := checkRoot([]byte("mangled download"), AppleRootG3SHA256); !errors.Is(err, ErrFingerprint) {
		t.Errorf("mangled root: %v, want ErrFingerprint", err)
	}
	junk := []byte("not a certificate")
	sum := sha256.Sum256(junk)
	if _, err := checkRoot(junk, hex.EncodeToString(sum[:])); err == nil || errors.Is(err, ErrFingerprint) {
		t.Errorf("unparsable root with a matching fingerprint: %v, want a parse error", err)
	}
}
