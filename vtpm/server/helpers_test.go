package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/shieldvm/shieldvm/vtpm"
)

// newTPM returns a manufactured TPM waiting for TPM2_Startup.
func newTPM(t testing.TB, vmid string) *vtpm.TPM {
	t.Helper()
	tp, err := vtpm.New(vtpm.Config{VMID: vmid, DeferStartup: true})
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// served is an Instance served on test listeners.
type served struct {
	in       *Instance
	tpmAddr  string
	platAddr string
	ctrlPath string
	dataPath string
	done     chan error
	cancel   context.CancelFunc
}

// stop cancels the Serve call and returns its error.
func (s *served) stop(t testing.TB) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
		return nil
	}
}

func serveMSSIM(t testing.TB, in *Instance) *served {
	t.Helper()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{in: in, tpmAddr: tl.Addr().String(), platAddr: pl.Addr().String(), done: make(chan error, 1), cancel: cancel}
	go func() { s.done <- in.ServeMSSIM(ctx, tl, pl) }()
	t.Cleanup(func() {
		cancel()
		<-s.done
		in.Close()
	})
	return s
}

// sockDir returns a short directory for unix sockets (their paths are
// limited to 108 bytes, and t.TempDir can be longer).
func sockDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "vtpmsrv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func serveSwtpm(t testing.TB, in *Instance, withData bool) *served {
	t.Helper()
	d := sockDir(t)
	s := &served{in: in, ctrlPath: filepath.Join(d, "ctrl"), done: make(chan error, 1)}
	cl, err := net.Listen("unix", s.ctrlPath)
	if err != nil {
		t.Fatal(err)
	}
	var dl net.Listener
	if withData {
		s.dataPath = filepath.Join(d, "data")
		if dl, err = net.Listen("unix", s.dataPath); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- in.ServeSwtpm(ctx, cl, dl) }()
	t.Cleanup(func() {
		cancel()
		<-s.done
		in.Close()
	})
	return s
}

// mssimClient speaks the mssim protocol; it implements transport.TPM.
type mssimClient struct {
	tpm, plat net.Conn
}

func dialMSSIM(t testing.TB, s *served) *mssimClient {
	t.Helper()
	c := &mssimClient{}
	var err error
	if c.tpm, err = net.Dial("tcp", s.tpmAddr); err != nil {
		t.Fatal(err)
	}
	if c.plat, err = net.Dial("tcp", s.platAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (c *mssimClient) Close() error {
	return errors.Join(c.tpm.Close(), c.plat.Close())
}

// signal sends a platform command and returns its acknowledgement.
func (c *mssimClient) signal(code uint32) (uint32, error) {
	if _, err := c.plat.Write(binary.BigEndian.AppendUint32(nil, code)); err != nil {
		return 0, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c.plat, ack[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(ack[:]), nil
}

func (c *mssimClient) powerOn(t testing.TB) {
	t.Helper()
	for _, code := range []uint32{mssimPowerOn, mssimNVOn} {
		if ack, err := c.signal(code); err != nil || ack != 0 {
			t.Fatalf("platform command %d: ack %d, %v", code, ack, err)
		}
	}
}

func (c *mssimClient) Send(cmd []byte) ([]byte, error) {
	msg := binary.BigEndian.AppendUint32(nil, mssimSendCommand)
	msg = append(msg, 0)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(cmd)))
	msg = append(msg, cmd...)
	if _, err := c.tpm.Write(msg); err != nil {
		return nil, err
	}
	var l [4]byte
	if _, err := io.ReadFull(c.tpm, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n > 1<<20 {
		return nil, fmt.Errorf("response of %d bytes", n)
	}
	rsp := make([]byte, n+4)
	if _, err := io.ReadFull(c.tpm, rsp); err != nil {
		return nil, err
	}
	if ack := binary.BigEndian.Uint32(rsp[n:]); ack != 0 {
		return nil, fmt.Errorf("ack %d", ack)
	}
	return rsp[:n], nil
}

// rawTPM sends raw TPM commands on a swtpm data channel, reading each
// response by the size in its header.
type rawTPM struct{ c net.Conn }

func (r rawTPM) Send(cmd []byte) ([]byte, error) {
	if _, err := r.c.Write(cmd); err != nil {
		return nil, err
	}
	return readResponse(r.c)
}

func readResponse(c io.Reader) ([]byte, error) {
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[2:])
	if n < 10 || n > 1<<20 {
		return nil, fmt.Errorf("bad response size %d", n)
	}
	rsp := append(hdr, make([]byte, n-10)...)
	_, err := io.ReadFull(c, rsp[10:])
	return rsp, err
}

var _ transport.TPM = (*mssimClient)(nil)
var _ transport.TPM = rawTPM{}

// ctrlClient speaks the swtpm control protocol, as QEMU does.
type ctrlClient struct {
	t testing.TB
	c *net.UnixConn
}

func dialCtrl(t testing.TB, s *served) *ctrlClient {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: s.ctrlPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &ctrlClient{t: t, c: c}
}

// call sends a control command with body and reads n bytes of reply.
func (c *ctrlClient) call(code uint32, body []byte, n int) []byte {
	c.t.Helper()
	msg := binary.BigEndian.AppendUint32(nil, code)
	msg = append(msg, body...)
	if _, err := c.c.Write(msg); err != nil {
		c.t.Fatal(err)
	}
	return c.read(n)
}

func (c *ctrlClient) read(n int) []byte {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	out := make([]byte, n)
	if _, err := io.ReadFull(c.c, out); err != nil {
		c.t.Fatalf("reading %d bytes of reply: %v", n, err)
	}
	return out
}

// res calls a command whose reply is a ptm_res and returns it.
func (c *ctrlClient) res(code uint32, body []byte) uint32 {
	c.t.Helper()
	return binary.BigEndian.Uint32(c.call(code, body, 4))
}

// setDataFD makes a socket pair, passes one end with CMD_SET_DATAFD as
// QEMU does, and returns the other end.
func (c *ctrlClient) setDataFD() net.Conn {
	c.t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	msg := binary.BigEndian.AppendUint32(nil, cmdSetDataFD)
	if _, _, err := c.c.WriteMsgUnix(msg, syscall.UnixRights(fds[1]), nil); err != nil {
		c.t.Fatal(err)
	}
	syscall.Close(fds[1])
	if res := binary.BigEndian.Uint32(c.read(4)); res != 0 {
		c.t.Fatalf("CMD_SET_DATAFD: result %d", res)
	}
	f := os.NewFile(uintptr(fds[0]), "data")
	defer f.Close()
	dc, err := net.FileConn(f)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { dc.Close() })
	return dc
}

// boot does what QEMU does when a VM starts: stop, set the buffer size,
// init; then it sends TPM2_Startup(CLEAR) as firmware does.
func (c *ctrlClient) boot(tpm transport.TPM) {
	c.t.Helper()
	if res := c.res(cmdStop, nil); res != 0 {
		c.t.Fatalf("CMD_STOP: %d", res)
	}
	if r := c.call(cmdSetBufferSize, be32(4096), 16); !bytes.Equal(r[:8], append(be32(0), be32(4096)...)) {
		c.t.Fatalf("CMD_SET_BUFFERSIZE: % x", r)
	}
	if res := c.res(cmdInit, be32(0)); res != 0 {
		c.t.Fatalf("CMD_INIT: %d", res)
	}
	if tpm != nil {
		if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(tpm); err != nil {
			c.t.Fatalf("TPM2_Startup: %v", err)
		}
	}
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// getBlob reads one state blob with CMD_GET_STATEBLOB.
func (c *ctrlClient) getBlob(typ, flags uint32) (res, outFlags uint32, blob []byte) {
	c.t.Helper()
	body := append(be32(flags), be32(typ)...)
	body = append(body, be32(0)...)
	r := c.call(cmdGetStateBlob, body, 4)
	res = binary.BigEndian.Uint32(r)
	if res == ptmBadOrdinal {
		return res, 0, nil
	}
	h := c.read(12)
	outFlags = binary.BigEndian.Uint32(h)
	tot, n := binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:])
	if tot != n {
		c.t.Fatalf("totlength %d != length %d", tot, n)
	}
	return res, outFlags, c.read(int(n))
}

