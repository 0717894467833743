package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// TestSwtpmQEMUSequence replays what QEMU 7.2's tpm-emulator backend does
// from start to exit: pass the data channel, probe it before CMD_INIT,
// read the capabilities, then stop, set the buffer size and init at each
// machine reset, and shut down.
func TestSwtpmQEMUSequence(t *testing.T) {
	s := serveSwtpm(t, New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: new([32]byte)}), false)
	c := dialCtrl(t, s)
	data := c.setDataFD()
	tpm := rawTPM{data}

	// The probe: ReadClock before CMD_INIT must be answered with a TPM
	// 2.0 tag, in one piece.
	data.Write(readClock)
	buf := make([]byte, 64)
	data.SetReadDeadline(time.Now().Add(time.Second))
	n, err := data.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != 10 || binary.BigEndian.Uint16(buf) != stNoSessions || binary.BigEndian.Uint32(buf[2:]) != 10 {
		t.Fatalf("ReadClock probe before INIT: % x", buf[:n])
	}
	// The TPM 1.2 probe gets the TPM 2.0 answer to a bad tag.
	tpm12 := []byte{0x00, 0xC1, 0, 0, 0, 10, 0, 0, 0, 0xF1}
	rsp, err := tpm.Send(tpm12)
	if err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint16(rsp) != stRspCommand || rc(rsp) != rcBadTag {
		t.Fatalf("TPM 1.2 probe: % x", rsp)
	}

	caps := binary.BigEndian.Uint64(c.call(cmdGetCapability, nil, 8))
	need := uint64(capInit | capShutdown | capGetTPMEstablished | capSetLocality | capResetTPMEstablished |
		capSetDataFD | capStop | capSetBufferSize | capGetStateBlob | capSetStateBlob)
	if caps&need != need {
		t.Fatalf("capabilities %#x lack %#x", caps, need&^caps)
	}
	c.boot(tpm)
	if _, err := (tpm2.GetRandom{BytesRequested: 16}).Execute(tpm); err != nil {
		t.Fatal(err)
	}

	est := c.call(cmdGetTPMEstablished, nil, 8)
	if !bytes.Equal(est, make([]byte, 8)) {
		t.Fatalf("GET_TPMESTABLISHED: % x", est)
	}
	if res := c.res(cmdSetLocality, []byte{3, 0, 0, 0}); res != 0 {
		t.Fatalf("SET_LOCALITY 3: %d", res)
	}
	if res := c.res(cmdSetLocality, []byte{5, 0, 0, 0}); res != ptmBadLocality {
		t.Fatalf("SET_LOCALITY 5: %d", res)
	}
	if res := c.res(cmdResetTPMEstablished, []byte{0, 0, 0, 0}); res != ptmBadLocality {
		t.Fatalf("RESET_TPMESTABLISHED at locality 0: %d", res)
	}
	if res := c.res(cmdResetTPMEstablished, []byte{3, 0, 0, 0}); res != 0 {
		t.Fatalf("RESET_TPMESTABLISHED at locality 3: %d", res)
	}
	if res := c.res(cmdCancelTPMCmd, nil); res != 0 {
		t.Fatalf("CANCEL_TPM_CMD: %d", res)
	}
	cfg := c.call(cmdGetConfig, nil, 8)
	if binary.BigEndian.Uint32(cfg[4:]) != configMigrationKey {
		t.Fatalf("GET_CONFIG: % x", cfg)
	}
	if res := c.res(0x7F, nil); res != ptmBadOrdinal {
		t.Fatalf("unknown command: %d", res)
	}

	// The buffer size cannot change while the TPM runs; 0 queries it.
	if r := c.call(cmdSetBufferSize, be32(2048), 4); binary.BigEndian.Uint32(r) != ptmBadOrdinal {
		t.Fatalf("SET_BUFFERSIZE while running: % x", r)
	}
	r := c.call(cmdSetBufferSize, be32(0), 16)
	if want := append(append(append(be32(0), be32(4096)...), be32(minBufferSize)...), be32(4096)...); !bytes.Equal(r, want) {
		t.Fatalf("SET_BUFFERSIZE query: % x", r)
	}

	// A machine reset: the TPM is reset and waits for TPM2_Startup.
	c.boot(nil)
	if _, err := (tpm2.GetRandom{BytesRequested: 16}).Execute(tpm); !errors.Is(err, tpm2.TPMRCInitialize) {
		t.Fatalf("after a machine reset: %v", err)
	}

	if res := c.res(cmdShutdown, nil); res != 0 {
		t.Fatalf("SHUTDOWN: %d", res)
	}
	select {
	case err := <-s.done:
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("ServeSwtpm returned %v after CMD_SHUTDOWN", err)
		}
		s.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("ServeSwtpm did not return after CMD_SHUTDOWN")
	}
}

