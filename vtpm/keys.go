package vtpm

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"

	"github.com/google/go-tpm/tpm2"
)

func init() {
	register(&cmdDef{cc: ccCreatePrimary, handles: []handleKind{hkHierarchyNull}, auth: 1, rHandle: true, fn: (*TPM).cmdCreatePrimary})
	register(&cmdDef{cc: ccCreate, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdCreate})
	register(&cmdDef{cc: ccLoad, handles: []handleKind{hkObject}, auth: 1, rHandle: true, fn: (*TPM).cmdLoad})
	register(&cmdDef{cc: ccLoadExternal, rHandle: true, fn: (*TPM).cmdLoadExternal})
	register(&cmdDef{cc: ccReadPublic, handles: []handleKind{hkObject}, fn: (*TPM).cmdReadPublic})
	register(&cmdDef{cc: ccUnseal, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdUnseal})
	register(&cmdDef{cc: ccFlushContext, fn: (*TPM).cmdFlushContext})
	register(&cmdDef{cc: ccEvictControl, handles: []handleKind{hkProvision, hkObject}, auth: 1, nv: true, fn: (*TPM).cmdEvictControl})
	register(&cmdDef{cc: ccContextSave, handles: []handleKind{hkContext}, fn: (*TPM).cmdContextSave})
	register(&cmdDef{cc: ccContextLoad, rHandle: true, fn: (*TPM).cmdContextLoad})
}

const maxDataSize = 66 // TPM2B_DATA: sizeof(TPMT_HA)

// allocTransient returns the lowest free transient handle, or 0 when the
// object slots are full.
func (t *TPM) allocTransient() uint32 {
	if t.s.Transient == nil {
		t.s.Transient = map[uint32]*object{}
	}
	for i := uint32(0); i < maxLoadedObjects; i++ {
		if t.s.Transient[transientFirst+i] == nil {
			return transientFirst + i
		}
	}
	return 0
}

func handleBytes(h uint32) []byte { return binary.BigEndian.AppendUint32(nil, h) }

// qualifiedName is QN(child) = nameAlg || H(QN(parent) || Name(child))
// (Part 1, section 16.6).
func qualifiedName(nameAlg uint16, parentQN, name []byte) []byte {
	if nameAlg == algNull {
		return name
	}
	n := []byte{byte(nameAlg >> 8), byte(nameAlg)}
	h := hashOf(nameAlg).New()
	h.Write(parentQN)
	h.Write(name)
	return h.Sum(n)
}

// creationParams are the parameters Create and CreatePrimary share.
type creationParams struct {
	sc      sensitiveCreate
	pub     *publicArea
	outside []byte
	sels    []pcrSelection
}

func parseCreation(r *reader) (creationParams, uint32) {
	var p creationParams
	r.param(1)
	p.sc = parseSensitiveCreate(r)
	r.param(2)
	p.pub, _ = parsePublic2B(r, false)
	r.param(3)
	p.outside = r.b2b(maxDataSize)
	r.param(4)
	p.sels = parsePCRSelections(r)
	if rc := r.done(); rc != rcSuccess {
		return p, rc
	}
	if rc := checkTemplate(p.pub, &p.sc); rc != rcSuccess {
		if rc == rcRange {
			// An unsupported RSA exponent fails in key generation,
			// without a parameter number, as in the reference.
			return p, rc
		}
		if rc == rcSize && len(p.sc.Data) != 0 && (p.pub.Type == algRSA || p.pub.Type == algECC) {
			return p, qualify(rc, rcP|rcN)
		}
		return p, qualify(rc, rcP|2*rcN)
	}
	return p, rcSuccess
}

// writeCreation writes creationData, creationHash and creationTicket
// (Part 3, section 12.1).
func (t *TPM) writeCreation(w *writer, o *object, cp *creationParams, parentNameAlg uint16, parentName, parentQN []byte) {
	alg := o.pub.NameAlg
	var cw writer
	marshalPCRSelections(&cw, cp.sels)
	cw.b2b(t.pcrDigest(alg, cp.sels))
	cw.u8(1 << locality)
	cw.u16(parentNameAlg)
	cw.b2b(parentName)
	cw.b2b(parentQN)
	cw.b2b(cp.outside)
	w.b2b(cw.b)
	ch := digestOf(alg, cw.b)
	w.b2b(ch)
	w.u16(stCreation)
	w.u32(o.Hierarchy)
	// Objects of the null hierarchy get a real ticket too, keyed with the
	// null proof (as the reference TPM does), so that CertifyCreation
	// accepts it until the next TPM Reset.
	w.b2b(t.ticket(o.Hierarchy, alg, stCreation, o.name, ch))
}

