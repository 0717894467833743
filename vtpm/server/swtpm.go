package server

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/shieldvm/shieldvm/vtpm"
)

// Control-channel commands (CMD_*, swtpm's include/swtpm/tpm_ioctl.h, as
// carried by QEMU's backends/tpm/tpm_ioctl.h). Every message is big-endian:
// a UINT32 command followed by the request part of the command's ptm_*
// structure; the reply is the response part.
const (
	cmdGetCapability       = 0x01 // -> UINT64 caps
	cmdInit                = 0x02 // {UINT32 flags} -> {res}
	cmdShutdown            = 0x03 // -> {res}
	cmdGetTPMEstablished   = 0x04 // -> {res, UINT8 bit, 3 bytes padding}
	cmdSetLocality         = 0x05 // {UINT8 loc, 3 bytes padding} -> {res}
	cmdHashStart           = 0x06
	cmdHashData            = 0x07 // {UINT32 length, BYTE[length]} -> {res}
	cmdHashEnd             = 0x08
	cmdCancelTPMCmd        = 0x09 // -> {res}
	cmdStoreVolatile       = 0x0a // -> {res}
	cmdResetTPMEstablished = 0x0b // {UINT8 loc, 3 bytes padding} -> {res}
	cmdGetStateBlob        = 0x0c // {UINT32 flags, type, offset} -> {res, flags, totlength, length, BYTE[length]}
	cmdSetStateBlob        = 0x0d // {UINT32 flags, type, length, BYTE[length]} -> {res}
	cmdStop                = 0x0e // -> {res}
	cmdGetConfig           = 0x0f // -> {res, UINT32 flags}
	cmdSetDataFD           = 0x10 // SCM_RIGHTS fd -> {res}
	cmdSetBufferSize       = 0x11 // {UINT32 size} -> {res, size, min, max}
	cmdGetInfo             = 0x12 // {UINT64 flags, UINT32 offset, pad}
	cmdLockStorage         = 0x13 // {UINT32 retries}
)

// Capability bits (PTM_CAP_*).
const (
	capInit                = 1 << 0
	capShutdown            = 1 << 1
	capGetTPMEstablished   = 1 << 2
	capSetLocality         = 1 << 3
	capCancelTPMCmd        = 1 << 5
	capStoreVolatile       = 1 << 6
	capResetTPMEstablished = 1 << 7
	capGetStateBlob        = 1 << 8
	capSetStateBlob        = 1 << 9
	capStop                = 1 << 10
	capGetConfig           = 1 << 11
	capSetDataFD           = 1 << 12
	capSetBufferSize       = 1 << 13
)

// Control-channel results: swtpm reports TPM 1.2 return codes
// (TPM_BASE + n) on the control channel for both TPM versions.
const (
	ptmSuccess      = 0
	ptmBadParameter = 3
	ptmFail         = 9
	ptmBadOrdinal   = 10
	ptmIOError      = 31
	ptmDecryptError = 33
	ptmBadLocality  = 61
)

// State blob types and flags (PTM_BLOB_TYPE_*, PTM_STATE_FLAG_*).
const (
	blobPermanent      = 1
	blobVolatile       = 2
	blobSaveState      = 3
	stateFlagEncrypted = 2
)

// GET_CONFIG flags (PTM_CONFIG_FLAG_*).
const (
	configFileKey      = 1
	configMigrationKey = 2
)

// Buffer sizes answered to CMD_SET_BUFFERSIZE. The engine's responses are
// never larger than MaxCommandSize; a response larger than a smaller
// negotiated size is replaced by TPM_RC_MEMORY.
const minBufferSize = 1024

