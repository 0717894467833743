package keyprotector

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
)

// TransportKeySize is the size of a transport key, in bytes.
const TransportKeySize = 32

// Labels for [TransportKey.Derive]. Each names one use of TK; a key derived
// for one use is independent of the keys derived for the others.
const (
	// LabelVTPMState derives the key that seals a VM's vTPM state.
	LabelVTPMState = "shieldvm/v1/vtpm-state"
	// LabelMigration derives the key that protects a VM in migration.
	LabelMigration = "shieldvm/v1/migration"
	// LabelShieldingData derives the key that encrypts shielding data.
	LabelShieldingData = "shieldvm/v1/shielding-data"
)

// A TransportKey is a VM's transport key TK at one generation. Keys for each
// use are derived from it with [TransportKey.Derive]; TK itself is never
// exposed.
//
// Call Destroy when done: it zeroes the key (best effort: the Go runtime may
// have copied it). A TransportKey is safe for concurrent use until then.
type TransportKey struct {
	key [TransportKeySize]byte
	id  ID
	gen uint64
}

// ID returns the id of the key protector the key belongs to.
func (k *TransportKey) ID() ID { return k.id }

// Generation returns the key's generation.
func (k *TransportKey) Generation() uint64 { return k.gen }

// Derive returns the 32-byte subkey of TK for label: HKDF-SHA256 (RFC 5869)
// with TK as the secret, no salt, and "shieldvm/v1/derive:" ‖ label as the
// info. Use the Label constants.
func (k *TransportKey) Derive(label string) [32]byte {
	var out [32]byte
	b, err := hkdf.Key(sha256.New, k.key[:], nil, "shieldvm/v1/derive:"+label, len(out))
	if err != nil {
		panic("keyprotector: HKDF: " + err.Error()) // unreachable: 32 bytes is always allowed
	}
	copy(out[:], b)
	clear(b)
	return out
}

// Equal reports, in constant time, whether k and o are the same key.
func (k *TransportKey) Equal(o *TransportKey) bool {
	return subtle.ConstantTimeCompare(k.key[:], o.key[:]) == 1 && k.id == o.id && k.gen == o.gen
}

// Destroy zeroes the key.
func (k *TransportKey) Destroy() { clear(k.key[:]) }

// mac returns the key protector MAC of msg: HMAC-SHA256 under a key derived
// from TK with a label Derive cannot produce.
func (k *TransportKey) mac(msg []byte) []byte {
	mk, err := hkdf.Key(sha256.New, k.key[:], nil, "shieldvm/v1/kp-mac-key", 32)
	if err != nil {
		panic("keyprotector: HKDF: " + err.Error())
	}
	h := hmac.New(sha256.New, mk)
	clear(mk)
	h.Write(msg)
	return h.Sum(nil)
}
