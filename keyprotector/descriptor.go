package keyprotector

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// A Descriptor is the public side of a guardian: its name, its encryption
// and signing public keys, and its validity, signed by its own signing key
// (proof of possession). It plays the role of the HGS metadata document:
// a guardian service publishes it, owners put it in key protectors.
//
// A Descriptor is immutable and safe for concurrent use.
type Descriptor struct {
	raw  []byte
	body descriptorBody
	id   KeyID

	// The parsed keys, made on first use: parsing an ML-KEM key or
	// checking a point costs more than a release can afford for every
	// guardian of a key protector.
	encOnce sync.Once
	enc     *encryptionKey
	encErr  error
	verOnce sync.Once
	ver     *verifyingKey
	verErr  error
}

// encryptionKey returns the parsed encryption key.
func (d *Descriptor) encryptionKey() (*encryptionKey, error) {
	d.encOnce.Do(func() { d.enc, d.encErr = parseEncryptionKey(Suite(d.body.Suite), d.body.EncKey) })
	return d.enc, d.encErr
}

// verifyingKey returns the parsed signing public key.
func (d *Descriptor) verifyingKey() (*verifyingKey, error) {
	d.verOnce.Do(func() { d.ver, d.verErr = parseVerifyingKey(SignatureAlgorithm(d.body.SigAlg), d.body.SigKey) })
	return d.ver, d.verErr
}

// keySizes are the encoded public key sizes of each suite and algorithm.
var (
	encKeySizes = map[Suite]int{SuiteX25519: 32, SuiteP256: 65, SuiteMLKEM768X25519: 1216, SuiteRSAOAEP3072: rsaBits / 8}
	sigKeySizes = map[SignatureAlgorithm]int{SignatureES256: 65, SignatureEdDSA: 32}
)

// descriptorBody is the signed payload; see docs/keyprotector.md.
type descriptorBody struct {
	Version   uint64 `cbor:"1,keyasint"`
	Name      string `cbor:"2,keyasint"`
	Suite     uint64 `cbor:"3,keyasint"`
	EncKey    []byte `cbor:"4,keyasint"`
	SigAlg    int64  `cbor:"5,keyasint"`
	SigKey    []byte `cbor:"6,keyasint"`
	NotBefore int64  `cbor:"7,keyasint"`
	NotAfter  int64  `cbor:"8,keyasint"`
}

func computeKeyID(s Suite, encKey []byte, alg SignatureAlgorithm, sigKey []byte) KeyID {
	return sha256.Sum256(marshal([]any{"shieldvm/v1/guardian-key", uint64(s), encKey, int64(alg), sigKey}))
}

// newDescriptor builds and self-signs a descriptor.
func newDescriptor(ctx context.Context, body descriptorBody, sign signFunc) (*Descriptor, error) {
	body.Version = formatVersion
	if err := checkDescriptorBody(&body); err != nil {
		return nil, err
	}
	id := computeKeyID(Suite(body.Suite), body.EncKey, SignatureAlgorithm(body.SigAlg), body.SigKey)
	raw, err := sign1(ctx, SignatureAlgorithm(body.SigAlg), id, sign, aadDescriptor, marshal(body))
	if err != nil {
		return nil, err
	}
	// Parse what we made: this verifies the signature, which catches a
	// signer whose key does not match the public key it claimed.
	d, err := ParseDescriptor(raw)
	if err != nil {
		return nil, fmt.Errorf("keyprotector: the guardian's own descriptor does not verify: %w", err)
	}
	return d, nil
}

func checkDescriptorBody(b *descriptorBody) error {
	if b.Version != formatVersion {
		return malformed("descriptor version %d", b.Version)
	}
	if b.Name == "" || len(b.Name) > maxName || !utf8.ValidString(b.Name) {
		return malformed("guardian name must be 1 to %d bytes of UTF-8", maxName)
	}
	if b.Suite > 0xffff || !Suite(b.Suite).Valid() {
		return fmt.Errorf("%w: suite %d", ErrUnsupported, b.Suite)
	}
	if b.NotAfter <= b.NotBefore {
		return malformed("descriptor validity ends before it starts")
	}
	return nil
}

// ParseDescriptor parses an encoded descriptor and verifies its
// self-signature. It does not check the validity period: see
// [Descriptor.ValidAt].
func ParseDescriptor(data []byte) (*Descriptor, error) {
	return parseDescriptor(data, true)
}

// descriptorCache keeps parsed descriptors by the SHA-256 of their
// encoding: a guardian service sees the same few descriptors in every key
// protector, and parsing their keys again each time would cost more than the
// rest of a release. Entries are immutable; the cache is bounded and simply
// emptied when full.
var descriptorCache struct {
	sync.Mutex
	m map[[32]byte]*Descriptor
}

const descriptorCacheSize = 1024

