package vtpm

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/subtle"

	"github.com/google/go-tpm/tpm2"
)

// session is an authorization session (Part 1, section 19): an HMAC, policy
// or trial session, optionally salted, bound and with a parameter-encryption
// algorithm. Sessions are volatile: a power cycle loses them.
//
// While a session's context is saved (TPM2_ContextSave), the TPM keeps only
// its handle and the sequence number of the saved context; the session's
// state (nonce, session key, policy) lives in the encrypted context blob.
type session struct {
	handle     uint32
	typ        uint8
	hashAlg    uint16
	nonceTPM   []byte
	sessionKey []byte // empty for unbound, unsalted sessions

	symAlg  uint16 // algNull, algAES or algXOR: parameter encryption
	symBits uint16 // AES key size

	// bound HMAC sessions remember their bind entity as its Name with the
	// authValue XORed into the end (SessionComputeBoundEntity in the
	// reference implementation), so that a changed authValue unbinds.
	bound        bool
	boundEntity  [boundEntitySize]byte
	daBound      bool // bound to a DA-protected entity: every use is subject to lockout
	lockoutBound bool // bound to lockoutAuth

	// policy is the state of a policy or trial session (policy.go).
	policy policyState

	// Audit (audit.go): isAudit once the session audited a command;
	// auditDigest[:hash size] its sessionDigest; auditExclusive for the
	// one exclusive audit session. They stay in the TPM while the
	// session's context is saved.
	isAudit        bool
	auditExclusive bool
	auditDigest    [maxDigestSize]byte

	saved    bool
	savedSeq uint64
}

// Session types (TPM_SE), Part 2, section 6.11.
const (
	seHMAC   = 0x00
	sePolicy = 0x01
	seTrial  = 0x03
)

const (
	// boundEntitySize is sizeof(TPMU_NAME): a TPMT_HA.
	boundEntitySize = 2 + maxDigestSize
	// maxActiveSessions is the range of session handles a command may
	// name (HMAC_SESSION_LAST and POLICY_SESSION_LAST of the reference).
	maxActiveSessions = 64
	// rhUnassigned is the handle associated with a session that
	// authorizes no handle (TPM_RH_UNASSIGNED).
	rhUnassigned = 0x40000008
	// nvPinFail and nvPinPass are the PIN index types (TPM_NT).
	ntPinFail = 8
	ntPinPass = 9
)

func init() {
	register(&cmdDef{cc: ccStartAuthSession, handles: []handleKind{hkObjectNull, hkEntity}, rHandle: true, fn: (*TPM).cmdStartAuthSession})
}

// session returns the loaded session h, or nil. A session whose context is
// saved is not loaded.
func (t *TPM) session(h uint32) *session {
	if t.sessions == nil {
		return nil
	}
	if s := t.sessions[h]; s != nil && !s.saved {
		return s
	}
	return nil
}

// savedSession returns the session h if its context is saved, or nil.
func (t *TPM) savedSession(h uint32) *session {
	if s := t.sessions[h]; s != nil && s.saved {
		return s
	}
	return nil
}

func (s *session) clear() {
	clear(s.nonceTPM)
	clear(s.sessionKey)
	clear(s.boundEntity[:])
}

// flushSession flushes a loaded or saved session.
func (t *TPM) flushSession(h uint32) {
	if s := t.sessions[h]; s != nil {
		s.clear()
	}
	delete(t.sessions, h)
}

// allocSession returns a free session handle of the type's range. HMAC and
// policy sessions share one index space, as in the reference
// implementation, of maxSessions handles (TPM_PT_ACTIVE_SESSIONS_MAX),
// loaded or saved: TPM_RC_SESSION_MEMORY when maxSessions are loaded,
// TPM_RC_SESSION_HANDLES when some are saved and no handle is free.
func (t *TPM) allocSession(typ uint8) (uint32, uint32) {
	if t.sessions == nil {
		t.sessions = map[uint32]*session{}
	}
	loaded := 0
	for _, s := range t.sessions {
		if !s.saved {
			loaded++
		}
	}
	if loaded >= maxSessions {
		return 0, rcSessionMemory
	}
	for i := uint32(0); i < maxSessions; i++ {
		if t.sessions[hmacSessionFirst+i] == nil && t.sessions[policySessionFirst+i] == nil {
			if typ == seHMAC {
				return hmacSessionFirst + i, rcSuccess
			}
			return policySessionFirst + i, rcSuccess
		}
	}
	return 0, rcSessionHandles
}

