package vtpm

import "time"

func init() {
	register(&cmdDef{cc: ccStartup, fn: (*TPM).cmdStartup})
	register(&cmdDef{cc: ccShutdown, fn: (*TPM).cmdShutdown})
	register(&cmdDef{cc: ccSelfTest, fn: (*TPM).cmdSelfTest})
	register(&cmdDef{cc: ccGetTestResult, fn: (*TPM).cmdGetTestResult})
	register(&cmdDef{cc: ccGetRandom, fn: (*TPM).cmdGetRandom})
	register(&cmdDef{cc: ccStirRandom, fn: (*TPM).cmdStirRandom})
	register(&cmdDef{cc: ccReadClock, fn: (*TPM).cmdReadClock})
	register(&cmdDef{cc: ccHash, fn: (*TPM).cmdHash})
	register(&cmdDef{cc: ccTestParms, fn: (*TPM).cmdTestParms})
}

// cmdStartup is TPM2_Startup (Part 3, section 9.3).
func (t *TPM) cmdStartup(c *call) uint32 {
	su := c.r.u16()
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	if t.started {
		return rcInitialize
	}
	if su != suClear && su != suState {
		return qualify(rcValue, rcP|rcN)
	}
	return t.startup(su)
}

// startup performs TPM Reset, TPM Restart or TPM Resume (Part 1, section
// 12.2.3) depending on the startup type and the previous shutdown.
func (t *TPM) startup(su uint16) uint32 {
	s := t.s
	if su == suState && (s.Shutdown != suState+1 || s.Saved == nil) {
		return qualify(rcValue, rcP|rcN)
	}
	t.syncClock()
	switch {
	case su == suState: // TPM Resume
		s.PCR = s.Saved.PCR
		for i := 0; i < numPCRs; i++ {
			if !pcrAttrs(i).save {
				s.PCR.resetPCR(i)
			}
		}
		s.PCRCounter = s.Saved.PCRCounter
		s.RestartCount++
	case s.Shutdown == suState+1: // TPM Restart
		s.PCR.resetAll()
		s.PCRCounter = 0
		s.RestartCount++
	default: // TPM Reset
		s.PCR.resetAll()
		s.PCRCounter = 0
		if s.Started || s.Shutdown != 0 {
			s.ResetCount++
		}
		s.RestartCount = 0
		random(s.NullSeed[:])
		random(s.NullProof[:])
		t.purgeRSACache()
		s.TimeBase = s.Clock
	}
	s.Saved = nil
	s.Shutdown = 0
	s.Started = true
	t.started = true
	return rcSuccess
}

// cmdShutdown is TPM2_Shutdown (Part 3, section 9.4).
func (t *TPM) cmdShutdown(c *call) uint32 {
	su := c.r.u16()
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	switch su {
	case suClear:
		t.s.Saved = nil
	case suState:
		t.s.Saved = &saved{PCR: t.s.PCR, PCRCounter: t.s.PCRCounter}
	default:
		return qualify(rcValue, rcP|rcN)
	}
	t.s.Shutdown = uint8(su) + 1
	t.syncClock()
	return rcSuccess
}

// cmdSelfTest is TPM2_SelfTest (Part 3, section 10.2). The algorithms are
// Go's standard library, which tests itself; there is nothing to run.
func (t *TPM) cmdSelfTest(c *call) uint32 {
	yes := c.r.u8()
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	if yes > 1 {
		return qualify(rcValue, rcP|rcN)
	}
	return rcSuccess
}

// cmdGetTestResult is TPM2_GetTestResult (Part 3, section 10.4).
func (t *TPM) cmdGetTestResult(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	c.w.u16(0)
	c.w.u32(rcSuccess)
	return rcSuccess
}

// cmdGetRandom is TPM2_GetRandom (Part 3, section 16.1). It returns at most
// the size of the largest digest, as the reference implementation does.
func (t *TPM) cmdGetRandom(c *call) uint32 {
	n := int(c.r.u16())
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	if n > maxDigestSize {
		n = maxDigestSize
	}
	c.w.u16(uint16(n))
	l := len(c.w.b)
	c.w.b = append(c.w.b, make([]byte, n)...)
	random(c.w.b[l:])
	return rcSuccess
}

