package vtpm

import (
	"crypto/hmac"
)

// Duplication (Part 1, section 23.3): an object whose fixedParent is clear
// can be wrapped for another parent, in this TPM or another, and imported
// there. A duplication blob is a TPM2B_SENSITIVE with up to two wrappers:
//
//   - the inner wrapper, under a symmetric key the caller knows
//     (encryptionKey): TPM2B(H_nameAlg(sensitive || Name)) || sensitive,
//     encrypted with AES-CFB and a zero IV;
//   - the outer wrapper, under a seed encrypted to the new parent with the
//     label "DUPLICATE" (see credential.go's outerWrap).
//
// An object with encryptedDuplication set must have both.

func init() {
	register(&cmdDef{cc: ccDuplicate, handles: []handleKind{hkObject, hkObjectNull}, auth: 1,
		roles: []role{roleDup}, fn: (*TPM).cmdDuplicate})
	register(&cmdDef{cc: ccRewrap, handles: []handleKind{hkObjectNull, hkObjectNull}, auth: 1, fn: (*TPM).cmdRewrap})
	register(&cmdDef{cc: ccImport, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdImport})
}

// symDef is a TPMT_SYM_DEF_OBJECT+ of a duplication command.
type symDef struct {
	alg, bits, mode uint16
}

// parseSymDefObject decodes a TPMT_SYM_DEF_OBJECT+ with public.go's
// decoder.
func parseSymDefObject(r *reader) symDef {
	var p publicArea
	parseSymDef(r, &p, true)
	return symDef{p.SymAlg, p.SymBits, p.SymMode}
}

// isStorageKey reports whether o's public area is that of a storage key
// that can receive a duplicate or a credential (ObjectIsStorage in the
// reference implementation): an RSA or ECC restricted decryption key that
// does not sign, with an AES symmetric definition.
func isStorageKey(o *object) bool {
	return isCredentialKey(o) && o.attrs()&oaSign == 0
}

// innerWrap applies the inner wrapper to a marshalled TPM2B_SENSITIVE.
func innerWrap(nameAlg uint16, key, name, sens []byte) []byte {
	var w writer
	w.b = make([]byte, 0, 2+hashOf(nameAlg).Size()+len(sens))
	w.b2b(digestOf(nameAlg, sens, name))
	w.raw(sens)
	cfbEncrypt(key, w.b)
	return w.b
}

// innerUnwrap decrypts b in place and checks its inner integrity. It
// returns the TPM2B_SENSITIVE.
func innerUnwrap(nameAlg uint16, key, name, b []byte) ([]byte, uint32) {
	cfbDecrypt(key, b)
	r := newReader(b)
	integrity := r.b2b(maxDigestSize)
	if !r.ok() {
		return nil, r.code
	}
	sens := r.rest()
	if !hmac.Equal(integrity, digestOf(nameAlg, sens, name)) {
		return nil, rcIntegrity
	}
	return sens, rcSuccess
}

// duplicateObject wraps o for newParent (nil for TPM_RH_NULL) (Part 3,
// section 13.1 and SensitiveToDuplicate in the reference implementation).
// It returns encryptionKeyOut, the duplicate and outSymSeed.
func duplicateObject(o, newParent *object, encKeyIn []byte, sym symDef) (keyOut, dup, outSeed []byte, rc uint32) {
	var seed []byte
	if newParent != nil {
		seed, outSeed, rc = labeledEncrypt(newParent, duplicateLabel)
		if rc != rcSuccess {
			return nil, nil, nil, rc
		}
		defer clear(seed)
	}
	var sw writer
	o.marshalSensitive(&sw)
	dup = sw.b
	if sym.alg != algNull {
		key := encKeyIn
		if len(key) == 0 {
			keyOut = make([]byte, sym.bits/8)
			random(keyOut)
			key = keyOut
		}
		w := innerWrap(o.pub.NameAlg, key, o.name, dup)
		clear(dup)
		dup = w
	}
	if newParent != nil {
		dup = outerWrap(newParent, seed, o.name, dup)
	}
	return keyOut, dup, outSeed, rcSuccess
}

