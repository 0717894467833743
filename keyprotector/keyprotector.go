package keyprotector

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"
)

// Verdict is an attestation verdict as an EAR trust tier
// (draft-ietf-rats-ear): a lower non-zero value is better.
type Verdict uint8

const (
	// VerdictNone means no verdict; it is never released to.
	VerdictNone Verdict = 0
	// VerdictAffirming means the host passed every check.
	VerdictAffirming Verdict = 2
	// VerdictWarning means the host passed with warnings.
	VerdictWarning Verdict = 32
	// VerdictContraindicated means the host failed; it is never released to.
	VerdictContraindicated Verdict = 96
)

func (v Verdict) String() string {
	switch v {
	case VerdictNone:
		return "none"
	case VerdictAffirming:
		return "affirming"
	case VerdictWarning:
		return "warning"
	case VerdictContraindicated:
		return "contraindicated"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

func (v Verdict) valid() bool {
	return v == VerdictAffirming || v == VerdictWarning || v == VerdictContraindicated
}

// Rules are the release rules the owner signs into a key protector. The zero
// value is the strictest: affirming hosts only, any policy of the guardian
// service, no offline unwraps by guardians other than the owner.
type Rules struct {
	// MinVerdict is the worst verdict a host may have to get the key:
	// VerdictAffirming or VerdictWarning. If zero, VerdictAffirming.
	MinVerdict Verdict
	// PolicyIDs lists the attestation policy ids whose verdicts are
	// accepted. If empty, any policy of the releasing guardian service.
	PolicyIDs []string
	// MaxOfflineUnwraps is how many times a guardian other than the owner
	// may call [KeyProtector.Unwrap] (get TK itself, rather than
	// [Release] it to an attested host). If zero, never. Counting needs a
	// store that implements [UnwrapCounter].
	MaxOfflineUnwraps uint64
}

const maxPolicyIDs = 64

type rulesBody struct {
	MinVerdict        uint64   `cbor:"1,keyasint"`
	PolicyIDs         []string `cbor:"2,keyasint"`
	MaxOfflineUnwraps uint64   `cbor:"3,keyasint"`
}

func (r *Rules) body() (rulesBody, error) {
	b := rulesBody{MinVerdict: uint64(r.MinVerdict), MaxOfflineUnwraps: r.MaxOfflineUnwraps}
	if b.MinVerdict == 0 {
		b.MinVerdict = uint64(VerdictAffirming)
	}
	b.PolicyIDs = slices.Clone(r.PolicyIDs)
	slices.Sort(b.PolicyIDs)
	b.PolicyIDs = slices.Compact(b.PolicyIDs)
	if b.PolicyIDs == nil {
		b.PolicyIDs = []string{}
	}
	return b, b.check()
}

func (b *rulesBody) check() error {
	if v := Verdict(b.MinVerdict); b.MinVerdict > 0xff || (v != VerdictAffirming && v != VerdictWarning) {
		return malformed("minimum verdict must be affirming (2) or warning (32)")
	}
	if len(b.PolicyIDs) > maxPolicyIDs {
		return malformed("more than %d policy ids", maxPolicyIDs)
	}
	for i, p := range b.PolicyIDs {
		if p == "" || len(p) > maxName || !utf8.ValidString(p) {
			return malformed("policy id must be 1 to %d bytes of UTF-8", maxName)
		}
		if i > 0 && b.PolicyIDs[i-1] >= p {
			return malformed("policy ids must be sorted and unique")
		}
	}
	return nil
}

func (b *rulesBody) rules() Rules {
	return Rules{MinVerdict: Verdict(b.MinVerdict), PolicyIDs: slices.Clone(b.PolicyIDs), MaxOfflineUnwraps: b.MaxOfflineUnwraps}
}

// Config configures the owner's operations ([New], [KeyProtector.Grant],
// [KeyProtector.Revoke]). The zero value is valid.
type Config struct {
	// Rules are the release rules of a new key protector. Grant and Revoke
	// keep the rules they find.
	Rules Rules
	// Now returns the current time, to check descriptor validity. If nil,
	// time.Now.
	Now func() time.Time
}

func nowFunc(f func() time.Time) time.Time {
	if f == nil {
		return time.Now()
	}
	return f()
}

// authBody is the owner-signed authorization.
type authBody struct {
	Version     uint64    `cbor:"1,keyasint"`
	ID          []byte    `cbor:"2,keyasint"`
	AuthVersion uint64    `cbor:"3,keyasint"`
	Owner       []byte    `cbor:"4,keyasint"`
	Guardians   [][]byte  `cbor:"5,keyasint"`
	Rules       rulesBody `cbor:"6,keyasint"`
}

type stanza struct {
	KeyID   []byte `cbor:"1,keyasint"`
	Wrapped []byte `cbor:"2,keyasint"`
}

// kpBody is the payload of the key protector's COSE_Sign1.
type kpBody struct {
	Version       uint64   `cbor:"1,keyasint"`
	ID            []byte   `cbor:"2,keyasint"`
	Generation    uint64   `cbor:"3,keyasint"`
	Authorization []byte   `cbor:"4,keyasint"`
	Stanzas       []stanza `cbor:"5,keyasint"`
	MAC           []byte   `cbor:"6,keyasint,omitempty"`
}

const maxWrapped = 2048

// authorization is a parsed and verified authorization.
type authorization struct {
	raw  []byte
	body authBody
	// all lists the owner first, then the other guardians by key id.
	all []*Descriptor
}

func (a *authorization) owner() *Descriptor { return a.all[0] }

func (a *authorization) index(id KeyID) int {
	for i, d := range a.all {
		if d.id == id {
			return i
		}
	}
	return -1
}

func (a *authorization) postQuantum() bool { return a.all[0].Suite().PostQuantum() }

// A KeyProtector holds a VM's transport key TK wrapped to each of its
// guardians, the owner-signed list of those guardians with the release
// rules, and a MAC keyed from TK; the whole is signed by the owner, or by
// the guardian that last re-keyed it. It holds no secret in clear.
//
// A KeyProtector value has passed every check that needs no private key
// (encoding, signatures, guardian list); the MAC is checked by whoever
// unwraps TK. It is immutable and safe for concurrent use: Grant, Revoke and
// Rekey return a new one.
type KeyProtector struct {
	raw    []byte
	body   kpBody
	auth   *authorization
	signer KeyID
	id     ID
}

// Parse decodes a key protector and verifies its structure, the owner's
// signature on the authorization and the signature on the whole.
func Parse(data []byte) (*KeyProtector, error) {
	if len(data) > MaxKeyProtectorSize {
		return nil, malformed("key protector is %d bytes, more than %d", len(data), MaxKeyProtectorSize)
	}
	s, err := parseSign1(data, "key protector")
	if err != nil {
		return nil, err
	}
	kp := &KeyProtector{raw: bytes.Clone(data), signer: s.kid}
	if err := unmarshalCanonical(s.msg.Payload, &kp.body, "key protector"); err != nil {
		return nil, err
	}
	b := &kp.body
	if b.Version != formatVersion {
		return nil, malformed("key protector version %d", b.Version)
	}
	if len(b.ID) != len(ID{}) {
		return nil, malformed("key protector id must be %d bytes", len(ID{}))
	}
	copy(kp.id[:], b.ID)
	if len(b.MAC) != sha256.Size {
		return nil, malformed("MAC must be %d bytes", sha256.Size)
	}
	if kp.auth, err = parseAuthorization(b.Authorization, kp.id); err != nil {
		return nil, err
	}
	if len(b.Stanzas) != len(kp.auth.all) {
		return nil, malformed("%d stanzas for %d guardians", len(b.Stanzas), len(kp.auth.all))
	}
	for i, st := range b.Stanzas {
		if !bytes.Equal(st.KeyID, kp.auth.all[i].id[:]) {
			return nil, malformed("stanza %d is not for guardian %d of the authorization", i, i)
		}
		if len(st.Wrapped) == 0 || len(st.Wrapped) > maxWrapped {
			return nil, malformed("stanza %d: wrapped key of %d bytes", i, len(st.Wrapped))
		}
	}
	i := kp.auth.index(s.kid)
	if i < 0 {
		return nil, fmt.Errorf("%w: key protector signed by a key that is not a listed guardian", ErrSignature)
	}
	ver, err := kp.auth.all[i].verifyingKey()
	if err != nil {
		return nil, err
	}
	if err := s.verify(ver, aadKeyProtector, "key protector"); err != nil {
		return nil, err
	}
	return kp, nil
}

func parseAuthorization(data []byte, id ID) (*authorization, error) {
	s, err := parseSign1(data, "authorization")
	if err != nil {
		return nil, err
	}
	a := &authorization{raw: data}
	if err := unmarshalCanonical(s.msg.Payload, &a.body, "authorization"); err != nil {
		return nil, err
	}
	b := &a.body
	if b.Version != formatVersion {
		return nil, malformed("authorization version %d", b.Version)
	}
	if !bytes.Equal(b.ID, id[:]) {
		return nil, malformed("authorization is for another key protector")
	}
	if b.AuthVersion == 0 {
		return nil, malformed("authorization version 0")
	}
	if len(b.Guardians)+1 > MaxGuardians {
		return nil, malformed("more than %d guardians", MaxGuardians)
	}
	if err := b.Rules.check(); err != nil {
		return nil, err
	}
	owner, err := parseEmbeddedDescriptor(b.Owner)
	if err != nil {
		return nil, fmt.Errorf("authorization owner: %w", err)
	}
	a.all = append(make([]*Descriptor, 0, len(b.Guardians)+1), owner)
	for i, raw := range b.Guardians {
		d, err := parseEmbeddedDescriptor(raw)
		if err != nil {
			return nil, fmt.Errorf("authorization guardian %d: %w", i, err)
		}
		if i > 0 && bytes.Compare(a.all[i].id[:], d.id[:]) >= 0 {
			return nil, malformed("guardians must be sorted by key id and unique")
		}
		if d.id == owner.id {
			return nil, malformed("the owner is listed twice")
		}
		a.all = append(a.all, d)
	}
	if err := checkClass(a.all); err != nil {
		return nil, err
	}
	if s.kid != owner.id {
		return nil, fmt.Errorf("%w: authorization not signed by its owner", ErrSignature)
	}
	ver, err := owner.verifyingKey()
	if err != nil {
		return nil, err
	}
	if err := s.verify(ver, aadAuthorization, "authorization"); err != nil {
		return nil, err
	}
	return a, nil
}

// checkClass refuses to mix post-quantum and classical suites.
func checkClass(ds []*Descriptor) error {
	for _, d := range ds[1:] {
		if d.Suite().PostQuantum() != ds[0].Suite().PostQuantum() {
			return fmt.Errorf("%w: %v and %v", ErrMixedSuites, ds[0].Suite(), d.Suite())
		}
	}
	return nil
}

// Marshal returns the encoded key protector.
func (kp *KeyProtector) Marshal() []byte { return bytes.Clone(kp.raw) }

// ID returns the key protector's id, the same across generations.
func (kp *KeyProtector) ID() ID { return kp.id }

// Generation returns the transport key generation: 0 at New, +1 at each
// Rekey.
func (kp *KeyProtector) Generation() uint64 { return kp.body.Generation }

// AuthorizationVersion returns the owner's authorization version: 1 at New,
// +1 at each Grant or Revoke.
func (kp *KeyProtector) AuthorizationVersion() uint64 { return kp.auth.body.AuthVersion }

// Owner returns the owner's descriptor.
func (kp *KeyProtector) Owner() *Descriptor { return kp.auth.owner() }

// Guardians returns every guardian that can unwrap TK: the owner first, then
// the others by key id.
func (kp *KeyProtector) Guardians() []*Descriptor { return slices.Clone(kp.auth.all) }

// Rules returns the owner's release rules.
func (kp *KeyProtector) Rules() Rules { return kp.auth.body.Rules.rules() }

// Signer returns the key id of the guardian that signed this generation:
// the owner, or the guardian that re-keyed it.
func (kp *KeyProtector) Signer() KeyID { return kp.signer }

// PostQuantum reports whether every guardian uses the post-quantum suite.
func (kp *KeyProtector) PostQuantum() bool { return kp.auth.postQuantum() }

// Listed returns nil if the guardian with this key id is listed, and a
// [*NotListedError] otherwise.
func (kp *KeyProtector) Listed(id KeyID) error {
	if kp.auth.index(id) < 0 {
		return &NotListedError{KeyID: id}
	}
	return nil
}

func stanzaInfo(id ID, gen uint64, kid KeyID) []byte {
	return marshal([]any{"shieldvm/v1/kp-stanza", uint64(formatVersion), id[:], gen, kid[:]})
}

func macInput(b *kpBody) []byte {
	c := *b
	c.MAC = nil
	return marshal([]any{"shieldvm/v1/kp-mac", marshal(c)})
}

// unwrap opens g's stanza and checks the MAC. It enforces no rule.
func (kp *KeyProtector) unwrap(ctx context.Context, g Guardian) (*TransportKey, error) {
	d := g.Descriptor()
	i := kp.auth.index(d.id)
	if i < 0 {
		return nil, &NotListedError{KeyID: d.id}
	}
	pt, err := g.Decrypt(ctx, kp.body.Stanzas[i].Wrapped, stanzaInfo(kp.id, kp.body.Generation, d.id))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: stanza of guardian %s", ErrUnwrap, shortHex(d.id[:]))
	}
	defer clear(pt)
	if len(pt) != TransportKeySize {
		return nil, fmt.Errorf("%w: wrapped key has the wrong size", ErrUnwrap)
	}
	tk := &TransportKey{id: kp.id, gen: kp.body.Generation}
	copy(tk.key[:], pt)
	if !hmac.Equal(tk.mac(macInput(&kp.body)), kp.body.MAC) {
		tk.Destroy()
		return nil, ErrMAC
	}
	return tk, nil
}

// UnwrapConfig configures [KeyProtector.Unwrap]. The zero value is valid.
type UnwrapConfig struct {
	// Store, if set, refuses key protectors older than one it has seen
	// and counts offline unwraps if it implements [UnwrapCounter].
	Store RollbackStore
}

// Unwrap returns TK to a listed guardian. The owner may always unwrap; any
// other guardian only within the rules' MaxOfflineUnwraps, counted by
// cfg.Store. A guardian service normally calls [Release] instead.
func (kp *KeyProtector) Unwrap(ctx context.Context, g Guardian, cfg *UnwrapConfig) (*TransportKey, error) {
	if cfg == nil {
		cfg = &UnwrapConfig{}
	}
	d := g.Descriptor()
	if err := kp.Listed(d.id); err != nil {
		return nil, err
	}
	isOwner := d.id == kp.auth.owner().id
	max := kp.auth.body.Rules.MaxOfflineUnwraps
	var counter UnwrapCounter
	if !isOwner {
		if max == 0 {
			return nil, &DeniedError{Reason: "the owner allows no offline unwrap by other guardians"}
		}
		var ok bool
		if counter, ok = cfg.Store.(UnwrapCounter); !ok {
			return nil, &DeniedError{Reason: "offline unwraps are limited and no store counts them"}
		}
	}
	tk, err := kp.unwrap(ctx, g)
	if err != nil {
		return nil, err
	}
	if err := kp.advance(ctx, cfg.Store); err != nil {
		tk.Destroy()
		return nil, err
	}
	if counter != nil {
		n, err := counter.CountUnwrap(ctx, kp.id)
		if err != nil {
			tk.Destroy()
			return nil, fmt.Errorf("keyprotector: counting the unwrap: %w", err)
		}
		if n > max {
			tk.Destroy()
			return nil, &DeniedError{Reason: "offline unwrap limit reached"}
		}
	}
	return tk, nil
}

func (kp *KeyProtector) advance(ctx context.Context, s RollbackStore) error {
	if s == nil {
		return nil
	}
	return s.Advance(ctx, kp.id, State{Owner: kp.auth.owner().id, Generation: kp.body.Generation, AuthorizationVersion: kp.auth.body.AuthVersion})
}

// New makes a key protector for one VM: a fresh random TK wrapped to the
// owner and to each guardian, and the owner's signed authorization. Every
// descriptor must be valid now, and all must be post-quantum or all
// classical.
func New(ctx context.Context, owner Guardian, guardians []*Descriptor, cfg *Config) (*KeyProtector, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	var id ID
	rand.Read(id[:])
	tk := &TransportKey{id: id}
	rand.Read(tk.key[:])
	defer tk.Destroy()
	rules, err := cfg.Rules.body()
	if err != nil {
		return nil, err
	}
	auth, err := makeAuthorization(ctx, owner, id, 1, guardians, rules, nowFunc(cfg.Now), append([]*Descriptor{owner.Descriptor()}, guardians...)...)
	if err != nil {
		return nil, err
	}
	return seal(ctx, owner, auth, tk, nil)
}

// makeAuthorization signs a new authorization. The descriptors in fresh
// (those being added) must be valid now; those already listed are kept even
// if they expired, so that an owner can always revoke.
func makeAuthorization(ctx context.Context, owner Guardian, id ID, version uint64, guardians []*Descriptor, rules rulesBody, now time.Time, fresh ...*Descriptor) (*authorization, error) {
	od := owner.Descriptor()
	all := append([]*Descriptor{od}, guardians...)
	if len(all) > MaxGuardians {
		return nil, fmt.Errorf("keyprotector: more than %d guardians", MaxGuardians)
	}
	for _, d := range all {
		if d == nil {
			return nil, fmt.Errorf("keyprotector: nil descriptor")
		}
	}
	for _, d := range fresh {
		if err := d.ValidAt(now); err != nil {
			return nil, err
		}
	}
	if err := checkClass(all); err != nil {
		return nil, err
	}
	rest := slices.Clone(guardians)
	slices.SortFunc(rest, func(a, b *Descriptor) int { return bytes.Compare(a.id[:], b.id[:]) })
	body := authBody{Version: formatVersion, ID: id[:], AuthVersion: version, Owner: od.raw, Guardians: [][]byte{}, Rules: rules}
	for i, d := range rest {
		if d.id == od.id || (i > 0 && rest[i-1].id == d.id) {
			return nil, fmt.Errorf("keyprotector: guardian %q (%s) listed twice", d.Name(), shortHex(d.id[:]))
		}
		body.Guardians = append(body.Guardians, d.raw)
	}
	raw, err := sign1(ctx, od.SignatureAlgorithm(), od.id, owner.Sign, aadAuthorization, marshal(body))
	if err != nil {
		return nil, err
	}
	return &authorization{raw: raw, body: body, all: append([]*Descriptor{od}, rest...)}, nil
}

// seal wraps tk to every guardian of auth (reusing the stanzas of old whose
// guardian is still listed, when old is at the same generation), MACs and
// signs the result with signer.
func seal(ctx context.Context, signer Guardian, auth *authorization, tk *TransportKey, old *KeyProtector) (*KeyProtector, error) {
	b := kpBody{Version: formatVersion, ID: tk.id[:], Generation: tk.gen, Authorization: auth.raw}
	for _, d := range auth.all {
		var wrapped []byte
		if old != nil && old.body.Generation == tk.gen {
			if i := old.auth.index(d.id); i >= 0 {
				wrapped = old.body.Stanzas[i].Wrapped
			}
		}
		if wrapped == nil {
			ek, err := d.encryptionKey()
			if err != nil {
				return nil, err
			}
			if wrapped, err = ek.seal(stanzaInfo(tk.id, tk.gen, d.id), tk.key[:]); err != nil {
				return nil, err
			}
		}
		b.Stanzas = append(b.Stanzas, stanza{KeyID: d.id[:], Wrapped: wrapped})
	}
	b.MAC = tk.mac(macInput(&b))
	sd := signer.Descriptor()
	raw, err := sign1(ctx, sd.SignatureAlgorithm(), sd.id, signer.Sign, aadKeyProtector, marshal(b))
	if err != nil {
		return nil, err
	}
	return &KeyProtector{raw: raw, body: b, auth: auth, signer: sd.id, id: tk.id}, nil
}

// Grant returns a new key protector in which the guardian d can also unwrap
// TK, at the next authorization version. Only the owner can grant: it
// unwraps TK with its own key and signs the new authorization.
func (kp *KeyProtector) Grant(ctx context.Context, owner Guardian, d *Descriptor, cfg *Config) (*KeyProtector, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if d == nil {
		return nil, fmt.Errorf("keyprotector: nil descriptor")
	}
	if kp.auth.index(d.id) >= 0 {
		return nil, fmt.Errorf("keyprotector: guardian %q (%s) is already listed", d.Name(), shortHex(d.id[:]))
	}
	return kp.reauthorize(ctx, owner, append(slices.Clone(kp.auth.all[1:]), d), cfg, d)
}

// Revoke returns a new key protector without the guardian with key id id,
// at the next authorization version. Only the owner can revoke, and the
// owner cannot be revoked. The revoked guardian keeps whatever TK it already
// unwrapped: re-key (Release does so by default) to retire it.
func (kp *KeyProtector) Revoke(ctx context.Context, owner Guardian, id KeyID, cfg *Config) (*KeyProtector, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	i := kp.auth.index(id)
	if i < 0 {
		return nil, &NotListedError{KeyID: id}
	}
	if i == 0 {
		return nil, fmt.Errorf("keyprotector: the owner cannot be revoked")
	}
	return kp.reauthorize(ctx, owner, slices.Delete(slices.Clone(kp.auth.all[1:]), i-1, i), cfg)
}

func (kp *KeyProtector) reauthorize(ctx context.Context, owner Guardian, guardians []*Descriptor, cfg *Config, fresh ...*Descriptor) (*KeyProtector, error) {
	if owner.Descriptor().id != kp.auth.owner().id {
		return nil, ErrNotOwner
	}
	if kp.auth.body.AuthVersion == math.MaxUint64 {
		return nil, fmt.Errorf("keyprotector: authorization version exhausted")
	}
	tk, err := kp.unwrap(ctx, owner)
	if err != nil {
		return nil, err
	}
	defer tk.Destroy()
	auth, err := makeAuthorization(ctx, owner, kp.id, kp.auth.body.AuthVersion+1, guardians, kp.auth.body.Rules, nowFunc(cfg.Now), fresh...)
	if err != nil {
		return nil, err
	}
	return seal(ctx, owner, auth, tk, kp)
}

// Rekey returns a new key protector at the next generation with a fresh TK,
// made and signed by the listed guardian g (the key protection service does
// this at each VM start, like HGS's RollTransportKey). The owner's
// authorization is kept as it is. g must be able to unwrap the current TK:
// a guardian that cannot is not trusted to replace it.
func (kp *KeyProtector) Rekey(ctx context.Context, g Guardian) (*KeyProtector, error) {
	next, old, tk, err := kp.rekey(ctx, g)
	if err != nil {
		return nil, err
	}
	old.Destroy()
	tk.Destroy()
	return next, nil
}

func (kp *KeyProtector) rekey(ctx context.Context, g Guardian) (next *KeyProtector, old, tk *TransportKey, err error) {
	if kp.body.Generation == math.MaxUint64 {
		return nil, nil, nil, fmt.Errorf("keyprotector: generation exhausted")
	}
	if old, err = kp.unwrap(ctx, g); err != nil {
		return nil, nil, nil, err
	}
	tk = &TransportKey{id: kp.id, gen: kp.body.Generation + 1}
	rand.Read(tk.key[:])
	if next, err = seal(ctx, g, kp.auth, tk, nil); err != nil {
		old.Destroy()
		tk.Destroy()
		return nil, nil, nil, err
	}
	return next, old, tk, nil
}
