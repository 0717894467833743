package policy

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/shieldvm/shieldvm/measure"
)

// factSource is the policy's view of the verified boot: the facts and the
// events they came from.
type factSource struct {
	in     *Input
	facts  *measure.Facts
	err    error
	events map[int]*measure.Event
}

func newFactSource(in *Input) *factSource {
	f := &factSource{in: in, facts: in.Facts}
	if f.facts == nil && in.Log != nil {
		f.facts, f.err = in.Log.Facts()
	}
	if f.facts == nil && f.err == nil {
		f.err = fmt.Errorf("no verified event log")
	}
	return f
}

// refs turns event indices into references, with the register and type of
// each event from the verified log.
func (f *factSource) refs(idx []int) []EventRef {
	if len(idx) == 0 {
		return nil
	}
	idx = slices.Compact(slices.Sorted(slices.Values(idx)))
	if f.events == nil && f.in.Log != nil {
		f.events = map[int]*measure.Event{}
		evs := f.in.Log.Events()
		for i := range evs {
			f.events[evs[i].Index] = &evs[i]
		}
	}
	out := make([]EventRef, 0, len(idx))
	for _, i := range idx {
		r := EventRef{Index: i}
		if ev := f.events[i]; ev != nil {
			r.PCR = ev.Register
			r.Type = ev.Type.String()
		}
		out = append(out, r)
	}
	return out
}

// rule is a helper that builds one RuleResult.
type rule struct {
	f   *factSource
	res RuleResult
}

func (f *factSource) rule(name string, c Category, e Enforcement) *rule {
	return &rule{f: f, res: RuleResult{Rule: name, Category: c, Enforced: e == Enforce}}
}

func (r *rule) pass(events []int, format string, a ...any) RuleResult {
	r.res.Passed = true
	r.res.Reason = fmt.Sprintf(format, a...)
	r.res.Events = r.f.refs(events)
	return r.res
}

func (r *rule) fail(events []int, format string, a ...any) RuleResult {
	r.res.Reason = fmt.Sprintf(format, a...)
	r.res.Events = r.f.refs(events)
	return r.res
}

// boolFact judges a boolean fact that must have the value want. A fact
// the log does not show, or shows without binding it to a digest, fails.
func (f *factSource) boolFact(name string, c Category, e Enforcement, fact *measure.Fact[bool], want bool, what string) RuleResult {
	r := f.rule(name, c, e)
	if f.err != nil {
		return r.fail(nil, "%s cannot be judged: %v", what, f.err)
	}
	switch {
	case fact == nil:
		return r.fail(nil, "the verified log does not show whether %s", what)
	case !fact.Bound:
		return r.fail(fact.Events, "the log's statement on whether %s is not bound to a quoted digest", what)
	case fact.Value != want:
		return r.fail(fact.Events, "the policy requires that %s; the verified log shows otherwise", what)
	}
	return r.pass(fact.Events, "%s", what)
}

