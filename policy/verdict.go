package policy

import (
	"encoding/json"
	"fmt"
)

// Status is the overall appraisal of a host, with the values of the
// AR4SI trustworthiness tiers that EAR uses (draft-ietf-rats-ar4si,
// section 2.3.1).
type Status int8

const (
	// StatusNone: nothing was appraised.
	StatusNone Status = 0
	// Affirming: every rule passed.
	Affirming Status = 2
	// Warning: every enforced rule passed, and at least one rule in
	// audit mode failed.
	Warning Status = 32
	// Contraindicated: an enforced rule failed.
	Contraindicated Status = 96
)

// String returns the EAR name: "none", "affirming", "warning" or
// "contraindicated".
func (s Status) String() string {
	switch s {
	case StatusNone:
		return "none"
	case Affirming:
		return "affirming"
	case Warning:
		return "warning"
	case Contraindicated:
		return "contraindicated"
	}
	return fmt.Sprintf("Status(%d)", int8(s))
}

// ParseStatus is the inverse of [Status.String].
func ParseStatus(s string) (Status, error) {
	for _, v := range []Status{StatusNone, Affirming, Warning, Contraindicated} {
		if v.String() == s {
			return v, nil
		}
	}
	return 0, fmt.Errorf("policy: unknown status %q", s)
}

// MarshalText encodes the status by name.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a status name.
func (s *Status) UnmarshalText(b []byte) error {
	v, err := ParseStatus(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// worse returns the worse of two statuses.
func worse(a, b Status) Status {
	if b > a {
		return b
	}
	return a
}

// Category is the AR4SI trustworthiness claim a rule informs.
type Category string

// The AR4SI trustworthiness claims (draft-ietf-rats-ar4si, section 2.3).
const (
	CategoryConfiguration Category = "configuration"
	CategoryExecutables   Category = "executables"
	CategoryHardware      Category = "hardware"
)

// EventRef names one event of the verified log that a rule relied on.
type EventRef struct {
	// Index is the event's position in the log.
	Index int `json:"index"`
	// PCR is the register the event extended.
	PCR uint32 `json:"pcr"`
	// Type is the event type's spec name (EV_EFI_VARIABLE_DRIVER_CONFIG).
	Type string `json:"type"`
	// What is a short description: the variable name, the SIPA tag, the
	// file path.
	What string `json:"what,omitempty"`
}

// RuleResult is the outcome of one rule.
type RuleResult struct {
	// Rule is the rule's name ("hgs.SecureBootEnabled", "pcr.sha256[7]").
	Rule string `json:"rule"`
	// Category is the trustworthiness claim the rule informs.
	Category Category `json:"category"`
	// Passed reports whether the facts satisfy the rule.
	Passed bool `json:"passed"`
	// Enforced is false for rules in audit mode: their failure warns.
	Enforced bool `json:"enforced"`
	// Reason says, in one sentence, why the rule passed or failed.
	Reason string `json:"reason"`
	// Events are the verified events the decision relied on.
	Events []EventRef `json:"events,omitempty"`
}

// Status returns the status this result alone gives.
func (r *RuleResult) Status() Status {
	switch {
	case r.Passed:
		return Affirming
	case r.Enforced:
		return Contraindicated
	}
	return Warning
}

// Verdict is the outcome of [Policy.Evaluate]: an overall status and the
// result of every rule, in the policy's order.
type Verdict struct {
	// Status is the worst status of the rules; Affirming if there are
	// none... and the policy allowed that (see [Policy.Evaluate]).
	Status Status `json:"status"`
	// PolicyID is the id of the policy that was applied.
	PolicyID string `json:"policy_id"`
	// Rules holds the result of each rule.
	Rules []RuleResult `json:"rules"`
}

// Failed returns the rules that did not pass.
func (v *Verdict) Failed() []RuleResult {
	var out []RuleResult
	for _, r := range v.Rules {
		if !r.Passed {
			out = append(out, r)
		}
	}
	return out
}

// CategoryStatus returns the worst status of the rules of one category, or
// StatusNone if no rule informs it.
func (v *Verdict) CategoryStatus(c Category) Status {
	s := StatusNone
	for i := range v.Rules {
		if v.Rules[i].Category == c {
			s = worse(s, v.Rules[i].Status())
		}
	}
	return s
}

// String returns a one-line summary: the status and the failed rules.
func (v *Verdict) String() string {
	f := v.Failed()
	if len(f) == 0 {
		return fmt.Sprintf("%v (%d rules passed)", v.Status, len(v.Rules))
	}
	names := make([]string, len(f))
	for i, r := range f {
		names[i] = r.Rule + ": " + r.Reason
	}
	b, _ := json.Marshal(names)
	return fmt.Sprintf("%v: %s", v.Status, b)
}
