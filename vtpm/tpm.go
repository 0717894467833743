package vtpm

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// Config configures a new TPM. The zero Config is valid and secure: a TPM
// with fresh random hierarchy seeds, empty hierarchy authorizations (as a
// manufactured TPM has), and no EK certificate. A Config must not be
// modified after it is passed to [New] or [Open].
type Config struct {
	// VMID names the VM that owns this TPM. It is bound into every sealed
	// state (see [TPM.Seal]) so that one VM's state cannot be opened as
	// another's. If empty, the state is bound to the empty ID.
	VMID string

	// EKCA, if not nil, issues certificates for the RSA-2048 and ECC P-256
	// endorsement keys (the TCG default templates) when the TPM is
	// manufactured by [New]. The certificates are stored in the NV indices
	// 0x01c00002 (RSA) and 0x01c0000a (ECC), as the TCG EK Credential
	// Profile specifies. If nil, no certificate is stored.
	EKCA *CA

	// Now returns the current time; the TPM clock advances with it. If nil,
	// time.Now is used.
	Now func() time.Time

	// DeferStartup, if true, leaves the TPM powered on but not started, as
	// after _TPM_Init: every command but TPM2_Startup fails with
	// TPM_RC_INITIALIZE until firmware sends TPM2_Startup. If false (zero),
	// New runs TPM2_Startup(CLEAR) so that go-tpm clients work at once.
	DeferStartup bool
}

// CA issues endorsement key certificates. Key must be the private key of
// Cert; its Public key must match Cert.PublicKey.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Errors returned by this package.
var (
	// ErrClosed is returned by methods of a TPM after Close.
	ErrClosed = errors.New("vtpm: TPM is closed")
	// ErrFailureMode is returned by Seal once the TPM is in failure mode
	// (see [TPM.Failure]): its state may be half-way through a command and
	// is not sealed; the last sealed state stays the good one.
	ErrFailureMode = errors.New("vtpm: TPM is in failure mode after an internal error")
)

// recoverPanics makes Send turn a panic of the engine into failure mode.
// This package's tests turn it off (TestMain), so that fuzzing and tests
// see every panic with its stack.
var recoverPanics = true

// TPM is a TPM 2.0 implemented in Go. It implements go-tpm's
// [transport.TPM], so go-tpm and go-tpm-tools clients use it unchanged.
//
// A TPM is safe for concurrent use: commands are executed one at a time,
// as on a real TPM. TPMs share no state with each other.
type TPM struct {
	mu      sync.Mutex
	closed  bool
	failure error // why the TPM is in failure mode, or nil
	now     func() time.Time

	s *state // everything that Seal writes

	// Volatile state: lost at power-off, not sealed.
	started   bool
	clockBase time.Time // wall time when s.Clock was last synchronised
	sessions  map[uint32]*session
	call      call // the command in flight
	rspBuf    []byte
}

var _ transport.TPM = (*TPM)(nil)

// New manufactures a TPM: fresh hierarchy seeds from crypto/rand, empty
// authorizations, all PCR banks allocated and, if cfg.EKCA is set,
// endorsement key certificates in NV.
func New(cfg Config) (*TPM, error) {
	s := newState(cfg.VMID)
	t := newTPM(s, cfg.Now)
	if cfg.EKCA != nil {
		if err := t.provisionEKCerts(cfg.EKCA, cfg.Now); err != nil {
			t.Close()
			return nil, err
		}
	}
	if !cfg.DeferStartup {
		t.mu.Lock()
		rc := t.startup(suClear)
		t.mu.Unlock()
		if rc != rcSuccess {
			t.Close()
			return nil, &ResponseError{Code: rc}
		}
	}
	return t, nil
}

func newTPM(s *state, now func() time.Time) *TPM {
	if now == nil {
		now = time.Now
	}
	t := &TPM{now: now, s: s}
	t.clockBase = now()
	return t
}

// Send executes one TPM command and returns its response. It implements
// [transport.TPM].
//
// Send never returns a Go error for a malformed command: TPM errors are
// returned in the response bytes, as a real TPM does. The returned error is
// not nil only after Close. A response never exceeds 4096 bytes. Send does
// not keep cmd: the caller may reuse it at once.
//
// No input should make the engine panic, and fuzzing looks for any that
// does. Should one still be found, it costs one VM its TPM, not the
// process and the other VMs' TPMs: Send recovers, and the TPM enters
// failure mode, as a hardware TPM does after an internal error. It answers
// every later command with TPM_RC_FAILURE, [TPM.Seal] refuses with
// ErrFailureMode, and [TPM.Failure] says why. Only the last sealed state
// can bring the VM's TPM back ([Open]).
func (t *TPM) Send(cmd []byte) (rsp []byte, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if t.failure != nil {
		return errorResponse(stNoSessions, rcFailure), nil
	}
	if recoverPanics {
		defer func() {
			if p := recover(); p != nil {
				var cc uint32
				if len(cmd) >= 10 {
					cc = binary.BigEndian.Uint32(cmd[6:])
				}
				t.failure = fmt.Errorf("vtpm: internal error in command %#x: %v", cc, p)
				rsp, err = errorResponse(stNoSessions, rcFailure), nil
			}
		}()
	}
	// The engine keeps slices of the command (an object's authPolicy, an
	// NV index's data): it gets its own copy, so that a caller reusing its
	// buffer for the next command cannot rewrite what the TPM stored.
	return t.execute(bytes.Clone(cmd)), nil
}

// Failure returns why the TPM is in failure mode (an internal error of
// the engine while it ran a command: a bug, reported with the command
// code and the panic's message), or nil if it is not.
func (t *TPM) Failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failure
}

// PowerCycle simulates the loss of power and _TPM_Init: transient objects
// and sessions are lost, and the TPM waits for TPM2_Startup.
func (t *TPM) PowerCycle() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.syncClock()
	t.powerOff()
	return nil
}

func (t *TPM) powerOff() {
	t.started = false
	for h, o := range t.s.Transient {
		o.clear()
		delete(t.s.Transient, h)
	}
	t.sessions = nil
}

// Close zeroes the TPM's secrets (best effort: the Go runtime may have
// copied them) and makes every later call fail with [ErrClosed]. Close is
// idempotent.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.s.clear()
	t.sessions = nil
	return nil
}

// ResponseError is a TPM response code returned by this package's Go API
// (for example by New when the startup fails). Commands sent through Send
// report their codes in the response bytes instead.
type ResponseError struct {
	Code uint32
}

func (e *ResponseError) Error() string {
	return "vtpm: TPM response code " + hex32(e.Code)
}

func hex32(v uint32) string {
	const digits = "0123456789abcdef"
	b := []byte("0x00000000")
	for i := 9; i >= 2; i-- {
		b[i] = digits[v&0xF]
		v >>= 4
	}
	return string(b)
}

// random fills b from crypto/rand, which cannot fail since Go 1.24.
func random(b []byte) { rand.Read(b) }

// syncClock folds the elapsed wall time into the TPM clock (milliseconds).
func (t *TPM) syncClock() {
	now := t.now()
	d := now.Sub(t.clockBase)
	if d > 0 {
		ms := uint64(d / time.Millisecond)
		t.s.Clock += ms
		t.clockBase = t.clockBase.Add(time.Duration(ms) * time.Millisecond)
	} else {
		t.clockBase = now
	}
}
