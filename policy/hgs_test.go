package policy

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/shieldvm/shieldvm/attest/attesttest"
	"github.com/shieldvm/shieldvm/measure"
)

// The HGS attestation policies one by one: each rule passes a boot that
// satisfies it and fails one that does not, with its reason and the
// events it relied on. Real data where the real boots have the event (the
// Windows Server host on GCE, the Ubuntu host without Secure Boot);
// otherwise a log built with attesttest.LogBuilder carrying the SIPA or
// UEFI events Windows or the firmware would measure.

// ubuntuInput is the real Ubuntu 21.04 boot without Secure Boot, verified
// against the registers its replay gives.
func ubuntuInput(t testing.TB) *Input {
	t.Helper()
	raw, err := os.ReadFile("testdata/ubuntu-2104-no-secure-boot.bin")
	if err != nil {
		t.Fatal(err)
	}
	j, err := os.ReadFile("testdata/ubuntu-2104-no-secure-boot.replayed.json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Banks map[string]map[uint32]string `json:"banks"`
	}
	if err := json.Unmarshal(j, &r); err != nil {
		t.Fatal(err)
	}
	q := measure.QuotedValues{}
	for bank, regs := range r.Banks {
		alg, err := measure.ParseHashAlg(bank)
		if err != nil {
			t.Fatal(err)
		}
		q[alg] = map[uint32][]byte{}
		for reg, v := range regs {
			if q[alg][reg], err = hex.DecodeString(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	return verified(t, raw, q)
}

// windowsBoot is a built boot of a Windows host: firmware, the Secure
// Boot variable on, separators, then one EV_EVENT_TAG event in PCR 12
// whose SIPA trust boundary holds the given events. firmware are extra
// EV_EFI_ACTION strings measured into PCR 7 before the separators.
func windowsBoot(t testing.TB, firmware []string, sipa ...[]byte) *Input {
	t.Helper()
	b := attesttest.NewLogBuilder(measure.SHA256)
	b.Add(0, measure.EV_POST_CODE, []byte("firmware volume"))
	b.Add(7, measure.EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVariable(measure.GlobalVariableGUID, "SecureBoot", []byte{1}))
	for _, a := range firmware {
		b.Add(7, measure.EV_EFI_ACTION, []byte(a))
	}
	for r := range uint32(8) {
		b.Add(r, measure.EV_SEPARATOR, []byte{0, 0, 0, 0})
	}
	b.Add(12, measure.EV_EVENT_TAG, attesttest.SIPA(measure.SIPATrustBoundary, sipa...))
	return verified(t, b.Bytes(), b.Values())
}

// uefiVariable encodes a UEFI_VARIABLE_DATA (TCG PC Client Platform
// Firmware Profile, section 10.3.3).
func uefiVariable(guid measure.GUID, name string, data []byte) []byte {
	u := utf16.Encode([]rune(name))
	out := append([]byte(nil), guid[:]...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(u)))
	out = binary.LittleEndian.AppendUint64(out, uint64(len(data)))
	for _, c := range u {
		out = binary.LittleEndian.AppendUint16(out, c)
	}
	return append(out, data...)
}

// on is a one-byte SIPA boolean that is true.
func on(t measure.SIPAType) []byte { return attesttest.SIPAUint(t, 1, 1) }

// off is a one-byte SIPA boolean that is false.
func off(t measure.SIPAType) []byte { return attesttest.SIPAUint(t, 0, 1) }

// siPolicy is a SIPAEVENT_SI_POLICY_PAYLOAD: version, name length, hash
// algorithm, digest length, then the UTF-16 name and the digest.
func siPolicy(name string, digest []byte) []byte {
	u := utf16.Encode([]rune(name))
	out := binary.LittleEndian.AppendUint64(nil, 1)
	out = binary.LittleEndian.AppendUint16(out, uint16(2*len(u)))
	out = binary.LittleEndian.AppendUint16(out, uint16(measure.SHA256))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(digest)))
	for _, c := range u {
		out = binary.LittleEndian.AppendUint16(out, c)
	}
	return attesttest.SIPA(measure.SIPASIPolicy, append(out, digest...))
}

// vsmIDK is a SIPAEVENT_VSM_IDK_INFO_PAYLOAD with a 2048-bit RSA key.
func vsmIDK() []byte {
	out := binary.LittleEndian.AppendUint32(nil, 1) // RSA
	out = binary.LittleEndian.AppendUint32(out, 2048)
	out = binary.LittleEndian.AppendUint32(out, 3)
	out = binary.LittleEndian.AppendUint32(out, 256)
	out = append(out, 1, 0, 1)
	mod := make([]byte, 256)
	mod[0], mod[255] = 0xc5, 0x01
	return attesttest.SIPA(measure.SIPAVSMIDKInfo, append(out, mod...))
}

