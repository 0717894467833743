package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"time"
)

// The mssim interface commands, from the reference implementation's
// TpmTcpProtocol.h (TCG TPM 2.0 Library, Part 4, annex D.3). Every command
// is a big-endian UINT32; most are acknowledged with a UINT32 0.
const (
	mssimPowerOn              = 1
	mssimPowerOff             = 2
	mssimPhysPresOn           = 3
	mssimPhysPresOff          = 4
	mssimHashStart            = 5
	mssimHashData             = 6 // {UINT32 size, BYTE[size]}
	mssimHashEnd              = 7
	mssimSendCommand          = 8 // {BYTE locality, UINT32 size, BYTE[size]} -> {UINT32 size, BYTE[size]}
	mssimCancelOn             = 9
	mssimCancelOff            = 10
	mssimNVOn                 = 11
	mssimNVOff                = 12
	mssimKeyCacheOn           = 13
	mssimKeyCacheOff          = 14
	mssimRemoteHandshake      = 15 // {UINT32 clientVersion} -> {UINT32 serverVersion, UINT32 flags}
	mssimSetAlternativeResult = 16 // {UINT32}
	mssimReset                = 17
	mssimRestart              = 18
	mssimSessionEnd           = 20
	mssimStop                 = 21
	mssimGetCmdRspSizes       = 25
	mssimTestFailureMode      = 30
)

// mssimServerVersion and the endpoint flags (tpmPlatformAvailable |
// tpmInRawMode | tpmSupportsPP) answer TPM_REMOTE_HANDSHAKE as the
// reference simulator does.
const (
	mssimServerVersion = 1
	mssimEndpointFlags = 0x01 | 0x04 | 0x08
)

// ServeMSSIM serves the Microsoft simulator protocol: TPM commands on
// tpmLn and platform signals (power, NV, cancel) on platformLn, by
// convention the TPM port plus one. Connections are served concurrently,
// at most Config.MaxConns on each listener. Unless Config.NoResourceManager
// is set, the transient objects and sessions a TPM-port connection created
// are flushed when it closes.
//
// ServeMSSIM closes both listeners and every connection before it returns:
// ctx.Err() when ctx is done, ErrStopped after TPM_STOP if
// Config.HonorStop is set, ErrClosed after [Instance.Close], or the error
// of a listener.
//
// The locality byte of TPM_SEND_COMMAND is read and, as the engine has no
// locality input yet, every command executes at locality 0.
func (in *Instance) ServeMSSIM(ctx context.Context, tpmLn, platformLn net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() {
		errs <- in.serveListener(ctx, tpmLn, func(ctx context.Context, c net.Conn) error {
			var rm *tracker
			if !in.cfg.NoResourceManager {
				rm = newTracker()
				defer in.flush(ctx, rm)
			}
			return in.mssimTPM(ctx, c, rm)
		})
	}()
	go func() {
		errs <- in.serveListener(ctx, platformLn, func(ctx context.Context, c net.Conn) error {
			return in.mssimPlatform(ctx, c)
		})
	}()
	err := <-errs
	cancel()
	err2 := <-errs
	if errors.Is(err, context.Canceled) && err2 != nil && !errors.Is(err2, context.Canceled) {
		err = err2
	}
	return err
}

// bufConn reads through a buffer and keeps the deadlines of its conn.
type bufConn struct {
	r *bufio.Reader
	c conn
}

func newBufConn(c conn) *bufConn { return &bufConn{r: bufio.NewReaderSize(c, 2*MaxCommandSize), c: c} }

func (b *bufConn) Read(p []byte) (int, error)         { return b.r.Read(p) }
func (b *bufConn) Write(p []byte) (int, error)        { return b.c.Write(p) }
func (b *bufConn) SetReadDeadline(t time.Time) error  { return b.c.SetReadDeadline(t) }
func (b *bufConn) SetWriteDeadline(t time.Time) error { return b.c.SetWriteDeadline(t) }