// HGSRules are the Host Guardian Service's attestation policies, by their
// HGS names (Get-HgsAttestationPolicy). Each is off unless switched on.
type HGSRules struct {
	// SecureBootEnabled: UEFI Secure Boot is on (the SecureBoot variable
	// measured into PCR 7 is 1).
	SecureBootEnabled Enforcement `json:"SecureBootEnabled,omitempty"`
	// UefiDebugDisabled: the firmware did not measure "UEFI Debug Mode"
	// into PCR 7.
	UefiDebugDisabled Enforcement `json:"UefiDebugDisabled,omitempty"`
	// SecureBootSettings: the Secure Boot configuration (PCR 7, in any
	// quoted bank) is one of the allowed values.
	SecureBootSettings *AllowList `json:"SecureBootSettings,omitempty"`
	// CiPolicy: every code-integrity (SI) policy Windows measured has an
	// allowed digest, and there is at least one.
	CiPolicy *AllowList `json:"CiPolicy,omitempty"`
	// HypervisorEnforcedCiPolicy: hypervisor-enforced code integrity
	// (HVCI) is on.
	HypervisorEnforcedCiPolicy Enforcement `json:"HypervisorEnforcedCiPolicy,omitempty"`
	// FullBoot: the host booted fully, not resumed from hibernation.
	FullBoot Enforcement `json:"FullBoot,omitempty"`
	// VsmIdkPresent: the VSM identity key was measured.
	VsmIdkPresent Enforcement `json:"VsmIdkPresent,omitempty"`
	// PageFileEncryptionEnabled: the page file is encrypted.
	PageFileEncryptionEnabled Enforcement `json:"PageFileEncryptionEnabled,omitempty"`
	// BitLockerEnabled: BitLocker unlocked the OS volume (some unlock
	// event has a non-zero FVEB unlock flag).
	BitLockerEnabled Enforcement `json:"BitLockerEnabled,omitempty"`
	// IommuEnabled: the hypervisor's IOMMU policy is on (or VBS requires
	// the IOMMU) and the firmware did not disable DMA protection.
	IommuEnabled Enforcement `json:"IommuEnabled,omitempty"`
	// NoHibernation: hibernation is disabled.
	NoHibernation Enforcement `json:"NoHibernation,omitempty"`
	// NoDumps: crash dumps are disabled.
	NoDumps Enforcement `json:"NoDumps,omitempty"`
	// DumpEncryption: crash dumps are encrypted.
	DumpEncryption Enforcement `json:"DumpEncryption,omitempty"`
	// DumpEncryptionKey: the dump encryption key's digest is allowed.
	DumpEncryptionKey *AllowList `json:"DumpEncryptionKey,omitempty"`
	// BootDebuggingDisabled (a shieldvm addition): no boot debugging,
	// kernel debugging or hypervisor debugging was measured.
	BootDebuggingDisabled Enforcement `json:"BootDebuggingDisabled,omitempty"`
}

func (h *HGSRules) switches() []struct {
	name string
	e    Enforcement
} {
	return []struct {
		name string
		e    Enforcement
	}{
		{"SecureBootEnabled", h.SecureBootEnabled},
		{"UefiDebugDisabled", h.UefiDebugDisabled},
		{"HypervisorEnforcedCiPolicy", h.HypervisorEnforcedCiPolicy},
		{"FullBoot", h.FullBoot},
		{"VsmIdkPresent", h.VsmIdkPresent},
		{"PageFileEncryptionEnabled", h.PageFileEncryptionEnabled},
		{"BitLockerEnabled", h.BitLockerEnabled},
		{"IommuEnabled", h.IommuEnabled},
		{"NoHibernation", h.NoHibernation},
		{"NoDumps", h.NoDumps},
		{"DumpEncryption", h.DumpEncryption},
		{"BootDebuggingDisabled", h.BootDebuggingDisabled},
	}
}

func (h *HGSRules) check() error {
	if h == nil {
		return nil
	}
	for _, s := range h.switches() {
		if err := s.e.check(s.name); err != nil {
			return err
		}
	}
	for name, a := range map[string]*AllowList{"SecureBootSettings": h.SecureBootSettings, "CiPolicy": h.CiPolicy, "DumpEncryptionKey": h.DumpEncryptionKey} {
		if err := a.check(name); err != nil {
			return err
		}
	}
	return nil
}

func (h *HGSRules) count() int {
	if h == nil {
		return 0
	}
	n := 0
	for _, s := range h.switches() {
		if s.e != Off {
			n++
		}
	}
	for _, a := range []*AllowList{h.SecureBootSettings, h.CiPolicy, h.DumpEncryptionKey} {
		if a.enforcement() != Off {
			n++
		}
	}
	return n
}

