package vtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/binary"
	"math/big"
)

// Enhanced authorization (Part 1, section 19.7; Part 3, section 23).
//
// A policy session accumulates a policyDigest: every policy command folds
// its own command code and arguments into it, whether its assertion was
// checked (policy session) or not (trial session, which only computes
// digests and can authorize nothing). Some assertions cannot be checked
// when the policy command runs, because they concern the command that the
// session will authorize (its command code, cpHash, the entity names, the
// locality, the authValue); the policy commands record them in the session
// and authorizePolicy checks them together with the policyDigest.

// Command codes of the policy commands not in constants.go (Part 2,
// section 6.5.2).
const (
	ccPolicyNV           = 0x149
	ccPolicySigned       = 0x160
	ccPolicyAuthorize    = 0x16A
	ccPolicyAuthValue    = 0x16B
	ccPolicyCommandCode  = 0x16C
	ccPolicyCounterTimer = 0x16D
	ccPolicyCpHash       = 0x16E
	ccPolicyLocality     = 0x16F
	ccPolicyNameHash     = 0x170
	ccPolicyOR           = 0x171
	ccPolicyTicket       = 0x172
	ccPolicyRestart      = 0x180
	ccPolicyPhysPresence = 0x187
	ccPolicyDupSelect    = 0x188
	ccPolicyTemplate     = 0x190
	ccPolicyPassword     = 0x18C
	ccPolicyNvWritten    = 0x18F
	ccPolicyAuthorizeNV  = 0x192
	stAuthSecret         = 0x8023 // TPM_ST_AUTH_SECRET
	stAuthSigned         = 0x8025 // TPM_ST_AUTH_SIGNED
	rcCpHash             = rcVer1 + 0x051
	maxPolicyORDigests   = 8 // TPML_DIGEST
	timeInfoSize         = 25
	policyTicketHash     = algSHA256
)

// policyState is the policy-specific state of a policy or trial session
// (Part 1, section 19.7): the running policyDigest and the deferred checks
// that the policy commands record for the command the session authorizes.
// Its zero value is a session whose digest has not been initialized yet
// (see [TPM.policyOf]).
type policyState struct {
	digest []byte // policyDigest, the size of the session's hash

	// authValueNeeded (PolicyAuthValue) makes the session an HMAC
	// session for the authorized entity: its command HMAC is checked with
	// checkHMAC and its response carries an HMAC.
	authValueNeeded bool
	// passwordNeeded (PolicyPassword) makes the session's hmac field a
	// password, compared with the entity's authValue.
	passwordNeeded bool

	// commandCode (PolicyCommandCode), if not 0, is the only command
	// the session may authorize.
	commandCode uint32
	// cpHash (PolicyCpHash, or the cpHashA of PolicySigned,
	// PolicySecret and PolicyTicket), nameHash (PolicyNameHash,
	// PolicyDuplicationSelect) or templateHash (PolicyTemplate): the
	// authorized command's cpHash, the digest of its handles' names, or
	// the digest of its template must equal it. isCpHash and isTemplate
	// tell which it is.
	cpHash     []byte
	isCpHash   bool
	isTemplate bool
	// ppRequired (PolicyPhysicalPresence): physical presence must be
	// asserted, which a vTPM never does.
	ppRequired bool
	// locality (PolicyLocality), if not 0, is a TPMA_LOCALITY the
	// command's locality must be in.
	locality uint8
	// pcrCounter is the pcrUpdateCounter when PolicyPCR checked the
	// PCRs (if pcrChecked): any PCR change since fails the session.
	pcrCounter uint32
	pcrChecked bool
	// timeout (PolicySigned, PolicySecret, PolicyTicket), if not 0, is
	// the TPM Clock (ms) after which the session cannot authorize.
	timeout uint64
	// checkNVWritten (PolicyNvWritten): the authorized NV index's
	// TPMA_NV_WRITTEN must equal nvWritten.
	checkNVWritten bool
	nvWritten      bool

	// startTime is the TPM Clock (ms) when the session started or was
	// last reset (if started): PolicySigned and PolicySecret expirations
	// with a nonceTPM count from it.
	startTime uint64
	started   bool
}

// reset clears the policy state as PolicyRestart does and as a policy
// session is reset after it authorized a command and was continued (Part
// 1, section 19.7.2; SessionResetPolicyData in the reference
// implementation). The digest keeps its size and becomes all zeros.
func (p *policyState) reset(now uint64) {
	d := p.digest
	clear(d)
	clear(p.cpHash)
	*p = policyState{digest: d, startTime: now, started: true}
}

// policyOf returns the policy state of s. A state that was never used
// (a new session, or one reset by clearing it) gets the zero digest of
// the session's hash and the current time as its start.
func (t *TPM) policyOf(s *session) *policyState {
	p := &s.policy
	if !p.started || len(p.digest) != hashOf(s.hashAlg).Size() {
		t.syncClock()
		if len(p.digest) != hashOf(s.hashAlg).Size() {
			p.digest = make([]byte, hashOf(s.hashAlg).Size())
		}
		p.startTime = t.s.Clock
		p.started = true
	}
	return p
}

// update sets the digest to H(digest || cc || parts...), the extension
// every policy command performs (Part 3, section 23.1).
func (p *policyState) update(alg uint16, cc uint32, parts ...[]byte) {
	h := hashOf(alg).New()
	h.Write(p.digest)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], cc)
	h.Write(b[:])
	for _, x := range parts {
		h.Write(x)
	}
	p.digest = h.Sum(p.digest[:0])
}

