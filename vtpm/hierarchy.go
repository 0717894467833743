package vtpm

func init() {
	register(&cmdDef{cc: ccHierarchyChangeAuth, handles: []handleKind{hkHierarchyAuth}, auth: 1, nv: true, fn: (*TPM).cmdHierarchyChangeAuth})
	register(&cmdDef{cc: ccClear, handles: []handleKind{hkClear}, auth: 1, nv: true, fn: (*TPM).cmdClear})
}

// cmdHierarchyChangeAuth is TPM2_HierarchyChangeAuth (Part 3, section
// 24.8).
func (t *TPM) cmdHierarchyChangeAuth(c *call) uint32 {
	auth := c.r.b2b(maxDigestSize)
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	// The reference implementation limits hierarchy authValues to the
	// size of the context integrity digest (SHA-256 here).
	auth = trimZeros(auth)
	if len(auth) > 32 {
		return qualify(rcSize, rcP|rcN)
	}
	v := append([]byte(nil), auth...)
	var p *[]byte
	switch c.h[0] {
	case rhOwner:
		p = &t.s.OwnerAuth
	case rhEndorsement:
		p = &t.s.EndorsementAuth
	case rhPlatform:
		p = &t.s.PlatformAuth
	case rhLockout:
		p = &t.s.LockoutAuth
	}
	clear(*p)
	*p = v
	return rcSuccess
}

// cmdClear is TPM2_Clear (Part 3, section 24.6): a new storage primary seed
// and new owner and endorsement proofs, so every owner key and every saved
// context of those hierarchies becomes useless; the owner's persistent
// objects and NV indices are deleted; the owner, endorsement and lockout
// authorizations are reset. The endorsement primary seed is kept, so the EK
// survives.
func (t *TPM) cmdClear(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	s := t.s
	if s.DisableClear {
		return rcDisabled
	}
	random(s.OwnerSeed[:])
	random(s.OwnerProof[:])
	random(s.EndorsementProof[:])
	random(s.NullSeed[:])
	random(s.NullProof[:])
	t.purgeRSACache(rhOwner)
	for h, o := range s.Transient {
		if o.Hierarchy == rhOwner || o.Hierarchy == rhEndorsement {
			o.clear()
			delete(s.Transient, h)
		}
	}
	for h, o := range s.Persistent {
		if h <= persistentOwnerLast {
			o.clear()
			delete(s.Persistent, h)
		}
	}
	for h, nv := range s.NV {
		if nv.Attrs&nvPlatformCreate == 0 {
			clear(nv.Auth)
			clear(nv.Data)
			delete(s.NV, h)
		}
	}
	for _, p := range []*[]byte{&s.OwnerAuth, &s.EndorsementAuth, &s.LockoutAuth} {
		clear(*p)
		*p = nil
	}
	return rcSuccess
}