// hgsRule is a policy that switches on one HGS rule; spec is its JSON
// value ("\"enforce\"" or an allow-list).
func hgsRule(t testing.TB, rule, spec string) *Policy {
	t.Helper()
	return mustParse(t, `{"version": 1, "id": "only-`+rule+`", "hgs": {"`+rule+`": `+spec+`}}`)
}

const enforce = `"enforce"`

// want is what one evaluation must give.
type want struct {
	pass   bool
	reason string // a part of the reason
	// pcr and typ, if set, name an event the rule relied on.
	pcr uint32
	typ string
}

func check(t *testing.T, p *Policy, in *Input, w want) {
	t.Helper()
	v := p.Evaluate(in)
	name := "hgs." + strings.TrimPrefix(p.ID, "only-")
	r := ruleOf(v, name)
	if r == nil || len(v.Rules) != 1 {
		t.Fatalf("verdict %v has no single rule %s", v, name)
	}
	wantStatus := Contraindicated
	if w.pass {
		wantStatus = Affirming
	}
	if r.Passed != w.pass || v.Status != wantStatus {
		t.Fatalf("%s: passed %v, status %v (%s); want passed %v", name, r.Passed, v.Status, r.Reason, w.pass)
	}
	if !strings.Contains(r.Reason, w.reason) {
		t.Errorf("%s: reason %q, want it to say %q", name, r.Reason, w.reason)
	}
	if w.typ != "" {
		found := false
		for _, e := range r.Events {
			found = found || e.PCR == w.pcr && e.Type == w.typ
		}
		if !found {
			t.Errorf("%s: relied on %+v, want an %s event of PCR %d", name, r.Events, w.typ, w.pcr)
		}
	}
}

const tagEvent = "EV_EVENT_TAG"

func TestHGSSecureBootEnabled(t *testing.T) {
	p := hgsRule(t, "SecureBootEnabled", enforce)
	t.Run("real Windows host with Secure Boot passes", func(t *testing.T) {
		check(t, p, windowsInput(t), want{pass: true, reason: "Secure Boot is enabled", pcr: 7, typ: "EV_EFI_VARIABLE_DRIVER_CONFIG"})
	})
	t.Run("real Ubuntu host without Secure Boot fails", func(t *testing.T) {
		check(t, p, ubuntuInput(t), want{reason: "Secure Boot is enabled; the verified log shows otherwise", pcr: 7, typ: "EV_EFI_VARIABLE_DRIVER_CONFIG"})
	})
}

func TestHGSUefiDebugDisabled(t *testing.T) {
	p := hgsRule(t, "UefiDebugDisabled", enforce)
	t.Run("real Windows host passes", func(t *testing.T) {
		check(t, p, windowsInput(t), want{pass: true, reason: "holds no \"UEFI Debug Mode\""})
	})
	t.Run("firmware in debug mode fails", func(t *testing.T) {
		check(t, p, windowsBoot(t, []string{"UEFI Debug Mode"}), want{reason: "UEFI Debug Mode", pcr: 7, typ: "EV_EFI_ACTION"})
	})
	t.Run("PCR 7 not verified fails", func(t *testing.T) {
		b := attesttest.NewLogBuilder(measure.SHA256)
		b.Add(0, measure.EV_POST_CODE, []byte("firmware volume"))
		q := b.Values()
		delete(q[measure.SHA256], 7)
		check(t, p, verified(t, b.Bytes(), q), want{reason: "PCR 7"})
	})
}

func TestHGSSecureBootSettings(t *testing.T) {
	in := windowsInput(t)
	pcr7 := hexs(in.PCRs[measure.SHA1][7])
	t.Run("real Windows host with its PCR 7 allowed passes", func(t *testing.T) {
		p := hgsRule(t, "SecureBootSettings", `{"mode": "enforce", "allowed": ["`+pcr7+`"]}`)
		check(t, p, in, want{pass: true, reason: pcr7})
	})
	t.Run("real Windows host with another configuration allowed fails", func(t *testing.T) {
		p := hgsRule(t, "SecureBootSettings", `{"mode": "enforce", "allowed": ["`+strings.Repeat("ab", 20)+`"]}`)
		check(t, p, in, want{reason: "is not one of the 1 allowed"})
	})
	t.Run("PCR 7 not quoted fails", func(t *testing.T) {
		p := hgsRule(t, "SecureBootSettings", `{"mode": "enforce", "allowed": ["`+pcr7+`"]}`)
		check(t, p, &Input{PCRs: measure.QuotedValues{measure.SHA1: {0: in.PCRs[measure.SHA1][0]}}, Log: in.Log}, want{reason: "PCR 7 was not quoted"})
	})
}

