package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/tcp"
	"github.com/shieldvm/shieldvm/vtpm"
)

// TestMSSIMGoTPMTransport drives the server with go-tpm's own TCP
// transport, which tpm2.X{}.Execute users already have.
func TestMSSIMGoTPMTransport(t *testing.T) {
	s := serveMSSIM(t, New(newTPM(t, ""), nil))
	tpm, err := tcp.Open(tcp.Config{CommandAddress: s.tpmAddr, PlatformAddress: s.platAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	if err := tpm.PowerOn(); err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(tpm); err != nil {
		t.Fatal(err)
	}
	r, err := (tpm2.GetRandom{BytesRequested: 16}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.RandomBytes.Buffer) != 16 {
		t.Fatalf("GetRandom returned %d bytes", len(r.RandomBytes.Buffer))
	}
	before := pcr16(t, tpm)
	extend16(t, tpm, 1)
	if bytes.Equal(before, pcr16(t, tpm)) {
		t.Fatal("PCR_Extend did not change PCR 16")
	}
	if err := tpm.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.GetRandom{BytesRequested: 16}).Execute(tpm); !errors.Is(err, tpm2.TPMRCInitialize) {
		t.Fatalf("after TPM_SIGNAL_RESET, GetRandom: got %v, want TPM_RC_INITIALIZE", err)
	}
}

func TestMSSIMPower(t *testing.T) {
	s := serveMSSIM(t, New(newTPM(t, ""), nil))
	c := dialMSSIM(t, s)

	// A simulator that has just started is off.
	rsp, err := c.Send(getRandom8)
	if err != nil {
		t.Fatal(err)
	}
	if rc(rsp) != rcFailure {
		t.Fatalf("command before power-on: rc %#x, want TPM_RC_FAILURE", rc(rsp))
	}
	c.powerOn(t)
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(c); err != nil {
		t.Fatal(err)
	}
	extend16(t, c, 7)
	want := pcr16(t, c)
	// Every tcti-mssim client powers on again when it connects: that must
	// not reset a TPM that is on.
	c2 := dialMSSIM(t, s)
	c2.powerOn(t)
	if got := pcr16(t, c2); !bytes.Equal(got, want) {
		t.Fatal("a second TPM_SIGNAL_POWER_ON reset the TPM")
	}
	if ack, err := c.signal(mssimPowerOff); err != nil || ack != 0 {
		t.Fatalf("power off: %d, %v", ack, err)
	}
	if rsp, _ := c.Send(getRandom8); rc(rsp) != rcFailure {
		t.Fatalf("command after power-off: rc %#x", rc(rsp))
	}
	c.powerOn(t)
	if rsp, _ := c.Send(getRandom8); rc(rsp) != 0x100 {
		t.Fatalf("command after a power cycle: rc %#x, want TPM_RC_INITIALIZE", rc(rsp))
	}
}

func TestMSSIMProtocol(t *testing.T) {
	s := serveMSSIM(t, New(newTPM(t, ""), nil))
	c := dialMSSIM(t, s)
	c.powerOn(t)

	// TPM_REMOTE_HANDSHAKE -> server version 1, flags, ack.
	c.tpm.Write(append(be32(mssimRemoteHandshake), be32(1)...))
	got := make([]byte, 12)
	if _, err := io.ReadFull(c.tpm, got); err != nil {
		t.Fatal(err)
	}
	if want := append(append(be32(1), be32(mssimEndpointFlags)...), be32(0)...); !bytes.Equal(got, want) {
		t.Fatalf("handshake: % x, want % x", got, want)
	}

	// Two commands in one write, then one command byte by byte: frames
	// are cut by their sizes, not by read boundaries.
	frame := append(append(be32(mssimSendCommand), 0), be32(uint32(len(getRandom8)))...)
	frame = append(frame, getRandom8...)
	c.tpm.Write(append(append([]byte(nil), frame...), frame...))
	for i := 0; i < 2; i++ {
		readMSSIMResponse(t, c.tpm)
	}
	for _, b := range frame {
		c.tpm.Write([]byte{b})
	}
	if rsp := readMSSIMResponse(t, c.tpm); rc(rsp) != 0x100 {
		t.Fatalf("rc %#x", rc(rsp))
	}

	// TPM_GET_COMMAND_RESPONSE_SIZES on the platform port.
	c.plat.Write(be32(mssimGetCmdRspSizes))
	got = make([]byte, 24)
	if _, err := io.ReadFull(c.plat, got); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(got) != 16 || binary.BigEndian.Uint32(got[20:]) != 0 {
		t.Fatalf("GET_COMMAND_RESPONSE_SIZES: % x", got)
	}

	// An unknown platform command is refused with 1, and the connection
	// is closed, as the reference simulator does.
	if ack, err := c.signal(99); err != nil || ack != 1 {
		t.Fatalf("unknown platform command: %d, %v", ack, err)
	}
	if _, err := c.signal(mssimNVOn); err == nil {
		t.Fatal("the platform connection stayed open after an unknown command")
	}
}

func readMSSIMResponse(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var l [4]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		t.Fatal(err)
	}
	rsp := make([]byte, binary.BigEndian.Uint32(l[:])+4)
	if _, err := io.ReadFull(c, rsp); err != nil {
		t.Fatal(err)
	}
	return rsp[:len(rsp)-4]
}

