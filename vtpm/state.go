package vtpm

// state is everything that Seal writes: the persistent state of the TPM
// (seeds, proofs, authorizations, NV, persistent objects, the RSA primary
// cache), its orderly-shutdown state, and the loaded transient objects and
// PCRs so that a running VM can be migrated. Field numbers are the CBOR
// keys of the sealed format (docs/vtpm-state.md); never reuse one.
type state struct {
	VMID       string `cbor:"1,keyasint"`
	Generation uint64 `cbor:"2,keyasint"`

	PlatformSeed    [32]byte `cbor:"10,keyasint"`
	OwnerSeed       [32]byte `cbor:"11,keyasint"`
	EndorsementSeed [32]byte `cbor:"12,keyasint"`
	NullSeed        [32]byte `cbor:"13,keyasint"`

	PlatformProof    [32]byte `cbor:"14,keyasint"`
	OwnerProof       [32]byte `cbor:"15,keyasint"`
	EndorsementProof [32]byte `cbor:"16,keyasint"`
	NullProof        [32]byte `cbor:"17,keyasint"`

	OwnerAuth       []byte `cbor:"20,keyasint"`
	EndorsementAuth []byte `cbor:"21,keyasint"`
	LockoutAuth     []byte `cbor:"22,keyasint"`
	PlatformAuth    []byte `cbor:"23,keyasint"`
	DisableClear    bool   `cbor:"24,keyasint"`

	PCR        pcrBanks `cbor:"30,keyasint"`
	PCRCounter uint32   `cbor:"31,keyasint"`

	Clock        uint64 `cbor:"40,keyasint"` // milliseconds
	ResetCount   uint32 `cbor:"41,keyasint"`
	RestartCount uint32 `cbor:"42,keyasint"`
	TimeBase     uint64 `cbor:"43,keyasint"` // Clock at the last TPM Reset or Restart
	Started      bool   `cbor:"44,keyasint"` // Startup was run and the TPM was running when sealed
	Shutdown     uint8  `cbor:"45,keyasint"` // 0: none, 1: Shutdown(CLEAR), 2: Shutdown(STATE)
	Saved        *saved `cbor:"46,keyasint,omitempty"`

	Persistent map[uint32]*object  `cbor:"50,keyasint"`
	Transient  map[uint32]*object  `cbor:"51,keyasint"`
	NV         map[uint32]*nvIndex `cbor:"52,keyasint"`
	RSACache   []rsaCacheEntry     `cbor:"53,keyasint"`

	ContextSeq uint64 `cbor:"61,keyasint"`
	MaxCounter uint64 `cbor:"62,keyasint"`

	DA daState `cbor:"70,keyasint"`

	// Hierarchy enables (TPM2_HierarchyControl), stored as "disabled" so
	// that the zero value, and a state sealed before they existed, has
	// every hierarchy enabled.
	Hier hierState `cbor:"80,keyasint"`

	// PCR allocation (TPM2_PCR_Allocate): bit p of PCRUnallocated[i] is
	// set when PCR p of the bank of hashAlgs[i] is not allocated, so that
	// the zero value allocates every PCR of every bank. PCRAllocNext is
	// the allocation that the next Startup(CLEAR) makes current;
	// PCRAllocPending says that there is one.
	PCRUnallocated  [len(hashAlgs)]uint32 `cbor:"81,keyasint"`
	PCRAllocNext    [len(hashAlgs)]uint32 `cbor:"82,keyasint"`
	PCRAllocPending bool                  `cbor:"83,keyasint"`

	// ClockAdjust is the clock rate adjustment of TPM2_ClockRateAdjust,
	// in parts per clockNominal.
	ClockAdjust int32 `cbor:"84,keyasint"`

	// Policies are the hierarchies' authPolicies (TPM2_SetPrimaryPolicy,
	// primarypolicy.go). Omitted when no hierarchy has one, so that such
	// a state reads as it did before they existed.
	Policies primaryPolicies `cbor:"85,keyasint,omitempty"`

	// Audit is the command audit state (TPM2_SetCommandCodeAuditStatus,
	// cmdaudit.go). Omitted while it is that of a new TPM, so that such
	// a state reads as it did before command audit existed.
	Audit commandAudit `cbor:"86,keyasint,omitempty"`

	// Sequences holds the hash, HMAC and event sequences by transient
	// handle (sequence.go). A sequence occupies its handle's slot in
	// Transient with a placeholder object.
	Sequences map[uint32]*sequence `cbor:"90,keyasint,omitempty"`
}

// hierState is the sealed TPM2_HierarchyControl state: phEnable,
// shEnable, ehEnable and phEnableNV, inverted.
type hierState struct {
	PlatformDisabled    bool `cbor:"1,keyasint"`
	OwnerDisabled       bool `cbor:"2,keyasint"`
	EndorsementDisabled bool `cbor:"3,keyasint"`
	PlatformNVDisabled  bool `cbor:"4,keyasint"`
}

// saved is the state TPM2_Shutdown(STATE) keeps for TPM2_Startup(STATE).
type saved struct {
	PCR        pcrBanks `cbor:"1,keyasint"`
	PCRCounter uint32   `cbor:"2,keyasint"`
}