// parseEmbeddedDescriptor is parseDescriptor(data, false) through the cache.
func parseEmbeddedDescriptor(data []byte) (*Descriptor, error) {
	key := sha256.Sum256(data)
	descriptorCache.Lock()
	d := descriptorCache.m[key]
	descriptorCache.Unlock()
	if d != nil {
		return d, nil
	}
	d, err := parseDescriptor(data, false)
	if err != nil {
		return nil, err
	}
	descriptorCache.Lock()
	if len(descriptorCache.m) >= descriptorCacheSize || descriptorCache.m == nil {
		descriptorCache.m = make(map[[32]byte]*Descriptor)
	}
	descriptorCache.m[key] = d
	descriptorCache.Unlock()
	return d, nil
}

// parseDescriptor parses a descriptor; verifySig is false only for
// descriptors inside an authorization whose owner signature has been (or is
// about to be) verified, and whose self-signatures the owner checked when
// adding them.
func parseDescriptor(data []byte, verifySig bool) (*Descriptor, error) {
	if len(data) > MaxDescriptorSize {
		return nil, malformed("descriptor is %d bytes, more than %d", len(data), MaxDescriptorSize)
	}
	s, err := parseSign1(data, "descriptor")
	if err != nil {
		return nil, err
	}
	d := &Descriptor{raw: bytes.Clone(data)}
	if err := unmarshalCanonical(s.msg.Payload, &d.body, "descriptor"); err != nil {
		return nil, err
	}
	if err := checkDescriptorBody(&d.body); err != nil {
		return nil, err
	}
	if n, ok := sigKeySizes[SignatureAlgorithm(d.body.SigAlg)]; !ok {
		return nil, fmt.Errorf("%w: signature algorithm %d", ErrUnsupported, d.body.SigAlg)
	} else if len(d.body.SigKey) != n {
		return nil, malformed("%v public key is %d bytes", SignatureAlgorithm(d.body.SigAlg), len(d.body.SigKey))
	}
	if len(d.body.EncKey) != encKeySizes[Suite(d.body.Suite)] {
		return nil, malformed("%v public key is %d bytes", Suite(d.body.Suite), len(d.body.EncKey))
	}
	d.id = computeKeyID(Suite(d.body.Suite), d.body.EncKey, SignatureAlgorithm(d.body.SigAlg), d.body.SigKey)
	if s.kid != d.id {
		return nil, fmt.Errorf("%w: descriptor signed under another key id", ErrSignature)
	}
	if verifySig {
		if _, err := d.encryptionKey(); err != nil {
			return nil, err
		}
		ver, err := d.verifyingKey()
		if err != nil {
			return nil, err
		}
		if err := s.verify(ver, aadDescriptor, "descriptor"); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Marshal returns the encoded descriptor.
func (d *Descriptor) Marshal() []byte { return bytes.Clone(d.raw) }

// KeyID returns the guardian's key id.
func (d *Descriptor) KeyID() KeyID { return d.id }

// Name returns the guardian's name. It is informative only: guardians are
// identified by [Descriptor.KeyID].
func (d *Descriptor) Name() string { return d.body.Name }

// Suite returns the suite of the guardian's encryption key.
func (d *Descriptor) Suite() Suite { return Suite(d.body.Suite) }

// SignatureAlgorithm returns the algorithm of the guardian's signing key.
func (d *Descriptor) SignatureAlgorithm() SignatureAlgorithm {
	return SignatureAlgorithm(d.body.SigAlg)
}

// EncryptionKey returns the guardian's encryption public key: the HPKE
// SerializePublicKey output, or the big-endian RSA modulus.
func (d *Descriptor) EncryptionKey() []byte { return bytes.Clone(d.body.EncKey) }

// SigningKey returns the guardian's signing public key: the uncompressed
// P-256 point, or the Ed25519 public key.
func (d *Descriptor) SigningKey() []byte { return bytes.Clone(d.body.SigKey) }

// NotBefore returns the start of the validity period.
func (d *Descriptor) NotBefore() time.Time { return time.Unix(d.body.NotBefore, 0).UTC() }

// NotAfter returns the end of the validity period.
func (d *Descriptor) NotAfter() time.Time { return time.Unix(d.body.NotAfter, 0).UTC() }

// ValidAt returns an error wrapping [ErrValidity] if t is outside the
// descriptor's validity period.
func (d *Descriptor) ValidAt(t time.Time) error {
	if u := t.Unix(); u < d.body.NotBefore || u > d.body.NotAfter {
		return fmt.Errorf("%w: guardian %q (%s) is valid from %s to %s",
			ErrValidity, d.body.Name, shortHex(d.id[:]), d.NotBefore().Format(time.RFC3339), d.NotAfter().Format(time.RFC3339))
	}
	return nil
}
