package measure

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"testing"
)

// windowsLogBytes returns a private copy of the real Windows log's bytes.
func windowsLogBytes(t *testing.T) []byte {
	t.Helper()
	j, err := os.ReadFile("testdata/quotes/windows_gcp_shielded_vm.json")
	if err != nil {
		t.Fatal(err)
	}
	var wq windowsQuote
	if err := json.Unmarshal(j, &wq); err != nil {
		t.Fatal(err)
	}
	return wq.Log.Raw
}

// findSIPA returns the offset in data of the payload of the first SIPA
// event of type typ inside event ev, searching its raw bytes.
func sipaPayloadOffset(t *testing.T, ev *Event, typ SIPAType) int {
	t.Helper()
	var want [4]byte
	binary.LittleEndian.PutUint32(want[:], uint32(typ))
	i := bytes.Index(ev.Data, want[:])
	if i < 0 {
		t.Fatalf("event %d holds no %v", ev.Index, typ)
	}
	return i + 8
}

// rehashSHA1 sets the SHA-1 digest of the SHA-1 legacy event to the
// digest of its data, as a host that measured that data would have.
func rehashSHA1(raw []byte, ev *Event) {
	d := sha1.Sum(ev.Data)
	copy(raw[ev.Offset+8:], d[:])
}

func factsOf(t *testing.T, raw []byte, quoted QuotedValues) *Facts {
	t.Helper()
	l, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if quoted == nil {
		quoted = quotedFromReplay(t, l)
	}
	v, err := l.Verify(quoted, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := v.Facts()
	if err != nil {
		t.Fatal(err)
	}
	// The shortcuts agree with plain decoding on the attacks too.
	checkFastPathsAgree(t, v)
	return f
}

// TestBootDebuggerReported: a host booted with the boot debugger and the
// kernel debugger on measures those settings truthfully; the facts say so
// and name the events.
func TestBootDebuggerReported(t *testing.T) {
	raw := windowsLogBytes(t)
	l, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	evs := l.UnverifiedEvents()
	for _, idx := range []int{11, 12} {
		ev := &evs[idx]
		off := sipaPayloadOffset(t, ev, SIPABootDebugging)
		ev.Data[off] = 1
		rehashSHA1(raw, ev)
	}
	ev := &evs[15]
	ev.Data[sipaPayloadOffset(t, ev, SIPAOSKernelDebug)] = 1
	rehashSHA1(raw, ev)

	f := factsOf(t, raw, nil)
	w := f.Windows
	if w == nil || w.BootDebugging == nil || !w.BootDebugging.Value {
		t.Fatalf("boot debugging = %+v, want true", w.BootDebugging)
	}
	if !slices.Contains(w.BootDebugging.Events, 11) {
		t.Errorf("boot debugging events %v do not name event 11", w.BootDebugging.Events)
	}
	if w.KernelDebug == nil || !w.KernelDebug.Value {
		t.Fatalf("kernel debug = %+v, want true", w.KernelDebug)
	}
	// The unmodified log says the opposite.
	orig := factsOf(t, windowsLogBytes(t), nil)
	if orig.Windows.BootDebugging.Value || orig.Windows.KernelDebug.Value {
		t.Fatal("the real log reports a debugger")
	}
}

// TestHiddenDebuggerFlagged: a host that booted with the debugger on and
// rewrote the logged setting to "off" cannot change the digest the TPM
// extended; the rewritten event yields a data-mismatch finding and no
// debugger fact at all, never "off".
func TestHiddenDebuggerFlagged(t *testing.T) {
	raw := windowsLogBytes(t)
	l, _ := Parse(raw)
	evs := l.UnverifiedEvents()
	// The host measured "on"...
	ev := &evs[11]
	off := sipaPayloadOffset(t, ev, SIPABootDebugging)
	ev.Data[off] = 1
	rehashSHA1(raw, ev)
	quoted := quotedFromReplay(t, mustParse(t, raw))
	// ...and logs "off".
	ev.Data[off] = 0
	f := factsOf(t, raw, quoted)
	if !hasFinding(f, FindingDataMismatch, 11) {
		t.Fatalf("no data-mismatch finding for event 11: %v", f.Findings)
	}
	if bd := f.Windows.BootDebugging; bd != nil && slices.Contains(bd.Events, 11) {
		t.Fatalf("boot debugging %+v taken from the rewritten event", bd)
	}
}

func mustParse(t *testing.T, raw []byte) *Log {
	t.Helper()
	l, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func hasFinding(f *Facts, k FindingKind, ev int) bool {
	for _, x := range f.Findings {
		if x.Kind == k && slices.Contains(x.Events, ev) {
			return true
		}
	}
	return false
}

// TestSecureBootVariableDigestMismatchFlagged: a log whose SecureBoot
// variable was rewritten from 0 to 1 after measurement still verifies
// (the digests are unchanged), but the variable's data no longer hashes
// to its digest: the facts flag it and do not report Secure Boot on.
func TestSecureBootVariableDigestMismatchFlagged(t *testing.T) {
	raw, err := os.ReadFile("testdata/eventlogs/ubuntu-2404-amd-sevsnp.bin")
	if err != nil {
		t.Fatal(err)
	}
	l := mustParse(t, raw)
	quoted := quotedFromReplay(t, l)
	var sb *Event
	for i := range l.UnverifiedEvents() {
		ev := &l.UnverifiedEvents()[i]
		if ev.Type == EV_EFI_VARIABLE_DRIVER_CONFIG && bytes.Contains(ev.Data, utf16le("SecureBoot")) {
			sb = ev
			break
		}
	}
	if sb == nil || sb.Data[len(sb.Data)-1] != 0 {
		t.Fatal("no SecureBoot=0 variable in the log")
	}
	sb.Data[len(sb.Data)-1] = 1
	f := factsOf(t, raw, quoted)
	if f.SecureBoot.Enabled != nil {
		t.Fatalf("Secure Boot reported as %+v from a variable that does not match its digest", f.SecureBoot.Enabled)
	}
	if !hasFinding(f, FindingDataMismatch, sb.Index) {
		t.Fatalf("no data-mismatch finding for event %d: %v", sb.Index, f.Findings)
	}
	// The unverified view warns too.
	if s := DescribeUnverified(sb); !bytes.Contains([]byte(s), []byte("DOES NOT MATCH")) {
		t.Errorf("DescribeUnverified = %q, want a mismatch warning", s)
	}
}

func utf16le(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), 0)
	}
	return b
}

