package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/examples/hgs/server"
	"github.com/shieldvm/shieldvm/examples/host/agent"
	"github.com/shieldvm/shieldvm/keyprotector"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
)

const logPath = "../demo/testdata/rhel8-uefi.bin"

// TestHostCommands runs new-vm, identity and unlock (twice: the second
// start uses the re-keyed key protector and re-sealed state the first one
// wrote) against the service, with a vtpm host booted from the real log.
func TestHostCommands(t *testing.T) {
	ctx := context.Background()
	g, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "hgs"})
	tk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	svc, err := server.New(server.Config{
		Store: &server.MemoryStore{}, Guardian: g, TokenKey: tk, ChallengeSecret: make([]byte, 32),
		AdminTokenSHA256: sha256.Sum256([]byte("admin-token-for-tests")), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(svc.Handler())
	ts.StartTLS()
	defer ts.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644)
	admin := &agent.Client{URL: ts.URL, HTTP: ts.Client(), AdminToken: "admin-token-for-tests"}

	cmd := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(ctx, args, &out, &errb); code != want {
			t.Fatalf("host %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	for _, mode := range []attest.Mode{attest.ModeTPM, attest.ModeHostKey} {
		t.Run(mode.String(), func(t *testing.T) { hostCommands(t, cmd, admin, ts.URL, ca, t.TempDir(), mode) })
	}
}

// hostCommands runs the host's commands against the service in one mode:
// the default (TPM: the vtpm's EK registered, credential activation) or
// host-key.
func hostCommands(t *testing.T, cmd func(int, ...string) string, admin *agent.Client, url, ca, dir string, mode attest.Mode) {
	ctx := context.Background()
	var modeArgs []string
	if mode != attest.ModeTPM {
		modeArgs = []string{"-mode", mode.String()}
	}
	host := func(args ...string) []string { return append(args, modeArgs...) }
	kp, state, hostState := filepath.Join(dir, "vm.kp"), filepath.Join(dir, "vm.vtpm"), filepath.Join(dir, "host")
	cmd(0, "new-vm", "-hgs", url, "-ca", ca, "-owner", filepath.Join(dir, "owner.key"), "-kp", kp, "-vtpm-state", state, "-vm", "vm-7")

	// The service knows neither the host nor a policy yet.
	cmd(1, host("unlock", "-hgs", url, "-ca", ca, "-kp", kp, "-vtpm-state", state, "-vm", "vm-7", "-state", hostState, "-tpm", "vtpm", "-eventlog", logPath)...)

	var idOut, idErr bytes.Buffer
	if code := run(ctx, host("identity", "-state", hostState, "-tpm", "vtpm", "-eventlog", logPath), &idOut, &idErr); code != 0 {
		t.Fatalf("identity: %d %s", code, idErr.String())
	}
	if !strings.Contains(idErr.String(), "mode="+mode.String()) {
		t.Fatalf("identity: %s", idErr.String())
	}
	if err := admin.RegisterHost(ctx, "host-"+mode.String(), mode, idOut.Bytes()); err != nil {
		t.Fatal(err)
	}
	pol := cmd(0, "baseline", "-eventlog", logPath, "-id", "host-test")
	if want := string(pcrPolicy(t)); !strings.Contains(pol, strings.TrimSpace(want[strings.Index(want, `"pcrs"`):])) {
		t.Fatalf("baseline:\n%s\nwant the PCRs of:\n%s", pol, want)
	}
	if err := admin.SetPolicy(ctx, []byte(pol)); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		out := cmd(0, host("unlock", "-v", "-hgs", url, "-ca", ca, "-kp", kp, "-vtpm-state", state, "-vm", "vm-7", "-state", hostState, "-tpm", "vtpm", "-eventlog", logPath)...)
		if !strings.Contains(out, fmt.Sprintf("re-keyed to generation %d", i+1)) || !strings.Contains(out, "health token") {
			t.Fatalf("start %d:\n%s", i, out)
		}
	}
	// The VM's files opened under another VM id: refused.
	cmd(1, host("unlock", "-hgs", url, "-ca", ca, "-kp", kp, "-vtpm-state", state, "-vm", "vm-8", "-state", hostState, "-tpm", "vtpm", "-eventlog", logPath)...)
	// Usage errors.
	cmd(2, "unlock", "-hgs", url)
	cmd(2, "frobnicate")
	cmd(2, "baseline")
	cmd(2, "identity", "-state", hostState, "-tpm", "vtpm")
}

func pcrPolicy(t *testing.T) []byte {
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	l, err := measure.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	regs, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	pol := &policy.Policy{Version: policy.Version, ID: "host-test", PCRs: map[string]map[string][]policy.Digest{"sha256": {}}}
	for r := range 8 {
		pol.PCRs["sha256"][fmt.Sprint(r)] = []policy.Digest{regs.Bank(measure.SHA256).Value(r)}
	}
	b, err := pol.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