// updateRef is the second step of PolicySigned, PolicySecret,
// PolicyTicket and PolicyAuthorize: digest = H(digest || policyRef), done
// even when policyRef is empty (PolicyContextUpdate in the reference).
func (p *policyState) updateRef(alg uint16, ref []byte) {
	h := hashOf(alg).New()
	h.Write(p.digest)
	h.Write(ref)
	p.digest = h.Sum(p.digest[:0])
}

// contextUpdate is PolicyContextUpdate of the reference implementation:
// the policyDigest extension of PolicySigned, PolicySecret and
// PolicyTicket, and the recording of their cpHash and timeout.
func (p *policyState) contextUpdate(alg uint16, cc uint32, name, ref, cpHash []byte, timeout uint64) {
	p.update(alg, cc, name)
	p.updateRef(alg, ref)
	if len(cpHash) != 0 {
		p.cpHash = append(p.cpHash[:0], cpHash...)
		p.isCpHash = true
	}
	if timeout != 0 && (p.timeout == 0 || p.timeout > timeout) {
		p.timeout = timeout
	}
}

func init() {
	ps := []handleKind{hkPolicySession}
	register(&cmdDef{cc: ccPolicySigned, handles: []handleKind{hkObject, hkPolicySession}, fn: (*TPM).cmdPolicySigned})
	register(&cmdDef{cc: ccPolicySecret, handles: []handleKind{hkEntity, hkPolicySession}, auth: 1, fn: (*TPM).cmdPolicySecret})
	register(&cmdDef{cc: ccPolicyTicket, handles: ps, fn: (*TPM).cmdPolicyTicket})
	register(&cmdDef{cc: ccPolicyOR, handles: ps, fn: (*TPM).cmdPolicyOR})
	register(&cmdDef{cc: ccPolicyPCR, handles: ps, fn: (*TPM).cmdPolicyPCR})
	register(&cmdDef{cc: ccPolicyLocality, handles: ps, fn: (*TPM).cmdPolicyLocality})
	register(&cmdDef{cc: ccPolicyNV, handles: []handleKind{hkNVAuth, hkNVIndex, hkPolicySession}, auth: 1, fn: (*TPM).cmdPolicyNV})
	register(&cmdDef{cc: ccPolicyCounterTimer, handles: ps, fn: (*TPM).cmdPolicyCounterTimer})
	register(&cmdDef{cc: ccPolicyCommandCode, handles: ps, fn: (*TPM).cmdPolicyCommandCode})
	register(&cmdDef{cc: ccPolicyCpHash, handles: ps, fn: (*TPM).cmdPolicyCpHash})
	register(&cmdDef{cc: ccPolicyNameHash, handles: ps, fn: (*TPM).cmdPolicyNameHash})
	register(&cmdDef{cc: ccPolicyAuthorize, handles: ps, fn: (*TPM).cmdPolicyAuthorize})
	register(&cmdDef{cc: ccPolicyAuthValue, handles: ps, fn: (*TPM).cmdPolicyAuthValue})
	register(&cmdDef{cc: ccPolicyPassword, handles: ps, fn: (*TPM).cmdPolicyPassword})
	register(&cmdDef{cc: ccPolicyGetDigest, handles: ps, fn: (*TPM).cmdPolicyGetDigest})
	register(&cmdDef{cc: ccPolicyNvWritten, handles: ps, fn: (*TPM).cmdPolicyNvWritten})
	register(&cmdDef{cc: ccPolicyAuthorizeNV, handles: []handleKind{hkNVAuth, hkNVIndex, hkPolicySession}, auth: 1, fn: (*TPM).cmdPolicyAuthorizeNV})
	register(&cmdDef{cc: ccPolicyRestart, handles: ps, fn: (*TPM).cmdPolicyRestart})
	register(&cmdDef{cc: ccPolicyPhysPresence, handles: ps, fn: (*TPM).cmdPolicyPhysicalPresence})
	register(&cmdDef{cc: ccPolicyDupSelect, handles: ps, fn: (*TPM).cmdPolicyDuplicationSelect})
	register(&cmdDef{cc: ccPolicyTemplate, handles: ps, fn: (*TPM).cmdPolicyTemplate})
}

// policyEntityHierarchy is the hierarchy whose proof keys the tickets of
// PolicySigned and PolicySecret for the entity h.
func (t *TPM) policyEntityHierarchy(h uint32) uint32 {
	switch h >> 24 {
	case htTransient, htPersistent:
		if o := t.object(h); o != nil {
			return o.Hierarchy
		}
		return rhNull
	case htNVIndex:
		if nv := t.s.NV[h]; nv != nil && nv.Attrs&nvPlatformCreate != 0 {
			return rhPlatform
		}
		return rhOwner
	case htPermanent:
		switch h {
		case rhEndorsement, rhPlatform, rhNull:
			return h
		}
		return rhOwner
	}
	return rhOwner
}

// policyAuthPolicy returns the authPolicy of the entity h and its hash
// algorithm, and false when the entity has no policy that a policy session
// may satisfy for this command (IsAuthPolicyAvailable in the reference
// implementation). A hierarchy has the policy TPM2_SetPrimaryPolicy set,
// if any; PCRs have none.
func (t *TPM) policyAuthPolicy(h uint32, def *cmdDef, r role) ([]byte, uint16, bool) {
	switch h >> 24 {
	case htPermanent:
		p := t.s.Policies.of(h)
		if p == nil || len(p.Digest) == 0 {
			return nil, 0, false
		}
		return p.Digest, p.Alg, true
	case htTransient, htPersistent:
		o := t.object(h)
		if o == nil || !o.HasPriv {
			return nil, 0, false
		}
		return o.pub.AuthPolicy, o.pub.NameAlg, true
	case htNVIndex:
		nv := t.s.NV[h]
		if nv == nil || len(nv.Policy) == 0 {
			return nil, 0, false
		}
		switch {
		case r == roleAdmin:
		case def.write:
			if nv.Attrs&nvPolicyWrite == 0 {
				return nil, 0, false
			}
		default:
			if nv.Attrs&nvPolicyRead == 0 {
				return nil, 0, false
			}
		}
		return nv.Policy, nv.NameAlg, true
	}
	return nil, 0, false
}

