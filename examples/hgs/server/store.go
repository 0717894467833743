package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/keyprotector"
)

// ErrNotFound is returned (wrapped) by a Store that has no such record.
var ErrNotFound = errors.New("hgs: not found")

// ErrConflict is returned (wrapped) by Store.PutHost when the host id or
// the EK is already registered to another record.
var ErrConflict = errors.New("hgs: conflicts with a registered host")

// Host is a registered host: a name and the key that identifies it.
type Host struct {
	// ID names the host in tokens and logs (see ValidHostID).
	ID string `json:"id"`
	// Mode is how the host proves it holds Key: attest.ModeTPM (Key is
	// its TPM's endorsement key, proven by credential activation) or
	// attest.ModeHostKey (Key is a host key that signs the challenge).
	// A key registered for one mode is never accepted in the other.
	Mode attest.Mode `json:"mode"`
	// Key is the EK or host public key, PKIX DER.
	Key []byte `json:"key"`
}

// KeyDigest returns SHA-256 of the key's PKIX encoding, the value hosts
// are looked up by (attest.Identity.KeyDigest).
func (h *Host) KeyDigest() [32]byte { return sha256.Sum256(h.Key) }

var hostIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidHostID reports whether id can name a host: 1-64 letters, digits,
// dots, dashes and underscores, not starting with a dot, dash or
// underscore.
func ValidHostID(id string) bool { return hostIDPattern.MatchString(id) }

// A Store holds the service's state: the attestation policy, the host
// registry and, for anti-rollback, the newest state of every key protector
// the service released. Replicas of the service that share a Store (and the
// challenge secret and keys) behave as one service.
//
// Implementations must be safe for concurrent use, and Advance must be
// atomic across every replica that shares the store.
type Store interface {
	// Policy returns the policy document, or an error wrapping ErrNotFound.
	Policy(ctx context.Context) ([]byte, error)
	// SetPolicy replaces the policy document. The caller has checked it.
	SetPolicy(ctx context.Context, doc []byte) error
	// Host returns the host whose key has this digest, or an error
	// wrapping ErrNotFound.
	Host(ctx context.Context, keyDigest [32]byte) (*Host, error)
	// Hosts lists the registered hosts, by id.
	Hosts(ctx context.Context) ([]Host, error)
	// PutHost registers a host. It fails with ErrConflict if the id or
	// the key is registered to another host.
	PutHost(ctx context.Context, h *Host) error
	// DeleteHost removes the host with this id, or returns an error
	// wrapping ErrNotFound.
	DeleteHost(ctx context.Context, id string) error
	// RollbackStore remembers the newest key protector state released.
	keyprotector.RollbackStore
}

// DirStore is a Store in a directory of small JSON files, written
// atomically (a temporary file renamed into place):
//
//	policy.json             the policy document
//	hosts/<key sha256>.json one registered host
//	kp/<kp id>.json         the newest state of a key protector released
//
// It serializes its writers with mutexes (the anti-rollback records one
// key protector at a time), so one process may share it between
// goroutines; it is not safe for several processes at once (a distributed
// backend implements Store for replicas).
type DirStore struct {
	dir string
	mu  sync.Mutex // policy and hosts
	// kpMu serializes Advance per key protector (striped by id), so that
	// VMs starting at once do not wait for each other's writes.
	kpMu [64]sync.Mutex
}

var _ Store = (*DirStore)(nil)

// OpenDirStore opens (creating if needed, mode 0700) a directory store.
func OpenDirStore(dir string) (*DirStore, error) {
	for _, d := range []string{dir, filepath.Join(dir, "hosts"), filepath.Join(dir, "kp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("hgs: store: %w", err)
		}
	}
	return &DirStore{dir: dir}, nil
}

func (s *DirStore) write(name string, data []byte) error {
	path := filepath.Join(s.dir, name)
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("hgs: store: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("hgs: store: %w", err)
	}
	return nil
}

func (s *DirStore) read(name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("hgs: store: %w", err)
	}
	return b, nil
}

// Policy implements Store.
func (s *DirStore) Policy(ctx context.Context) ([]byte, error) { return s.read("policy.json") }

// SetPolicy implements Store.
func (s *DirStore) SetPolicy(ctx context.Context, doc []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.write("policy.json", doc)
}

func hostFile(d [32]byte) string { return filepath.Join("hosts", hex.EncodeToString(d[:])+".json") }

// Host implements Store.
func (s *DirStore) Host(ctx context.Context, keyDigest [32]byte) (*Host, error) {
	b, err := s.read(hostFile(keyDigest))
	if err != nil {
		return nil, err
	}
	var h Host
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("hgs: store: %s: %v", hostFile(keyDigest), err)
	}
	if h.KeyDigest() != keyDigest {
		return nil, fmt.Errorf("hgs: store: %s holds another key", hostFile(keyDigest))
	}
	return &h, nil
}

