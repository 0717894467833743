package vtpm

import (
	"crypto"
	"errors"
)

// pcrBanks holds every PCR of the four allocated banks.
type pcrBanks struct {
	SHA1   [numPCRs][20]byte `cbor:"1,keyasint"`
	SHA256 [numPCRs][32]byte `cbor:"2,keyasint"`
	SHA384 [numPCRs][48]byte `cbor:"3,keyasint"`
	SHA512 [numPCRs][64]byte `cbor:"4,keyasint"`
}

// get returns the storage of PCR i in the bank of alg, or nil.
func (b *pcrBanks) get(alg uint16, i int) []byte {
	switch alg {
	case algSHA1:
		return b.SHA1[i][:]
	case algSHA256:
		return b.SHA256[i][:]
	case algSHA384:
		return b.SHA384[i][:]
	case algSHA512:
		return b.SHA512[i][:]
	}
	return nil
}

// pcrAttr is a PCR's attributes from the PC Client Platform TPM Profile
// (PTP), section 4.6, "PCR Attributes": whether Shutdown(STATE) saves it and
// the localities (bit n is locality n) that may reset and extend it.
type pcrAttr struct {
	save          bool
	noIncrement   bool // changes do not count in pcrUpdateCounter
	resetLocality uint8
	extLocality   uint8
}

func pcrAttrs(i int) pcrAttr {
	switch {
	case i < 16:
		return pcrAttr{true, false, 0x00, 0x1F}
	case i == 16, i == 23:
		return pcrAttr{false, false, 0x0F, 0x1F}
	case i == 17, i == 18:
		return pcrAttr{false, false, 0x10, 0x1C}
	case i == 19:
		return pcrAttr{false, false, 0x10, 0x0C}
	case i == 20:
		return pcrAttr{false, true, 0x14, 0x0E}
	default: // 21, 22
		return pcrAttr{false, true, 0x14, 0x04}
	}
}

// locality is the locality of every command. Locality-aware transports
// (the mssim and swtpm interfaces) come with the next issue.
const locality = 0

// resetPCR sets PCR i of every bank to its initial value: all ones for the
// D-RTM PCRs that locality 4 resets, zeros otherwise.
func (b *pcrBanks) resetPCR(i int) {
	v := byte(0)
	if pcrAttrs(i).resetLocality&0x10 != 0 {
		v = 0xFF
	}
	for _, alg := range hashAlgs {
		p := b.get(alg, i)
		for j := range p {
			p[j] = v
		}
	}
}

func (b *pcrBanks) resetAll() {
	for i := 0; i < numPCRs; i++ {
		b.resetPCR(i)
	}
}

// extend extends PCR i of the bank of alg with digest: PCR := H(PCR ||
// digest).
func (b *pcrBanks) extend(alg uint16, i int, digest []byte) {
	p := b.get(alg, i)
	var buf [2 * maxDigestSize]byte
	n := copy(buf[:], p)
	n += copy(buf[n:], digest)
	h := hashOf(alg)
	switch h {
	case crypto.SHA256:
		s := sha256Sum(buf[:n])
		copy(p, s[:])
	default:
		hh := h.New()
		hh.Write(buf[:n])
		hh.Sum(p[:0])
	}
}

// pcrSelection is one TPMS_PCR_SELECTION.
type pcrSelection struct {
	alg  uint16
	size uint8
	bits [4]byte
}

func (s *pcrSelection) has(i int) bool { return i/8 < int(s.size) && s.bits[i/8]&(1<<(i%8)) != 0 }

// parsePCRSelections decodes a TPML_PCR_SELECTION (Part 2, section 10.9.7).
func parsePCRSelections(r *reader) []pcrSelection {
	n := r.u32()
	if !r.ok() {
		return nil
	}
	if n > uint32(len(hashAlgs)) {
		r.fail(rcSize)
		return nil
	}
	sels := make([]pcrSelection, n)
	for i := range sels {
		s := &sels[i]
		s.alg = r.u16()
		if r.ok() && !isHash(s.alg) {
			r.fail(rcHash)
			return nil
		}
		s.size = r.u8()
		if r.ok() && (s.size < pcrSelectMin || s.size > (numPCRs+7)/8) {
			r.fail(rcValue)
			return nil
		}
		copy(s.bits[:], r.bytes(int(s.size)))
		if !r.ok() {
			return nil
		}
	}
	return sels
}

func marshalPCRSelections(w *writer, sels []pcrSelection) {
	w.u32(uint32(len(sels)))
	for _, s := range sels {
		w.u16(s.alg)
		w.u8(s.size)
		w.raw(s.bits[:s.size])
	}
}