func (h *HGSRules) eval(f *factSource, add func(RuleResult)) {
	if h == nil {
		return
	}
	var win *measure.WindowsFacts
	var fw measure.FirmwareFacts
	var sb measure.SecureBootFacts
	if f.facts != nil {
		win = f.facts.Windows
		fw = f.facts.Firmware
		sb = f.facts.SecureBoot
	}
	// windows runs a rule that needs Windows facts.
	windows := func(name string, c Category, e Enforcement, judge func(r *rule, w *measure.WindowsFacts) RuleResult) {
		if e == Off {
			return
		}
		r := f.rule("hgs."+name, c, e)
		switch {
		case f.err != nil:
			add(r.fail(nil, "cannot be judged: %v", f.err))
		case win == nil:
			add(r.fail(nil, "the verified log holds no Windows boot configuration (WBCL)"))
		default:
			add(judge(r, win))
		}
	}
	boolW := func(name string, c Category, e Enforcement, get func(w *measure.WindowsFacts) *measure.Fact[bool], want bool, what string) {
		windows(name, c, e, func(r *rule, w *measure.WindowsFacts) RuleResult {
			return f.boolFact("hgs."+name, c, e, get(w), want, what)
		})
	}

	if h.SecureBootEnabled != Off {
		add(f.boolFact("hgs.SecureBootEnabled", CategoryConfiguration, h.SecureBootEnabled, sb.Enabled, true, "Secure Boot is enabled"))
	}
	if e := h.UefiDebugDisabled; e != Off {
		r := f.rule("hgs.UefiDebugDisabled", CategoryConfiguration, e)
		switch {
		case f.err != nil:
			add(r.fail(nil, "cannot be judged: %v", f.err))
		case !slices.Contains(f.facts.Registers, 7):
			add(r.fail(nil, "PCR 7, where firmware measures its debug mode, is not verified"))
		default:
			var hits []int
			for _, a := range fw.Actions {
				if strings.EqualFold(strings.TrimRight(a.Value, "\x00"), "UEFI Debug Mode") {
					hits = append(hits, a.Events...)
				}
			}
			if len(hits) > 0 {
				add(r.fail(hits, "the firmware measured \"UEFI Debug Mode\": a debugger can take over the platform"))
			} else {
				add(r.pass(nil, "PCR 7 is verified and holds no \"UEFI Debug Mode\" event"))
			}
		}
	}
	if a := h.SecureBootSettings; a.enforcement() != Off {
		r := f.rule("hgs.SecureBootSettings", CategoryConfiguration, a.Mode)
		var seen []string
		passed := false
		for _, alg := range []measure.HashAlg{measure.SHA1, measure.SHA256, measure.SHA384, measure.SHA512} {
			if v, ok := f.in.PCRs[alg][7]; ok {
				seen = append(seen, fmt.Sprintf("%v:%x", alg, v))
				passed = passed || a.has(v)
			}
		}
		switch {
		case len(seen) == 0:
			add(r.fail(nil, "PCR 7 was not quoted"))
		case passed:
			add(r.pass(nil, "the Secure Boot configuration (PCR 7 %s) is allowed", strings.Join(seen, ", ")))
		default:
			add(r.fail(nil, "the Secure Boot configuration (PCR 7 %s) is not one of the %d allowed", strings.Join(seen, ", "), len(a.Allowed)))
		}
	}
	if a := h.CiPolicy; a.enforcement() != Off {
		windows("CiPolicy", CategoryExecutables, a.Mode, func(r *rule, w *measure.WindowsFacts) RuleResult {
			if len(w.SIPolicies) == 0 {
				return r.fail(nil, "no code-integrity policy was measured")
			}
			var evs []int
			var names []string
			for _, p := range w.SIPolicies {
				evs = append(evs, p.Events...)
				if !p.Bound {
					return r.fail(p.Events, "code-integrity policy %q is not bound to a quoted digest", p.Value.Name)
				}
				if !a.has(p.Value.Digest) {
					return r.fail(p.Events, "code-integrity policy %q (%x) is not allowed", p.Value.Name, []byte(p.Value.Digest))
				}
				names = append(names, p.Value.Name)
			}
			return r.pass(evs, "every code-integrity policy is allowed: %s", joinNames(names))
		})
	}
	windows("HypervisorEnforcedCiPolicy", CategoryExecutables, h.HypervisorEnforcedCiPolicy, func(r *rule, w *measure.WindowsFacts) RuleResult {
		p := w.VBS.HVCIPolicy
		switch {
		case p == nil:
			return r.fail(nil, "no HVCI policy was measured: hypervisor-enforced code integrity is off")
		case !p.Bound:
			return r.fail(p.Events, "the HVCI policy is not bound to a quoted digest")
		case p.Value&1 == 0:
			return r.fail(p.Events, "HVCI policy %#x: hypervisor-enforced code integrity is off", p.Value)
		}
		return r.pass(p.Events, "HVCI policy %#x: hypervisor-enforced code integrity is on", p.Value)
	})
	boolW("FullBoot", CategoryConfiguration, h.FullBoot, func(w *measure.WindowsFacts) *measure.Fact[bool] { return w.FullBoot }, true, "the host booted fully (not a resume from hibernation)")
	windows("VsmIdkPresent", CategoryConfiguration, h.VsmIdkPresent, func(r *rule, w *measure.WindowsFacts) RuleResult {
		if k := w.VSMIdentityKey; k != nil && k.Bound {
			return r.pass(k.Events, "the VSM identity key (%d-bit) was measured", k.Value.KeyBitLength)
		}
		return r.fail(nil, "no VSM identity key was measured: virtualization-based security did not start")
	})
	boolW("PageFileEncryptionEnabled", CategoryConfiguration, h.PageFileEncryptionEnabled, func(w *measure.WindowsFacts) *measure.Fact[bool] { return w.PagefileEncryptionEnabled }, true, "the page file is encrypted")
	windows("BitLockerEnabled", CategoryConfiguration, h.BitLockerEnabled, func(r *rule, w *measure.WindowsFacts) RuleResult {
		var evs []int
		for _, u := range w.BitLockerUnlocks {
			evs = append(evs, u.Events...)
			if u.Bound && u.Value != 0 {
				return r.pass(u.Events, "BitLocker unlocked the OS volume (unlock flags %#x)", u.Value)
			}
		}
		if len(evs) == 0 {
			return r.fail(nil, "no BitLocker unlock was measured")
		}
		return r.fail(evs, "every BitLocker unlock event has flags 0: the volume was not unlocked by BitLocker")
	})
	windows("IommuEnabled", CategoryConfiguration, h.IommuEnabled, func(r *rule, w *measure.WindowsFacts) RuleResult {
		if d := fw.DMAProtectionDisabled; d != nil && d.Value {
			return r.fail(d.Events, "the firmware measured \"DMA Protection Disabled\"")
		}
		if p := w.HypervisorIOMMUPolicy; p != nil && p.Bound && p.Value != 0 {
			return r.pass(p.Events, "hypervisor IOMMU policy %#x", p.Value)
		}
		if q := w.VBS.IOMMURequired; q != nil && q.Bound && q.Value {
			return r.pass(q.Events, "virtualization-based security requires the IOMMU")
		}
		return r.fail(nil, "neither a hypervisor IOMMU policy nor a VBS IOMMU requirement was measured")
	})
	boolW("NoHibernation", CategoryConfiguration, h.NoHibernation, func(w *measure.WindowsFacts) *measure.Fact[bool] { return w.HibernationDisabled }, true, "hibernation is disabled")
	boolW("NoDumps", CategoryConfiguration, h.NoDumps, func(w *measure.WindowsFacts) *measure.Fact[bool] { return w.DumpsDisabled }, true, "crash dumps are disabled")
	boolW("DumpEncryption", CategoryConfiguration, h.DumpEncryption, func(w *measure.WindowsFacts) *measure.Fact[bool] { return w.DumpEncryptionEnabled }, true, "crash dumps are encrypted")
	if a := h.DumpEncryptionKey; a.enforcement() != Off {
		windows("DumpEncryptionKey", CategoryConfiguration, a.Mode, func(r *rule, w *measure.WindowsFacts) RuleResult {
			k := w.DumpEncryptionKeyDigest
			switch {
			case k == nil:
				return r.fail(nil, "no dump encryption key was measured")
			case !k.Bound:
				return r.fail(k.Events, "the dump encryption key digest is not bound to a quoted digest")
			case !a.has(k.Value):
				return r.fail(k.Events, "dump encryption key %x is not allowed", []byte(k.Value))
			}
			return r.pass(k.Events, "dump encryption key %x is allowed", []byte(k.Value))
		})
	}
	windows("BootDebuggingDisabled", CategoryConfiguration, h.BootDebuggingDisabled, func(r *rule, w *measure.WindowsFacts) RuleResult {
		var evs []int
		for _, d := range []struct {
			what string
			f    *measure.Fact[bool]
		}{{"boot debugging", w.BootDebugging}, {"kernel debugging", w.KernelDebug}, {"hypervisor debugging", w.HypervisorDebug}} {
			if d.f == nil {
				continue
			}
			evs = append(evs, d.f.Events...)
			if d.f.Value {
				return r.fail(d.f.Events, "%s is on: a debugger can read the memory of every VM", d.what)
			}
			if !d.f.Bound {
				return r.fail(d.f.Events, "the %s setting is not bound to a quoted digest", d.what)
			}
		}
		if len(evs) == 0 {
			return r.fail(nil, "the verified log does not show the debugging settings")
		}
		return r.pass(evs, "boot, kernel and hypervisor debugging are off")
	})
}

