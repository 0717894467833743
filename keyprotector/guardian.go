package keyprotector

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"time"

	cose "github.com/veraison/go-cose"
)

// A Guardian is the private side of a guardian: the VM owner, or a guardian
// service of the fabric. Its keys may live in memory ([GenerateGuardian]),
// in a TPM ([NewTPMGuardian]) or anywhere else ([NewGuardian], or your own
// implementation of this interface).
//
// Implementations must be safe for concurrent use if the caller shares one
// Guardian between goroutines; the ones in this package are.
type Guardian interface {
	// Descriptor returns the guardian's signed public descriptor.
	Descriptor() *Descriptor
	// Sign signs a COSE ToBeSigned message (RFC 9052, section 4.4) with the
	// guardian's signing key and returns the COSE signature (for ES256 the
	// 64-byte r ‖ s of RFC 9053, section 2.1).
	Sign(ctx context.Context, message []byte) ([]byte, error)
	// Decrypt opens a key wrapped to the guardian's encryption key under
	// the given context: HPKE base mode with info = context (ciphertext is
	// enc ‖ ct), or RSA-OAEP with label = context.
	Decrypt(ctx context.Context, ciphertext, context []byte) ([]byte, error)
}

// PrivateKeys are a guardian's private keys, wherever they live.
type PrivateKeys struct {
	// Signer signs for the guardian. Its Public() must be a P-256
	// *ecdsa.PublicKey (ES256) or an ed25519.PublicKey (EdDSA). A TPM or
	// HSM key works through this interface.
	Signer crypto.Signer
	// HPKE is the decryption key for the HPKE suites. Keys in hardware
	// work through [hpke.NewDHKEMPrivateKey] (an ecdh.KeyExchanger) or
	// [hpke.NewHybridPrivateKey].
	HPKE hpke.PrivateKey
	// RSA is the decryption key for SuiteRSAOAEP3072: its Public() must be
	// a 3072-bit *rsa.PublicKey with exponent 65537, and Decrypt must
	// accept *rsa.OAEPOptions. Exactly one of HPKE and RSA is set.
	RSA crypto.Decrypter
}

// GuardianConfig configures a new guardian. The zero value is valid except
// for Name.
type GuardianConfig struct {
	// Name names the guardian in descriptors and reports. It must be set.
	Name string
	// Suite is the encryption suite of a generated guardian. If zero,
	// SuiteX25519. NewGuardian takes the suite from its keys.
	Suite Suite
	// SignatureAlgorithm is the signing algorithm of a generated guardian.
	// If zero, SignatureES256. NewGuardian takes it from its keys.
	SignatureAlgorithm SignatureAlgorithm
	// NotBefore and NotAfter bound the descriptor's validity. If zero,
	// the descriptor is valid from Now() - 1 hour (clock skew) until
	// NotBefore + [DefaultValidity].
	NotBefore, NotAfter time.Time
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
}

// DefaultValidity is the validity of a descriptor whose GuardianConfig
// leaves NotAfter zero.
const DefaultValidity = 3 * 365 * 24 * time.Hour

// KeyGuardian is a [Guardian] made of [PrivateKeys]. It is safe for
// concurrent use if its keys are.
type KeyGuardian struct {
	keys   PrivateKeys
	desc   *Descriptor
	signer cose.Signer
	// software is set when every key is an in-memory key of this package,
	// so that MarshalPrivate can export it.
	software bool
}

var _ Guardian = (*KeyGuardian)(nil)

// GenerateGuardian makes a guardian with fresh in-memory keys. RSA keys are
// never generated in memory: SuiteRSAOAEP3072 exists for keys that live in
// an HSM or TPM; use [NewGuardian] for it.
func GenerateGuardian(cfg *GuardianConfig) (*KeyGuardian, error) {
	if cfg == nil {
		cfg = &GuardianConfig{}
	}
	suite := cfg.Suite
	if suite == 0 {
		suite = SuiteX25519
	}
	var keys PrivateKeys
	switch suite {
	case SuiteX25519, SuiteP256, SuiteMLKEM768X25519:
		kem, _ := suite.kem()
		k, err := kem.GenerateKey()
		if err != nil {
			return nil, fmt.Errorf("keyprotector: generating %v key: %v", suite, err)
		}
		keys.HPKE = k
	default:
		return nil, fmt.Errorf("%w: GenerateGuardian does not make %v keys", ErrUnsupported, suite)
	}
	switch cfg.SignatureAlgorithm {
	case 0, SignatureES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("keyprotector: generating ES256 key: %v", err)
		}
		keys.Signer = k
	case SignatureEdDSA:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("keyprotector: generating Ed25519 key: %v", err)
		}
		keys.Signer = k
	default:
		return nil, fmt.Errorf("%w: signature algorithm %v", ErrUnsupported, cfg.SignatureAlgorithm)
	}
	g, err := NewGuardian(context.Background(), keys, cfg)
	if err != nil {
		return nil, err
	}
	g.software = true
	return g, nil
}

