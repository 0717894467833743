package vtpm

import "encoding/binary"

// NV index attributes (TPMA_NV), Part 2, section 13.4.
const (
	nvPPWrite        = 1 << 0
	nvOwnerWrite     = 1 << 1
	nvAuthWrite      = 1 << 2
	nvPolicyWrite    = 1 << 3
	nvTypeShift      = 4
	nvTypeMask       = 0xF << nvTypeShift
	nvPolicyDelete   = 1 << 10
	nvWriteLocked    = 1 << 11
	nvWriteAll       = 1 << 12
	nvWriteDefine    = 1 << 13
	nvWriteSTClear   = 1 << 14
	nvGlobalLock     = 1 << 15
	nvPPRead         = 1 << 16
	nvOwnerRead      = 1 << 17
	nvAuthRead       = 1 << 18
	nvPolicyRead     = 1 << 19
	nvNoDA           = 1 << 25
	nvOrderly        = 1 << 26
	nvClearSTClear   = 1 << 27
	nvReadLocked     = 1 << 28
	nvWritten        = 1 << 29
	nvPlatformCreate = 1 << 30
	nvReadSTClear    = 1 << 31
	nvReserved       = 3<<8 | 0x1F<<20

	ntOrdinary = 0
	ntCounter  = 1
	ntBits     = 2
	ntExtend   = 4
)

// nvIndex is an NV index: its public area (TPMS_NV_PUBLIC), authValue and
// data.
type nvIndex struct {
	Index   uint32 `cbor:"1,keyasint"`
	NameAlg uint16 `cbor:"2,keyasint"`
	Attrs   uint32 `cbor:"3,keyasint"`
	Policy  []byte `cbor:"4,keyasint"`
	Size    uint16 `cbor:"5,keyasint"`
	Auth    []byte `cbor:"6,keyasint"`
	Data    []byte `cbor:"7,keyasint"`
}

func (nv *nvIndex) typ() uint32 { return (nv.Attrs & nvTypeMask) >> nvTypeShift }

func (nv *nvIndex) marshalPublic(w *writer) {
	w.u32(nv.Index)
	w.u16(nv.NameAlg)
	w.u32(nv.Attrs)
	w.b2b(nv.Policy)
	w.u16(nv.Size)
}

func (nv *nvIndex) name() []byte {
	var w writer
	nv.marshalPublic(&w)
	return nameOf(nv.NameAlg, w.b)
}

func init() {
	register(&cmdDef{cc: ccNVDefineSpace, handles: []handleKind{hkProvision}, auth: 1, nv: true, fn: (*TPM).cmdNVDefineSpace})
	register(&cmdDef{cc: ccNVUndefineSpace, handles: []handleKind{hkProvision, hkNVIndex}, auth: 1, nv: true, fn: (*TPM).cmdNVUndefineSpace})
	register(&cmdDef{cc: ccNVWrite, handles: []handleKind{hkNVAuth, hkNVIndex}, auth: 1, nv: true, write: true, fn: (*TPM).cmdNVWrite})
	register(&cmdDef{cc: ccNVIncrement, handles: []handleKind{hkNVAuth, hkNVIndex}, auth: 1, nv: true, write: true, fn: (*TPM).cmdNVIncrement})
	register(&cmdDef{cc: ccNVExtend, handles: []handleKind{hkNVAuth, hkNVIndex}, auth: 1, nv: true, write: true, fn: (*TPM).cmdNVExtend})
	register(&cmdDef{cc: ccNVRead, handles: []handleKind{hkNVAuth, hkNVIndex}, auth: 1, fn: (*TPM).cmdNVRead})
	register(&cmdDef{cc: ccNVReadPublic, handles: []handleKind{hkNVIndex}, fn: (*TPM).cmdNVReadPublic})
}

// nvUsed is the NV memory in use, counting data and authValues.
func (t *TPM) nvUsed() int {
	n := 0
	for _, nv := range t.s.NV {
		n += int(nv.Size) + len(nv.Auth) + len(nv.Policy) + 16
	}
	return n
}