// parseSymDefSession reads a TPMT_SYM_DEF+ (Part 2, section 11.1.6) for
// StartAuthSession: AES (128 or 256 bits) or XOR, or NULL. It returns the
// algorithm, the AES key size and the mode.
func parseSymDefSession(r *reader) (alg, bits, mode uint16) {
	alg = r.u16()
	if !r.ok() {
		return
	}
	switch alg {
	case algNull:
	case algAES:
		bits = r.u16()
		if r.ok() && bits != 128 && bits != 256 {
			r.fail(rcValue)
			return
		}
		mode = r.u16()
		if r.ok() {
			switch mode {
			case algCTR, algOFB, algCBC, algCFB, algECB, algCMAC, algNull:
			default:
				r.fail(rcMode)
			}
		}
	case algXOR:
		h := r.u16()
		if r.ok() && !isHash(h) {
			r.fail(rcHash)
		}
	default:
		r.fail(rcSymmetric)
	}
	return
}

// algCMAC is TPM_ALG_CMAC, a block mode TPMI_ALG_SYM_MODE accepts.
const algCMAC = 0x003F

// cmdStartAuthSession is TPM2_StartAuthSession (Part 3, section 11.1):
// HMAC, policy and trial sessions, unsalted or salted with an RSA (OAEP)
// or ECC (ECDH, KDFe) key, bound or unbound, with AES-CFB or XOR parameter
// encryption. The checks follow the reference implementation's order, so
// that malformed requests get the same response codes.
func (t *TPM) cmdStartAuthSession(c *call) uint32 {
	r := &c.r
	nonceCaller := r.b2b(maxDigestSize)
	r.param(2)
	encSalt := r.b2b(maxRSAKeyBytes)
	r.param(3)
	typ := r.u8()
	if r.ok() && typ != seHMAC && typ != sePolicy && typ != seTrial {
		return qualify(rcValue, r.q)
	}
	r.param(4)
	symAlg, symBits, symMode := parseSymDefSession(r)
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
	var salt []byte
	if tpmKey := c.h[0]; tpmKey != rhNull {
		o := t.object(tpmKey)
		if o.pub.Type != algRSA && o.pub.Type != algECC {
			return qualify(rcKey, rcH|rcN)
		}
		if len(encSalt) == 0 {
			return qualify(rcValue, rcP|2*rcN)
		}
		if !o.HasPriv {
			return qualify(rcHandle, rcH|rcN)
		}
		if o.attrs()&oaDecrypt == 0 {
			return qualify(rcAttributes, rcH|rcN)
		}
		var ok bool
		salt, ok = decryptSalt(o, encSalt)
		if !ok {
			return qualify(rcValue, rcP|2*rcN)
		}
		defer clear(salt)
	} else if len(encSalt) != 0 {
		return qualify(rcValue, rcP|2*rcN)
	}
	bind := c.h[1]
	switch bind >> 24 {
	case htTransient, htPersistent:
		if o := t.object(bind); o != nil && !o.HasPriv {
			return qualify(rcHandle, rcH|2*rcN)
		}
	case htNVIndex:
		if nv := t.s.NV[bind]; nv != nil && (nv.typ() == ntPinFail || nv.typ() == ntPinPass) {
			return qualify(rcHandle, rcH|2*rcN)
		}
	}
	if symAlg == algAES && symMode != algCFB {
		return qualify(rcMode, rcP|4*rcN)
	}

	h, rc := t.allocSession(typ)
	if rc != rcSuccess {
		return rc
	}
	s := &session{handle: h, typ: typ, hashAlg: hashAlg, symAlg: symAlg, symBits: symBits}
	s.nonceTPM = make([]byte, len(nonceCaller))
	random(s.nonceTPM)
	if bind != rhNull || len(salt) != 0 {
		// sessionKey = KDFa(hash, authValue(bind) || salt, "ATH",
		// nonceTPM, nonceCaller, bits) (Part 1, section 19.6.8).
		auth := t.entityAuth(bind)
		key := make([]byte, 0, len(auth)+len(salt))
		key = append(append(key, auth...), salt...)
		s.sessionKey = kdfa(hashAlg, key, "ATH", s.nonceTPM, nonceCaller, hashOf(hashAlg).Size()*8)
		clear(key)
	}
	if bind != rhNull && typ == seHMAC {
		s.bound = true
		s.boundEntity = t.boundEntity(bind)
	}
	s.daBound = bind != rhNull && !t.daExempt(bind)
	s.lockoutBound = s.daBound && bind == rhLockout
	if typ != seHMAC {
		// The policy starts now: expirations of PolicySigned and
		// PolicySecret count from the session's start.
		t.policyOf(s)
	}
	t.sessions[h] = s
	c.outHandle = h
	c.w.b2b(s.nonceTPM)
	return rcSuccess
}

