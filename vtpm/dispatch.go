package vtpm

import (
	"crypto/subtle"
	"encoding/binary"
)

// handleKind is the interface type (TPMI_...) of a command's handle, which
// decides which handle values the command accepts (Part 2, section 9).
type handleKind uint8

const (
	hkObject        handleKind = iota // TPMI_DH_OBJECT
	hkObjectNull                      // TPMI_DH_OBJECT+
	hkPCR                             // TPMI_DH_PCR+
	hkHierarchyNull                   // TPMI_RH_HIERARCHY+
	hkHierarchyAuth                   // TPMI_RH_HIERARCHY_AUTH
	hkProvision                       // TPMI_RH_PROVISION
	hkClear                           // TPMI_RH_CLEAR
	hkNVAuth                          // TPMI_RH_NV_AUTH
	hkNVIndex                         // TPMI_RH_NV_INDEX
	hkContext                         // TPMI_DH_CONTEXT
	hkEntity                          // TPMI_DH_ENTITY
	hkPolicySession                   // TPMI_SH_POLICY
	hkLockout                         // TPMI_RH_LOCKOUT
	hkPlatform                        // TPMI_RH_PLATFORM
	hkEndorsement                     // TPMI_RH_ENDORSEMENT
	hkHMACSession                     // TPMI_SH_HMAC
)

// role is the authorization role a command requires for a handle (Part 1,
// section 19.2).
type role uint8

const (
	roleUser role = iota
	roleAdmin
	// roleDup (TPM2_Duplicate) is authorized by policy sessions only:
	// dispatch refuses others with TPM_RC_AUTH_TYPE (policyRequired).
	roleDup
)

// cmdDef describes one command: its handle area, which handles need
// authorization, whether the response carries a handle, and its handler.
type cmdDef struct {
	cc      uint32
	handles []handleKind
	auth    int // the first auth handles need an authorization session
	roles   []role
	rHandle bool
	nv      bool // TPMA_CC nv: may write NV
	flushed bool // TPMA_CC flushed: flushes its handle
	write   bool // for NV indices: the authorization is a write
	fn      func(*TPM, *call) uint32
}

// call is one command in flight.
type call struct {
	def       *cmdDef
	tag       uint16
	h         [3]uint32
	nh        int
	r         reader // the parameter area
	w         writer // the response parameter area
	outHandle uint32
	sess      [3]sessionIn
	nsess     int
	cpBytes   []byte // the parameter area as sent, for cpHash
	cpHashes  []algDigest
	dec, enc  int  // 1 + the index of the decrypt and encrypt sessions, or 0
	audit     int  // 1 + the index of the audit session, or 0
	cmdAudit  bool // the command is in the command audit list (cmdaudit.go)
}

// sessionIn is one entry of a command's authorization area and what
// authorization learned about it.
type sessionIn struct {
	handle uint32
	nonce  []byte
	attrs  uint8
	hmac   []byte

	s           *session // nil for a password session
	assoc       uint32   // the handle the session authorizes, or rhUnassigned
	includeAuth bool     // the entity's authValue is part of the HMAC key
	hmacChecked bool     // checkHMAC ran for this session
}

// Session attributes (TPMA_SESSION), Part 2, section 8.4.
const (
	saContinueSession = 0x01
	saAuditExclusive  = 0x02
	saAuditReset      = 0x04
	saReserved        = 0x18
	saDecrypt         = 0x20
	saEncrypt         = 0x40
	saAudit           = 0x80
)

var commands [0x200]*cmdDef

func register(d *cmdDef) {
	if commands[d.cc] != nil {
		panic("vtpm: duplicate command")
	}
	if len(d.roles) < d.auth {
		d.roles = make([]role, d.auth)
	}
	commands[d.cc] = d
}

func lookupCommand(cc uint32) *cmdDef {
	if cc >= uint32(len(commands)) {
		return nil
	}
	return commands[cc]
}

// rspPrefix is the space reserved before the response parameters for the
// header (10), a response handle (4) and the parameter size (4).
const rspPrefix = 18

