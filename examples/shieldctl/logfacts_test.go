package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// windowsFiles writes the real Windows log and its quoted SHA-1 PCRs
// (PCRS.json layout) into a temporary directory.
func windowsFiles(t *testing.T) (logFile, pcrsFile string) {
	t.Helper()
	j, err := os.ReadFile(filepath.Join(testdata, "quotes", "windows_gcp_shielded_vm.json"))
	if err != nil {
		t.Fatal(err)
	}
	var q struct {
		Log struct {
			PCRs []struct {
				Index  uint32
				Digest []byte
			}
			Raw []byte
		}
	}
	if err := json.Unmarshal(j, &q); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logFile = filepath.Join(dir, "wbcl.bin")
	if err := os.WriteFile(logFile, q.Log.Raw, 0o600); err != nil {
		t.Fatal(err)
	}
	pcrs := map[string]map[string]string{"sha1": {}}
	for _, p := range q.Log.PCRs {
		pcrs["sha1"][strconv.Itoa(int(p.Index))] = hex.EncodeToString(p.Digest)
	}
	b, _ := json.Marshal(pcrs)
	pcrsFile = filepath.Join(dir, "pcrs.json")
	if err := os.WriteFile(pcrsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return logFile, pcrsFile
}

// TestLogFactsWindows: the facts of the real Windows log, verified against
// its quoted PCRs, show its boot configuration.
func TestLogFactsWindows(t *testing.T) {
	logFile, pcrsFile := windowsFiles(t)
	code, out, errOut := runCLI(t, "log", "facts", "--json", "--pcrs", pcrsFile, logFile)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct {
		Verified bool `json:"verified"`
		Facts    struct {
			SecureBoot struct {
				Enabled struct{ Value bool } `json:"enabled"`
			} `json:"secure_boot"`
			Windows map[string]json.RawMessage `json:"windows"`
		} `json:"facts"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if !got.Verified || !got.Facts.SecureBoot.Enabled.Value {
		t.Fatalf("verified %v, secure boot %v", got.Verified, got.Facts.SecureBoot.Enabled.Value)
	}
	for _, k := range []string{"boot_debugging", "code_integrity", "pagefile_encryption_enabled", "hibernation_disabled", "dumps_disabled", "dump_encryption_enabled", "modules"} {
		if _, ok := got.Facts.Windows[k]; !ok {
			t.Errorf("windows.%s missing", k)
		}
	}
	code, out, _ = runCLI(t, "log", "facts", "--pcrs", pcrsFile, logFile)
	if code != 0 || !strings.Contains(out, "windows.code_integrity           true") || !strings.Contains(out, "verified against") {
		t.Fatalf("exit %d, text output:\n%s", code, out)
	}
}

// TestLogFactsWithoutPCRsIsMarkedUnverified: without quoted values the
// facts are shown, marked as the log's own claims.
func TestLogFactsWithoutPCRsIsMarkedUnverified(t *testing.T) {
	f := filepath.Join(testdata, "eventlogs", "ubuntu-2404-amd-sevsnp.bin")
	code, out, errOut := runCLI(t, "log", "facts", f)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out, "# UNVERIFIED") || !strings.Contains(out, "confidential.technology") {
		t.Fatalf("output:\n%s", out)
	}
	code, out, _ = runCLI(t, "log", "facts", "--json", f)
	var got struct{ Verified bool }
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 || got.Verified {
		t.Fatalf("exit %d, verified %v, %v", code, got.Verified, err)
	}
}

// TestLogFactsForeignPCRsFail: PCR values of another host verify nothing;
// the verb fails and the facts hold nothing from the mismatched registers.
func TestLogFactsForeignPCRsFail(t *testing.T) {
	logFile, pcrsFile := windowsFiles(t)
	b, _ := os.ReadFile(pcrsFile)
	var pcrs map[string]map[string]string
	json.Unmarshal(b, &pcrs)
	pcrs["sha1"]["7"] = strings.Repeat("00", 20)
	b, _ = json.Marshal(pcrs)
	os.WriteFile(pcrsFile, b, 0o600)
	code, out, _ := runCLI(t, "log", "facts", "--pcrs", pcrsFile, logFile)
	if code != 1 || !strings.Contains(out, "FAIL: sha1[7]") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	if strings.Contains(out, "secure_boot.enabled") {
		t.Fatal("Secure Boot reported from the mismatched PCR 7")
	}
}

func TestLogFactsUsage(t *testing.T) {
	if code, _, _ := runCLI(t, "log", "facts"); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if code, _, errOut := runCLI(t, "log", "facts", "/nonexistent"); code != 1 || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

// TestLogEventsDecoded: log events shows the typed decoding of event data.
func TestLogEventsDecoded(t *testing.T) {
	logFile, _ := windowsFiles(t)
	code, out, _ := runCLI(t, "log", "events", logFile)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"SecureBoot, 1 bytes = true", `\EFI\Microsoft\Boot\bootmgfw.efi`, "TrustBoundary{", "separator \"WBCL\"", `"EFI system partition"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log events output lacks %q", want)
		}
	}
}