// secretLabel is the label of salts (Part 1, section 11.4.10.2).
const secretLabel = "SECRET"

// decryptSalt recovers the salt of a salted session (CryptSecretDecrypt):
// RSA-OAEP with the label "SECRET\0" and the key's OAEP hash (its nameAlg
// unless its scheme sets one), at most a digest long; or, for an ECC key,
// KDFe(nameAlg, Z, "SECRET", QeU.x, QsV.x) of the ECDH product of the
// key and the ephemeral point in encSalt.
func decryptSalt(o *object, encSalt []byte) ([]byte, bool) {
	p := o.pub
	switch p.Type {
	case algRSA:
		oaepHash := p.NameAlg
		switch p.Scheme {
		case algNull:
		case algOAEP:
			oaepHash = p.SchemeHash
		default:
			return nil, false
		}
		h := hashOf(oaepHash)
		if h == 0 {
			return nil, false
		}
		k, ok := o.signer()
		if !ok {
			return nil, false
		}
		priv, ok := k.(*rsa.PrivateKey)
		if !ok || len(encSalt) != priv.Size() {
			return nil, false
		}
		salt, err := rsa.DecryptOAEP(h.New(), nil, priv, encSalt, []byte(secretLabel+"\x00"))
		if err != nil || len(salt) > h.Size() {
			clear(salt)
			return nil, false
		}
		return salt, true
	case algECC:
		r := newReader(encSalt)
		x := r.b2b(maxECCKeyBytes)
		y := r.b2b(maxECCKeyBytes)
		if !r.ok() {
			return nil, false
		}
		z, ok := eccSharedX(o, x, y)
		if !ok {
			return nil, false
		}
		h := hashOf(p.NameAlg)
		if h == 0 {
			// An external key without a name algorithm (LoadExternal
			// only): KDFe of TPM_ALG_NULL yields no bits, so the salt
			// is empty, as in the reference TPM (crypto.Hash(0) would
			// panic).
			clear(z)
			return []byte{}, true
		}
		salt := tpm2.KDFe(h, z, secretLabel, x, p.X, h.Size()*8)
		clear(z)
		return salt, true
	}
	return nil, false
}

// eccSharedX is the x coordinate of d·Q for the object's private key d
// and the point (x, y), or false when the point is not on the key's curve.
func eccSharedX(o *object, x, y []byte) ([]byte, bool) {
	n := curveBytes(o.pub.Curve)
	if curveOf(o.pub.Curve) == nil || len(x) > n || len(y) > n {
		return nil, false
	}
	k, ok := o.signer()
	if !ok {
		return nil, false
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, false
	}
	priv, err := ek.ECDH()
	if err != nil {
		return nil, false
	}
	pt := make([]byte, 1+2*n)
	pt[0] = 4
	copy(pt[1+n-len(x):], x)
	copy(pt[1+2*n-len(y):], y)
	pub, err := priv.Curve().NewPublicKey(pt)
	if err != nil {
		return nil, false
	}
	z, err := priv.ECDH(pub)
	if err != nil {
		return nil, false
	}
	return z, true
}

