package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/shieldvm/shieldvm/measure"
)

// This file decodes the few TPM 2.0 structures a verifier reads
// (TPM 2.0 Library, Part 2): TPMS_ATTEST, TPMT_SIGNATURE and TPMT_PUBLIC.
// The decoders are written by hand, allocate little and never panic on
// input; go-tpm's reflective decoder is used on the host side only.

// TPM constants (Part 2, sections 6.2, 6.3, 6.9).
const (
	tpmGeneratedValue = 0xff544347 // TPM_GENERATED_VALUE

	tpmSTAttestCertify = 0x8017
	tpmSTAttestQuote   = 0x8018

	algRSA    = 0x0001
	algNull   = 0x0010
	algRSASSA = 0x0014
	algRSAPSS = 0x0016
	algECDSA  = 0x0018
	algECC    = 0x0023

	eccNistP256 = 0x0003
	eccNistP384 = 0x0004
	eccNistP521 = 0x0005
)

// Object attributes (Part 2, section 8.3).
const (
	attrFixedTPM            = 1 << 1
	attrFixedParent         = 1 << 4
	attrSensitiveDataOrigin = 1 << 5
	attrRestricted          = 1 << 16
	attrDecrypt             = 1 << 17
	attrSign                = 1 << 18
)

// errShort is the cause of every truncation error of the wire decoders.
var errShort = errors.New("truncated")

// reader is a bounds-checked big-endian cursor.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errShort
	}
	r.b = nil
}

