package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shieldvm/shieldvm/policy"
)

const (
	windowsEvidence = "../../attest/testdata/windows_gcp_shielded_vm.json"
	simEvidence     = "../../attest/testdata/evidence_tpm_p256.cbor"
	policyTestdata  = "../../policy/testdata"
)

func TestAttestVerifyWindows(t *testing.T) {
	code, out, errOut := runCLI(t, "attest", "verify", "--allow-sha1", windowsEvidence)
	if code != 0 || !strings.Contains(out, "quote: verified") || !strings.Contains(out, "21 of 21 events verified, registers 0,4-5,7,11-14") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

func TestAttestVerifySHA1RefusedByDefault(t *testing.T) {
	code, _, errOut := runCLI(t, "attest", "verify", windowsEvidence)
	if code != 1 || !strings.Contains(errOut, "SHA-1") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestAttestVerifySimulatorEvidence(t *testing.T) {
	code, out, errOut := runCLI(t, "attest", "verify", "--json", simEvidence)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var v struct {
		Quote struct {
			Selection map[string]string `json:"selection"`
			ExtraData string            `json:"extra_data"`
		} `json:"quote"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.Quote.Selection["sha256"] != "0-15" || len(v.Quote.ExtraData) != 64 {
		t.Errorf("%+v", v)
	}
	// The same quote offered for another nonce is refused.
	code, _, errOut = runCLI(t, "attest", "verify", "--nonce", strings.Repeat("00", 32), simEvidence)
	if code != 1 || !strings.Contains(errOut, "qualifying data") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestAttestVerifyWithPolicy(t *testing.T) {
	code, out, _ := runCLI(t, "attest", "verify", "--allow-sha1", "--policy", filepath.Join(policyTestdata, "gce-windows.policy.json"), windowsEvidence)
	if code != 0 || !strings.Contains(out, "policy gce-windows: warning") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "attest", "verify", "--allow-sha1", "--policy", filepath.Join(policyTestdata, "hgs-strict.policy.json"), windowsEvidence)
	if code != 1 || !strings.Contains(out, "CONTRAINDICATED hgs.BitLockerEnabled") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestAttestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"attest", "verify"},
		{"attest", "verify", "--nonce", "zz", windowsEvidence},
		{"attest", "verify", "--nonce", "00", "--no-nonce", windowsEvidence},
		{"attest", "verify", "--bogus", windowsEvidence},
	} {
		if code, _, _ := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, _, errOut := runCLI(t, "attest", "verify", "no-such-file"); code != 1 || strings.Count(errOut, "\n") != 1 {
		t.Errorf("missing file: exit %d: %q", code, errOut)
	}
}

func TestPolicyEval(t *testing.T) {
	code, out, _ := runCLI(t, "policy", "eval", "--allow-sha1", "--json", filepath.Join(policyTestdata, "hgs-strict.policy.json"), windowsEvidence)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	var v policy.Verdict
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.Status != policy.Contraindicated || len(v.Failed()) == 0 || v.Failed()[0].Reason == "" {
		t.Fatalf("verdict %+v", v)
	}
	if code, _, errOut := runCLI(t, "policy", "eval", windowsEvidence, windowsEvidence); code != 1 || !strings.Contains(errOut, "invalid policy") {
		t.Fatalf("evidence as policy: exit %d: %s", code, errOut)
	}
}

// TestPolicyLearnThenEval: a baseline learned from a host affirms it.
func TestPolicyLearnThenEval(t *testing.T) {
	code, out, errOut := runCLI(t, "policy", "learn", "--allow-sha1", "--id", "learned", windowsEvidence)
	if code != 0 || !strings.Contains(errOut, "pinned") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	f := filepath.Join(t.TempDir(), "learned.json")
	if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, "policy", "eval", "--allow-sha1", f, windowsEvidence)
	if code != 0 || !strings.Contains(out, "policy learned: affirming") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if code, _, _ := runCLI(t, "policy", "learn"); code != 2 {
		t.Errorf("learn without evidence: exit %d, want 2", code)
	}
}
