package server

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// streamConn is a connection whose client has sent a fixed byte stream.
type streamConn struct {
	r   *bytes.Reader
	w   bytes.Buffer
	max int
}

func newStreamConn(b []byte) *streamConn {
	return &streamConn{r: bytes.NewReader(b), max: 64 << 20}
}

func (s *streamConn) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *streamConn) Write(p []byte) (int, error) {
	if s.w.Len()+len(p) > s.max {
		return 0, errors.New("output bound exceeded")
	}
	return s.w.Write(p)
}
func (s *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (s *streamConn) SetWriteDeadline(time.Time) error { return nil }

// recorded returns the byte streams recorded from real clients in
// testdata (by the interop tests with -record), by file-name prefix.
func recorded(f *testing.F, prefix string) map[string][]byte {
	f.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", prefix+"*.bin"))
	if err != nil {
		f.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(n), ".bin")] = b
	}
	if len(out) == 0 {
		f.Fatalf("no testdata/%s*.bin seeds", prefix)
	}
	return out
}

// FuzzMSSIM feeds a platform-port stream and then a TPM-port stream to the
// mssim handlers. They must not panic, must answer within the bounds (a
// frame of at least 4 bytes gets at most 4+MaxCommandSize+4 bytes back),
// and must leave the TPM usable and the resource manager able to flush.
func FuzzMSSIM(f *testing.F) {
	plat := recorded(f, "mssim-platform")
	var platAll []byte
	for _, b := range plat {
		platAll = append(platAll, b...)
	}
	for _, b := range recorded(f, "mssim-tpm") {
		f.Add(b, platAll)
	}
	f.Add([]byte{0, 0, 0, 8, 0, 0xff, 0xff, 0xff, 0xff}, []byte{0, 0, 0, 1})
	f.Add([]byte{0, 0, 0, 15, 0, 0, 0, 0}, []byte{0, 0, 0, 25, 0, 0, 0, 2, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, tpmStream, platStream []byte) {
		ctx := context.Background()
		in := New(newTPM(t, ""), &Config{})
		defer in.Close()
		pc := newStreamConn(platStream)
		in.mssimPlatform(ctx, pc)
		if pc.w.Len() > (len(platStream)/4+1)*(4+16+4) {
			t.Fatalf("platform port: %d bytes out for %d in", pc.w.Len(), len(platStream))
		}
		in.PowerOn(ctx)
		rm := newTracker()
		tc := newStreamConn(tpmStream)
		in.mssimTPM(ctx, tc, rm)
		if tc.w.Len() > (len(tpmStream)/4+1)*(4+MaxCommandSize+4) {
			t.Fatalf("TPM port: %d bytes out for %d in", tc.w.Len(), len(tpmStream))
		}
		in.flush(ctx, rm)
		checkUsable(t, in)
	})
}

// checkUsable checks that an Instance still executes commands.
func checkUsable(t *testing.T, in *Instance) {
	t.Helper()
	ctx := context.Background()
	in.mu.Lock()
	// The engine recovers its own panics into failure mode (so that one
	// guest cannot take down the process); for the fuzzer that is a crash.
	if err := in.tpm.Failure(); err != nil {
		in.mu.Unlock()
		t.Fatal(err)
	}
	in.powered = false
	in.pending = nil
	in.mu.Unlock()
	if err := in.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	startup := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0}
	if r := in.execute(ctx, startup, nil, MaxCommandSize); rc(r) != 0 {
		t.Fatalf("Startup after the stream: rc %#x", rc(r))
	}
	if r := in.execute(ctx, getRandom8, nil, MaxCommandSize); rc(r) != 0 || len(r) != 20 {
		t.Fatalf("GetRandom after the stream: % x", r)
	}
}