// execute runs one command. It is the only entry point for command bytes
// and returns a well-formed response for any input.
func (t *TPM) execute(cmd []byte) []byte {
	// One command runs at a time (t.mu), so the call is reused rather
	// than allocated; only the response is new.
	c := &t.call
	*c = call{}
	c.w.b = make([]byte, rspPrefix, rspPrefix+80)
	rc := t.run(c, cmd)
	rsp := t.finish(c, rc)
	*c = call{}
	return rsp
}

func errorResponse(tag uint16, rc uint32) []byte {
	b := make([]byte, 10)
	binary.BigEndian.PutUint16(b, tag)
	binary.BigEndian.PutUint32(b[2:], 10)
	binary.BigEndian.PutUint32(b[6:], rc)
	return b
}

func (t *TPM) finish(c *call, rc uint32) []byte {
	if rc != rcSuccess {
		return errorResponse(stNoSessions, rc)
	}
	params := len(c.w.b) - rspPrefix
	if c.tag == stSessions {
		t.responseSessions(c)
	} else {
		if !noSessions(c.def.cc) {
			// A command that could have had an audit session but had
			// none ends the exclusivity of audit
			// (UpdateAuditSessionStatus).
			t.clearExclusiveAudit()
		}
		t.commandAuditResponse(c, rpHasher(c, c.w.b[rspPrefix:]))
	}
	pre := 10
	if c.def.rHandle {
		pre += 4
	}
	if c.tag == stSessions {
		pre += 4
	}
	start := rspPrefix - pre
	b := c.w.b[start:]
	if len(b) > maxResponseSize {
		// Every handler bounds its output; this is the last line of
		// defence and must never be reached.
		return errorResponse(stNoSessions, rcFailure)
	}
	tag := uint16(stNoSessions)
	if c.tag == stSessions {
		tag = stSessions
	}
	binary.BigEndian.PutUint16(b, tag)
	binary.BigEndian.PutUint32(b[2:], uint32(len(b)))
	binary.BigEndian.PutUint32(b[6:], rcSuccess)
	o := 10
	if c.def.rHandle {
		binary.BigEndian.PutUint32(b[o:], c.outHandle)
		o += 4
	}
	if c.tag == stSessions {
		binary.BigEndian.PutUint32(b[o:], uint32(params))
	}
	return b
}

// responseSessions rolls the nonces of the command's sessions, encrypts
// the first response parameter for an encrypt session, and appends the
// response authorization area: nonceTPM, attributes and response HMAC of
// each session (BuildResponseSession in the reference implementation).
// Sessions without continueSession are flushed.
func (t *TPM) responseSessions(c *call) {
	params := c.w.b[rspPrefix:]
	for i := 0; i < c.nsess; i++ {
		if s := c.sess[i].s; s != nil {
			random(s.nonceTPM)
		}
	}
	if c.enc != 0 {
		t.encryptResponse(c, params)
	}
	rpHash := rpHasher(c, params)
	t.auditResponse(c, rpHash)
	t.commandAuditResponse(c, rpHash)
	for i := 0; i < c.nsess; i++ {
		in := &c.sess[i]
		s := in.s
		if s == nil {
			// Password sessions answer with an empty nonce and HMAC and
			// the continueSession attribute (Part 1, section 19.8.5).
			c.w.u16(0)
			c.w.u8(in.attrs | saContinueSession)
			c.w.u16(0)
			continue
		}
		c.w.b2b(s.nonceTPM)
		c.w.u8(in.attrs)
		if s.typ == sePolicy && s.policy.passwordNeeded {
			c.w.u16(0)
		} else {
			c.w.b2b(t.responseHMAC(c, i, rpHash(s.hashAlg)))
		}
		if s.typ == sePolicy && in.attrs&saContinueSession != 0 {
			// A policy session authorizes one command; its policy
			// starts again (UpdateInternalSession).
			t.syncClock()
			t.policyOf(s).reset(t.s.Clock)
		}
		if in.attrs&saContinueSession == 0 {
			t.flushSession(s.handle)
		}
	}
}

