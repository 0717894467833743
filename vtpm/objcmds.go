package vtpm

import "crypto/hmac"

// Object commands beyond create and load: TPM2_ObjectChangeAuth,
// TPM2_CreateLoaded, and the attestations TPM2_CertifyCreation and
// TPM2_NV_Certify.

// Attestation structure tags (TPM_ST), Part 2, section 6.9.
const (
	stAttestNV       = 0x8014
	stAttestCreation = 0x801A
	stAttestNVDigest = 0x801C
)

func init() {
	register(&cmdDef{cc: ccObjectChangeAuth, handles: []handleKind{hkObject, hkObject}, auth: 1,
		roles: []role{roleAdmin}, fn: (*TPM).cmdObjectChangeAuth})
	register(&cmdDef{cc: ccCreateLoaded, handles: []handleKind{hkEntity}, auth: 1, rHandle: true, fn: (*TPM).cmdCreateLoaded})
	register(&cmdDef{cc: ccCertifyCreation, handles: []handleKind{hkObjectNull, hkObject}, auth: 1, fn: (*TPM).cmdCertifyCreation})
	register(&cmdDef{cc: ccNVCertify, handles: []handleKind{hkObjectNull, hkNVAuth, hkNVIndex}, auth: 2, fn: (*TPM).cmdNVCertify})
}

