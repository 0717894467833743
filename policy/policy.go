package policy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/shieldvm/shieldvm/measure"
)

// Version is the version of the policy document this package reads.
const Version = 1

// MaxPolicySize bounds the documents [Parse] accepts.
const MaxPolicySize = 1 << 20

// ErrInvalid is wrapped by every error of [Parse].
var ErrInvalid = errors.New("policy: invalid policy")

// Enforcement switches a rule: "enforce" (a failure contraindicates the
// host), "audit" (a failure only warns). An empty value switches the rule
// off.
type Enforcement string

const (
	Off     Enforcement = ""
	Enforce Enforcement = "enforce"
	Audit   Enforcement = "audit"
)

func (e Enforcement) check(name string) error {
	switch e {
	case Off, Enforce, Audit:
		return nil
	}
	return fmt.Errorf("%s: enforcement %q is not \"enforce\" or \"audit\"", name, string(e))
}

// Digest is a hex-encoded digest in JSON.
type Digest []byte

// MarshalText encodes the digest in lower-case hex.
func (d Digest) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(d)), nil }

// UnmarshalText decodes hex.
func (d *Digest) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("digest %q is not hex", b)
	}
	if len(v) == 0 || len(v) > measure.MaxDigestSize {
		return fmt.Errorf("digest of %d bytes", len(v))
	}
	*d = v
	return nil
}

// AllowList is a rule that passes when a measured value is one of the
// allowed digests.
type AllowList struct {
	Mode    Enforcement `json:"mode"`
	Allowed []Digest    `json:"allowed"`
	// Note says where the values come from (for a learned baseline).
	Note string `json:"note,omitempty"`
}

func (a *AllowList) enforcement() Enforcement {
	if a == nil {
		return Off
	}
	return a.Mode
}

func (a *AllowList) has(v []byte) bool {
	return slices.ContainsFunc(a.Allowed, func(d Digest) bool { return bytes.Equal(d, v) })
}

func (a *AllowList) check(name string) error {
	if a == nil {
		return nil
	}
	if err := a.Mode.check(name); err != nil {
		return err
	}
	if a.Mode != Off && len(a.Allowed) == 0 {
		return fmt.Errorf("%s: an enforced allow-list with no value denies every host", name)
	}
	return nil
}

// Policy is an attestation policy: which rules apply and how strictly.
// It is data: decoded strictly from JSON ([Parse]), encoded with
// [Policy.Marshal], diffed and logged. A Policy must not be changed while
// it is in use; [Policy.Evaluate] is safe for concurrent use.
type Policy struct {
	// Version must be [Version].
	Version int `json:"version"`
	// ID names the policy in verdicts and tokens (ear.appraisal-policy-id).
	ID string `json:"id"`
	// Description is free text.
	Description string `json:"description,omitempty"`

	// HGS holds the rules of the Host Guardian Service's attestation
	// policies, by their HGS names.
	HGS *HGSRules `json:"hgs,omitempty"`
	// UEFI holds rules on the firmware's Secure Boot databases, boot
	// applications and version.
	UEFI *UEFIRules `json:"uefi,omitempty"`
	// Linux holds rules on the kernel, initrd and command line.
	Linux *LinuxRules `json:"linux,omitempty"`
	// PCRs are raw allow-lists: bank name ("sha256") → register number →
	// allowed values. A register listed here must be quoted and hold one
	// of the values.
	PCRs map[string]map[string][]Digest `json:"pcrs,omitempty"`
	// PCRMode is the enforcement of the PCR allow-lists. If empty while
	// PCRs is set, "enforce".
	PCRMode Enforcement `json:"pcr_mode,omitempty"`

	pcrs []pcrRule // PCRs, decoded and sorted
}

type pcrRule struct {
	alg     measure.HashAlg
	reg     uint32
	allowed []Digest
}

