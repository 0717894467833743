package keyprotector

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	cose "github.com/veraison/go-cose"
)

// TPMGuardianConfig configures a TPM-backed guardian.
type TPMGuardianConfig struct {
	// Guardian names the guardian and bounds its validity. Suite and
	// SignatureAlgorithm must be zero or SuiteP256 and SignatureES256: a
	// TPM guardian uses a P-256 ECDH key (TPM2_ECDH_ZGen) and a P-256
	// ECDSA key (TPM2_Sign).
	Guardian GuardianConfig
	// HierarchyAuth is the owner hierarchy's authorization value. If nil,
	// empty.
	HierarchyAuth []byte
}

// TPMGuardian is a [Guardian] whose private keys never leave a TPM. Both
// keys are primary keys of the owner hierarchy, derived by the TPM from
// its owner seed and the guardian's name, so the same TPM re-creates them
// with [OpenTPMGuardian] and no key blob needs to be stored. It is safe for
// concurrent use (commands are serialized). Close flushes the keys.
type TPMGuardian struct {
	*KeyGuardian
	dev *tpmDevice
}

var _ Guardian = (*TPMGuardian)(nil)

// NewTPMGuardian creates the guardian's keys in tpm and signs its
// descriptor with them.
func NewTPMGuardian(ctx context.Context, tpm transport.TPM, cfg *TPMGuardianConfig) (*TPMGuardian, error) {
	if cfg == nil {
		cfg = &TPMGuardianConfig{}
	}
	gc := cfg.Guardian
	if (gc.Suite != 0 && gc.Suite != SuiteP256) || (gc.SignatureAlgorithm != 0 && gc.SignatureAlgorithm != SignatureES256) {
		return nil, fmt.Errorf("%w: a TPM guardian is HPKE-P256 with ES256", ErrUnsupported)
	}
	if gc.Name == "" {
		return nil, malformed("guardian name must be set")
	}
	dev, keys, err := openTPMKeys(ctx, tpm, gc.Name, cfg.HierarchyAuth)
	if err != nil {
		return nil, err
	}
	g, err := NewGuardian(ctx, keys, &gc)
	if err != nil {
		dev.close()
		return nil, err
	}
	return &TPMGuardian{KeyGuardian: g, dev: dev}, nil
}

// OpenTPMGuardian re-creates the keys of the guardian that descriptor
// describes in tpm, and checks that they are the keys of the descriptor.
func OpenTPMGuardian(ctx context.Context, tpm transport.TPM, descriptor []byte, hierarchyAuth []byte) (*TPMGuardian, error) {
	d, err := ParseDescriptor(descriptor)
	if err != nil {
		return nil, err
	}
	if d.Suite() != SuiteP256 || d.SignatureAlgorithm() != SignatureES256 {
		return nil, fmt.Errorf("%w: not a TPM guardian descriptor", ErrUnsupported)
	}
	dev, keys, err := openTPMKeys(ctx, tpm, d.Name(), hierarchyAuth)
	if err != nil {
		return nil, err
	}
	suite, encKey, err := keys.encryptionPublic()
	if err == nil {
		alg, sigKey, err2 := signingPublic(keys.Signer)
		if err = err2; err == nil && computeKeyID(suite, encKey, alg, sigKey) != d.KeyID() {
			err = fmt.Errorf("keyprotector: this TPM does not hold the keys of guardian %q", d.Name())
		}
	}
	if err != nil {
		dev.close()
		return nil, err
	}
	g := &KeyGuardian{keys: keys, desc: d}
	if g.signer, err = cose.NewSigner(cose.AlgorithmES256, keys.Signer); err != nil {
		dev.close()
		return nil, fmt.Errorf("keyprotector: %v", err)
	}
	return &TPMGuardian{KeyGuardian: g, dev: dev}, nil
}

// Close flushes the guardian's keys from the TPM. It does not close the
// transport.
func (g *TPMGuardian) Close() error { return g.dev.close() }

// tpmDevice serializes commands to one TPM.
type tpmDevice struct {
	mu      sync.Mutex
	tpm     transport.TPM
	handles []tpm2.TPMHandle
}

func (d *tpmDevice) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, h := range d.handles {
		if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(d.tpm); err != nil {
			errs = append(errs, err)
		}
	}
	d.handles = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("keyprotector: flushing TPM keys: %w", err)
	}
	return nil
}

// tpmKeyTemplate is a P-256 primary key template; unique makes the key
// depend on the guardian's name and the key's role.
func tpmKeyTemplate(sign bool, name, role string) tpm2.TPMTPublic {
	u := sha256.Sum256([]byte("shieldvm/v1/tpm-guardian/" + role + "/" + name))
	scheme := tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDH, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDH, &tpm2.TPMSKeySchemeECDH{HashAlg: tpm2.TPMAlgSHA256})}
	if sign {
		scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})}
	}
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			Decrypt:             !sign,
			SignEncrypt:         sign,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{CurveID: tpm2.TPMECCNistP256, Scheme: scheme}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: u[:]},
			Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
		}),
	}
}