// TestMSSIMOversizedCommandIsNotRead checks that a client that announces a
// command larger than the TPM's buffer is dropped before the server
// allocates or reads it.
func TestMSSIMOversizedCommandIsNotRead(t *testing.T) {
	s := serveMSSIM(t, New(newTPM(t, ""), nil))
	c := dialMSSIM(t, s)
	c.tpm.Write(append(append(be32(mssimSendCommand), 0), be32(1<<31)...))
	c.tpm.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.tpm.Read(make([]byte, 1)); err == nil {
		t.Fatalf("server answered %d bytes to a 2 GiB command", n)
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("server kept the connection open")
	}
}

// TestMSSIMSlowlorisTimesOut checks that a client that starts a frame and
// never finishes it loses its connection after the frame timeout.
func TestMSSIMSlowlorisTimesOut(t *testing.T) {
	s := serveMSSIM(t, New(newTPM(t, ""), &Config{FrameTimeout: 100 * time.Millisecond}))
	c := dialMSSIM(t, s)
	c.tpm.Write([]byte{0, 0})
	c.tpm.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err := c.tpm.Read(make([]byte, 1))
	if err == nil || errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("half a frame: %v after %v", err, time.Since(start))
	}
}

func TestMSSIMMaxConns(t *testing.T) {
	s := serveMSSIM(t, New(newTPM(t, ""), &Config{MaxConns: 2}))
	a, b := dialMSSIM(t, s), dialMSSIM(t, s)
	a.powerOn(t)
	b.powerOn(t)
	third, err := net.Dial("tcp", s.tpmAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.Write(append(append(append(be32(mssimSendCommand), 0), be32(uint32(len(getRandom8)))...), getRandom8...))
	third.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("a third connection was served with MaxConns 2")
	}
	a.Close()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rsp := readMSSIMResponse(t, third); rc(rsp) != 0x100 {
		t.Fatalf("rc %#x after a slot freed", rc(rsp))
	}
}

// transientHandles lists the loaded transient objects.
func transientHandles(t *testing.T, tpm *mssimClient) []tpm2.TPMHandle {
	t.Helper()
	r, err := (tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: 0x80000000, PropertyCount: 64}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.CapabilityData.Data.Handles()
	if err != nil {
		t.Fatal(err)
	}
	return h.Handle
}

