//go:build interop

package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// instTPM sends commands to a served instance in process, beside its
// clients (commands are serialized by the instance).
type instTPM struct{ in *Instance }

func (i instTPM) Send(cmd []byte) ([]byte, error) {
	return i.in.execute(context.Background(), cmd, nil, MaxCommandSize), nil
}

var _ transport.TPM = instTPM{}

// monitor is a QEMU human monitor on a unix socket.
type monitor struct {
	c net.Conn
	r *bufio.Reader
}

func dialMonitor(t *testing.T, path string) *monitor {
	t.Helper()
	var c net.Conn
	var err error
	for i := 0; i < 100; i++ {
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("QEMU monitor: %v", err)
	}
	m := &monitor{c: c, r: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	m.prompt(t)
	return m
}

// prompt reads up to the next "(qemu) " prompt.
func (m *monitor) prompt(t *testing.T) string {
	t.Helper()
	m.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var out []byte
	for !bytes.HasSuffix(out, []byte("(qemu) ")) {
		b, err := m.r.ReadByte()
		if err != nil {
			t.Fatalf("QEMU monitor: %v after %q", err, out)
		}
		out = append(out, b)
	}
	return string(out)
}

func (m *monitor) cmd(t *testing.T, line string) string {
	t.Helper()
	if _, err := fmt.Fprintf(m.c, "%s\n", line); err != nil {
		t.Fatal(err)
	}
	return m.prompt(t)
}

// pcrsOf reads the SHA-256 PCRs 0-23.
func pcrsOf(t *testing.T, tpm transport.TPM) [][]byte {
	t.Helper()
	var out [][]byte
	for i := uint(0); i < 24; i += 8 {
		r, err := (tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(i, i+1, i+2, i+3, i+4, i+5, i+6, i+7)},
		}}}).Execute(tpm)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.PCRValues.Digests) != 8 {
			t.Fatalf("PCR_Read returned %d digests", len(r.PCRValues.Digests))
		}
		for _, d := range r.PCRValues.Digests {
			out = append(out, d.Buffer)
		}
	}
	return out
}