// NewGuardian makes a guardian from existing keys and signs its descriptor
// with them. cfg.Suite and cfg.SignatureAlgorithm, if set, must match the
// keys.
func NewGuardian(ctx context.Context, keys PrivateKeys, cfg *GuardianConfig) (*KeyGuardian, error) {
	if cfg == nil {
		cfg = &GuardianConfig{}
	}
	body := descriptorBody{Name: cfg.Name}
	suite, encKey, err := keys.encryptionPublic()
	if err != nil {
		return nil, err
	}
	if cfg.Suite != 0 && cfg.Suite != suite {
		return nil, fmt.Errorf("keyprotector: config asks for suite %v, keys are %v", cfg.Suite, suite)
	}
	alg, sigKey, err := signingPublic(keys.Signer)
	if err != nil {
		return nil, err
	}
	if cfg.SignatureAlgorithm != 0 && cfg.SignatureAlgorithm != alg {
		return nil, fmt.Errorf("keyprotector: config asks for %v, signing key is %v", cfg.SignatureAlgorithm, alg)
	}
	body.Suite, body.EncKey, body.SigAlg, body.SigKey = uint64(suite), encKey, int64(alg), sigKey
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	nb, na := cfg.NotBefore, cfg.NotAfter
	if nb.IsZero() {
		nb = now().Add(-time.Hour)
	}
	if na.IsZero() {
		na = nb.Add(DefaultValidity)
	}
	body.NotBefore, body.NotAfter = nb.Unix(), na.Unix()
	g := &KeyGuardian{keys: keys}
	if g.signer, err = cose.NewSigner(cose.Algorithm(alg), keys.Signer); err != nil {
		return nil, fmt.Errorf("keyprotector: signing key: %v", err)
	}
	if g.desc, err = newDescriptor(ctx, body, g.Sign); err != nil {
		return nil, err
	}
	return g, nil
}

func (k *PrivateKeys) encryptionPublic() (Suite, []byte, error) {
	switch {
	case k.HPKE != nil && k.RSA != nil:
		return 0, nil, fmt.Errorf("keyprotector: set one decryption key, not both")
	case k.HPKE != nil:
		s := Suite(k.HPKE.KEM().ID())
		if _, err := s.kem(); err != nil {
			return 0, nil, err
		}
		return s, k.HPKE.PublicKey().Bytes(), nil
	case k.RSA != nil:
		pub, ok := k.RSA.Public().(*rsa.PublicKey)
		if !ok || pub.N.BitLen() != rsaBits || pub.E != rsaExponent {
			return 0, nil, fmt.Errorf("%w: RSA decryption key must be %d bits with exponent %d", ErrUnsupported, rsaBits, rsaExponent)
		}
		return SuiteRSAOAEP3072, pub.N.FillBytes(make([]byte, rsaBits/8)), nil
	}
	return 0, nil, fmt.Errorf("keyprotector: no decryption key")
}

func signingPublic(s crypto.Signer) (SignatureAlgorithm, []byte, error) {
	if s == nil {
		return 0, nil, fmt.Errorf("keyprotector: no signing key")
	}
	switch pub := s.Public().(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			break
		}
		b, err := pub.Bytes()
		if err != nil {
			return 0, nil, fmt.Errorf("keyprotector: signing key: %v", err)
		}
		return SignatureES256, b, nil
	case ed25519.PublicKey:
		return SignatureEdDSA, bytes.Clone(pub), nil
	}
	return 0, nil, fmt.Errorf("%w: signing key must be ECDSA P-256 or Ed25519", ErrUnsupported)
}

// Descriptor implements [Guardian].
func (g *KeyGuardian) Descriptor() *Descriptor { return g.desc }

// Sign implements [Guardian].
func (g *KeyGuardian) Sign(ctx context.Context, message []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sig, err := g.signer.Sign(rand.Reader, message)
	if err != nil {
		return nil, fmt.Errorf("keyprotector: guardian signature: %v", err)
	}
	return sig, nil
}