// rpHasher returns a function that computes, once per algorithm, the
// rpHash of a successful response with parameters params (Part 1, section
// 18.8): H(responseCode || commandCode || parameters).
func rpHasher(c *call, params []byte) func(alg uint16) []byte {
	var rpHashes []algDigest
	return func(alg uint16) []byte {
		for _, d := range rpHashes {
			if d.alg == alg {
				return d.digest
			}
		}
		h := hashOf(alg).New()
		var b [8]byte
		putU32(b[4:], c.def.cc)
		h.Write(b[:])
		h.Write(params)
		d := h.Sum(nil)
		rpHashes = append(rpHashes, algDigest{alg, d})
		return d
	}
}

func (t *TPM) run(c *call, cmd []byte) uint32 {
	r := newReader(cmd)
	tag := r.u16()
	if !r.ok() {
		return r.code
	}
	if tag != stNoSessions && tag != stSessions {
		return rcBadTag
	}
	size := r.u32()
	if !r.ok() {
		return r.code
	}
	if uint64(size) != uint64(len(cmd)) || size > maxCommandSize {
		return rcCommandSize
	}
	cc := r.u32()
	if !r.ok() {
		return r.code
	}
	def := lookupCommand(cc)
	if def == nil {
		return rcCommandCode
	}
	c.def = def
	c.tag = tag
	if !t.started && cc != ccStartup {
		return rcInitialize
	}
	// As the reference implementation's ExecuteCommand: the clock is
	// brought up to date (at the TPM2_ClockRateAdjust rate) and the
	// dictionary-attack failure count healed (TimeUpdateToCurrent and
	// DASelfHeal), so that the command, and what GetCapability reports,
	// see the current values.
	t.syncClockScaled()
	t.daRecover()

	// Handle area (Part 3, section 5.4).
	for i, k := range def.handles {
		r.q = rcH | uint32(i+1)<<8
		h := r.u32()
		if !r.ok() {
			return r.code
		}
		if !validHandle(k, h) {
			return qualify(rcValue, r.q)
		}
		if rc := t.handleLoaded(h); rc != rcSuccess {
			if rc == rcReferenceH0 {
				return rc + uint32(i)
			}
			return qualify(rc, r.q)
		}
		// A disabled hierarchy hides its entities (EntityGetLoadStatus),
		// before any authorization is checked.
		if rc := t.hierarchyHandleRC(h, cc); rc != rcSuccess {
			return qualify(rc, r.q)
		}
		c.h[i] = h
	}
	c.nh = len(def.handles)
	r.q = 0

	// Authorization area (Part 1, section 18.7).
	if tag == stSessions {
		authSize := r.u32()
		if !r.ok() {
			return r.code
		}
		if authSize < 9 || uint64(authSize) > uint64(r.len()) {
			return rcSize
		}
		if noSessions(cc) {
			return rcAuthContext
		}
		ar := newReader(r.bytes(int(authSize)))
		for !ar.empty() {
			n := c.nsess
			ar.q = rcS | uint32(n+1)<<8
			if n == len(c.sess) {
				return qualify(rcSize, ar.q)
			}
			s := &c.sess[n]
			s.handle = ar.u32()
			if ar.ok() && !validAuthSession(s.handle) {
				return qualify(rcValue, ar.q)
			}
			s.nonce = ar.b2b(maxDigestSize)
			s.attrs = ar.u8()
			if ar.ok() && s.attrs&saReserved != 0 {
				return qualify(rcReservedBits, ar.q)
			}
			s.hmac = ar.b2b(maxDigestSize)
			if !ar.ok() {
				return ar.code
			}
			c.nsess++
			if rc := t.retrieveSession(c, n); rc != rcSuccess {
				return rc
			}
		}
		if c.nsess < def.auth {
			return rcAuthMissing
		}
		c.cpBytes = r.b
		if c.audit != 0 {
			// The audit digest takes the cpHash of the command as
			// sent, with the Names the handles have before it runs.
			t.cpHash(c, c.sess[c.audit-1].s.hashAlg)
		}
		for i := 0; i < c.nsess; i++ {
			if rc := t.authorize(c, i); rc != rcSuccess {
				return rc
			}
		}
		// Command audit takes the cpHash of the parameters as sent,
		// before decryption (CheckCommandAudit).
		t.startCommandAudit(c)
		if c.dec != 0 {
			params, rc := t.decryptCommand(c, r.b)
			if rc != rcSuccess {
				return rc
			}
			r.b = params
		}
	} else if def.auth > 0 {
		return rcAuthMissing
	} else {
		c.cpBytes = r.b
		t.startCommandAudit(c)
	}

	c.r = newReader(r.b)
	c.r.param(1)
	rc := def.fn(t, c)
	if rc == rcSuccess {
		// An object LoadExternal or ContextLoad put into a disabled
		// hierarchy is flushed again.
		rc = t.loadedHierarchyRC(c)
	}
	if len(t.s.Sequences) != 0 {
		t.sweepSequences() // sequences whose slot was flushed
	}
	return rc
}

