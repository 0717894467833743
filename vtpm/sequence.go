package vtpm

import (
	"bytes"
	"crypto/hmac"
	"crypto/subtle"
	"encoding"
	"errors"
	"hash"
)

// Hash, HMAC and event sequences (Part 3, sections 17.2-17.6).
//
// A sequence occupies a transient object slot, as in the reference
// implementation, so that it counts against the loaded objects, is listed
// by GetCapability and is flushed by FlushContext. The slot holds a
// placeholder object that no other command can use for anything: a
// keyed-hash data object without a sensitive part, with userWithAuth and
// noDA (the sequence's authValue, like the reference's sequence objects,
// is exempt from dictionary-attack protection) and a random unique field
// that identifies it. The sequence itself is in state.Sequences under the
// same handle. A sequence whose placeholder is no longer in its slot
// (flushed, lost at power off) is dropped after the command that removed
// it (sweepSequences).
//
// ContextSave of a sequence saves the whole sequence (saveSequenceContext):
// its authValue and running hash states, under the saved handle
// 0x80000001 that the reference implementation gives sequence contexts.
// ContextLoad puts it in a new slot with a new placeholder, and it
// continues where it was.

const (
	ccHMAC                  = 0x155
	ccHMACStart             = 0x15B
	ccSequenceUpdate        = 0x15C
	ccSequenceComplete      = 0x13E
	ccEventSequenceComplete = 0x185
	ccHashSequenceStart     = 0x186

	maxBuffer = 1024 // MAX_DIGEST_BUFFER: TPM2B_MAX_BUFFER

	seqHash  = 1
	seqHMAC  = 2
	seqEvent = 3
)

// sequence is one hash, HMAC or event sequence.
type sequence struct {
	kind uint8
	alg  uint16      // hash or HMAC algorithm; unused for events
	h    []hash.Hash // one per bank (hashAlgs order) for events, else one
	// opad is the HMAC key XOR opad, one hash block (secret).
	opad []byte
	// firstBlock and ticketSafe decide the hashcheck ticket of a hash
	// sequence: only the first block of data may start with
	// TPM_GENERATED_VALUE (TicketIsSafe in the reference implementation).
	firstBlock bool
	ticketSafe bool
	// public is the placeholder's public area; obj the placeholder once
	// linked (nil after Open until the first lookup).
	public []byte
	obj    *object
}

func (q *sequence) clear() {
	clear(q.opad)
	for _, h := range q.h {
		h.Reset()
	}
	q.h = nil
	q.obj = nil
}

// sealedSequence is the sealed form of a sequence (docs/vtpm-state.md).
type sealedSequence struct {
	Kind       uint8    `cbor:"1,keyasint"`
	Alg        uint16   `cbor:"2,keyasint"`
	States     [][]byte `cbor:"3,keyasint"` // hash.Hash MarshalBinary, per bank for events
	OPad       []byte   `cbor:"4,keyasint"`
	FirstBlock bool     `cbor:"5,keyasint"`
	TicketSafe bool     `cbor:"6,keyasint"`
	Public     []byte   `cbor:"7,keyasint"`
}

var errBadSequence = errors.New("vtpm: bad sequence state")

// MarshalCBOR seals the running hash states.
func (q *sequence) MarshalCBOR() ([]byte, error) {
	s := sealedSequence{Kind: q.kind, Alg: q.alg, OPad: q.opad, FirstBlock: q.firstBlock, TicketSafe: q.ticketSafe, Public: q.public}
	for _, h := range q.h {
		m, ok := h.(encoding.BinaryMarshaler)
		if !ok {
			return nil, errBadSequence
		}
		b, err := m.MarshalBinary()
		if err != nil {
			return nil, err
		}
		s.States = append(s.States, b)
	}
	b, err := encMode().Marshal(&s)
	for _, st := range s.States {
		clear(st)
	}
	return b, err
}

