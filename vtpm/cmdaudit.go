package vtpm

import "slices"

// Command audit (Part 1, "Command Audit"; Part 3, sections 18.6,
// TPM2_GetCommandAuditDigest, and 21.2, TPM2_SetCommandCodeAuditStatus).
//
// The TPM keeps a list of audited command codes and one audit digest.
// After each successful command in the list, with or without sessions,
//
//	auditDigest = H(auditDigest || cpHash || rpHash)
//
// with H the audit hash algorithm, cpHash over the command as sent and
// rpHash over the response as returned. A digest that is empty starts
// from zeros, and the audit counter counts those starts, so that a
// verifier can tell one digest from the next. TPM2_GetCommandAuditDigest
// attests the counter, the algorithm, the digest and a digest of the
// list, and empties the digest when it signs.
//
// As in the reference implementation: TPM2_SetCommandCodeAuditStatus is
// always audited and TPM2_Shutdown never; setting the algorithm empties
// the digest, and the command that sets it is not audited; the list, the
// algorithm and the counter survive every startup (they are persistent
// data), the digest survives TPM Restart and TPM Resume but not TPM
// Reset, and TPM2_Clear sets the counter to zero. All of it is sealed
// with the state (docs/vtpm-state.md, key 86).

const (
	ccGetCommandAuditDigest     = 0x133
	ccSetCommandCodeAuditStatus = 0x140
	stAttestCommandAudit        = 0x8015 // TPM_ST_ATTEST_COMMAND_AUDIT

	// defaultAuditAlg is the audit hash algorithm of a new TPM: the
	// reference implementation's CONTEXT_INTEGRITY_HASH_ALG, its
	// strongest hash.
	defaultAuditAlg = algSHA512
)

func init() {
	register(&cmdDef{cc: ccSetCommandCodeAuditStatus, handles: []handleKind{hkProvision}, auth: 1, nv: true, fn: (*TPM).cmdSetCommandCodeAuditStatus})
	register(&cmdDef{cc: ccGetCommandAuditDigest, handles: []handleKind{hkEndorsement, hkObjectNull}, auth: 2, nv: true, fn: (*TPM).cmdGetCommandAuditDigest})
}

// commandAudit is the sealed command audit state. Its zero value is the
// state of a new TPM, so that a state sealed before command audit existed
// opens with it.
type commandAudit struct {
	// Alg is the audit hash algorithm (TPM_ALG_ID); zero means
	// defaultAuditAlg.
	Alg uint16 `cbor:"1,keyasint,omitempty"`
	// Commands are the audited command codes in ascending order, other
	// than TPM2_SetCommandCodeAuditStatus, which always is.
	Commands []uint32 `cbor:"2,keyasint,omitempty"`
	// Counter is the audit counter (TPM_PT_AUDIT_COUNTER_0 and _1).
	Counter uint64 `cbor:"3,keyasint,omitempty"`
	// Digest is the audit digest, empty or the size of Alg's digests.
	Digest []byte `cbor:"4,keyasint,omitempty"`
}

// alg returns the audit hash algorithm.
func (a *commandAudit) alg() uint16 {
	if a.Alg == 0 {
		return defaultAuditAlg
	}
	return a.Alg
}

// audited reports whether command cc is audited.
func (a *commandAudit) audited(cc uint32) bool {
	if cc == ccSetCommandCodeAuditStatus {
		return true
	}
	_, ok := slices.BinarySearch(a.Commands, cc)
	return ok
}

// set adds cc to the list if it is implemented, and not TPM2_Shutdown
// (CommandAuditSet in the reference implementation).
func (a *commandAudit) set(cc uint32) {
	if lookupCommand(cc) == nil || cc == ccShutdown || cc == ccSetCommandCodeAuditStatus {
		return
	}
	if i, ok := slices.BinarySearch(a.Commands, cc); !ok {
		a.Commands = slices.Insert(a.Commands, i, cc)
	}
}

// remove takes cc off the list, unless it is
// TPM2_SetCommandCodeAuditStatus (CommandAuditClear).
func (a *commandAudit) remove(cc uint32) {
	if i, ok := slices.BinarySearch(a.Commands, cc); ok {
		a.Commands = slices.Delete(a.Commands, i, i+1)
	}
}

// valid checks a sealed command audit state.
func (a *commandAudit) valid() bool {
	if a.Alg != 0 && !isHash(a.Alg) {
		return false
	}
	if len(a.Digest) != 0 && len(a.Digest) != hashOf(a.alg()).Size() {
		return false
	}
	for i, cc := range a.Commands {
		if lookupCommand(cc) == nil || cc == ccShutdown || cc == ccSetCommandCodeAuditStatus ||
			i > 0 && a.Commands[i-1] >= cc {
			return false
		}
	}
	return true
}

