package vtpm

import "sort"

func init() {
	register(&cmdDef{cc: ccGetCapability, fn: (*TPM).cmdGetCapability})
}

// The TPM's fixed identity (TPM_PT_MANUFACTURER and the vendor strings).
// "SHVM" is not a TCG-registered vendor ID; it tells clients that this is
// not a hardware TPM.
const (
	manufacturer = 0x5348564D // "SHVM"
	specLevel    = 0
	specRevision = 159 // Library rev 1.59
	specDay      = 312
	specYear     = 2019
	fwVersion1   = 0x00010000
	fwVersion2   = 0
)

// Algorithm attributes (TPMA_ALGORITHM), Part 2, section 8.2.
const (
	aaAsymmetric = 1 << 0
	aaSymmetric  = 1 << 1
	aaHash       = 1 << 2
	aaObject     = 1 << 3
	aaSigning    = 1 << 8
	aaEncrypting = 1 << 9
	aaMethod     = 1 << 10
)

var algorithms = []struct {
	alg   uint16
	attrs uint32
}{
	{algRSA, aaAsymmetric | aaObject},
	{algSHA1, aaHash},
	{algHMAC, aaHash | aaSigning},
	{algAES, aaSymmetric},
	{algKeyedHash, aaHash | aaObject | aaSigning | aaEncrypting},
	{algSHA256, aaHash},
	{algSHA384, aaHash},
	{algSHA512, aaHash},
	{algRSASSA, aaAsymmetric | aaSigning},
	{algRSAPSS, aaAsymmetric | aaSigning},
	{algECDSA, aaAsymmetric | aaSigning | aaMethod},
	{algKDF1SP800_108, aaHash | aaMethod},
	{algECC, aaAsymmetric | aaObject},
	{algSymCipher, aaObject},
	{algCFB, aaSymmetric | aaEncrypting},
}

// Capability limits from MAX_CAP_BUFFER (1024) as the reference
// implementation computes them.
const (
	maxCapData       = maxCapBuffer - 4 - 4
	maxTPMProperties = maxCapData / 8
	maxCapAlgs       = maxCapData / 6
	maxCapHandles    = maxCapData / 4
	maxCapCC         = maxCapData / 4
	maxPCRProperties = maxCapData / 8
	// MAX_TAGGED_POLICIES: sizeof(TPMS_TAGGED_POLICY) is 72 in the
	// reference implementation (a handle and a TPMT_HA of at most
	// SHA-512 size, padded).
	maxTaggedPolicies = maxCapData / 72
)

// TPM_PT_PCR tags, Part 2, section 6.14.
const (
	ptPCRSave        = 0x00
	ptPCRExtendL0    = 0x01
	ptPCRResetL0     = 0x02
	ptPCRResetL4     = 0x0A
	ptPCRNoIncrement = 0x11
	ptPCRDRTMReset   = 0x12
	ptPCRPolicy      = 0x13
	ptPCRAuth        = 0x14
)