func TestHGSCiPolicy(t *testing.T) {
	good := make([]byte, 32)
	good[0] = 0xc1
	allow := `{"mode": "enforce", "allowed": ["` + hexs(good) + `"]}`
	p := hgsRule(t, "CiPolicy", allow)
	t.Run("real Windows host without an SI policy fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "no code-integrity policy was measured"})
	})
	t.Run("allowed SI policy passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, siPolicy("Fabric CI policy", good)), want{pass: true, reason: "Fabric CI policy", pcr: 12, typ: tagEvent})
	})
	t.Run("other SI policy fails", func(t *testing.T) {
		bad := make([]byte, 32)
		check(t, p, windowsBoot(t, nil, siPolicy("Fabric CI policy", good), siPolicy("Permissive", bad)), want{reason: `"Permissive"`, pcr: 12, typ: tagEvent})
	})
}

func TestHGSHypervisorEnforcedCiPolicy(t *testing.T) {
	p := hgsRule(t, "HypervisorEnforcedCiPolicy", enforce)
	t.Run("real Windows host without HVCI fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "no HVCI policy was measured"})
	})
	t.Run("HVCI on passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, attesttest.SIPAUint(measure.SIPAVBSHVCIPolicy, 1, 8)), want{pass: true, reason: "is on", pcr: 12, typ: tagEvent})
	})
	t.Run("HVCI policy measured off fails", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, attesttest.SIPAUint(measure.SIPAVBSHVCIPolicy, 0, 8)), want{reason: "is off", pcr: 12, typ: tagEvent})
	})
}

func TestHGSFullBoot(t *testing.T) {
	p := hgsRule(t, "FullBoot", enforce)
	t.Run("real Windows host passes", func(t *testing.T) {
		check(t, p, windowsInput(t), want{pass: true, reason: "booted fully", pcr: 12, typ: tagEvent})
	})
	t.Run("resume from hibernation fails", func(t *testing.T) {
		// Boot manager transferred control to winresume (2), not to
		// winload (1).
		check(t, p, windowsBoot(t, nil, attesttest.SIPAUint(measure.SIPATransferControl, 2, 4)), want{reason: "shows otherwise", pcr: 12, typ: tagEvent})
	})
}

func TestHGSVsmIdkPresent(t *testing.T) {
	p := hgsRule(t, "VsmIdkPresent", enforce)
	t.Run("real Windows host without VSM fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "no VSM identity key was measured"})
	})
	t.Run("VSM identity key measured passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, vsmIDK()), want{pass: true, reason: "2048-bit", pcr: 12, typ: tagEvent})
	})
}

func TestHGSPageFileEncryptionEnabled(t *testing.T) {
	p := hgsRule(t, "PageFileEncryptionEnabled", enforce)
	t.Run("real Windows host with a clear page file fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "the page file is encrypted; the verified log shows otherwise", pcr: 13, typ: tagEvent})
	})
	t.Run("encrypted page file passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, on(measure.SIPAPagefileEncryptionEnabled)), want{pass: true, reason: "encrypted", pcr: 12, typ: tagEvent})
	})
}

func TestHGSBitLockerEnabled(t *testing.T) {
	p := hgsRule(t, "BitLockerEnabled", enforce)
	t.Run("real Windows host without BitLocker fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "every BitLocker unlock event has flags 0", pcr: 12, typ: tagEvent})
	})
	t.Run("volume unlocked by BitLocker passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, attesttest.SIPAUint(measure.SIPABitLockerUnlock, 0, 4), attesttest.SIPAUint(measure.SIPABitLockerUnlock, 1, 4)),
			want{pass: true, reason: "unlock flags 0x1", pcr: 12, typ: tagEvent})
	})
	t.Run("no unlock measured fails", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, on(measure.SIPACodeIntegrity)), want{reason: "no BitLocker unlock was measured"})
	})
}

func TestHGSIommuEnabled(t *testing.T) {
	p := hgsRule(t, "IommuEnabled", enforce)
	t.Run("real Windows host without an IOMMU policy fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "neither a hypervisor IOMMU policy nor a VBS IOMMU requirement"})
	})
	t.Run("hypervisor IOMMU policy passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, attesttest.SIPAUint(measure.SIPAHypervisorIOMMUPolicy, 1, 8)), want{pass: true, reason: "hypervisor IOMMU policy 0x1", pcr: 12, typ: tagEvent})
	})
	t.Run("VBS requiring the IOMMU passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, on(measure.SIPAVBSIOMMURequired)), want{pass: true, reason: "requires the IOMMU", pcr: 12, typ: tagEvent})
	})
	t.Run("firmware DMA protection disabled fails", func(t *testing.T) {
		check(t, p, windowsBoot(t, []string{"DMA Protection Disabled"}, attesttest.SIPAUint(measure.SIPAHypervisorIOMMUPolicy, 1, 8)),
			want{reason: "DMA Protection Disabled", pcr: 7, typ: "EV_EFI_ACTION"})
	})
}

