//go:build interop

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/tcp"
	"github.com/shieldvm/shieldvm/measure"
)

// initScript is the whole userland of the test VM: it prints the firmware
// event log and the PCRs Linux reads, then powers off.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
echo "=== TPM $(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null)"
echo "=== EVENTLOG BEGIN"
base64 /sys/kernel/security/tpm0/binary_bios_measurements
echo "=== EVENTLOG END"
for i in 0 1 2 3 4 5 6 7 8 9; do echo "=== PCR $i $(cat /sys/class/tpm/tpm0/pcr-sha256/$i)"; done
echo "=== DONE"
# The test reads the vTPM's own PCRs now, then quits QEMU.
sleep 600
poweroff -f
`

// buildInitramfs packs busybox and initScript into a newc cpio archive
// with busybox's own cpio.
func buildInitramfs(t *testing.T, dir string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox-static is not installed: %v", err)
	}
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755)
	os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755)
	out := filepath.Join(dir, "initramfs.cpio")
	cmd := exec.Command("sh", "-c", "find . | "+bb+" cpio -o -H newc > "+out)
	cmd.Dir = root
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, o)
	}
	return out
}

func kernel(t *testing.T) string {
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(m) == 0 {
		t.Fatal("no kernel in /boot (apt-get install linux-image-amd64)")
	}
	return m[len(m)-1]
}

// TestInteropQEMUBoot boots Linux on QEMU (TCG) with Debian's OVMF and our
// vTPM, served by `shieldctl vtpm serve --swtpm-ctrl`, as QEMU's TPM. The
// initramfs prints the firmware event log and the PCRs Linux read; the log
// must replay to those PCRs and to the PCRs of our vTPM.
func TestInteropQEMUBoot(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64 is not installed: %v", err)
	}
	code, vars := "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	if _, err := os.Stat(code); err != nil {
		t.Fatalf("OVMF is not installed: %v", err)
	}
	dir, err := os.MkdirTemp("", "vtpmboot")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	initrd := buildInitramfs(t, dir)
	vmlinuz := kernel(t)
	ctrl := filepath.Join(dir, "ctrl")
	state := filepath.Join(dir, "state")

	// Serve the vTPM in process, as the shieldctl binary would.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	served := make(chan int, 1)
	go func() {
		served <- run(ctx, []string{"vtpm", "serve", "--swtpm-ctrl", ctrl, "--mssim", "127.0.0.1:0",
			"--state", state, "--vm-id", "boot-test"}, &stdout, &stderr)
	}()
	mssim := waitFor(t, &stdout, regexp.MustCompile(`mssim: TPM (\S+), platform (\S+)`))

	varsCopy := filepath.Join(dir, "vars.fd")
	b, _ := os.ReadFile(vars)
	os.WriteFile(varsCopy, b, 0o600)
	serial := filepath.Join(dir, "serial")
	mon := filepath.Join(dir, "mon")
	qctx, qcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer qcancel()
	q := exec.CommandContext(qctx, "qemu-system-x86_64",
		"-machine", "q35", "-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,unit=1,file="+varsCopy,
		"-chardev", "socket,id=chrtpm,path="+ctrl,
		"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
		"-device", "tpm-crb,tpmdev=tpm0",
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4",
		"-serial", "file:"+serial,
		"-monitor", "unix:"+mon+",server,nowait")
	var qout bytes.Buffer
	q.Stdout, q.Stderr = &qout, &qout
	start := time.Now()
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	qdone := make(chan error, 1)
	go func() { qdone <- q.Wait() }()
	var out []byte
	for {
		out, _ = os.ReadFile(serial)
		if bytes.Contains(out, []byte("=== DONE")) {
			break
		}
		select {
		case err := <-qdone:
			t.Fatalf("QEMU exited before the VM printed its PCRs: %v\n%s\nserial:\n%s", err, qout.Bytes(), tail(out, 40))
		case <-time.After(200 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	t.Logf("QEMU %s (TCG) with %s booted %s to its initramfs script in %v", qemuVersion(), filepath.Base(code),
		filepath.Base(vmlinuz), elapsed.Round(time.Millisecond))

	logData, linuxPCRs := parseSerial(t, out)
	if len(logData) == 0 {
		t.Fatalf("empty event log; serial output:\n%s", tail(out, 40))
	}
	el, err := measure.Parse(logData)
	if err != nil {
		t.Fatalf("parsing the firmware event log: %v", err)
	}
	regs, err := el.Replay()
	if err != nil {
		t.Fatal(err)
	}
	bank := regs.Bank(measure.SHA256)
	if bank == nil {
		t.Fatal("no SHA-256 bank in the event log")
	}

	// Our vTPM's own PCRs, read through the mssim port of the same serve.
	tpm, err := tcp.Open(tcp.Config{CommandAddress: mssim[1], PlatformAddress: mssim[2]})
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	for i := 0; i < 8; i++ {
		want := bank.Value(i)
		if got := linuxPCRs[i]; !bytes.Equal(got, want) {
			t.Errorf("PCR %d: Linux read %x, the log replays to %x", i, got, want)
		}
		r, err := (tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(uint(i))},
		}}}).Execute(tpm)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.PCRValues.Digests[0].Buffer; !bytes.Equal(got, want) {
			t.Errorf("PCR %d: our vTPM holds %x, the log replays to %x", i, got, want)
		}
	}
	t.Logf("the event log (%d bytes) replays to the PCRs Linux read and to our vTPM's, PCRs 0-7", len(logData))

	// Quit QEMU: it sends CMD_SHUTDOWN, and vtpm serve exits as swtpm does.
	if m, err := net.Dial("unix", mon); err == nil {
		m.SetReadDeadline(time.Now().Add(2 * time.Second))
		m.Read(make([]byte, 256))
		fmt.Fprintf(m, "quit\n")
		defer m.Close()
	}
	<-qdone
	if code := <-served; code != 0 {
		t.Fatalf("vtpm serve exited %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no sealed state after the boot: %v", err)
	}
}

func parseSerial(t *testing.T, out []byte) ([]byte, map[int][]byte) {
	t.Helper()
	var b64 strings.Builder
	pcrs := map[int][]byte{}
	in := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "=== EVENTLOG BEGIN":
			in = true
		case line == "=== EVENTLOG END":
			in = false
		case in:
			b64.WriteString(line)
		case strings.HasPrefix(line, "=== PCR "):
			var i int
			var v string
			if _, err := fmt.Sscanf(line, "=== PCR %d %s", &i, &v); err == nil {
				pcrs[i], _ = hex.DecodeString(v)
			}
		}
	}
	data, err := base64.StdEncoding.DecodeString(b64.String())
	if err != nil {
		t.Fatalf("event log base64: %v", err)
	}
	return data, pcrs
}

func tail(b []byte, n int) string {
	l := strings.Split(string(b), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func qemuVersion() string {
	out, err := exec.Command("qemu-system-x86_64", "--version").Output()
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(out))
	if len(f) >= 4 {
		return f[3]
	}
	return strings.TrimSpace(string(out))
}