func createPrimary(t *testing.T, tpm *mssimClient) tpm2.TPMHandle {
	t.Helper()
	r, err := (tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	return r.ObjectHandle
}

func TestResourceManagerFlushesOnClose(t *testing.T) {
	for _, noRM := range []bool{false, true} {
		name := "on"
		if noRM {
			name = "off"
		}
		t.Run(name, func(t *testing.T) {
			s := serveMSSIM(t, New(newTPM(t, ""), &Config{NoResourceManager: noRM}))
			a := dialMSSIM(t, s)
			a.powerOn(t)
			if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(a); err != nil {
				t.Fatal(err)
			}
			kept := createPrimary(t, a)
			flushed := createPrimary(t, a)
			if _, err := (tpm2.FlushContext{FlushHandle: flushed}).Execute(a); err != nil {
				t.Fatal(err)
			}
			createPrimary(t, a)
			if _, err := (tpm2.StartAuthSession{
				TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull, SessionType: tpm2.TPMSEPolicy,
				NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
				Symmetric:   tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}, AuthHash: tpm2.TPMAlgSHA256,
			}).Execute(a); err != nil {
				t.Fatal(err)
			}
			_ = kept

			b := dialMSSIM(t, s)
			other := createPrimary(t, b)
			a.Close()
			// The flush happens when the server sees the close; poll.
			var left []tpm2.TPMHandle
			for i := 0; i < 100; i++ {
				left = transientHandles(t, b)
				if noRM || len(left) == 1 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if noRM {
				if len(left) != 3 {
					t.Fatalf("without the resource manager: %d objects loaded, want 3", len(left))
				}
				return
			}
			if len(left) != 1 || left[0] != other {
				t.Fatalf("after the connection closed: objects %v loaded, want only the other connection's %v", left, other)
			}
			r, err := (tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: 0x03000000, PropertyCount: 64}).Execute(b)
			if err != nil {
				t.Fatal(err)
			}
			if h, _ := r.CapabilityData.Data.Handles(); len(h.Handle) != 0 {
				t.Fatalf("policy sessions %v left loaded", h.Handle)
			}
		})
	}
}

