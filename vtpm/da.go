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
	LastDecrement   uint64 `cbor:"5,keyasint"` // Clock (ms) of the last forgiven failure
	LockoutUntil    uint64 `cbor:"6,keyasint"` // Clock (ms) until which lockoutAuth is refused
}

func newDAState() daState {
	return daState{MaxTries: defaultMaxTries, RecoveryTime: defaultRecoveryTime, LockoutRecovery: defaultLockoutRecovery}
}

func init() {
	register(&cmdDef{cc: ccDictionaryAttackLockReset, handles: []handleKind{hkLockout}, auth: 1, nv: true, fn: (*TPM).cmdDALockReset})
	register(&cmdDef{cc: ccDictionaryAttackParameters, handles: []handleKind{hkLockout}, auth: 1, nv: true, fn: (*TPM).cmdDAParameters})
}

// daRecover forgives one failure per elapsed RecoveryTime.
func (t *TPM) daRecover() {
	da := &t.s.DA
	now := t.s.Clock
	if da.RecoveryTime == 0 || da.FailedTries == 0 {
		da.LastDecrement = now
		return
	}
	period := uint64(da.RecoveryTime) * 1000
	if now < da.LastDecrement {
		da.LastDecrement = now
	}
	n := (now - da.LastDecrement) / period
	if n >= uint64(da.FailedTries) {
		da.FailedTries = 0
		da.LastDecrement = now
		return
	}
	da.FailedTries -= uint32(n)
	da.LastDecrement += n * period
}

// daCheck returns TPM_RC_LOCKOUT when h may not be authorized now.
func (t *TPM) daCheck(h uint32) uint32 {
	t.syncClock()
	da := &t.s.DA
	if h == rhLockout {
		if t.s.Clock < da.LockoutUntil {
			return rcLockout
		}
		return rcSuccess
	}
	t.daRecover()
	if da.RecoveryTime != 0 && da.FailedTries >= da.MaxTries {
		return rcLockout
	}
	return rcSuccess
}

// daFailed counts a failed authorization of the DA-protected entity h.
func (t *TPM) daFailed(h uint32) {
	da := &t.s.DA
	if h == rhLockout {
		da.LockoutUntil = t.s.Clock + uint64(da.LockoutRecovery)*1000
		return
	}
	if da.RecoveryTime != 0 && da.FailedTries < da.MaxTries {
		if da.FailedTries == 0 {
			da.LastDecrement = t.s.Clock
		}
		da.FailedTries++
	}
}

// cmdDALockReset is TPM2_DictionaryAttackLockReset (Part 3, section 25.2).
func (t *TPM) cmdDALockReset(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	t.s.DA.FailedTries = 0
	return rcSuccess
}

// cmdDAParameters is TPM2_DictionaryAttackParameters (Part 3, section
// 25.3).
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
	da := &t.s.DA
	da.MaxTries, da.RecoveryTime, da.LockoutRecovery = maxTries, recovery, lockoutRecovery
	if da.FailedTries > maxTries {
		da.FailedTries = maxTries
	}
	da.LastDecrement = t.s.Clock
	return rcSuccess
}