// TestSwtpmDataFraming sends commands split at every byte and merged into
// one write: the data channel frames them by their header sizes.
func TestSwtpmDataFraming(t *testing.T) {
	s := serveSwtpm(t, New(newTPM(t, ""), nil), true)
	c := dialCtrl(t, s)
	data, err := net.Dial("unix", s.dataPath)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	c.boot(rawTPM{data})

	for _, b := range getRandom8 {
		data.Write([]byte{b})
		time.Sleep(time.Millisecond)
	}
	if rsp, err := readResponse(data); err != nil || rc(rsp) != 0 || len(rsp) != 20 {
		t.Fatalf("split command: % x, %v", rsp, err)
	}
	data.Write(append(append(append([]byte(nil), getRandom8...), readClock...), getRandom8...))
	for i, want := range []int{20, 10 + 8 + 17, 20} {
		rsp, err := readResponse(data)
		if err != nil || rc(rsp) != 0 || len(rsp) != want {
			t.Fatalf("merged command %d: % x, %v", i, rsp, err)
		}
	}

	// A header that announces more than the buffer is refused after the
	// buffer's worth of bytes, and the channel stays usable.
	big := make([]byte, 4096)
	copy(big, []byte{0x80, 0x01, 0, 0, 0x20, 0, 0, 0, 0x01, 0x7B})
	data.Write(big)
	if rsp, err := readResponse(data); err != nil || rc(rsp) != rcCommandSize {
		t.Fatalf("oversized command: % x, %v", rsp, err)
	}
	// A header too short to be a command.
	data.Write([]byte{0x80, 0x01, 0, 0, 0, 4, 0, 0, 1, 0x7B})
	if rsp, err := readResponse(data); err != nil || rc(rsp) != rcCommandSize {
		t.Fatalf("short command: % x, %v", rsp, err)
	}
	if _, err := (tpm2.GetRandom{BytesRequested: 8}).Execute(rawTPM{data}); err != nil {
		t.Fatalf("after malformed frames: %v", err)
	}
}

func TestSwtpmSmallBufferSize(t *testing.T) {
	s := serveSwtpm(t, New(newTPM(t, ""), nil), false)
	c := dialCtrl(t, s)
	data := c.setDataFD()
	c.res(cmdStop, nil)
	// QEMU's CRB interface asks for 3968 bytes.
	r := c.call(cmdSetBufferSize, be32(3968), 16)
	if binary.BigEndian.Uint32(r[4:]) != 3968 {
		t.Fatalf("SET_BUFFERSIZE 3968: % x", r)
	}
	if res := c.res(cmdInit, be32(0)); res != 0 {
		t.Fatal(res)
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(rawTPM{data}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 4000)
	copy(big, []byte{0x80, 0x01, 0, 0, 0x0F, 0xA0, 0, 0, 0x01, 0x7B})
	data.Write(big[:3968])
	if rsp, err := readResponse(data); err != nil || rc(rsp) != rcCommandSize {
		t.Fatalf("command over the negotiated size: % x, %v", rsp, err)
	}
}

// TestSwtpmTerminate checks --terminate: ServeSwtpm returns when the
// control client goes away.
func TestSwtpmTerminate(t *testing.T) {
	s := serveSwtpm(t, New(newTPM(t, ""), &Config{Terminate: true}), false)
	c := dialCtrl(t, s)
	c.setDataFD()
	c.c.Close()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("ServeSwtpm returned %v, want nil", err)
		}
		s.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("ServeSwtpm did not return when the control client left")
	}
}

func TestSwtpmSecondDataFDRefused(t *testing.T) {
	s := serveSwtpm(t, New(newTPM(t, ""), nil), false)
	c := dialCtrl(t, s)
	data := c.setDataFD()
	// A second descriptor is refused with TPM_IOERROR and closed.
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	if _, _, err := c.c.WriteMsgUnix(be32(cmdSetDataFD), syscall.UnixRights(fds[1]), nil); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fds[1])
	if res := binary.BigEndian.Uint32(c.read(4)); res != ptmIOError {
		t.Fatalf("second CMD_SET_DATAFD: %d, want TPM_IOERROR", res)
	}
	if n, err := syscall.Read(fds[0], make([]byte, 1)); n != 0 || err != nil {
		t.Fatalf("the refused descriptor was kept open: %d, %v", n, err)
	}
	// No descriptor at all.
	if res := c.res(cmdSetDataFD, nil); res != ptmBadParameter {
		t.Fatalf("CMD_SET_DATAFD without a descriptor: %d", res)
	}
	// The first data channel still works.
	c.boot(rawTPM{data})
}

// TestCtrlChannelFraming sends control commands split at every byte and
// several in one write.
func TestCtrlChannelFraming(t *testing.T) {
	s := serveSwtpm(t, New(newTPM(t, ""), nil), false)
	c := dialCtrl(t, s)
	msg := append(be32(cmdSetLocality), 2, 0, 0, 0)
	for _, b := range msg {
		c.c.Write([]byte{b})
		time.Sleep(time.Millisecond)
	}
	if res := binary.BigEndian.Uint32(c.read(4)); res != 0 {
		t.Fatalf("split SET_LOCALITY: %d", res)
	}
	c.c.Write(append(append(append([]byte(nil), msg...), be32(cmdGetCapability)...), be32(cmdStop)...))
	got := c.read(4 + 8 + 4)
	if binary.BigEndian.Uint32(got) != 0 || binary.BigEndian.Uint32(got[12:]) != 0 {
		t.Fatalf("merged commands: % x", got)
	}
	// A state blob larger than the bound is refused without being read,
	// and the connection is closed.
	c.c.Write(append(append(append(be32(cmdSetStateBlob), be32(0)...), be32(blobPermanent)...), be32(1<<30)...))
	if res := binary.BigEndian.Uint32(c.read(4)); res != ptmBadParameter {
		t.Fatalf("1 GiB state blob: %d", res)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("connection after a 1 GiB state blob: %v", err)
	}
}
