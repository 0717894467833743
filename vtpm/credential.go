package vtpm

import (
	"crypto/hmac"

	"github.com/google/go-tpm/tpm2"
)

// Credential protection (Part 1, section 24): a credential (at most a
// digest) is encrypted for a restricted decryption key and bound to the
// Name of the object it certifies. TPM2_ActivateCredential releases it
// only to a TPM that holds the decryption key and has the named object
// loaded.
//
// The blob is a TPM2B_ID_OBJECT: TPM2B(integrityHMAC) || encIdentity, where
//
//	seed          from labeledEncrypt(key, "IDENTITY")
//	symKey        = KDFa(nameAlg, seed, "STORAGE", Name(object), "", symBits)
//	encIdentity   = AES-CFB(symKey, IV=0, TPM2B_DIGEST(credential))
//	HMACkey       = KDFa(nameAlg, seed, "INTEGRITY", "", "", digestBits)
//	integrityHMAC = HMAC(HMACkey, encIdentity || Name(object))
//
// nameAlg and the symmetric algorithm are those of the decryption key.

func init() {
	register(&cmdDef{cc: ccMakeCredential, handles: []handleKind{hkObject}, fn: (*TPM).cmdMakeCredential})
	register(&cmdDef{cc: ccActivateCredential, handles: []handleKind{hkObject, hkObject}, auth: 2,
		roles: []role{roleAdmin, roleUser}, fn: (*TPM).cmdActivateCredential})
}

// Size limits of the credential structures.
const (
	maxNameSize     = maxDataSize                  // TPM2B_NAME: sizeof(TPMU_NAME)
	maxIDObjectSize = 2*2 + 2*maxDigestSize        // TPM2B_ID_OBJECT: sizeof(TPMS_ID_OBJECT)
	maxEncSecret    = maxRSAKeyBytes               // TPM2B_ENCRYPTED_SECRET
	maxPrivateSize  = 2 + maxDigestSize + 2 + 1024 // TPM2B_PRIVATE, generously
	credentialLabel = "IDENTITY"                   // Part 1, section 24.4
	duplicateLabel  = "DUPLICATE"                  // Part 1, section 23.3.2.1
)

// isCredentialKey reports whether o can protect credentials and
// duplicates: an RSA or ECC restricted decryption key with an AES
// symmetric definition (the key of the outer wrapper).
func isCredentialKey(o *object) bool {
	a := o.attrs()
	p := o.pub
	return (p.Type == algRSA || p.Type == algECC) && a&oaDecrypt != 0 && a&oaRestricted != 0 &&
		p.SymAlg == algAES && (p.SymBits == 128 || p.SymBits == 256)
}

// outerWrap applies an outer wrapper (Part 1, section 23.3.2.3) under the
// protector's nameAlg and symmetric key size with an external seed:
// AES-CFB with a zero IV, then an HMAC over the ciphertext and the name.
// It returns TPM2B(HMAC) || ciphertext. plain is encrypted in place.
func outerWrap(protector *object, seed, name, plain []byte) []byte {
	pp := protector.pub
	h := hashOf(pp.NameAlg)
	symKey := tpm2.KDFa(h, seed, "STORAGE", name, nil, int(pp.SymBits))
	cfbEncrypt(symKey, plain)
	clear(symKey)
	hmacKey := tpm2.KDFa(h, seed, "INTEGRITY", nil, nil, h.Size()*8)
	m := hmac.New(h.New, hmacKey)
	m.Write(plain)
	m.Write(name)
	clear(hmacKey)
	var w writer
	w.b = make([]byte, 0, 2+h.Size()+len(plain))
	w.b2b(m.Sum(nil))
	w.raw(plain)
	return w.b
}

// outerUnwrap checks and removes an outer wrapper made with seed. It is
// object.go's unprotect with an external seed in place of the protector's
// seedValue. It returns TPM_RC_INTEGRITY for any change and the
// unmarshalling error of the integrity field.
func outerUnwrap(protector *object, seed, name, blob []byte) ([]byte, uint32) {
	r := newReader(blob)
	r.b2b(maxDigestSize)
	if !r.ok() {
		return nil, r.code
	}
	return unprotect(&object{pub: protector.pub, Seed: seed}, name, blob)
}

// cmdMakeCredential is TPM2_MakeCredential (Part 3, section 12.6). It
// needs only the public part of the key, typically an EK loaded with
// TPM2_LoadExternal.
func (t *TPM) cmdMakeCredential(c *call) uint32 {
	r := &c.r
	cred := r.b2b(maxDigestSize)
	r.param(2)
	name := r.b2b(maxNameSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	o := t.object(c.h[0])
	if !isCredentialKey(o) {
		return qualify(rcType, rcH|rcN)
	}
	if len(cred) > digestSize(o.pub.NameAlg) {
		return qualify(rcSize, rcP|rcN)
	}
	seed, secret, rc := labeledEncrypt(o, credentialLabel)
	if rc != rcSuccess {
		return rc
	}
	var pw writer
	pw.b2b(cred)
	blob := outerWrap(o, seed, name, pw.b)
	clear(seed)
	c.w.b2b(blob)
	c.w.b2b(secret)
	return rcSuccess
}

// cmdActivateCredential is TPM2_ActivateCredential (Part 3, section 12.5).
// The first handle is the object the credential names (ADMIN role), the
// second the decryption key (USER role).
func (t *TPM) cmdActivateCredential(c *call) uint32 {
	r := &c.r
	blob := r.b2b(maxIDObjectSize)
	r.param(2)
	secret := r.b2b(maxEncSecret)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	activate := t.object(c.h[0])
	key := t.object(c.h[1])
	if !isCredentialKey(key) {
		return qualify(rcType, rcH|2*rcN)
	}
	if !key.HasPriv {
		return qualify(rcKey, rcH|2*rcN)
	}
	seed, rc := labeledDecrypt(key, credentialLabel, secret)
	if rc != rcSuccess {
		if rc == rcKey {
			return rcFailure
		}
		return qualify(rc, rcP|2*rcN)
	}
	plain, rc := outerUnwrap(key, seed, activate.name, blob)
	clear(seed)
	if rc != rcSuccess {
		return qualify(rc, rcP|rcN)
	}
	pr := newReader(plain)
	cred := pr.b2b(maxDigestSize)
	if !pr.ok() || !pr.empty() {
		clear(plain)
		if !pr.ok() {
			return qualify(pr.code, rcP|rcN)
		}
		return qualify(rcSize, rcP|rcN)
	}
	c.w.b2b(cred)
	clear(plain)
	return rcSuccess
}