// TestUnverifiedLogYieldsNoFacts: a log whose registers match none of the
// quoted values (a log from another host, or made up) yields a verified
// view with no events, and so no facts.
func TestUnverifiedLogYieldsNoFacts(t *testing.T) {
	l := loadLog(t, "eventlogs/ubuntu-2404-amd-sevsnp.bin")
	quoted := quotedFromReplay(t, l)
	for _, regs := range quoted {
		for _, v := range regs {
			v[0] ^= 1 // what the TPM really holds differs everywhere
		}
	}
	v, err := l.Verify(quoted, VerifyOptions{})
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("Verify = %v, want ErrMismatch", err)
	}
	f, err := v.Facts()
	if err != nil {
		t.Fatal(err)
	}
	empty := &Facts{Kind: "pcr", Firmware: FirmwareFacts{}, Findings: nil}
	if !reflect.DeepEqual(f, empty) {
		t.Fatalf("facts from a log that matched nothing: %+v", f)
	}
}

// TestDuplicateSeparatorFlagged: the TDX log with a second separator in
// RTMR0 (and none in RTMR1) is flagged; the correct log is not.
func TestDuplicateSeparatorFlagged(t *testing.T) {
	for _, c := range factsCorpus(t) {
		switch c.name {
		case "ccel_cos-113-intel-tdx-dupe-separator":
			_, f := verifiedFacts(t, c)
			if !hasFinding(f, FindingDuplicateSeparator, 16) {
				t.Errorf("%s: duplicate separator not flagged: %v", c.name, f.Findings)
			}
			found := false
			for _, x := range f.Findings {
				found = found || (x.Kind == FindingMissingSeparator && x.Register == 2)
			}
			if !found {
				t.Errorf("%s: missing RTMR1 separator not flagged", c.name)
			}
		case "ccel_cos-113-intel-tdx":
			_, f := verifiedFacts(t, c)
			if len(f.Findings) != 0 {
				t.Errorf("%s: findings %v, want none", c.name, f.Findings)
			}
		}
	}
}

// legacyEvent is one event of a synthetic SHA-1 log.
type legacyEvent struct {
	pcr  uint32
	typ  EventType
	data []byte
}

// buildSHA1Log encodes events as a SHA-1 legacy log whose digests are the
// SHA-1 of the data.
func buildSHA1Log(evs []legacyEvent) []byte {
	var out []byte
	for _, e := range evs {
		d := sha1.Sum(e.data)
		out = binary.LittleEndian.AppendUint32(out, e.pcr)
		out = binary.LittleEndian.AppendUint32(out, uint32(e.typ))
		out = append(out, d[:]...)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(e.data)))
		out = append(out, e.data...)
	}
	return out
}

