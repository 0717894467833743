package attest

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
)

// ErrUnregistered is returned (wrapped) when the registry does not know the
// host: an EK, host key or host name that was never registered, or was
// removed.
var ErrUnregistered = errors.New("attest: host is not registered")

// Identity is what the evidence proved about who the host is, given to a
// [Registry] to look the host up.
type Identity struct {
	Mode Mode
	// EK is the endorsement key (ModeTPM); EKCertificate is its
	// certificate, set only when it verified to a root the verifier was
	// given.
	EK            crypto.PublicKey
	EKCertificate *x509.Certificate
	// HostKey is the host key whose signature verified (ModeHostKey).
	HostKey crypto.PublicKey
	// HostID is the name the host gave (ModeAdmin): a claim, not a proof.
	HostID string
}

// KeyDigest returns SHA-256 of the PKIX DER encoding of the identity's key
// (the EK or the host key), the key a registry is indexed by; ok is false
// for ModeAdmin.
func (id *Identity) KeyDigest() (d [32]byte, ok bool) {
	k := id.EK
	if id.Mode == ModeHostKey {
		k = id.HostKey
	}
	if k == nil {
		return d, false
	}
	return KeyDigest(k)
}

// KeyDigest returns SHA-256 of the PKIX DER encoding of a public key.
func KeyDigest(k crypto.PublicKey) (d [32]byte, ok bool) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return d, false
	}
	return sha256.Sum256(der), true
}

// Host is a registered host.
type Host struct {
	// ID names the host in tokens and logs.
	ID string
	// Group is the host group (ModeAdmin), or empty.
	Group string
}

// A Registry says which hosts are registered. Lookup returns the host
// that the identity belongs to, or an error wrapping [ErrUnregistered].
// A service decides where hosts are stored (a database, a directory); in
// ModeAdmin it must itself authenticate the caller (for example by the TLS
// client certificate it finds in ctx) before it vouches for a host name.
type Registry interface {
	Lookup(ctx context.Context, id *Identity) (*Host, error)
}

// MemoryRegistry is a [Registry] held in memory: an EK allow-list, host
// keys and host groups. Its zero value is empty and ready; it is safe for
// concurrent use.
type MemoryRegistry struct {
	mu       sync.RWMutex
	keys     map[[32]byte]Host // EK or host key digest -> host
	modes    map[[32]byte]Mode
	members  map[string]string // host id -> group
	disabled map[string]bool   // groups
}

var _ Registry = (*MemoryRegistry)(nil)

// AddEK registers a host by its endorsement key (ModeTPM).
func (r *MemoryRegistry) AddEK(ek crypto.PublicKey, hostID string) error {
	return r.addKey(ek, ModeTPM, hostID)
}

// AddHostKey registers a host by its host key (ModeHostKey).
func (r *MemoryRegistry) AddHostKey(key crypto.PublicKey, hostID string) error {
	return r.addKey(key, ModeHostKey, hostID)
}

func (r *MemoryRegistry) addKey(k crypto.PublicKey, m Mode, hostID string) error {
	d, ok := KeyDigest(k)
	if !ok {
		return fmt.Errorf("attest: cannot register key of type %T", k)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keys == nil {
		r.keys, r.modes = map[[32]byte]Host{}, map[[32]byte]Mode{}
	}
	r.keys[d] = Host{ID: hostID}
	r.modes[d] = m
	return nil
}

// AddGroupMember registers a host name as a member of a group (ModeAdmin).
func (r *MemoryRegistry) AddGroupMember(group, hostID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.members == nil {
		r.members = map[string]string{}
	}
	r.members[hostID] = group
}

// Remove unregisters a key (EK or host key).
func (r *MemoryRegistry) Remove(k crypto.PublicKey) {
	d, ok := KeyDigest(k)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.keys, d)
	delete(r.modes, d)
}

// Lookup implements [Registry].
func (r *MemoryRegistry) Lookup(_ context.Context, id *Identity) (*Host, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if id.Mode == ModeAdmin {
		g, ok := r.members[id.HostID]
		if !ok || id.HostID == "" {
			return nil, fmt.Errorf("%w: host %q is in no group", ErrUnregistered, id.HostID)
		}
		return &Host{ID: id.HostID, Group: g}, nil
	}
	d, ok := id.KeyDigest()
	if !ok {
		return nil, fmt.Errorf("%w: no key", ErrUnregistered)
	}
	h, ok := r.keys[d]
	if !ok || r.modes[d] != id.Mode {
		return nil, fmt.Errorf("%w: %v key sha256:%x", ErrUnregistered, id.Mode, d[:8])
	}
	return &h, nil
}