var _ ecdh.Curve = ecdh.P256()

// entityAuth is the authValue of an entity with trailing zeros removed
// (EntityGetAuthValue in the reference implementation), whether or not the
// command may use it. The result aliases the TPM's state: do not modify it.
func (t *TPM) entityAuth(h uint32) []byte {
	switch h >> 24 {
	case htPermanent:
		switch h {
		case rhOwner:
			return trimZeros(t.s.OwnerAuth)
		case rhEndorsement:
			return trimZeros(t.s.EndorsementAuth)
		case rhPlatform:
			return trimZeros(t.s.PlatformAuth)
		case rhLockout:
			return trimZeros(t.s.LockoutAuth)
		}
	case htTransient, htPersistent:
		if o := t.object(h); o != nil {
			return trimZeros(o.Auth)
		}
	case htNVIndex:
		if nv := t.s.NV[h]; nv != nil {
			return trimZeros(nv.Auth)
		}
	}
	return nil
}

// entityName is the Name of an entity (Part 1, section 16): nameAlg ||
// H(public area) for objects, nameAlg || H(nvPublic) for NV indices, and
// the handle for everything else.
func (t *TPM) entityName(h uint32) []byte {
	switch h >> 24 {
	case htTransient, htPersistent:
		if o := t.object(h); o != nil {
			return o.name
		}
	case htNVIndex:
		if nv := t.s.NV[h]; nv != nil {
			return nv.name()
		}
	}
	return handleBytes(h)
}

// boundEntity is the bind value of an entity: its Name, zero-padded to
// sizeof(TPMU_NAME), with its authValue XORed into the last bytes.
func (t *TPM) boundEntity(h uint32) [boundEntitySize]byte {
	var b [boundEntitySize]byte
	copy(b[:], t.entityName(h))
	auth := t.entityAuth(h)
	if len(auth) > boundEntitySize {
		auth = auth[:boundEntitySize]
	}
	for i, v := range auth {
		b[boundEntitySize-len(auth)+i] ^= v
	}
	return b
}

// isBindEntity reports whether h is the entity session s is bound to, with
// the authValue it had when the session started.
func (t *TPM) isBindEntity(h uint32, s *session) bool {
	if !s.bound {
		return false
	}
	b := t.boundEntity(h)
	ok := subtle.ConstantTimeCompare(b[:], s.boundEntity[:]) == 1
	clear(b[:])
	return ok
}

// cpHash is H(commandCode || Name of each handle || parameters), over the
// parameters as sent, before parameter decryption (Part 1, section
// 18.7). It is computed once per hash algorithm and command.
func (t *TPM) cpHash(c *call, alg uint16) []byte {
	for _, d := range c.cpHashes {
		if d.alg == alg {
			return d.digest
		}
	}
	h := hashOf(alg).New()
	var cc [4]byte
	putU32(cc[:], c.def.cc)
	h.Write(cc[:])
	for i := 0; i < c.nh; i++ {
		h.Write(t.entityName(c.h[i]))
	}
	h.Write(c.cpBytes)
	d := h.Sum(nil)
	c.cpHashes = append(c.cpHashes, algDigest{alg, d})
	return d
}

// hmacKey is sessionKey || authValue, the latter only when the session
// includes it (Part 1, section 19.6.8).
func (s *session) hmacKey(auth []byte, include bool) []byte {
	key := make([]byte, 0, len(s.sessionKey)+len(auth))
	key = append(key, s.sessionKey...)
	if include {
		key = append(key, trimZeros(auth)...)
	}
	return key
}

