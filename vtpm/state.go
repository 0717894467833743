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
	for _, o := range s.Persistent {
		o.clear()
	}
	for _, o := range s.Transient {
		o.clear()
	}
	for _, nv := range s.NV {
		clear(nv.Auth)
		clear(nv.Data)
	}
	for i := range s.RSACache {
		clear(s.RSACache[i].Prime)
	}
	s.RSACache = nil
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
