package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/tcp"
)

// syncBuffer is a bytes.Buffer that a running verb and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until re matches what a running verb printed.
func waitFor(t *testing.T, b *syncBuffer, re *regexp.Regexp) []string {
	t.Helper()
	for i := 0; i < 500; i++ {
		if m := re.FindStringSubmatch(b.String()); m != nil {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %q in %q", re, b.String())
	return nil
}

var mssimRE = regexp.MustCompile(`mssim: TPM (\S+), platform (\S+)`)

// serveVTPM runs `vtpm serve` in process until the returned stop is called;
// stop returns the exit code and what the verb wrote to stderr.
func serveVTPM(t *testing.T, args ...string) (addrs []string, stop func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"vtpm", "serve", "--mssim", "127.0.0.1:0"}, args...), &stdout, &stderr)
	}()
	m := waitFor(t, &stdout, mssimRE)
	return m[1:], func() (int, string) {
		cancel()
		select {
		case code := <-done:
			return code, stderr.String()
		case <-time.After(10 * time.Second):
			t.Fatal("vtpm serve did not exit")
			return 0, ""
		}
	}
}

func TestVTPMServeStatePersists(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "vm.state")
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte(strings.Repeat("ab", 32)+"\n"), 0o600)

	addrs, stop := serveVTPM(t, "--state", state, "--key-file", key, "--vm-id", "vm1")
	tpm, err := tcp.Open(tcp.Config{CommandAddress: addrs[0], PlatformAddress: addrs[1]})
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm.PowerOn(); err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(tpm); err != nil {
		t.Fatal(err)
	}
	defineIndex(t, tpm, []byte("persist!"))
	// The NV write was sealed to disk before it was acknowledged: a copy
	// taken now (as after a crash) holds it.
	crashCopy, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	tpm.Close()
	if code, errs := stop(); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".vm.state.tmp*")); len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}

	for _, blob := range [][]byte{nil, crashCopy} {
		if blob != nil {
			os.WriteFile(state, blob, 0o600)
		}
		addrs, stop = serveVTPM(t, "--state", state, "--key-file", key, "--vm-id", "vm1")
		tpm, err = tcp.Open(tcp.Config{CommandAddress: addrs[0], PlatformAddress: addrs[1]})
		if err != nil {
			t.Fatal(err)
		}
		tpm.PowerOn()
		if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(tpm); err != nil {
			t.Fatal(err)
		}
		if got := readIndex(t, tpm); string(got) != "persist!" {
			t.Fatalf("NV after a restart: %q", got)
		}
		tpm.Close()
		stop()
	}
}

func TestVTPMServeGeneratesKeyWithWarning(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "vm.state")
	_, stop := serveVTPM(t, "--state", state)
	code, errs := stop()
	if code != 0 || !strings.Contains(errs, "warning: no --key-file") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	k, err := os.ReadFile(state + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := hex.DecodeString(strings.TrimSpace(string(k))); err != nil || len(b) != 32 {
		t.Fatalf("generated key file %q", k)
	}
	if fi, _ := os.Stat(state + ".key"); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
	// The second start reuses the key without a warning.
	_, stop = serveVTPM(t, "--state", state)
	if code, errs := stop(); code != 0 || strings.Contains(errs, "warning") {
		t.Fatalf("second start: exit %d, stderr %q", code, errs)
	}
}

// TestStateFileFromAnotherVMIsRefused checks that a state sealed for one VM
// does not serve another, and that a state under another key is refused.
func TestStateFileFromAnotherVMIsRefused(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "vm.state")
	_, stop := serveVTPM(t, "--state", state, "--vm-id", "vm1")
	stop()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"vtpm", "serve", "--mssim", "127.0.0.1:0", "--state", state, "--vm-id", "vm2"}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "another VM") {
		t.Fatalf("another VM's state: exit %d, %q", code, errb.String())
	}
	other := filepath.Join(dir, "other.key")
	os.WriteFile(other, make([]byte, 32), 0o600)
	errb.Reset()
	if code := run(context.Background(), []string{"vtpm", "serve", "--mssim", "127.0.0.1:0", "--state", state, "--vm-id", "vm1", "--key-file", other}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "corrupt or sealed under another key") {
		t.Fatalf("another key: exit %d, %q", code, errb.String())
	}
}

func TestVTPMServeUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--mssim", "127.0.0.1:0", "--key-file", "k"},
		{"--mssim", "127.0.0.1:0", "--terminate"},
		{"--mssim", "nonsense"},
		{"--mssim", "127.0.0.1:0", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"vtpm", "serve"}, args...), &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"vtpm", "serve", "--mssim", "127.0.0.1:0", "--key-file", "/nonexistent", "--state", "/tmp/x"}, &out, &errb); code != 1 {
		t.Errorf("missing key file: exit %d", code)
	}
}

const testIndex = 0x01500017

func defineIndex(t *testing.T, tpm *tcp.TPM, data []byte) {
	t.Helper()
	_, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: tpm2.TPMHandle(testIndex), NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NT: tpm2.TPMNTOrdinary, NoDA: true},
			DataSize:   uint16(len(data)),
		}),
	}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	_, err = (tpm2.NVWrite{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(testIndex), Name: indexName(t, tpm)},
		Data:       tpm2.TPM2BMaxNVBuffer{Buffer: data},
	}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
}

func indexName(t *testing.T, tpm *tcp.TPM) tpm2.TPM2BName {
	t.Helper()
	r, err := (tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(testIndex)}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	return r.NVName
}

func readIndex(t *testing.T, tpm *tcp.TPM) []byte {
	t.Helper()
	r, err := (tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(testIndex), Name: indexName(t, tpm)},
		Size:       8,
	}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	return r.Data.Buffer
}