// policyNameHash is the digest of the names of the command's handles that
// PolicyNameHash binds a session to.
func (t *TPM) policyNameHash(c *call, alg uint16) []byte {
	h := hashOf(alg).New()
	for _, x := range c.h[:c.nh] {
		h.Write(t.entityName(x))
	}
	return h.Sum(nil)
}

// authorizePolicy checks a policy session used for authorization (Part 1,
// section 19.7; CheckAuthSession and CheckPolicyAuthSession in the
// reference implementation): the session's policyDigest must equal the
// entity's authPolicy, computed with the entity's name algorithm, and
// every deferred assertion must hold. Then PolicyPassword sessions carry
// the entity's authValue as a password and other sessions an HMAC, which
// includes the authValue after PolicyAuthValue. The caller (checkAuthSession)
// has checked dictionary-attack lockout for sessions that use the
// authValue. Errors are qualified with the session number q where the
// reference qualifies them.
func (t *TPM) authorizePolicy(c *call, i int, q uint32) uint32 {
	in := &c.sess[i]
	s := t.session(in.handle)
	if s == nil {
		return rcReferenceS0 + uint32(i)
	}
	if s.typ == seTrial {
		// A trial session computes digests; it can authorize nothing.
		return qualify(rcAttributes, q)
	}
	if s.typ != sePolicy {
		return qualify(rcHandle, q)
	}
	p := t.policyOf(s)
	h := c.h[i]
	role := c.def.roles[i]
	policy, alg, ok := t.policyAuthPolicy(h, c.def, role)
	if !ok {
		return rcAuthUnavailable
	}
	if rc := t.policyChecks(c, i, s, p, policy, alg, role); rc != rcSuccess {
		return qualify(rc, q)
	}
	if p.passwordNeeded {
		if !authEqual(t.entityAuth(h), in.hmac) {
			// TPM_RC_AUTH_FAIL, counted towards lockout, unless
			// neither the entity nor the session's bind entity is
			// DA-protected (IncrementLockout).
			return qualify(t.authFailed(c, i), q)
		}
		return rcSuccess
	}
	// The HMAC's key includes the authValue only after PolicyAuthValue
	// (checkHMAC reads that from the session).
	return t.checkHMAC(c, i, t.entityAuth(h))
}

// policyChecks is CheckPolicyAuthSession of the reference implementation.
func (t *TPM) policyChecks(c *call, i int, s *session, p *policyState, policy []byte, alg uint16, r role) uint32 {
	if c.def.cc == ccPolicySecret && !p.passwordNeeded && !p.authValueNeeded {
		return rcMode
	}
	if p.pcrChecked && p.pcrCounter != t.s.PCRCounter {
		return rcPCRChanged
	}
	if subtle.ConstantTimeCompare(p.digest, policy) != 1 || alg != s.hashAlg {
		return rcPolicyFail
	}
	if p.timeout != 0 {
		t.syncClock()
		if p.timeout < t.s.Clock {
			return rcExpired
		}
	}
	if p.commandCode != 0 {
		if p.commandCode != c.def.cc {
			return rcPolicyCC
		}
	} else if r != roleUser {
		return rcPolicyFail
	}
	if p.locality != 0 {
		if p.locality > 31 || p.locality&(1<<locality) == 0 {
			return rcLocality
		}
	}
	if p.ppRequired {
		// Physical presence is a platform signal; no operator can
		// assert it on a vTPM.
		return rcPP
	}
	if len(p.cpHash) != 0 {
		var want []byte
		switch {
		case p.isCpHash:
			want = t.cpHash(c, s.hashAlg)
		case p.isTemplate:
			want = policyTemplateHash(c, s.hashAlg)
		default:
			want = t.policyNameHash(c, s.hashAlg)
		}
		if want == nil || !bytes.Equal(want, p.cpHash) {
			return rcPolicyFail
		}
	}
	if p.checkNVWritten {
		h := c.h[i]
		nv := t.s.NV[h]
		if h>>24 != htNVIndex || nv == nil || (nv.Attrs&nvWritten != 0) != p.nvWritten {
			return rcPolicyFail
		}
	}
	return rcSuccess
}

// policySessionArg returns the policy or trial session named by handle n
// of the command. The dispatcher has checked that it is loaded.
func (t *TPM) policySessionArg(c *call, n int) (*session, *policyState) {
	s := t.session(c.h[n])
	return s, t.policyOf(s)
}

// policyExpiration computes the timeout of PolicySigned and PolicySecret
// (ComputeAuthTimeout): expiration seconds from now when nonceTPM is
// empty, else from the start of the session; 0 for no expiration.
func (t *TPM) policyExpiration(p *policyState, expiration int32, nonce []byte) uint64 {
	if expiration == 0 {
		return 0
	}
	e := int64(expiration)
	if e < 0 {
		e = -e
	}
	t.syncClock()
	base := p.startTime
	if len(nonce) == 0 {
		base = t.s.Clock
	}
	return base + uint64(e)*1000
}