// UEFIRules are rules on the firmware: Secure Boot databases, boot
// applications and the firmware version.
type UEFIRules struct {
	// DBAllowed: every entry of db (the SHA-256 of each certificate's DER,
	// each hash) is in the list: db ⊆ allowed.
	DBAllowed *AllowList `json:"db_allowed,omitempty"`
	// DBXRequired: dbx holds every listed hash: dbx ⊇ required.
	DBXRequired *AllowList `json:"dbx_required,omitempty"`
	// BootApplications: every boot application has an allowed digest
	// (Authenticode, any bank), or was authorized by a certificate whose
	// SHA-256 is in Authorities.
	BootApplications *AllowList `json:"boot_applications,omitempty"`
	// Authorities are SHA-256 digests of signing certificates whose
	// applications are allowed (used with BootApplications).
	Authorities []Digest `json:"authorities,omitempty"`
	// MinFirmwareVersion: the S-CRTM version, compared number by number
	// ("2.7" < "2.10"), is at least this. Empty: not checked.
	MinFirmwareVersion string `json:"min_firmware_version,omitempty"`
	// MinFirmwareVersionMode is the enforcement of MinFirmwareVersion. If
	// empty while it is set, "enforce".
	MinFirmwareVersionMode Enforcement `json:"min_firmware_version_mode,omitempty"`
}

