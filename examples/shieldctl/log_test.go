package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testdata = "../../measure/testdata"

// runCLI runs shieldctl in process and returns its exit status and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

type replayedFile struct {
	Banks     map[string]map[string]string `json:"banks"`
	Events    int                          `json:"events"`
	Format    string                       `json:"format"`
	Padded    bool                         `json:"padded"`
	TPMQuoted map[string]map[string]string `json:"tpm_quoted"`
}

func corpusFiles(t *testing.T) map[string]replayedFile {
	t.Helper()
	out := map[string]replayedFile{}
	for _, dir := range []string{"eventlogs", "ccel"} {
		files, _ := filepath.Glob(filepath.Join(testdata, dir, "*.replayed.json"))
		for _, jf := range files {
			var r replayedFile
			b, err := os.ReadFile(jf)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			out[strings.TrimSuffix(jf, ".replayed.json")+".bin"] = r
		}
	}
	if len(out) < 15 {
		t.Fatalf("%d logs", len(out))
	}
	return out
}

// TestLogReplayJSON: `log replay --json` prints, for every real log, the
// format, event count, padding and every extended register of every bank
// that the reference replay gives.
func TestLogReplayJSON(t *testing.T) {
	for file, want := range corpusFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			code, out, errOut := runCLI(t, "log", "replay", "--json", file)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var got replayedFile
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatal(err)
			}
			want.TPMQuoted = nil
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func writeJSON(t *testing.T, v any) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pcrs.json")
	b, _ := json.Marshal(v)
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestLogVerify: `log verify` exits 0 when the PCR values match, 1 with a
// per-register report when they do not, and 0 again with the named quirk
// where the firmware needs it.
func TestLogVerify(t *testing.T) {
	files := corpusFiles(t)
	ubuntu := filepath.Join(testdata, "eventlogs/ubuntu-2104-no-secure-boot.bin")
	code, out, errOut := runCLI(t, "log", "verify", "--pcrs", writeJSON(t, files[ubuntu].Banks), ubuntu)
	if code != 0 || !strings.Contains(out, "OK:") {
		t.Fatalf("matching PCRs: exit %d\n%s%s", code, out, errOut)
	}

	ebs := filepath.Join(testdata, "eventlogs/ebs_event_missing.bin")
	pcrs := files[ebs].Banks
	pcrs["sha1"]["5"] = files[ebs].TPMQuoted["sha1"]["5"]
	f := writeJSON(t, pcrs)
	code, out, _ = runCLI(t, "log", "verify", "--pcrs", f, ebs)
	if code != 1 || !strings.Contains(out, "PCR  5  MISMATCHED") || !strings.Contains(out, "FAIL") {
		t.Fatalf("real PCR 5 without the quirk: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "log", "verify", "--quirk", "unlogged-exit-boot-services", "--pcrs", f, ebs)
	if code != 0 || !strings.Contains(out, "quirks needed: unlogged-exit-boot-services") {
		t.Fatalf("real PCR 5 with the quirk: exit %d\n%s", code, out)
	}

	// A register the log does not extend is reported, not failed.
	pcrs = map[string]map[string]string{"sha256": {"0": files[ubuntu].Banks["sha256"]["0"], "10": strings.Repeat("ab", 32)}}
	code, out, _ = runCLI(t, "log", "verify", "--pcrs", writeJSON(t, pcrs), ubuntu)
	if code != 0 || !strings.Contains(out, "absent") {
		t.Fatalf("register absent from the log: exit %d\n%s", code, out)
	}
}

// TestLogBadInputOneLine: bad input gives exit status 1 and one line that
// names the offset, never a panic or a stack trace.
func TestLogBadInputOneLine(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(testdata, "eventlogs/arch-linux-workstation.bin"))
	if err != nil {
		t.Fatal(err)
	}
	huge := bytes.Clone(good)
	binary.LittleEndian.PutUint32(huge[28:], 0xFFFFFFF0) // the Spec ID event's size
	flipped := bytes.Clone(good)
	// Flip the digest count of the event after the Spec ID event.
	flipped[32+binary.LittleEndian.Uint32(good[28:])+8] ^= 0xFF
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)/2],
		"huge-size": huge,
		"flipped":   flipped,
		"one-byte":  {0x01},
	} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(dir, name)
			if err := os.WriteFile(f, data, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, verbArgs := range [][]string{{"log", "replay"}, {"log", "events"}, {"log", "replay", "--json"}} {
				code, _, errOut := runCLI(t, append(verbArgs, f)...)
				if code != 1 {
					t.Fatalf("%v: exit %d, want 1 (%s)", verbArgs, code, errOut)
				}
				if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "offset") || strings.Contains(errOut, "goroutine") {
					t.Fatalf("%v: stderr %q, want one line naming the offset", verbArgs, errOut)
				}
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"log"}, {"log", "nope"}, {"log", "replay"}, {"log", "verify", "x.bin"}, {"log", "replay", "--bogus", "x"}} {
		if code, _, _ := runCLI(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}