// policyParameterChecks is PolicyParameterChecks of the reference: the
// nonce must be the session's nonceTPM, the timeout must not have passed
// and a cpHashA must have the session's digest size and match a cpHash
// set before.
func (t *TPM) policyParameterChecks(s *session, p *policyState, timeout uint64, cpHash, nonce []byte, qNonce, qCpHash, qExp uint32) uint32 {
	if len(nonce) != 0 && !bytes.Equal(nonce, s.nonceTPM) {
		return qualify(rcNonce, qNonce)
	}
	if timeout != 0 {
		t.syncClock()
		if timeout < t.s.Clock {
			return qualify(rcExpired, qExp)
		}
	}
	if len(cpHash) != 0 {
		if len(cpHash) != len(p.digest) {
			return qualify(rcSize, qCpHash)
		}
		if len(p.cpHash) != 0 && !bytes.Equal(cpHash, p.cpHash) {
			return rcCpHash
		}
	}
	return rcSuccess
}

// policyAuthTicket computes the digest of a TPMT_TK_AUTH (TicketComputeAuth
// in the reference): an HMAC under the hierarchy's proof of the ticket
// type, cpHashA, policyRef, the authorizing entity's name and the timeout,
// and the reset count when the ticket expires on reset.
func (t *TPM) policyAuthTicket(tag uint16, hier uint32, timeout uint64, expiresOnReset bool, cpHash, ref, name []byte) []byte {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:], timeout)
	n := 8
	if expiresOnReset {
		binary.BigEndian.PutUint32(b[8:], t.s.ResetCount)
		n = 12
	}
	var sz [6]byte
	binary.BigEndian.PutUint16(sz[0:], uint16(len(cpHash)))
	binary.BigEndian.PutUint16(sz[2:], uint16(len(ref)))
	binary.BigEndian.PutUint16(sz[4:], uint16(len(name)))
	// Sizes first, so that the concatenation is unambiguous.
	return t.ticket(hier, policyTicketHash, tag, sz[:], cpHash, ref, name, b[:n])
}

// expiresOnResetBit marks a TPM2B_TIMEOUT whose ticket expires on TPM
// Reset (EXPIRATION_BIT in the reference).
const expiresOnResetBit = 1 << 63

// writeAuthTicket writes the timeout and policyTicket of PolicySigned and
// PolicySecret: a ticket only for a negative expiration in a real policy
// session, else an empty timeout and a null ticket.
func (t *TPM) writeAuthTicket(c *call, s *session, tag uint16, entity uint32, name []byte, expiration int32, timeout uint64, nonce, cpHash, ref []byte) {
	if expiration < 0 && s.typ != seTrial {
		hier := t.policyEntityHierarchy(entity)
		expiresOnReset := len(nonce) == 0
		tk := t.policyAuthTicket(tag, hier, timeout, expiresOnReset, cpHash, ref, name)
		v := timeout
		if expiresOnReset {
			v |= expiresOnResetBit
		}
		c.w.u16(8)
		c.w.u64(v)
		c.w.u16(tag)
		c.w.u32(hier)
		c.w.b2b(tk)
		return
	}
	c.w.u16(0)
	c.w.u16(tag)
	c.w.u32(rhNull)
	c.w.u16(0)
}

// cmdPolicySigned is TPM2_PolicySigned (Part 3, section 23.3): the holder
// of authObject's private key signed H(nonceTPM || expiration || cpHashA
// || policyRef) with the hash of the signature.
func (t *TPM) cmdPolicySigned(c *call) uint32 {
	r := &c.r
	nonce := r.b2b(maxDigestSize)
	r.param(2)
	cpHash := r.b2b(maxDigestSize)
	r.param(3)
	ref := r.b2b(maxDigestSize)
	r.param(4)
	expiration := int32(r.u32())
	r.param(5)
	sig := parsePolicySignature(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 1)
	alg := s.hashAlg
	var timeout uint64
	o := t.object(c.h[0])
	if s.typ != seTrial {
		timeout = t.policyExpiration(p, expiration, nonce)
		if rc := t.policyParameterChecks(s, p, timeout, cpHash, nonce, rcP|rcN, rcP|2*rcN, rcP|4*rcN); rc != rcSuccess {
			return rc
		}
		if sig.alg == algNull || !isHash(sig.hash) {
			return qualify(rcScheme, rcP|5*rcN)
		}
		var e [4]byte
		binary.BigEndian.PutUint32(e[:], uint32(expiration))
		aHash := digestOf(sig.hash, nonce, e[:], cpHash, ref)
		if rc := policyVerifySignature(o, aHash, &sig); rc != rcSuccess {
			return qualify(rc, rcP|5*rcN)
		}
	}
	p.contextUpdate(alg, ccPolicySigned, o.name, ref, cpHash, timeout)
	t.writeAuthTicket(c, s, stAuthSigned, c.h[0], o.name, expiration, timeout, nonce, cpHash, ref)
	return rcSuccess
}

// policySignature is a decoded TPMT_SIGNATURE.
type policySignature struct {
	alg, hash uint16
	s1, s2    []byte
}

func parsePolicySignature(r *reader) policySignature {
	var sig policySignature
	sig.alg = r.u16()
	if !r.ok() {
		return sig
	}
	switch sig.alg {
	case algNull:
		return sig
	case algRSASSA, algRSAPSS, algECDSA, algHMAC:
	default:
		r.fail(rcScheme)
		return sig
	}
	sig.hash = r.u16()
	if !r.ok() {
		return sig
	}
	if !isHash(sig.hash) {
		r.fail(rcHash)
		return sig
	}
	switch sig.alg {
	case algRSASSA, algRSAPSS:
		sig.s1 = r.b2b(maxRSAKeyBytes)
	case algECDSA:
		sig.s1 = r.b2b(maxECCKeyBytes)
		sig.s2 = r.b2b(maxECCKeyBytes)
	case algHMAC:
		sig.s1 = r.bytes(hashOf(sig.hash).Size())
	}
	return sig
}

