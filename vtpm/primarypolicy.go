package vtpm

// Hierarchy authorization policies (TPM2_SetPrimaryPolicy).

const (
	ccSetPrimaryPolicy = 0x12E
	capAuthPolicies    = 0x00000009 // TPM_CAP_AUTH_POLICIES
)

func init() {
	register(&cmdDef{cc: ccSetPrimaryPolicy, handles: []handleKind{hkHierarchyAuth}, auth: 1, nv: true, fn: (*TPM).cmdSetPrimaryPolicy})
}

// hierPolicy is the authPolicy of a hierarchy and its hash algorithm. A
// hierarchy without a policy has an empty Digest and a zero Alg (which
// TPM2_GetCapability reports as TPM_ALG_NULL), so that the zero value, and
// a state sealed before hierarchy policies existed, has no policies.
type hierPolicy struct {
	Alg    uint16 `cbor:"1,keyasint,omitempty"`
	Digest []byte `cbor:"2,keyasint,omitempty"`
}

// primaryPolicies are the sealed authPolicies of the four hierarchies.
type primaryPolicies struct {
	Owner       hierPolicy `cbor:"1,keyasint,omitempty"`
	Endorsement hierPolicy `cbor:"2,keyasint,omitempty"`
	Platform    hierPolicy `cbor:"3,keyasint,omitempty"`
	Lockout     hierPolicy `cbor:"4,keyasint,omitempty"`
}

// of returns the policy of the hierarchy h, or nil for a handle that has
// none (TPM_RH_NULL, TPM_RS_PW, TPM_RH_PLATFORM_NV).
func (p *primaryPolicies) of(h uint32) *hierPolicy {
	switch h {
	case rhOwner:
		return &p.Owner
	case rhEndorsement:
		return &p.Endorsement
	case rhPlatform:
		return &p.Platform
	case rhLockout:
		return &p.Lockout
	}
	return nil
}

// valid checks a sealed policy: a digest of its algorithm's size, or none.
func (p *hierPolicy) valid() bool {
	if len(p.Digest) == 0 {
		return p.Alg == 0
	}
	return isHash(p.Alg) && len(p.Digest) == digestSize(p.Alg)
}

// reset removes the policy.
func (p *hierPolicy) reset() { *p = hierPolicy{} }

// alg returns the policy's hash algorithm as TPM2_GetCapability reports
// it: TPM_ALG_NULL when there is no policy.
func (p *hierPolicy) alg() uint16 {
	if len(p.Digest) == 0 {
		return algNull
	}
	return p.Alg
}

// cmdSetPrimaryPolicy is TPM2_SetPrimaryPolicy (Part 3, section 24.3):
// the authPolicy of the owner, endorsement, platform or lockout hierarchy,
// authorized by that hierarchy (USER role). The digest must have the size
// of hashAlg's digests; TPM_ALG_NULL with an empty digest removes the
// policy. A policy session whose policyDigest equals the policy, computed
// with hashAlg, may then authorize the hierarchy's handle. TPM2_Clear
// removes the owner, endorsement and lockout policies, TPM Reset and TPM
// Restart the platform policy (as platformAuth).
func (t *TPM) cmdSetPrimaryPolicy(c *call) uint32 {
	r := &c.r
	digest := r.b2b(maxDigestSize)
	r.param(2)
	alg := r.u16()
	if r.ok() && alg != algNull && !isHash(alg) {
		return qualify(rcHash, r.q)
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	if len(digest) != digestSize(alg) {
		return qualify(rcSize, rcP|rcN)
	}
	p := t.s.Policies.of(c.h[0])
	p.reset()
	if len(digest) != 0 {
		p.Alg = alg
		p.Digest = append([]byte(nil), digest...)
	}
	return rcSuccess
}

// capAuthPolicies writes the TPML_TAGGED_POLICY of TPM2_GetCapability
// (TPM_CAP_AUTH_POLICIES) from the permanent handle first on: each
// hierarchy's handle with its policy's TPMT_HA (TPM_ALG_NULL and no digest
// when it has none), as PermanentHandleGetPolicy in the reference
// implementation. It reports whether there are more.
func (t *TPM) capAuthPolicies(w *writer, first uint32, n int) bool {
	cnt := len(w.b)
	w.u32(0)
	k := 0
	more := false
	for _, h := range t.handles(htPermanent) {
		p := t.s.Policies.of(h)
		if h < first || p == nil {
			continue
		}
		if k == n {
			more = true
			break
		}
		w.u32(h)
		w.u16(p.alg())
		w.raw(p.Digest)
		k++
	}
	putU32(w.b[cnt:], uint32(k))
	return more
}