// cmdGetCapability is TPM2_GetCapability (Part 3, section 30.2).
func (t *TPM) cmdGetCapability(c *call) uint32 {
	r := &c.r
	capability := r.u32()
	r.param(2)
	prop := r.u32()
	r.param(3)
	count := r.u32()
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	w := &c.w
	more := len(w.b)
	w.u8(0)
	w.u32(capability)
	moreData := false
	limit := func(max int) int {
		if count > uint32(max) {
			return max
		}
		return int(count)
	}
	switch capability {
	case capAlgs:
		n := limit(maxCapAlgs)
		cnt := len(w.b)
		w.u32(0)
		k := 0
		for _, a := range algorithms {
			if uint32(a.alg) < prop || prop > 0xFFFF {
				continue
			}
			if k == n {
				moreData = true
				break
			}
			w.u16(a.alg)
			w.u32(a.attrs)
			k++
		}
		putU32(w.b[cnt:], uint32(k))
	case capHandles:
		if prop>>24 != htPCR && prop>>24 != htNVIndex && prop>>24 != htTransient &&
			prop>>24 != htPersistent && prop>>24 != htPermanent &&
			prop>>24 != htHMACSession && prop>>24 != htPolicySession {
			return qualify(rcValue, rcP|2*rcN)
		}
		hs := t.handles(prop >> 24)
		n := limit(maxCapHandles)
		cnt := len(w.b)
		w.u32(0)
		k := 0
		for _, h := range hs {
			if h < prop {
				continue
			}
			if k == n {
				moreData = true
				break
			}
			w.u32(h)
			k++
		}
		putU32(w.b[cnt:], uint32(k))
	case capCommands:
		n := limit(maxCapCC)
		cnt := len(w.b)
		w.u32(0)
		k := 0
		for cc, d := range commands {
			if d == nil || uint32(cc) < prop {
				continue
			}
			if k == n {
				moreData = true
				break
			}
			a := uint32(cc)
			if d.nv {
				a |= 1 << 22
			}
			if d.flushed {
				a |= 1 << 24
			}
			a |= uint32(len(d.handles)) << 25
			if d.rHandle {
				a |= 1 << 28
			}
			w.u32(a)
			k++
		}
		putU32(w.b[cnt:], uint32(k))
	case capAuditCommands:
		// The audited commands from prop on (CommandAuditCapGetCCList).
		n := limit(maxCapCC)
		cnt := len(w.b)
		w.u32(0)
		k := 0
		for cc, d := range commands {
			if d == nil || uint32(cc) < prop || !t.s.Audit.audited(uint32(cc)) {
				continue
			}
			if k == n {
				moreData = true
				break
			}
			w.u32(uint32(cc))
			k++
		}
		putU32(w.b[cnt:], uint32(k))
	case capPPCommands:
		w.u32(0)
	case capPCRs:
		// The current allocation (TPM2_PCR_Allocate takes effect at the
		// next Startup(CLEAR)).
		w.u32(uint32(len(hashAlgs)))
		for i, alg := range hashAlgs {
			w.u16(alg)
			w.u8(3)
			on := ^t.s.PCRUnallocated[i]
			w.raw([]byte{byte(on), byte(on >> 8), byte(on >> 16)})
		}
	case capTPMProperties:
		props := t.properties()
		n := limit(maxTPMProperties)
		cnt := len(w.b)
		w.u32(0)
		k := 0
		for _, p := range props {
			if p[0] < prop {
				continue
			}
			if k == n {
				moreData = true
				break
			}
			w.u32(p[0])
			w.u32(p[1])
			k++
		}
		putU32(w.b[cnt:], uint32(k))
	case capPCRProperties:
		n := limit(maxPCRProperties)
		cnt := len(w.b)
		w.u32(0)
		k := 0
		for tag := uint32(ptPCRSave); tag <= ptPCRAuth; tag++ {
			if tag < prop || tag > ptPCRResetL4 && tag < ptPCRNoIncrement {
				continue
			}
			if k == n {
				moreData = true
				break
			}
			var sel [3]byte
			for i := 0; i < numPCRs; i++ {
				a := pcrAttrs(i)
				var set bool
				switch {
				case tag == ptPCRSave:
					set = a.save
				case tag == ptPCRNoIncrement:
					set = a.noIncrement
				case tag == ptPCRDRTMReset:
					set = a.resetLocality&0x10 != 0
				case tag == ptPCRPolicy, tag == ptPCRAuth:
					// PCR_SetAuthPolicy and PCR_SetAuthValue are not
					// implemented.
				case tag%2 == 1: // TPM_PT_PCR_EXTEND_Ln
					set = a.extLocality&(1<<((tag-1)/2)) != 0
				default: // TPM_PT_PCR_RESET_Ln
					set = a.resetLocality&(1<<((tag-2)/2)) != 0
				}
				if set {
					sel[i/8] |= 1 << (i % 8)
				}
			}
			w.u32(tag)
			w.u8(3)
			w.raw(sel[:])
			k++
		}
		putU32(w.b[cnt:], uint32(k))
	case capECCCurves:
		curves := []uint16{curveNISTP256, curveNISTP384}
		cnt := len(w.b)
		w.u32(0)
		k := 0
		n := limit(maxCapData / 2)
		for _, cv := range curves {
			if uint32(cv) < prop {
				continue
			}
			if k == n {
				moreData = true
				break
			}
			w.u16(cv)
			k++
		}
		putU32(w.b[cnt:], uint32(k))
	case capAuthPolicies:
		if prop>>24 != htPermanent {
			return qualify(rcValue, rcP|2*rcN)
		}
		moreData = t.capAuthPolicies(w, prop, limit(maxTaggedPolicies))
	default:
		return qualify(rcValue, rcP|rcN)
	}
	if moreData {
		w.b[more] = 1
	}
	return rcSuccess
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

// handles lists the handles of one type in ascending order. As in the
// reference implementation (NvCapGetPersistent, NvCapGetIndex), persistent
// objects and NV indices that a disabled hierarchy hides are listed; a
// disabled hierarchy's loaded objects were flushed when it was disabled.
func (t *TPM) handles(ht uint32) []uint32 {
	var hs []uint32
	switch ht {
	case htPCR:
		for i := uint32(0); i < numPCRs; i++ {
			hs = append(hs, i)
		}
	case htNVIndex:
		for h := range t.s.NV {
			hs = append(hs, h)
		}
	case htTransient:
		for h := range t.s.Transient {
			hs = append(hs, h)
		}
	case htPersistent:
		for h := range t.s.Persistent {
			hs = append(hs, h)
		}
	case htPermanent:
		hs = []uint32{rhOwner, rhNull, rsPW, rhLockout, rhEndorsement, rhPlatform, rhPlatformNV}
	case htHMACSession, htPolicySession:
		// 0x02 is TPM_HT_LOADED_SESSION and 0x03 TPM_HT_SAVED_SESSION
		// here (Part 2, section 7.2): the loaded sessions, or the saved
		// ones, each with its own handle.
		for h, sess := range t.sessions {
			if sess.saved == (ht == htPolicySession) {
				hs = append(hs, h)
			}
		}
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i] < hs[j] })
	return hs
}