func newState(vmid string) *state {
	s := &state{
		VMID:       vmid,
		Persistent: map[uint32]*object{},
		Transient:  map[uint32]*object{},
		NV:         map[uint32]*nvIndex{},
		DA:         newDAState(),
	}
	random(s.PlatformSeed[:])
	random(s.OwnerSeed[:])
	random(s.EndorsementSeed[:])
	random(s.NullSeed[:])
	random(s.PlatformProof[:])
	random(s.OwnerProof[:])
	random(s.EndorsementProof[:])
	random(s.NullProof[:])
	return s
}

// clear zeroes every secret in the state (best effort).
func (s *state) clear() {
	clear(s.PlatformSeed[:])
	clear(s.OwnerSeed[:])
	clear(s.EndorsementSeed[:])
	clear(s.NullSeed[:])
	clear(s.PlatformProof[:])
	clear(s.OwnerProof[:])
	clear(s.EndorsementProof[:])
	clear(s.NullProof[:])
	clear(s.OwnerAuth)
	clear(s.EndorsementAuth)
	clear(s.LockoutAuth)
	clear(s.PlatformAuth)
	// A state that failed to decode or to validate may hold nil
	// entries (a CBOR null): clear what is there.
	for _, o := range s.Persistent {
		if o != nil {
			o.clear()
		}
	}
	for _, o := range s.Transient {
		if o != nil {
			o.clear()
		}
	}
	for _, nv := range s.NV {
		if nv != nil {
			clear(nv.Auth)
			clear(nv.Data)
		}
	}
	for i := range s.RSACache {
		clear(s.RSACache[i].Prime)
	}
	s.RSACache = nil
	for _, q := range s.Sequences {
		if q != nil {
			q.clear()
		}
	}
	s.Sequences = nil
	s.Persistent = map[uint32]*object{}
	s.Transient = map[uint32]*object{}
	s.NV = map[uint32]*nvIndex{}
}

// seed returns the primary seed of a hierarchy.
func (s *state) seed(h uint32) []byte {
	switch h {
	case rhPlatform:
		return s.PlatformSeed[:]
	case rhOwner:
		return s.OwnerSeed[:]
	case rhEndorsement:
		return s.EndorsementSeed[:]
	}
	return s.NullSeed[:]
}

// proof returns the secret a hierarchy's tickets and contexts are keyed with.
func (s *state) proof(h uint32) []byte {
	switch h {
	case rhPlatform:
		return s.PlatformProof[:]
	case rhOwner:
		return s.OwnerProof[:]
	case rhEndorsement:
		return s.EndorsementProof[:]
	}
	return s.NullProof[:]
}

// Startup kinds (Part 1, section 12.2.3).
const (
	startReset   = iota // Startup(CLEAR) after Shutdown(CLEAR) or none
	startRestart        // Startup(CLEAR) after Shutdown(STATE)
	startResume         // Startup(STATE) after Shutdown(STATE)
)

// The admin state (hierarchy enables, NV locks, dictionary-attack timers,
// PCR allocation) changes at TPM2_Startup and TPM2_Shutdown. lifecycle.go
// owns those commands; this adapter runs their handler and then the admin
// part, so that the two stay in separate files.
func init() {
	st := lookupCommand(ccStartup)
	startup := st.fn
	st.fn = func(t *TPM, c *call) uint32 {
		s := t.s
		kind := startReset
		if su, ok := peekU16(c); ok && su == suState {
			kind = startResume
		} else if s.Shutdown == suState+1 {
			kind = startRestart
		}
		orderly := s.Shutdown != 0 || !s.Started
		rc := startup(t, c)
		if rc == rcSuccess {
			t.adminStartup(kind, orderly)
		}
		return rc
	}
	sd := lookupCommand(ccShutdown)
	shutdown := sd.fn
	sd.fn = func(t *TPM, c *call) uint32 {
		// A new PCR allocation needs a TPM Reset: Shutdown(STATE) is
		// refused, as in the reference implementation.
		if su, ok := peekU16(c); ok && su == suState && len(c.r.b) == 2 && t.s.PCRAllocPending {
			return qualify(rcType, rcP|rcN)
		}
		return shutdown(t, c)
	}
}

// peekU16 returns the first parameter of c without consuming it.
func peekU16(c *call) (uint16, bool) {
	if len(c.r.b) < 2 {
		return 0, false
	}
	return uint16(c.r.b[0])<<8 | uint16(c.r.b[1]), true
}

// adminStartup is the admin part of a successful TPM2_Startup. orderly is
// false when the TPM lost power without TPM2_Shutdown.
func (t *TPM) adminStartup(kind int, orderly bool) {
	s := t.s
	// phEnable is set by every startup; the other enables, platformAuth
	// and platformPolicy are reset by TPM Reset and TPM Restart.
	s.Hier.PlatformDisabled = false
	if kind != startResume {
		s.Hier = hierState{}
		clear(s.PlatformAuth)
		s.PlatformAuth = nil
		s.Policies.Platform.reset()
		t.nvStartup(kind)
		if s.PCRAllocPending {
			s.PCRUnallocated = s.PCRAllocNext
			s.PCRAllocPending = false
			s.PCR.resetAll()
		}
	}
	t.daStartup(orderly)
	t.commandAuditStartup(kind)
}