// setBlob sends one state blob with CMD_SET_STATEBLOB.
func (c *ctrlClient) setBlob(typ, flags uint32, blob []byte) uint32 {
	c.t.Helper()
	body := append(be32(flags), be32(typ)...)
	body = append(body, be32(uint32(len(blob)))...)
	body = append(body, blob...)
	return c.res(cmdSetStateBlob, body)
}

// pcr16 reads the SHA-256 value of PCR 16.
func pcr16(t testing.TB, tpm transport.TPM) []byte {
	t.Helper()
	r, err := (tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(16)},
	}}}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.PCRValues.Digests) != 1 {
		t.Fatalf("PCR_Read returned %d digests", len(r.PCRValues.Digests))
	}
	return r.PCRValues.Digests[0].Buffer
}

func extend16(t testing.TB, tpm transport.TPM, data byte) {
	t.Helper()
	d := bytes.Repeat([]byte{data}, 32)
	_, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d}}},
	}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
}

const testNVIndex = 0x01500016

// defineNV defines and writes an 8-byte NV index.
func defineNV(t testing.TB, tpm transport.TPM, data []byte) {
	t.Helper()
	_, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: tpm2.TPMHandle(testNVIndex),
			NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{
				OwnerWrite: true, OwnerRead: true, AuthWrite: true, AuthRead: true,
				NT: tpm2.TPMNTOrdinary, NoDA: true,
			},
			DataSize: uint16(len(data)),
		}),
	}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	pub := nvPublic(t, tpm)
	_, err = (tpm2.NVWrite{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(testNVIndex), Name: pub},
		Data:       tpm2.TPM2BMaxNVBuffer{Buffer: data},
	}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
}

func nvPublic(t testing.TB, tpm transport.TPM) tpm2.TPM2BName {
	t.Helper()
	r, err := (tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(testNVIndex)}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	return r.NVName
}

func readNV(t testing.TB, tpm transport.TPM, n uint16) ([]byte, error) {
	t.Helper()
	r, err := (tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(testNVIndex), Name: nvPublic(t, tpm)},
		Size:       n,
	}).Execute(tpm)
	if err != nil {
		return nil, err
	}
	return r.Data.Buffer, nil
}

// rc returns the response code of a raw response.
func rc(rsp []byte) uint32 {
	if len(rsp) < 10 {
		return 0xFFFFFFFF
	}
	return binary.BigEndian.Uint32(rsp[6:])
}

// readClock is the probe QEMU sends before CMD_INIT.
var readClock = []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x81}

// getRandom8 is TPM2_GetRandom(8).
var getRandom8 = []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8}