// FuzzControlChannel feeds a control-channel stream and then a data-channel
// stream (seeded with QEMU 7.2's control stream and OVMF's commands,
// recorded, and with migration streams carrying real blobs) to the swtpm
// handlers. They must not panic, must answer within bounds, must keep the
// buffer size within its limits, and must leave the TPM usable and
// sealable.
func FuzzControlChannel(f *testing.F) {
	data := recorded(f, "data-")
	for _, b := range recorded(f, "ctrl-") {
		for _, d := range data {
			f.Add(b, d)
		}
	}
	// A migration: stop, set a real permanent blob, init, get it back.
	key := testMigrationKey
	src := New(newTPM(f, "vm1"), &Config{VMID: "vm1", MigrationKey: &key})
	blob, err := src.tpm.Seal(src.cfg.MigrationKey)
	if err != nil {
		f.Fatal(err)
	}
	src.Close()
	var m []byte
	m = append(m, be32(cmdStop)...)
	m = append(m, be32(cmdSetStateBlob)...)
	m = append(m, be32(stateFlagEncrypted)...)
	m = append(m, be32(blobPermanent)...)
	m = append(m, be32(uint32(len(blob)))...)
	m = append(m, blob...)
	m = append(m, be32(cmdInit)...)
	m = append(m, be32(1)...)
	m = append(m, be32(cmdGetStateBlob)...)
	m = append(m, be32(0)...)
	m = append(m, be32(blobPermanent)...)
	m = append(m, be32(0)...)
	m = append(m, be32(cmdShutdown)...)
	f.Add(m, readClock)
	f.Add(append(be32(cmdHashData), be32(4)...), []byte{0x80, 0x01, 0xff, 0xff, 0xff, 0xff})
	f.Add(append(be32(cmdSetBufferSize), be32(1)...), getRandom8)
	f.Fuzz(func(t *testing.T, stream, dataStream []byte) {
		ctx := context.Background()
		key := testMigrationKey
		in := New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: &key})
		defer in.Close()
		c := newStreamConn(stream)
		in.serveCtrl(ctx, c, nil)
		// Replies are at most 16 bytes plus a state blob.
		if c.w.Len() > (len(stream)/4+1)*(16+MaxStateBlobSize) {
			t.Fatalf("%d bytes out for %d in", c.w.Len(), len(stream))
		}
		in.mu.Lock()
		bs := in.bufferSize
		in.mu.Unlock()
		if bs < minBufferSize || bs > MaxCommandSize {
			t.Fatalf("buffer size %d", bs)
		}
		d := newStreamConn(dataStream)
		in.swtpmData(ctx, d)
		// A frame of at least 10 bytes gets at most one response.
		if d.w.Len() > (len(dataStream)/10+1)*MaxCommandSize {
			t.Fatalf("data channel: %d bytes out for %d in", d.w.Len(), len(dataStream))
		}
		checkUsable(t, in)
		if _, err := in.Seal(new([32]byte)); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFuzzSeedsAreReal checks that the recorded seeds hold what their
// names say: QEMU's stream starts by passing the data channel and reading
// the capabilities, and tpm2-tools' streams carry TPM_SEND_COMMAND.
func TestFuzzSeedsAreReal(t *testing.T) {
	for _, n := range []string{"ctrl-qemu", "mssim-tpm-tpm2_startup", "mssim-platform-tpm2_startup"} {
		b, err := os.ReadFile(filepath.Join("testdata", n+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		switch n {
		case "ctrl-qemu":
			if !bytes.HasPrefix(b, append(be32(cmdSetDataFD), be32(cmdGetCapability)...)) {
				t.Fatalf("%s: % x", n, b[:8])
			}
		case "mssim-tpm-tpm2_startup":
			if !bytes.HasPrefix(b, be32(mssimSendCommand)) {
				t.Fatalf("%s: % x", n, b[:8])
			}
		case "mssim-platform-tpm2_startup":
			if !bytes.HasPrefix(b, append(be32(mssimPowerOn), be32(mssimNVOn)...)) {
				t.Fatalf("%s: % x", n, b)
			}
		}
	}
}

// TestQEMUMigrationSeedInstalls replays the control stream that QEMU 7.2
// sent to the destination of a live migration (recorded by
// TestInteropQEMUMigration with -record) into a fresh instance: the state
// blob in it must install, with the PCR 16 and NV index of the source.
func TestQEMUMigrationSeedInstalls(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "ctrl-qemu-migration-dst.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// QEMU ended with CMD_SHUTDOWN when it quit; stop before it.
	b, found := bytes.CutSuffix(b, be32(cmdShutdown))
	if !found {
		t.Fatal("the recorded stream does not end with CMD_SHUTDOWN")
	}
	key := testMigrationKey
	in := New(newTPM(t, "vm1"), &Config{VMID: "vm1", MigrationKey: &key})
	defer in.Close()
	c := newStreamConn(b)
	in.serveCtrl(context.Background(), c, nil)
	tpm := instTPMForTest{in}
	if got := pcr16(t, tpm); bytes.Equal(got, make([]byte, 32)) {
		t.Fatal("PCR 16 is zero: the recorded blob did not install")
	}
	if nv, err := readNV(t, tpm, 8); err != nil || string(nv) != "migrated" {
		t.Fatalf("NV after the recorded migration: %q, %v", nv, err)
	}
}

// instTPMForTest sends commands to an instance in process.
type instTPMForTest struct{ in *Instance }

func (i instTPMForTest) Send(cmd []byte) ([]byte, error) {
	return i.in.execute(context.Background(), cmd, nil, MaxCommandSize), nil
}