// validAuthSession checks a handle of the authorization area
// (TPMI_SH_AUTH_SESSION+).
func validAuthSession(h uint32) bool {
	return h == rsPW || h-hmacSessionFirst < maxActiveSessions || h-policySessionFirst < maxActiveSessions
}

// noSessions lists the commands whose authorization area must be empty
// (TPMA_CC / NO_SESSIONS in the reference implementation).
func noSessions(cc uint32) bool {
	switch cc {
	case ccStartup, ccContextLoad, ccContextSave, ccFlushContext:
		return true
	}
	return false
}

// retrieveSession checks session n of the authorization area on its own
// (RetrieveSessionData in the reference implementation): a password
// session has no nonce and no attribute but continueSession; any other
// session must be loaded, appear once, and may be the one decrypt and the
// one encrypt session if the command has a TPM2B first parameter and the
// session a symmetric algorithm, and one HMAC session may audit the
// command (audit.go): with auditExclusive, unless it also has auditReset
// or is audited for the first time, it must be the exclusive audit
// session (TPM_RC_EXCLUSIVE). auditExclusive and auditReset without audit
// are ignored, as in the reference implementation.
func (t *TPM) retrieveSession(c *call, n int) uint32 {
	in := &c.sess[n]
	q := rcS | uint32(n+1)<<8
	in.assoc = rhUnassigned
	if in.handle == rsPW {
		if in.attrs&^saContinueSession != 0 {
			return qualify(rcAttributes, q)
		}
		if len(in.nonce) != 0 {
			return qualify(rcNonce, q)
		}
		return rcSuccess
	}
	s := t.session(in.handle)
	if s == nil {
		return rcReferenceS0 + uint32(n)
	}
	for j := 0; j < n; j++ {
		if c.sess[j].handle == in.handle {
			return qualify(rcHandle, q)
		}
	}
	in.s = s
	if in.attrs&saDecrypt != 0 {
		if !paramEncryption(c.def.cc).decrypt || c.dec != 0 {
			return qualify(rcAttributes, q)
		}
		if s.symAlg == algNull {
			return qualify(rcSymmetric, q)
		}
		c.dec = n + 1
	}
	if in.attrs&saEncrypt != 0 {
		if !paramEncryption(c.def.cc).encrypt || c.enc != 0 {
			return qualify(rcAttributes, q)
		}
		if s.symAlg == algNull {
			return qualify(rcSymmetric, q)
		}
		c.enc = n + 1
	}
	if in.attrs&saAudit != 0 {
		if c.audit != 0 || s.typ != seHMAC {
			return qualify(rcAttributes, q)
		}
		if in.attrs&(saAuditReset|saAuditExclusive) == saAuditExclusive && s.isAudit && !s.auditExclusive {
			return rcExclusive
		}
		c.audit = n + 1
	}
	return rcSuccess
}

const (
	rcReferenceH0 = rcWarn + 0x010
	rcReferenceS0 = rcWarn + 0x018
)

