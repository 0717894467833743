package server

import (
	"context"
	"encoding/binary"
)

// maxTracked bounds the handles one connection's resource manager keeps;
// the engine has far fewer slots (16 objects, 16 sessions, a few saved
// contexts), so a full tracker only forgets handles the TPM has refused.
const maxTracked = 64

// tracker is the per-connection resource manager: it records, from the
// command and response bytes, the transient objects and sessions a
// connection created and has not flushed, so that they can be flushed when
// the connection closes.
type tracker struct {
	epoch   uint64
	handles map[uint32]struct{}
}

func newTracker() *tracker { return &tracker{handles: map[uint32]struct{}{}} }

// Handle types (TPM_HT, Part 2, 7.2) the tracker records.
const (
	htHMACSession   = 0x02
	htPolicySession = 0x03
	htTransient     = 0x80
)

func trackable(h uint32) bool {
	switch h >> 24 {
	case htHMACSession, htPolicySession, htTransient:
		return true
	}
	return false
}

// createsHandle reports whether a successful response to cc carries the
// handle of an object or session it created or loaded.
func createsHandle(cc uint32) bool {
	switch cc {
	case ccCreatePrimary, ccLoad, ccLoadExternal, ccContextLoad, ccStartAuthSession,
		ccHashSequenceStart, ccHMACStart, ccMACStart, ccCreateLoaded:
		return true
	}
	return false
}

// observe records what a command did. A power cycle (a new epoch) has
// flushed everything, so the records of an older epoch are dropped: their
// handles may now belong to another connection.
func (t *tracker) observe(epoch uint64, cmd, rsp []byte) {
	if epoch != t.epoch {
		clear(t.handles)
		t.epoch = epoch
	}
	if len(cmd) < 10 || len(rsp) < 10 || binary.BigEndian.Uint32(rsp[6:]) != rcSuccess {
		return
	}
	cc := binary.BigEndian.Uint32(cmd[6:])
	switch {
	case createsHandle(cc):
		if len(rsp) >= 14 {
			if h := binary.BigEndian.Uint32(rsp[10:]); trackable(h) && len(t.handles) < maxTracked {
				t.handles[h] = struct{}{}
			}
		}
	case cc == ccFlushContext:
		// TPM2_FlushContext takes its handle as a parameter (Part 3, 28.4).
		if len(cmd) >= 14 {
			delete(t.handles, binary.BigEndian.Uint32(cmd[10:]))
		}
	case cc == ccContextSave:
		// A saved session is handed over to whoever holds its context
		// (tpm2-tools keeps sessions in files between processes): the
		// connection no longer owns it. It still takes one of the
		// TPM's session slots until someone loads and flushes it.
		// Saved objects stay loaded, and stay tracked.
		if len(cmd) >= 14 {
			if h := binary.BigEndian.Uint32(cmd[10:]); h>>24 == htHMACSession || h>>24 == htPolicySession {
				delete(t.handles, h)
			}
		}
	}
}

// flush flushes what a closing connection left loaded, unless the TPM was
// reset since (then it is gone already). Errors are ignored: an object may
// have been flushed by a command that flushes implicitly (a sequence
// completed, a session not continued).
func (in *Instance) flush(ctx context.Context, t *tracker) {
	if len(t.handles) == 0 {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || !in.powered || in.epoch != t.epoch {
		return
	}
	cmd := make([]byte, 14)
	binary.BigEndian.PutUint16(cmd, stNoSessions)
	binary.BigEndian.PutUint32(cmd[2:], 14)
	binary.BigEndian.PutUint32(cmd[6:], ccFlushContext)
	for h := range t.handles {
		binary.BigEndian.PutUint32(cmd[10:], h)
		in.tpm.Send(cmd)
	}
	clear(t.handles)
}
