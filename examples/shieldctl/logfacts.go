package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/shieldvm/shieldvm/measure"
)

func init() {
	register("log", logSummary, "facts", verb{
		usage: "[--json] [--pcrs PCRS.json] [--quirk NAME]... [--ccel] FILE",
		help: "decode the log and print the facts a policy judges (Secure Boot, boot chain, Linux, Windows, findings); " +
			"without --pcrs the log is checked only against itself and the facts are marked UNVERIFIED",
		run: logFacts,
	})
	// log events shows the typed, unverified decoding of each event.
	describeUnverified = measure.DescribeUnverified
}

// factsJSON is the --json output of log facts.
type factsJSON struct {
	// Verified is false when no PCR values were given: the log was
	// checked only against its own replay, which proves nothing.
	Verified bool           `json:"verified"`
	PCRs     string         `json:"pcrs,omitempty"`
	Mismatch []string       `json:"mismatched_registers,omitempty"`
	Facts    *measure.Facts `json:"facts"`
}

func logFacts(_ context.Context, e *env, args []string) error {
	fs := newFlags("log facts")
	asJSON := fs.Bool("json", false, "print JSON")
	pcrsFile := fs.String("pcrs", "", "PCR values (JSON) to verify the log against")
	ccel := fs.Bool("ccel", false, "the file is an Intel TDX CCEL log")
	var quirks quirkFlags
	fs.Var(&quirks, "quirk", "accept a named firmware quirk (repeatable): unlogged-exit-boot-services")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	l, err := readLog(pos[0], *ccel)
	if err != nil {
		return err
	}
	var quoted measure.QuotedValues
	if *pcrsFile != "" {
		if quoted, err = readPCRs(*pcrsFile); err != nil {
			return err
		}
	} else {
		// No root of trust: compare the log with itself, so that the
		// facts can be shown, and say loudly that they prove nothing.
		regs, err := l.Replay()
		if err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		quoted = measure.QuotedValues{}
		for _, b := range regs.Banks {
			quoted[b.Alg] = map[uint32][]byte{}
			for _, r := range b.ExtendedRegisters() {
				quoted[b.Alg][uint32(r)] = b.Value(r)
			}
		}
	}
	v, verr := l.Verify(quoted, measure.VerifyOptions{Quirks: measure.Quirk(quirks)})
	if v == nil {
		return fmt.Errorf("%s: %w", pos[0], verr)
	}
	f, err := v.Facts()
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	out := factsJSON{Verified: *pcrsFile != "", PCRs: *pcrsFile, Facts: f}
	for _, m := range v.Report().Mismatches() {
		out.Mismatch = append(out.Mismatch, fmt.Sprintf("%v[%d]", m.Alg, m.Register))
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printFacts(e.stdout, &out)
	}
	if verr != nil {
		if !*asJSON {
			fmt.Fprintf(e.stdout, "FAIL: %s do not match the quoted values; their events are not in the facts\n", strings.Join(out.Mismatch, ", "))
		}
		return errCheckFailed
	}
	return nil
}