// cmdNVDefineSpace is TPM2_NV_DefineSpace (Part 3, section 31.3).
func (t *TPM) cmdNVDefineSpace(c *call) uint32 {
	r := &c.r
	auth := r.b2b(maxDigestSize)
	r.param(2)
	pb := r.b2b(maxCommandSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	q2 := uint32(rcP | 2*rcN)
	if len(pb) == 0 {
		return qualify(rcSize, q2)
	}
	pr := newReader(pb)
	pr.q = q2
	nv := &nvIndex{}
	nv.Index = pr.u32()
	if pr.ok() && nv.Index>>24 != htNVIndex {
		return qualify(rcValue, q2)
	}
	nv.NameAlg = pr.u16()
	if pr.ok() && !isHash(nv.NameAlg) {
		return qualify(rcHash, q2)
	}
	nv.Attrs = pr.u32()
	nv.Policy = append([]byte(nil), pr.b2b(maxDigestSize)...)
	nv.Size = pr.u16()
	if !pr.ok() {
		return pr.code
	}
	if !pr.empty() {
		return qualify(rcSize, q2)
	}
	a := nv.Attrs
	if a&nvReserved != 0 {
		return qualify(rcReservedBits, q2)
	}
	hsize := hashOf(nv.NameAlg).Size()
	if len(trimZeros(auth)) > hsize {
		return qualify(rcSize, rcP|rcN)
	}
	if len(nv.Policy) != 0 && len(nv.Policy) != hsize {
		return qualify(rcSize, q2)
	}
	// Platform indices cannot be defined while platformNV is disabled
	// (TPM2_HierarchyControl); owner ones cannot be authorized then.
	if c.h[0] == rhPlatform && t.s.Hier.PlatformNVDisabled {
		return qualify(rcHierarchy, rcH|rcN)
	}
	switch nv.typ() {
	case ntOrdinary:
		if nv.Size > maxNVIndexSize {
			return qualify(rcSize, q2)
		}
	case ntCounter, ntBits:
		if nv.Size != 8 {
			return qualify(rcSize, q2)
		}
	case ntExtend:
		if int(nv.Size) != hsize {
			return qualify(rcSize, q2)
		}
	default:
		return qualify(rcAttributes, q2)
	}
	if a&(nvPPRead|nvOwnerRead|nvAuthRead|nvPolicyRead) == 0 ||
		a&(nvPPWrite|nvOwnerWrite|nvAuthWrite|nvPolicyWrite) == 0 ||
		a&(nvWriteLocked|nvReadLocked|nvWritten) != 0 {
		return qualify(rcAttributes, q2)
	}
	if nv.typ() != ntOrdinary && a&nvWriteAll != 0 {
		return qualify(rcAttributes, q2)
	}
	if (c.h[0] == rhPlatform) != (a&nvPlatformCreate != 0) {
		return qualify(rcAttributes, q2)
	}
	if a&nvPolicyDelete != 0 && c.h[0] != rhPlatform {
		return qualify(rcAttributes, q2)
	}
	if t.s.NV[nv.Index] != nil {
		return rcNVDefined
	}
	if len(t.s.NV) >= maxNVIndices || t.nvUsed()+int(nv.Size)+len(auth)+16 > nvMemory {
		return rcNVSpace
	}
	nv.Auth = append([]byte(nil), trimZeros(auth)...)
	t.s.NV[nv.Index] = nv
	return rcSuccess
}

// cmdNVUndefineSpace is TPM2_NV_UndefineSpace (Part 3, section 31.4).
func (t *TPM) cmdNVUndefineSpace(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[1]]
	if nv.Attrs&nvPolicyDelete != 0 {
		return qualify(rcAttributes, rcH|2*rcN)
	}
	if nv.Attrs&nvPlatformCreate != 0 && c.h[0] != rhPlatform {
		return rcNVAuthorization
	}
	clear(nv.Auth)
	clear(nv.Data)
	delete(t.s.NV, c.h[1])
	return rcSuccess
}

// nvWriteAccess checks TPMA_NV for a write authorized by authHandle
// (NvWriteAccessChecks in the reference implementation).
func nvWriteAccess(nv *nvIndex, auth uint32) uint32 {
	a := nv.Attrs
	if a&nvWriteLocked != 0 {
		return rcNVLocked
	}
	switch {
	case auth == rhOwner && a&nvOwnerWrite != 0,
		auth == rhPlatform && a&nvPPWrite != 0,
		auth == nv.Index && a&nvAuthWrite != 0:
		return rcSuccess
	}
	return rcNVAuthorization
}

