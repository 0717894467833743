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
// authorizations and authPolicies are reset, the dictionary-attack state
// too, and Clock starts again from zero. The endorsement primary seed is kept, so the EK
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
	s.Policies.Owner.reset()
	s.Policies.Endorsement.reset()
	s.Policies.Lockout.reset()
	// As in the reference implementation: the storage and endorsement
	// hierarchies are enabled, the dictionary-attack state returns to its
	// defaults, and Clock and the reset and restart counts start again
	// from zero (Time, Clock - TimeBase, does not move).
	s.Hier.OwnerDisabled, s.Hier.EndorsementDisabled = false, false
	s.DA = newDAState()
	t.syncClock()
	s.TimeBase -= s.Clock // modular: Clock - TimeBase is unchanged
	s.Clock = 0
	s.ResetCount, s.RestartCount = 0, 0
	// The command audit counter starts again too; the audited commands,
	// the algorithm and the digest stay.
	s.Audit.Counter = 0
	return rcSuccess
}

func init() {
	register(&cmdDef{cc: ccHierarchyControl, handles: []handleKind{hkHierarchyAuth}, auth: 1, nv: true, fn: (*TPM).cmdHierarchyControl})
}

// hierarchyEnabled reports whether a hierarchy is enabled
// (HierarchyIsEnabled in the reference implementation). The null
// hierarchy always is.
func (t *TPM) hierarchyEnabled(h uint32) bool {
	hs := &t.s.Hier
	switch h {
	case rhPlatform:
		return !hs.PlatformDisabled
	case rhOwner:
		return !hs.OwnerDisabled
	case rhEndorsement:
		return !hs.EndorsementDisabled
	case rhNull:
		return true
	}
	return false
}

// cmdHierarchyControl is TPM2_HierarchyControl (Part 3, section 24.2).
// The platform may enable or disable any hierarchy; the owner and the
// endorsement hierarchy may only disable themselves. Disabling a
// hierarchy flushes its loaded objects and hides its persistent objects
// and NV indices until it is enabled again; the storage and endorsement
// hierarchies and platformNV are enabled again at the next TPM Reset or
// Restart, the platform hierarchy at any startup.
func (t *TPM) cmdHierarchyControl(c *call) uint32 {
	r := &c.r
	enable := r.u32()
	if r.ok() && enable != rhOwner && enable != rhEndorsement && enable != rhPlatform && enable != rhPlatformNV {
		return qualify(rcValue, r.q)
	}
	r.param(2)
	state := r.u8()
	if r.ok() && state > 1 {
		return qualify(rcValue, r.q)
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	auth := c.h[0]
	if auth == rhLockout {
		// TPMI_RH_HIERARCHY does not include the lockout handle.
		return qualify(rcValue, rcH|rcN)
	}
	hs := &t.s.Hier
	on := state == 1
	var disabled *bool
	switch enable {
	case rhPlatform, rhPlatformNV:
		if auth != rhPlatform {
			return rcAuthType
		}
		disabled = &hs.PlatformDisabled
		if enable == rhPlatformNV {
			disabled = &hs.PlatformNVDisabled
		}
	case rhOwner:
		if auth != rhPlatform && auth != rhOwner || hs.OwnerDisabled && on && auth != rhPlatform {
			return rcAuthType
		}
		disabled = &hs.OwnerDisabled
	case rhEndorsement:
		if auth != rhPlatform && auth != rhEndorsement || hs.EndorsementDisabled && on && auth != rhPlatform {
			return rcAuthType
		}
		disabled = &hs.EndorsementDisabled
	}
	if *disabled == !on {
		return rcSuccess
	}
	*disabled = !on
	if !on && enable != rhPlatformNV {
		t.flushHierarchy(enable)
	}
	return rcSuccess
}

// flushHierarchy flushes the loaded objects of a hierarchy that was just
// disabled (ObjectFlushHierarchy in the reference implementation).
func (t *TPM) flushHierarchy(h uint32) {
	for th, o := range t.s.Transient {
		if o.Hierarchy == h {
			o.clear()
			delete(t.s.Transient, th)
			t.dropSequence(th)
		}
	}
}

// hierarchyHandleRC is the part of EntityGetLoadStatus (reference
// implementation) that depends on the hierarchy enables: a disabled
// hierarchy's handle answers TPM_RC_HIERARCHY, and its persistent objects
// and NV indices do not exist (TPM_RC_HANDLE). EvictControl may still
// evict an endorsement object while the endorsement hierarchy is disabled.
func (t *TPM) hierarchyHandleRC(h, cc uint32) uint32 {
	hs := &t.s.Hier
	switch h >> 24 {
	case htPermanent:
		if h == rhOwner || h == rhEndorsement || h == rhPlatform {
			if !t.hierarchyEnabled(h) {
				return rcHierarchy
			}
		}
	case htPersistent:
		if h >= persistentPlatformFirst {
			if hs.PlatformDisabled {
				return rcHandle
			}
		} else if hs.OwnerDisabled {
			return rcHandle
		}
		if o := t.s.Persistent[h]; o != nil && o.Hierarchy == rhEndorsement && hs.EndorsementDisabled && cc != ccEvictControl {
			return rcHandle
		}
	case htNVIndex:
		nv := t.s.NV[h]
		if nv == nil {
			return rcSuccess
		}
		if nv.Attrs&nvPlatformCreate == 0 {
			if hs.OwnerDisabled {
				return rcHandle
			}
		} else if hs.PlatformNVDisabled {
			return rcHandle
		}
	}
	return rcSuccess
}

// loadedHierarchyRC undoes a LoadExternal or ContextLoad of an object of a
// disabled hierarchy (the reference implementation refuses it once the
// parameters are unmarshaled and an object slot is free).
func (t *TPM) loadedHierarchyRC(c *call) uint32 {
	var q uint32
	switch c.def.cc {
	case ccLoadExternal:
		q = rcP | 3*rcN
	case ccContextLoad:
		q = rcP | rcN
	default:
		return rcSuccess
	}
	h := c.outHandle
	o := t.s.Transient[h]
	if h>>24 != htTransient || o == nil || t.hierarchyEnabled(o.Hierarchy) {
		return rcSuccess
	}
	o.clear()
	delete(t.s.Transient, h)
	c.w.b = c.w.b[:rspPrefix]
	return qualify(rcHierarchy, q)
}