// properties returns the TPM properties (TPM_PT), sorted by tag.
func (t *TPM) properties() [][2]uint32 {
	s := t.s
	loadedSessions := 0
	for _, sess := range t.sessions {
		if !sess.saved {
			loadedSessions++
		}
	}
	// TPM_PT_STARTUP_CLEAR (TPMA_STARTUP_CLEAR): phEnable, shEnable,
	// ehEnable, phEnableNV.
	var startupClear uint32
	for i, on := range []bool{!s.Hier.PlatformDisabled, !s.Hier.OwnerDisabled, !s.Hier.EndorsementDisabled, !s.Hier.PlatformNVDisabled} {
		if on {
			startupClear |= 1 << i
		}
	}
	ncmd := 0
	for _, d := range commands {
		if d != nil {
			ncmd++
		}
	}
	var perm uint32
	if len(s.OwnerAuth) != 0 {
		perm |= 1 << 0
	}
	if len(s.EndorsementAuth) != 0 {
		perm |= 1 << 1
	}
	if len(s.LockoutAuth) != 0 {
		perm |= 1 << 2
	}
	if s.DisableClear {
		perm |= 1 << 8
	}
	if s.DA.FailedTries >= s.DA.MaxTries {
		perm |= 1 << 9 // inLockout
	}
	perm |= 1 << 10 // tpmGeneratedEPS
	counters := 0
	for _, nv := range s.NV {
		if nv.typ() == ntCounter {
			counters++
		}
	}
	return [][2]uint32{
		{0x100, 0x322E3000}, // TPM_PT_FAMILY_INDICATOR "2.0"
		{0x101, specLevel},
		{0x102, specRevision},
		{0x103, specDay},
		{0x104, specYear},
		{0x105, manufacturer},
		{0x106, 0x73686965}, // "shie"
		{0x107, 0x6C64766D}, // "ldvm"
		{0x108, 0x20767470}, // " vtp"
		{0x109, 0x6D000000}, // "m"
		{0x10A, 1},          // TPM_PT_VENDOR_TPM_TYPE
		{0x10B, fwVersion1},
		{0x10C, fwVersion2},
		{0x10D, maxDigestBuffer}, // TPM_PT_INPUT_BUFFER
		{0x10E, maxLoadedObjects},
		{0x10F, maxPersistent},
		{0x110, maxSessions},
		{0x111, maxSessions},
		{0x112, numPCRs},
		{0x113, pcrSelectMin},
		{0x114, 0xFFFF}, // TPM_PT_CONTEXT_GAP_MAX
		{0x116, 0},      // TPM_PT_NV_COUNTERS_MAX: no limit
		{0x117, maxNVIndexSize},
		{0x118, 0},      // TPM_PT_MEMORY
		{0x119, 0x1000}, // TPM_PT_CLOCK_UPDATE
		{0x11A, algSHA256},
		{0x11B, algAES},
		{0x11C, 256},
		{0x11D, 0xFF}, // TPM_PT_ORDERLY_COUNT
		{0x11E, maxCommandSize},
		{0x11F, maxResponseSize},
		{0x120, maxDigestSize},
		{0x121, maxContextSize},
		{0x122, maxContextSize}, // TPM_PT_MAX_SESSION_CONTEXT
		{0x123, 1},              // TPM_PT_PS_FAMILY_INDICATOR: PC Client
		{0x124, 0},              // TPM_PT_PS_LEVEL
		{0x125, 0x105},          // TPM_PT_PS_REVISION 1.05
		{0x126, 0},
		{0x127, 0},
		{0x128, 0}, // TPM_PT_SPLIT_MAX
		{0x129, uint32(ncmd)},
		{0x12A, uint32(ncmd)},
		{0x12B, 0},
		{0x12C, maxNVBufferSize},
		{0x12D, 0}, // TPM_PT_MODES
		{0x12E, maxCapBuffer},
		{0x200, perm},
		{0x201, startupClear},
		{0x202, uint32(len(s.NV))},
		{0x203, uint32(loadedSessions)},
		{0x204, uint32(maxSessions - loadedSessions)},
		{0x205, uint32(len(t.sessions))}, // active: loaded and saved
		{0x206, uint32(maxSessions - len(t.sessions))},
		{0x207, uint32(maxLoadedObjects - len(s.Transient))},
		{0x208, uint32(len(s.Persistent))},
		{0x209, uint32(maxPersistent - len(s.Persistent))},
		{0x20A, uint32(counters)},
		{0x20B, uint32(maxNVIndices - len(s.NV))},
		{0x20C, 0}, // TPM_PT_ALGORITHM_SET
		{0x20D, 2}, // TPM_PT_LOADED_CURVES
		{0x20E, s.DA.FailedTries},
		{0x20F, s.DA.MaxTries},
		{0x210, s.DA.RecoveryTime},
		{0x211, s.DA.LockoutRecovery},
		{0x212, 0},                             // TPM_PT_NV_WRITE_RECOVERY
		{0x213, uint32(s.Audit.Counter >> 32)}, // TPM_PT_AUDIT_COUNTER_0
		{0x214, uint32(s.Audit.Counter)},       // TPM_PT_AUDIT_COUNTER_1
	}
}