func TestHGSNoHibernation(t *testing.T) {
	p := hgsRule(t, "NoHibernation", enforce)
	t.Run("real Windows host with hibernation on fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "hibernation is disabled; the verified log shows otherwise", pcr: 13, typ: tagEvent})
	})
	t.Run("hibernation disabled passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, on(measure.SIPAHibernationDisabled)), want{pass: true, reason: "hibernation is disabled", pcr: 12, typ: tagEvent})
	})
}

func TestHGSNoDumps(t *testing.T) {
	p := hgsRule(t, "NoDumps", enforce)
	t.Run("real Windows host with dumps on fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "crash dumps are disabled; the verified log shows otherwise", pcr: 13, typ: tagEvent})
	})
	t.Run("dumps disabled passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, on(measure.SIPADumpsDisabled)), want{pass: true, reason: "crash dumps are disabled", pcr: 12, typ: tagEvent})
	})
	t.Run("dumps disabled then enabled fails", func(t *testing.T) {
		// A later event turning dumps on wins: the weak value latches.
		check(t, p, windowsBoot(t, nil, on(measure.SIPADumpsDisabled), off(measure.SIPADumpsDisabled)), want{reason: "shows otherwise"})
	})
}

func TestHGSDumpEncryption(t *testing.T) {
	p := hgsRule(t, "DumpEncryption", enforce)
	t.Run("real Windows host with clear dumps fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "crash dumps are encrypted; the verified log shows otherwise", pcr: 13, typ: tagEvent})
	})
	t.Run("dump encryption on passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, on(measure.SIPADumpEncryptionEnabled)), want{pass: true, reason: "crash dumps are encrypted", pcr: 12, typ: tagEvent})
	})
}

func TestHGSDumpEncryptionKey(t *testing.T) {
	key := make([]byte, 32)
	key[31] = 0x42
	p := hgsRule(t, "DumpEncryptionKey", `{"mode": "enforce", "allowed": ["`+hexs(key)+`"]}`)
	t.Run("real Windows host without a dump key fails", func(t *testing.T) {
		check(t, p, windowsInput(t), want{reason: "no dump encryption key was measured"})
	})
	t.Run("allowed dump key passes", func(t *testing.T) {
		check(t, p, windowsBoot(t, nil, on(measure.SIPADumpEncryptionEnabled), attesttest.SIPA(measure.SIPADumpEncryptionKeyDigest, key)),
			want{pass: true, reason: hexs(key) + " is allowed", pcr: 12, typ: tagEvent})
	})
	t.Run("other dump key fails", func(t *testing.T) {
		other := make([]byte, 32)
		check(t, p, windowsBoot(t, nil, attesttest.SIPA(measure.SIPADumpEncryptionKeyDigest, other)), want{reason: "is not allowed", pcr: 12, typ: tagEvent})
	})
}

// TestHGSFactInUnboundEventIgnored: a SIPA event whose logged digest is
// not the hash of its data (the data was changed after it was measured)
// is not a fact the policy may pass on.
func TestHGSFactInUnboundEventIgnored(t *testing.T) {
	b := attesttest.NewLogBuilder(measure.SHA256)
	b.Add(0, measure.EV_POST_CODE, []byte("firmware volume"))
	for r := range uint32(8) {
		b.Add(r, measure.EV_SEPARATOR, []byte{0, 0, 0, 0})
	}
	measured := attesttest.SIPA(measure.SIPATrustBoundary, off(measure.SIPAPagefileEncryptionEnabled))
	shown := attesttest.SIPA(measure.SIPATrustBoundary, on(measure.SIPAPagefileEncryptionEnabled))
	d, _ := measure.SHA256.Sum(measured)
	b.AddDigests(12, measure.EV_EVENT_TAG, shown, map[measure.HashAlg][]byte{measure.SHA256: d[:32]})
	p := hgsRule(t, "PageFileEncryptionEnabled", enforce)
	if v := p.Evaluate(verified(t, b.Bytes(), b.Values())); v.Status != Contraindicated {
		t.Fatalf("a fact from an event whose data does not match its digest passed: %v", v)
	}
}