// Parse decodes a policy document strictly: unknown fields, trailing data,
// an unknown version and inconsistent rules are errors.
func Parse(data []byte) (*Policy, error) {
	if len(data) > MaxPolicySize {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalid, len(data))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the policy", ErrInvalid)
	}
	if err := p.Check(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Check validates a policy built in code, and prepares it for Evaluate.
// [Parse] calls it.
func (p *Policy) Check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	if p.Version != Version {
		return bad("version %d, want %d", p.Version, Version)
	}
	if p.ID == "" {
		return bad("no id")
	}
	if err := p.PCRMode.check("pcr_mode"); err != nil {
		return bad("%v", err)
	}
	p.pcrs = nil
	for bank, regs := range p.PCRs {
		alg, err := measure.ParseHashAlg(bank)
		if err != nil {
			return bad("pcrs: %v", err)
		}
		for rs, vals := range regs {
			r, err := strconv.ParseUint(rs, 10, 8)
			if err != nil || r >= 24 || rs != strconv.FormatUint(r, 10) {
				return bad("pcrs.%s: register %q", bank, rs)
			}
			if len(vals) == 0 {
				return bad("pcrs.%s[%s]: no allowed value", bank, rs)
			}
			for _, v := range vals {
				if len(v) != alg.Size() {
					return bad("pcrs.%s[%s]: value of %d bytes", bank, rs, len(v))
				}
			}
			p.pcrs = append(p.pcrs, pcrRule{alg: alg, reg: uint32(r), allowed: vals})
		}
	}
	slices.SortFunc(p.pcrs, func(a, b pcrRule) int {
		if a.alg != b.alg {
			return int(a.alg) - int(b.alg)
		}
		return int(a.reg) - int(b.reg)
	})
	if err := p.HGS.check(); err != nil {
		return bad("hgs.%v", err)
	}
	if err := p.UEFI.check(); err != nil {
		return bad("uefi.%v", err)
	}
	if err := p.Linux.check(); err != nil {
		return bad("linux.%v", err)
	}
	if p.ruleCount() == 0 {
		return bad("no rule is switched on; a policy that checks nothing affirms every host")
	}
	return nil
}

// Marshal encodes the policy as indented JSON that [Parse] reads back.
func (p *Policy) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("policy: %v", err)
	}
	return append(b, '\n'), nil
}

func (p *Policy) ruleCount() int {
	n := len(p.pcrs)
	n += p.HGS.count() + p.UEFI.count() + p.Linux.count()
	return n
}

// Input is what a policy judges. Everything in it must be verified: the
// PCR values by a quote signature, the log by [measure.Log.Verify].
type Input struct {
	// PCRs are quoted PCR values.
	PCRs measure.QuotedValues
	// Log is the verified event log, or nil.
	Log *measure.VerifiedLog
	// Facts are the facts of Log. If nil, Evaluate derives them from Log
	// (a caller that already has them passes them to save the work).
	Facts *measure.Facts
}

// Evaluate judges the input. It is pure and deterministic: the same input
// gives the same verdict, rules in the same order. A rule that needs what
// the input lacks (no log, a register not quoted) fails with that reason.
// The overall status is the worst of the rules' statuses.
func (p *Policy) Evaluate(in *Input) *Verdict {
	if in == nil {
		in = &Input{}
	}
	v := &Verdict{PolicyID: p.ID, Status: Affirming}
	add := func(r RuleResult) {
		v.Rules = append(v.Rules, r)
		v.Status = worse(v.Status, r.Status())
	}
	if p.pcrs == nil && len(p.PCRs) > 0 || p.Version != Version {
		// Not prepared by Check: refuse rather than judge half a policy.
		if err := p.Check(); err != nil {
			add(RuleResult{Rule: "policy", Category: CategoryConfiguration, Enforced: true, Reason: err.Error()})
			return v
		}
	}
	mode := p.PCRMode
	if mode == Off {
		mode = Enforce
	}
	for _, r := range p.pcrs {
		add(evalPCR(r, mode, in))
	}
	facts := newFactSource(in)
	p.HGS.eval(facts, add)
	p.UEFI.eval(facts, add)
	p.Linux.eval(facts, add)
	if len(v.Rules) == 0 {
		v.Status = StatusNone
	}
	return v
}

func evalPCR(r pcrRule, mode Enforcement, in *Input) RuleResult {
	res := RuleResult{
		Rule:     fmt.Sprintf("pcr.%v[%d]", r.alg, r.reg),
		Category: pcrCategory(r.reg),
		Enforced: mode == Enforce,
	}
	val, ok := in.PCRs[r.alg][r.reg]
	switch {
	case !ok:
		res.Reason = "the register was not quoted"
	case slices.ContainsFunc(r.allowed, func(d Digest) bool { return bytes.Equal(d, val) }):
		res.Passed = true
		res.Reason = fmt.Sprintf("value %x is allowed", val)
	default:
		res.Reason = fmt.Sprintf("value %x is not one of the %d allowed", val, len(r.allowed))
	}
	return res
}

// pcrCategory says what a PC Client PCR measures (TCG PC Client Platform
// Firmware Profile, section 3.3.4): code in even registers 0-4, 8-9,
// configuration in the others.
func pcrCategory(r uint32) Category {
	switch r {
	case 0, 2, 4, 8, 9, 11:
		return CategoryExecutables
	}
	return CategoryConfiguration
}

// joinNames lists names for a reason.
func joinNames(names []string) string {
	if len(names) > 5 {
		return strings.Join(names[:5], ", ") + fmt.Sprintf(" and %d more", len(names)-5)
	}
	return strings.Join(names, ", ")
}