func (r *reader) u8() uint8 {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if len(r.b) < 2 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// tpm2b reads a TPM2B: a 16-bit size, then that many bytes.
func (r *reader) tpm2b() []byte { return r.bytes(int(r.u16())) }

// hashOf maps a TPM_ALG_ID of a hash to crypto.Hash.
func hashOf(alg uint16) (crypto.Hash, bool) {
	switch measure.HashAlg(alg) {
	case measure.SHA1:
		return crypto.SHA1, true
	case measure.SHA256:
		return crypto.SHA256, true
	case measure.SHA384:
		return crypto.SHA384, true
	case measure.SHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

// PCRSelection is one bank of a TPML_PCR_SELECTION: the registers a quote
// covers, as a bit set (bit r is PCR r).
type PCRSelection struct {
	Alg  measure.HashAlg
	PCRs uint32
}

// Has reports whether register r is selected.
func (s PCRSelection) Has(r uint32) bool { return r < 32 && s.PCRs&(1<<r) != 0 }

// Registers lists the selected registers in ascending order.
func (s PCRSelection) Registers() []uint32 {
	var out []uint32
	for r := range uint32(32) {
		if s.Has(r) {
			out = append(out, r)
		}
	}
	return out
}

// attestInfo is a decoded TPMS_ATTEST (Part 2, section 10.12.12).
type attestInfo struct {
	Type            uint16
	QualifiedSigner []byte
	ExtraData       []byte
	Clock           uint64
	ResetCount      uint32
	RestartCount    uint32
	Safe            bool
	FirmwareVersion uint64

	// TPMS_QUOTE_INFO, when Type is TPM_ST_ATTEST_QUOTE.
	Selection []PCRSelection
	PCRDigest []byte

	// TPMS_CERTIFY_INFO, when Type is TPM_ST_ATTEST_CERTIFY.
	CertifiedName []byte
}

// maxSelections bounds the banks of a TPML_PCR_SELECTION (a TPM has a
// handful of banks; Part 2 sets HASH_COUNT).
const maxSelections = 16

func parseAttest(b []byte) (*attestInfo, error) {
	r := reader{b: b}
	if m := r.u32(); r.err == nil && m != tpmGeneratedValue {
		return nil, fmt.Errorf("attest: TPMS_ATTEST magic is %#x, not TPM_GENERATED_VALUE", m)
	}
	a := &attestInfo{Type: r.u16()}
	a.QualifiedSigner = r.tpm2b()
	a.ExtraData = r.tpm2b()
	a.Clock = r.u64()
	a.ResetCount = r.u32()
	a.RestartCount = r.u32()
	a.Safe = r.u8() != 0
	a.FirmwareVersion = r.u64()
	switch a.Type {
	case tpmSTAttestQuote:
		n := r.u32()
		if n > maxSelections {
			return nil, fmt.Errorf("attest: TPML_PCR_SELECTION of %d banks", n)
		}
		for range n {
			alg := r.u16()
			size := int(r.u8())
			sel := r.bytes(size)
			if r.err != nil {
				break
			}
			if size > 4 {
				// Only PCRs 0-31 exist in a PC Client TPM; more select
				// bytes must be zero.
				for _, x := range sel[4:] {
					if x != 0 {
						return nil, errors.New("attest: quote selects a PCR above 31")
					}
				}
				sel = sel[:4]
			}
			var bits uint32
			for i, x := range sel {
				bits |= uint32(x) << (8 * i)
			}
			for _, s := range a.Selection {
				if s.Alg == measure.HashAlg(alg) {
					return nil, fmt.Errorf("attest: quote selects bank %v twice", measure.HashAlg(alg))
				}
			}
			a.Selection = append(a.Selection, PCRSelection{Alg: measure.HashAlg(alg), PCRs: bits})
		}
		a.PCRDigest = r.tpm2b()
	case tpmSTAttestCertify:
		a.CertifiedName = r.tpm2b()
		r.tpm2b() // qualifiedName
	default:
		if r.err == nil {
			return nil, fmt.Errorf("attest: TPMS_ATTEST type %#x is not a quote or a certification", a.Type)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("attest: TPMS_ATTEST %w", r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("attest: %d bytes after TPMS_ATTEST", len(r.b))
	}
	return a, nil
}

// signature is a decoded TPMT_SIGNATURE (Part 2, section 11.3.4).
type signature struct {
	Alg  uint16 // algRSASSA, algRSAPSS or algECDSA
	Hash crypto.Hash
	RSA  []byte
	R, S []byte
}

func parseSignature(b []byte) (*signature, error) {
	r := reader{b: b}
	s := &signature{Alg: r.u16()}
	h := r.u16()
	switch s.Alg {
	case algRSASSA, algRSAPSS:
		s.RSA = r.tpm2b()
	case algECDSA:
		s.R = r.tpm2b()
		s.S = r.tpm2b()
	default:
		if r.err == nil {
			return nil, fmt.Errorf("attest: signature algorithm %#x is not RSASSA, RSAPSS or ECDSA", s.Alg)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("attest: TPMT_SIGNATURE %w", r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("attest: %d bytes after TPMT_SIGNATURE", len(r.b))
	}
	var ok bool
	if s.Hash, ok = hashOf(h); !ok {
		return nil, fmt.Errorf("attest: signature hash algorithm %#x is not supported", h)
	}
	return s, nil
}

// publicArea is a decoded TPMT_PUBLIC (Part 2, section 12.2.4) of an RSA
// or ECC key.
type publicArea struct {
	Type       uint16
	NameAlg    crypto.Hash
	nameAlgID  uint16
	Attributes uint32
	AuthPolicy []byte
	Key        crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey
	Scheme     uint16           // signing scheme, or algNull
	SchemeHash uint16
	Raw        []byte // the TPMT_PUBLIC bytes, the input of the Name
}

// parsePublic decodes a TPMT_PUBLIC or a TPM2B_PUBLIC (the same with a
// 16-bit size in front).
func parsePublic(b []byte) (*publicArea, error) {
	if len(b) >= 2 && int(binary.BigEndian.Uint16(b)) == len(b)-2 {
		b = b[2:]
	}
	r := reader{b: b}
	p := &publicArea{Type: r.u16(), nameAlgID: r.u16(), Attributes: r.u32()}
	p.AuthPolicy = r.tpm2b()
	// symmetric: TPMT_SYM_DEF_OBJECT
	if sym := r.u16(); sym != algNull {
		r.u16() // keyBits
		r.u16() // mode
	}
	p.Scheme = r.u16()
	switch p.Type {
	case algRSA:
		if p.Scheme != algNull {
			p.SchemeHash = r.u16()
		}
		bits := r.u16()
		exp := r.u32()
		n := r.tpm2b()
		if r.err != nil {
			break
		}
		if exp == 0 {
			exp = 65537
		}
		if exp > 1<<31-1 || exp < 3 || exp%2 == 0 {
			return nil, fmt.Errorf("attest: RSA exponent %d is not supported", exp)
		}
		if len(n) == 0 || int(bits) != 8*len(n) || n[0] == 0 {
			return nil, fmt.Errorf("attest: RSA modulus of %d bytes does not match keyBits %d", len(n), bits)
		}
		p.Key = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp)}
	case algECC:
		if p.Scheme != algNull {
			p.SchemeHash = r.u16()
			if p.Scheme == 0x001A { // ECDAA has a count
				r.u16()
			}
		}
		curveID := r.u16()
		if kdf := r.u16(); kdf != algNull {
			r.u16()
		}
		x := r.tpm2b()
		y := r.tpm2b()
		if r.err != nil {
			break
		}
		var c elliptic.Curve
		switch curveID {
		case eccNistP256:
			c = elliptic.P256()
		case eccNistP384:
			c = elliptic.P384()
		case eccNistP521:
			c = elliptic.P521()
		default:
			return nil, fmt.Errorf("attest: ECC curve %#x is not supported", curveID)
		}
		size := (c.Params().BitSize + 7) / 8
		if len(x) > size || len(y) > size {
			return nil, errors.New("attest: ECC point larger than its curve")
		}
		// Check the point through crypto/ecdh's strict decoder.
		pt := make([]byte, 1+2*size)
		pt[0] = 4
		copy(pt[1+size-len(x):1+size], x)
		copy(pt[1+2*size-len(y):], y)
		k, err := ecdsa.ParseUncompressedPublicKey(c, pt)
		if err != nil {
			return nil, fmt.Errorf("attest: ECC public key: %v", err)
		}
		p.Key = k
	default:
		if r.err == nil {
			return nil, fmt.Errorf("attest: key type %#x is not RSA or ECC", p.Type)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("attest: TPMT_PUBLIC %w", r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("attest: %d bytes after TPMT_PUBLIC", len(r.b))
	}
	var ok bool
	if p.NameAlg, ok = hashOf(p.nameAlgID); !ok {
		return nil, fmt.Errorf("attest: name algorithm %#x is not supported", p.nameAlgID)
	}
	p.Raw = b
	return p, nil
}

// name returns the TPM Name of the object: nameAlg ‖ H_nameAlg(TPMT_PUBLIC)
// (Part 1, section 16).
func (p *publicArea) name() []byte {
	h := p.NameAlg.New()
	h.Write(p.Raw)
	out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+h.Size()), p.nameAlgID)
	return h.Sum(out)
}
