package vtpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

func init() {
	register(&cmdDef{cc: ccSign, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdSign})
	register(&cmdDef{cc: ccVerifySignature, handles: []handleKind{hkObject}, fn: (*TPM).cmdVerifySignature})
	register(&cmdDef{cc: ccQuote, handles: []handleKind{hkObjectNull}, auth: 1, fn: (*TPM).cmdQuote})
	register(&cmdDef{cc: ccCertify, handles: []handleKind{hkObject, hkObjectNull}, auth: 2, roles: []role{roleAdmin, roleUser}, fn: (*TPM).cmdCertify})
}

// parseSigScheme decodes a TPMT_SIG_SCHEME.
func parseSigScheme(r *reader) (scheme, hash uint16) {
	scheme = r.u16()
	if !r.ok() {
		return
	}
	switch scheme {
	case algNull:
		return
	case algRSASSA, algRSAPSS, algECDSA, algHMAC:
		hash = r.u16()
		if r.ok() && !isHash(hash) {
			r.fail(rcHash)
		}
	default:
		r.fail(rcScheme)
	}
	return
}

// isSigningKey reports whether o can sign (IsSigningObject in the
// reference implementation): an RSA, ECC or keyed-hash key with the sign
// attribute and its private part. A symmetric key may have the sign
// attribute too (for EncryptDecrypt), but signs nothing.
func isSigningKey(o *object) bool {
	switch o.pub.Type {
	case algRSA, algECC, algKeyedHash:
		return o.attrs()&oaSign != 0 && o.HasPriv
	}
	return false
}

// resolveScheme picks the signing scheme from the key's and the caller's
// (Part 1, section 11.4.1): a key with a scheme accepts only that scheme or
// TPM_ALG_NULL; a key without one needs a scheme from the caller.
func resolveScheme(o *object, scheme, hash uint16, q uint32) (uint16, uint16, uint32) {
	p := o.pub
	if !isSigningKey(o) {
		// Callers check this first; a key without a signing scheme
		// must never reach the hash lookups below.
		return 0, 0, qualify(rcScheme, q)
	}
	ks, kh := p.Scheme, p.SchemeHash
	if scheme == algNull {
		if ks == algNull {
			return 0, 0, qualify(rcScheme, q)
		}
		return ks, kh, rcSuccess
	}
	if ks != algNull && (ks != scheme || kh != hash) {
		return 0, 0, qualify(rcScheme, q)
	}
	switch p.Type {
	case algRSA:
		if scheme != algRSASSA && scheme != algRSAPSS {
			return 0, 0, qualify(rcScheme, q)
		}
	case algECC:
		if scheme != algECDSA {
			return 0, 0, qualify(rcScheme, q)
		}
	case algKeyedHash:
		if scheme != algHMAC {
			return 0, 0, qualify(rcScheme, q)
		}
	default:
		return 0, 0, qualify(rcScheme, q)
	}
	return scheme, hash, rcSuccess
}

