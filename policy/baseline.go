package policy

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/shieldvm/shieldvm/measure"
)

// LearnOptions tune [Learn].
type LearnOptions struct {
	// ID is the id of the learned policy. If empty, "baseline".
	ID string
	// PCRs are the registers that may be pinned by value when every host
	// has the same. If nil, the static root of trust's code and
	// configuration registers 0-7 and Windows' 11-14.
	PCRs []uint32
}

// Note explains one decision of a learned baseline.
type Note struct {
	// Rule is the rule name as in a verdict ("hgs.SecureBootEnabled",
	// "pcr.sha256[1]").
	Rule string `json:"rule"`
	// Pinned is true when the rule was switched on.
	Pinned bool `json:"pinned"`
	// Why says what the hosts showed.
	Why string `json:"why"`
}

// Baseline is a learned policy and the explanation of what it pinned and
// what it generalised.
type Baseline struct {
	Policy *Policy `json:"policy"`
	Notes  []Note  `json:"notes"`
}

// Learn makes a policy from the verified evidence of known-good hosts, as
// HGS's Get-HgsAttestationBaselinePolicy does. A rule is switched on
// (enforced) when every host passes it; allow-lists are the union of what
// the hosts measured (code-integrity policies, db entries, boot
// applications, kernels) or, for dbx, the intersection; a PCR is pinned
// when every host quoted the same value, and left out, with a note, when
// they differ (such as PCR 1's platform configuration). Learn is pure and
// deterministic: the hosts' order does not change the policy.
func Learn(hosts []*Input, opts LearnOptions) (*Baseline, error) {
	if len(hosts) == 0 {
		return nil, errors.New("policy: learning needs at least one host")
	}
	if opts.ID == "" {
		opts.ID = "baseline"
	}
	if opts.PCRs == nil {
		opts.PCRs = []uint32{0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14}
	}
	srcs := make([]*factSource, len(hosts))
	for i, h := range hosts {
		srcs[i] = newFactSource(h)
		if srcs[i].err != nil {
			return nil, fmt.Errorf("policy: host %d: %v", i, srcs[i].err)
		}
	}
	b := &Baseline{Policy: &Policy{
		Version:     Version,
		ID:          opts.ID,
		Description: fmt.Sprintf("learned from %d host(s)", len(hosts)),
	}}
	p := b.Policy
	note := func(rule string, pinned bool, format string, a ...any) {
		b.Notes = append(b.Notes, Note{Rule: rule, Pinned: pinned, Why: fmt.Sprintf(format, a...)})
	}

	// Allow-lists: unions (and dbx's intersection) over the hosts.
	var ci, dumpKeys, db, apps, kernels, initrds, sb7 []Digest
	var dbx [][]byte
	allWindows := true
	for i, s := range srcs {
		f := s.facts
		if w := f.Windows; w != nil {
			for _, sp := range w.SIPolicies {
				ci = addDigest(ci, sp.Value.Digest)
			}
			if k := w.DumpEncryptionKeyDigest; k != nil {
				dumpKeys = addDigest(dumpKeys, k.Value)
			}
		} else {
			allWindows = false
		}
		if d := f.SecureBoot.DB; d != nil {
			for _, c := range d.Certificates {
				h := c.SHA256()
				db = addDigest(db, h[:])
			}
			for _, h := range d.Hashes {
				db = addDigest(db, h.Hash)
			}
		}
		var hostDBX [][]byte
		if d := f.SecureBoot.DBX; d != nil {
			for _, h := range d.Hashes {
				hostDBX = append(hostDBX, h.Hash)
			}
		}
		if i == 0 {
			dbx = hostDBX
		} else {
			dbx = slices.DeleteFunc(dbx, func(h []byte) bool {
				return !slices.ContainsFunc(hostDBX, func(x []byte) bool { return bytes.Equal(x, h) })
			})
		}
		for _, a := range f.Boot.Applications {
			for _, alg := range []string{"sha256", "sha384", "sha1"} {
				if d, ok := a.Digests[alg]; ok {
					apps = addDigest(apps, d)
					break
				}
			}
		}
		if l := f.Linux; l != nil {
			if l.KernelFile != nil {
				if d, ok := l.KernelFile.Digests["sha256"]; ok {
					kernels = addDigest(kernels, d)
				}
			}
			if l.InitrdFile != nil {
				if d, ok := l.InitrdFile.Digests["sha256"]; ok {
					initrds = addDigest(initrds, d)
				}
			}
		}
		if v, ok := hosts[i].PCRs[measure.SHA256][7]; ok {
			sb7 = addDigest(sb7, v)
		} else if v, ok := hosts[i].PCRs[measure.SHA1][7]; ok {
			sb7 = addDigest(sb7, v)
		}
	}

	// Candidate policy: every switch on, every allow-list from the union.
	h := &HGSRules{
		SecureBootEnabled: Enforce, UefiDebugDisabled: Enforce, BootDebuggingDisabled: Enforce,
	}
	if allWindows {
		h.HypervisorEnforcedCiPolicy, h.FullBoot, h.VsmIdkPresent = Enforce, Enforce, Enforce
		h.PageFileEncryptionEnabled, h.BitLockerEnabled, h.IommuEnabled = Enforce, Enforce, Enforce
		h.NoHibernation, h.NoDumps, h.DumpEncryption = Enforce, Enforce, Enforce
		if len(ci) > 0 {
			h.CiPolicy = &AllowList{Mode: Enforce, Allowed: sortDigests(ci), Note: "code-integrity policies the hosts measured"}
		}
		if len(dumpKeys) > 0 {
			h.DumpEncryptionKey = &AllowList{Mode: Enforce, Allowed: sortDigests(dumpKeys), Note: "dump encryption keys the hosts measured"}
		}
	}
	if len(sb7) > 0 {
		h.SecureBootSettings = &AllowList{Mode: Enforce, Allowed: sortDigests(sb7), Note: "the hosts' PCR 7"}
	}
	u := &UEFIRules{}
	if len(db) > 0 {
		u.DBAllowed = &AllowList{Mode: Enforce, Allowed: sortDigests(db), Note: "the union of the hosts' db"}
	}
	if len(dbx) > 0 {
		req := make([]Digest, len(dbx))
		for i, d := range dbx {
			req[i] = d
		}
		u.DBXRequired = &AllowList{Mode: Enforce, Allowed: sortDigests(req), Note: "the revocations every host applied"}
	}
	if len(apps) > 0 {
		u.BootApplications = &AllowList{Mode: Enforce, Allowed: sortDigests(apps), Note: "the boot applications the hosts loaded"}
	}
	l := &LinuxRules{}
	if len(kernels) > 0 {
		l.KernelDigests = &AllowList{Mode: Enforce, Allowed: sortDigests(kernels), Note: "the kernels the hosts booted"}
	}
	if len(initrds) > 0 {
		l.InitrdDigests = &AllowList{Mode: Enforce, Allowed: sortDigests(initrds), Note: "the initrds the hosts booted"}
	}
	cand := &Policy{Version: Version, ID: opts.ID, HGS: h, UEFI: u, Linux: l}

	// Keep the rules every host passes.
	passed := map[string]int{}
	reasons := map[string]string{}
	for i := range hosts {
		for _, r := range cand.Evaluate(hosts[i]).Rules {
			if r.Passed {
				passed[r.Rule]++
			} else if _, ok := reasons[r.Rule]; !ok {
				reasons[r.Rule] = fmt.Sprintf("host %d: %s", i, r.Reason)
			}
		}
	}
	keep := func(name string) bool {
		ok := passed[name] == len(hosts)
		if ok {
			note(name, true, "every host passes")
		} else if reasons[name] != "" {
			note(name, false, "%s", reasons[name])
		}
		return ok
	}
	for _, sw := range []struct {
		name string
		e    *Enforcement
	}{
		{"SecureBootEnabled", &h.SecureBootEnabled}, {"UefiDebugDisabled", &h.UefiDebugDisabled},
		{"BootDebuggingDisabled", &h.BootDebuggingDisabled}, {"HypervisorEnforcedCiPolicy", &h.HypervisorEnforcedCiPolicy},
		{"FullBoot", &h.FullBoot}, {"VsmIdkPresent", &h.VsmIdkPresent}, {"PageFileEncryptionEnabled", &h.PageFileEncryptionEnabled},
		{"BitLockerEnabled", &h.BitLockerEnabled}, {"IommuEnabled", &h.IommuEnabled}, {"NoHibernation", &h.NoHibernation},
		{"NoDumps", &h.NoDumps}, {"DumpEncryption", &h.DumpEncryption},
	} {
		if *sw.e != Off && !keep("hgs."+sw.name) {
			*sw.e = Off
		}
	}
	for _, al := range []struct {
		name string
		a    **AllowList
	}{
		{"hgs.CiPolicy", &h.CiPolicy}, {"hgs.DumpEncryptionKey", &h.DumpEncryptionKey}, {"hgs.SecureBootSettings", &h.SecureBootSettings},
		{"uefi.db_allowed", &u.DBAllowed}, {"uefi.dbx_required", &u.DBXRequired}, {"uefi.boot_applications", &u.BootApplications},
		{"linux.kernel_digests", &l.KernelDigests}, {"linux.initrd_digests", &l.InitrdDigests},
	} {
		if *al.a != nil && !keep(al.name) {
			*al.a = nil
		}
	}
	if h.count() > 0 {
		p.HGS = h
	}
	if u.count() > 0 {
		p.UEFI = u
	}
	if l.count() > 0 {
		p.Linux = l
	}

	// PCRs: pinned when every host quoted the same value.
	for _, alg := range []measure.HashAlg{measure.SHA1, measure.SHA256, measure.SHA384} {
		for _, r := range opts.PCRs {
			var first []byte
			same, all := true, true
			for _, hst := range hosts {
				v, ok := hst.PCRs[alg][r]
				if !ok {
					all = false
					break
				}
				if first == nil {
					first = v
				} else if !bytes.Equal(first, v) {
					same = false
				}
			}
			name := fmt.Sprintf("pcr.%v[%d]", alg, r)
			switch {
			case !all:
				continue
			case !same:
				note(name, false, "generalised: the hosts' values differ")
			default:
				if p.PCRs == nil {
					p.PCRs = map[string]map[string][]Digest{}
				}
				if p.PCRs[alg.String()] == nil {
					p.PCRs[alg.String()] = map[string][]Digest{}
				}
				p.PCRs[alg.String()][strconv.Itoa(int(r))] = []Digest{first}
				note(name, true, "every host quoted %x", first)
			}
		}
	}
	if err := p.Check(); err != nil {
		return nil, fmt.Errorf("policy: the hosts share nothing to pin: %w", err)
	}
	return b, nil
}

func addDigest(list []Digest, d []byte) []Digest {
	if len(d) == 0 || slices.ContainsFunc(list, func(x Digest) bool { return bytes.Equal(x, d) }) {
		return list
	}
	return append(list, Digest(bytes.Clone(d)))
}

func sortDigests(l []Digest) []Digest {
	slices.SortFunc(l, func(a, b Digest) int { return bytes.Compare(a, b) })
	return l
}