// UnmarshalCBOR restores a sequence sealed by MarshalCBOR and checks it.
func (q *sequence) UnmarshalCBOR(data []byte) error {
	var s sealedSequence
	if err := decMode().Unmarshal(data, &s); err != nil {
		return err
	}
	var algs []uint16
	switch s.Kind {
	case seqHash, seqHMAC:
		if !isHash(s.Alg) {
			return errBadSequence
		}
		algs = []uint16{s.Alg}
	case seqEvent:
		algs = hashAlgs[:]
	default:
		return errBadSequence
	}
	if len(s.States) != len(algs) || len(s.Public) > maxContextSize ||
		s.Kind == seqHMAC && len(s.OPad) != hashOf(s.Alg).New().BlockSize() ||
		s.Kind != seqHMAC && len(s.OPad) != 0 {
		return errBadSequence
	}
	*q = sequence{kind: s.Kind, alg: s.Alg, opad: s.OPad, firstBlock: s.FirstBlock, ticketSafe: s.TicketSafe, public: s.Public}
	for i, alg := range algs {
		h := hashOf(alg).New()
		u, ok := h.(encoding.BinaryUnmarshaler)
		if !ok || u.UnmarshalBinary(s.States[i]) != nil {
			return errBadSequence
		}
		clear(s.States[i])
		q.h = append(q.h, h)
	}
	return nil
}

func init() {
	register(&cmdDef{cc: ccHashSequenceStart, rHandle: true, fn: (*TPM).cmdHashSequenceStart})
	register(&cmdDef{cc: ccHMACStart, handles: []handleKind{hkObject}, auth: 1, rHandle: true, fn: (*TPM).cmdHMACStart})
	register(&cmdDef{cc: ccSequenceUpdate, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdSequenceUpdate})
	register(&cmdDef{cc: ccSequenceComplete, handles: []handleKind{hkObject}, auth: 1, flushed: true, fn: (*TPM).cmdSequenceComplete})
	register(&cmdDef{cc: ccEventSequenceComplete, handles: []handleKind{hkPCR, hkObject}, auth: 2, flushed: true, fn: (*TPM).cmdEventSequenceComplete})
	register(&cmdDef{cc: ccHMAC, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdHMAC})
}

// newSequence puts q in a free transient slot with the authValue auth and
// returns its handle, or 0 when the slots are full.
func (t *TPM) newSequence(q *sequence, auth []byte) uint32 {
	t.sweepSequences()
	h := t.allocTransient()
	if h == 0 {
		return 0
	}
	id := make([]byte, 32)
	random(id)
	p := &publicArea{
		Type:    algKeyedHash,
		NameAlg: algSHA256,
		Attrs:   oaUserWithAuth | oaNoDA,
		Scheme:  algNull,
		Unique:  id,
	}
	o := &object{
		Auth:      append([]byte(nil), trimZeros(auth)...),
		External:  true, // never made persistent
		Hierarchy: rhNull,
		Public:    p.bytes(),
		pub:       p,
	}
	// A sequence has an empty Name, as in the reference implementation
	// (its nameAlg is TPM_ALG_NULL there): HMAC sessions authorizing it
	// use the empty Name, as go-tpm does for its "anon" handles.
	o.name = []byte{}
	q.public = o.Public
	q.obj = o
	t.s.Transient[h] = o
	if t.s.Sequences == nil {
		t.s.Sequences = map[uint32]*sequence{}
	}
	t.s.Sequences[h] = q
	return h
}

// sequenceAt returns the sequence in slot h, or nil when h holds an
// ordinary object.
func (t *TPM) sequenceAt(h uint32) *sequence {
	q := t.s.Sequences[h]
	if q == nil {
		return nil
	}
	o := t.s.Transient[h]
	if o == nil {
		return nil
	}
	if q.obj == nil && bytes.Equal(o.Public, q.public) {
		// First use after Open, which computed the placeholder's Name
		// from its public area.
		q.obj = o
		o.name = []byte{}
		o.QName = nil
	}
	if q.obj != o {
		return nil
	}
	return q
}

// dropSequence forgets the sequence of slot h, if any.
func (t *TPM) dropSequence(h uint32) {
	if q := t.s.Sequences[h]; q != nil {
		q.clear()
		delete(t.s.Sequences, h)
	}
}

// flushSequence ends the sequence of slot h and frees the slot.
func (t *TPM) flushSequence(h uint32) {
	t.dropSequence(h)
	if o := t.s.Transient[h]; o != nil {
		o.clear()
		delete(t.s.Transient, h)
	}
}

// sweepSequences drops the sequences whose placeholder left its slot.
func (t *TPM) sweepSequences() {
	for h := range t.s.Sequences {
		if t.sequenceAt(h) == nil {
			t.dropSequence(h)
		}
	}
}

// parseHashAlgNull reads a TPMI_ALG_HASH+ (a hash or TPM_ALG_NULL).
func parseHashAlgNull(r *reader) uint16 {
	alg := r.u16()
	if r.ok() && alg != algNull && !isHash(alg) {
		r.fail(rcHash)
	}
	return alg
}