// cmdDuplicate is TPM2_Duplicate (Part 3, section 13.1). The object is
// authorized in the DUP role, which only a policy session can satisfy.
func (t *TPM) cmdDuplicate(c *call) uint32 {
	r := &c.r
	encKeyIn := r.b2b(maxDataSize)
	r.param(2)
	sym := parseSymDefObject(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	if c.sess[0].handle>>24 != htPolicySession {
		// The DUP role can only be authorized by a policy session
		// (Part 1, section 19.2); the reference TPM answers
		// TPM_RC_AUTH_TYPE.
		return rcAuthType
	}
	o := t.object(c.h[0])
	var np *object
	if c.h[1] != rhNull {
		np = t.object(c.h[1])
	}
	if o.attrs()&oaFixedParent != 0 {
		return qualify(rcAttributes, rcH|rcN)
	}
	if o.pub.NameAlg == algNull || !o.HasPriv {
		return qualify(rcType, rcH|rcN)
	}
	if np != nil && !isStorageKey(np) {
		return qualify(rcType, rcH|2*rcN)
	}
	if o.attrs()&oaEncryptedDuplication != 0 {
		if sym.alg == algNull {
			return qualify(rcSymmetric, rcP|2*rcN)
		}
		if np == nil {
			return qualify(rcHierarchy, rcH|2*rcN)
		}
	}
	if sym.alg == algNull {
		if len(encKeyIn) != 0 {
			return qualify(rcSize, rcP|rcN)
		}
	} else if len(encKeyIn) != 0 && len(encKeyIn) != int(sym.bits)/8 {
		return qualify(rcSize, rcP|rcN)
	}
	keyOut, dup, seed, rc := duplicateObject(o, np, encKeyIn, sym)
	if rc != rcSuccess {
		return rc
	}
	c.w.b2b(keyOut)
	c.w.b2b(dup)
	c.w.b2b(seed)
	clear(keyOut)
	clear(dup)
	return rcSuccess
}

// cmdRewrap is TPM2_Rewrap (Part 3, section 13.2): it replaces the outer
// wrapper of a duplicate for one parent by one for another.
func (t *TPM) cmdRewrap(c *call) uint32 {
	r := &c.r
	inDup := r.b2b(maxPrivateSize)
	r.param(2)
	name := r.b2b(maxNameSize)
	r.param(3)
	inSeed := r.b2b(maxEncSecret)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	oldH, newH := c.h[0], c.h[1]
	if (len(inSeed) == 0) != (oldH == rhNull) {
		return qualify(rcHandle, rcH|rcN)
	}
	blob := inDup
	if oldH != rhNull {
		old := t.object(oldH)
		if !isStorageKey(old) {
			return qualify(rcType, rcH|rcN)
		}
		seed, rc := labeledDecrypt(old, duplicateLabel, inSeed)
		if rc != rcSuccess {
			return qualify(rcValue, rcP|3*rcN)
		}
		blob, rc = outerUnwrap(old, seed, name, inDup)
		clear(seed)
		if rc != rcSuccess {
			return qualify(rc, rcP|rcN)
		}
		defer clear(blob)
	}
	if newH == rhNull {
		c.w.b2b(blob)
		c.w.b2b(nil)
		return rcSuccess
	}
	np := t.object(newH)
	if !isStorageKey(np) {
		return qualify(rcType, rcH|2*rcN)
	}
	seed, outSeed, rc := labeledEncrypt(np, duplicateLabel)
	if rc != rcSuccess {
		return rc
	}
	if len(blob)+2+digestSize(np.pub.NameAlg) > maxPrivateSize {
		clear(seed)
		return qualify(rcValue, rcP|rcN)
	}
	out := outerWrap(np, seed, name, append([]byte(nil), blob...))
	clear(seed)
	c.w.b2b(out)
	c.w.b2b(outSeed)
	return rcSuccess
}

// cmdImport is TPM2_Import (Part 3, section 13.3): it removes the wrappers
// of a duplicate and returns the object's private area protected by the
// parent, ready for TPM2_Load.
func (t *TPM) cmdImport(c *call) uint32 {
	r := &c.r
	encKey := r.b2b(maxDataSize)
	r.param(2)
	pub, pubBytes := parsePublic2B(r, false)
	r.param(3)
	dup := r.b2b(maxPrivateSize)
	r.param(4)
	inSeed := r.b2b(maxEncSecret)
	r.param(5)
	sym := parseSymDefObject(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	a := pub.Attrs
	if a&(oaFixedTPM|oaFixedParent) != 0 {
		return qualify(rcAttributes, rcP|2*rcN)
	}
	parent := t.object(c.h[0])
	if !parent.isStorageParent() {
		return qualify(rcType, rcH|rcN)
	}
	if sym.alg != algNull {
		if len(encKey) != int(sym.bits)/8 {
			return qualify(rcSize, rcP|rcN)
		}
	} else {
		if len(encKey) != 0 {
			return qualify(rcSize, rcP|rcN)
		}
		if a&oaEncryptedDuplication != 0 {
			return qualify(rcAttributes, rcP|rcN)
		}
	}
	var seed []byte
	if len(inSeed) != 0 {
		var rc uint32
		seed, rc = labeledDecrypt(parent, duplicateLabel, inSeed)
		if rc != rcSuccess {
			return qualify(rc, rcP|4*rcN)
		}
		defer clear(seed)
	} else if a&oaEncryptedDuplication != 0 {
		return qualify(rcAttributes, rcP|4*rcN)
	}
	o := &object{Public: append([]byte(nil), pubBytes...), pub: pub}
	o.name = nameOf(pub.NameAlg, o.Public)

	// Remove the outer, then the inner wrapper.
	blob := append([]byte(nil), dup...)
	defer clear(blob)
	if seed != nil {
		plain, rc := outerUnwrap(parent, seed, o.name, dup)
		if rc != rcSuccess {
			return qualify(rc, rcP|3*rcN)
		}
		clear(blob)
		blob = plain
	}
	if sym.alg != algNull {
		sens, rc := innerUnwrap(pub.NameAlg, encKey, o.name, blob)
		if rc != rcSuccess {
			return qualify(rc, rcP|3*rcN)
		}
		blob = sens
	}
	sr := newReader(blob)
	sr.param(3)
	n := int(sr.u16())
	if !sr.ok() {
		return sr.code
	}
	if n != sr.len() {
		return qualify(rcSize, rcP|3*rcN)
	}
	parseSensitive(&sr, o)
	if !sr.ok() || !sr.empty() {
		o.clear()
		if !sr.ok() {
			return sr.code
		}
		return qualify(rcSize, rcP|3*rcN)
	}
	// The parent is fixedTPM: validate the object now as TPM2_Load
	// would, so that the blob this returns always loads.
	if a&oaReserved != 0 {
		o.clear()
		return qualify(rcReservedBits, rcP|2*rcN)
	}
	if !o.checkBinding() {
		o.clear()
		return qualify(rcBinding, rcP|2*rcN)
	}
	c.w.b2b(protect(parent, o))
	o.clear()
	return rcSuccess
}