// ServeSwtpm serves the swtpm control channel on ctrlLn (a unix socket,
// QEMU's -chardev socket,path=... for -tpmdev emulator) and TPM commands
// on dataLn (swtpm's --server); either may be nil. Without a control
// channel, call [Instance.PowerOn] first. QEMU passes its data
// channel over the control channel with CMD_SET_DATAFD and SCM_RIGHTS;
// that channel lives as long as the control connection that passed it.
// Control connections are served one at a time, as swtpm does.
//
// ServeSwtpm closes the listeners and every connection before it returns:
// ErrStopped after CMD_SHUTDOWN, nil when the control client disconnects
// if Config.Terminate is set, ctx.Err() when ctx is done, ErrClosed after
// [Instance.Close], or the error of a listener.
func (in *Instance) ServeSwtpm(ctx context.Context, ctrlLn, dataLn net.Listener) error {
	if ctrlLn == nil && dataLn == nil {
		return errors.New("server: ServeSwtpm needs a listener")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	n := 0
	if ctrlLn != nil {
		n++
		go func() {
			errs <- in.serveListenerN(ctx, ctrlLn, 1, func(ctx context.Context, c net.Conn) error {
				err := in.swtpmCtrl(ctx, c)
				if in.cfg.Terminate && (err == nil || !errors.Is(err, ErrStopped)) {
					return errTerminate
				}
				return err
			})
		}()
	}
	if dataLn != nil {
		n++
		go func() {
			errs <- in.serveListener(ctx, dataLn, func(ctx context.Context, c net.Conn) error {
				return in.swtpmData(ctx, c)
			})
		}()
	}
	err := <-errs
	cancel()
	for i := 1; i < n; i++ {
		if err2 := <-errs; errors.Is(err, context.Canceled) && err2 != nil && !errors.Is(err2, context.Canceled) {
			err = err2
		}
	}
	if errors.Is(err, errTerminate) {
		return nil
	}
	return err
}

// errTerminate ends ServeSwtpm when the control client disconnects and
// Config.Terminate is set.
var errTerminate = errors.New("server: control client disconnected")

// swtpmData serves a data channel: raw TPM commands, each framed by the
// size in its header, answered in order.
func (in *Instance) swtpmData(ctx context.Context, raw conn) error {
	c := newBufConn(raw)
	buf := make([]byte, MaxCommandSize)
	for {
		if err := in.readStart(c, buf[:10], 0); err != nil {
			return err
		}
		size := binary.BigEndian.Uint32(buf[2:])
		in.mu.Lock()
		limit := in.bufferSize
		in.mu.Unlock()
		var rsp []byte
		switch {
		case size < 10:
			rsp = errorResponse(buf[:10], rcCommandSize)
		case size > uint32(limit):
			// A client that honours the buffer size (QEMU's CRB sends
			// min(size, buffer size) bytes) has sent at most limit
			// bytes: discard what arrives, and refuse the command.
			err := in.readRest(c, buf[10:limit])
			var ne net.Error
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				return err
			}
			rsp = errorResponse(buf[:10], rcCommandSize)
		default:
			if err := in.readRest(c, buf[10:size]); err != nil {
				return err
			}
			rsp = in.execute(ctx, buf[:size], nil, limit)
		}
		if err := in.writeFrame(c, rsp); err != nil {
			return err
		}
	}
}

// fdConn reads a unix socket with recvmsg and keeps the last file
// descriptor passed with SCM_RIGHTS (at most one: an older one is closed,
// and so are extra descriptors of one message).
type fdConn struct {
	msgConn
	mu  sync.Mutex
	fd  int
	oob []byte
}

// msgConn is a connection that can receive file descriptors, such as a
// *net.UnixConn.
type msgConn interface {
	net.Conn
	ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error)
}

func newFDConn(c msgConn) *fdConn {
	return &fdConn{msgConn: c, fd: -1, oob: make([]byte, syscall.CmsgSpace(4*4))}
}

func (f *fdConn) Read(p []byte) (int, error) {
	n, oobn, _, _, err := f.ReadMsgUnix(p, f.oob)
	if n < 0 {
		n = 0 // ReadMsgUnix may report -1 with an error
	}
	if oobn > 0 {
		f.keepFDs(f.oob[:oobn])
	}
	return n, err
}

func (f *fdConn) keepFDs(oob []byte) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for i := range msgs {
		fds, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			f.mu.Lock()
			if f.fd >= 0 {
				syscall.Close(f.fd)
			}
			f.fd = fd
			f.mu.Unlock()
		}
	}
}