func (u *UEFIRules) check() error {
	if u == nil {
		return nil
	}
	for name, a := range map[string]*AllowList{"db_allowed": u.DBAllowed, "dbx_required": u.DBXRequired} {
		if err := a.check(name); err != nil {
			return err
		}
	}
	if a := u.BootApplications; a != nil {
		if err := a.Mode.check("boot_applications"); err != nil {
			return err
		}
		if a.Mode != Off && len(a.Allowed)+len(u.Authorities) == 0 {
			return fmt.Errorf("boot_applications: no allowed digest or authority")
		}
	}
	if err := u.MinFirmwareVersionMode.check("min_firmware_version_mode"); err != nil {
		return err
	}
	if u.MinFirmwareVersion != "" {
		if _, ok := versionNumbers(u.MinFirmwareVersion); !ok {
			return fmt.Errorf("min_firmware_version %q has no number", u.MinFirmwareVersion)
		}
	}
	return nil
}

func (u *UEFIRules) count() int {
	if u == nil {
		return 0
	}
	n := 0
	for _, a := range []*AllowList{u.DBAllowed, u.DBXRequired, u.BootApplications} {
		if a.enforcement() != Off {
			n++
		}
	}
	if u.MinFirmwareVersion != "" {
		n++
	}
	return n
}

