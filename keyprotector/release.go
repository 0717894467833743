package keyprotector

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/hpke"
	"crypto/sha256"
	"fmt"
	"slices"
	"time"
)

// Binding is what a release is bound to besides the host's key: the hash
// of the health token that vouched for the host, and the nonce of the
// attestation challenge. The host must present the same values to open.
type Binding struct {
	TokenHash [32]byte
	Nonce     []byte // at most 64 bytes
}

// Host is the verified facts about the host a key is released to. The
// caller takes them from a health token it has verified (package attest);
// this package trusts them as given.
type Host struct {
	// ReleaseKey is the host's release public key, the one the health
	// token is bound to. Its suite must be SuiteX25519, SuiteP256 or
	// SuiteMLKEM768X25519, post-quantum exactly when the key protector is.
	ReleaseKey hpke.PublicKey
	Binding    Binding
	// Verdict is the token's attestation verdict.
	Verdict Verdict
	// PolicyID is the id of the policy that produced Verdict.
	PolicyID string
}

// ReleaseConfig configures [Release]. The zero value re-keys and keeps no
// anti-rollback state.
type ReleaseConfig struct {
	// Store, if set, refuses key protectors older than one already seen.
	Store RollbackStore
	// KeepKey, if true, releases TK without re-keying. If false, Release
	// also makes TK' at the next generation and a new key protector for
	// it, as HGS does at every VM start.
	KeepKey bool
	// Now returns the current time, to check the guardian's descriptor. If
	// nil, time.Now.
	Now func() time.Time
}

// responseBody is the release response; see docs/keyprotector.md.
type responseBody struct {
	Version    uint64 `cbor:"1,keyasint"`
	ID         []byte `cbor:"2,keyasint"`
	Generation uint64 `cbor:"3,keyasint"`
	Suite      uint64 `cbor:"4,keyasint"`
	Sealed     []byte `cbor:"5,keyasint"`
	Next       []byte `cbor:"6,keyasint,omitempty"`
}

// sealedKeys is the plaintext sealed to the host.
type sealedKeys struct {
	Key  []byte `cbor:"1,keyasint"`
	Next []byte `cbor:"2,keyasint,omitempty"`
}

const maxSealed = 4096

func releaseInfo(id ID, gen uint64, suite Suite, hostKey []byte, b *Binding, next []byte) []byte {
	var nextHash []byte
	if next != nil {
		h := sha256.Sum256(next)
		nextHash = h[:]
	}
	return marshal([]any{"shieldvm/v1/release", uint64(formatVersion), id[:], gen, uint64(suite), hostKey, b.TokenHash[:], b.Nonce, nextHash})
}

func hostSuite(k hpke.PublicKey) (Suite, error) {
	if k == nil {
		return 0, fmt.Errorf("keyprotector: no host release key")
	}
	s := Suite(k.KEM().ID())
	if _, err := s.kem(); err != nil {
		return 0, err
	}
	return s, nil
}

// Release is the key protection side of a VM start: guardian g, listed in
// kp, checks the owner's release rules against the host's verified facts,
// unwraps TK, checks the MAC and, if cfg.Store is set, that kp is not
// older than one already seen; then it seals TK, and TK' with the re-keyed
// key protector unless cfg.KeepKey, to the host's release key with HPKE,
// bound to host.Binding. Only the holder of the host's release private key,
// presenting the same binding, can [Open] the result.
func Release(ctx context.Context, kp *KeyProtector, g Guardian, host *Host, cfg *ReleaseConfig) ([]byte, error) {
	if cfg == nil {
		cfg = &ReleaseConfig{}
	}
	if host == nil {
		return nil, fmt.Errorf("keyprotector: no host")
	}
	suite, err := hostSuite(host.ReleaseKey)
	if err != nil {
		return nil, err
	}
	if suite.PostQuantum() != kp.PostQuantum() {
		return nil, fmt.Errorf("%w: host release key is %v, key protector is %v", ErrMixedSuites, suite, kp.auth.owner().Suite())
	}
	if len(host.Binding.Nonce) > maxNonce {
		return nil, fmt.Errorf("keyprotector: binding nonce longer than %d bytes", maxNonce)
	}
	rules := &kp.auth.body.Rules
	if !host.Verdict.valid() || host.Verdict == VerdictContraindicated || uint64(host.Verdict) > rules.MinVerdict {
		return nil, &DeniedError{Reason: fmt.Sprintf("host verdict %v is worse than the minimum %v", host.Verdict, Verdict(rules.MinVerdict))}
	}
	if len(rules.PolicyIDs) > 0 && !slices.Contains(rules.PolicyIDs, host.PolicyID) {
		return nil, &DeniedError{Reason: "the host's attestation policy is not one the owner accepts"}
	}
	d := g.Descriptor()
	if err := kp.Listed(d.id); err != nil {
		return nil, err
	}
	if err := d.ValidAt(nowFunc(cfg.Now)); err != nil {
		return nil, err
	}
	var (
		tk, next *TransportKey
		nextKP   *KeyProtector
	)
	if cfg.KeepKey {
		tk, err = kp.unwrap(ctx, g)
	} else {
		nextKP, tk, next, err = kp.rekey(ctx, g)
	}
	if err != nil {
		return nil, err
	}
	defer tk.Destroy()
	if next != nil {
		defer next.Destroy()
	}
	if err := kp.advance(ctx, cfg.Store); err != nil {
		return nil, err
	}
	pt := sealedKeys{Key: tk.key[:]}
	resp := responseBody{Version: formatVersion, ID: kp.id[:], Generation: kp.body.Generation, Suite: uint64(suite)}
	if next != nil {
		pt.Next = next.key[:]
		resp.Next = nextKP.raw
	}
	plain := marshal(pt)
	defer clear(plain)
	resp.Sealed, err = hpke.Seal(host.ReleaseKey, hpkeKDF, hpkeAEAD, releaseInfo(kp.id, kp.body.Generation, suite, host.ReleaseKey.Bytes(), &host.Binding, resp.Next), plain)
	if err != nil {
		return nil, fmt.Errorf("keyprotector: sealing to the host: %v", err)
	}
	return marshal(resp), nil
}