// commandDigest is the digest of the list of audited commands: H of their
// command codes in ascending order (CommandAuditGetDigest).
func (a *commandAudit) commandDigest() []byte {
	h := hashOf(a.alg()).New()
	var b [4]byte
	for cc, d := range commands {
		if d != nil && a.audited(uint32(cc)) {
			putU32(b[:], uint32(cc))
			h.Write(b[:])
		}
	}
	return h.Sum(nil)
}

// startCommandAudit is called before an audited command runs, after its
// authorization and before its parameters are decrypted: it computes the
// command's cpHash with the audit algorithm, over the parameters as sent
// and the Names the handles have before the command.
func (t *TPM) startCommandAudit(c *call) {
	if !t.s.Audit.audited(c.def.cc) {
		return
	}
	c.cmdAudit = true
	t.cpHash(c, t.s.Audit.alg())
}

// commandAuditResponse extends the audit digest after a successful
// audited command (CommandAudit in the reference implementation). rpHash
// computes the response's rpHash with an algorithm.
func (t *TPM) commandAuditResponse(c *call, rpHash func(alg uint16) []byte) {
	if !c.cmdAudit {
		return
	}
	a := &t.s.Audit
	alg := a.alg()
	n := hashOf(alg).Size()
	if len(a.Digest) == 0 {
		a.Digest = make([]byte, n)
		a.Counter++
	}
	h := hashOf(alg).New()
	h.Write(a.Digest)
	h.Write(t.cpHash(c, alg))
	h.Write(rpHash(alg))
	a.Digest = h.Sum(a.Digest[:0])
}

// commandAuditStartup empties the audit digest at TPM Reset
// (CommandAuditStartup).
func (t *TPM) commandAuditStartup(kind int) {
	if kind == startReset {
		t.s.Audit.Digest = nil
	}
}

// parseCCList reads a TPML_CC of at most MAX_CAP_CC codes.
func parseCCList(r *reader) []uint32 {
	n := r.u32()
	if !r.ok() {
		return nil
	}
	if n > maxCapCC {
		r.fail(rcSize)
		return nil
	}
	ccs := make([]uint32, n)
	for i := range ccs {
		ccs[i] = r.u32()
	}
	return ccs
}

// cmdSetCommandCodeAuditStatus is TPM2_SetCommandCodeAuditStatus (Part 3,
// section 21.2), with owner or platform authorization: it changes the
// audit hash algorithm, which empties the audit digest, or else adds
// setList to and removes clearList from the audited commands. Codes of
// commands that are not implemented are ignored, as are TPM2_Shutdown in
// setList and TPM2_SetCommandCodeAuditStatus in clearList.
func (t *TPM) cmdSetCommandCodeAuditStatus(c *call) uint32 {
	r := &c.r
	alg := parseHashAlgNull(r)
	r.param(2)
	setList := parseCCList(r)
	r.param(3)
	clearList := parseCCList(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	a := &t.s.Audit
	if alg != algNull && alg != a.alg() {
		if len(setList) != 0 || len(clearList) != 0 {
			return qualify(rcValue, rcP|rcN)
		}
		a.Alg = alg
		clear(a.Digest)
		a.Digest = nil
		// The command that changes the algorithm is not audited: the
		// digest stays empty (the reference implementation's digest
		// size of one).
		c.cmdAudit = false
		return rcSuccess
	}
	for _, cc := range setList {
		a.set(cc)
	}
	for _, cc := range clearList {
		a.remove(cc)
	}
	return rcSuccess
}

// cmdGetCommandAuditDigest is TPM2_GetCommandAuditDigest (Part 3, section
// 18.6): a TPMS_ATTEST of type TPM_ST_ATTEST_COMMAND_AUDIT with the audit
// counter, the audit algorithm, the audit digest and the digest of the
// list of audited commands, signed by signHandle (or unsigned with
// TPM_RH_NULL), with the privacy administrator's (endorsement)
// authorization. A signed attestation empties the audit digest, so that
// the next audited command starts a new one under the next counter value.
func (t *TPM) cmdGetCommandAuditDigest(c *call) uint32 {
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
	a := &t.s.Audit
	var aw writer
	aw.b = make([]byte, 0, 256)
	t.attestHeader(&aw, stAttestCommandAudit, namedSigner(signer), extra)
	aw.u64(a.Counter)
	aw.u16(a.alg())
	aw.b2b(a.Digest)
	aw.b2b(a.commandDigest())
	rc = signAttest(c, signer, scheme, hash, aw.b)
	if rc == rcSuccess && signer != nil {
		clear(a.Digest)
		a.Digest = nil
	}
	return rc
}