func (u *UEFIRules) eval(f *factSource, add func(RuleResult)) {
	if u == nil {
		return
	}
	run := func(name string, c Category, e Enforcement, judge func(r *rule, x *measure.Facts) RuleResult) {
		if e == Off {
			return
		}
		r := f.rule("uefi."+name, c, e)
		if f.err != nil {
			add(r.fail(nil, "cannot be judged: %v", f.err))
			return
		}
		add(judge(r, f.facts))
	}
	if a := u.DBAllowed; a != nil {
		run("db_allowed", CategoryConfiguration, a.Mode, func(r *rule, x *measure.Facts) RuleResult {
			db := x.SecureBoot.DB
			if db == nil {
				return r.fail(nil, "db was not measured (or its data did not match its digest)")
			}
			for _, c := range db.Certificates {
				d := c.SHA256()
				if !a.has(d[:]) {
					return r.fail(db.Events, "db holds a certificate that is not allowed (sha256 %x)", d)
				}
			}
			for _, h := range db.Hashes {
				if !a.has(h.Hash) {
					return r.fail(db.Events, "db holds a hash that is not allowed (%x)", []byte(h.Hash))
				}
			}
			return r.pass(db.Events, "all %d certificates and %d hashes of db are allowed", len(db.Certificates), len(db.Hashes))
		})
	}
	if a := u.DBXRequired; a != nil {
		run("dbx_required", CategoryConfiguration, a.Mode, func(r *rule, x *measure.Facts) RuleResult {
			dbx := x.SecureBoot.DBX
			req := make([][]byte, len(a.Allowed))
			for i, d := range a.Allowed {
				req[i] = d
			}
			missing := dbx.Missing(req)
			var evs []int
			if dbx != nil {
				evs = dbx.Events
			}
			if len(missing) > 0 {
				return r.fail(evs, "dbx lacks %d of the %d required revocations (first: %x)", len(missing), len(req), missing[0])
			}
			return r.pass(evs, "dbx holds all %d required revocations", len(req))
		})
	}
	if a := u.BootApplications; a != nil {
		run("boot_applications", CategoryExecutables, a.Mode, func(r *rule, x *measure.Facts) RuleResult {
			apps := x.Boot.Applications
			if len(apps) == 0 {
				return r.fail(nil, "no boot application was measured")
			}
			var evs []int
			for _, app := range apps {
				evs = append(evs, app.Event)
				ok := false
				for _, d := range app.Digests {
					if a.has(d) {
						ok = true
					}
				}
				if !ok && app.Authority >= 0 && app.Authority < len(x.SecureBoot.Authorities) {
					if c := x.SecureBoot.Authorities[app.Authority].Certificate; c != nil {
						d := c.SHA256()
						ok = slices.ContainsFunc(u.Authorities, func(x Digest) bool { return bytes.Equal(x, d[:]) })
					}
				}
				if !ok {
					return r.fail([]int{app.Event}, "boot application %s is neither allowed by digest nor signed by an allowed authority", app.Path)
				}
			}
			return r.pass(evs, "all %d boot applications are allowed", len(apps))
		})
	}
	if u.MinFirmwareVersion != "" {
		mode := u.MinFirmwareVersionMode
		if mode == Off {
			mode = Enforce
		}
		run("min_firmware_version", CategoryExecutables, mode, func(r *rule, x *measure.Facts) RuleResult {
			v := x.Firmware.CRTMVersion
			if v == nil || !v.Bound {
				return r.fail(nil, "the verified log holds no bound S-CRTM version")
			}
			have, ok := versionNumbers(v.Value)
			if !ok {
				return r.fail(v.Events, "S-CRTM version %q has no number to compare", v.Value)
			}
			want, _ := versionNumbers(u.MinFirmwareVersion)
			if slices.Compare(have, want) < 0 {
				return r.fail(v.Events, "firmware version %q is older than %q", v.Value, u.MinFirmwareVersion)
			}
			return r.pass(v.Events, "firmware version %q is at least %q", v.Value, u.MinFirmwareVersion)
		})
	}
}

// versionNumbers extracts the numbers of a version string ("v2.7.1 (2023)"
// gives 2, 7, 1, 2023).
func versionNumbers(s string) ([]uint64, bool) {
	var out []uint64
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r < '0' || r > '9' }) {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return nil, false
		}
		out = append(out, n)
	}
	return out, len(out) > 0
}

// LinuxRules are rules on the Linux boot chain.
type LinuxRules struct {
	// KernelDigests: the kernel the boot loader measured has an allowed
	// digest (any bank).
	KernelDigests *AllowList `json:"kernel_digests,omitempty"`
	// InitrdDigests: the initrd has an allowed digest.
	InitrdDigests *AllowList `json:"initrd_digests,omitempty"`
	// CmdlineMustContain and CmdlineMustNotContain are words (whole
	// space-separated arguments, such as "lockdown=confidentiality") the
	// kernel command line must hold or must not hold.
	CmdlineMustContain    []string    `json:"cmdline_must_contain,omitempty"`
	CmdlineMustNotContain []string    `json:"cmdline_must_not_contain,omitempty"`
	CmdlineMode           Enforcement `json:"cmdline_mode,omitempty"`
}

