//go:build interop

// Interop tests with real clients: tpm2-tools through -T mssim, and QEMU
// with Debian's OVMF through the swtpm control channel. They need the
// Debian packages tpm2-tools, qemu-system-x86 and ovmf (.ci/run installs
// them). With -record, they write the byte streams the clients sent to
// testdata/, where the fuzz targets take their seeds.
package server

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var record = flag.Bool("record", false, "write the recorded client streams to testdata/")

// recorder keeps what clients sent on the connections of a listener.
type recorder struct {
	net.Listener
	mu      sync.Mutex
	streams []*bytes.Buffer
}

type recConn struct {
	net.Conn
	buf *bytes.Buffer
	mu  *sync.Mutex
}

func (r *recConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.buf.Write(p[:n])
	r.mu.Unlock()
	return n, err
}

// recUnixConn records a unix connection and still receives descriptors.
type recUnixConn struct {
	*net.UnixConn
	buf *bytes.Buffer
	mu  *sync.Mutex
}

func (r *recUnixConn) ReadMsgUnix(b, oob []byte) (int, int, int, *net.UnixAddr, error) {
	n, oobn, flags, addr, err := r.UnixConn.ReadMsgUnix(b, oob)
	if n > 0 {
		r.mu.Lock()
		r.buf.Write(b[:n])
		r.mu.Unlock()
	}
	return n, oobn, flags, addr, err
}

func (r *recorder) Accept() (net.Conn, error) {
	c, err := r.Listener.Accept()
	if err != nil {
		return nil, err
	}
	b := &bytes.Buffer{}
	r.mu.Lock()
	r.streams = append(r.streams, b)
	r.mu.Unlock()
	if uc, ok := c.(*net.UnixConn); ok {
		return &recUnixConn{UnixConn: uc, buf: b, mu: &r.mu}, nil
	}
	return &recConn{Conn: c, buf: b, mu: &r.mu}, nil
}

// take returns and forgets everything recorded so far, concatenated.
func (r *recorder) take() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []byte
	for _, s := range r.streams {
		out = append(out, s.Bytes()...)
	}
	r.streams = nil
	return out
}

func save(t *testing.T, name string, b []byte) {
	if !*record || len(b) == 0 {
		return
	}
	if err := os.WriteFile(filepath.Join("testdata", name+".bin"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func need(t *testing.T, cmds ...string) {
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is not installed (apt-get install tpm2-tools qemu-system-x86 ovmf): %v", c, err)
		}
	}
}

func firstLines(b []byte, n int) string {
	l := strings.SplitN(string(b), "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, " | ")
}

// listenPair listens on a free port P and on P+1, as tcti-mssim expects.
func listenPair(t *testing.T) (net.Listener, net.Listener) {
	for i := 0; i < 20; i++ {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := tl.Addr().(*net.TCPAddr).Port
		pl, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		if err == nil {
			return tl, pl
		}
		tl.Close()
	}
	t.Fatal("no free pair of ports")
	return nil, nil
}

// TestInteropQEMUFirmware boots QEMU (TCG) with Debian's OVMF and the
// served TPM as its tpm-crb device, with no disk: the firmware measures
// itself into the TPM and stops at its boot manager. It checks that the
// firmware started the TPM and extended PCR 0, and records the control and
// data streams.
func TestInteropQEMUFirmware(t *testing.T) {
	need(t, "qemu-system-x86_64")
	code, vars := ovmf(t)
	d := sockDir(t)
	ctrl := filepath.Join(d, "ctrl")
	cl, err := net.Listen("unix", ctrl)
	if err != nil {
		t.Fatal(err)
	}
	cr := &recorder{Listener: cl}
	in := New(newTPM(t, "qemu"), &Config{VMID: "qemu"})
	var dataRec bytes.Buffer
	var dataMu sync.Mutex
	in.wrapData = func(c net.Conn) net.Conn { return &recConn{Conn: c, buf: &dataRec, mu: &dataMu} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.ServeSwtpm(ctx, cr, nil) }()
	defer func() { cancel(); <-done; in.Close() }()

	varsCopy := filepath.Join(d, "vars.fd")
	b, err := os.ReadFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(varsCopy, b, 0o600)
	mon := filepath.Join(d, "mon")
	serial := filepath.Join(d, "serial")
	qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer qcancel()
	q := exec.CommandContext(qctx, "qemu-system-x86_64",
		"-machine", "q35", "-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,unit=1,file="+varsCopy,
		"-chardev", "socket,id=chrtpm,path="+ctrl,
		"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
		"-device", "tpm-crb,tpmdev=tpm0",
		"-serial", "file:"+serial,
		"-monitor", "unix:"+mon+",server,nowait")
	var qout bytes.Buffer
	q.Stdout, q.Stderr = &qout, &qout
	start := time.Now()
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the firmware has extended PCR 0, and PCR 7 (the Secure
	// Boot policy, measured later in DXE), then quit.
	var pcr0, pcr7 []byte
	var seen0, seen7 time.Duration
	for time.Since(start) < 4*time.Minute && pcr7 == nil {
		time.Sleep(100 * time.Millisecond)
		if v := pcrOf(in, 0); pcr0 == nil && v != nil && !bytes.Equal(v, make([]byte, 32)) {
			pcr0, seen0 = v, time.Since(start)
		}
		if v := pcrOf(in, 7); v != nil && !bytes.Equal(v, make([]byte, 32)) {
			pcr7, seen7 = v, time.Since(start)
		}
	}
	quitQEMU(t, q, mon)
	t.Logf("PCR 0 extended %v and PCR 7 %v after QEMU started; QEMU ran %v; output: %s", seen0.Round(time.Millisecond),
		seen7.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), firstLines(qout.Bytes(), 5))
	if pcr0 == nil || pcr7 == nil {
		t.Fatalf("the firmware did not extend PCRs 0 and 7 within 4 minutes\n%s", qout.Bytes())
	}
	t.Logf("PCR 0 (SHA-256) after OVMF: %x", pcr0)
	save(t, "ctrl-qemu", cr.take())
	dataMu.Lock()
	save(t, "data-ovmf", dataRec.Bytes())
	dataMu.Unlock()
}

// quitQEMU asks QEMU to quit through its monitor and waits for it; it
// kills QEMU if that does not work within 10 seconds.
func quitQEMU(t *testing.T, q *exec.Cmd, mon string) {
	done := make(chan error, 1)
	go func() { done <- q.Wait() }()
	if m, err := net.Dial("unix", mon); err == nil {
		m.SetReadDeadline(time.Now().Add(2 * time.Second))
		m.Read(make([]byte, 256)) // the monitor's banner
		fmt.Fprintf(m, "quit\n")
		defer m.Close()
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Log("QEMU did not quit from its monitor; killing it")
		q.Process.Kill()
		<-done
	}
}

// pcrOf reads PCR i < 8 (SHA-256) from a running instance, or nil.
func pcrOf(in *Instance, i int) []byte {
	cmd := []byte{0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7E, 0, 0, 0, 1, 0, 0x0B, 3, byte(1 << i), 0, 0}
	r := in.execute(context.Background(), cmd, nil, MaxCommandSize)
	if rc(r) != 0 || len(r) < 32 {
		return nil
	}
	return r[len(r)-32:]
}

func ovmf(t *testing.T) (code, vars string) {
	for _, p := range [][2]string{
		{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
		{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
	} {
		if _, err := os.Stat(p[0]); err == nil {
			return p[0], p[1]
		}
	}
	t.Fatal("OVMF is not installed (apt-get install ovmf)")
	return "", ""
}