// checkHMAC checks the command HMAC of session i (an HMAC session, a
// policy session, or a session used only for parameter encryption)
// against the authorized entity's authValue auth (Part 1, section 19.6):
//
//	HMAC(sessionKey || authValue, cpHash || nonceCaller || nonceTPM
//	     [|| nonceTPM of the decrypt session] [|| nonceTPM of the encrypt
//	     session] || sessionAttributes)
//
// auth is included only when the session uses it: not for a session bound
// to the entity it authorizes, and for a policy session only after
// PolicyAuthValue. A wrong HMAC counts towards dictionary-attack lockout
// when the entity or the session's bind entity is DA-protected
// (TPM_RC_AUTH_FAIL), and is TPM_RC_BAD_AUTH otherwise.
func (t *TPM) checkHMAC(c *call, i int, auth []byte) uint32 {
	in := &c.sess[i]
	s := t.session(in.handle)
	if s == nil {
		return rcAuthUnavailable
	}
	in.hmacChecked = true
	key := s.hmacKey(auth, in.includeAuth)
	defer clear(key)
	if len(key) == 0 && len(in.hmac) == 0 {
		return rcSuccess
	}
	m := newHMAC(s.hashAlg, key)
	m.Write(t.cpHash(c, s.hashAlg))
	m.Write(in.nonce)
	m.Write(s.nonceTPM)
	if i == 0 && in.assoc != rhUnassigned {
		// The first authorization session also covers the nonces of
		// the parameter-encryption sessions (Part 1, section 19.6.5).
		if c.dec != 0 && c.dec-1 != i {
			m.Write(c.sess[c.dec-1].s.nonceTPM)
		}
		if c.enc != 0 && c.enc-1 != i && c.enc != c.dec {
			m.Write(c.sess[c.enc-1].s.nonceTPM)
		}
	}
	m.Write([]byte{in.attrs})
	if !hmac.Equal(m.Sum(nil), in.hmac) {
		return t.authFailed(c, i)
	}
	return rcSuccess
}

// authFailed accounts for a failed authorization of session i
// (IncrementLockout in the reference implementation): TPM_RC_AUTH_FAIL
// and one more failure towards lockout for DA-protected entities and
// sessions bound to them, TPM_RC_BAD_AUTH otherwise.
func (t *TPM) authFailed(c *call, i int) uint32 {
	in := &c.sess[i]
	h := in.assoc
	if in.s == nil {
		if t.daExempt(h) {
			return rcBadAuth
		}
	} else {
		if in.s.lockoutBound {
			h = rhLockout
		}
		if !in.s.daBound && (t.daExempt(h) || !in.includeAuth) {
			return rcBadAuth
		}
	}
	t.daFailed(h)
	return rcAuthFail
}

// responseHMAC is the HMAC of a response session (Part 1, section
// 19.6.9): HMAC(sessionKey || authValue, rpHash || nonceTPM ||
// nonceCaller || sessionAttributes), empty when both the key and the
// command's HMAC were empty.
func (t *TPM) responseHMAC(c *call, i int, rpHash []byte) []byte {
	in := &c.sess[i]
	s := in.s
	var auth []byte
	if in.includeAuth {
		auth = t.entityAuth(in.assoc)
	}
	key := s.hmacKey(auth, in.includeAuth)
	defer clear(key)
	if len(key) == 0 && len(in.hmac) == 0 {
		return nil
	}
	m := newHMAC(s.hashAlg, key)
	m.Write(rpHash)
	m.Write(s.nonceTPM)
	m.Write(in.nonce)
	m.Write([]byte{in.attrs})
	return m.Sum(nil)
}

// algDigest is a digest and its algorithm.
type algDigest struct {
	alg    uint16
	digest []byte
}

// Session contexts (Part 1, section 30; TPM2_ContextSave and
// TPM2_ContextLoad of sessions). A saved session keeps its handle, and the
// TPM remembers the sequence number of its one valid context; the nonce,
// session key and binding leave the TPM in the context blob, encrypted and
// MACed under keys derived from the null hierarchy's proof (which a TPM
// Reset replaces) like object contexts. Loading a context makes the
// session usable again and its context stale: an old context of a session
// (replayed after a load, or after a later save) is refused with
// TPM_RC_HANDLE. The policy state of a policy session stays in the TPM
// while its context is saved.