// printFacts writes the facts for a reader, one line per fact, each with
// the events it came from.
func printFacts(w io.Writer, out *factsJSON) {
	f := out.Facts
	if out.Verified {
		fmt.Fprintf(w, "# facts verified against %s (registers %v)\n", out.PCRs, f.Registers)
	} else {
		fmt.Fprintf(w, "# UNVERIFIED: no --pcrs given; these are the log's claims, checked only against its own replay\n")
	}
	if f.Alg != "" {
		fmt.Fprintf(w, "# event data checked against the %s digests\n", f.Alg)
	}
	p := func(name string, v any, evs []int, bound bool) {
		hint := ""
		if !bound {
			hint = " (hint: not bound to a digest)"
		}
		fmt.Fprintf(w, "%-32s %v  [events %s]%s\n", name, v, joinInts(evs), hint)
	}
	pb := func(name string, x *measure.Fact[bool]) {
		if x != nil {
			p(name, x.Value, x.Events, x.Bound)
		}
	}
	pu := func(name string, x *measure.Fact[uint64]) {
		if x != nil {
			p(name, x.Value, x.Events, x.Bound)
		}
	}
	ps := func(name string, x *measure.Fact[string]) {
		if x != nil {
			p(name, fmt.Sprintf("%q", x.Value), x.Events, x.Bound)
		}
	}
	fw := f.Firmware
	ps("firmware.crtm_version", fw.CRTMVersion)
	if fw.StartupLocality != nil {
		p("firmware.startup_locality", fw.StartupLocality.Value, fw.StartupLocality.Events, true)
	}
	pb("firmware.dma_protection_disabled", fw.DMAProtectionDisabled)
	pb("firmware.exit_boot_services", fw.ExitBootServices)
	for _, a := range fw.Actions {
		p("firmware.action", fmt.Sprintf("%q", a.Value), a.Events, a.Bound)
	}
	sb := f.SecureBoot
	pb("secure_boot.enabled", sb.Enabled)
	pb("secure_boot.setup_mode", sb.SetupMode)
	pb("secure_boot.audit_mode", sb.AuditMode)
	pb("secure_boot.deployed_mode", sb.DeployedMode)
	for _, db := range []struct {
		name string
		db   *measure.SignatureDB
	}{{"pk", sb.PK}, {"kek", sb.KEK}, {"db", sb.DB}, {"dbx", sb.DBX}, {"dbt", sb.DBT}, {"dbr", sb.DBR}} {
		if db.db == nil {
			continue
		}
		p("secure_boot."+db.name, fmt.Sprintf("%d certificates, %d hashes, digest %s", len(db.db.Certificates), len(db.db.Hashes), db.db.Digest), db.db.Events, true)
		for _, c := range db.db.Certificates {
			name := ""
			if x, err := c.Parse(); err == nil {
				name = x.Subject.String()
			} else {
				name = "unparsed: " + err.Error()
			}
			fp := c.SHA256()
			fmt.Fprintf(w, "%-32s   cert %x %s\n", "", fp[:8], name)
		}
	}
	for i, a := range sb.Authorities {
		what := fmt.Sprintf("%s hash %s", a.Variable, a.Hash)
		if a.Certificate != nil {
			what = fmt.Sprintf("%s certificate %x", a.Variable, sha8(a.Certificate))
			if a.DBIndex >= 0 {
				what += fmt.Sprintf(" (db entry %d)", a.DBIndex)
			}
		}
		if a.Image >= 0 {
			what += fmt.Sprintf(", authorized the image of event %d", a.Image)
		}
		p(fmt.Sprintf("secure_boot.authority[%d]", i), what, a.Events, a.Bound)
	}
	ps("secure_boot.sbat_level", sb.SbatLevel)
	for _, m := range []struct {
		name string
		f    *measure.Fact[measure.Hex]
	}{{"mok_list", sb.MokList}, {"mok_list_x", sb.MokListX}, {"mok_list_trusted", sb.MokListTrusted}} {
		if m.f != nil {
			p("secure_boot."+m.name, m.f.Value, m.f.Events, m.f.Bound)
		}
	}
	b := f.Boot
	if b.BootOrder != nil {
		p("boot.order", fmtOrder(b.BootOrder.Value), b.BootOrder.Events, b.BootOrder.Bound)
	}
	for _, en := range b.Entries {
		p(fmt.Sprintf("boot.entry[%04X]", en.Number), fmt.Sprintf("%q %s", en.Description, en.Path), en.Events, en.Bound)
	}
	for i, a := range b.Applications {
		p(fmt.Sprintf("boot.application[%d]", i), fmt.Sprintf("%s %s", digestsOf(a.Digests), a.Path), []int{a.Event}, true)
	}
	if len(b.Drivers) > 0 {
		evs := make([]int, len(b.Drivers))
		for i, d := range b.Drivers {
			evs[i] = d.Event
		}
		p("boot.drivers", len(b.Drivers), evs, true)
	}
	if b.GPT != nil {
		p("boot.gpt", fmt.Sprintf("disk %s, %d partitions", b.GPT.Value.DiskGUID, len(b.GPT.Value.Partitions)), b.GPT.Events, b.GPT.Bound)
	}
	if lf := f.Linux; lf != nil {
		ps("linux.kernel", lf.Kernel)
		if lf.KernelFile != nil {
			p("linux.kernel_file", digestsOf(lf.KernelFile.Digests), []int{lf.KernelFile.Event}, true)
		}
		ps("linux.initrd", lf.Initrd)
		if lf.InitrdFile != nil {
			p("linux.initrd_file", digestsOf(lf.InitrdFile.Digests), []int{lf.InitrdFile.Event}, true)
		}
		ps("linux.command_line", lf.CommandLine)
		if len(lf.Commands) > 0 {
			p("linux.grub_commands", len(lf.Commands), []int{lf.Commands[0].Events[0], lf.Commands[len(lf.Commands)-1].Events[0]}, true)
		}
		if len(lf.Files) > 0 {
			p("linux.files", len(lf.Files), []int{lf.Files[0].Event}, true)
		}
		if lf.LoadOptionsDigest != nil {
			p("linux.load_options_digest", lf.LoadOptionsDigest.Value, lf.LoadOptionsDigest.Events, true)
		}
		if lf.InitrdDigest != nil {
			p("linux.initrd_digest", lf.InitrdDigest.Value, lf.InitrdDigest.Events, true)
		}
	}
	if wf := f.Windows; wf != nil {
		pb("windows.boot_debugging", wf.BootDebugging)
		pb("windows.kernel_debug", wf.KernelDebug)
		pb("windows.test_signing", wf.TestSigning)
		pb("windows.flight_signing", wf.FlightSigning)
		pb("windows.code_integrity", wf.CodeIntegrity)
		pb("windows.dep", wf.DEP)
		pb("windows.safe_mode", wf.SafeMode)
		pb("windows.winpe", wf.WinPE)
		pu("windows.hypervisor_launch_type", wf.HypervisorLaunchType)
		pb("windows.hypervisor_debug", wf.HypervisorDebug)
		pu("windows.hypervisor_iommu_policy", wf.HypervisorIOMMUPolicy)
		pb("windows.hypervisor_boot_dma_protection", wf.HypervisorBootDMAProtection)
		pu("windows.vsm_launch_type", wf.VSMLaunchType)
		pb("windows.vbs.vsm_required", wf.VBS.VSMRequired)
		pb("windows.vbs.iommu_required", wf.VBS.IOMMURequired)
		pu("windows.vbs.hvci_policy", wf.VBS.HVCIPolicy)
		for _, sp := range wf.SIPolicies {
			p("windows.si_policy", fmt.Sprintf("%q v%d %s:%s", sp.Value.Name, sp.Value.Version, sp.Value.Alg, sp.Value.Digest), sp.Events, true)
		}
		if wf.VSMIdentityKey != nil {
			p("windows.vsm_identity_key", fmt.Sprintf("RSA-%d", wf.VSMIdentityKey.Value.KeyBitLength), wf.VSMIdentityKey.Events, true)
		}
		for _, u := range wf.BitLockerUnlocks {
			p("windows.bitlocker_unlock", fmt.Sprintf("0x%x", u.Value), u.Events, true)
		}
		pu("windows.boot_counter", wf.BootCounter)
		pb("windows.full_boot", wf.FullBoot)
		pb("windows.hibernation_disabled", wf.HibernationDisabled)
		pb("windows.dumps_disabled", wf.DumpsDisabled)
		pb("windows.dump_encryption_enabled", wf.DumpEncryptionEnabled)
		pb("windows.pagefile_encryption_enabled", wf.PagefileEncryptionEnabled)
		if len(wf.Modules) > 0 {
			p("windows.modules", len(wf.Modules), []int{wf.Modules[0].Event}, true)
		}
	}
	if c := f.Confidential; c != nil {
		if c.Technology != nil {
			p("confidential.technology", c.Technology.Value, c.Technology.Events, c.Technology.Bound)
		}
		if c.TDX {
			fmt.Fprintf(w, "%-32s %v\n", "confidential.tdx_ccel", true)
		}
	}
	for _, x := range f.Findings {
		fmt.Fprintf(w, "FINDING %s\n", x)
	}
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

func fmtOrder(o []uint16) string {
	s := make([]string, len(o))
	for i, n := range o {
		s[i] = fmt.Sprintf("%04X", n)
	}
	return strings.Join(s, ",")
}

func digestsOf(m map[string]measure.Hex) string {
	for _, alg := range []string{"sha256", "sha384", "sha512", "sm3_256", "sha1"} {
		if d, ok := m[alg]; ok {
			return alg + ":" + d.String()
		}
	}
	return ""
}

func sha8(c *measure.Certificate) []byte {
	fp := c.SHA256()
	return fp[:8]
}