// validHandle checks a handle against its interface type.
func validHandle(k handleKind, h uint32) bool {
	switch k {
	case hkObject:
		return isTransient(h) || h>>24 == htPersistent
	case hkObjectNull:
		return isTransient(h) || h>>24 == htPersistent || h == rhNull
	case hkPCR:
		return h < numPCRs || h == rhNull
	case hkHierarchyNull:
		return h == rhOwner || h == rhEndorsement || h == rhPlatform || h == rhNull
	case hkHierarchyAuth:
		return h == rhOwner || h == rhEndorsement || h == rhPlatform || h == rhLockout
	case hkProvision:
		return h == rhOwner || h == rhPlatform
	case hkClear:
		return h == rhLockout || h == rhPlatform
	case hkNVAuth:
		return h == rhOwner || h == rhPlatform || h>>24 == htNVIndex
	case hkNVIndex:
		return h>>24 == htNVIndex
	case hkContext:
		return isTransient(h) || h-hmacSessionFirst < maxActiveSessions || h-policySessionFirst < maxActiveSessions
	case hkEntity:
		switch h >> 24 {
		case htTransient, htPersistent, htNVIndex, htPCR:
			return h>>24 != htPCR || h < numPCRs
		}
		return h == rhOwner || h == rhEndorsement || h == rhPlatform || h == rhLockout || h == rhNull
	case hkPolicySession:
		return h>>24 == htPolicySession
	case hkLockout:
		return h == rhLockout
	case hkPlatform:
		return h == rhPlatform
	case hkEndorsement:
		return h == rhEndorsement
	case hkHMACSession:
		return h-hmacSessionFirst < maxActiveSessions
	}
	return false
}

// isTransient reports whether h is in the implemented transient range
// (TRANSIENT_FIRST to TRANSIENT_LAST).
func isTransient(h uint32) bool { return h-transientFirst < maxLoadedObjects }

// daExempt reports whether an entity is exempt from dictionary-attack
// protection: permanent handles other than lockout, PCRs, and objects and
// NV indices with noDA.
func (t *TPM) daExempt(h uint32) bool {
	switch h >> 24 {
	case htPermanent:
		return h != rhLockout
	case htPCR:
		return true
	case htTransient, htPersistent:
		o := t.object(h)
		return o != nil && o.attrs()&oaNoDA != 0
	case htNVIndex:
		nv := t.s.NV[h]
		return nv != nil && nv.Attrs&nvNoDA != 0
	}
	return false
}

// handleLoaded reports whether the entity a handle names exists
// (EntityGetLoadStatus in the reference implementation).
func (t *TPM) handleLoaded(h uint32) uint32 {
	switch h >> 24 {
	case htTransient:
		if t.s.Transient[h] == nil {
			return rcReferenceH0
		}
	case htPersistent:
		if t.s.Persistent[h] == nil {
			return rcHandle
		}
	case htNVIndex:
		if t.s.NV[h] == nil {
			return rcHandle
		}
	case htHMACSession, htPolicySession:
		if t.session(h) == nil {
			return rcReferenceH0
		}
	}
	return rcSuccess
}

// object returns the transient or persistent object that h names.
func (t *TPM) object(h uint32) *object {
	switch h >> 24 {
	case htTransient:
		return t.s.Transient[h]
	case htPersistent:
		return t.s.Persistent[h]
	}
	return nil
}

// authorize checks session i of the authorization area (Part 1, section
// 19; ParseSessionBuffer and CheckAuthSession in the reference
// implementation). Sessions for the first def.auth handles authorize them
// with a password, an HMAC or a policy (authorizePolicy); later sessions
// must be for parameter encryption and carry an HMAC without authValue.
// Every error is qualified with the session number.
func (t *TPM) authorize(c *call, i int) uint32 {
	in := &c.sess[i]
	q := rcS | uint32(i+1)<<8
	if in.handle == rsPW {
		if i >= c.def.auth {
			return qualify(rcHandle, q)
		}
	} else {
		s := in.s
		if s.typ == seTrial {
			// A trial session computes a policy; it authorizes nothing.
			return qualify(rcAttributes, q)
		}
		if s.daBound {
			// A session bound to a DA-protected entity is subject to
			// lockout whatever it authorizes.
			h := uint32(rhUnassigned)
			if s.lockoutBound {
				h = rhLockout
			}
			if rc := t.daCheck(h); rc != rcSuccess {
				return rc
			}
		}
	}
	if i >= c.def.auth {
		if in.attrs&(saAudit|saEncrypt|saDecrypt) == 0 {
			return qualify(rcAttributes, q)
		}
		in.includeAuth = false
		return qualify(t.checkHMAC(c, i, nil), q)
	}
	in.assoc = c.h[i]
	return qualify(t.checkAuthSession(c, i, q), q)
}