// cmdHashSequenceStart is TPM2_HashSequenceStart (Part 3, section 17.3):
// a hash sequence, or with TPM_ALG_NULL an event sequence that hashes with
// every bank's algorithm.
func (t *TPM) cmdHashSequenceStart(c *call) uint32 {
	r := &c.r
	auth := r.b2b(maxDigestSize)
	r.param(2)
	alg := parseHashAlgNull(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	q := &sequence{kind: seqHash, alg: alg}
	if alg == algNull {
		q.kind = seqEvent
		for _, a := range hashAlgs {
			q.h = append(q.h, hashOf(a).New())
		}
	} else {
		q.h = []hash.Hash{hashOf(alg).New()}
	}
	h := t.newSequence(q, auth)
	if h == 0 {
		return rcObjectMemory
	}
	c.outHandle = h
	return rcSuccess
}

// parseMACAlg reads the hashAlg of TPM2_HMAC and TPM2_HMAC_Start, which the
// reference implementation unmarshals as a TPMI_ALG_MAC_SCHEME+: an
// unknown algorithm is TPM_RC_SYMMETRIC. (TPM_ALG_CMAC, which that type
// also admits, is not implemented here and is refused the same way.)
func parseMACAlg(r *reader) uint16 {
	alg := r.u16()
	if r.ok() && alg != algNull && !isHash(alg) {
		r.fail(rcSymmetric)
	}
	return alg
}

// hmacKey checks an HMAC key and resolves the MAC algorithm from the
// key's scheme and the caller's (TPM2_HMAC and TPM2_HMAC_Start, Part 3,
// sections 15.5 and 17.2, which the reference implementation runs as
// TPM2_MAC and TPM2_MAC_Start: CryptSelectMac, then the attributes).
// SMAC (CMAC with a symmetric key) is not implemented, so a symmetric key
// always fails the algorithm check.
func hmacKey(o *object, alg uint16, macParam uint32) (uint16, uint32) {
	p := o.pub
	var keyAlg uint16 = algNull
	switch p.Type {
	case algKeyedHash:
		if p.Scheme != algNull {
			keyAlg = p.SchemeHash
		}
	case algSymCipher:
		if p.SymAlg != algNull {
			keyAlg = p.SymMode
		}
	default:
		return 0, qualify(rcType, rcH|rcN)
	}
	if alg != algNull {
		if keyAlg != algNull && alg != keyAlg {
			return 0, qualify(rcValue, macParam)
		}
	} else {
		if keyAlg == algNull {
			return 0, qualify(rcValue, macParam)
		}
		alg = keyAlg
	}
	if p.Type != algKeyedHash || !isHash(alg) {
		return 0, qualify(rcScheme, macParam)
	}
	if p.Attrs&oaRestricted != 0 {
		return 0, qualify(rcAttributes, rcH|rcN)
	}
	if p.Attrs&oaSign == 0 || !o.HasPriv {
		return 0, qualify(rcKey, rcH|rcN)
	}
	return alg, rcSuccess
}

// newHMACSequence starts HMAC(key, ...) with alg as an inner hash and an
// outer pad, so that its state can be sealed.
func newHMACSequence(alg uint16, key []byte) *sequence {
	h := hashOf(alg).New()
	bs := h.BlockSize()
	k := make([]byte, bs)
	if len(key) > bs {
		kh := hashOf(alg).New()
		kh.Write(key)
		kh.Sum(k[:0])
		k = k[:bs]
	} else {
		copy(k, key)
	}
	ipad := make([]byte, bs)
	opad := make([]byte, bs)
	for i := range k {
		ipad[i] = k[i] ^ 0x36
		opad[i] = k[i] ^ 0x5c
	}
	h.Write(ipad)
	clear(ipad)
	clear(k)
	return &sequence{kind: seqHMAC, alg: alg, h: []hash.Hash{h}, opad: opad}
}

// sum finishes an HMAC sequence.
func (q *sequence) hmacSum() []byte {
	inner := q.h[0].Sum(nil)
	o := hashOf(q.alg).New()
	o.Write(q.opad)
	o.Write(inner)
	return o.Sum(nil)
}

// cmdHMACStart is TPM2_HMAC_Start (Part 3, section 17.2).
func (t *TPM) cmdHMACStart(c *call) uint32 {
	r := &c.r
	auth := r.b2b(maxDigestSize)
	r.param(2)
	alg := parseMACAlg(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	key := t.object(c.h[0])
	alg, rc := hmacKey(key, alg, rcP|2*rcN)
	if rc != rcSuccess {
		return rc
	}
	h := t.newSequence(newHMACSequence(alg, key.Sensitive), auth)
	if h == 0 {
		return rcObjectMemory
	}
	c.outHandle = h
	return rcSuccess
}

// cmdHMAC is TPM2_HMAC (Part 3, section 15.5).
func (t *TPM) cmdHMAC(c *call) uint32 {
	r := &c.r
	data := r.b2b(maxBuffer)
	r.param(2)
	alg := parseMACAlg(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	key := t.object(c.h[0])
	alg, rc := hmacKey(key, alg, rcP|2*rcN)
	if rc != rcSuccess {
		return rc
	}
	m := hmac.New(hashOf(alg).New, key.Sensitive)
	m.Write(data)
	c.w.b2b(m.Sum(nil))
	return rcSuccess
}

// ticketSafe reports whether a hashcheck ticket may vouch for data that
// starts with b: at least four bytes, not TPM_GENERATED_VALUE.
func ticketSafe(b []byte) bool {
	return len(b) >= 4 && subtle.ConstantTimeCompare(b[:4], []byte{0xff, 0x54, 0x43, 0x47}) == 0
}

// cmdSequenceUpdate is TPM2_SequenceUpdate (Part 3, section 17.4).
func (t *TPM) cmdSequenceUpdate(c *call) uint32 {
	data := c.r.b2b(maxBuffer)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	q := t.sequenceAt(c.h[0])
	if q == nil {
		return qualify(rcMode, rcH|rcN)
	}
	if q.kind == seqHash && !q.firstBlock {
		q.firstBlock = true
		q.ticketSafe = ticketSafe(data)
	}
	for _, h := range q.h {
		h.Write(data)
	}
	return rcSuccess
}

// cmdSequenceComplete is TPM2_SequenceComplete (Part 3, section 17.5). A
// hash sequence gets a hashcheck ticket from the hierarchy unless its data
// started with TPM_GENERATED_VALUE (or had fewer than four bytes in its
// first block), so that a restricted key never signs a digest of data
// that could pass for a TPM attestation.
func (t *TPM) cmdSequenceComplete(c *call) uint32 {
	r := &c.r
	data := r.b2b(maxBuffer)
	r.param(2)
	hier := r.u32()
	if r.ok() && !validHandle(hkHierarchyNull, hier) {
		return qualify(rcValue, r.q)
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	q := t.sequenceAt(c.h[0])
	if q == nil || q.kind == seqEvent {
		return qualify(rcMode, rcH|rcN)
	}
	q.h[0].Write(data)
	if q.kind == seqHMAC {
		c.w.b2b(q.hmacSum())
		writeNullTicket(&c.w, stHashCheck)
	} else {
		if !q.firstBlock {
			q.ticketSafe = ticketSafe(data)
		}
		d := q.h[0].Sum(nil)
		c.w.b2b(d)
		if hier == rhNull || !q.ticketSafe {
			writeNullTicket(&c.w, stHashCheck)
		} else {
			c.w.u16(stHashCheck)
			c.w.u32(hier)
			c.w.b2b(t.ticket(hier, q.alg, stHashCheck, d))
		}
	}
	t.flushSequence(c.h[0])
	return rcSuccess
}

// cmdEventSequenceComplete is TPM2_EventSequenceComplete (Part 3,
// section 17.6): the digests of every bank's algorithm, each extended into
// the PCR's bank when the PCR is not TPM_RH_NULL.
func (t *TPM) cmdEventSequenceComplete(c *call) uint32 {
	data := c.r.b2b(maxBuffer)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	q := t.sequenceAt(c.h[1])
	if q == nil || q.kind != seqEvent {
		return qualify(rcMode, rcH|2*rcN)
	}
	pcr := c.h[0]
	if pcr != rhNull {
		if rc := pcrAllowed(pcr, false); rc != rcSuccess {
			return rc
		}
	}
	c.w.u32(uint32(len(hashAlgs)))
	for i, alg := range hashAlgs {
		h := q.h[i]
		h.Write(data)
		d := h.Sum(nil)
		c.w.u16(alg)
		c.w.raw(d)
		if pcr != rhNull && t.pcrAllocated(alg, int(pcr)) {
			t.s.PCR.extend(alg, int(pcr), d)
			t.pcrChanged(pcr)
		}
	}
	t.flushSequence(c.h[1])
	return rcSuccess
}

// savedSequence is the saved-context handle of a sequence, as in the
// reference implementation (TPM2_ContextSave: 0x80000001, between the
// ordinary and the stClear object).
const savedSequence = 0x80000001

// Sequence contexts (TPM2_ContextSave and TPM2_ContextLoad of a sequence,
// Part 3, sections 28.2 and 28.3). The context blob is
//
//	MAC || CFB(authValue (TPM2B) || sequence (TPM2B, the CBOR of
//	       docs/vtpm-state.md's sequence map))
//
// encrypted and MACed exactly as an object context (contextKeys,
// contextMAC): under keys derived from the null hierarchy's proof, which a
// TPM Reset replaces, and with the reset count, the context's sequence
// number, its saved handle and its hierarchy in the MAC. A sequence is in
// the null hierarchy, so its contexts load until the next TPM Reset, on
// this TPM only, and survive TPM Restart and Resume (as the reference's,
// whose sequence contexts do not carry the clear count). Like any object
// context, and as in the reference implementation, a sequence context may
// be loaded more than once while it is valid: each load is a separate
// sequence that continues from the saved state. The sequence keeps its
// authValue; as before the save it is exempt from dictionary-attack
// protection and has the empty Name.

// saveSequenceContext is TPM2_ContextSave of the sequence q in slot h. The
// sequence stays loaded.
func (t *TPM) saveSequenceContext(c *call, h uint32, q *sequence) uint32 {
	st, err := q.MarshalCBOR()
	if err != nil {
		return rcFailure
	}
	var pw writer
	pw.b2b(t.s.Transient[h].Auth)
	pw.b2b(st)
	clear(st)
	t.writeContext(c, savedSequence, rhNull, pw.b)
	clear(pw.b)
	return rcSuccess
}

// loadSequenceContext is TPM2_ContextLoad of a sequence context, once
// cmdContextLoad has checked and decrypted it: pt is cleared.
func (t *TPM) loadSequenceContext(c *call, hier uint32, pt []byte) uint32 {
	defer clear(pt)
	r := newReader(pt)
	auth := r.b2b(maxDigestSize)
	st := r.b2b(maxContextSize)
	var q sequence
	// The MAC covers the blob, so a malformed plaintext means a TPM
	// defect (the reference fails); refuse it as a bad context.
	if !r.ok() || !r.empty() || hier != rhNull || q.UnmarshalCBOR(st) != nil {
		q.clear()
		return qualify(rcIntegrity, rcP|rcN)
	}
	h := t.newSequence(&q, auth)
	if h == 0 {
		q.clear()
		return rcObjectMemory
	}
	c.outHandle = h
	return rcSuccess
}

// writeContext writes the TPMS_CONTEXT of a saved object with the next
// context sequence number: sequence, savedHandle, hierarchy and the blob
// MAC || pt, pt encrypted in place (Part 2, section 14.3; the blob's form
// is this TPM's own).
func (t *TPM) writeContext(c *call, saved, hier uint32, pt []byte) {
	t.s.ContextSeq++
	seq := t.s.ContextSeq
	ek, iv, mk := t.contextKeys(hier, seq, saved)
	cfbEncryptIV(ek, iv, pt)
	mac := t.contextMAC(mk, seq, saved, hier, pt)
	c.w.u64(seq)
	c.w.u32(saved)
	c.w.u32(hier)
	s := c.w.begin2b()
	c.w.b2b(mac)
	c.w.raw(pt)
	c.w.end2b(s)
	clear(ek)
	clear(mk)
}

// openContext checks the MAC of an object or sequence context blob (its
// integrity value and encrypted part) and returns its decrypted contents,
// which the caller clears. A blob that is changed, from another TPM or
// hierarchy, or from before a TPM Reset is TPM_RC_INTEGRITY.
func (t *TPM) openContext(seq uint64, saved, hier uint32, mac, enc []byte) ([]byte, uint32) {
	ek, iv, mk := t.contextKeys(hier, seq, saved)
	ok := hmac.Equal(mac, t.contextMAC(mk, seq, saved, hier, enc))
	clear(mk)
	if !ok {
		clear(ek)
		return nil, qualify(rcIntegrity, rcP|rcN)
	}
	pt := append([]byte(nil), enc...)
	cfbDecryptIV(ek, iv, pt)
	clear(ek)
	return pt, rcSuccess
}