// cmdCreatePrimary is TPM2_CreatePrimary (Part 3, section 24.1). Key
// material is derived from the hierarchy's primary seed, so the same
// template gives the same key until the seed changes.
func (t *TPM) cmdCreatePrimary(c *call) uint32 {
	cp, rc := parseCreation(&c.r)
	if rc != rcSuccess {
		return rc
	}
	h := t.allocTransient()
	if h == 0 {
		return rcObjectMemory
	}
	if rc := checkFixedAttrs(cp.pub.Attrs, nil); rc != rcSuccess {
		return rc
	}
	hier := c.h[0]
	tmplName := nameOf(cp.pub.NameAlg, cp.pub.bytes())
	d := &deriver{hier: hier, h: hashOf(cp.pub.NameAlg), seed: t.s.seed(hier), name: tmplName, data: cp.sc.Data}
	o, rc := t.newObject(cp.pub, &cp.sc, d)
	if rc != rcSuccess {
		return rc
	}
	o.Hierarchy = hier
	hb := handleBytes(hier)
	o.QName = qualifiedName(o.pub.NameAlg, hb, o.name)
	t.s.Transient[h] = o
	c.outHandle = h
	c.w.b2b(o.Public)
	t.writeCreation(&c.w, o, &cp, algNull, hb, hb)
	c.w.b2b(o.name)
	return rcSuccess
}

// parentOf checks that handle number n names a storage parent.
func (t *TPM) parentOf(c *call, n int) (*object, uint32) {
	p := t.object(c.h[n])
	if p == nil || !p.isStorageParent() {
		return nil, qualify(rcType, rcH|uint32(n+1)<<8)
	}
	return p, rcSuccess
}

// cmdCreate is TPM2_Create (Part 3, section 12.1).
func (t *TPM) cmdCreate(c *call) uint32 {
	cp, rc := parseCreation(&c.r)
	if rc != rcSuccess {
		return rc
	}
	parent, rc := t.parentOf(c, 0)
	if rc != rcSuccess {
		return rc
	}
	if rc := checkFixedAttrs(cp.pub.Attrs, parent); rc != rcSuccess {
		return rc
	}
	o, rc := t.newObject(cp.pub, &cp.sc, nil)
	if rc != rcSuccess {
		return rc
	}
	o.Hierarchy = parent.Hierarchy
	c.w.b2b(protect(parent, o))
	c.w.b2b(o.Public)
	t.writeCreation(&c.w, o, &cp, parent.pub.NameAlg, parent.name, parent.QName)
	o.clear()
	return rcSuccess
}

// cmdLoad is TPM2_Load (Part 3, section 12.2).
func (t *TPM) cmdLoad(c *call) uint32 {
	r := &c.r
	priv := r.b2b(maxContextSize)
	r.param(2)
	pub, pubBytes := parsePublic2B(r, false)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	parent, rc := t.parentOf(c, 0)
	if rc != rcSuccess {
		return rc
	}
	if pub.Attrs&oaReserved != 0 {
		return qualify(rcReservedBits, rcP|2*rcN)
	}
	if pub.Attrs&oaFixedTPM != 0 && (pub.Attrs&oaFixedParent == 0 || parent.attrs()&oaFixedTPM == 0) {
		return qualify(rcAttributes, rcP|2*rcN)
	}
	h := t.allocTransient()
	if h == 0 {
		return rcObjectMemory
	}
	o := &object{Public: append([]byte(nil), pubBytes...), pub: pub}
	o.name = nameOf(pub.NameAlg, o.Public)
	sens, rc := unprotect(parent, o.name, priv)
	if rc != rcSuccess {
		return qualify(rc, rcP|rcN)
	}
	sr := newReader(sens)
	inner := sr.b2b(len(sens))
	ir := newReader(inner)
	parseSensitive(&ir, o)
	clear(sens)
	if !sr.ok() || !sr.empty() || !ir.ok() || !ir.empty() {
		o.clear()
		return qualify(rcSensitive, 0)
	}
	if !o.checkBinding() {
		o.clear()
		return qualify(rcBinding, rcP|2*rcN)
	}
	o.Hierarchy = parent.Hierarchy
	o.QName = qualifiedName(pub.NameAlg, parent.QName, o.name)
	t.s.Transient[h] = o
	c.outHandle = h
	c.w.b2b(o.name)
	return rcSuccess
}