// take returns the descriptor received last as a net.Conn.
func (f *fdConn) take() (net.Conn, error) {
	f.mu.Lock()
	fd := f.fd
	f.fd = -1
	f.mu.Unlock()
	if fd < 0 {
		return nil, errors.New("server: CMD_SET_DATAFD without a file descriptor")
	}
	file := os.NewFile(uintptr(fd), "swtpm-data")
	defer file.Close()
	return net.FileConn(file)
}

func (f *fdConn) Close() error {
	f.mu.Lock()
	if f.fd >= 0 {
		syscall.Close(f.fd)
		f.fd = -1
	}
	f.mu.Unlock()
	return f.msgConn.Close()
}

// ctrlSession is the state of one control connection.
type ctrlSession struct {
	in   *Instance
	ctx  context.Context
	c    conn
	take func() (net.Conn, error) // the fd passed with SCM_RIGHTS

	dataMu   sync.Mutex
	data     net.Conn
	dataDone chan struct{}
}

// swtpmCtrl serves one control connection.
func (in *Instance) swtpmCtrl(ctx context.Context, nc net.Conn) error {
	var raw conn = nc
	var take func() (net.Conn, error)
	if uc, ok := nc.(msgConn); ok {
		fc := newFDConn(uc)
		defer fc.Close()
		raw, take = fc, fc.take
	}
	return in.serveCtrl(ctx, raw, take)
}

// serveCtrl serves a control connection whose descriptors take returns,
// or, if take is nil, one that cannot pass descriptors.
func (in *Instance) serveCtrl(ctx context.Context, raw conn, take func() (net.Conn, error)) error {
	s := &ctrlSession{in: in, ctx: ctx, c: newBufConn(raw), take: take}
	defer s.endData()
	return s.serve()
}