// TestInteropQEMUMigration migrates a running QEMU (TCG, OVMF, our vTPM as
// its tpm-crb) to a second QEMU started with -incoming, each with its own
// served instance: QEMU reads the state blobs from the source's control
// channel (CMD_GET_STATEBLOB) and sets them on the destination's
// (CMD_SET_STATEBLOB, CMD_INIT). The destination's PCRs and NV must equal
// the source's, and the destination must run on.
func TestInteropQEMUMigration(t *testing.T) {
	need(t, "qemu-system-x86_64")
	code, vars := ovmf(t)
	d := sockDir(t)
	varsFile, err := os.ReadFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	key := testMigrationKey
	const vmid = "vm1" // as in FuzzControlChannel, so that the recorded blob installs there

	type vm struct {
		in   *Instance
		rec  *recorder // what QEMU sent on the control channel
		q    *exec.Cmd
		out  *bytes.Buffer
		mon  string
		done chan struct{} // closed when QEMU has exited
		err  error         // of QEMU, once done is closed
	}
	start := func(name string, extra ...string) *vm {
		ctrl := filepath.Join(d, name+".ctrl")
		cl, err := net.Listen("unix", ctrl)
		if err != nil {
			t.Fatal(err)
		}
		v := &vm{in: New(newTPM(t, vmid), &Config{VMID: vmid, MigrationKey: &key}), rec: &recorder{Listener: cl}, out: &bytes.Buffer{},
			mon: filepath.Join(d, name+".mon"), done: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- v.in.ServeSwtpm(ctx, v.rec, nil) }()
		t.Cleanup(func() { cancel(); <-served; v.in.Close() })
		varsCopy := filepath.Join(d, name+".vars")
		if err := os.WriteFile(varsCopy, varsFile, 0o600); err != nil {
			t.Fatal(err)
		}
		args := append([]string{
			"-machine", "q35", "-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
			"-drive", "if=pflash,format=raw,unit=1,file=" + varsCopy,
			"-chardev", "socket,id=chrtpm,path=" + ctrl,
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
			"-device", "tpm-crb,tpmdev=tpm0",
			"-monitor", "unix:" + v.mon + ",server,nowait"}, extra...)
		v.q = exec.Command("qemu-system-x86_64", args...)
		v.q.Stdout, v.q.Stderr = v.out, v.out
		if err := v.q.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { v.err = v.q.Wait(); close(v.done) }()
		t.Cleanup(func() {
			select {
			case <-v.done:
			default:
				v.q.Process.Kill()
				<-v.done
			}
		})
		return v
	}

	begin := time.Now()
	src := start("src")
	srcTPM := instTPM{src.in}
	// Wait until the firmware has measured the Secure Boot policy (PCR 7).
	for pcrOf(src.in, 7) == nil || bytes.Equal(pcrOf(src.in, 7), make([]byte, 32)) {
		select {
		case <-src.done:
			t.Fatalf("the source QEMU exited: %v\n%s", src.err, src.out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Since(begin) > 4*time.Minute {
			t.Fatal("the firmware did not extend PCR 7 within 4 minutes")
		}
	}
	booted := time.Since(begin)
	// Something the firmware does not have: an NV index and PCR 16.
	defineNV(t, srcTPM, []byte("migrated"))
	extend16(t, srcTPM, 0x42)

	dst := start("dst", "-incoming", "unix:"+filepath.Join(d, "mig"), "-S")
	dstMon := dialMonitor(t, dst.mon)
	srcMon := dialMonitor(t, src.mon)
	migStart := time.Now()
	srcMon.cmd(t, "migrate unix:"+filepath.Join(d, "mig"))
	var status string
	for {
		status = srcMon.cmd(t, "info migrate")
		if strings.Contains(status, "Migration status: completed") || strings.Contains(status, "Migration status: failed") {
			break
		}
		if time.Since(migStart) > time.Minute {
			t.Fatalf("migration did not complete within a minute:\n%s", status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(status, "completed") {
		t.Fatalf("migration failed:\n%s\nsource QEMU: %s\ndestination QEMU: %s", status, src.out, dst.out)
	}
	// The destination has received everything once its monitor reports
	// the incoming migration done (it stays paused: -S).
	for {
		if s := dstMon.cmd(t, "info status"); strings.Contains(s, "paused") && !strings.Contains(s, "inmigrate") {
			break
		}
		if time.Since(migStart) > time.Minute {
			t.Fatal("the destination did not reach paused")
		}
		time.Sleep(50 * time.Millisecond)
	}
	migrated := time.Since(migStart)

	// The source is stopped now: its state is the migrated one.
	want := pcrsOf(t, srcTPM)
	dstTPM := instTPM{dst.in}
	var got [][]byte
	for {
		// CMD_INIT with the installed blob arrives with the end of the
		// device state; wait for it.
		if r := dst.in.execute(context.Background(), getRandom8, nil, MaxCommandSize); rc(r) == 0 {
			got = pcrsOf(t, dstTPM)
			break
		}
		if time.Since(migStart) > time.Minute {
			t.Fatal("the destination TPM did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("PCR %d after migration: %x, want %x", i, got[i], want[i])
		}
	}
	if bytes.Equal(want[0], make([]byte, 32)) {
		t.Error("PCR 0 of the source is zero: the firmware measured nothing")
	}
	if nv, err := readNV(t, dstTPM, 8); err != nil || string(nv) != "migrated" {
		t.Errorf("NV after migration: %q, %v", nv, err)
	}
	// The destination runs on the migrated TPM.
	dstMon.cmd(t, "cont")
	time.Sleep(time.Second)
	select {
	case <-dst.done:
		t.Fatalf("the destination QEMU exited after cont: %v\n%s", dst.err, dst.out)
	default:
	}
	if s := dstMon.cmd(t, "info status"); !strings.Contains(s, "running") {
		t.Errorf("destination after cont: %s", s)
	}
	extend16(t, dstTPM, 1)
	t.Logf("firmware measured PCR 7 after %v; migration (256 MiB guest, unix socket) took %v; PCR 0-23 and NV equal on the destination",
		booted.Round(time.Millisecond), migrated.Round(time.Millisecond))
	for _, m := range []*monitor{srcMon, dstMon} {
		fmt.Fprintf(m.c, "quit\n")
	}
	for _, v := range []*vm{src, dst} {
		select {
		case <-v.done:
		case <-time.After(10 * time.Second):
			t.Error("QEMU did not quit")
		}
	}
	save(t, "ctrl-qemu-migration-src", src.rec.take())
	save(t, "ctrl-qemu-migration-dst", dst.rec.take())
}
