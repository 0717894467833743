package vtpm

// Dictionary-attack protection (Part 1, section 19.8.3; Part 3, section
// 25). Authorization failures against DA-protected entities (objects and NV
// indices without noDA, and lockoutAuth) are counted; after MaxTries of
// them the TPM is in lockout and refuses every DA-protected authorization
// with TPM_RC_LOCKOUT. One failure is forgiven every RecoveryTime seconds of
// TPM clock. A failure of lockoutAuth locks lockoutAuth for LockoutRecovery
// seconds. The defaults are the reference implementation's.

const (
	rcLockout = rcWarn + 0x021

	ccDictionaryAttackParameters = 0x13A

	defaultMaxTries        = 3
	defaultRecoveryTime    = 1000
	defaultLockoutRecovery = 1000
)

// daState is the sealed dictionary-attack state.
type daState struct {
	FailedTries     uint32 `cbor:"1,keyasint"`
	MaxTries        uint32 `cbor:"2,keyasint"`
	RecoveryTime    uint32 `cbor:"3,keyasint"` // seconds
	LockoutRecovery uint32 `cbor:"4,keyasint"` // seconds
	LastDecrement   uint64 `cbor:"5,keyasint"` // Clock (ms) from which the next failure is forgiven
	LockoutUntil    uint64 `cbor:"6,keyasint"` // Clock (ms) until which lockoutAuth is refused
	// LockoutLocked refuses lockoutAuth until the next TPM2_Startup: a
	// failed lockoutAuth sets it when LockoutRecovery is zero.
	LockoutLocked bool `cbor:"7,keyasint"`
	// Used records that a DA-protected authorization was checked since
	// the last TPM2_Startup, so that losing power without TPM2_Shutdown
	// counts as a failure (USE_DA_USED in the reference implementation):
	// cutting power cannot hide a guess.
	Used bool `cbor:"8,keyasint"`
}

func newDAState() daState {
	return daState{MaxTries: defaultMaxTries, RecoveryTime: defaultRecoveryTime, LockoutRecovery: defaultLockoutRecovery}
}

func init() {
	register(&cmdDef{cc: ccDictionaryAttackLockReset, handles: []handleKind{hkLockout}, auth: 1, nv: true, fn: (*TPM).cmdDALockReset})
	register(&cmdDef{cc: ccDictionaryAttackParameters, handles: []handleKind{hkLockout}, auth: 1, nv: true, fn: (*TPM).cmdDAParameters})
}

// daRecover forgives one failure per elapsed RecoveryTime of TPM clock
// (DASelfHeal in the reference implementation). With a RecoveryTime of
// zero, failures are not counted at all.
func (t *TPM) daRecover() {
	da := &t.s.DA
	now := t.s.Clock
	if now < da.LastDecrement {
		da.LastDecrement = now
	}
	if da.FailedTries == 0 {
		return
	}
	if da.RecoveryTime == 0 {
		da.FailedTries = 0
		return
	}
	period := uint64(da.RecoveryTime) * 1000
	n := (now - da.LastDecrement) / period
	if n >= uint64(da.FailedTries) {
		da.FailedTries = 0
	} else {
		da.FailedTries -= uint32(n)
	}
	da.LastDecrement += n * period
}

// daLocked reports whether DA-protected entities other than lockoutAuth
// are refused now. A MaxTries of zero keeps the TPM in lockout.
func (t *TPM) daLocked() bool {
	t.syncClock()
	t.daRecover()
	return t.s.DA.FailedTries >= t.s.DA.MaxTries
}

// daCheck returns TPM_RC_LOCKOUT when h may not be authorized now
// (CheckLockedOut in the reference implementation).
func (t *TPM) daCheck(h uint32) uint32 {
	t.syncClock()
	da := &t.s.DA
	if h == rhLockout {
		if da.LockoutLocked || t.s.Clock < da.LockoutUntil {
			return rcLockout
		}
		return rcSuccess
	}
	if t.daLocked() {
		return rcLockout
	}
	da.Used = true
	return rcSuccess
}

// daFailed counts a failed authorization of the DA-protected entity h.
func (t *TPM) daFailed(h uint32) {
	da := &t.s.DA
	if h == rhLockout {
		if da.LockoutRecovery == 0 {
			da.LockoutLocked = true
		} else {
			da.LockoutUntil = t.s.Clock + uint64(da.LockoutRecovery)*1000
		}
		return
	}
	if da.RecoveryTime != 0 {
		if da.FailedTries == 0 {
			da.LastDecrement = t.s.Clock
		}
		da.FailedTries++
	}
}

// daStartup is the dictionary-attack part of TPM2_Startup (DAStartup in
// the reference implementation): the recovery timers start again, a
// lockoutAuth locked until startup is released, and a power loss after a
// DA-protected authorization counts as a failure.
func (t *TPM) daStartup(orderly bool) {
	da := &t.s.DA
	now := t.s.Clock
	da.LastDecrement = now
	if da.LockoutUntil > now {
		da.LockoutUntil = now + uint64(da.LockoutRecovery)*1000
	}
	if da.LockoutRecovery == 0 {
		da.LockoutLocked = false
	}
	if !orderly && da.Used && da.RecoveryTime != 0 && da.FailedTries < da.MaxTries {
		da.FailedTries++
	}
	da.Used = false
}

// daClockMoved shifts the recovery timers by the amount TPM2_ClockSet
// moved the clock, so that setting the clock forward (ownerAuth) heals
// no failure and releases no lockout (which needs lockoutAuth).
func (t *TPM) daClockMoved(delta uint64) {
	da := &t.s.DA
	da.LastDecrement += delta
	if da.LockoutUntil != 0 {
		da.LockoutUntil += delta
	}
}

// cmdDALockReset is TPM2_DictionaryAttackLockReset (Part 3, section 25.2).
// It clears the failure count; it does not release a locked lockoutAuth.
func (t *TPM) cmdDALockReset(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	t.s.DA.FailedTries = 0
	return rcSuccess
}

// cmdDAParameters is TPM2_DictionaryAttackParameters (Part 3, section
// 25.3). The failure count is left as it is (the reference
// implementation's errata behaviour): lowering maxTries below it puts the
// TPM in lockout.
func (t *TPM) cmdDAParameters(c *call) uint32 {
	r := &c.r
	maxTries := r.u32()
	r.param(2)
	recovery := r.u32()
	r.param(3)
	lockoutRecovery := r.u32()
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	t.syncClock()
	t.daRecover()
	da := &t.s.DA
	da.MaxTries, da.RecoveryTime, da.LockoutRecovery = maxTries, recovery, lockoutRecovery
	return rcSuccess
}
