package policy

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/shieldvm/shieldvm/attest/attesttest"
	"github.com/shieldvm/shieldvm/measure"
)

// windowsInput is the real Windows Server boot: its log verified against
// its quoted SHA-1 PCRs. (Package attest checks the quote's signature;
// here the values are taken as quoted.)
func windowsInput(t testing.TB) *Input {
	t.Helper()
	b, err := os.ReadFile("testdata/windows_gcp_shielded_vm.json")
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Log struct {
			PCRs []struct {
				Index  uint32
				Digest []byte
			}
			Raw []byte
		}
	}
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	q := measure.QuotedValues{measure.SHA1: {}}
	for _, p := range w.Log.PCRs {
		q[measure.SHA1][p.Index] = p.Digest
	}
	return verified(t, w.Log.Raw, q)
}

func verified(t testing.TB, raw []byte, q measure.QuotedValues) *Input {
	t.Helper()
	l, err := measure.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	v, err := l.Verify(q, measure.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &Input{PCRs: q, Log: v}
}

func mustParse(t testing.TB, s string) *Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ruleOf(v *Verdict, name string) *RuleResult {
	for i := range v.Rules {
		if v.Rules[i].Rule == name {
			return &v.Rules[i]
		}
	}
	return nil
}

// TestWindowsPassingPolicy: a policy of what the real host does satisfy.
func TestWindowsPassingPolicy(t *testing.T) {
	p := mustParse(t, `{"version": 1, "id": "gce-windows",
		"hgs": {"SecureBootEnabled": "enforce", "UefiDebugDisabled": "enforce", "FullBoot": "enforce", "BootDebuggingDisabled": "enforce"}}`)
	v := p.Evaluate(windowsInput(t))
	if v.Status != Affirming {
		t.Fatalf("verdict %v", v)
	}
	sb := ruleOf(v, "hgs.SecureBootEnabled")
	if sb == nil || len(sb.Events) == 0 || sb.Events[0].PCR != 7 || sb.Events[0].Type != "EV_EFI_VARIABLE_DRIVER_CONFIG" {
		t.Errorf("SecureBootEnabled relied on %+v", sb)
	}
}

// TestWindowsFailingPolicy: the real host has no BitLocker unlock, no
// pagefile encryption, hibernation and dumps on: an HGS policy that
// requires them denies it, with each reason.
func TestWindowsFailingPolicy(t *testing.T) {
	p := mustParse(t, `{"version": 1, "id": "hgs-strict",
		"hgs": {"SecureBootEnabled": "enforce", "BitLockerEnabled": "enforce", "PageFileEncryptionEnabled": "enforce",
			"NoHibernation": "enforce", "NoDumps": "audit", "VsmIdkPresent": "enforce", "HypervisorEnforcedCiPolicy": "enforce",
			"IommuEnabled": "enforce", "DumpEncryption": "enforce"}}`)
	v := p.Evaluate(windowsInput(t))
	if v.Status != Contraindicated {
		t.Fatalf("verdict %v", v)
	}
	for _, name := range []string{"hgs.BitLockerEnabled", "hgs.PageFileEncryptionEnabled", "hgs.NoHibernation", "hgs.NoDumps", "hgs.VsmIdkPresent", "hgs.HypervisorEnforcedCiPolicy", "hgs.IommuEnabled", "hgs.DumpEncryption"} {
		r := ruleOf(v, name)
		if r == nil || r.Passed || r.Reason == "" {
			t.Errorf("%s: %+v, want a failure with a reason", name, r)
		}
	}
	if r := ruleOf(v, "hgs.NoDumps"); r.Status() != Warning {
		t.Errorf("audit rule status %v", r.Status())
	}
	if r := ruleOf(v, "hgs.SecureBootEnabled"); !r.Passed {
		t.Errorf("SecureBootEnabled: %+v", r)
	}
	t.Log(v)
}

// TestDebuggerBootDenied: a boot whose firmware ran in UEFI debug mode is
// denied, and the verdict names the event.
func TestDebuggerBootDenied(t *testing.T) {
	b := attesttest.NewLogBuilder(measure.SHA256)
	b.Add(0, measure.EV_POST_CODE, []byte("firmware"))
	b.Add(7, measure.EV_EFI_ACTION, []byte("UEFI Debug Mode"))
	for r := range uint32(8) {
		b.Add(r, measure.EV_SEPARATOR, []byte{0, 0, 0, 0})
	}
	in := verified(t, b.Bytes(), b.Values())
	p := mustParse(t, `{"version": 1, "id": "no-debug", "hgs": {"UefiDebugDisabled": "enforce"}}`)
	v := p.Evaluate(in)
	r := ruleOf(v, "hgs.UefiDebugDisabled")
	if v.Status != Contraindicated || r == nil || r.Passed || !strings.Contains(r.Reason, "UEFI Debug Mode") {
		t.Fatalf("verdict %v", v)
	}
	if len(r.Events) != 1 || r.Events[0].PCR != 7 || r.Events[0].Type != "EV_EFI_ACTION" {
		t.Errorf("events %+v", r.Events)
	}
}

// TestUnverifiedLogYieldsNoFacts: with no verified log, every fact rule
// fails, naming why; nothing passes on an absence.
func TestUnverifiedLogYieldsNoFacts(t *testing.T) {
	p := mustParse(t, `{"version": 1, "id": "x", "hgs": {"SecureBootEnabled": "enforce", "UefiDebugDisabled": "enforce"}}`)
	v := p.Evaluate(&Input{})
	if v.Status != Contraindicated || len(v.Failed()) != 2 {
		t.Fatalf("verdict %v", v)
	}
}

func TestEvaluateIsDeterministic(t *testing.T) {
	in := windowsInput(t)
	p := mustParse(t, `{"version": 1, "id": "x", "hgs": {"SecureBootEnabled": "enforce", "BitLockerEnabled": "audit"},
		"pcrs": {"sha1": {"7": ["859a5877266b5c90961346809127338a53867860"]}}}`)
	first := p.Evaluate(in)
	for range 5 {
		if diff := cmp.Diff(first, p.Evaluate(in)); diff != "" {
			t.Fatal(diff)
		}
	}
}

func TestPCRAllowList(t *testing.T) {
	in := windowsInput(t)
	pcr7 := in.PCRs[measure.SHA1][7]
	good := mustParse(t, `{"version": 1, "id": "x", "pcrs": {"sha1": {"7": ["`+hexs(pcr7)+`"]}}}`)
	if v := good.Evaluate(in); v.Status != Affirming {
		t.Fatalf("verdict %v", v)
	}
	bad := mustParse(t, `{"version": 1, "id": "x", "pcrs": {"sha1": {"7": ["`+strings.Repeat("00", 20)+`"]}, "sha256": {"0": ["`+strings.Repeat("00", 32)+`"]}}}`)
	v := bad.Evaluate(in)
	if v.Status != Contraindicated || len(v.Failed()) != 2 || !strings.Contains(ruleOf(v, "pcr.sha256[0]").Reason, "not quoted") {
		t.Fatalf("verdict %v", v)
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}

func TestParseIsStrict(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":    `{"version": 1, "id": "x", "hgs": {"SecureBootEnabled": "enforce"}, "extra": 1}`,
		"unknown hgs rule": `{"version": 1, "id": "x", "hgs": {"SecureBootOn": "enforce"}}`,
		"bad enforcement":  `{"version": 1, "id": "x", "hgs": {"SecureBootEnabled": "yes"}}`,
		"wrong version":    `{"version": 2, "id": "x", "hgs": {"SecureBootEnabled": "enforce"}}`,
		"no id":            `{"version": 1, "hgs": {"SecureBootEnabled": "enforce"}}`,
		"no rule":          `{"version": 1, "id": "x"}`,
		"trailing data":    `{"version": 1, "id": "x", "hgs": {"SecureBootEnabled": "enforce"}} {}`,
		"bad register":     `{"version": 1, "id": "x", "pcrs": {"sha256": {"07": ["` + strings.Repeat("00", 32) + `"]}}}`,
		"short value":      `{"version": 1, "id": "x", "pcrs": {"sha256": {"7": ["00"]}}}`,
		"empty allow-list": `{"version": 1, "id": "x", "hgs": {"CiPolicy": {"mode": "enforce", "allowed": []}}}`,
		"not hex":          `{"version": 1, "id": "x", "hgs": {"CiPolicy": {"mode": "enforce", "allowed": ["zz"]}}}`,
		"unknown bank":     `{"version": 1, "id": "x", "pcrs": {"md5": {"7": ["00"]}}}`,
		"bad min version":  `{"version": 1, "id": "x", "uefi": {"min_firmware_version": "abc"}}`,
	} {
		if _, err := Parse([]byte(doc)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	p := mustParse(t, `{"version": 1, "id": "x", "hgs": {"SecureBootEnabled": "enforce", "CiPolicy": {"mode": "audit", "allowed": ["aabb"]}},
		"uefi": {"min_firmware_version": "2.7"}, "linux": {"cmdline_must_not_contain": ["nokaslr"]}, "pcrs": {"sha256": {"7": ["`+strings.Repeat("ab", 32)+`"]}}}`)
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	q := mustParse(t, string(b))
	if diff := cmp.Diff(p, q, cmp.AllowUnexported(Policy{}, pcrRule{})); diff != "" {
		t.Fatal(diff)
	}
}

// TestLearnWindowsBaseline learns from the real host: the policy it learns
// affirms the host, pins what the host shows and explains the rest.
func TestLearnWindowsBaseline(t *testing.T) {
	in := windowsInput(t)
	b, err := Learn([]*Input{in}, LearnOptions{ID: "learned"})
	if err != nil {
		t.Fatal(err)
	}
	if v := b.Policy.Evaluate(in); v.Status != Affirming {
		t.Fatalf("learned policy does not affirm its host: %v", v)
	}
	if b.Policy.HGS == nil || b.Policy.HGS.SecureBootEnabled != Enforce || b.Policy.HGS.BitLockerEnabled != Off {
		t.Errorf("HGS rules %+v", b.Policy.HGS)
	}
	pinned := map[string]bool{}
	for _, n := range b.Notes {
		pinned[n.Rule] = n.Pinned
	}
	if !pinned["pcr.sha1[7]"] || pinned["hgs.BitLockerEnabled"] {
		t.Errorf("notes %+v", b.Notes)
	}
	if _, ok := pinned["hgs.BitLockerEnabled"]; !ok {
		t.Error("no note says why BitLockerEnabled was not pinned")
	}
	// The learned policy survives its own encoding.
	enc, err := b.Policy.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(enc); err != nil {
		t.Fatal(err)
	}
}

// TestLearnGeneralisesDifferences: two hosts whose PCR 1 differ give a
// policy that does not pin PCR 1, and says so.
func TestLearnGeneralisesDifferences(t *testing.T) {
	mk := func(cfg string) *Input {
		b := attesttest.NewLogBuilder(measure.SHA256)
		b.Add(0, measure.EV_POST_CODE, []byte("firmware"))
		b.Add(1, measure.EV_POST_CODE, []byte(cfg))
		for r := range uint32(8) {
			b.Add(r, measure.EV_SEPARATOR, []byte{0, 0, 0, 0})
		}
		return verified(t, b.Bytes(), b.Values())
	}
	a, c := mk("config A"), mk("config B")
	b, err := Learn([]*Input{a, c}, LearnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Policy.PCRs["sha256"]["1"]; ok {
		t.Error("PCR 1 pinned though the hosts differ")
	}
	if _, ok := b.Policy.PCRs["sha256"]["0"]; !ok {
		t.Error("PCR 0 not pinned though the hosts agree")
	}
	found := false
	for _, n := range b.Notes {
		if n.Rule == "pcr.sha256[1]" && !n.Pinned && strings.Contains(n.Why, "differ") {
			found = true
		}
	}
	if !found {
		t.Errorf("no note on PCR 1: %+v", b.Notes)
	}
	for _, in := range []*Input{a, c} {
		if v := b.Policy.Evaluate(in); v.Status != Affirming {
			t.Errorf("baseline denies a host it learned from: %v", v)
		}
	}
}
