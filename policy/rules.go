package policy

// factSource is the policy's view of the verified boot facts.
type factSource struct {
	in *Input
}

func newFactSource(in *Input) *factSource { return &factSource{in: in} }

// HGSRules are the Host Guardian Service attestation policies.
type HGSRules struct{}

func (h *HGSRules) check() error                             { return nil }
func (h *HGSRules) count() int                               { return 0 }
func (h *HGSRules) eval(f *factSource, add func(RuleResult)) {}

// UEFIRules are rules on the firmware.
type UEFIRules struct{}

func (u *UEFIRules) check() error                             { return nil }
func (u *UEFIRules) count() int                               { return 0 }
func (u *UEFIRules) eval(f *factSource, add func(RuleResult)) {}

// LinuxRules are rules on the Linux boot chain.
type LinuxRules struct{}

func (l *LinuxRules) check() error                             { return nil }
func (l *LinuxRules) count() int                               { return 0 }
func (l *LinuxRules) eval(f *factSource, add func(RuleResult)) {}
