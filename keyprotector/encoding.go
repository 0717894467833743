package keyprotector

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
	cose "github.com/veraison/go-cose"
)

// Size caps. Every decoder refuses larger inputs before parsing.
const (
	// MaxKeyProtectorSize caps an encoded key protector (and shielding
	// data's embedded key protector).
	MaxKeyProtectorSize = 1 << 20
	// MaxDescriptorSize caps an encoded guardian descriptor.
	MaxDescriptorSize = 8 << 10
	// MaxGuardians caps the guardians of one key protector, owner included.
	MaxGuardians = 64
	// MaxShieldingDataSize caps encoded shielding data.
	MaxShieldingDataSize = 4 << 20
	// maxName caps a guardian name, in bytes.
	maxName = 256
	// maxNonce caps a release binding nonce, in bytes.
	maxNonce = 64
)

// formatVersion is the version of every structure defined here.
const formatVersion = 1

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	opts := cbor.CoreDetEncOptions()
	opts.NilContainers = cbor.NilContainerAsEmpty
	encMode, err = opts.EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   16,
		MaxArrayElements:  4096,
		MaxMapPairs:       4096,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// marshal encodes v in core deterministic CBOR. The types passed here
// always encode; an error is a bug.
func marshal(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		panic("keyprotector: internal encoding error: " + err.Error())
	}
	return b
}

// unmarshalCanonical decodes data into v and requires data to be exactly
// the deterministic encoding of the decoded value, so that every accepted
// value has one encoding and no byte can change without changing the value.
func unmarshalCanonical(data []byte, v any, what string) error {
	if err := decMode.Unmarshal(data, v); err != nil {
		return malformed("%s: %v", what, err)
	}
	again, err := encMode.Marshal(v)
	if err != nil || !bytes.Equal(again, data) {
		return malformed("%s: not in deterministic encoding", what)
	}
	return nil
}

// SignatureAlgorithm is the COSE algorithm (RFC 9053) of a guardian's
// signing key.
type SignatureAlgorithm int64

const (
	// SignatureES256 is ECDSA over P-256 with SHA-256 (COSE -7), the
	// default.
	SignatureES256 SignatureAlgorithm = SignatureAlgorithm(cose.AlgorithmES256)
	// SignatureEdDSA is Ed25519 (COSE -8).
	SignatureEdDSA SignatureAlgorithm = SignatureAlgorithm(cose.AlgorithmEdDSA)
)

func (a SignatureAlgorithm) String() string {
	switch a {
	case SignatureES256:
		return "ES256"
	case SignatureEdDSA:
		return "EdDSA"
	}
	return fmt.Sprintf("SignatureAlgorithm(%d)", int64(a))
}

// verifyingKey is a parsed guardian signing public key.
type verifyingKey struct {
	alg      SignatureAlgorithm
	verifier cose.Verifier
}

func parseVerifyingKey(alg SignatureAlgorithm, b []byte) (*verifyingKey, error) {
	var pub any
	switch alg {
	case SignatureES256:
		pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b)
		if err != nil {
			return nil, malformed("ES256 public key: %v", err)
		}
		pub = pk
	case SignatureEdDSA:
		if len(b) != ed25519.PublicKeySize {
			return nil, malformed("Ed25519 public key is %d bytes", len(b))
		}
		pub = ed25519.PublicKey(bytes.Clone(b))
	default:
		return nil, fmt.Errorf("%w: signature algorithm %d", ErrUnsupported, int64(alg))
	}
	v, err := cose.NewVerifier(cose.Algorithm(alg), pub)
	if err != nil {
		return nil, malformed("signing key: %v", err)
	}
	return &verifyingKey{alg: alg, verifier: v}, nil
}

// External AAD of each COSE_Sign1 kind: domain separation, so that a
// signature over one kind of object never verifies as another.
var (
	aadDescriptor    = []byte("shieldvm/v1/guardian-descriptor")
	aadAuthorization = []byte("shieldvm/v1/kp-authorization")
	aadKeyProtector  = []byte("shieldvm/v1/key-protector")
)

// protectedHeader is the only protected header this package writes or
// accepts: the algorithm and the signer's key id.
type protectedHeader struct {
	Alg int64  `cbor:"1,keyasint"`
	Kid []byte `cbor:"4,keyasint"`
}

// signFunc signs a COSE ToBeSigned message.
type signFunc func(ctx context.Context, message []byte) ([]byte, error)

type coseSigner struct {
	ctx  context.Context
	alg  SignatureAlgorithm
	sign signFunc
}

func (s coseSigner) Algorithm() cose.Algorithm { return cose.Algorithm(s.alg) }
func (s coseSigner) Sign(_ io.Reader, content []byte) ([]byte, error) {
	return s.sign(s.ctx, content)
}

// sign1 makes a tagged COSE_Sign1 over payload.
func sign1(ctx context.Context, alg SignatureAlgorithm, kid KeyID, sign signFunc, external, payload []byte) ([]byte, error) {
	inner := marshal(protectedHeader{Alg: int64(alg), Kid: kid[:]})
	msg := cose.Sign1Message{
		Headers: cose.Headers{
			RawProtected:   marshal(inner),
			RawUnprotected: []byte{0xa0},
		},
		Payload: payload,
	}
	if err := msg.Sign(rand.Reader, external, coseSigner{ctx, alg, sign}); err != nil {
		return nil, fmt.Errorf("keyprotector: signing: %w", err)
	}
	out, err := msg.MarshalCBOR()
	if err != nil {
		return nil, fmt.Errorf("keyprotector: encoding COSE_Sign1: %v", err)
	}
	return out, nil
}

// signed is a parsed, not yet verified, COSE_Sign1.
type signed struct {
	msg *cose.Sign1Message
	alg SignatureAlgorithm
	kid KeyID
}

// parseSign1 parses a tagged COSE_Sign1 in the one form this package
// writes; it verifies nothing.
func parseSign1(data []byte, what string) (*signed, error) {
	msg := new(cose.Sign1Message)
	if err := msg.UnmarshalCBOR(data); err != nil {
		return nil, malformed("%s: COSE_Sign1: %v", what, err)
	}
	if !bytes.Equal(msg.Headers.RawUnprotected, []byte{0xa0}) {
		return nil, malformed("%s: unprotected header must be empty", what)
	}
	var inner []byte
	if err := unmarshalCanonical(msg.Headers.RawProtected, &inner, what+" protected header"); err != nil {
		return nil, err
	}
	var h protectedHeader
	if err := unmarshalCanonical(inner, &h, what+" protected header"); err != nil {
		return nil, err
	}
	if len(h.Kid) != len(KeyID{}) {
		return nil, malformed("%s: key id must be %d bytes", what, len(KeyID{}))
	}
	if msg.Payload == nil {
		return nil, malformed("%s: no payload", what)
	}
	again, err := msg.MarshalCBOR()
	if err != nil || !bytes.Equal(again, data) {
		return nil, malformed("%s: not in deterministic encoding", what)
	}
	s := &signed{msg: msg, alg: SignatureAlgorithm(h.Alg)}
	copy(s.kid[:], h.Kid)
	return s, nil
}

// verify checks the signature with k under the given external AAD.
func (s *signed) verify(k *verifyingKey, external []byte, what string) error {
	if s.alg != k.alg {
		return fmt.Errorf("%w: %s: algorithm %v, key is %v", ErrSignature, what, s.alg, k.alg)
	}
	if err := s.msg.Verify(external, k.verifier); err != nil {
		return fmt.Errorf("%w: %s", ErrSignature, what)
	}
	return nil
}