// cmdLoadExternal is TPM2_LoadExternal (Part 3, section 12.3).
func (t *TPM) cmdLoadExternal(c *call) uint32 {
	r := &c.r
	sens := r.b2b(maxContextSize)
	r.param(2)
	pub, pubBytes := parsePublic2B(r, true)
	r.param(3)
	hier := r.u32()
	if r.ok() && !validHandle(hkHierarchyNull, hier) {
		return qualify(rcValue, r.q)
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	if pub.Attrs&oaReserved != 0 {
		return qualify(rcReservedBits, rcP|2*rcN)
	}
	if len(sens) != 0 {
		if pub.Attrs&(oaFixedTPM|oaFixedParent) != 0 {
			return qualify(rcAttributes, rcP|2*rcN)
		}
		if hier != rhNull {
			return qualify(rcHierarchy, rcP|3*rcN)
		}
	}
	if pub.Type == algRSA || pub.Type == algECC {
		// As the reference TPM (SchemeChecks): an RSAES key with the
		// sign attribute would otherwise reach the signing commands
		// without a hash.
		if rc := asymSchemeRC(pub); rc != rcSuccess {
			return qualify(rc, rcP|2*rcN)
		}
	}
	o := &object{Public: append([]byte(nil), pubBytes...), pub: pub, Hierarchy: hier, External: true}
	o.name = nameOf(pub.NameAlg, o.Public)
	if len(sens) != 0 {
		ir := newReader(sens)
		ir.q = rcP | rcN
		parseSensitive(&ir, o)
		if !ir.ok() || !ir.empty() {
			o.clear()
			if ir.code != 0 {
				return ir.code
			}
			return qualify(rcSize, rcP|rcN)
		}
		if !o.checkBinding() {
			o.clear()
			return qualify(rcBinding, rcP|2*rcN)
		}
	} else {
		switch pub.Type {
		case algRSA, algECC:
			if _, ok := o.publicKey(); !ok {
				if pub.Type == algECC {
					return qualify(rcECCPoint, rcP|2*rcN)
				}
				return qualify(rcKey, rcP|2*rcN)
			}
		}
	}
	h := t.allocTransient()
	if h == 0 {
		o.clear()
		return rcObjectMemory
	}
	o.QName = qualifiedName(pub.NameAlg, handleBytes(hier), o.name)
	t.s.Transient[h] = o
	c.outHandle = h
	c.w.b2b(o.name)
	return rcSuccess
}

// cmdReadPublic is TPM2_ReadPublic (Part 3, section 12.4).
func (t *TPM) cmdReadPublic(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	if t.sequenceAt(c.h[0]) != nil {
		return rcSequence // a sequence has no public area
	}
	o := t.object(c.h[0])
	c.w.b2b(o.Public)
	c.w.b2b(o.name)
	c.w.b2b(o.QName)
	return rcSuccess
}

// cmdUnseal is TPM2_Unseal (Part 3, section 12.7).
func (t *TPM) cmdUnseal(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	o := t.object(c.h[0])
	if o.pub.Type != algKeyedHash {
		return qualify(rcType, rcH|rcN)
	}
	if o.attrs()&(oaSign|oaDecrypt|oaRestricted) != 0 || !o.HasPriv {
		return qualify(rcAttributes, rcH|rcN)
	}
	c.w.b2b(o.Sensitive)
	return rcSuccess
}

// cmdFlushContext is TPM2_FlushContext (Part 3, section 28.4).
func (t *TPM) cmdFlushContext(c *call) uint32 {
	h := c.r.u32()
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	if !validHandle(hkContext, h) {
		return qualify(rcValue, rcP|rcN)
	}
	switch h >> 24 {
	case htTransient:
		o := t.s.Transient[h]
		if o == nil {
			return qualify(rcHandle, rcP|rcN)
		}
		o.clear()
		delete(t.s.Transient, h)
	default:
		// A saved session may be flushed too (TPM2_FlushContext).
		if t.session(h) == nil && t.savedSession(h) == nil {
			return qualify(rcHandle, rcP|rcN)
		}
		t.flushSession(h)
	}
	return rcSuccess
}

// cmdEvictControl is TPM2_EvictControl (Part 3, section 28.5).
func (t *TPM) cmdEvictControl(c *call) uint32 {
	ph := c.r.u32()
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	if ph>>24 != htPersistent {
		return qualify(rcValue, rcP|rcN)
	}
	auth, oh := c.h[0], c.h[1]
	inRange := func(h uint32) bool {
		if auth == rhOwner {
			return h <= persistentOwnerLast
		}
		return h >= persistentPlatformFirst
	}
	if oh>>24 == htPersistent {
		if oh != ph {
			return qualify(rcHandle, rcP|rcN)
		}
		if !inRange(oh) {
			return qualify(rcRange, rcP|rcN)
		}
		o := t.s.Persistent[oh]
		o.clear()
		delete(t.s.Persistent, oh)
		return rcSuccess
	}
	o := t.s.Transient[oh]
	if o.attrs()&oaSTClear != 0 || o.External {
		return qualify(rcAttributes, rcH|2*rcN)
	}
	if o.Hierarchy == rhNull || auth == rhOwner && o.Hierarchy == rhPlatform {
		return qualify(rcHierarchy, rcH|2*rcN)
	}
	if !inRange(ph) {
		return qualify(rcRange, rcP|rcN)
	}
	if t.s.Persistent[ph] != nil {
		return rcNVDefined
	}
	if len(t.s.Persistent) >= maxPersistent {
		return rcNVSpace
	}
	t.s.Persistent[ph] = o.clone()
	return rcSuccess
}

func (o *object) clone() *object {
	n := &object{
		Public:    append([]byte(nil), o.Public...),
		Auth:      append([]byte(nil), o.Auth...),
		Seed:      append([]byte(nil), o.Seed...),
		Sensitive: append([]byte(nil), o.Sensitive...),
		HasPriv:   o.HasPriv,
		External:  o.External,
		Hierarchy: o.Hierarchy,
		QName:     append([]byte(nil), o.QName...),
		pub:       o.pub,
		name:      o.name,
		priv:      o.priv,
		pk:        o.pk,
	}
	return n
}

// Saved-context handles (Part 2, section 7.4 and the reference
// implementation): an ordinary object and an stClear object.
const (
	savedObject  = 0x80000000
	savedSTClear = 0x80000002
)

// contextKeys derives the encryption key and IV and the integrity key of a
// saved context from the hierarchy's proof, so that clearing a hierarchy
// (or a TPM Reset, for the null hierarchy) invalidates its saved contexts.
func (t *TPM) contextKeys(hier uint32, seq uint64, handle uint32) (enc, iv, mac []byte) {
	var ctx [12]byte
	binary.BigEndian.PutUint64(ctx[:], seq)
	binary.BigEndian.PutUint32(ctx[8:], handle)
	k := tpm2.KDFa(sha256Hash, t.s.proof(hier), "CONTEXT", ctx[:], nil, (32+16+32)*8)
	return k[:32], k[32:48], k[48:]
}

// contextMAC binds a saved context to the TPM's reset count (and restart
// count for stClear objects) and to its sequence, handle and hierarchy.
func (t *TPM) contextMAC(key []byte, seq uint64, handle, hier uint32, enc []byte) []byte {
	m := hmac.New(sha256.New, key)
	var b [28]byte
	binary.BigEndian.PutUint32(b[0:], t.s.ResetCount)
	if handle == savedSTClear {
		binary.BigEndian.PutUint32(b[4:], t.s.RestartCount)
	}
	binary.BigEndian.PutUint64(b[8:], seq)
	binary.BigEndian.PutUint32(b[16:], handle)
	binary.BigEndian.PutUint32(b[20:], hier)
	m.Write(b[:24])
	m.Write(enc)
	return m.Sum(nil)
}

// cmdContextSave is TPM2_ContextSave (Part 3, section 28.2) for transient
// objects and sessions (saveSessionContext).
func (t *TPM) cmdContextSave(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	h := c.h[0]
	if isSessionHandle(h) {
		return t.saveSessionContext(c, h)
	}
	if q := t.sequenceAt(h); q != nil {
		return t.saveSequenceContext(c, h, q)
	}
	if h>>24 != htTransient {
		return qualify(rcHandle, rcH|rcN)
	}
	o := t.s.Transient[h]
	var pw writer
	pw.b2b(o.Public)
	pw.b2b(o.Auth)
	pw.b2b(o.Seed)
	pw.b2b(o.Sensitive)
	var flags uint8
	if o.HasPriv {
		flags |= 1
	}
	if o.External {
		flags |= 2
	}
	pw.u8(flags)
	pw.b2b(o.QName)
	saved := uint32(savedObject)
	if o.attrs()&oaSTClear != 0 {
		saved = savedSTClear
	}
	t.s.ContextSeq++
	seq := t.s.ContextSeq
	ek, iv, mk := t.contextKeys(o.Hierarchy, seq, saved)
	cfbEncryptIV(ek, iv, pw.b)
	mac := t.contextMAC(mk, seq, saved, o.Hierarchy, pw.b)
	c.w.u64(seq)
	c.w.u32(saved)
	c.w.u32(o.Hierarchy)
	s := c.w.begin2b()
	c.w.b2b(mac)
	c.w.raw(pw.b)
	c.w.end2b(s)
	clear(pw.b)
	clear(ek)
	clear(mk)
	return rcSuccess
}

// cmdContextLoad is TPM2_ContextLoad (Part 3, section 28.3). Its checks
// come in the reference implementation's order: the TPMS_CONTEXT fields
// as they unmarshal (TPMI_DH_SAVED and TPMI_RH_HIERARCHY+ answer
// TPM_RC_VALUE), then the integrity value at the start of the blob
// (unmarshaled without a parameter number), its size and the size of
// what follows, then the integrity itself.
func (t *TPM) cmdContextLoad(c *call) uint32 {
	r := &c.r
	seq := r.u64()
	saved := r.u32()
	if r.ok() && !validSavedHandle(saved) {
		return qualify(rcValue, r.q)
	}
	hier := r.u32()
	if r.ok() && !validHandle(hkHierarchyNull, hier) {
		return qualify(rcValue, r.q)
	}
	blob := r.b2b(maxContextSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	br := newReader(blob)
	mac := br.b2b(maxDigestSize)
	if !br.ok() {
		return br.code
	}
	enc := br.rest()
	if len(mac) != sha256.Size || len(enc) < 8 {
		return qualify(rcSize, rcP|rcN)
	}
	if isSessionHandle(saved) {
		return t.loadSessionContext(c, seq, saved, hier, mac, enc)
	}
	pt, rc := t.openContext(seq, saved, hier, mac, enc)
	if rc != rcSuccess {
		return rc
	}
	if !t.hierarchyEnabled(hier) {
		clear(pt)
		return qualify(rcHierarchy, rcP|rcN)
	}
	if saved == savedSequence {
		return t.loadSequenceContext(c, hier, pt)
	}
	pr := newReader(pt)
	o := &object{Hierarchy: hier}
	o.Public = append([]byte(nil), pr.b2b(maxContextSize)...)
	o.Auth = append([]byte(nil), pr.b2b(maxDigestSize)...)
	o.Seed = append([]byte(nil), pr.b2b(maxDigestSize)...)
	o.Sensitive = append([]byte(nil), pr.b2b(maxRSAKeyBytes)...)
	flags := pr.u8()
	o.HasPriv = flags&1 != 0
	o.External = flags&2 != 0
	o.QName = append([]byte(nil), pr.b2b(maxDigestSize+2)...)
	clear(pt)
	if !pr.ok() || !pr.empty() || !o.init() {
		o.clear()
		return qualify(rcIntegrity, rcP|rcN)
	}
	h := t.allocTransient()
	if h == 0 {
		o.clear()
		return rcObjectMemory
	}
	t.s.Transient[h] = o
	c.outHandle = h
	return rcSuccess
}

// validSavedHandle checks the savedHandle of a TPMS_CONTEXT
// (TPMI_DH_SAVED): an HMAC or policy session handle, or one of the three
// object context handles (an object's, a sequence object's, an stClear
// object's).
func validSavedHandle(h uint32) bool {
	switch h {
	case savedObject, savedObject + 1, savedSTClear:
		return true
	}
	return h-hmacSessionFirst < maxActiveSessions || h-policySessionFirst < maxActiveSessions
}

// signatureKeys are the Go key types objects can hold.
var (
	_ = (*ecdsa.PrivateKey)(nil)
	_ = (*rsa.PrivateKey)(nil)
)