// policyVerifySignature checks a signature of digest by o
// (CryptValidateSignature in the reference). It returns an unqualified
// response code.
func policyVerifySignature(o *object, digest []byte, sig *policySignature) uint32 {
	if o.attrs()&oaSign == 0 {
		return rcAttributes
	}
	switch o.pub.Type {
	case algKeyedHash:
		if !o.HasPriv {
			return rcHandle
		}
		if sig.alg != algHMAC {
			return rcScheme
		}
		m := newHMAC(sig.hash, o.Sensitive)
		m.Write(digest)
		if !hmac.Equal(m.Sum(nil), sig.s1) {
			return rcSignature
		}
		return rcSuccess
	case algRSA, algECC:
	default:
		return rcScheme
	}
	pk, ok := o.publicKey()
	if !ok {
		return rcKey
	}
	switch k := pk.(type) {
	case *ecdsa.PublicKey:
		if sig.alg != algECDSA {
			return rcScheme
		}
		if !ecdsa.Verify(k, digest, new(big.Int).SetBytes(sig.s1), new(big.Int).SetBytes(sig.s2)) {
			return rcSignature
		}
	case *rsa.PublicKey:
		var err error
		switch sig.alg {
		case algRSASSA:
			err = rsa.VerifyPKCS1v15(k, hashOf(sig.hash), digest, sig.s1)
		case algRSAPSS:
			err = rsa.VerifyPSS(k, hashOf(sig.hash), digest, sig.s1, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		default:
			return rcScheme
		}
		if err != nil {
			return rcSignature
		}
	default:
		return rcScheme
	}
	return rcSuccess
}

// cmdPolicySecret is TPM2_PolicySecret (Part 3, section 23.4): the caller
// knows authHandle's authValue, which the authorization area proved (the
// dispatcher checked it before this handler runs).
func (t *TPM) cmdPolicySecret(c *call) uint32 {
	r := &c.r
	nonce := r.b2b(maxDigestSize)
	r.param(2)
	cpHash := r.b2b(maxDigestSize)
	r.param(3)
	ref := r.b2b(maxDigestSize)
	r.param(4)
	expiration := int32(r.u32())
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	if c.h[0] == rhNull {
		// TPMI_DH_ENTITY excludes TPM_RH_NULL, whose empty authValue
		// would prove nothing.
		return qualify(rcValue, rcH|rcN)
	}
	s, p := t.policySessionArg(c, 1)
	var timeout uint64
	if s.typ != seTrial {
		timeout = t.policyExpiration(p, expiration, nonce)
		if rc := t.policyParameterChecks(s, p, timeout, cpHash, nonce, rcP|rcN, rcP|2*rcN, rcP|4*rcN); rc != rcSuccess {
			return rc
		}
	}
	name := t.entityName(c.h[0])
	p.contextUpdate(s.hashAlg, ccPolicySecret, name, ref, cpHash, timeout)
	t.writeAuthTicket(c, s, stAuthSecret, c.h[0], name, expiration, timeout, nonce, cpHash, ref)
	return rcSuccess
}

// cmdPolicyTicket is TPM2_PolicyTicket (Part 3, section 23.5): a ticket
// from an earlier PolicySigned or PolicySecret stands for the signature or
// the secret until its timeout.
func (t *TPM) cmdPolicyTicket(c *call) uint32 {
	r := &c.r
	timeoutB := r.b2b(8)
	r.param(2)
	cpHash := r.b2b(maxDigestSize)
	r.param(3)
	ref := r.b2b(maxDigestSize)
	r.param(4)
	name := r.b2b(maxDigestSize + 2)
	r.param(5)
	tag := r.u16()
	if r.ok() && tag != stAuthSecret && tag != stAuthSigned {
		r.fail(rcTag)
	}
	hier := r.u32()
	if r.ok() && !validHandle(hkHierarchyNull, hier) {
		r.fail(rcValue)
	}
	tk := r.b2b(maxDigestSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	if s.typ == seTrial {
		return qualify(rcAttributes, rcH|rcN)
	}
	if len(timeoutB) != 8 {
		return qualify(rcSize, rcP|rcN)
	}
	timeout := binary.BigEndian.Uint64(timeoutB)
	expiresOnReset := timeout&expiresOnResetBit != 0
	timeout &^= expiresOnResetBit
	if rc := t.policyParameterChecks(s, p, timeout, cpHash, nil, 0, rcP|2*rcN, rcP|rcN); rc != rcSuccess {
		return rc
	}
	if !hmac.Equal(tk, t.policyAuthTicket(tag, hier, timeout, expiresOnReset, cpHash, ref, name)) {
		return qualify(rcTicket, rcP|5*rcN)
	}
	cc := uint32(ccPolicySecret)
	if tag == stAuthSigned {
		cc = ccPolicySigned
	}
	p.contextUpdate(s.hashAlg, cc, name, ref, cpHash, timeout)
	return rcSuccess
}

// cmdPolicyOR is TPM2_PolicyOR (Part 3, section 23.6): the session
// satisfies one of two to eight branches if its digest is one of them; the
// digest becomes H(zeros || TPM_CC_PolicyOR || digests...).
func (t *TPM) cmdPolicyOR(c *call) uint32 {
	r := &c.r
	n := r.u32()
	if r.ok() && (n < 2 || n > maxPolicyORDigests) {
		return qualify(rcSize, r.q)
	}
	var list [maxPolicyORDigests][]byte
	for i := 0; i < int(n) && r.ok(); i++ {
		list[i] = r.b2b(maxDigestSize)
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	match := s.typ == seTrial
	for _, d := range list[:n] {
		if subtle.ConstantTimeCompare(d, p.digest) == 1 {
			match = true
		}
	}
	if !match {
		return qualify(rcValue, rcP|rcN)
	}
	clear(p.digest)
	p.update(s.hashAlg, ccPolicyOR, list[:n]...)
	return rcSuccess
}

// cmdPolicyPCR is TPM2_PolicyPCR (Part 3, section 23.7): the selected PCRs
// have the digest pcrDigest (or, if it is empty, their current values are
// folded in). Any PCR change after this command fails the session.
func (t *TPM) cmdPolicyPCR(c *call) uint32 {
	r := &c.r
	want := r.b2b(maxDigestSize)
	r.param(2)
	sels := parsePCRSelections(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	cur := t.pcrDigest(s.hashAlg, sels)
	if s.typ != seTrial {
		if p.pcrChecked && p.pcrCounter != t.s.PCRCounter {
			return rcPCRChanged
		}
		if len(want) != 0 && !bytes.Equal(want, cur) {
			return qualify(rcValue, rcP|rcN)
		}
	} else if len(want) != 0 {
		cur = want
	}
	var w writer
	var buf [4 + len(hashAlgs)*7]byte
	w.b = buf[:0]
	marshalPCRSelections(&w, sels)
	p.update(s.hashAlg, ccPolicyPCR, w.b, cur)
	if s.typ != seTrial {
		p.pcrCounter = t.s.PCRCounter
		p.pcrChecked = true
	}
	return rcSuccess
}

// cmdPolicyLocality is TPM2_PolicyLocality (Part 3, section 23.8).
func (t *TPM) cmdPolicyLocality(c *call) uint32 {
	loc := c.r.u8()
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	if loc == 0 {
		return qualify(rcRange, rcP|rcN)
	}
	s, p := t.policySessionArg(c, 0)
	prev := p.locality
	if prev != 0 && (prev < 32) != (loc < 32) {
		return qualify(rcRange, rcP|rcN)
	}
	if loc < 32 {
		if prev == 0 {
			prev = 0x1F
		}
		prev &= loc
		if prev == 0 {
			return qualify(rcRange, rcP|rcN)
		}
	} else {
		if prev != 0 && prev != loc {
			return qualify(rcRange, rcP|rcN)
		}
		prev = loc
	}
	p.update(s.hashAlg, ccPolicyLocality, []byte{loc})
	p.locality = prev
	return rcSuccess
}

// Comparison operations (TPM_EO), Part 2, section 6.8.
const (
	eoEQ = iota
	eoNEQ
	eoSignedGT
	eoUnsignedGT
	eoSignedLT
	eoUnsignedLT
	eoSignedGE
	eoUnsignedGE
	eoSignedLE
	eoUnsignedLE
	eoBitSet
	eoBitClear
)

// policyCompare evaluates a op b on big-endian operands of equal length
// (PolicySptCheckCondition in the reference).
func policyCompare(op uint16, a, b []byte) bool {
	cmpU := bytes.Compare(a, b)
	cmpS := cmpU
	if len(a) > 0 && (a[0]^b[0])&0x80 != 0 {
		// Different signs: the negative one is smaller.
		if a[0]&0x80 != 0 {
			cmpS = -1
		} else {
			cmpS = 1
		}
	}
	switch op {
	case eoEQ:
		return cmpU == 0
	case eoNEQ:
		return cmpU != 0
	case eoSignedGT:
		return cmpS > 0
	case eoUnsignedGT:
		return cmpU > 0
	case eoSignedLT:
		return cmpS < 0
	case eoUnsignedLT:
		return cmpU < 0
	case eoSignedGE:
		return cmpS >= 0
	case eoUnsignedGE:
		return cmpU >= 0
	case eoSignedLE:
		return cmpS <= 0
	case eoUnsignedLE:
		return cmpU <= 0
	case eoBitSet:
		for i := range a {
			if a[i]&b[i] != b[i] {
				return false
			}
		}
		return true
	case eoBitClear:
		for i := range a {
			if a[i]&b[i] != 0 {
				return false
			}
		}
		return true
	}
	return false
}

// policyArgHash is H(operandB || offset || operation), the argument
// digest of PolicyNV and PolicyCounterTimer.
func policyArgHash(alg uint16, operand []byte, offset, op uint16) []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[:], offset)
	binary.BigEndian.PutUint16(b[2:], op)
	return digestOf(alg, operand, b[:])
}

// parseOperation reads operandB, offset and operation.
func parseOperation(r *reader) (operand []byte, offset, op uint16) {
	operand = r.b2b(maxDigestSize)
	r.param(2)
	offset = r.u16()
	r.param(3)
	op = r.u16()
	if r.ok() && op > eoBitClear {
		r.fail(rcValue)
	}
	return
}

// cmdPolicyNV is TPM2_PolicyNV (Part 3, section 23.9): the comparison of
// the NV index's data at offset with operandB holds.
func (t *TPM) cmdPolicyNV(c *call) uint32 {
	operand, offset, op := parseOperation(&c.r)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 2)
	nv := t.s.NV[c.h[1]]
	if s.typ != seTrial {
		if rc := nvReadAccess(nv, c.h[0]); rc != rcSuccess {
			return rc
		}
		if int(offset) > int(nv.Size) {
			return qualify(rcValue, rcP|2*rcN)
		}
		if int(nv.Size)-int(offset) < len(operand) {
			return qualify(rcSize, rcP|rcN)
		}
		if int(offset)+len(operand) > len(nv.Data) {
			// Unreachable while NV data has the index's size.
			return qualify(rcSize, rcP|rcN)
		}
		data := nv.Data[offset : int(offset)+len(operand)]
		if !policyCompare(op, data, operand) {
			return rcPolicy
		}
	}
	p.update(s.hashAlg, ccPolicyNV, policyArgHash(s.hashAlg, operand, offset, op), nv.name())
	return rcSuccess
}

// cmdPolicyCounterTimer is TPM2_PolicyCounterTimer (Part 3, section
// 23.10): the comparison of the TPMS_TIME_INFO at offset with operandB
// holds.
func (t *TPM) cmdPolicyCounterTimer(c *call) uint32 {
	operand, offset, op := parseOperation(&c.r)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	if offset > timeInfoSize {
		return qualify(rcValue, rcP|2*rcN)
	}
	if int(offset)+len(operand) > timeInfoSize {
		return rcRange
	}
	s, p := t.policySessionArg(c, 0)
	if s.typ != seTrial {
		t.syncClock()
		var w writer
		var buf [timeInfoSize]byte
		w.b = buf[:0]
		w.u64(t.s.Clock - t.s.TimeBase)
		t.writeClockInfo(&w, 0, 0)
		if !policyCompare(op, w.b[offset:int(offset)+len(operand)], operand) {
			return rcPolicy
		}
	}
	p.update(s.hashAlg, ccPolicyCounterTimer, policyArgHash(s.hashAlg, operand, offset, op))
	return rcSuccess
}

// cmdPolicyCommandCode is TPM2_PolicyCommandCode (Part 3, section 23.11).
func (t *TPM) cmdPolicyCommandCode(c *call) uint32 {
	code := c.r.u32()
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	if p.commandCode != 0 && p.commandCode != code {
		return qualify(rcValue, rcP|rcN)
	}
	if lookupCommand(code) == nil {
		return qualify(rcPolicyCC, rcP|rcN)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], code)
	p.update(s.hashAlg, ccPolicyCommandCode, b[:])
	p.commandCode = code
	return rcSuccess
}