// pcrDigest hashes the selected PCRs, bank by bank in selection order and
// ascending within a bank (Part 3, section 18.4: the digest of a quote).
//
// PCRs that are not allocated are left out, as the reference
// implementation's FilterPcr does; [TPM.filterPCRSelections] clears them
// from a selection that is reported alongside the digest.
func (t *TPM) pcrDigest(alg uint16, sels []pcrSelection) []byte {
	h := hashOf(alg).New()
	for _, s := range sels {
		for i := 0; i < numPCRs; i++ {
			if s.has(i) && t.pcrAllocated(s.alg, i) {
				h.Write(t.s.PCR.get(s.alg, i))
			}
		}
	}
	return h.Sum(nil)
}

func init() {
	register(&cmdDef{cc: ccPCRRead, fn: (*TPM).pcrRead})
	register(&cmdDef{cc: ccPCRExtend, handles: []handleKind{hkPCR}, auth: 1, fn: (*TPM).pcrExtend})
	register(&cmdDef{cc: ccPCREvent, handles: []handleKind{hkPCR}, auth: 1, fn: (*TPM).pcrEvent})
	register(&cmdDef{cc: ccPCRReset, handles: []handleKind{hkPCR}, auth: 1, fn: (*TPM).pcrReset})
	register(&cmdDef{cc: ccPCRAllocate, handles: []handleKind{hkPlatform}, auth: 1, nv: true, fn: (*TPM).cmdPCRAllocate})
}

// bankIndex returns the index of alg in hashAlgs, or -1.
func bankIndex(alg uint16) int {
	for i, a := range hashAlgs {
		if a == alg {
			return i
		}
	}
	return -1
}

// pcrAllocated reports whether PCR i of the bank of alg is allocated
// (PcrIsAllocated in the reference implementation).
func (t *TPM) pcrAllocated(alg uint16, i int) bool {
	b := bankIndex(alg)
	return b >= 0 && i >= 0 && i < numPCRs && t.s.PCRUnallocated[b]&(1<<i) == 0
}

// filterPCRSelections clears the PCRs that are not allocated from sels
// (FilterPcr in the reference implementation).
func (t *TPM) filterPCRSelections(sels []pcrSelection) {
	for k := range sels {
		s := &sels[k]
		for i := 0; i < numPCRs; i++ {
			if s.has(i) && !t.pcrAllocated(s.alg, i) {
				s.bits[i/8] &^= 1 << (i % 8)
			}
		}
	}
}

// cmdPCRAllocate is TPM2_PCR_Allocate (Part 3, section 22.5). The new
// allocation is kept aside and becomes current at the next
// TPM2_Startup(CLEAR); until then TPM2_Shutdown(STATE) is refused. Banks
// that the request does not name keep their current allocation. The H-CRTM PCR
// (0) and the D-RTM PCR (17) must stay allocated in at least one bank.
func (t *TPM) cmdPCRAllocate(c *call) uint32 {
	sels := parsePCRSelections(&c.r)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	// As in the reference implementation, the request is applied to the
	// current allocation, not to an allocation still pending.
	next := t.s.PCRUnallocated
	for _, s := range sels {
		b := bankIndex(s.alg)
		var unalloc uint32
		for i := 0; i < numPCRs; i++ {
			if !s.has(i) {
				unalloc |= 1 << i
			}
		}
		next[b] = unalloc
	}
	needed := 0
	hcrtm, drtm := false, false
	for b, alg := range hashAlgs {
		for i := 0; i < numPCRs; i++ {
			if next[b]&(1<<i) == 0 {
				needed += hashOf(alg).Size()
			}
		}
		hcrtm = hcrtm || next[b]&(1<<0) == 0
		drtm = drtm || next[b]&(1<<17) == 0
	}
	if !hcrtm || !drtm {
		return rcPCR
	}
	t.s.PCRAllocNext = next
	t.s.PCRAllocPending = true
	c.w.u8(1) // allocationSuccess
	c.w.u32(numPCRs)
	c.w.u32(uint32(needed))
	c.w.u32(pcrBanksSize)
	return rcSuccess
}

// pcrRead is TPM2_PCR_Read (Part 3, section 22.4). At most eight digests are
// returned; the output selection says which.
func (t *TPM) pcrRead(c *call) uint32 {
	sels := parsePCRSelections(&c.r)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	c.w.u32(t.s.PCRCounter)
	var vals [8][]byte
	n := 0
	out := make([]pcrSelection, len(sels))
	for k, s := range sels {
		out[k] = pcrSelection{alg: s.alg, size: s.size}
		for i := 0; i < numPCRs; i++ {
			if !s.has(i) || n == len(vals) || !t.pcrAllocated(s.alg, i) {
				continue
			}
			vals[n] = t.s.PCR.get(s.alg, i)
			n++
			out[k].bits[i/8] |= 1 << (i % 8)
		}
	}
	marshalPCRSelections(&c.w, out)
	c.w.u32(uint32(n))
	for _, v := range vals[:n] {
		c.w.b2b(v)
	}
	return rcSuccess
}