// cmdStirRandom is TPM2_StirRandom (Part 3, section 16.2). The TPM's
// random numbers come from the operating system's generator through
// crypto/rand, which a guest cannot influence, so the input is checked and
// discarded.
func (t *TPM) cmdStirRandom(c *call) uint32 {
	c.r.b2b(maxSymData)
	return c.r.done()
}

// cmdReadClock is TPM2_ReadClock (Part 3, section 29.1).
func (t *TPM) cmdReadClock(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	t.syncClock()
	c.w.u64(t.s.Clock - t.s.TimeBase)
	t.writeClockInfo(&c.w, 0, 0)
	return rcSuccess
}

// writeClockInfo writes a TPMS_CLOCK_INFO. The counts are obfuscated by
// the caller for attestations outside the endorsement and platform
// hierarchies (Part 3, section 18.2).
func (t *TPM) writeClockInfo(w *writer, resetAdd, restartAdd uint32) {
	w.u64(t.s.Clock)
	w.u32(t.s.ResetCount + resetAdd)
	w.u32(t.s.RestartCount + restartAdd)
	w.u8(1) // safe: the clock is saved with the state
}

func (t *TPM) clockNow() time.Time { return t.now() }

// cmdHash is TPM2_Hash (Part 3, section 15.4).
func (t *TPM) cmdHash(c *call) uint32 {
	r := &c.r
	data := r.b2b(maxDigestBuffer)
	r.param(2)
	alg := r.u16()
	if r.ok() && !isHash(alg) {
		return qualify(rcHash, r.q)
	}
	r.param(3)
	hier := r.u32()
	if r.ok() && !validHandle(hkHierarchyNull, hier) {
		return qualify(rcValue, r.q)
	}
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	d := digestOf(alg, data)
	c.w.b2b(d)
	// The ticket says that the digest is not of a message that starts
	// with TPM_GENERATED_VALUE, so a restricted key may sign it.
	generated := len(data) >= 4 && data[0] == 0xff && data[1] == 0x54 && data[2] == 0x43 && data[3] == 0x47
	if generated || hier == rhNull {
		writeNullTicket(&c.w, stHashCheck)
		return rcSuccess
	}
	c.w.u16(stHashCheck)
	c.w.u32(hier)
	c.w.b2b(t.ticket(hier, alg, stHashCheck, d))
	return rcSuccess
}

func writeNullTicket(w *writer, tag uint16) {
	w.u16(tag)
	w.u32(rhNull)
	w.u16(0)
}

// ticket computes HMAC(proof(hierarchy), tag || parts...) with alg (Part
// 1, section 10.6.5).
func (t *TPM) ticket(hier uint32, alg uint16, tag uint16, parts ...[]byte) []byte {
	m := newHMAC(alg, t.s.proof(hier))
	m.Write([]byte{byte(tag >> 8), byte(tag)})
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// cmdTestParms is TPM2_TestParms (Part 3, section 10.5): it checks that a
// TPMT_PUBLIC_PARMS is supported.
func (t *TPM) cmdTestParms(c *call) uint32 {
	r := &c.r
	typ := r.u16()
	if !r.ok() {
		return r.code
	}
	// Reuse the public-area decoder by prefixing a nameAlg, attributes
	// and an empty policy, and suffixing an empty unique field.
	var w writer
	w.u16(typ)
	w.u16(algSHA256)
	w.u32(0)
	w.u16(0)
	w.raw(r.rest())
	switch typ {
	case algECC:
		w.u32(0)
	default:
		w.u16(0)
	}
	pr := newReader(w.b)
	pr.q = rcP | rcN
	p := parsePublic(&pr, false)
	if !pr.ok() {
		return pr.code
	}
	if !pr.empty() {
		return rcSize
	}
	_ = p
	return rcSuccess
}