// cmdPolicyCpHash is TPM2_PolicyCpHash (Part 3, section 23.13).
func (t *TPM) cmdPolicyCpHash(c *call) uint32 {
	cpHash := c.r.b2b(maxDigestSize)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	if len(cpHash) != len(p.digest) {
		return qualify(rcSize, rcP|rcN)
	}
	if len(p.cpHash) != 0 && (!p.isCpHash || !bytes.Equal(cpHash, p.cpHash)) {
		return rcCpHash
	}
	p.update(s.hashAlg, ccPolicyCpHash, cpHash)
	p.cpHash = append(p.cpHash[:0], cpHash...)
	p.isCpHash = true
	return rcSuccess
}

// cmdPolicyNameHash is TPM2_PolicyNameHash (Part 3, section 23.14).
func (t *TPM) cmdPolicyNameHash(c *call) uint32 {
	nameHash := c.r.b2b(maxDigestSize)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	if len(nameHash) != len(p.digest) {
		return qualify(rcSize, rcP|rcN)
	}
	if len(p.cpHash) != 0 || p.isCpHash {
		return rcCpHash
	}
	p.update(s.hashAlg, ccPolicyNameHash, nameHash)
	p.cpHash = append(p.cpHash[:0], nameHash...)
	p.isCpHash = false
	return rcSuccess
}