// Released is what a host gets from [Open].
type Released struct {
	// Key is TK at the generation of the key protector the host presented.
	Key *TransportKey
	// Next is TK' and NextKeyProtector its key protector, when the
	// guardian re-keyed; both are nil otherwise. The host re-seals what it
	// sealed under Key under Next, and stores NextKeyProtector in place of
	// the old one.
	Next             *TransportKey
	NextKeyProtector *KeyProtector
}

// Destroy zeroes the keys.
func (r *Released) Destroy() {
	if r.Key != nil {
		r.Key.Destroy()
	}
	if r.Next != nil {
		r.Next.Destroy()
	}
}

// ParseResponse decodes a release response without opening it, for
// inspection. It returns the key protector id, its generation and, when the
// response re-keys, the next key protector (parsed and signature-checked).
func ParseResponse(data []byte) (id ID, generation uint64, next *KeyProtector, err error) {
	r, err := parseResponse(data)
	if err != nil {
		return ID{}, 0, nil, err
	}
	copy(id[:], r.ID)
	if r.Next != nil {
		if next, err = Parse(r.Next); err != nil {
			return ID{}, 0, nil, err
		}
	}
	return id, r.Generation, next, nil
}

func parseResponse(data []byte) (*responseBody, error) {
	if len(data) > MaxKeyProtectorSize+maxSealed {
		return nil, malformed("release response is too large")
	}
	var r responseBody
	if err := unmarshalCanonical(data, &r, "release response"); err != nil {
		return nil, err
	}
	if r.Version != formatVersion {
		return nil, malformed("release response version %d", r.Version)
	}
	if len(r.ID) != len(ID{}) {
		return nil, malformed("release response id must be %d bytes", len(ID{}))
	}
	if r.Suite > 0xffff {
		return nil, malformed("release response suite")
	}
	if len(r.Sealed) == 0 || len(r.Sealed) > maxSealed {
		return nil, malformed("release response sealed keys of %d bytes", len(r.Sealed))
	}
	return &r, nil
}

// Open is the host side of [Release]: it opens the response with the host's
// release private key and the binding the release was made for, and checks
// that the keys are the real ones: TK must verify kp's MAC, and TK' the MAC
// of a re-keyed key protector that has kp's id, owner and authorization, the
// next generation and a listed guardian's signature.
func Open(response []byte, kp *KeyProtector, key hpke.PrivateKey, b *Binding) (*Released, error) {
	r, err := parseResponse(response)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(r.ID, kp.id[:]) || r.Generation != kp.body.Generation {
		return nil, fmt.Errorf("keyprotector: release response is for another key protector or generation")
	}
	if key == nil || b == nil {
		return nil, fmt.Errorf("keyprotector: no host key or binding")
	}
	suite := Suite(r.Suite)
	if suite != Suite(key.KEM().ID()) {
		return nil, fmt.Errorf("%w: response sealed to a %v key, host key is %v", ErrUnwrap, suite, Suite(key.KEM().ID()))
	}
	plain, err := hpke.Open(key, hpkeKDF, hpkeAEAD, releaseInfo(kp.id, kp.body.Generation, suite, key.PublicKey().Bytes(), b, r.Next), r.Sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: release response does not open with this host key and binding", ErrUnwrap)
	}
	defer clear(plain)
	var pt sealedKeys
	if err := unmarshalCanonical(plain, &pt, "released keys"); err != nil {
		return nil, err
	}
	defer clear(pt.Key)
	defer clear(pt.Next)
	if len(pt.Key) != TransportKeySize || (pt.Next != nil) != (r.Next != nil) || (pt.Next != nil && len(pt.Next) != TransportKeySize) {
		return nil, malformed("released keys")
	}
	out := &Released{Key: &TransportKey{id: kp.id, gen: kp.body.Generation}}
	copy(out.Key.key[:], pt.Key)
	if !hmac.Equal(out.Key.mac(macInput(&kp.body)), kp.body.MAC) {
		out.Destroy()
		return nil, fmt.Errorf("%w: released key does not match the key protector", ErrMAC)
	}
	if r.Next == nil {
		return out, nil
	}
	next, err := Parse(r.Next)
	if err != nil {
		out.Destroy()
		return nil, err
	}
	if next.id != kp.id || next.body.Generation != kp.body.Generation+1 || !bytes.Equal(next.auth.raw, kp.auth.raw) {
		out.Destroy()
		return nil, fmt.Errorf("keyprotector: re-keyed key protector does not follow the one presented")
	}
	out.Next = &TransportKey{id: kp.id, gen: next.body.Generation}
	copy(out.Next.key[:], pt.Next)
	if !hmac.Equal(out.Next.mac(macInput(&next.body)), next.body.MAC) {
		out.Destroy()
		return nil, fmt.Errorf("%w: released next key does not match the re-keyed key protector", ErrMAC)
	}
	out.NextKeyProtector = next
	return out, nil
}