// TestResourceManagerSparesObjectsAfterReset checks that a connection that
// closes after a power cycle does not flush handles that another
// connection has been given since.
func TestResourceManagerSparesObjectsAfterReset(t *testing.T) {
	s := serveMSSIM(t, New(newTPM(t, ""), nil))
	a := dialMSSIM(t, s)
	a.powerOn(t)
	(tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(a)
	h := createPrimary(t, a)
	if ack, _ := a.signal(mssimReset); ack != 0 {
		t.Fatal("reset refused")
	}
	b := dialMSSIM(t, s)
	(tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(b)
	if h2 := createPrimary(t, b); h2 != h {
		t.Skipf("the engine gave handle %v, not %v again; nothing to test", h2, h)
	}
	a.Close()
	time.Sleep(50 * time.Millisecond)
	if left := transientHandles(t, b); len(left) != 1 {
		t.Fatalf("a stale connection flushed another connection's object: %v loaded", left)
	}
}

func TestMSSIMConcurrentClients(t *testing.T) {
	s := serveMSSIM(t, New(newTPM(t, ""), nil))
	c := dialMSSIM(t, s)
	c.powerOn(t)
	(tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(c)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := dialMSSIM(t, s)
			for j := 0; j < 50; j++ {
				if _, err := (tpm2.GetRandom{BytesRequested: 8}).Execute(cl); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestMSSIMStop(t *testing.T) {
	for _, honor := range []bool{false, true} {
		in := New(newTPM(t, ""), &Config{HonorStop: honor})
		s := serveMSSIM(t, in)
		c := dialMSSIM(t, s)
		c.plat.Write(be32(mssimStop))
		select {
		case err := <-s.done:
			if !honor {
				t.Fatalf("ServeMSSIM returned %v on TPM_STOP without HonorStop", err)
			}
			if !errors.Is(err, ErrStopped) {
				t.Fatalf("ServeMSSIM returned %v, want ErrStopped", err)
			}
			s.done <- err // for the cleanup
		case <-time.After(300 * time.Millisecond):
			if honor {
				t.Fatal("ServeMSSIM did not return on TPM_STOP")
			}
		}
	}
}

func TestServeReturnsOnClose(t *testing.T) {
	in := New(newTPM(t, ""), nil)
	s := serveMSSIM(t, in)
	c := dialMSSIM(t, s)
	c.powerOn(t)
	in.Close()
	select {
	case err := <-s.done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("ServeMSSIM returned %v after Close, want ErrClosed", err)
		}
		s.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("ServeMSSIM did not return after Close")
	}
	if _, err := in.Seal(new([32]byte)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Seal after Close: %v", err)
	}
}

func TestPersistHook(t *testing.T) {
	var mu sync.Mutex
	var calls int
	fail := false
	in := New(newTPM(t, ""), &Config{Persist: func(ctx context.Context, tp *vtpm.TPM) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if fail {
			return errors.New("disk full")
		}
		_, err := tp.Seal(new([32]byte))
		return err
	}})
	s := serveMSSIM(t, in)
	c := dialMSSIM(t, s)
	c.powerOn(t)
	count := func() int { mu.Lock(); defer mu.Unlock(); return calls }
	(tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(c)
	if count() != 1 {
		t.Fatalf("Startup: %d persist calls, want 1", count())
	}
	(tpm2.GetRandom{BytesRequested: 8}).Execute(c)
	extend16(t, c, 1)
	if count() != 1 {
		t.Fatalf("GetRandom and PCR_Extend persisted (%d calls)", count())
	}
	defineNV(t, c, []byte("12345678"))
	if count() != 3 {
		t.Fatalf("NV_DefineSpace and NV_Write: %d persist calls, want 3", count())
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	_, err := (tpm2.HierarchyChangeAuth{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NewAuth:    tpm2.TPM2BAuth{Buffer: []byte("x")},
	}).Execute(c)
	if !errors.Is(err, tpm2.TPMRCNVUnavailable) {
		t.Fatalf("a command whose state could not be persisted: %v, want TPM_RC_NV_UNAVAILABLE", err)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	before := count()
	(tpm2.GetRandom{BytesRequested: 8}).Execute(c)
	if count() != before+1 {
		t.Fatal("a failed persist was not retried at the next command")
	}
}

// TestResourceManagerHandsOverSavedSessions checks that a session whose
// context a connection saved survives the connection, as tpm2-tools needs
// (tpm2_startauthsession writes the session to a file, and later tools
// load it), and that a session left loaded is flushed.
func TestResourceManagerHandsOverSavedSessions(t *testing.T) {
	s := serveMSSIM(t, New(newTPM(t, ""), nil))
	a := dialMSSIM(t, s)
	a.powerOn(t)
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(a); err != nil {
		t.Fatal(err)
	}
	start := func() tpm2.TPMHandle {
		r, err := (tpm2.StartAuthSession{
			TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull, SessionType: tpm2.TPMSEPolicy,
			NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
			Symmetric:   tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}, AuthHash: tpm2.TPMAlgSHA256,
		}).Execute(a)
		if err != nil {
			t.Fatal(err)
		}
		return r.SessionHandle
	}
	saved, loaded := start(), start()
	ctx, err := (tpm2.ContextSave{SaveHandle: saved}).Execute(a)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()

	b := dialMSSIM(t, s)
	// The flush happens when the server sees the close: wait for the
	// session left loaded to go.
	flushed := false
	for i := 0; i < 200 && !flushed; i++ {
		_, err := (tpm2.PolicyGetDigest{PolicySession: loaded}).Execute(b)
		flushed = err != nil
		time.Sleep(10 * time.Millisecond)
	}
	if !flushed {
		t.Fatal("a session left loaded by a closed connection was not flushed")
	}
	if _, err := (tpm2.ContextLoad{Context: ctx.Context}).Execute(b); err != nil {
		t.Fatalf("a saved session did not survive its connection: %v", err)
	}
}
