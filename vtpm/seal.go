package vtpm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Errors returned by [Open].
var (
	// ErrBadState means that a sealed state is malformed, was changed, or
	// was sealed under another key. The cases are deliberately not
	// distinguished.
	ErrBadState = errors.New("vtpm: sealed state is corrupt or sealed under another key")
	// ErrWrongVM means that the sealed state belongs to another VM.
	ErrWrongVM = errors.New("vtpm: sealed state belongs to another VM")
	// ErrRollback means that the sealed state is older than the last
	// generation the caller saw.
	ErrRollback = errors.New("vtpm: sealed state is older than the last seen generation")
)

// MaxSealedSize bounds a sealed state. A full TPM (64 KiB of NV, 64
// persistent and 16 loaded objects) stays far below it.
const MaxSealedSize = 1 << 20

const (
	sealMagic   = "SVTPMST\x01"
	sealSaltLen = 32
	sealInfo    = "shieldvm vtpm state v1"
)

// OpenConfig says which sealed states [Open] accepts.
type OpenConfig struct {
	// VMID must equal the VMID the state was sealed with (see
	// [Config.VMID]); otherwise Open returns ErrWrongVM.
	VMID string
	// MinGeneration, if not zero, is the last generation the caller saw
	// (see [TPM.Generation]); Open refuses older states with ErrRollback.
	MinGeneration uint64
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

var (
	encMode = sync.OnceValue(func() cbor.EncMode {
		m, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return m
	})
	decMode = sync.OnceValue(func() cbor.DecMode {
		m, err := cbor.DecOptions{
			DupMapKey:         cbor.DupMapKeyEnforcedAPF,
			IndefLength:       cbor.IndefLengthForbidden,
			TagsMd:            cbor.TagsForbidden,
			MaxNestedLevels:   16,
			MaxArrayElements:  4096,
			MaxMapPairs:       4096,
			ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	})
)

// Generation returns the generation of the last Seal (0 before the first).
func (t *TPM) Generation() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.s.Generation
}

// Seal increments the TPM's generation and returns its whole state, sealed
// under key: the seeds and proofs, hierarchy authorizations, PCRs, clock,
// NV indices, persistent and loaded objects, the RSA primary cache and the
// Shutdown(STATE) data. Sessions are not sealed. The format is described
// in docs/vtpm-state.md: deterministic CBOR encrypted with AES-256-GCM
// under a key derived from key and a random salt, with the VM ID and the
// generation as associated data.
//
// key is typically derived from the VM's transport key; any 32 uniformly
// random bytes will do. Seal may be called while the VM runs: [Open]
// resumes the TPM where it was.
func (t *TPM) Seal(key *[32]byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if t.failure != nil {
		return nil, ErrFailureMode
	}
	t.syncClock()
	t.s.Generation++
	pt, err := encMode().Marshal(t.s)
	if err != nil {
		t.s.Generation--
		return nil, errors.New("vtpm: encoding state: " + err.Error())
	}
	defer clear(pt)
	hdr := make([]byte, 0, len(sealMagic)+8+2+len(t.s.VMID)+sealSaltLen)
	hdr = append(hdr, sealMagic...)
	hdr = binary.BigEndian.AppendUint64(hdr, t.s.Generation)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(t.s.VMID)))
	hdr = append(hdr, t.s.VMID...)
	salt := make([]byte, sealSaltLen)
	random(salt)
	hdr = append(hdr, salt...)
	aead, err := sealAEAD(key, salt)
	if err != nil {
		return nil, err
	}
	out := aead.Seal(hdr, make([]byte, aead.NonceSize()), pt, hdr)
	if len(out) > MaxSealedSize {
		return nil, errors.New("vtpm: sealed state too large")
	}
	return out, nil
}

// sealAEAD derives the per-blob AES-256-GCM key from the caller's key and
// the blob's salt with HKDF-SHA256. A fresh key per blob makes the fixed
// zero nonce safe.
func sealAEAD(key *[32]byte, salt []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, key[:], salt, sealInfo, 32)
	if err != nil {
		return nil, errors.New("vtpm: key derivation failed")
	}
	defer clear(k)
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, errors.New("vtpm: key derivation failed")
	}
	return cipher.NewGCM(b)
}

