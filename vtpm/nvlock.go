package vtpm

import "encoding/binary"

// NV locks, authValue changes and bit fields (Part 3, sections 31.7,
// 31.10-31.12, 31.14 and 31.15).
//
// The locks are the TPMA_NV_READLOCKED and TPMA_NV_WRITELOCKED attributes
// of an index, which the index's Name covers. Which startups clear them
// follows the reference implementation (NvSetStartupAttributes):
//
//   - TPM Reset and TPM Restart (Startup(CLEAR)) clear READLOCKED;
//   - they clear WRITELOCKED unless the index has TPMA_NV_WRITEDEFINE and
//     has been written, which locks it until it is undefined;
//   - they make an index with TPMA_NV_CLEAR_STCLEAR unwritten, and TPM
//     Reset one with TPMA_NV_ORDERLY (counters excepted);
//   - TPM Resume (Startup(STATE)) keeps everything.

const ccNVChangeAuth = 0x13B

func init() {
	register(&cmdDef{cc: ccNVReadLock, handles: []handleKind{hkNVAuth, hkNVIndex}, auth: 1, fn: (*TPM).cmdNVReadLock})
	register(&cmdDef{cc: ccNVWriteLock, handles: []handleKind{hkNVAuth, hkNVIndex}, auth: 1, nv: true, write: true, fn: (*TPM).cmdNVWriteLock})
	register(&cmdDef{cc: ccNVGlobalWriteLock, handles: []handleKind{hkProvision}, auth: 1, nv: true, fn: (*TPM).cmdNVGlobalWriteLock})
	register(&cmdDef{cc: ccNVSetBits, handles: []handleKind{hkNVAuth, hkNVIndex}, auth: 1, nv: true, write: true, fn: (*TPM).cmdNVSetBits})
	register(&cmdDef{cc: ccNVChangeAuth, handles: []handleKind{hkNVIndex}, auth: 1, roles: []role{roleAdmin}, nv: true, fn: (*TPM).cmdNVChangeAuth})
}

// cmdNVReadLock is TPM2_NV_ReadLock (Part 3, section 31.14). Locking an
// index that is already read-locked succeeds; locking an unwritten index
// is allowed.
func (t *TPM) cmdNVReadLock(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[1]]
	switch nvReadAccess(nv, c.h[0]) {
	case rcNVAuthorization:
		return rcNVAuthorization
	case rcNVLocked:
		return rcSuccess
	}
	if nv.Attrs&nvReadSTClear == 0 {
		return qualify(rcAttributes, rcH|2*rcN)
	}
	nv.Attrs |= nvReadLocked
	return rcSuccess
}

// cmdNVWriteLock is TPM2_NV_WriteLock (Part 3, section 31.10). The index
// must have TPMA_NV_WRITEDEFINE or TPMA_NV_WRITE_STCLEAR; locking a locked
// index succeeds.
func (t *TPM) cmdNVWriteLock(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[1]]
	switch nvWriteAccess(nv, c.h[0]) {
	case rcSuccess:
	case rcNVAuthorization:
		return rcNVAuthorization
	default: // already locked
		return rcSuccess
	}
	if nv.Attrs&(nvWriteDefine|nvWriteSTClear) == 0 {
		return qualify(rcAttributes, rcH|2*rcN)
	}
	nv.Attrs |= nvWriteLocked
	return rcSuccess
}

// cmdNVGlobalWriteLock is TPM2_NV_GlobalWriteLock (Part 3, section
// 31.11): every index with TPMA_NV_GLOBALLOCK becomes write-locked until
// the next TPM Reset or Restart (or for good, for a written index with
// TPMA_NV_WRITEDEFINE).
func (t *TPM) cmdNVGlobalWriteLock(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	for _, nv := range t.s.NV {
		if nv.Attrs&nvGlobalLock != 0 {
			nv.Attrs |= nvWriteLocked
		}
	}
	return rcSuccess
}

// cmdNVSetBits is TPM2_NV_SetBits (Part 3, section 31.15): the index, a
// bit field, becomes its old value (zero if unwritten) OR bits.
func (t *TPM) cmdNVSetBits(c *call) uint32 {
	bits := c.r.u64()
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[1]]
	if rc := nvWriteAccess(nv, c.h[0]); rc != rcSuccess {
		return rc
	}
	if nv.typ() != ntBits {
		return qualify(rcAttributes, rcH|2*rcN)
	}
	var v uint64
	if nv.Attrs&nvWritten != 0 && len(nv.Data) == 8 {
		v = binary.BigEndian.Uint64(nv.Data)
	}
	nv.Data = binary.BigEndian.AppendUint64(nv.Data[:0], v|bits)
	nv.Attrs |= nvWritten
	return rcSuccess
}

// cmdNVChangeAuth is TPM2_NV_ChangeAuth (Part 3, section 31.12). It needs
// the ADMIN role, which for an NV index only a policy session provides
// (Part 1, section 19.2.3): the index's policy must include
// TPM2_PolicyCommandCode(TPM_CC_NV_ChangeAuth).
func (t *TPM) cmdNVChangeAuth(c *call) uint32 {
	// The reference implementation refuses a password or HMAC session
	// for the ADMIN role before the command runs; dispatch does not know
	// roles of NV indices, so the check is here.
	if c.nsess == 0 || c.sess[0].handle>>24 != htPolicySession {
		return rcAuthType
	}
	auth := c.r.b2b(maxDigestSize)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	nv := t.s.NV[c.h[0]]
	auth = trimZeros(auth)
	if len(auth) > hashOf(nv.NameAlg).Size() {
		return qualify(rcSize, rcP|rcN)
	}
	clear(nv.Auth)
	nv.Auth = append([]byte(nil), auth...)
	return rcSuccess
}

// nvStartup applies a TPM Reset or TPM Restart to the NV indices (see the
// comment at the top of this file). It is not called for TPM Resume.
func (t *TPM) nvStartup(kind int) {
	for _, nv := range t.s.NV {
		a := nv.Attrs &^ nvReadLocked
		if nv.typ() != ntCounter && (a&nvClearSTClear != 0 || a&nvOrderly != 0 && kind == startReset) {
			a &^= nvWritten
		}
		if a&nvWritten == 0 || a&nvWriteDefine == 0 {
			a &^= nvWriteLocked
		}
		if a&nvWritten == 0 && nv.typ() != ntOrdinary {
			clear(nv.Data)
			nv.Data = nil
		}
		nv.Attrs = a
	}
}
