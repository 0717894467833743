package vtpm

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// NV indices of the EK certificates (TCG EK Credential Profile 2.3,
// section 2.2.1.4).
const (
	EKCertIndexRSA = 0x01c00002
	EKCertIndexECC = 0x01c0000a
)

// ekPolicy is the authPolicy of the default EK templates: PolicySecret on
// TPM_RH_ENDORSEMENT (TCG EK Credential Profile, section 2.1.5.1).
var ekPolicy = []byte{
	0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
	0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
}

const ekAttrs = oaFixedTPM | oaFixedParent | oaSensitiveDataOrigin | oaAdminWithPolicy | oaRestricted | oaDecrypt

// ekTemplateRSA and ekTemplateECC are the default EK templates (TCG EK
// Credential Profile, templates L-1 and L-2), as go-tpm-tools uses them.
func ekTemplateRSA() *publicArea {
	return &publicArea{Type: algRSA, NameAlg: algSHA256, Attrs: ekAttrs, AuthPolicy: ekPolicy,
		SymAlg: algAES, SymBits: 128, SymMode: algCFB, Scheme: algNull, KeyBits: 2048,
		Unique: make([]byte, 256)}
}

func ekTemplateECC() *publicArea {
	return &publicArea{Type: algECC, NameAlg: algSHA256, Attrs: ekAttrs, AuthPolicy: ekPolicy,
		SymAlg: algAES, SymBits: 128, SymMode: algCFB, Scheme: algNull, Curve: curveNISTP256, KDF: algNull,
		X: make([]byte, 32), Y: make([]byte, 32)}
}

// ekObject derives an endorsement primary key from a template, exactly as
// TPM2_CreatePrimary would.
func (t *TPM) ekObject(p *publicArea) (*object, error) {
	var sc sensitiveCreate
	if rc := checkTemplate(p, &sc); rc != rcSuccess {
		return nil, &ResponseError{Code: rc}
	}
	d := &deriver{hier: rhEndorsement, h: hashOf(p.NameAlg), seed: t.s.EndorsementSeed[:], name: nameOf(p.NameAlg, p.bytes())}
	o, rc := t.newObject(p, &sc, d)
	if rc != rcSuccess {
		return nil, &ResponseError{Code: rc}
	}
	return o, nil
}

// provisionEKCerts issues the RSA and ECC EK certificates and stores them
// in their platform-created NV indices.
func (t *TPM) provisionEKCerts(ca *CA, now func() time.Time) error {
	if ca.Cert == nil || ca.Key == nil {
		return errors.New("vtpm: EK CA needs a certificate and a key")
	}
	if now == nil {
		now = time.Now
	}
	for _, ek := range []struct {
		index uint32
		tmpl  *publicArea
		usage x509.KeyUsage
	}{
		{EKCertIndexRSA, ekTemplateRSA(), x509.KeyUsageKeyEncipherment},
		{EKCertIndexECC, ekTemplateECC(), x509.KeyUsageKeyAgreement},
	} {
		o, err := t.ekObject(ek.tmpl)
		if err != nil {
			return err
		}
		pub, ok := o.publicKey()
		o.clear()
		if !ok {
			return errors.New("vtpm: EK public key")
		}
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: "shieldvm vTPM EK"},
			NotBefore:             now().Add(-time.Minute),
			NotAfter:              ca.Cert.NotAfter,
			KeyUsage:              ek.usage,
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
		if err != nil {
			return fmt.Errorf("vtpm: issuing EK certificate: %w", err)
		}
		if len(der) > maxNVIndexSize {
			return errors.New("vtpm: EK certificate larger than an NV index")
		}
		t.s.NV[ek.index] = &nvIndex{
			Index:   ek.index,
			NameAlg: algSHA256,
			Attrs: nvPPWrite | nvWriteDefine | nvPPRead | nvOwnerRead | nvAuthRead | nvNoDA |
				nvWritten | nvPlatformCreate | nvWriteLocked,
			Size: uint16(len(der)),
			Data: der,
		}
	}
	return nil
}
