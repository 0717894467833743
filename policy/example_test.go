package policy_test

import (
	"fmt"

	"github.com/shieldvm/shieldvm/attest/attesttest"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
)

// A boot whose firmware ran in debug mode, judged by a policy that
// requires it off: the verdict names the rule, the reason and the event.
func ExamplePolicy_Evaluate() {
	b := attesttest.NewLogBuilder(measure.SHA256)
	b.Add(0, measure.EV_POST_CODE, []byte("firmware"))
	b.Add(7, measure.EV_EFI_ACTION, []byte("UEFI Debug Mode"))
	for r := range uint32(8) {
		b.Add(r, measure.EV_SEPARATOR, []byte{0, 0, 0, 0})
	}
	l, _ := measure.Parse(b.Bytes())
	vlog, _ := l.Verify(b.Values(), measure.VerifyOptions{}) // values a quote vouched for

	p, err := policy.Parse([]byte(`{"version": 1, "id": "no-debug", "hgs": {"UefiDebugDisabled": "enforce"}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	v := p.Evaluate(&policy.Input{PCRs: b.Values(), Log: vlog})
	fmt.Println(v.Status)
	for _, r := range v.Failed() {
		fmt.Printf("%s: %s (event %d, PCR %d, %s)\n", r.Rule, r.Reason, r.Events[0].Index, r.Events[0].PCR, r.Events[0].Type)
	}
	// Output:
	// contraindicated
	// hgs.UefiDebugDisabled: the firmware measured "UEFI Debug Mode": a debugger can take over the platform (event 2, PCR 7, EV_EFI_ACTION)
}

// Unknown fields are errors: a misspelt rule never silently switches a
// check off.
func ExampleParse() {
	_, err := policy.Parse([]byte(`{"version": 1, "id": "x", "hgs": {"SecureBootEnable": "enforce"}}`))
	fmt.Println(err)
	// Output:
	// policy: invalid policy: json: unknown field "SecureBootEnable"
}
