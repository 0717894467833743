package measure

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden facts in testdata/golden")

// factsLog is one real log of testdata with the quoted values its facts
// are taken under.
type factsLog struct {
	name   string // golden file name, without .json
	log    *Log
	quoted QuotedValues
}

// loadQuote reads a go-attestation JSON quote file: its raw log and its
// quoted PCRs.
func loadQuote(t testing.TB, path string) (*Log, QuotedValues) {
	t.Helper()
	j, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var wq windowsQuote
	if err := json.Unmarshal(j, &wq); err != nil {
		t.Fatal(err)
	}
	l, err := Parse(wq.Log.Raw)
	if err != nil {
		t.Fatal(err)
	}
	q := QuotedValues{SHA1: {}}
	for _, p := range wq.Log.PCRs {
		if p.DigestAlg != 3 {
			t.Fatalf("PCR %d: digest alg %d", p.Index, p.DigestAlg)
		}
		q[SHA1][p.Index] = p.Digest
	}
	return l, q
}

// factsCorpus returns every real log of testdata. The shared logs are
// verified against their own replay, which is what a truthful TPM would
// quote; the two quotes carry the PCRs a real TPM signed.
func factsCorpus(t testing.TB) []factsLog {
	t.Helper()
	var out []factsLog
	for _, dir := range []string{"eventlogs", "ccel"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.bin"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, ".table.bin") {
				continue // the ACPI CCEL table, not a log
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var l *Log
			if dir == "ccel" {
				l, err = ParseCCEL(data)
			} else {
				l, err = Parse(data)
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			name := dir + "_" + strings.TrimSuffix(filepath.Base(f), ".bin")
			out = append(out, factsLog{name: name, log: l, quoted: quotedFromReplay(t, l)})
		}
	}
	for _, q := range []string{"windows_gcp_shielded_vm", "linux_tpm12"} {
		l, quoted := loadQuote(t, filepath.Join("testdata", "quotes", q+".json"))
		out = append(out, factsLog{name: "quotes_" + q, log: l, quoted: quoted})
	}
	if len(out) < 18 {
		t.Fatalf("found %d logs, want the whole corpus", len(out))
	}
	return out
}

func verifiedFacts(t testing.TB, c factsLog) (*VerifiedLog, *Facts) {
	t.Helper()
	v, err := c.log.Verify(c.quoted, VerifyOptions{})
	if errors.Is(err, ErrNothingVerified) {
		return nil, nil
	}
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	f, err := v.Facts()
	if err != nil {
		t.Fatalf("%s: facts: %v", c.name, err)
	}
	return v, f
}

// TestFactsGolden pins the facts of every real log. Run with -update to
// regenerate testdata/golden after a deliberate change, and review the diff.
func TestFactsGolden(t *testing.T) {
	for _, c := range factsCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			_, f := verifiedFacts(t, c)
			got, err := json.MarshalIndent(f, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "golden", c.name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestFactsGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("facts differ from %s; run with -update and review the diff.\n%s", path, firstDiff(string(want), string(got)))
			}
		})
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range min(len(wl), len(gl)) {
		if wl[i] != gl[i] {
			return "line " + itoa(i+1) + ":\n- " + wl[i] + "\n+ " + gl[i]
		}
	}
	return "lengths differ"
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// TestCorpusDecodes decodes every event of every real log: no event whose
// type this package decodes fails to decode, and no data whose digest the
// profile defines as the data's hash fails to match, except the known
// cases pinned here.
func TestCorpusDecodes(t *testing.T) {
	// Old shim versions measured their built-in "Shim" certificate in a
	// UEFI_VARIABLE_DATA with 6 stray bytes, and with a digest of
	// something else than the event data.
	knownMismatch := map[string]int{"eventlogs_debian-10": 1, "eventlogs_sb_cert": 2}
	knownDecodeError := knownMismatch
	for _, c := range factsCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			mismatches, decodeErrors := 0, 0
			for i := range c.log.UnverifiedEvents() {
				ev := &c.log.UnverifiedEvents()[i]
				d := decodeEvent(ev, c.log.Kind, strongestAlg(ev.digests, nil))
				if d.Err != nil {
					decodeErrors++
					t.Logf("event %d (%v): %v", ev.Index, ev.Type, d.Err)
				}
				if d.Binding == BindingMismatched {
					mismatches++
					t.Logf("event %d (%v): data does not match: %s", ev.Index, ev.Type, d.Data)
				}
				if s := DescribeUnverified(ev); s == "" {
					t.Errorf("event %d: empty description", ev.Index)
				}
			}
			if decodeErrors != knownDecodeError[c.name] {
				t.Errorf("%d events do not decode, want %d", decodeErrors, knownDecodeError[c.name])
			}
			if mismatches != knownMismatch[c.name] {
				t.Errorf("%d events whose data does not match the digest, want %d", mismatches, knownMismatch[c.name])
			}
		})
	}
}

// TestLogHasNoFactsMethod: facts can be taken from a VerifiedLog only.
func TestLogHasNoFactsMethod(t *testing.T) {
	if _, ok := reflect.TypeFor[*Log]().MethodByName("Facts"); ok {
		t.Fatal("*Log has a Facts method: facts could be taken from an unverified log")
	}
	if _, err := (*VerifiedLog)(nil).Facts(); !errors.Is(err, ErrNotVerified) {
		t.Fatalf("Facts of a nil VerifiedLog = %v, want ErrNotVerified", err)
	}
}
