package vtpm

import (
	"crypto"
	_ "crypto/sha1" // the SHA-1 PCR bank
	"crypto/sha256"
	_ "crypto/sha512"
)

// hashOf returns the hash function of a TPM hash algorithm, or 0.
func hashOf(alg uint16) crypto.Hash {
	switch alg {
	case algSHA1:
		return crypto.SHA1
	case algSHA256:
		return crypto.SHA256
	case algSHA384:
		return crypto.SHA384
	case algSHA512:
		return crypto.SHA512
	}
	return 0
}

// digestSize is the size of alg's digests, or 0 for TPM_ALG_NULL (the
// name algorithm of some external objects) and algorithms we do not
// implement, where crypto.Hash.Size would panic.
func digestSize(alg uint16) int {
	if h := hashOf(alg); h != 0 {
		return h.Size()
	}
	return 0
}

// hashAlgs lists the implemented hash algorithms in TPM_ALG_ID order.
var hashAlgs = [...]uint16{algSHA1, algSHA256, algSHA384, algSHA512}

// digestOf hashes the concatenation of parts with alg.
func digestOf(alg uint16, parts ...[]byte) []byte {
	h := hashOf(alg).New()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// Object attributes (TPMA_OBJECT), Part 2, section 8.3.
const (
	oaFixedTPM             = 1 << 1
	oaSTClear              = 1 << 2
	oaFixedParent          = 1 << 4
	oaSensitiveDataOrigin  = 1 << 5
	oaUserWithAuth         = 1 << 6
	oaAdminWithPolicy      = 1 << 7
	oaNoDA                 = 1 << 10
	oaEncryptedDuplication = 1 << 11
	oaRestricted           = 1 << 16
	oaDecrypt              = 1 << 17
	oaSign                 = 1 << 18
	oaX509Sign             = 1 << 19
	oaReserved             = 0xFFF0F309
)

// publicArea is a decoded TPMT_PUBLIC (Part 2, section 12.2.4). Only the
// fields its type uses are set. parsePublic and marshal round-trip exactly.
type publicArea struct {
	Type       uint16
	NameAlg    uint16
	Attrs      uint32
	AuthPolicy []byte

	// TPMT_SYM_DEF_OBJECT of RSA, ECC (storage keys) and symcipher objects.
	SymAlg, SymBits, SymMode uint16

	// Signing, decryption or keyed-hash scheme.
	Scheme, SchemeHash uint16
	SchemeCount        uint16 // ECDAA count
	SchemeKDF          uint16 // XOR kdf

	// RSA.
	KeyBits  uint16
	Exponent uint32

	// ECC.
	Curve   uint16
	KDF     uint16
	KDFHash uint16

	// Unique: RSA modulus, keyed-hash or symcipher digest, or ECC point.
	Unique []byte
	X, Y   []byte
}

const (
	maxRSAKeyBytes = 384 // RSA-3072
	maxECCKeyBytes = 48  // P-384
)

func isHash(alg uint16) bool { return hashOf(alg) != 0 }

// parsePublic decodes a TPMT_PUBLIC. allowNullName permits TPM_ALG_NULL as
// nameAlg (TPMI_ALG_HASH+), which only LoadExternal accepts.
func parsePublic(r *reader, allowNullName bool) *publicArea {
	p := &publicArea{}
	p.Type = r.u16()
	if !r.ok() {
		return nil
	}
	switch p.Type {
	case algRSA, algECC, algKeyedHash, algSymCipher:
	default:
		r.fail(rcType)
		return nil
	}
	p.NameAlg = r.u16()
	if r.ok() && !isHash(p.NameAlg) && !(allowNullName && p.NameAlg == algNull) {
		r.fail(rcHash)
		return nil
	}
	p.Attrs = r.u32()
	p.AuthPolicy = r.b2b(maxDigestSize)
	if !r.ok() {
		return nil
	}
	switch p.Type {
	case algKeyedHash:
		p.Scheme = r.u16()
		switch p.Scheme {
		case algHMAC:
			p.SchemeHash = r.u16()
			if r.ok() && !isHash(p.SchemeHash) {
				r.fail(rcHash)
			}
		case algXOR:
			p.SchemeHash = r.u16()
			if r.ok() && !isHash(p.SchemeHash) {
				r.fail(rcHash)
			}
			p.SchemeKDF = r.u16()
			if r.ok() && p.SchemeKDF != algKDF1SP800_108 {
				r.fail(rcKDF)
			}
		case algNull:
		default:
			r.fail(rcValue)
		}
		p.Unique = r.b2b(maxDigestSize)
	case algSymCipher:
		parseSymDef(r, p, false)
		p.Unique = r.b2b(maxDigestSize)
	case algRSA:
		parseSymDef(r, p, true)
		p.Scheme = r.u16()
		switch p.Scheme {
		case algRSASSA, algRSAPSS, algOAEP:
			p.SchemeHash = r.u16()
			if r.ok() && !isHash(p.SchemeHash) {
				r.fail(rcHash)
			}
		case algRSAES, algNull:
		default:
			if r.ok() {
				r.fail(rcValue)
			}
		}
		p.KeyBits = r.u16()
		if r.ok() && p.KeyBits != 2048 && p.KeyBits != 3072 {
			r.fail(rcValue)
		}
		p.Exponent = r.u32()
		p.Unique = r.b2b(maxRSAKeyBytes)
	case algECC:
		parseSymDef(r, p, true)
		p.Scheme = r.u16()
		switch p.Scheme {
		case algECDSA, algECDH:
			p.SchemeHash = r.u16()
			if r.ok() && !isHash(p.SchemeHash) {
				r.fail(rcHash)
			}
		case algNull:
		default:
			if r.ok() {
				r.fail(rcScheme)
			}
		}
		p.Curve = r.u16()
		if r.ok() && p.Curve != curveNISTP256 && p.Curve != curveNISTP384 {
			r.fail(rcCurve)
		}
		p.KDF = r.u16()
		switch p.KDF {
		case algNull:
		case algMGF1, algKDF1SP800_56A, algKDF2, algKDF1SP800_108:
			p.KDFHash = r.u16()
			if r.ok() && !isHash(p.KDFHash) {
				r.fail(rcHash)
			}
		default:
			if r.ok() {
				r.fail(rcKDF)
			}
		}
		p.X = r.b2b(maxECCKeyBytes)
		p.Y = r.b2b(maxECCKeyBytes)
	}
	if !r.ok() {
		return nil
	}
	return p
}

// parseSymDef decodes a TPMT_SYM_DEF_OBJECT, which may be TPM_ALG_NULL when
// nullable.
func parseSymDef(r *reader, p *publicArea, nullable bool) {
	p.SymAlg = r.u16()
	if !r.ok() {
		return
	}
	switch p.SymAlg {
	case algAES:
		p.SymBits = r.u16()
		if r.ok() && p.SymBits != 128 && p.SymBits != 256 {
			r.fail(rcValue)
			return
		}
		p.SymMode = r.u16()
		switch p.SymMode {
		case algCTR, algOFB, algCBC, algCFB, algECB, algNull:
		default:
			if r.ok() {
				r.fail(rcMode)
			}
		}
	case algNull:
		if !nullable {
			r.fail(rcSymmetric)
		}
	default:
		r.fail(rcSymmetric)
	}
}

func (p *publicArea) marshal(w *writer) {
	w.u16(p.Type)
	w.u16(p.NameAlg)
	w.u32(p.Attrs)
	w.b2b(p.AuthPolicy)
	switch p.Type {
	case algKeyedHash:
		w.u16(p.Scheme)
		switch p.Scheme {
		case algHMAC:
			w.u16(p.SchemeHash)
		case algXOR:
			w.u16(p.SchemeHash)
			w.u16(p.SchemeKDF)
		}
		w.b2b(p.Unique)
	case algSymCipher:
		p.marshalSymDef(w)
		w.b2b(p.Unique)
	case algRSA:
		p.marshalSymDef(w)
		w.u16(p.Scheme)
		if p.Scheme != algNull && p.Scheme != algRSAES {
			w.u16(p.SchemeHash)
		}
		w.u16(p.KeyBits)
		w.u32(p.Exponent)
		w.b2b(p.Unique)
	case algECC:
		p.marshalSymDef(w)
		w.u16(p.Scheme)
		if p.Scheme != algNull {
			w.u16(p.SchemeHash)
		}
		w.u16(p.Curve)
		w.u16(p.KDF)
		if p.KDF != algNull {
			w.u16(p.KDFHash)
		}
		w.b2b(p.X)
		w.b2b(p.Y)
	}
}

func (p *publicArea) marshalSymDef(w *writer) {
	w.u16(p.SymAlg)
	if p.SymAlg != algNull {
		w.u16(p.SymBits)
		w.u16(p.SymMode)
	}
}

func (p *publicArea) bytes() []byte {
	var w writer
	w.b = make([]byte, 0, 128+len(p.Unique)+len(p.X)+len(p.Y))
	p.marshal(&w)
	return w.b
}

// nameOf returns the Name of a marshalled public area: nameAlg followed by
// the digest of the area (Part 1, section 16). A TPM_ALG_NULL nameAlg gives
// the 2-byte name of LoadExternal'd keys without one.
func nameOf(nameAlg uint16, area []byte) []byte {
	n := []byte{byte(nameAlg >> 8), byte(nameAlg)}
	if nameAlg == algNull {
		return n
	}
	h := hashOf(nameAlg).New()
	h.Write(area)
	return h.Sum(n)
}

// sensitiveCreate is TPMS_SENSITIVE_CREATE (Part 2, section 11.1.15).
type sensitiveCreate struct {
	UserAuth []byte
	Data     []byte
}

// parseSensitiveCreate decodes a TPM2B_SENSITIVE_CREATE.
func parseSensitiveCreate(r *reader) sensitiveCreate {
	b := r.b2b(maxCommandSize)
	if !r.ok() {
		return sensitiveCreate{}
	}
	if len(b) == 0 {
		r.fail(rcSize)
		return sensitiveCreate{}
	}
	sr := newReader(b)
	sr.q = r.q
	var s sensitiveCreate
	s.UserAuth = sr.b2b(maxDigestSize)
	s.Data = sr.b2b(maxSymData)
	if !sr.ok() {
		r.fail(sr.code)
		return s
	}
	if !sr.empty() {
		r.fail(rcSize)
	}
	return s
}

// parsePublic2B decodes a TPM2B_PUBLIC and returns the area with its bytes.
func parsePublic2B(r *reader, allowNullName bool) (*publicArea, []byte) {
	b := r.b2b(maxCommandSize)
	if !r.ok() {
		return nil, nil
	}
	if len(b) == 0 {
		r.fail(rcSize)
		return nil, nil
	}
	pr := newReader(b)
	pr.q = r.q
	p := parsePublic(&pr, allowNullName)
	if !pr.ok() {
		r.fail(pr.code)
		return nil, nil
	}
	if !pr.empty() {
		r.fail(rcSize)
		return nil, nil
	}
	return p, b
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