func uefiVar(guid GUID, name string, data []byte) []byte {
	b := append([]byte(nil), guid[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(name)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(data)))
	b = append(b, utf16le(name)...)
	return append(b, data...)
}

var sep0 = []byte{0, 0, 0, 0}

// TestSeparatorStructureFindings: events after a separator where the
// profile forbids them, a separator with the error value, and firmware
// registers without a separator are all flagged.
func TestSeparatorStructureFindings(t *testing.T) {
	raw := buildSHA1Log([]legacyEvent{
		{0, EV_S_CRTM_VERSION, utf16le("1.0\x00")},
		{7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVar(GlobalVariableGUID, "SecureBoot", []byte{1})},
		{7, EV_SEPARATOR, sep0},
		{0, EV_SEPARATOR, sep0},
		{0, EV_POST_CODE, []byte("SMM CODE")}, // forbidden after PCR 0's separator
		{1, EV_SEPARATOR, []byte{1, 0, 0, 0}}, // error separator
		{2, EV_EFI_BOOT_SERVICES_DRIVER, make([]byte, 32)},
		{4, EV_EFI_ACTION, []byte("Calling EFI Application from Boot Option")},
		{4, EV_SEPARATOR, sep0},
		{4, EV_EFI_BOOT_SERVICES_APPLICATION, make([]byte, 32)},
		{7, EV_SEPARATOR, sep0}, // duplicate
	})
	f := factsOf(t, raw, nil)
	want := []struct {
		k  FindingKind
		ev int
	}{
		{FindingEventAfterSeparator, 4},
		{FindingErrorSeparator, 5},
		{FindingDuplicateSeparator, 10},
	}
	for _, w := range want {
		if !hasFinding(f, w.k, w.ev) {
			t.Errorf("no %s finding for event %d: %v", w.k, w.ev, f.Findings)
		}
	}
	missing := map[uint32]bool{}
	for _, x := range f.Findings {
		if x.Kind == FindingMissingSeparator {
			missing[x.Register] = true
		}
		if x.Kind == FindingEventAfterSeparator && x.Events[0] == 9 {
			t.Errorf("a boot application after PCR 4's separator flagged: %v", x)
		}
	}
	if !missing[2] || len(missing) != 1 {
		t.Errorf("missing separators %v, want PCR 2 alone", missing)
	}
	if f.SecureBoot.Enabled == nil || !f.SecureBoot.Enabled.Value || !f.SecureBoot.Enabled.Bound {
		t.Errorf("Secure Boot = %+v, want bound true", f.SecureBoot.Enabled)
	}
	if f.Firmware.CRTMVersion == nil || f.Firmware.CRTMVersion.Value != "1.0" {
		t.Errorf("S-CRTM version = %+v", f.Firmware.CRTMVersion)
	}
}

// TestVariableNameSwapRejected: firmware that hashes only VariableData
// leaves names unbound; a host that swaps the names of db and dbx keeps
// the digests valid, but the names no longer sit where the profile puts
// them, and the swapped databases are not reported.
func TestVariableNameSwapRejected(t *testing.T) {
	db := sigList(CertSHA256GUID, bytes.Repeat([]byte{0xdb}, 32))
	dbx := sigList(CertSHA256GUID, bytes.Repeat([]byte{0xdd}, 32))
	evs := []legacyEvent{
		{7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVar(GlobalVariableGUID, "SecureBoot", []byte{1})},
		{7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVar(GlobalVariableGUID, "PK", nil)},
		{7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVar(GlobalVariableGUID, "KEK", nil)},
		{7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVar(ImageSecurityDatabaseGUID, "db", db)},
		{7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVar(ImageSecurityDatabaseGUID, "dbx", dbx)},
	}
	raw := buildSHA1Log(evs)
	// Hash only VariableData, as old firmware does.
	l := mustParse(t, raw)
	for i := range l.UnverifiedEvents() {
		ev := &l.UnverifiedEvents()[i]
		v, err := ParseUEFIVariable(ev.Data)
		if err != nil {
			t.Fatal(err)
		}
		d := sha1.Sum(v.Data)
		copy(raw[ev.Offset+8:], d[:])
	}
	f := factsOf(t, raw, nil)
	if f.SecureBoot.DB == nil || !f.SecureBoot.DB.Contains(bytes.Repeat([]byte{0xdb}, 32)) || f.SecureBoot.DBX == nil {
		t.Fatalf("in-order variables with VariableData digests not reported: %+v", f.SecureBoot)
	}
	// Swap the names "db" and "dbx" (same GUID; rewrite the lists).
	swapped := buildSHA1Log([]legacyEvent{evs[0], evs[1], evs[2],
		{7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVar(ImageSecurityDatabaseGUID, "dbx", db)},
		{7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVar(ImageSecurityDatabaseGUID, "db", dbx)},
	})
	sl := mustParse(t, swapped)
	for i := range sl.UnverifiedEvents() {
		ev := &sl.UnverifiedEvents()[i]
		v, _ := ParseUEFIVariable(ev.Data)
		d := sha1.Sum(v.Data)
		copy(swapped[ev.Offset+8:], d[:])
	}
	// The digests are those of the honest log.
	f = factsOf(t, swapped, quotedFromReplay(t, mustParse(t, raw)))
	if f.SecureBoot.DB != nil || f.SecureBoot.DBX != nil {
		t.Fatalf("swapped databases reported: db %+v, dbx %+v", f.SecureBoot.DB, f.SecureBoot.DBX)
	}
	if !hasFinding(f, FindingDataMismatch, 3) || !hasFinding(f, FindingDataMismatch, 4) {
		t.Fatalf("swap not flagged: %v", f.Findings)
	}
}

