package keyprotector

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
)

// A Suite is the way a key is wrapped to a guardian or sealed to a host. The
// HPKE suites (RFC 9180, base mode) all use HKDF-SHA256 and AES-256-GCM; the
// value of an HPKE suite is its KEM identifier. The set is closed.
type Suite uint16

const (
	// SuiteX25519 is HPKE with DHKEM(X25519, HKDF-SHA256). It is the
	// default.
	SuiteX25519 Suite = 0x0020
	// SuiteP256 is HPKE with DHKEM(P-256, HKDF-SHA256), for users who need
	// FIPS-approved algorithms, and for TPM-held keys (TPM2_ECDH_ZGen).
	SuiteP256 Suite = 0x0010
	// SuiteMLKEM768X25519 is HPKE with the hybrid post-quantum KEM
	// MLKEM768-X25519 (X-Wing, draft-ietf-hpke-pq, KEM 0x647a).
	SuiteMLKEM768X25519 Suite = 0x647a
	// SuiteRSAOAEP3072 is RSAES-OAEP with SHA-256 and MGF1-SHA-256 over a
	// 3072-bit key (RFC 8017), the context as the OAEP label. It is not
	// HPKE; it exists only for guardians whose key lives in an HSM or TPM
	// that can do nothing else. It cannot be a host release key.
	SuiteRSAOAEP3072 Suite = 0xfe01
)

const (
	rsaBits     = 3072
	rsaExponent = 65537
)

var (
	hpkeKDF  = hpke.HKDFSHA256()
	hpkeAEAD = hpke.AES256GCM()
)

func (s Suite) String() string {
	switch s {
	case SuiteX25519:
		return "HPKE-X25519"
	case SuiteP256:
		return "HPKE-P256"
	case SuiteMLKEM768X25519:
		return "HPKE-MLKEM768-X25519"
	case SuiteRSAOAEP3072:
		return "RSA-OAEP-3072"
	}
	return fmt.Sprintf("Suite(0x%04x)", uint16(s))
}

// PostQuantum reports whether s resists a quantum adversary recording
// traffic today (harvest now, decrypt later).
func (s Suite) PostQuantum() bool { return s == SuiteMLKEM768X25519 }

// Valid reports whether s is a suite this package implements.
func (s Suite) Valid() bool {
	switch s {
	case SuiteX25519, SuiteP256, SuiteMLKEM768X25519, SuiteRSAOAEP3072:
		return true
	}
	return false
}

// ParseSuite returns the suite named by String, or the suite with that
// number ("0x647a").
func ParseSuite(name string) (Suite, error) {
	for _, s := range []Suite{SuiteX25519, SuiteP256, SuiteMLKEM768X25519, SuiteRSAOAEP3072} {
		if name == s.String() {
			return s, nil
		}
	}
	switch name {
	case "x25519", "X25519":
		return SuiteX25519, nil
	case "p256", "P256", "P-256":
		return SuiteP256, nil
	case "mlkem768x25519", "MLKEM768-X25519", "xwing", "X-Wing":
		return SuiteMLKEM768X25519, nil
	case "rsa-oaep-3072", "rsa", "RSA":
		return SuiteRSAOAEP3072, nil
	}
	return 0, fmt.Errorf("%w: suite %q", ErrUnsupported, name)
}

func (s Suite) kem() (hpke.KEM, error) {
	switch s {
	case SuiteX25519:
		return hpke.DHKEM(ecdh.X25519()), nil
	case SuiteP256:
		return hpke.DHKEM(ecdh.P256()), nil
	case SuiteMLKEM768X25519:
		return hpke.MLKEM768X25519(), nil
	}
	return nil, fmt.Errorf("%w: %v is not an HPKE suite", ErrUnsupported, s)
}

// GenerateHostKey makes a host release key of suite s: an HPKE private key
// whose public half the host binds its evidence to. s must be an HPKE suite.
func (s Suite) GenerateHostKey() (hpke.PrivateKey, error) {
	kem, err := s.kem()
	if err != nil {
		return nil, err
	}
	return kem.GenerateKey()
}

// encryptionKey is a parsed guardian or host public encryption key.
type encryptionKey struct {
	suite Suite
	hpke  hpke.PublicKey
	rsa   *rsa.PublicKey
}

func parseEncryptionKey(s Suite, b []byte) (*encryptionKey, error) {
	switch s {
	case SuiteRSAOAEP3072:
		if len(b) != rsaBits/8 || b[0]&0x80 == 0 {
			return nil, malformed("RSA-3072 modulus must be %d bytes with the top bit set", rsaBits/8)
		}
		if b[len(b)-1]&1 == 0 {
			return nil, malformed("RSA modulus is even")
		}
		return &encryptionKey{suite: s, rsa: &rsa.PublicKey{N: new(big.Int).SetBytes(b), E: rsaExponent}}, nil
	}
	kem, err := s.kem()
	if err != nil {
		return nil, err
	}
	pk, err := kem.NewPublicKey(b)
	if err != nil {
		return nil, malformed("%v public key: %v", s, err)
	}
	return &encryptionKey{suite: s, hpke: pk}, nil
}

// seal wraps plaintext to k under info. For HPKE the result is enc ‖ ct.
func (k *encryptionKey) seal(info, plaintext []byte) ([]byte, error) {
	if k.rsa != nil {
		out, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, k.rsa, plaintext, info)
		if err != nil {
			return nil, fmt.Errorf("keyprotector: RSA-OAEP: %v", err)
		}
		return out, nil
	}
	out, err := hpke.Seal(k.hpke, hpkeKDF, hpkeAEAD, info, plaintext)
	if err != nil {
		return nil, fmt.Errorf("keyprotector: HPKE seal: %v", err)
	}
	return out, nil
}

// ID identifies one key protector (one VM) across generations.
type ID [16]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// KeyID identifies a guardian's keys: SHA-256 over the canonical encoding of
// its suite, encryption key, signature algorithm and signing key (see
// docs/keyprotector.md). The name and validity are not part of it.
type KeyID [32]byte

func (id KeyID) String() string { return hex.EncodeToString(id[:]) }
