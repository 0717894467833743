package vtpm

// session is an authorization session. This issue implements only what
// go-tpm-tools needs to create endorsement keys: unsalted, unbound policy
// and trial sessions that can be started and flushed. Authorizing commands
// with them (and HMAC sessions and parameter encryption) comes with the
// sessions issue; until then a policy session in an authorization area is
// refused with TPM_RC_AUTH_UNAVAILABLE.
type session struct {
	handle   uint32
	typ      uint8
	hashAlg  uint16
	nonceTPM []byte

	// policy is the state of a policy or trial session (policy.go).
	policy policyState
}

// Session types (TPM_SE), Part 2, section 6.11.
const (
	seHMAC   = 0x00
	sePolicy = 0x01
	seTrial  = 0x03
)

func init() {
	register(&cmdDef{cc: ccStartAuthSession, handles: []handleKind{hkObjectNull, hkEntity}, rHandle: true, fn: (*TPM).cmdStartAuthSession})
}

func (t *TPM) session(h uint32) *session {
	if t.sessions == nil {
		return nil
	}
	return t.sessions[h]
}

func (t *TPM) flushSession(h uint32) {
	if s := t.sessions[h]; s != nil {
		clear(s.nonceTPM)
	}
	delete(t.sessions, h)
}

// cmdStartAuthSession is TPM2_StartAuthSession (Part 3, section 11.1),
// limited to unsalted, unbound policy and trial sessions without
// parameter encryption.
func (t *TPM) cmdStartAuthSession(c *call) uint32 {
	r := &c.r
	nonceCaller := r.b2b(maxDigestSize)
	r.param(2)
	salt := r.b2b(maxRSAKeyBytes)
	r.param(3)
	typ := r.u8()
	if r.ok() && typ != seHMAC && typ != sePolicy && typ != seTrial {
		return qualify(rcValue, r.q)
	}
	r.param(4)
	sym := r.u16()
	if r.ok() && sym != algNull {
		if sym != algAES && sym != algXOR {
			return qualify(rcSymmetric, r.q)
		}
		r.u16()
		r.u16()
	}
	r.param(5)
	hashAlg := r.u16()
	if r.ok() && !isHash(hashAlg) {
		return qualify(rcHash, r.q)
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	if len(nonceCaller) < 16 || len(nonceCaller) > hashOf(hashAlg).Size() {
		return qualify(rcSize, rcP|rcN)
	}
	if c.h[0] != rhNull {
		// Salted sessions come with the sessions issue.
		return qualify(rcValue, rcH|rcN)
	}
	if c.h[1] != rhNull {
		return qualify(rcValue, rcH|2*rcN)
	}
	if len(salt) != 0 {
		return qualify(rcValue, rcP|2*rcN)
	}
	if typ == seHMAC {
		return qualify(rcValue, rcP|3*rcN)
	}
	if sym != algNull {
		return qualify(rcSymmetric, rcP|4*rcN)
	}
	if t.sessions == nil {
		t.sessions = map[uint32]*session{}
	}
	if len(t.sessions) >= maxSessions {
		return rcSessionMemory
	}
	var h uint32
	for i := uint32(0); i < maxSessions; i++ {
		if t.sessions[policySessionFirst+i] == nil {
			h = policySessionFirst + i
			break
		}
	}
	s := &session{handle: h, typ: typ, hashAlg: hashAlg, nonceTPM: make([]byte, hashOf(hashAlg).Size())}
	random(s.nonceTPM)
	t.sessions[h] = s
	c.outHandle = h
	c.w.b2b(s.nonceTPM)
	return rcSuccess
}

// checkHMAC checks the command HMAC of session i (an HMAC session, or a
// policy session whose policy needs the authValue) against the authorized
// entity's authValue auth (Part 1, section 19.6), counting a failure
// towards dictionary-attack lockout unless the entity is exempt. HMAC
// sessions are not implemented yet.
func (t *TPM) checkHMAC(c *call, i int, auth []byte) uint32 {
	return rcAuthUnavailable
}