// Hosts implements Store.
func (s *DirStore) Hosts(ctx context.Context) ([]Host, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "hosts"))
	if err != nil {
		return nil, fmt.Errorf("hgs: store: %w", err)
	}
	var out []Host
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".json" || e.Name()[0] == '.' {
			continue
		}
		b, err := s.read(filepath.Join("hosts", e.Name()))
		if err != nil {
			return nil, err
		}
		var h Host
		if err := json.Unmarshal(b, &h); err != nil {
			return nil, fmt.Errorf("hgs: store: %s: %v", e.Name(), err)
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Host) int { return cmpString(a.ID, b.ID) })
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// PutHost implements Store.
func (s *DirStore) PutHost(ctx context.Context, h *Host) error {
	if !ValidHostID(h.ID) {
		return fmt.Errorf("hgs: store: invalid host id %q", h.ID)
	}
	if h.Mode != attest.ModeTPM && h.Mode != attest.ModeHostKey {
		return fmt.Errorf("hgs: store: host %s: mode %v", h.ID, h.Mode)
	}
	if _, err := x509.ParsePKIXPublicKey(h.Key); err != nil {
		return fmt.Errorf("hgs: store: host %s: key: %v", h.ID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	hosts, err := s.Hosts(ctx)
	if err != nil {
		return err
	}
	for _, o := range hosts {
		sameKey := bytes.Equal(o.Key, h.Key)
		if (o.ID == h.ID) != sameKey || (sameKey && o.Mode != h.Mode) {
			return fmt.Errorf("%w: host %s", ErrConflict, o.ID)
		}
	}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return s.write(hostFile(h.KeyDigest()), b)
}

// DeleteHost implements Store.
func (s *DirStore) DeleteHost(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	hosts, err := s.Hosts(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if h.ID == id {
			if err := os.Remove(filepath.Join(s.dir, hostFile(h.KeyDigest()))); err != nil {
				return fmt.Errorf("hgs: store: %w", err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: host %q", ErrNotFound, id)
}

type kpState struct {
	Owner                []byte `json:"owner"`
	Generation           uint64 `json:"generation"`
	AuthorizationVersion uint64 `json:"authorization_version"`
}

// Advance implements keyprotector.RollbackStore.
func (s *DirStore) Advance(ctx context.Context, id keyprotector.ID, st keyprotector.State) error {
	mu := &s.kpMu[id[0]%byte(len(s.kpMu))]
	mu.Lock()
	defer mu.Unlock()
	name := filepath.Join("kp", hex.EncodeToString(id[:])+".json")
	b, err := s.read(name)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	default:
		var old kpState
		if err := json.Unmarshal(b, &old); err != nil {
			return fmt.Errorf("hgs: store: %s: %v", name, err)
		}
		if !bytes.Equal(old.Owner, st.Owner[:]) {
			return fmt.Errorf("%w: key protector %v", keyprotector.ErrOwnerChanged, id)
		}
		latest := keyprotector.State{Owner: st.Owner, Generation: old.Generation, AuthorizationVersion: old.AuthorizationVersion}
		if st.Generation < old.Generation || st.AuthorizationVersion < old.AuthorizationVersion {
			return &keyprotector.RollbackError{ID: id, Presented: st, Latest: latest}
		}
	}
	nb, err := json.Marshal(kpState{Owner: st.Owner[:], Generation: st.Generation, AuthorizationVersion: st.AuthorizationVersion})
	if err != nil {
		return err
	}
	return s.write(name, nb)
}

// MemoryStore is a Store in memory, for tests and single-process demos: it
// forgets everything when the process ends, anti-rollback records
// included. It is safe for concurrent use; its zero value is ready.
type MemoryStore struct {
	mu     sync.RWMutex
	policy []byte
	hosts  map[[32]byte]Host
	kp     keyprotector.MemoryStore
}

var _ Store = (*MemoryStore)(nil)

// Policy implements Store.
func (m *MemoryStore) Policy(ctx context.Context) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.policy == nil {
		return nil, fmt.Errorf("%w: policy", ErrNotFound)
	}
	return bytes.Clone(m.policy), nil
}

// SetPolicy implements Store.
func (m *MemoryStore) SetPolicy(ctx context.Context, doc []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.policy = bytes.Clone(doc)
	return nil
}

// Host implements Store.
func (m *MemoryStore) Host(ctx context.Context, keyDigest [32]byte) (*Host, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, ok := m.hosts[keyDigest]
	if !ok {
		return nil, fmt.Errorf("%w: host", ErrNotFound)
	}
	return &h, nil
}

// Hosts implements Store.
func (m *MemoryStore) Hosts(ctx context.Context) ([]Host, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Host
	for _, h := range m.hosts {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Host) int { return cmpString(a.ID, b.ID) })
	return out, nil
}

// PutHost implements Store.
func (m *MemoryStore) PutHost(ctx context.Context, h *Host) error {
	if !ValidHostID(h.ID) {
		return fmt.Errorf("hgs: store: invalid host id %q", h.ID)
	}
	if _, err := x509.ParsePKIXPublicKey(h.Key); err != nil {
		return fmt.Errorf("hgs: store: host %s: key: %v", h.ID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.hosts {
		sameKey := bytes.Equal(o.Key, h.Key)
		if (o.ID == h.ID) != sameKey || (sameKey && o.Mode != h.Mode) {
			return fmt.Errorf("%w: host %s", ErrConflict, o.ID)
		}
	}
	if m.hosts == nil {
		m.hosts = map[[32]byte]Host{}
	}
	c := *h
	c.Key = bytes.Clone(h.Key)
	m.hosts[h.KeyDigest()] = c
	return nil
}

// DeleteHost implements Store.
func (m *MemoryStore) DeleteHost(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for d, h := range m.hosts {
		if h.ID == id {
			delete(m.hosts, d)
			return nil
		}
	}
	return fmt.Errorf("%w: host %q", ErrNotFound, id)
}

// Advance implements keyprotector.RollbackStore.
func (m *MemoryStore) Advance(ctx context.Context, id keyprotector.ID, st keyprotector.State) error {
	return m.kp.Advance(ctx, id, st)
}