func (s *ctrlSession) serve() error {
	var hdr [4]byte
	for {
		if err := s.in.readStart(s.c, hdr[:], 0); err != nil {
			return err
		}
		rsp, err := s.command(binary.BigEndian.Uint32(hdr[:]))
		if rsp != nil {
			if werr := s.in.writeFrame(s.c, rsp); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

func result(res uint32) []byte { return binary.BigEndian.AppendUint32(nil, res) }

// command reads the body of one control command and executes it. It
// returns the reply and an error that ends the connection (after the reply
// is sent).
func (s *ctrlSession) command(code uint32) ([]byte, error) {
	in := s.in
	var body [16]byte
	read := func(n int) error { return in.readRest(s.c, body[:n]) }
	switch code {
	case cmdGetCapability:
		caps := uint64(capInit | capShutdown | capGetTPMEstablished | capSetLocality |
			capCancelTPMCmd | capStoreVolatile | capResetTPMEstablished | capStop |
			capGetConfig | capSetBufferSize)
		if s.take != nil {
			caps |= capSetDataFD
		}
		if in.cfg.MigrationKey != nil {
			caps |= capGetStateBlob | capSetStateBlob
		}
		return binary.BigEndian.AppendUint64(nil, caps), nil

	case cmdInit:
		if err := read(4); err != nil {
			return nil, err
		}
		// PTM_INIT_FLAG_DELETE_VOLATILE needs nothing: no volatile state
		// is stored apart from the sealed state.
		in.mu.Lock()
		in.blobs = nil
		err := in.powerOnLocked(s.ctx, true)
		in.mu.Unlock()
		if err != nil {
			return result(ptmFail), nil
		}
		return result(ptmSuccess), nil

	case cmdStop, cmdShutdown:
		in.mu.Lock()
		in.powerOffLocked()
		in.blobs = nil
		in.mu.Unlock()
		if code == cmdShutdown {
			return result(ptmSuccess), ErrStopped
		}
		return result(ptmSuccess), nil

	case cmdGetTPMEstablished:
		in.mu.Lock()
		on, est := in.powered, in.established
		in.mu.Unlock()
		if !on {
			return result(ptmBadOrdinal), nil
		}
		out := make([]byte, 8)
		if est {
			out[4] = 1
		}
		return out, nil

	case cmdSetLocality, cmdResetTPMEstablished:
		if err := read(4); err != nil {
			return nil, err
		}
		loc := body[0]
		in.mu.Lock()
		defer in.mu.Unlock()
		if code == cmdSetLocality {
			if loc > 4 {
				return result(ptmBadLocality), nil
			}
			in.locality = loc
			return result(ptmSuccess), nil
		}
		if !in.powered {
			return result(ptmBadOrdinal), nil
		}
		// Only localities 3 and 4 may reset the flag (PC Client PTP,
		// TPM_ACCESS.resetEstablishment).
		if loc != 3 && loc != 4 {
			return result(ptmBadLocality), nil
		}
		in.established = false
		return result(ptmSuccess), nil

	case cmdCancelTPMCmd:
		// Commands run to completion in microseconds; there is nothing
		// to cancel, as in swtpm.
		return s.ifPowered(ptmSuccess), nil

	case cmdStoreVolatile:
		in.mu.Lock()
		defer in.mu.Unlock()
		if !in.powered {
			return result(ptmBadOrdinal), nil
		}
		in.dirty = true
		if err := in.persistLocked(s.ctx); err != nil {
			return result(ptmFail), nil
		}
		return result(ptmSuccess), nil

	case cmdGetStateBlob:
		if err := read(12); err != nil {
			return nil, err
		}
		return s.getStateBlob(binary.BigEndian.Uint32(body[4:]), binary.BigEndian.Uint32(body[8:])), nil

	case cmdSetStateBlob:
		if err := read(12); err != nil {
			return nil, err
		}
		typ := binary.BigEndian.Uint32(body[4:])
		n := binary.BigEndian.Uint32(body[8:])
		if n > MaxStateBlobSize {
			// Too large to read, so too large to skip: refuse and drop
			// the connection.
			return result(ptmBadParameter), errProtocol
		}
		blob := make([]byte, n)
		if err := in.readRest(s.c, blob); err != nil {
			return nil, err
		}
		return result(s.setStateBlob(typ, blob)), nil

	case cmdGetConfig:
		var flags uint32
		if in.cfg.Persist != nil {
			flags |= configFileKey
		}
		if in.cfg.MigrationKey != nil {
			flags |= configMigrationKey
		}
		return binary.BigEndian.AppendUint32(result(ptmSuccess), flags), nil

	case cmdSetDataFD:
		if s.take == nil {
			return result(ptmBadOrdinal), nil
		}
		dc, err := s.take()
		if err != nil {
			return result(ptmBadParameter), nil
		}
		return result(s.startData(dc)), nil

	case cmdSetBufferSize:
		if err := read(4); err != nil {
			return nil, err
		}
		want := binary.BigEndian.Uint32(body[:])
		in.mu.Lock()
		defer in.mu.Unlock()
		if want > 0 && in.powered {
			return result(ptmBadOrdinal), nil
		}
		if want > 0 {
			in.bufferSize = int(min(max(want, minBufferSize), MaxCommandSize))
		}
		out := result(ptmSuccess)
		out = binary.BigEndian.AppendUint32(out, uint32(in.bufferSize))
		out = binary.BigEndian.AppendUint32(out, minBufferSize)
		out = binary.BigEndian.AppendUint32(out, MaxCommandSize)
		return out, nil

	case cmdHashData:
		// Not supported (the engine has no _TPM_Hash_* interface yet),
		// but its body must be consumed to stay in step.
		if err := read(4); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(body[:])
		if n > MaxStateBlobSize {
			return result(ptmBadParameter), errProtocol
		}
		if _, err := io.CopyN(io.Discard, readerFunc(func(p []byte) (int, error) {
			s.c.SetReadDeadline(time.Now().Add(in.cfg.frameTimeout()))
			return s.c.Read(p)
		}), int64(n)); err != nil {
			return nil, err
		}
		return result(ptmBadOrdinal), nil

	case cmdGetInfo:
		if err := read(16); err != nil {
			return nil, err
		}
		return result(ptmBadOrdinal), nil

	case cmdLockStorage:
		if err := read(4); err != nil {
			return nil, err
		}
		return result(ptmBadOrdinal), nil

	default:
		// CMD_HASH_START, CMD_HASH_END and unknown commands have no
		// body that we know of.
		return result(ptmBadOrdinal), nil
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func (s *ctrlSession) ifPowered(res uint32) []byte {
	s.in.mu.Lock()
	defer s.in.mu.Unlock()
	if !s.in.powered {
		return result(ptmBadOrdinal)
	}
	return result(res)
}

// getStateBlob answers CMD_GET_STATEBLOB. The permanent blob is the whole
// state, sealed for migration; the volatile and save-state blobs are empty
// (they are inside the permanent one). A blob is sealed at offset 0 and
// kept for reads at later offsets.
func (s *ctrlSession) getStateBlob(typ, offset uint32) []byte {
	in := s.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.powered || in.cfg.MigrationKey == nil {
		return result(ptmBadOrdinal)
	}
	hdr := func(res uint32, data []byte) []byte {
		out := result(res)
		out = binary.BigEndian.AppendUint32(out, stateFlagEncrypted)
		out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
		out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
		return append(out, data...)
	}
	var blob []byte
	switch typ {
	case blobPermanent:
		if in.blobs == nil {
			in.blobs = map[uint32][]byte{}
		}
		blob = in.blobs[typ]
		if offset == 0 || blob == nil {
			b, err := in.exportStateLocked()
			if err != nil {
				in.log.Error("server: sealing the migration blob failed", "err", err)
				return hdr(ptmFail, nil)
			}
			in.blobs[typ] = b
			blob = b
		}
	case blobVolatile, blobSaveState:
	default:
		return hdr(ptmBadParameter, nil)
	}
	if uint64(offset) >= uint64(len(blob)) {
		return hdr(ptmSuccess, nil)
	}
	return hdr(ptmSuccess, blob[offset:])
}

// setStateBlob answers CMD_SET_STATEBLOB: the TPM must be stopped; a
// permanent blob is opened (and checked) now and started by CMD_INIT.
func (s *ctrlSession) setStateBlob(typ uint32, blob []byte) uint32 {
	in := s.in
	in.mu.Lock()
	powered, closed := in.powered, in.closed
	in.mu.Unlock()
	if powered || closed || in.cfg.MigrationKey == nil {
		return ptmBadOrdinal
	}
	switch typ {
	case blobPermanent:
	case blobVolatile, blobSaveState:
		if len(blob) == 0 {
			return ptmSuccess
		}
		return ptmBadParameter
	default:
		return ptmBadParameter
	}
	t, err := in.importState(blob)
	if err != nil {
		if errors.Is(err, vtpm.ErrWrongVM) {
			return ptmBadParameter
		}
		return ptmDecryptError
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.powered || in.closed {
		t.Close()
		return ptmBadOrdinal
	}
	if in.pending != nil {
		in.pending.Close()
	}
	in.pending = t
	return ptmSuccess
}

// startData starts serving the data channel QEMU passed.
func (s *ctrlSession) startData(dc net.Conn) uint32 {
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	if s.data != nil || !s.in.track(dc) {
		dc.Close()
		return ptmIOError
	}
	s.data = dc
	s.dataDone = make(chan struct{})
	var served conn = dc
	if s.in.wrapData != nil {
		served = s.in.wrapData(dc)
	}
	go func() {
		defer close(s.dataDone)
		defer s.in.untrack(dc)
		defer dc.Close()
		stop := context.AfterFunc(s.ctx, func() { dc.Close() })
		defer stop()
		if err := s.in.swtpmData(s.ctx, served); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			s.in.log.Info("server: data channel ended", "err", err)
		}
	}()
	return ptmSuccess
}

func (s *ctrlSession) endData() {
	s.dataMu.Lock()
	dc, done := s.data, s.dataDone
	s.dataMu.Unlock()
	if dc != nil {
		dc.Close()
		<-done
	}
}