func openTPMKeys(ctx context.Context, tpm transport.TPM, name string, auth []byte) (*tpmDevice, PrivateKeys, error) {
	if err := ctx.Err(); err != nil {
		return nil, PrivateKeys{}, err
	}
	dev := &tpmDevice{tpm: tpm}
	create := func(sign bool, role string) (*tpmKey, error) {
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(auth)},
			InPublic:      tpm2.New2B(tpmKeyTemplate(sign, name, role)),
		}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("keyprotector: TPM2_CreatePrimary: %w", err)
		}
		dev.handles = append(dev.handles, rsp.ObjectHandle)
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			return nil, fmt.Errorf("keyprotector: TPM public key: %w", err)
		}
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, fmt.Errorf("keyprotector: TPM public key: %w", err)
		}
		point, err := pub.Unique.ECC()
		if err != nil {
			return nil, fmt.Errorf("keyprotector: TPM public key: %w", err)
		}
		epub, err := tpm2.ECDSAPub(parms, point)
		if err != nil {
			return nil, fmt.Errorf("keyprotector: TPM public key: %w", err)
		}
		return &tpmKey{dev: dev, handle: tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, pub: epub}, nil
	}
	enc, err := create(false, "encryption")
	if err != nil {
		dev.close()
		return nil, PrivateKeys{}, err
	}
	sig, err := create(true, "signing")
	if err != nil {
		dev.close()
		return nil, PrivateKeys{}, err
	}
	xpub, err := enc.pub.ECDH()
	if err != nil {
		dev.close()
		return nil, PrivateKeys{}, fmt.Errorf("keyprotector: TPM public key: %w", err)
	}
	hk, err := hpke.NewDHKEMPrivateKey(&tpmECDH{tpmKey: enc, xpub: xpub})
	if err != nil {
		dev.close()
		return nil, PrivateKeys{}, fmt.Errorf("keyprotector: %v", err)
	}
	return dev, PrivateKeys{Signer: (*tpmSigner)(sig), HPKE: hk}, nil
}

type tpmKey struct {
	dev    *tpmDevice
	handle tpm2.NamedHandle
	pub    *ecdsa.PublicKey
}

// tpmECDH is an ecdh.KeyExchanger over TPM2_ECDH_ZGen (TPM 2.0 Part 3,
// section 14.5).
type tpmECDH struct {
	*tpmKey
	xpub *ecdh.PublicKey
}

func (k *tpmECDH) PublicKey() *ecdh.PublicKey { return k.xpub }
func (k *tpmECDH) Curve() ecdh.Curve          { return ecdh.P256() }
func (k *tpmECDH) ECDH(peer *ecdh.PublicKey) ([]byte, error) {
	if peer.Curve() != ecdh.P256() {
		return nil, fmt.Errorf("keyprotector: TPM ECDH: peer is not P-256")
	}
	b := peer.Bytes() // 0x04 ‖ X ‖ Y
	k.dev.mu.Lock()
	defer k.dev.mu.Unlock()
	rsp, err := tpm2.ECDHZGen{
		KeyHandle: tpm2.AuthHandle{Handle: k.handle.Handle, Name: k.handle.Name, Auth: tpm2.PasswordAuth(nil)},
		InPoint: tpm2.New2B(tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: b[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: b[33:65]},
		}),
	}.Execute(k.dev.tpm)
	if err != nil {
		return nil, fmt.Errorf("keyprotector: TPM2_ECDH_ZGen: %w", err)
	}
	p, err := rsp.OutPoint.Contents()
	if err != nil || len(p.X.Buffer) > 32 {
		return nil, fmt.Errorf("keyprotector: TPM2_ECDH_ZGen: bad point")
	}
	z := make([]byte, 32)
	copy(z[32-len(p.X.Buffer):], p.X.Buffer)
	return z, nil
}

// tpmSigner is a crypto.Signer over TPM2_Sign (TPM 2.0 Part 3, section
// 20.2) with ECDSA-SHA256.
type tpmSigner tpmKey

func (k *tpmSigner) Public() crypto.PublicKey { return k.pub }
func (k *tpmSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	// go-cose passes nil options for ES256 digests.
	if (opts != nil && opts.HashFunc() != crypto.SHA256) || len(digest) != sha256.Size {
		return nil, fmt.Errorf("keyprotector: TPM signer signs SHA-256 digests only")
	}
	k.dev.mu.Lock()
	defer k.dev.mu.Unlock()
	rsp, err := tpm2.Sign{
		KeyHandle:  tpm2.AuthHandle{Handle: k.handle.Handle, Name: k.handle.Name, Auth: tpm2.PasswordAuth(nil)},
		Digest:     tpm2.TPM2BDigest{Buffer: digest},
		InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(k.dev.tpm)
	if err != nil {
		return nil, fmt.Errorf("keyprotector: TPM2_Sign: %w", err)
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("keyprotector: TPM2_Sign: %w", err)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig.SignatureR.Buffer),
		new(big.Int).SetBytes(sig.SignatureS.Buffer),
	})
}
