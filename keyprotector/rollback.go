package keyprotector

import (
	"context"
	"fmt"
	"sync"
)

// State is what an anti-rollback store remembers of a key protector.
type State struct {
	Owner                KeyID
	Generation           uint64
	AuthorizationVersion uint64
}

// A RollbackStore remembers, per key protector id, the owner and the
// highest generation and authorization version seen. With one configured,
// Release and Unwrap refuse a key protector older than one already seen
// (a backup from before a Rekey, or from before a Revoke).
type RollbackStore interface {
	// Advance compares s with what is recorded for id, atomically: it
	// returns a [*RollbackError] if s.Generation or s.AuthorizationVersion
	// is below the recorded one, an error wrapping [ErrOwnerChanged] if the
	// owner differs, and otherwise records the highest of each and returns
	// nil.
	Advance(ctx context.Context, id ID, s State) error
}

// An UnwrapCounter counts offline unwraps per key protector. A store that
// implements it lets owners allow a bounded number of them
// ([Rules.MaxOfflineUnwraps]).
type UnwrapCounter interface {
	// CountUnwrap adds one to the count for id and returns the new count.
	CountUnwrap(ctx context.Context, id ID) (uint64, error)
}

// MemoryStore is an in-memory [RollbackStore] and [UnwrapCounter]. It is
// safe for concurrent use. Its zero value is ready to use; it forgets
// everything when the process ends, so a service that restarts needs a
// persistent implementation.
type MemoryStore struct {
	mu sync.Mutex
	m  map[ID]*memoryEntry
}

type memoryEntry struct {
	seen    bool // state is set
	state   State
	unwraps uint64
}

var (
	_ RollbackStore = (*MemoryStore)(nil)
	_ UnwrapCounter = (*MemoryStore)(nil)
)

// Advance implements [RollbackStore].
func (s *MemoryStore) Advance(ctx context.Context, id ID, st State) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[ID]*memoryEntry{}
	}
	e := s.m[id]
	if e == nil {
		e = &memoryEntry{}
		s.m[id] = e
	}
	if !e.seen {
		e.seen, e.state = true, st
		return nil
	}
	if e.state.Owner != st.Owner {
		return fmt.Errorf("%w: key protector %s", ErrOwnerChanged, id)
	}
	if st.Generation < e.state.Generation || st.AuthorizationVersion < e.state.AuthorizationVersion {
		return &RollbackError{ID: id, Presented: st, Latest: e.state}
	}
	e.state = st
	return nil
}

// CountUnwrap implements [UnwrapCounter].
func (s *MemoryStore) CountUnwrap(ctx context.Context, id ID) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[ID]*memoryEntry{}
	}
	e := s.m[id]
	if e == nil {
		e = &memoryEntry{}
		s.m[id] = e
	}
	e.unwraps++
	return e.unwraps, nil
}

// Latest returns the state recorded for id.
func (s *MemoryStore) Latest(id ID) (State, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[id]
	if e == nil || !e.seen {
		return State{}, false
	}
	return e.state, true
}