// Open decrypts and checks a sealed state and returns the TPM it holds.
// It refuses a state sealed for another VM (ErrWrongVM), older than
// cfg.MinGeneration (ErrRollback), or changed in any byte or sealed under
// another key (ErrBadState).
func Open(blob []byte, key *[32]byte, cfg OpenConfig) (*TPM, error) {
	if len(blob) > MaxSealedSize {
		return nil, ErrBadState
	}
	r := newReader(blob)
	magic := r.bytes(len(sealMagic))
	gen := r.u64()
	vmid := r.bytes(int(r.u16()))
	salt := r.bytes(sealSaltLen)
	if !r.ok() || string(magic) != sealMagic {
		return nil, ErrBadState
	}
	hdr := blob[:len(blob)-r.len()]
	if !bytes.Equal(vmid, []byte(cfg.VMID)) {
		return nil, ErrWrongVM
	}
	if gen < cfg.MinGeneration {
		return nil, ErrRollback
	}
	aead, err := sealAEAD(key, salt)
	if err != nil {
		return nil, err
	}
	ct := r.rest()
	if len(ct) < aead.Overhead() {
		return nil, ErrBadState
	}
	pt, err := aead.Open(nil, make([]byte, aead.NonceSize()), ct, hdr)
	if err != nil {
		return nil, ErrBadState
	}
	defer clear(pt)
	return openState(pt, gen, cfg)
}

// openState decodes the plaintext of a sealed state, whose header said
// generation gen, and checks it: the VM, the generation and the
// invariants the command handlers rely on (state.valid). Everything that
// Open decrypted goes through here; FuzzOpenState feeds it directly.
func openState(pt []byte, gen uint64, cfg OpenConfig) (*TPM, error) {
	s := &state{}
	if err := decMode().Unmarshal(pt, s); err != nil {
		s.clear()
		return nil, ErrBadState
	}
	if s.VMID != cfg.VMID || s.Generation != gen || !s.valid() {
		s.clear()
		return nil, ErrBadState
	}
	t := newTPM(s, cfg.Now)
	t.started = s.Started && s.Shutdown == 0
	return t, nil
}

// valid checks the invariants the command handlers rely on, so that a
// state that decrypts (written by a buggy or older version) cannot crash
// the TPM.
func (s *state) valid() bool {
	if s.Persistent == nil {
		s.Persistent = map[uint32]*object{}
	}
	if s.Transient == nil {
		s.Transient = map[uint32]*object{}
	}
	if s.NV == nil {
		s.NV = map[uint32]*nvIndex{}
	}
	if len(s.Persistent) > maxPersistent || len(s.Transient) > maxLoadedObjects ||
		len(s.NV) > maxNVIndices || len(s.RSACache) > maxRSAPrimaryCache {
		return false
	}
	for h, o := range s.Persistent {
		if o == nil || h>>24 != htPersistent || !o.valid() {
			return false
		}
	}
	for h, o := range s.Transient {
		if o == nil || h < transientFirst || h >= transientFirst+maxLoadedObjects || !o.valid() {
			return false
		}
	}
	used := 0
	for h, nv := range s.NV {
		if nv == nil || h != nv.Index || h>>24 != htNVIndex || !isHash(nv.NameAlg) ||
			len(nv.Auth) > maxDigestSize || len(nv.Policy) > maxDigestSize || nv.Size > maxNVIndexSize {
			return false
		}
		if nv.Attrs&nvWritten != 0 && len(nv.Data) != int(nv.Size) {
			return false
		}
		if nv.Attrs&nvWritten == 0 && len(nv.Data) != 0 && len(nv.Data) != int(nv.Size) {
			return false
		}
		used += int(nv.Size)
	}
	if used > nvMemory {
		return false
	}
	for _, e := range s.RSACache {
		if len(e.Modulus) != 256 && len(e.Modulus) != 384 || len(e.Prime) != len(e.Modulus)/2 {
			return false
		}
	}
	if s.Shutdown > 2 || s.Shutdown == 2 && s.Saved == nil {
		return false
	}
	for _, q := range s.Sequences {
		if q == nil {
			return false
		}
	}
	for _, p := range []*hierPolicy{&s.Policies.Owner, &s.Policies.Endorsement, &s.Policies.Platform, &s.Policies.Lockout} {
		if !p.valid() {
			return false
		}
	}
	return s.Audit.valid()
}

func (o *object) valid() bool {
	if !o.init() {
		return false
	}
	if len(o.Auth) > maxDigestSize || len(o.Seed) > maxDigestSize || len(o.QName) > maxDigestSize+2 ||
		len(o.Sensitive) > maxSymData+maxRSAKeyBytes {
		return false
	}
	if !validHandle(hkHierarchyNull, o.Hierarchy) {
		return false
	}
	if o.pub.Type == algRSA && o.HasPriv && len(o.Sensitive) != int(o.pub.KeyBits)/16 {
		return false
	}
	return true
}
