package server

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/shieldvm/shieldvm/vtpm"
)

// MaxCommandSize is the largest TPM command (and response) the transports
// carry: the engine's TPM_PT_MAX_COMMAND_SIZE. A larger command is refused
// before it is read into memory.
const MaxCommandSize = 4096

// MaxStateBlobSize bounds a migration blob sent with CMD_SET_STATEBLOB.
const MaxStateBlobSize = vtpm.MaxSealedSize

// Errors returned by the Serve methods.
var (
	// ErrClosed is returned by the Serve methods after [Instance.Close].
	ErrClosed = errors.New("server: instance is closed")
	// ErrStopped is returned by ServeMSSIM when a client sent TPM_STOP and
	// Config.HonorStop is set, and by ServeSwtpm when the control channel
	// sent CMD_SHUTDOWN.
	ErrStopped = errors.New("server: stopped by the client")
)

// Config configures an [Instance]. The zero Config is valid: no migration,
// no persistence, the resource manager on for mssim connections, and the
// default bounds. A Config must not be modified after it is passed to
// [New].
type Config struct {
	// VMID is the VM ID that migration blobs must be sealed for; it must
	// equal the VMID of the served TPM ([vtpm.Config.VMID]). A blob sealed
	// for another VM is refused.
	VMID string

	// MigrationKey, if not nil, is the key that migration blobs
	// (CMD_GET_STATEBLOB / CMD_SET_STATEBLOB) are sealed under, typically
	// keyprotector's TransportKey.Derive(keyprotector.LabelMigration). The
	// blobs are sealed under a subkey derived from it, so that a state
	// sealed under the same key for storage is not a valid migration blob.
	// If nil, the state-blob commands are not advertised and fail, and
	// QEMU blocks the migration.
	MigrationKey *[32]byte

	// Persist, if not nil, is called after every command that changed state
	// that must survive a restart (NV, persistent objects, hierarchy
	// authorizations and seeds, Startup and Shutdown, dictionary-attack
	// counters), after a migration blob was installed, and on
	// CMD_STORE_VOLATILE. It runs with no other command in flight, before
	// the response is sent; it should seal t and write the result
	// atomically. If it fails, the client receives TPM_RC_NV_UNAVAILABLE
	// and Persist is called again after the next command.
	Persist func(ctx context.Context, t *vtpm.TPM) error

	// NoResourceManager, if true, leaves the transient objects and sessions
	// of an mssim connection loaded when it closes, as the reference
	// simulator does. If false (zero), they are flushed. The swtpm data
	// channel never flushes: it is the one connection of a VM.
	NoResourceManager bool

	// MaxConns bounds the connections open at once on each listener. If
	// zero, 16.
	MaxConns int

	// FrameTimeout bounds the time between the first and the last byte of
	// one frame (a command, a control message). If zero, 5 seconds.
	FrameTimeout time.Duration

	// IdleTimeout closes an mssim connection that sent nothing for this
	// long. If zero, 10 minutes. The swtpm channels have no idle limit:
	// QEMU keeps them open for the life of the VM.
	IdleTimeout time.Duration

	// WriteTimeout bounds the time to write one response. If zero, 5
	// seconds.
	WriteTimeout time.Duration

	// HonorStop, if true, makes ServeMSSIM return ErrStopped when a client
	// sends TPM_STOP, as the reference simulator exits. If false (zero),
	// TPM_STOP only closes that client's connection.
	HonorStop bool

	// Terminate, if true, makes ServeSwtpm return when the control-channel
	// client disconnects, as swtpm --terminate does.
	Terminate bool

	// Logger receives connection-level events. If nil, nothing is logged.
	Logger *slog.Logger
}

func (c *Config) maxConns() int {
	if c.MaxConns <= 0 {
		return 16
	}
	return c.MaxConns
}

func (c *Config) frameTimeout() time.Duration {
	if c.FrameTimeout <= 0 {
		return 5 * time.Second
	}
	return c.FrameTimeout
}

func (c *Config) idleTimeout() time.Duration {
	if c.IdleTimeout <= 0 {
		return 10 * time.Minute
	}
	return c.IdleTimeout
}

func (c *Config) writeTimeout() time.Duration {
	if c.WriteTimeout <= 0 {
		return 5 * time.Second
	}
	return c.WriteTimeout
}