// sessionFlag bits of a saved session context.
const (
	sessBound = 1 << iota
	sessDABound
	sessLockoutBound
)

// saveSessionContext is TPM2_ContextSave of a loaded session.
func (t *TPM) saveSessionContext(c *call, h uint32) uint32 {
	s := t.session(h)
	t.s.ContextSeq++
	seq := t.s.ContextSeq
	var pw writer
	pw.u64(seq)
	pw.u8(s.typ)
	pw.u16(s.hashAlg)
	pw.b2b(s.nonceTPM)
	pw.b2b(s.sessionKey)
	pw.u16(s.symAlg)
	pw.u16(s.symBits)
	var flags uint8
	if s.bound {
		flags |= sessBound
	}
	if s.daBound {
		flags |= sessDABound
	}
	if s.lockoutBound {
		flags |= sessLockoutBound
	}
	pw.u8(flags)
	pw.raw(s.boundEntity[:])
	ek, iv, mk := t.contextKeys(rhNull, seq, h)
	cfbEncryptIV(ek, iv, pw.b)
	mac := t.contextMAC(mk, seq, h, rhNull, pw.b)
	c.w.u64(seq)
	c.w.u32(h)
	c.w.u32(rhNull)
	st := c.w.begin2b()
	c.w.b2b(mac)
	c.w.raw(pw.b)
	c.w.end2b(st)
	clear(pw.b)
	clear(ek)
	clear(mk)
	// The secrets now live in the blob only.
	s.clear()
	s.nonceTPM, s.sessionKey = nil, nil
	s.saved = true
	s.savedSeq = seq
	return rcSuccess
}

// loadSessionContext is TPM2_ContextLoad of a session context, whose
// integrity value and encrypted data cmdContextLoad has split and
// checked for size.
func (t *TPM) loadSessionContext(c *call, seq uint64, h, hier uint32, mac, enc []byte) uint32 {
	ek, iv, mk := t.contextKeys(hier, seq, h)
	ok := hier == rhNull && hmac.Equal(mac, t.contextMAC(mk, seq, h, hier, enc))
	clear(mk)
	if !ok {
		clear(ek)
		return qualify(rcIntegrity, rcP|rcN)
	}
	s := t.savedSession(h)
	if s == nil || s.savedSeq != seq {
		clear(ek)
		return qualify(rcHandle, rcP|rcN)
	}
	loaded := 0
	for _, x := range t.sessions {
		if !x.saved {
			loaded++
		}
	}
	if loaded >= maxSessions {
		clear(ek)
		return rcSessionMemory
	}
	pt := append([]byte(nil), enc...)
	cfbDecryptIV(ek, iv, pt)
	clear(ek)
	defer clear(pt)
	r := newReader(pt)
	inner := r.u64()
	typ := r.u8()
	hashAlg := r.u16()
	nonce := r.b2b(maxDigestSize)
	key := r.b2b(maxDigestSize)
	symAlg := r.u16()
	symBits := r.u16()
	flags := r.u8()
	be := r.bytes(boundEntitySize)
	// The MAC covers the blob, so a malformed plaintext means a TPM
	// defect (the reference fails); refuse it as a bad context.
	if !r.ok() || !r.empty() || inner != seq || typ != s.typ || hashAlg != s.hashAlg {
		return qualify(rcIntegrity, rcP|rcN)
	}
	s.nonceTPM = append([]byte(nil), nonce...)
	if len(key) != 0 {
		s.sessionKey = append([]byte(nil), key...)
	}
	s.symAlg, s.symBits = symAlg, symBits
	s.bound = flags&sessBound != 0
	s.daBound = flags&sessDABound != 0
	s.lockoutBound = flags&sessLockoutBound != 0
	copy(s.boundEntity[:], be)
	s.saved = false
	s.savedSeq = 0
	c.outHandle = h
	return rcSuccess
}

// isSessionHandle reports whether h is in the HMAC or policy session range.
func isSessionHandle(h uint32) bool {
	return h>>24 == htHMACSession || h>>24 == htPolicySession
}