func sigList(typ GUID, sigs ...[]byte) []byte {
	size := 16 + len(sigs[0])
	b := append([]byte(nil), typ[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(28+size*len(sigs)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	for _, s := range sigs {
		b = append(b, make([]byte, 16)...)
		b = append(b, s...)
	}
	return b
}

// TestDBXRevocations: a policy asks whether dbx holds given revocations.
func TestDBXRevocations(t *testing.T) {
	for _, c := range factsCorpus(t) {
		if c.name != "quotes_windows_gcp_shielded_vm" {
			continue
		}
		_, f := verifiedFacts(t, c)
		dbx := f.SecureBoot.DBX
		if dbx == nil || len(dbx.Hashes) == 0 {
			t.Fatal("no dbx hashes")
		}
		have := dbx.Hashes[0].Hash
		absent, _ := hex.DecodeString("0000000000000000000000000000000000000000000000000000000000000001")
		missing := dbx.Missing([][]byte{have, absent})
		if len(missing) != 1 || !bytes.Equal(missing[0], absent) {
			t.Fatalf("Missing = %x, want only the absent hash", missing)
		}
		var nilDB *SignatureDB
		if len(nilDB.Missing([][]byte{have})) != 1 {
			t.Fatal("a database that was not measured holds a revocation")
		}
		// The authority of the boot manager is the db's first certificate.
		if a := f.SecureBoot.Authorities; len(a) != 1 || a[0].DBIndex < 0 || a[0].Image != 9 {
			t.Fatalf("authorities = %+v, want the db entry that authorized event 9", a)
		}
		if app := f.Boot.Applications; len(app) != 1 || app[0].Authority != 0 {
			t.Fatalf("applications = %+v", app)
		}
	}
}

// TestWindowsBootConfiguration: the real Windows Server log's facts show
// its real configuration.
func TestWindowsBootConfiguration(t *testing.T) {
	l, q := loadQuote(t, "testdata/quotes/windows_gcp_shielded_vm.json")
	v, err := l.Verify(q, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := v.Facts()
	if err != nil {
		t.Fatal(err)
	}
	w := f.Windows
	checks := []struct {
		name string
		fact *Fact[bool]
		want bool
	}{
		{"boot debugging", w.BootDebugging, false},
		{"kernel debug", w.KernelDebug, false},
		{"test signing", w.TestSigning, false},
		{"code integrity", w.CodeIntegrity, true},
		{"hibernation disabled", w.HibernationDisabled, false},
		{"dumps disabled", w.DumpsDisabled, false},
		{"dump encryption", w.DumpEncryptionEnabled, false},
		{"pagefile encryption", w.PagefileEncryptionEnabled, false},
		{"full boot", w.FullBoot, true},
		{"secure boot", f.SecureBoot.Enabled, true},
	}
	for _, c := range checks {
		if c.fact == nil {
			t.Errorf("%s: not measured", c.name)
			continue
		}
		if c.fact.Value != c.want || !c.fact.Bound || len(c.fact.Events) == 0 {
			t.Errorf("%s = %+v, want %v, bound, with events", c.name, c.fact, c.want)
		}
	}
	if w.BootCounter == nil || w.BootCounter.Value != 4 {
		t.Errorf("boot counter = %+v, want 4", w.BootCounter)
	}
	if w.HypervisorLaunchType == nil || w.HypervisorLaunchType.Value != 0 {
		t.Errorf("hypervisor launch type = %+v, want 0 (off)", w.HypervisorLaunchType)
	}
	if len(w.Modules) == 0 || w.Modules[1].Path.String() != `\Windows\system32\winload.efi` || !w.Modules[1].Validated {
		t.Errorf("modules = %+v", w.Modules[:min(2, len(w.Modules))])
	}
	if len(w.Other) != 0 {
		t.Errorf("uninterpreted SIPA types %v", w.Other)
	}
}

// TestVSMIdentityKeyDecoded: the VSM identity key event's RSA public key.
func TestVSMIdentityKeyDecoded(t *testing.T) {
	mod := bytes.Repeat([]byte{0xAB}, 256)
	payload := binary.LittleEndian.AppendUint32(nil, 1)
	payload = binary.LittleEndian.AppendUint32(payload, 2048)
	payload = binary.LittleEndian.AppendUint32(payload, 3)
	payload = binary.LittleEndian.AppendUint32(payload, 256)
	payload = append(payload, 1, 0, 1)
	payload = append(payload, mod...)
	tlv := func(t SIPAType, p []byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(t))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		return append(b, p...)
	}
	data := tlv(SIPATrustBoundary, tlv(SIPAVSMIDKInfo, payload))
	raw := buildSHA1Log([]legacyEvent{{13, EV_EVENT_TAG, data}, {13, EV_SEPARATOR, []byte("WBCL")}})
	f := factsOf(t, raw, nil)
	k := f.Windows.VSMIdentityKey
	if k == nil || k.Value.KeyBitLength != 2048 || !bytes.Equal(k.Value.Exponent, []byte{1, 0, 1}) || !bytes.Equal(k.Value.Modulus, mod) {
		t.Fatalf("VSM identity key = %+v", k)
	}
}

// TestSystemdStubFacts: a unified kernel image booted by systemd-stub
// measures its PE sections into PCR 11, the command line into PCR 12 and
// system extensions into PCR 13, as UTF-16 descriptions.
func TestSystemdStubFacts(t *testing.T) {
	cmdline := utf16le("console=ttyS0 root=/dev/vda1\x00")
	raw := buildSHA1Log([]legacyEvent{
		{11, EV_IPL, utf16le(".linux\x00")},
		{11, EV_IPL, utf16le(".initrd\x00")},
		{12, EV_IPL, cmdline},
		{13, EV_IPL, utf16le("debug-tools.raw\x00")},
	})
	l := mustParse(t, raw)
	// systemd-stub's section digests are of the sections, not of the
	// descriptions: give them other digests.
	for _, i := range []int{0, 1, 3} {
		ev := &l.UnverifiedEvents()[i]
		raw[ev.Offset+8] ^= 0xFF
	}
	f := factsOf(t, raw, nil)
	st := f.Linux.Stub
	if st == nil || len(st.Sections) != 2 || st.Sections[0].Path != ".linux" || len(st.SysExts) != 1 {
		t.Fatalf("stub facts = %+v", st)
	}
	if st.CommandLine == nil || st.CommandLine.Value != "console=ttyS0 root=/dev/vda1" || !st.CommandLine.Bound {
		t.Fatalf("command line = %+v, want bound", st.CommandLine)
	}
	if len(f.Findings) != 0 {
		t.Fatalf("findings %v", f.Findings)
	}
}

// TestForgedReportLinesEscaped: a hostile log cannot forge lines in a
// printed report: names and paths with control characters are escaped.
func TestForgedReportLinesEscaped(t *testing.T) {
	path := []byte{DevicePathMedia, 4}
	name := utf16le("\\EFI\nFINDING none\x00")
	path = binary.LittleEndian.AppendUint16(path, uint16(4+len(name)))
	path = append(path, name...)
	path = append(path, DevicePathEnd, 0xFF, 4, 0)
	img := make([]byte, 32)
	binary.LittleEndian.PutUint64(img[24:], uint64(len(path)))
	img = append(img, path...)
	raw := buildSHA1Log([]legacyEvent{
		{4, EV_EFI_BOOT_SERVICES_APPLICATION, img},
		{7, EV_EFI_VARIABLE_DRIVER_CONFIG, uefiVar(GlobalVariableGUID, "Secure\nBoot", []byte{1})},
	})
	l := mustParse(t, raw)
	for i := range l.UnverifiedEvents() {
		if s := DescribeUnverified(&l.UnverifiedEvents()[i]); bytes.ContainsAny([]byte(s), "\n\r") {
			t.Errorf("event %d description has a line break: %q", i, s)
		}
	}
}