// Instance is one served TPM and the platform around it. A new Instance is
// powered off, like a simulator that has just started: the mssim
// TPM_SIGNAL_POWER_ON or the swtpm CMD_INIT powers it on (which is
// _TPM_Init: the TPM then waits for TPM2_Startup).
//
// An Instance is safe for concurrent use; commands from all its
// connections are executed one at a time.
type Instance struct {
	cfg Config
	log *slog.Logger

	mu          sync.Mutex
	tpm         *vtpm.TPM
	powered     bool
	epoch       uint64 // incremented at each _TPM_Init; see tracker
	locality    uint8
	established bool
	bufferSize  int
	pending     *vtpm.TPM // installed by CMD_SET_STATEBLOB, started by CMD_INIT
	blobs       map[uint32][]byte
	dirty       bool
	closed      bool
	dataBusy    bool      // the swtpm data fd is in use
	failureLog  *vtpm.TPM // the TPM whose failure mode was logged

	// wrapData, if not nil, wraps each data channel passed with
	// CMD_SET_DATAFD (tests record the firmware's commands with it).
	wrapData func(net.Conn) net.Conn

	// trace, if not nil, sees every command executed and its response,
	// with in.mu held (interop tests name the command a client failed on).
	trace func(cmd, rsp []byte)

	// Connections being served, so that Close and a cancelled Serve can
	// end them.
	connMu sync.Mutex
	conns  map[io.Closer]struct{}
}

// New returns an Instance that serves t. The Instance takes ownership of
// t: [Instance.Close] closes it, and a migration may replace it.
func New(t *vtpm.TPM, cfg *Config) *Instance {
	in := &Instance{tpm: t, bufferSize: MaxCommandSize, conns: map[io.Closer]struct{}{}}
	if cfg != nil {
		in.cfg = *cfg
		if cfg.MigrationKey != nil {
			k := deriveMigrationKey(cfg.MigrationKey)
			in.cfg.MigrationKey = &k
		}
	}
	in.log = in.cfg.Logger
	if in.log == nil {
		in.log = slog.New(slog.DiscardHandler)
	}
	return in
}

// Seal seals the TPM being served (the one a migration may have installed)
// under key; see [vtpm.TPM.Seal]. It waits for the command in flight.
func (in *Instance) Seal(key *[32]byte) ([]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return nil, ErrClosed
	}
	return in.tpm.Seal(key)
}

// Close closes every connection, closes the TPM (zeroing its secrets) and
// makes the Serve methods return ErrClosed. Close is idempotent.
func (in *Instance) Close() error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	in.closed = true
	err := in.tpm.Close()
	if in.pending != nil {
		in.pending.Close()
		in.pending = nil
	}
	in.mu.Unlock()
	in.closeConns()
	return err
}

func (in *Instance) track(c io.Closer) bool {
	in.connMu.Lock()
	defer in.connMu.Unlock()
	in.mu.Lock()
	closed := in.closed
	in.mu.Unlock()
	if closed {
		return false
	}
	in.conns[c] = struct{}{}
	return true
}

func (in *Instance) untrack(c io.Closer) {
	in.connMu.Lock()
	delete(in.conns, c)
	in.connMu.Unlock()
}

func (in *Instance) closeConns() {
	in.connMu.Lock()
	defer in.connMu.Unlock()
	for c := range in.conns {
		c.Close()
	}
}

// TPM response codes the transports produce themselves (Part 2, 6.6).
const (
	rcSuccess       = 0x000
	rcBadTag        = 0x01E
	rcFailure       = 0x101
	rcCommandSize   = 0x142
	rcMemory        = 0x904
	rcNVUnavailable = 0x923
)

const (
	stRspCommand = 0x00C4
	stNoSessions = 0x8001
	stSessions   = 0x8002
)

// errorResponse is a 10-byte TPM response carrying rc. A command whose tag
// is not a TPM 2.0 tag is answered as a TPM 2.0 answers it: with
// TPM_ST_RSP_COMMAND and TPM_RC_BAD_TAG, which is how QEMU tells a TPM 2.0
// from a TPM 1.2.
func errorResponse(cmd []byte, rc uint32) []byte {
	tag := uint16(stNoSessions)
	if len(cmd) >= 2 {
		if t := binary.BigEndian.Uint16(cmd); t != stNoSessions && t != stSessions {
			tag, rc = stRspCommand, rcBadTag
		}
	}
	b := make([]byte, 10)
	binary.BigEndian.PutUint16(b, tag)
	binary.BigEndian.PutUint32(b[2:], 10)
	binary.BigEndian.PutUint32(b[6:], rc)
	return b
}

// execute runs one TPM command for a transport. rm, if not nil, records
// the handles the command created or flushed. maxRsp bounds the response
// (the buffer size the client negotiated).
func (in *Instance) execute(ctx context.Context, cmd []byte, rm *tracker, maxRsp int) []byte {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || !in.powered {
		return errorResponse(cmd, rcFailure)
	}
	// The transports read every command into one buffer per connection;
	// Send copies the command before the engine keeps any of it, so the
	// next command read into the buffer cannot rewrite what the TPM stored.
	rsp, err := in.tpm.Send(cmd)
	if err != nil || len(rsp) < 10 {
		return errorResponse(cmd, rcFailure)
	}
	if binary.BigEndian.Uint32(rsp[6:]) == rcFailure && in.failureLog != in.tpm {
		if ferr := in.tpm.Failure(); ferr != nil {
			// The engine hit an internal error: this TPM answers
			// TPM_RC_FAILURE from now on and is not persisted again.
			in.failureLog = in.tpm
			in.log.Error("server: the TPM is in failure mode; its last persisted state is kept", "err", ferr)
		}
	}
	if rm != nil {
		rm.observe(in.epoch, cmd, rsp)
	}
	if in.trace != nil {
		in.trace(cmd, rsp)
	}
	if mustPersist(cmd, rsp) {
		in.dirty = true
	}
	if in.dirty {
		if err := in.persistLocked(ctx); err != nil {
			return errorResponse(cmd, rcNVUnavailable)
		}
	}
	if len(rsp) > maxRsp {
		return errorResponse(cmd, rcMemory)
	}
	return rsp
}