func nvReadAccess(nv *nvIndex, auth uint32) uint32 {
	a := nv.Attrs
	if a&nvReadLocked != 0 {
		return rcNVLocked
	}
	switch {
	case auth == rhOwner && a&nvOwnerRead != 0,
		auth == rhPlatform && a&nvPPRead != 0,
		auth == nv.Index && a&nvAuthRead != 0:
	default:
		return rcNVAuthorization
	}
	if a&nvWritten == 0 {
		return rcNVUninitialized
	}
	return rcSuccess
}

// cmdNVWrite is TPM2_NV_Write (Part 3, section 31.6).
func (t *TPM) cmdNVWrite(c *call) uint32 {
	r := &c.r
	data := r.b2b(maxNVBufferSize)
	r.param(2)
	off := int(r.u16())
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[1]]
	if rc := nvWriteAccess(nv, c.h[0]); rc != rcSuccess {
		return rc
	}
	if nv.typ() != ntOrdinary {
		return rcAttributes
	}
	if off+len(data) > int(nv.Size) {
		return rcNVRange
	}
	if nv.Attrs&nvWriteAll != 0 && len(data) != int(nv.Size) {
		return rcNVRange
	}
	if nv.Data == nil {
		// Unwritten bytes of an ordinary index read as 0xFF.
		nv.Data = make([]byte, nv.Size)
		for i := range nv.Data {
			nv.Data[i] = 0xFF
		}
	}
	copy(nv.Data[off:], data)
	nv.Attrs |= nvWritten
	return rcSuccess
}

// cmdNVIncrement is TPM2_NV_Increment (Part 3, section 31.8). A counter
// starts at the highest value any counter of this TPM has had, so it never
// repeats a value even across Undefine and Define.
func (t *TPM) cmdNVIncrement(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[1]]
	if rc := nvWriteAccess(nv, c.h[0]); rc != rcSuccess {
		return rc
	}
	if nv.typ() != ntCounter {
		return qualify(rcAttributes, rcH|2*rcN)
	}
	var v uint64
	if nv.Attrs&nvWritten != 0 {
		v = binary.BigEndian.Uint64(nv.Data)
	} else {
		v = t.s.MaxCounter
	}
	v++
	if v > t.s.MaxCounter {
		t.s.MaxCounter = v
	}
	nv.Data = binary.BigEndian.AppendUint64(nv.Data[:0], v)
	nv.Attrs |= nvWritten
	return rcSuccess
}

// cmdNVExtend is TPM2_NV_Extend (Part 3, section 31.9).
func (t *TPM) cmdNVExtend(c *call) uint32 {
	data := c.r.b2b(maxNVBufferSize)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[1]]
	if rc := nvWriteAccess(nv, c.h[0]); rc != rcSuccess {
		return rc
	}
	if nv.typ() != ntExtend {
		return qualify(rcAttributes, rcH|2*rcN)
	}
	old := nv.Data
	if nv.Attrs&nvWritten == 0 {
		old = make([]byte, nv.Size)
	}
	nv.Data = digestOf(nv.NameAlg, old, data)
	nv.Attrs |= nvWritten
	return rcSuccess
}

// cmdNVRead is TPM2_NV_Read (Part 3, section 31.13).
func (t *TPM) cmdNVRead(c *call) uint32 {
	r := &c.r
	size := int(r.u16())
	r.param(2)
	off := int(r.u16())
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[1]]
	if rc := nvReadAccess(nv, c.h[0]); rc != rcSuccess {
		return rc
	}
	if off+size > int(nv.Size) {
		return rcNVRange
	}
	if size > maxNVBufferSize {
		return rcValue | rcP | rcN
	}
	c.w.b2b(nv.Data[off : off+size])
	return rcSuccess
}

// cmdNVReadPublic is TPM2_NV_ReadPublic (Part 3, section 31.5).
func (t *TPM) cmdNVReadPublic(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[0]]
	s := c.w.begin2b()
	nv.marshalPublic(&c.w)
	c.w.end2b(s)
	c.w.b2b(nv.name())
	return rcSuccess
}
