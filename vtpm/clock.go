package vtpm

import (
	"math"
	"math/bits"
)

// Clock commands (Part 3, sections 18.7, 29.2 and 29.3).

const (
	ccClockRateAdjust = 0x130
	ccGetTime         = 0x14C

	stAttestTime = 0x8019 // TPM_ST_ATTEST_TIME

	// The rate adjustment of TPM2_ClockRateAdjust, in the reference
	// platform's units: the clock runs at clockNominal/(clockNominal +
	// ClockAdjust) of real time, and ClockAdjust stays within
	// ±clockAdjustLimit (about ±17%).
	clockNominal      = 30000
	clockAdjustCoarse = 300
	clockAdjustMedium = 30
	clockAdjustFine   = 1
	clockAdjustLimit  = 5000

	// maxClock is the largest value TPM2_ClockSet accepts.
	maxClock = 0xFFFF000000000000
)

func init() {
	register(&cmdDef{cc: ccClockSet, handles: []handleKind{hkProvision}, auth: 1, nv: true, fn: (*TPM).cmdClockSet})
	register(&cmdDef{cc: ccClockRateAdjust, handles: []handleKind{hkProvision}, auth: 1, fn: (*TPM).cmdClockRateAdjust})
	register(&cmdDef{cc: ccGetTime, handles: []handleKind{hkHierarchyAuth, hkObjectNull}, auth: 2, fn: (*TPM).cmdGetTime})
}

// cmdClockSet is TPM2_ClockSet (Part 3, section 29.2). Clock may only
// move forward. Time (Clock since the last TPM Reset, which ReadClock and
// GetTime report) does not move, and neither do the dictionary-attack
// recovery timers: setting the clock forward with ownerAuth must not heal
// failures, which only lockoutAuth may reset.
func (t *TPM) cmdClockSet(c *call) uint32 {
	v := c.r.u64()
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	t.syncClock()
	if v > maxClock || v < t.s.Clock {
		return qualify(rcValue, rcP|rcN)
	}
	delta := v - t.s.Clock
	t.s.Clock = v
	t.s.TimeBase += delta
	t.daClockMoved(delta)
	return rcSuccess
}

// cmdClockRateAdjust is TPM2_ClockRateAdjust (Part 3, section 29.3). The
// adjustment is an INT8 from -3 (coarse, slower) to 3 (coarse, faster).
func (t *TPM) cmdClockRateAdjust(c *call) uint32 {
	adj := int8(c.r.u8())
	if c.r.ok() && (adj < -3 || adj > 3) {
		return qualify(rcValue, c.r.q)
	}
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	steps := [...]int32{clockAdjustCoarse, clockAdjustMedium, clockAdjustFine, 0, -clockAdjustFine, -clockAdjustMedium, -clockAdjustCoarse}
	t.syncClock()
	a := t.s.ClockAdjust + steps[adj+3]
	a = max(-clockAdjustLimit, min(clockAdjustLimit, a))
	t.s.ClockAdjust = a
	return rcSuccess
}

// syncClockScaled brings Clock up to date like syncClock, at the rate
// TPM2_ClockRateAdjust set. Every command starts with it
// (dispatch.go's run), so the time that passes between commands is scaled;
// only the few milliseconds within a command, which other code folds in
// with syncClock, are not.
func (t *TPM) syncClockScaled() {
	before := t.s.Clock
	t.syncClock()
	if t.s.ClockAdjust == 0 || t.s.Clock <= before {
		return
	}
	d := t.clockScaled(t.s.Clock - before)
	if d > math.MaxUint64-before {
		t.s.Clock = math.MaxUint64
		return
	}
	t.s.Clock = before + d
}

// clockScaled converts elapsed real milliseconds into TPM clock
// milliseconds under the TPM2_ClockRateAdjust rate.
func (t *TPM) clockScaled(ms uint64) uint64 {
	a := t.s.ClockAdjust
	if a == 0 || a < -clockAdjustLimit || a > clockAdjustLimit {
		return ms
	}
	d := uint64(clockNominal + int64(a))
	hi, lo := bits.Mul64(ms, clockNominal)
	if hi >= d {
		return math.MaxUint64
	}
	q, _ := bits.Div64(hi, lo, d)
	return q
}

// cmdGetTime is TPM2_GetTime (Part 3, section 18.7): a TPMS_ATTEST of
// type TPM_ST_ATTEST_TIME signed by signHandle, with the privacy
// administrator's (endorsement) authorization because the attested
// TPMS_TIME_INFO carries the reset and restart counts in clear, whatever
// the signing key's hierarchy.
func (t *TPM) cmdGetTime(c *call) uint32 {
	r := &c.r
	extra := r.b2b(maxDataSize)
	r.param(2)
	scheme, hash := parseSigScheme(r)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	if c.h[0] != rhEndorsement {
		// TPMI_RH_ENDORSEMENT; dispatch accepts any hierarchy.
		return qualify(rcValue, rcH|rcN)
	}
	signer, scheme, hash, rc := t.signerOf(c, 1, scheme, hash, rcP|2*rcN)
	if rc != rcSuccess {
		return rc
	}
	var aw writer
	aw.b = make([]byte, 0, 256)
	t.attestHeader(&aw, stAttestTime, namedSigner(signer), extra)
	aw.u64(t.s.Clock - t.s.TimeBase)
	t.writeClockInfo(&aw, 0, 0)
	aw.u64(uint64(fwVersion1)<<32 | fwVersion2)
	return signAttest(c, signer, scheme, hash, aw.b)
}