// Decrypt implements [Guardian].
func (g *KeyGuardian) Decrypt(ctx context.Context, ciphertext, info []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if g.keys.RSA != nil {
		pt, err := g.keys.RSA.Decrypt(rand.Reader, ciphertext, &rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA256, Label: info})
		if err != nil {
			return nil, ErrUnwrap
		}
		return pt, nil
	}
	pt, err := hpke.Open(g.keys.HPKE, hpkeKDF, hpkeAEAD, info, ciphertext)
	if err != nil {
		return nil, ErrUnwrap
	}
	return pt, nil
}

// privateFile is the encoding of an in-memory guardian's private keys.
type privateFile struct {
	Version       uint64 `cbor:"1,keyasint"`
	Descriptor    []byte `cbor:"2,keyasint"`
	SigningKey    []byte `cbor:"3,keyasint"`
	DecryptionKey []byte `cbor:"4,keyasint"`
}

// MarshalPrivate encodes the guardian's private keys and descriptor, for a
// guardian made by [GenerateGuardian] or [ParseGuardian]. The result is a
// secret: store it as such.
func (g *KeyGuardian) MarshalPrivate() ([]byte, error) {
	if !g.software {
		return nil, fmt.Errorf("keyprotector: the keys of this guardian cannot be exported")
	}
	f := privateFile{Version: formatVersion, Descriptor: g.desc.raw}
	switch k := g.keys.Signer.(type) {
	case *ecdsa.PrivateKey:
		b, err := k.Bytes()
		if err != nil {
			return nil, fmt.Errorf("keyprotector: %v", err)
		}
		f.SigningKey = b
	case ed25519.PrivateKey:
		f.SigningKey = bytes.Clone(k.Seed())
	}
	switch {
	case g.keys.HPKE != nil:
		b, err := g.keys.HPKE.Bytes()
		if err != nil {
			return nil, fmt.Errorf("keyprotector: %v", err)
		}
		f.DecryptionKey = b
	case g.keys.RSA != nil:
		f.DecryptionKey = x509.MarshalPKCS1PrivateKey(g.keys.RSA.(*rsa.PrivateKey))
	}
	out := marshal(f)
	clear(f.SigningKey)
	clear(f.DecryptionKey)
	return out, nil
}

// ParseGuardian decodes the output of [KeyGuardian.MarshalPrivate] and
// checks that the keys match the descriptor.
func ParseGuardian(data []byte) (*KeyGuardian, error) {
	if len(data) > 2*MaxDescriptorSize+4096 {
		return nil, malformed("guardian private key file is too large")
	}
	var f privateFile
	if err := unmarshalCanonical(data, &f, "guardian private key"); err != nil {
		return nil, err
	}
	defer clear(f.SigningKey)
	defer clear(f.DecryptionKey)
	if f.Version != formatVersion {
		return nil, malformed("guardian private key version %d", f.Version)
	}
	d, err := ParseDescriptor(f.Descriptor)
	if err != nil {
		return nil, err
	}
	var keys PrivateKeys
	switch d.SignatureAlgorithm() {
	case SignatureES256:
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), f.SigningKey)
		if err != nil {
			return nil, malformed("ES256 private key")
		}
		keys.Signer = k
	case SignatureEdDSA:
		if len(f.SigningKey) != ed25519.SeedSize {
			return nil, malformed("Ed25519 private key")
		}
		keys.Signer = ed25519.NewKeyFromSeed(f.SigningKey)
	}
	switch d.Suite() {
	case SuiteRSAOAEP3072:
		k, err := x509.ParsePKCS1PrivateKey(f.DecryptionKey)
		if err != nil {
			return nil, malformed("RSA private key")
		}
		keys.RSA = k
	default:
		kem, _ := d.Suite().kem()
		k, err := kem.NewPrivateKey(f.DecryptionKey)
		if err != nil {
			return nil, malformed("%v private key", d.Suite())
		}
		keys.HPKE = k
	}
	suite, encKey, err := keys.encryptionPublic()
	if err != nil {
		return nil, err
	}
	alg, sigKey, err := signingPublic(keys.Signer)
	if err != nil {
		return nil, err
	}
	if computeKeyID(suite, encKey, alg, sigKey) != d.KeyID() {
		return nil, malformed("guardian private keys do not match the descriptor")
	}
	g := &KeyGuardian{keys: keys, desc: d, software: true}
	if g.signer, err = cose.NewSigner(cose.Algorithm(alg), keys.Signer); err != nil {
		return nil, fmt.Errorf("keyprotector: signing key: %v", err)
	}
	return g, nil
}