// mssimTPM serves one connection to the TPM port (TpmServer in the
// reference implementation). It returns nil when the client ends the
// session or disconnects.
func (in *Instance) mssimTPM(ctx context.Context, raw conn, rm *tracker) error {
	c := newBufConn(raw)
	var hdr [4]byte
	cmd := make([]byte, MaxCommandSize)
	out := make([]byte, 0, 8+MaxCommandSize+4)
	for {
		if err := in.readStart(c, hdr[:], in.cfg.idleTimeout()); err != nil {
			return err
		}
		out = out[:0]
		switch code := binary.BigEndian.Uint32(hdr[:]); code {
		case mssimSendCommand:
			var lh [5]byte
			if err := in.readRest(c, lh[:]); err != nil {
				return err
			}
			n := binary.BigEndian.Uint32(lh[1:])
			if n > MaxCommandSize {
				// The reference simulator drops a client that sends
				// more than its buffer; so do we, before reading it.
				return errProtocol
			}
			if err := in.readRest(c, cmd[:n]); err != nil {
				return err
			}
			rsp := in.execute(ctx, cmd[:n], rm, MaxCommandSize)
			out = binary.BigEndian.AppendUint32(out, uint32(len(rsp)))
			out = append(out, rsp...)
		case mssimHashStart, mssimHashEnd:
			// The engine has no _TPM_Hash_* (D-RTM) interface yet.
			return in.mssimRefuse(c)
		case mssimHashData:
			if _, err := in.readVar(c, cmd); err != nil {
				return err
			}
			return in.mssimRefuse(c)
		case mssimRemoteHandshake:
			var v [4]byte
			if err := in.readRest(c, v[:]); err != nil {
				return err
			}
			if binary.BigEndian.Uint32(v[:]) == 0 {
				return errProtocol
			}
			out = binary.BigEndian.AppendUint32(out, mssimServerVersion)
			out = binary.BigEndian.AppendUint32(out, mssimEndpointFlags)
		case mssimSetAlternativeResult:
			var v [4]byte
			if err := in.readRest(c, v[:]); err != nil {
				return err
			}
		case mssimSessionEnd:
			return nil
		case mssimStop:
			return in.mssimStop()
		default:
			in.log.Info("server: unknown mssim TPM-port command", "code", code)
			return errProtocol
		}
		out = binary.BigEndian.AppendUint32(out, 0)
		if err := in.writeFrame(c, out); err != nil {
			return err
		}
	}
}

func (in *Instance) mssimStop() error {
	if in.cfg.HonorStop {
		return ErrStopped
	}
	return nil
}

// mssimRefuse answers a command this server does not implement with a
// non-zero acknowledgement and ends the connection, as the reference
// simulator answers an unknown platform command.
func (in *Instance) mssimRefuse(c conn) error {
	var one [4]byte
	binary.BigEndian.PutUint32(one[:], 1)
	in.writeFrame(c, one[:])
	return errProtocol
}

// readVar reads a UINT32-prefixed byte array into buf, refusing one larger
// than buf.
func (in *Instance) readVar(c conn, buf []byte) ([]byte, error) {
	var l [4]byte
	if err := in.readRest(c, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n > uint32(len(buf)) {
		return nil, errProtocol
	}
	if err := in.readRest(c, buf[:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// mssimPlatform serves one connection to the platform port
// (PlatformServer in the reference implementation).
func (in *Instance) mssimPlatform(ctx context.Context, raw conn) error {
	c := newBufConn(raw)
	var hdr [4]byte
	for {
		if err := in.readStart(c, hdr[:], in.cfg.idleTimeout()); err != nil {
			return err
		}
		var out []byte
		switch code := binary.BigEndian.Uint32(hdr[:]); code {
		case mssimPowerOn:
			in.mu.Lock()
			err := in.powerOnLocked(ctx, false)
			in.mu.Unlock()
			if err != nil {
				return in.mssimRefuse(c)
			}
		case mssimReset, mssimRestart:
			// The reference simulator treats both as a power cycle of a
			// TPM that is on (_rpc__Signal_PowerOn(TRUE)).
			in.mu.Lock()
			var err error
			if in.powered {
				err = in.powerOnLocked(ctx, true)
			}
			in.mu.Unlock()
			if err != nil {
				return in.mssimRefuse(c)
			}
		case mssimPowerOff:
			in.mu.Lock()
			in.powerOffLocked()
			in.mu.Unlock()
		case mssimPhysPresOn, mssimPhysPresOff, mssimNVOn, mssimNVOff,
			mssimCancelOn, mssimCancelOff, mssimKeyCacheOn, mssimKeyCacheOff:
			// Physical presence is not used by any command the engine
			// implements, NV is always available, commands are too short
			// to cancel, and there is no key cache to turn off.
		case mssimGetCmdRspSizes:
			// Not tracked: report zeros, as the reference simulator
			// does before its first command.
			out = binary.BigEndian.AppendUint32(out, 16)
			out = append(out, make([]byte, 16)...)
		case mssimSessionEnd:
			return nil
		case mssimStop:
			return in.mssimStop()
		default:
			// Includes TPM_TEST_FAILURE_MODE: the engine has no failure
			// mode to force.
			in.log.Info("server: unknown mssim platform command", "code", code)
			return in.mssimRefuse(c)
		}
		out = binary.BigEndian.AppendUint32(out, 0)
		if err := in.writeFrame(c, out); err != nil {
			return err
		}
	}
}