// checkAuthSession authorizes handle i with session i (CheckAuthSession in
// the reference implementation).
func (t *TPM) checkAuthSession(c *call, i int, q uint32) uint32 {
	in := &c.sess[i]
	h := in.assoc
	s := in.s
	if s != nil {
		if s.typ == sePolicy {
			in.includeAuth = s.policy.authValueNeeded || s.policy.passwordNeeded
		} else {
			// A session bound to the entity it authorizes already has
			// the authValue in its session key.
			in.includeAuth = !t.isBindEntity(h, s)
		}
	}
	if s == nil || in.includeAuth {
		if !t.daExempt(h) {
			if rc := t.daCheck(h); rc != rcSuccess {
				return rc
			}
		}
	}
	role := c.def.roles[i]
	if s != nil && s.typ == sePolicy {
		if rc := t.authorizePolicy(c, i, q); rc != rcSuccess {
			return rc
		}
		if !in.hmacChecked && !s.policy.passwordNeeded {
			return t.checkHMAC(c, i, t.entityAuth(h))
		}
		return rcSuccess
	}
	if t.policyRequired(h, role) {
		return rcAuthType
	}
	auth, ok := t.authValue(h, c.def, role)
	if !ok {
		return rcAuthUnavailable
	}
	if s != nil {
		return t.checkHMAC(c, i, auth)
	}
	if !authEqual(auth, in.hmac) {
		// Entities exempt from dictionary-attack protection fail
		// with TPM_RC_BAD_AUTH, others with TPM_RC_AUTH_FAIL and
		// count towards lockout (Part 1, section 19.8.3).
		return t.authFailed(c, i)
	}
	return rcSuccess
}

// policyRequired reports whether the role can only be authorized with a
// policy session (IsPolicySessionRequired in the reference
// implementation): the admin role, unless the entity is an object without
// adminWithPolicy.
func (t *TPM) policyRequired(h uint32, r role) bool {
	if r == roleUser {
		return false
	}
	if r == roleAdmin {
		if o := t.object(h); o != nil && o.attrs()&oaAdminWithPolicy == 0 {
			return false
		}
	}
	return true
}

// authEqual compares two authValues in constant time after removing
// trailing zeros, which Part 1, section 19.6.4 makes insignificant.
func authEqual(a, b []byte) bool {
	a, b = trimZeros(a), trimZeros(b)
	return subtle.ConstantTimeCompare(a, b) == 1
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// authValue returns the authValue of the entity h for a password or HMAC
// session, and false when the entity's authValue may not be used for this
// role (IsAuthValueAvailable in the reference implementation).
func (t *TPM) authValue(h uint32, def *cmdDef, r role) ([]byte, bool) {
	switch h >> 24 {
	case htPermanent:
		switch h {
		case rhOwner:
			return t.s.OwnerAuth, true
		case rhEndorsement:
			return t.s.EndorsementAuth, true
		case rhPlatform:
			return t.s.PlatformAuth, true
		case rhLockout:
			return t.s.LockoutAuth, true
		case rhNull:
			return nil, true
		}
		return nil, false
	case htPCR:
		return nil, true
	case htTransient, htPersistent:
		o := t.object(h)
		if o == nil {
			return nil, false
		}
		a := o.attrs()
		if r == roleUser && a&oaUserWithAuth == 0 {
			return nil, false
		}
		if r == roleAdmin && a&oaAdminWithPolicy != 0 {
			return nil, false
		}
		return o.Auth, true
	case htNVIndex:
		nv := t.s.NV[h]
		if nv == nil {
			return nil, false
		}
		if def.write {
			if nv.Attrs&nvAuthWrite == 0 {
				return nil, false
			}
		} else if nv.Attrs&nvAuthRead == 0 {
			return nil, false
		}
		return nv.Auth, true
	}
	return nil, false
}
