//go:build interop

package server

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// startSwtpm starts swtpm (Debian's package) with a control and a data
// socket, as libvirt does, and connects to both.
func startSwtpm(b *testing.B, dir string) (*ctrlClient, net.Conn, *exec.Cmd) {
	b.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		b.Skip("swtpm is not installed")
	}
	state := filepath.Join(dir, "state")
	os.MkdirAll(state, 0o700)
	ctrl, data := filepath.Join(dir, "ctrl"), filepath.Join(dir, "data")
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--ctrl", "type=unixio,path="+ctrl, "--server", "type=unixio,path="+data, "--flags", "not-need-init")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var cc *net.UnixConn
	var dc net.Conn
	for i := 0; i < 2000 && (cc == nil || dc == nil); i++ {
		if cc == nil {
			if c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: ctrl, Net: "unix"}); err == nil {
				cc = c
			}
		}
		if dc == nil {
			if c, err := net.Dial("unix", data); err == nil {
				dc = c
			}
		}
		if cc == nil || dc == nil {
			time.Sleep(500 * time.Microsecond)
		}
	}
	if cc == nil || dc == nil {
		cmd.Process.Kill()
		b.Fatal("swtpm did not open its sockets")
	}
	return &ctrlClient{t: b, c: cc}, dc, cmd
}

// BenchmarkPeerSwtpmSocket runs BenchmarkSwtpmSocket's client against
// swtpm over the same kind of socket, for comparison.
func BenchmarkPeerSwtpmSocket(b *testing.B) {
	c, data, cmd := startSwtpm(b, sockDir(b))
	defer func() { c.res(cmdShutdown, nil); cmd.Wait() }()
	c.boot(rawTPM{data})
	runCommands(b, rawTPM{data})
}

// BenchmarkPeerSwtpmStart measures what BenchmarkServedStart measures, for
// a swtpm process: start, open the sockets, CMD_INIT, TPM2_Startup.
func BenchmarkPeerSwtpmStart(b *testing.B) {
	dir := sockDir(b)
	startup := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0}
	n := 0
	for b.Loop() {
		n++
		d := filepath.Join(dir, fmt.Sprint(n))
		os.MkdirAll(d, 0o700)
		c, data, cmd := startSwtpm(b, d)
		if res := c.res(cmdInit, be32(0)); res != 0 {
			b.Fatal(res)
		}
		if rsp, err := (rawTPM{data}).Send(startup); err != nil || rc(rsp) != 0 {
			b.Fatal(rc(rsp), err)
		}
		c.res(cmdShutdown, nil)
		cmd.Wait()
		data.Close()
		c.c.Close()
	}
}