// cmdPolicyAuthorize is TPM2_PolicyAuthorize (Part 3, section 23.16): the
// session's digest is a policy approved by keySign, as the verification
// ticket of TPM2_VerifySignature over H(approvedPolicy || policyRef)
// shows. The digest is then replaced by one that names only the key.
func (t *TPM) cmdPolicyAuthorize(c *call) uint32 {
	r := &c.r
	approved := r.b2b(maxDigestSize)
	r.param(2)
	ref := r.b2b(maxDigestSize)
	r.param(3)
	keySign := r.b2b(maxDigestSize + 2)
	r.param(4)
	tag := r.u16()
	if r.ok() && tag != stVerified {
		r.fail(rcTag)
	}
	hier := r.u32()
	if r.ok() && !validHandle(hkHierarchyNull, hier) {
		r.fail(rcValue)
	}
	tk := r.b2b(maxDigestSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	var keyAlg uint16
	if len(keySign) >= 2 {
		keyAlg = binary.BigEndian.Uint16(keySign)
	}
	if !isHash(keyAlg) {
		return qualify(rcHash, rcP|3*rcN)
	}
	if hashOf(keyAlg).Size() != len(keySign)-2 {
		return qualify(rcSize, rcP|3*rcN)
	}
	if s.typ != seTrial {
		if !bytes.Equal(p.digest, approved) {
			return qualify(rcValue, rcP|rcN)
		}
		aHash := digestOf(keyAlg, approved, ref)
		// The ticket of TPM2_VerifySignature (attest.go): an HMAC
		// under the hierarchy's proof with the key's name algorithm.
		// A null-hierarchy key gets no ticket, so none is accepted.
		if hier == rhNull || !hmac.Equal(tk, t.ticket(hier, keyAlg, stVerified, aHash, keySign)) {
			return qualify(rcValue, rcP|4*rcN)
		}
	}
	clear(p.digest)
	p.update(s.hashAlg, ccPolicyAuthorize, keySign)
	p.updateRef(s.hashAlg, ref)
	return rcSuccess
}

// cmdPolicyAuthValue is TPM2_PolicyAuthValue (Part 3, section 23.17).
func (t *TPM) cmdPolicyAuthValue(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	p.update(s.hashAlg, ccPolicyAuthValue)
	p.authValueNeeded = true
	p.passwordNeeded = false
	return rcSuccess
}

// cmdPolicyPassword is TPM2_PolicyPassword (Part 3, section 23.18). It
// extends the digest exactly as PolicyAuthValue does, so that one policy
// accepts both.
func (t *TPM) cmdPolicyPassword(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	p.update(s.hashAlg, ccPolicyAuthValue)
	p.passwordNeeded = true
	p.authValueNeeded = false
	return rcSuccess
}

// cmdPolicyGetDigest is TPM2_PolicyGetDigest (Part 3, section 23.19).
func (t *TPM) cmdPolicyGetDigest(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	_, p := t.policySessionArg(c, 0)
	c.w.b2b(p.digest)
	return rcSuccess
}

// cmdPolicyNvWritten is TPM2_PolicyNvWritten (Part 3, section 23.20).
func (t *TPM) cmdPolicyNvWritten(c *call) uint32 {
	v := c.r.u8()
	if c.r.ok() && v > 1 {
		return qualify(rcValue, rcP|rcN)
	}
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	if p.checkNVWritten && p.nvWritten != (v == 1) {
		return qualify(rcValue, rcP|rcN)
	}
	p.update(s.hashAlg, ccPolicyNvWritten, []byte{v})
	p.checkNVWritten = true
	p.nvWritten = v == 1
	return rcSuccess
}

// cmdPolicyAuthorizeNV is TPM2_PolicyAuthorizeNV (Part 3, section 23.22):
// the session's digest is the policy (a TPMT_HA of the session's hash)
// stored in the NV index.
func (t *TPM) cmdPolicyAuthorizeNV(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 2)
	nv := t.s.NV[c.h[1]]
	if s.typ != seTrial {
		if rc := nvReadAccess(nv, c.h[0]); rc != rcSuccess {
			return rc
		}
		data := nv.Data
		if len(data) > 2+maxDigestSize {
			data = data[:2+maxDigestSize]
		}
		hr := newReader(data)
		alg := hr.u16()
		if !hr.ok() {
			return hr.code
		}
		if !isHash(alg) {
			return rcHash
		}
		d := hr.bytes(hashOf(alg).Size())
		if !hr.ok() {
			return hr.code
		}
		if alg != s.hashAlg {
			return rcHash
		}
		if !bytes.Equal(d, p.digest) {
			return rcValue
		}
	}
	clear(p.digest)
	p.update(s.hashAlg, ccPolicyAuthorizeNV, nv.name())
	return rcSuccess
}