// persistLocked calls Config.Persist if state changed. in.mu is held.
func (in *Instance) persistLocked(ctx context.Context) error {
	if in.cfg.Persist == nil {
		in.dirty = false
		return nil
	}
	if err := in.cfg.Persist(ctx, in.tpm); err != nil {
		in.log.Error("server: persisting the TPM state failed", "err", err)
		return err
	}
	in.dirty = false
	return nil
}

// powerOn is _TPM_Init after power was off. If force, the TPM is reset even
// if it was on (TPM_SIGNAL_RESET, CMD_INIT). A state installed by a
// migration is started as it was, without a reset. in.mu is held.
func (in *Instance) powerOnLocked(ctx context.Context, force bool) error {
	if in.closed {
		return ErrClosed
	}
	if in.pending != nil {
		old := in.tpm
		in.tpm = in.pending
		in.pending = nil
		old.Close()
		in.powered = true
		in.epoch++
		in.dirty = true
		return in.persistLocked(ctx)
	}
	if in.powered && !force {
		return nil
	}
	if err := in.tpm.PowerCycle(); err != nil {
		return err
	}
	in.powered = true
	in.epoch++
	return nil
}

// PowerOn powers the TPM on, as TPM_SIGNAL_POWER_ON does: if it was off,
// this is _TPM_Init and the TPM then waits for TPM2_Startup; if it was on,
// nothing changes. Transports power the TPM on themselves (the mssim
// platform port, the swtpm CMD_INIT); PowerOn is for a data channel served
// without them.
func (in *Instance) PowerOn(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.powerOnLocked(ctx, false)
}

func (in *Instance) powerOffLocked() {
	in.powered = false
	in.epoch++
}

// Command codes (TPM_CC, Part 2, 6.5.2) the transports look at.
const (
	ccCreatePrimary     = 0x131
	ccLoad              = 0x157
	ccContextLoad       = 0x161
	ccContextSave       = 0x162
	ccFlushContext      = 0x165
	ccLoadExternal      = 0x167
	ccStartAuthSession  = 0x176
	ccHashSequenceStart = 0x186
	ccCreateLoaded      = 0x191
	ccHMACStart         = 0x15B
	ccMACStart          = 0x107
)

// persistentCommands are the commands that may change state that must
// survive a restart: those with the TPMA_CC nv attribute in Part 3 that
// write NV or hierarchy state, plus Startup and Shutdown (the reset and
// restart counts, the saved state).
var persistentCommands = map[uint32]bool{
	0x11F: true, // NV_UndefineSpaceSpecial
	0x120: true, // EvictControl
	0x121: true, // HierarchyControl
	0x122: true, // NV_UndefineSpace
	0x124: true, // ChangeEPS
	0x125: true, // ChangePPS
	0x126: true, // Clear
	0x127: true, // ClearControl
	0x128: true, // ClockSet
	0x129: true, // HierarchyChangeAuth
	0x12A: true, // NV_DefineSpace
	0x12B: true, // PCR_Allocate
	0x12C: true, // PCR_SetAuthPolicy
	0x12E: true, // SetPrimaryPolicy
	0x130: true, // ClockRateAdjust
	0x132: true, // NV_GlobalWriteLock
	0x134: true, // NV_Increment
	0x135: true, // NV_SetBits
	0x136: true, // NV_Extend
	0x137: true, // NV_Write
	0x138: true, // NV_WriteLock
	0x139: true, // DictionaryAttackLockReset
	0x13A: true, // DictionaryAttackParameters
	0x13B: true, // NV_ChangeAuth
	0x140: true, // SetCommandCodeAuditStatus
	0x144: true, // Startup
	0x145: true, // Shutdown
}

// mustPersist reports whether a command and its response changed state
// that must be persisted: a persistent command that succeeded, or an
// authorization failure that counts towards dictionary-attack lockout
// (TPM_RC_AUTH_FAIL; TPM_RC_BAD_AUTH does not count).
func mustPersist(cmd, rsp []byte) bool {
	rc := binary.BigEndian.Uint32(rsp[6:])
	if rc&0x80 != 0 && rc&0x3F == 0x0E { // TPM_RC_AUTH_FAIL, with any handle/session/parameter number
		return true
	}
	if rc != rcSuccess || len(cmd) < 10 {
		return false
	}
	return persistentCommands[binary.BigEndian.Uint32(cmd[6:])]
}