func (l *LinuxRules) check() error {
	if l == nil {
		return nil
	}
	for name, a := range map[string]*AllowList{"kernel_digests": l.KernelDigests, "initrd_digests": l.InitrdDigests} {
		if err := a.check(name); err != nil {
			return err
		}
	}
	return l.CmdlineMode.check("cmdline_mode")
}

func (l *LinuxRules) count() int {
	if l == nil {
		return 0
	}
	n := 0
	for _, a := range []*AllowList{l.KernelDigests, l.InitrdDigests} {
		if a.enforcement() != Off {
			n++
		}
	}
	if len(l.CmdlineMustContain)+len(l.CmdlineMustNotContain) > 0 {
		n++
	}
	return n
}

func (l *LinuxRules) eval(f *factSource, add func(RuleResult)) {
	if l == nil {
		return
	}
	linux := func(name string, c Category, e Enforcement, judge func(r *rule, x *measure.LinuxFacts) RuleResult) {
		if e == Off {
			return
		}
		r := f.rule("linux."+name, c, e)
		switch {
		case f.err != nil:
			add(r.fail(nil, "cannot be judged: %v", f.err))
		case f.facts.Linux == nil:
			add(r.fail(nil, "the verified log shows no Linux boot"))
		default:
			add(judge(r, f.facts.Linux))
		}
	}
	files := func(name string, a *AllowList, pick func(x *measure.LinuxFacts) ([]measure.LinuxFile, *measure.Fact[measure.Hex])) {
		if a == nil {
			return
		}
		linux(name, CategoryExecutables, a.Mode, func(r *rule, x *measure.LinuxFacts) RuleResult {
			fs, stub := pick(x)
			var evs []int
			for _, file := range fs {
				evs = append(evs, file.Event)
				for _, d := range file.Digests {
					if a.has(d) {
						return r.pass([]int{file.Event}, "%s has an allowed digest (%x)", file.Path, []byte(d))
					}
				}
			}
			if stub != nil {
				evs = append(evs, stub.Events...)
				if stub.Bound && a.has(stub.Value) {
					return r.pass(stub.Events, "the EFI stub measured an allowed digest (%x)", []byte(stub.Value))
				}
			}
			if len(evs) == 0 {
				return r.fail(nil, "not measured")
			}
			return r.fail(evs, "no measured digest is allowed")
		})
	}
	files("kernel_digests", l.KernelDigests, func(x *measure.LinuxFacts) ([]measure.LinuxFile, *measure.Fact[measure.Hex]) {
		var fs []measure.LinuxFile
		if x.KernelFile != nil {
			fs = append(fs, *x.KernelFile)
		}
		if x.Stub != nil {
			fs = append(fs, x.Stub.Sections...)
		}
		return fs, nil
	})
	files("initrd_digests", l.InitrdDigests, func(x *measure.LinuxFacts) ([]measure.LinuxFile, *measure.Fact[measure.Hex]) {
		var fs []measure.LinuxFile
		if x.InitrdFile != nil {
			fs = append(fs, *x.InitrdFile)
		}
		return fs, x.InitrdDigest
	})
	if len(l.CmdlineMustContain)+len(l.CmdlineMustNotContain) > 0 {
		mode := l.CmdlineMode
		if mode == Off {
			mode = Enforce
		}
		linux("cmdline", CategoryConfiguration, mode, func(r *rule, x *measure.LinuxFacts) RuleResult {
			c := x.CommandLine
			if c == nil && x.Stub != nil {
				c = x.Stub.CommandLine
			}
			switch {
			case c == nil:
				return r.fail(nil, "no kernel command line was measured")
			case !c.Bound:
				return r.fail(c.Events, "the kernel command line is not bound to a quoted digest")
			}
			args := strings.Fields(strings.TrimRight(c.Value, "\x00"))
			for _, w := range l.CmdlineMustContain {
				if !slices.Contains(args, w) {
					return r.fail(c.Events, "the kernel command line lacks %q", w)
				}
			}
			for _, w := range l.CmdlineMustNotContain {
				if slices.Contains(args, w) {
					return r.fail(c.Events, "the kernel command line holds %q", w)
				}
			}
			return r.pass(c.Events, "the kernel command line holds every required word and none of the forbidden")
		})
	}
}
