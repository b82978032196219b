// Package vault holds the cryptography of personal data at rest: per-subject
// data keys, the sealed record format both stores write, and the keyed hash
// that replaces raw identifiers wherever they would be a database key.
//
// A stored record is either plain JSON (it carries nothing personal) or
// sealed:
//
//	0x01 | kid (16) | uvarint len(clear) | clear JSON | nonce (12) | AES-256-GCM(personal JSON)
//
// The clear JSON is the record with its personal fields emptied; the
// personal JSON holds only those fields and is encrypted with the data key
// of the record's subject (a subscription, an app user, one notification),
// named by kid. The clear part and the kid are the additional data, so a
// personal part cannot be moved to another record. Destroying a subject's
// key (an erasure) makes every copy of its personal parts unreadable: live
// records, freed database pages, backups and replicas alike.
package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// KIDSize is the length of a key id.
const KIDSize = 16

// KID names a data key: a keyed hash of its subject, so the subject itself
// (an app user id, a subscription id) is never written next to the key.
type KID [KIDSize]byte

// String is the hex form of the id.
func (k KID) String() string { return hex.EncodeToString(k[:]) }

// MarshalText writes the id in hex.
func (k KID) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a hex id.
func (k *KID) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != KIDSize {
		return fmt.Errorf("vault: key id %q", b)
	}
	_, err := hex.Decode(k[:], b)
	return err
}

// ErrNoKey reports a data key that does not exist: never created, or
// destroyed by an erasure.
var ErrNoKey = errors.New("vault: no data key")

// ErrSealed reports a sealed record that cannot be parsed.
var ErrSealed = errors.New("vault: malformed sealed record")

// Keyring holds the data keys of one installation and its secret.
type Keyring interface {
	// Secret is the installation's 32-byte secret for keyed hashes.
	Secret() []byte
	// DataKey returns kid's data key, creating it when create is set. A
	// key that does not exist (and is not created) is ErrNoKey.
	DataKey(kid KID, create bool) (*[32]byte, error)
	// Destroy deletes data keys for good. It returns once the deletion is
	// durable.
	Destroy(kids []KID) error
	// Sync makes the keys created so far durable; a store calls it before
	// it commits records sealed with them.
	Sync() error
	Close() error
}

// Hasher computes the keyed hashes and key ids of one installation.
type Hasher struct{ secret []byte }

// NewHasher returns the hasher of a secret.
func NewHasher(secret []byte) Hasher { return Hasher{secret: append([]byte(nil), secret...)} }

func (h Hasher) mac(purpose, value string) []byte {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return m.Sum(nil)
}

// Hash is the keyed hash (hex, 128 bits) that stands in for a raw
// identifier used as a database key. purpose separates the uses.
func (h Hasher) Hash(purpose, value string) string {
	if value == "" {
		return ""
	}
	return hex.EncodeToString(h.mac(purpose, value)[:16])
}

// KID is the key id of a subject.
func (h Hasher) KID(subject string) KID {
	var k KID
	copy(k[:], h.mac("subject", subject))
	return k
}

// NewDataKey makes a random data key.
func NewDataKey() (*[32]byte, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("vault: random data key: %w", err)
	}
	return &k, nil
}

const magic = 0x01

// IsSealed reports whether a stored record is sealed.
func IsSealed(v []byte) bool { return len(v) > 0 && v[0] == magic }

// Seal builds a sealed record.
func Seal(kid KID, key *[32]byte, clear, personal []byte) ([]byte, error) {
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 1+KIDSize+binary.MaxVarintLen32+len(clear)+aead.NonceSize()+len(personal)+aead.Overhead())
	out = append(out, magic)
	out = append(out, kid[:]...)
	out = binary.AppendUvarint(out, uint64(len(clear)))
	out = append(out, clear...)
	ad := out // magic, kid, length and clear part
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("vault: nonce: %w", err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, personal, ad), nil
}

// Parts splits a sealed record. ad is what Open authenticates.
type Parts struct {
	KID                KID
	Clear              []byte
	ad, nonce, payload []byte
}

// Split parses a sealed record without decrypting it.
func Split(v []byte) (Parts, error) {
	var p Parts
	if !IsSealed(v) || len(v) < 1+KIDSize+1 {
		return p, ErrSealed
	}
	copy(p.KID[:], v[1:1+KIDSize])
	n, w := binary.Uvarint(v[1+KIDSize:])
	start := 1 + KIDSize + w
	if w <= 0 || n > uint64(len(v)-start) {
		return p, ErrSealed
	}
	end := start + int(n)
	p.Clear = v[start:end]
	p.ad = v[:end]
	if len(v)-end < 12+16 {
		return p, ErrSealed
	}
	p.nonce, p.payload = v[end:end+12], v[end+12:]
	return p, nil
}

// Open decrypts the personal part with its data key. A wrong key (a key
// destroyed and made anew for the same subject) fails authentication.
func (p Parts) Open(key *[32]byte) ([]byte, error) {
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, p.nonce, p.payload, p.ad)
	if err != nil {
		return nil, fmt.Errorf("%w: personal part does not open with key %s", ErrNoKey, p.KID)
	}
	return plain, nil
}

func gcm(key *[32]byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Wrap encrypts a data key under a key-encryption key, bound to its kid
// (the PostgreSQL keyring stores data keys wrapped).
func Wrap(kek *[32]byte, kid KID, dek *[32]byte) ([]byte, error) {
	aead, err := gcm(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, dek[:], kid[:]), nil
}

// Unwrap reverses Wrap.
func Unwrap(kek *[32]byte, kid KID, wrapped []byte) (*[32]byte, error) {
	aead, err := gcm(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < aead.NonceSize() {
		return nil, ErrSealed
	}
	plain, err := aead.Open(nil, wrapped[:aead.NonceSize()], wrapped[aead.NonceSize():], kid[:])
	if err != nil || len(plain) != 32 {
		return nil, fmt.Errorf("vault: data key %s does not unwrap with this key-encryption key", kid)
	}
	var k [32]byte
	copy(k[:], plain)
	return &k, nil
}