// cmdObjectChangeAuth is TPM2_ObjectChangeAuth (Part 3, section 12.8): it
// returns the object's private area with a new authValue, protected by
// its parent. The loaded object keeps its old authValue; the new one takes
// effect when the returned blob is loaded.
func (t *TPM) cmdObjectChangeAuth(c *call) uint32 {
	r := &c.r
	newAuth := r.b2b(maxDigestSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	o := t.object(c.h[0])
	parent := t.object(c.h[1])
	newAuth = trimZeros(newAuth)
	if len(newAuth) > digestSize(o.pub.NameAlg) {
		return qualify(rcSize, rcP|rcN)
	}
	// The parent handle must name the object's parent: the object's
	// qualified name is QN(parent) extended with its name.
	if !hmac.Equal(qualifiedName(o.pub.NameAlg, parent.QName, o.name), o.QName) || !parent.isStorageParent() {
		return qualify(rcType, rcH|2*rcN)
	}
	if !o.HasPriv {
		return qualify(rcType, rcH|rcN)
	}
	n := *o
	n.Auth = newAuth
	c.w.b2b(protect(parent, &n))
	return rcSuccess
}

// cmdCreateLoaded is TPM2_CreateLoaded (Part 3, section 12.9): TPM2_Create
// and TPM2_Load in one command, or TPM2_CreatePrimary when the parent is a
// hierarchy. Derivation parents (Part 1, section 27.5) are not
// implemented: no template can create one, so no handle can name one.
func (t *TPM) cmdCreateLoaded(c *call) uint32 {
	r := &c.r
	sc := parseSensitiveCreate(r)
	r.param(2)
	pub, _ := parsePublic2B(r, false)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	ph := c.h[0]
	var parent *object
	switch ph >> 24 {
	case htTransient, htPersistent:
		parent = t.object(ph)
		if !parent.isStorageParent() {
			return qualify(rcType, rcH|rcN)
		}
	case htPermanent:
		if !validHandle(hkHierarchyNull, ph) {
			return qualify(rcValue, rcH|rcN)
		}
	default:
		return qualify(rcValue, rcH|rcN)
	}
	if rc := checkTemplate(pub, &sc); rc != rcSuccess {
		if rc == rcRange {
			return rc
		}
		if rc == rcSize && len(sc.Data) != 0 && (pub.Type == algRSA || pub.Type == algECC) {
			return qualify(rc, rcP|rcN)
		}
		return qualify(rc, rcP|2*rcN)
	}
	if rc := checkFixedAttrs(pub.Attrs, parent); rc != rcSuccess {
		return rc
	}
	h := t.allocTransient()
	if h == 0 {
		return rcObjectMemory
	}
	var d *deriver
	if parent == nil {
		// The same derivation as TPM2_CreatePrimary, so that both
		// commands make the same key from the same template.
		d = &deriver{hier: ph, h: hashOf(pub.NameAlg), seed: t.s.seed(ph), name: nameOf(pub.NameAlg, pub.bytes()), data: sc.Data}
	}
	o, rc := t.newObject(pub, &sc, d)
	if rc != rcSuccess {
		return rc
	}
	if parent == nil {
		o.Hierarchy = ph
		o.QName = qualifiedName(o.pub.NameAlg, handleBytes(ph), o.name)
		c.w.b2b(nil)
	} else {
		o.Hierarchy = parent.Hierarchy
		o.QName = qualifiedName(o.pub.NameAlg, parent.QName, o.name)
		c.w.b2b(protect(parent, o))
	}
	t.s.Transient[h] = o
	c.outHandle = h
	c.w.b2b(o.Public)
	c.w.b2b(o.name)
	return rcSuccess
}

// cmdCertifyCreation is TPM2_CertifyCreation (Part 3, section 18.3): it
// signs that the TPM created the object, with the creation data whose
// digest creationHash is, as the creation ticket from TPM2_Create or
// TPM2_CreatePrimary proves.
func (t *TPM) cmdCertifyCreation(c *call) uint32 {
	r := &c.r
	extra := r.b2b(maxDataSize)
	r.param(2)
	creationHash := r.b2b(maxDigestSize)
	r.param(3)
	scheme, hash := parseSigScheme(r)
	r.param(4)
	tag := r.u16()
	if r.ok() && tag != stCreation {
		return qualify(rcTag, r.q)
	}
	hier := r.u32()
	if r.ok() && !validHandle(hkHierarchyNull, hier) {
		return qualify(rcValue, r.q)
	}
	ticket := r.b2b(maxDigestSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	o := t.object(c.h[1])
	// The ticket is keyWriteCreation's: HMAC(proof(hierarchy),
	// TPM_ST_CREATION || Name || creationHash) under the object's nameAlg.
	// An empty ticket never matches, nor any for an external key without
	// a name algorithm (no hash for the HMAC), as in the reference TPM.
	if !isHash(o.pub.NameAlg) {
		return qualify(rcTicket, rcP|4*rcN)
	}
	want := t.ticket(hier, o.pub.NameAlg, stCreation, o.name, creationHash)
	if !hmac.Equal(ticket, want) {
		return qualify(rcTicket, rcP|4*rcN)
	}
	signer, scheme, hash, rc := t.signerOf(c, 0, scheme, hash, rcP|3*rcN)
	if rc != rcSuccess {
		return rc
	}
	var aw writer
	aw.b = make([]byte, 0, 256)
	t.attestHeader(&aw, stAttestCreation, signer, extra)
	aw.b2b(o.name)
	aw.b2b(creationHash)
	return signAttest(c, signer, scheme, hash, aw.b)
}

// cmdNVCertify is TPM2_NV_Certify (Part 3, section 31.16): it signs part of
// an NV index's data, or, when size and offset are both zero, a digest of
// all of it (TPMS_NV_DIGEST_CERTIFY_INFO).
func (t *TPM) cmdNVCertify(c *call) uint32 {
	r := &c.r
	extra := r.b2b(maxDataSize)
	r.param(2)
	scheme, hash := parseSigScheme(r)
	r.param(3)
	size := int(r.u16())
	r.param(4)
	off := int(r.u16())
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[2]]
	if rc := nvReadAccess(nv, c.h[1]); rc != rcSuccess {
		return rc
	}
	if size+off > int(nv.Size) {
		return rcNVRange
	}
	if size > maxNVBufferSize {
		return qualify(rcValue, rcP|3*rcN)
	}
	signer, scheme, hash, rc := t.signerOf(c, 0, scheme, hash, rcP|2*rcN)
	if rc != rcSuccess {
		return rc
	}
	var aw writer
	aw.b = make([]byte, 0, 256+size)
	if size != 0 || off != 0 {
		t.attestHeader(&aw, stAttestNV, signer, extra)
		aw.b2b(nv.name())
		aw.u16(uint16(off))
		aw.b2b(nvBytes(nv)[off : off+size])
	} else {
		t.attestHeader(&aw, stAttestNVDigest, signer, extra)
		aw.b2b(nv.name())
		if isHash(hash) {
			aw.b2b(digestOf(hash, nvBytes(nv)))
		} else {
			aw.b2b(nil)
		}
	}
	return signAttest(c, signer, scheme, hash, aw.b)
}

// nvBytes returns the whole data of a written NV index, nv.Size bytes.
func nvBytes(nv *nvIndex) []byte {
	if len(nv.Data) >= int(nv.Size) {
		return nv.Data[:nv.Size]
	}
	b := make([]byte, nv.Size)
	copy(b, nv.Data)
	return b
}
