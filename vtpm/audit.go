package vtpm

// Audit sessions (Part 1, section 19.6.x "audit sessions"; Part 3,
// section 18.5, TPM2_GetSessionAuditDigest).
//
// An HMAC session with the audit attribute in a command's authorization
// area extends its sessionDigest when the command succeeds:
//
//	sessionDigest = H(sessionDigest || cpHash || rpHash)
//
// with H the session's hash, cpHash over the command as sent (encrypted
// parameters included) and rpHash over the response as returned. The
// first audited command, and one with auditReset, starts the digest from
// zeros and makes the session the exclusive audit session; any later
// successful command that may have sessions but is not audited by that
// session ends the exclusivity, and a command with auditExclusive then
// fails with TPM_RC_EXCLUSIVE. The response reports exclusivity in its
// auditExclusive attribute. A session that starts auditing is no longer
// bound (InitAuditSession in the reference implementation). Policy and
// trial sessions cannot audit (TPM_RC_ATTRIBUTES). Audit state is
// volatile like the sessions themselves.
//
// Command audit (TPM2_SetCommandCodeAuditStatus,
// TPM2_GetCommandAuditDigest) is in cmdaudit.go.

const (
	ccGetSessionAuditDigest = 0x14D
	stAttestSessionAudit    = 0x8016 // TPM_ST_ATTEST_SESSION_AUDIT
)

func init() {
	register(&cmdDef{cc: ccGetSessionAuditDigest, handles: []handleKind{hkEndorsement, hkObjectNull, hkHMACSession}, auth: 2, fn: (*TPM).cmdGetSessionAuditDigest})
}

// exclusiveAudit returns the exclusive audit session, or nil.
func (t *TPM) exclusiveAudit() *session {
	for _, s := range t.sessions {
		if s.auditExclusive {
			return s
		}
	}
	return nil
}

// clearExclusiveAudit ends the exclusivity of audit.
func (t *TPM) clearExclusiveAudit() {
	if s := t.exclusiveAudit(); s != nil {
		s.auditExclusive = false
	}
}

// auditResponse updates the audit state after a successful command with
// sessions (UpdateAuditSessionStatus in the reference implementation):
// the audit session's digest is extended with the command's cpHash and
// the response's rpHash, and the response's auditExclusive attribute
// tells whether it is the exclusive audit session. rpHash computes the
// response's rpHash with an algorithm.
func (t *TPM) auditResponse(c *call, rpHash func(alg uint16) []byte) {
	if c.audit == 0 {
		t.clearExclusiveAudit()
		return
	}
	in := &c.sess[c.audit-1]
	s := in.s
	if !s.isAudit || in.attrs&saAuditReset != 0 {
		s.isAudit = true
		s.bound = false
		clear(s.auditDigest[:])
		t.clearExclusiveAudit()
		s.auditExclusive = true
	} else if !s.auditExclusive {
		t.clearExclusiveAudit()
	}
	if s.auditExclusive {
		in.attrs |= saAuditExclusive
	} else {
		in.attrs &^= saAuditExclusive
	}
	n := hashOf(s.hashAlg).Size()
	h := hashOf(s.hashAlg).New()
	h.Write(s.auditDigest[:n])
	h.Write(t.cpHash(c, s.hashAlg))
	h.Write(rpHash(s.hashAlg))
	h.Sum(s.auditDigest[:0])
}

// cmdGetSessionAuditDigest is TPM2_GetSessionAuditDigest (Part 3, section
// 18.5): a TPMS_ATTEST of type TPM_ST_ATTEST_SESSION_AUDIT with the audit
// session's sessionDigest and whether it is the exclusive audit session,
// signed by signHandle (or unsigned with TPM_RH_NULL), with the privacy
// administrator's (endorsement) authorization.
func (t *TPM) cmdGetSessionAuditDigest(c *call) uint32 {
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
	s := t.session(c.h[2])
	if !s.isAudit {
		return qualify(rcType, rcH|3*rcN)
	}
	var aw writer
	aw.b = make([]byte, 0, 256)
	t.attestHeader(&aw, stAttestSessionAudit, namedSigner(signer), extra)
	if s.auditExclusive {
		aw.u8(1)
	} else {
		aw.u8(0)
	}
	aw.b2b(s.auditDigest[:hashOf(s.hashAlg).Size()])
	return signAttest(c, signer, scheme, hash, aw.b)
}