// pcrAllowed checks the PC Client locality rules for PCR h.
func pcrAllowed(h uint32, reset bool) uint32 {
	a := pcrAttrs(int(h))
	mask := a.extLocality
	if reset {
		mask = a.resetLocality
	}
	if mask&(1<<locality) == 0 {
		return rcLocality
	}
	return rcSuccess
}

// pcrChanged counts a change of one PCR in one bank, as the reference
// implementation counts.
func (t *TPM) pcrChanged(i uint32) {
	if !pcrAttrs(int(i)).noIncrement {
		t.s.PCRCounter++
	}
}

// pcrExtend is TPM2_PCR_Extend (Part 3, section 22.2).
func (t *TPM) pcrExtend(c *call) uint32 {
	r := &c.r
	n := r.u32()
	if !r.ok() {
		return r.code
	}
	if n > uint32(len(hashAlgs)) {
		return qualify(rcSize, r.q)
	}
	type ha struct {
		alg uint16
		d   []byte
	}
	var ds [len(hashAlgs)]ha
	for i := 0; i < int(n); i++ {
		alg := r.u16()
		if !r.ok() {
			return r.code
		}
		if !isHash(alg) {
			return qualify(rcHash, r.q)
		}
		ds[i] = ha{alg, r.bytes(hashOf(alg).Size())}
		if !r.ok() {
			return r.code
		}
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	h := c.h[0]
	if h == rhNull {
		return rcSuccess
	}
	if rc := pcrAllowed(h, false); rc != rcSuccess {
		return rc
	}
	for _, d := range ds[:n] {
		if t.pcrAllocated(d.alg, int(h)) {
			t.s.PCR.extend(d.alg, int(h), d.d)
			t.pcrChanged(h)
		}
	}
	return rcSuccess
}

// pcrEvent is TPM2_PCR_Event (Part 3, section 22.3): it hashes the event
// data with every implemented hash, extends the allocated banks and returns
// the digests.
func (t *TPM) pcrEvent(c *call) uint32 {
	data := c.r.b2b(maxDigestBuffer)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	h := c.h[0]
	if h != rhNull {
		if rc := pcrAllowed(h, false); rc != rcSuccess {
			return rc
		}
	}
	c.w.u32(uint32(len(hashAlgs)))
	for _, alg := range hashAlgs {
		d := digestOf(alg, data)
		c.w.u16(alg)
		c.w.raw(d)
		if h != rhNull && t.pcrAllocated(alg, int(h)) {
			t.s.PCR.extend(alg, int(h), d)
			t.pcrChanged(h)
		}
	}
	return rcSuccess
}

// pcrReset is TPM2_PCR_Reset (Part 3, section 22.8).
func (t *TPM) pcrReset(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	h := c.h[0]
	if h == rhNull {
		return rcSuccess
	}
	if rc := pcrAllowed(h, true); rc != rcSuccess {
		return rc
	}
	t.s.PCR.resetPCR(int(h))
	t.pcrChanged(h)
	return rcSuccess
}

// pcrBanksSize is the size of the sealed form of pcrBanks.
const pcrBanksSize = numPCRs * (20 + 32 + 48 + 64)

// MarshalCBOR encodes the banks as one byte string: the SHA-1 bank's 24
// values, then SHA-256's, SHA-384's and SHA-512's (docs/vtpm-state.md).
// One string instead of 96 keeps Seal and Open fast.
func (b *pcrBanks) MarshalCBOR() ([]byte, error) {
	flat := make([]byte, 0, pcrBanksSize)
	for _, alg := range hashAlgs {
		for i := 0; i < numPCRs; i++ {
			flat = append(flat, b.get(alg, i)...)
		}
	}
	return encMode().Marshal(flat)
}

// UnmarshalCBOR decodes the form MarshalCBOR writes.
func (b *pcrBanks) UnmarshalCBOR(data []byte) error {
	var flat []byte
	if err := decMode().Unmarshal(data, &flat); err != nil {
		return err
	}
	if len(flat) != pcrBanksSize {
		return errors.New("vtpm: bad PCR banks")
	}
	for _, alg := range hashAlgs {
		for i := 0; i < numPCRs; i++ {
			flat = flat[copy(b.get(alg, i), flat):]
		}
	}
	return nil
}