// cmdPolicyRestart is TPM2_PolicyRestart (Part 3, section 23.21).
func (t *TPM) cmdPolicyRestart(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	_, p := t.policySessionArg(c, 0)
	t.syncClock()
	p.reset(t.s.Clock)
	return rcSuccess
}

// policyTemplateHash is the digest of the template (the second parameter,
// a TPM2B_PUBLIC or TPM2B_TEMPLATE, without its size) of TPM2_Create,
// TPM2_CreatePrimary or TPM2_CreateLoaded, or nil for another command or
// a malformed parameter area (CompareTemplateHash in the reference).
func policyTemplateHash(c *call, alg uint16) []byte {
	switch c.def.cc {
	case ccCreate, ccCreatePrimary, ccCreateLoaded:
	default:
		return nil
	}
	r := newReader(c.cpBytes)
	r.b2b(maxCommandSize)
	tmpl := r.b2b(maxCommandSize)
	if !r.ok() {
		return nil
	}
	return digestOf(alg, tmpl)
}

// cmdPolicyPhysicalPresence is TPM2_PolicyPhysicalPresence (Part 3,
// section 23.12). A vTPM has no physical presence, so a session with this
// assertion authorizes nothing; trial sessions compute its digest.
func (t *TPM) cmdPolicyPhysicalPresence(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	p.update(s.hashAlg, ccPolicyPhysPresence)
	p.ppRequired = true
	return rcSuccess
}

// cmdPolicyDuplicationSelect is TPM2_PolicyDuplicationSelect (Part 3,
// section 23.15): the session authorizes only TPM2_Duplicate of the named
// object to the named new parent.
func (t *TPM) cmdPolicyDuplicationSelect(c *call) uint32 {
	r := &c.r
	objectName := r.b2b(maxDigestSize + 2)
	r.param(2)
	parentName := r.b2b(maxDigestSize + 2)
	r.param(3)
	include := r.u8()
	if r.ok() && include > 1 {
		return qualify(rcValue, r.q)
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	if len(p.cpHash) != 0 {
		return rcCpHash
	}
	if p.commandCode != 0 {
		return rcCommandCode
	}
	var parts [][]byte
	if include == 1 {
		parts = append(parts, objectName)
	}
	parts = append(parts, parentName, []byte{include})
	p.update(s.hashAlg, ccPolicyDupSelect, parts...)
	p.cpHash = digestOf(s.hashAlg, objectName, parentName)
	p.isCpHash = false
	p.commandCode = ccDuplicate
	return rcSuccess
}

// cmdPolicyTemplate is TPM2_PolicyTemplate (Part 3, section 23.21): the
// session authorizes only the creation of an object from the template
// whose digest is templateHash.
func (t *TPM) cmdPolicyTemplate(c *call) uint32 {
	th := c.r.b2b(maxDigestSize)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s, p := t.policySessionArg(c, 0)
	if p.isTemplate {
		if !bytes.Equal(th, p.cpHash) {
			return qualify(rcValue, rcP|rcN)
		}
	} else if len(p.cpHash) != 0 {
		return rcCpHash
	}
	if len(th) != len(p.digest) {
		return qualify(rcSize, rcP|rcN)
	}
	p.update(s.hashAlg, ccPolicyTemplate, th)
	p.cpHash = append(p.cpHash[:0], th...)
	p.isTemplate = true
	return rcSuccess
}