// sign signs digest and writes a TPMT_SIGNATURE.
func sign(w *writer, o *object, scheme, hash uint16, digest []byte) uint32 {
	if scheme == algHMAC {
		m := newHMAC(hash, o.Sensitive)
		m.Write(digest)
		w.u16(algHMAC)
		w.u16(hash)
		w.raw(m.Sum(nil))
		return rcSuccess
	}
	k, ok := o.signer()
	if !ok {
		return rcKey
	}
	w.u16(scheme)
	w.u16(hash)
	switch scheme {
	case algECDSA:
		key := k.(*ecdsa.PrivateKey)
		rr, ss, err := ecdsa.Sign(nil, key, digest)
		if err != nil {
			return rcFailure
		}
		n := curveBytes(o.pub.Curve)
		w.b2b(rr.FillBytes(make([]byte, n)))
		w.b2b(ss.FillBytes(make([]byte, n)))
	case algRSASSA, algRSAPSS:
		key := k.(*rsa.PrivateKey)
		var sig []byte
		var err error
		if scheme == algRSASSA {
			sig, err = rsa.SignPKCS1v15(nil, key, hashOf(hash), digest)
		} else {
			// PSS draws a random salt: unlike PKCS#1 v1.5 and ECDSA,
			// crypto/rsa reads it from the given source, and a nil one
			// panics.
			sig, err = rsa.SignPSS(rand.Reader, key, hashOf(hash), digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		if err != nil {
			return rcFailure
		}
		w.b2b(sig)
	default:
		return rcScheme
	}
	return rcSuccess
}

// cmdSign is TPM2_Sign (Part 3, section 20.2).
func (t *TPM) cmdSign(c *call) uint32 {
	r := &c.r
	digest := r.b2b(maxDigestSize)
	r.param(2)
	scheme, hash := parseSigScheme(r)
	r.param(3)
	tag := r.u16()
	if r.ok() && tag != stHashCheck {
		return qualify(rcTag, r.q)
	}
	tHier := r.u32()
	tDigest := r.b2b(maxDigestSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	o := t.object(c.h[0])
	if !isSigningKey(o) {
		return qualify(rcKey, rcH|rcN)
	}
	scheme, hash, rc := resolveScheme(o, scheme, hash, rcP|2*rcN)
	if rc != rcSuccess {
		return rc
	}
	if len(digest) != hashOf(hash).Size() {
		return qualify(rcSize, rcP|rcN)
	}
	if o.attrs()&oaRestricted != 0 {
		// A restricted key signs only digests the TPM computed from a
		// message that does not start with TPM_GENERATED_VALUE.
		if tHier == rhNull || !validHandle(hkHierarchyNull, tHier) ||
			!hmac.Equal(tDigest, t.ticket(tHier, hash, stHashCheck, digest)) {
			return qualify(rcTicket, rcP|3*rcN)
		}
	}
	return sign(&c.w, o, scheme, hash, digest)
}

// cmdVerifySignature is TPM2_VerifySignature (Part 3, section 20.1).
func (t *TPM) cmdVerifySignature(c *call) uint32 {
	r := &c.r
	digest := r.b2b(maxDigestSize)
	r.param(2)
	sigAlg := r.u16()
	var hash uint16
	var s1, s2 []byte
	switch sigAlg {
	case algRSASSA, algRSAPSS:
		hash = r.u16()
		s1 = r.b2b(maxRSAKeyBytes)
	case algECDSA:
		hash = r.u16()
		s1 = r.b2b(maxECCKeyBytes)
		s2 = r.b2b(maxECCKeyBytes)
	case algHMAC:
		hash = r.u16()
		if r.ok() && isHash(hash) {
			s1 = r.bytes(hashOf(hash).Size())
		}
	default:
		if r.ok() {
			return qualify(rcScheme, r.q)
		}
	}
	if r.ok() && !isHash(hash) {
		return qualify(rcHash, r.q)
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	o := t.object(c.h[0])
	if o.attrs()&oaSign == 0 {
		return qualify(rcAttributes, rcH|rcN)
	}
	ok := false
	switch sigAlg {
	case algHMAC:
		if o.pub.Type == algKeyedHash && o.HasPriv {
			m := newHMAC(hash, o.Sensitive)
			m.Write(digest)
			ok = hmac.Equal(m.Sum(nil), s1)
		}
	default:
		pk, havePK := o.publicKey()
		if !havePK {
			return qualify(rcKey, rcH|rcN)
		}
		switch k := pk.(type) {
		case *ecdsa.PublicKey:
			ok = sigAlg == algECDSA && ecdsa.Verify(k, digest, new(big.Int).SetBytes(s1), new(big.Int).SetBytes(s2))
		case *rsa.PublicKey:
			h := hashOf(hash)
			if sigAlg == algRSASSA {
				ok = rsa.VerifyPKCS1v15(k, h, digest, s1) == nil
			} else if sigAlg == algRSAPSS {
				ok = rsa.VerifyPSS(k, h, digest, s1, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
			}
		}
	}
	if !ok {
		return qualify(rcSignature, rcP|2*rcN)
	}
	c.w.u16(stVerified)
	if o.Hierarchy == rhNull || !isHash(o.pub.NameAlg) {
		// As the reference TPM: a NULL ticket, also for an external
		// key without a name algorithm (no hash for the HMAC).
		c.w.u32(rhNull)
		c.w.u16(0)
		return rcSuccess
	}
	c.w.u32(o.Hierarchy)
	c.w.b2b(t.ticket(o.Hierarchy, o.pub.NameAlg, stVerified, digest, o.name))
	return rcSuccess
}

// attestHeader writes the common part of a TPMS_ATTEST. Outside the
// endorsement and platform hierarchies the reset and restart counts and the
// firmware version are obfuscated, so that attestations by different owner
// keys cannot be correlated (Part 3, section 18.2).
func (t *TPM) attestHeader(w *writer, typ uint16, signer *object, extra []byte) {
	w.u32(generatedValue)
	w.u16(typ)
	var qn []byte
	hier := uint32(rhNull)
	if signer != nil {
		qn = signer.QName
		hier = signer.Hierarchy
	}
	w.b2b(qn)
	w.b2b(extra)
	t.syncClock()
	var fw, resetAdd, restartAdd uint64
	if hier != rhEndorsement && hier != rhPlatform {
		obf := tpm2.KDFa(crypto.SHA256, t.s.OwnerProof[:], "OBFUSCATE", qn, nil, 128)
		fw = binary.BigEndian.Uint64(obf)
		v := binary.BigEndian.Uint64(obf[8:])
		resetAdd, restartAdd = v>>32, v&0xFFFFFFFF
	}
	t.writeClockInfo(w, uint32(resetAdd), uint32(restartAdd))
	w.u64(uint64(fwVersion1)<<32 | fwVersion2 + fw)
}

// namedSigner returns the signer to name in the header of an attestation
// that TPM2_GetTime and the audit digest commands make: without a signing
// key the reference implementation names TPM_RH_NULL as the signer (and
// obfuscates as for the null hierarchy), where Quote, Certify and the
// others leave qualifiedSigner empty.
func namedSigner(signer *object) *object {
	if signer == nil {
		return &object{QName: handleBytes(rhNull), Hierarchy: rhNull}
	}
	return signer
}

// signAttest finishes an attestation: the TPM2B_ATTEST then its signature.
func signAttest(c *call, signer *object, scheme, hash uint16, attest []byte) uint32 {
	c.w.b2b(attest)
	if signer == nil {
		c.w.u16(algNull)
		return rcSuccess
	}
	return sign(&c.w, signer, scheme, hash, digestOf(hash, attest))
}

// signerOf checks the signing key of an attestation command.
func (t *TPM) signerOf(c *call, n int, scheme, hash uint16, q uint32) (*object, uint16, uint16, uint32) {
	h := c.h[n]
	if h == rhNull {
		return nil, algNull, algNull, rcSuccess
	}
	o := t.object(h)
	if !isSigningKey(o) {
		return nil, 0, 0, qualify(rcKey, rcH|uint32(n+1)<<8)
	}
	scheme, hash, rc := resolveScheme(o, scheme, hash, q)
	return o, scheme, hash, rc
}

// cmdQuote is TPM2_Quote (Part 3, section 18.4).
func (t *TPM) cmdQuote(c *call) uint32 {
	r := &c.r
	extra := r.b2b(maxDataSize)
	r.param(2)
	scheme, hash := parseSigScheme(r)
	r.param(3)
	sels := parsePCRSelections(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	signer, scheme, hash, rc := t.signerOf(c, 0, scheme, hash, rcP|2*rcN)
	if rc != rcSuccess {
		return rc
	}
	digestAlg := hash
	if signer == nil {
		digestAlg = algSHA256
	}
	var aw writer
	aw.b = make([]byte, 0, 256)
	t.attestHeader(&aw, stAttestQuote, signer, extra)
	// The quoted selection leaves out PCRs that are not allocated, as
	// the digest does (FilterPcr).
	t.filterPCRSelections(sels)
	marshalPCRSelections(&aw, sels)
	aw.b2b(t.pcrDigest(digestAlg, sels))
	return signAttest(c, signer, scheme, hash, aw.b)
}

// cmdCertify is TPM2_Certify (Part 3, section 18.2).
func (t *TPM) cmdCertify(c *call) uint32 {
	r := &c.r
	extra := r.b2b(maxDataSize)
	r.param(2)
	scheme, hash := parseSigScheme(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	signer, scheme, hash, rc := t.signerOf(c, 1, scheme, hash, rcP|2*rcN)
	if rc != rcSuccess {
		return rc
	}
	o := t.object(c.h[0])
	var aw writer
	aw.b = make([]byte, 0, 256)
	t.attestHeader(&aw, stAttestCertify, signer, extra)
	aw.b2b(o.name)
	aw.b2b(o.QName)
	return signAttest(c, signer, scheme, hash, aw.b)
}
