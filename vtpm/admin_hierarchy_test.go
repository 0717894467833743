package vtpm

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"
)

func hierarchyControl(auth, enable uint32, state byte) []byte {
	return rawCommand(ccHierarchyControl, []uint32{auth}, 1, nil, u32b(enable), []byte{state})
}

var (
	admHierH1   = qualify(rcHierarchy, rcH|rcN)
	admHandleH1 = qualify(rcHandle, rcH|rcN)
)

// TestDisabledOwnerHierarchyRefused disables the storage hierarchy and
// checks that its handle, persistent objects and NV indices are refused
// and its loaded objects flushed, that the owner cannot enable it again,
// and that TPM Reset does.
func TestDisabledOwnerHierarchyRefused(t *testing.T) {
	v := newTestTPM(t)
	const idx = 0x01500060
	admMust(t, v, rcSuccess, defineNV(idx, nil, admNVBase, 4))
	admMust(t, v, rcSuccess, nvWriteCmd(rhOwner, idx, nil, []byte("abcd"), 0))
	srk := admMust(t, v, rcSuccess, createPrimaryCmdOwner())
	h := admBE32(srk)
	admMust(t, v, rcSuccess, rawCommand(ccEvictControl, []uint32{rhOwner, h}, 1, nil, u32b(0x81000001)))
	ek := admMust(t, v, rcSuccess, rawCommand(ccCreatePrimary, []uint32{rhEndorsement}, 1, nil, createPrimaryParams()...))
	ekH := admBE32(ek)

	admMust(t, v, rcSuccess, hierarchyControl(rhOwner, rhOwner, 0))
	admMust(t, v, admHierH1, createPrimaryCmdOwner())
	admMust(t, v, admHierH1, hierarchyControl(rhOwner, rhOwner, 1))
	admMust(t, v, admHandleH1, nvReadCmd(idx, idx, nil, 4, 0))
	admMust(t, v, admHierH1, nvReadCmd(rhOwner, idx, nil, 4, 0))
	admMust(t, v, admHandleH1, rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil))
	admMust(t, v, admHandleH1, rawCommand(ccReadPublic, []uint32{0x81000001}, 0, nil))
	admMust(t, v, rcReferenceH0, rawCommand(ccReadPublic, []uint32{h}, 0, nil))
	// The endorsement hierarchy is not affected.
	admMust(t, v, rcSuccess, rawCommand(ccReadPublic, []uint32{ekH}, 0, nil))
	// The platform may enable it again.
	admMust(t, v, rcSuccess, hierarchyControl(rhPlatform, rhOwner, 1))
	admMust(t, v, rcSuccess, nvReadCmd(idx, idx, nil, 4, 0))
	admMust(t, v, rcSuccess, hierarchyControl(rhOwner, rhOwner, 0))
	// TPM Resume keeps it disabled, TPM Reset enables it.
	powerRestart(t, v, suState, suState)
	admMust(t, v, admHandleH1, rawCommand(ccReadPublic, []uint32{0x81000001}, 0, nil))
	powerRestart(t, v, suClear, suClear)
	admMust(t, v, rcSuccess, rawCommand(ccReadPublic, []uint32{0x81000001}, 0, nil))
}

// TestDisabledPlatformHierarchy disables the platform hierarchy and
// platformNV and checks what they hide; any startup enables the platform
// hierarchy, TPM Resume keeps platformNV disabled.
func TestDisabledPlatformHierarchy(t *testing.T) {
	v := newTestTPM(t)
	const idx = 0x01500061
	pub := nvPublic(idx, nvPPWrite|nvPPRead|nvAuthRead|nvAuthWrite|nvPlatformCreate|nvNoDA, 4)
	admMust(t, v, rcSuccess, rawCommand(ccNVDefineSpace, []uint32{rhPlatform}, 1, nil, b2b(nil), b2b(pub)))
	admMust(t, v, rcAuthType, hierarchyControl(rhOwner, rhPlatformNV, 0))
	admMust(t, v, rcSuccess, hierarchyControl(rhPlatform, rhPlatformNV, 0))
	admMust(t, v, admHandleH1, rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil))
	admMust(t, v, rcSuccess, hierarchyControl(rhPlatform, rhPlatform, 0))
	admMust(t, v, admHierH1, hierarchyControl(rhPlatform, rhPlatform, 1))
	powerRestart(t, v, suState, suState)
	admMust(t, v, admHandleH1, rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil))
	admMust(t, v, rcSuccess, hierarchyControl(rhPlatform, rhPlatformNV, 1))
	admMust(t, v, rcSuccess, rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil))
}

// TestPlatformAuthResetAtStartup checks that platformAuth is emptied by
// TPM Reset and Restart (firmware sets it at every boot) and kept by TPM
// Resume.
func TestPlatformAuthResetAtStartup(t *testing.T) {
	v := newTestTPM(t)
	admMust(t, v, rcSuccess, rawCommand(ccHierarchyChangeAuth, []uint32{rhPlatform}, 1, nil, b2b([]byte("fw"))))
	powerRestart(t, v, suState, suState)
	admMust(t, v, rcSuccess, rawCommand(ccHierarchyChangeAuth, []uint32{rhPlatform}, 1, []byte("fw"), b2b([]byte("fw"))))
	powerRestart(t, v, suState, suClear)
	admMust(t, v, rcSuccess, rawCommand(ccHierarchyChangeAuth, []uint32{rhPlatform}, 1, nil, b2b(nil)))
}

func admBE32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// createPrimaryParams are the parameters of CreatePrimary for an ECC
// P-256 storage key.
func createPrimaryParams() [][]byte {
	tmpl := bytesOf(u16b(algECC), u16b(algSHA256), u32b(0x00030072), u16b(0),
		u16b(algAES), u16b(128), u16b(algCFB), u16b(algNull), u16b(curveNISTP256), u16b(algNull), u16b(0), u16b(0))
	return [][]byte{b2b(bytesOf(u16b(0), u16b(0))), b2b(tmpl), b2b(nil), u32b(0)}
}

func createPrimaryCmdOwner() []byte {
	return rawCommand(ccCreatePrimary, []uint32{rhOwner}, 1, nil, createPrimaryParams()...)
}

// TestDifferentialHierarchyControl compares HierarchyControl and the
// effects of disabled hierarchies with the reference TPM.
func TestDifferentialHierarchyControl(t *testing.T) {
	d := newDual(t)
	const idx, pidx = 0x01500062, 0x01500063
	ppub := nvPublic(pidx, nvPPWrite|nvPPRead|nvPlatformCreate|nvNoDA, 4)
	cmds := [][]byte{
		defineNV(idx, nil, admNVBase, 4),
		rawCommand(ccNVDefineSpace, []uint32{rhPlatform}, 1, nil, b2b(nil), b2b(ppub)),
		hierarchyControl(rhOwner, rhOwner, 2),
		hierarchyControl(rhOwner, 0x40000002, 0),
		hierarchyControl(rhLockout, rhOwner, 0),
		hierarchyControl(rhOwner, rhEndorsement, 0),
		hierarchyControl(rhEndorsement, rhOwner, 0),
		hierarchyControl(rhOwner, rhPlatform, 0),
		hierarchyControl(rhEndorsement, rhPlatformNV, 0),
		hierarchyControl(rhOwner, rhOwner, 1),
		rawCommand(ccHierarchyControl, []uint32{rhOwner}, 1, nil, u32b(rhOwner)),
		hierarchyControl(rhOwner, rhOwner, 0),
		hierarchyControl(rhOwner, rhOwner, 0),
		rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil),
		rawCommand(ccNVReadPublic, []uint32{pidx}, 0, nil),
		createPrimaryCmdOwner(),
		defineNV(0x01500064, nil, admNVBase, 4),
		hierarchyControl(rhEndorsement, rhEndorsement, 0),
		hierarchyControl(rhEndorsement, rhEndorsement, 1),
		rawCommand(ccCreatePrimary, []uint32{rhEndorsement}, 1, nil, createPrimaryParams()...),
		hierarchyControl(rhPlatform, rhEndorsement, 1),
		hierarchyControl(rhPlatform, rhOwner, 1),
		rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil),
		hierarchyControl(rhPlatform, rhPlatformNV, 0),
		rawCommand(ccNVReadPublic, []uint32{pidx}, 0, nil),
		rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil),
		hierarchyControl(rhPlatform, rhPlatformNV, 1),
		rawCommand(ccNVReadPublic, []uint32{pidx}, 0, nil),
		hierarchyControl(rhPlatform, rhPlatform, 0),
		hierarchyControl(rhPlatform, rhPlatform, 1),
		rawCommand(ccNVUndefineSpace, []uint32{rhOwner, idx}, 1, nil),
	}
	for _, cmd := range cmds {
		sameResponse(t, d, cmd)
	}
	dualReset(t, d)
	for _, cmd := range [][]byte{
		hierarchyControl(rhPlatform, rhPlatformNV, 0),
		rawCommand(ccNVReadPublic, []uint32{pidx}, 0, nil),
		hierarchyControl(rhPlatform, rhOwner, 0),
		hierarchyControl(rhPlatform, rhEndorsement, 0),
		rawCommand(ccCreatePrimary, []uint32{rhEndorsement}, 1, nil, createPrimaryParams()...),
	} {
		sameResponse(t, d, cmd)
	}
	dualReset(t, d)
	sameResponse(t, d, rawCommand(ccNVReadPublic, []uint32{pidx}, 0, nil))
	// Persistent objects of the owner and of the endorsement hierarchy.
	sameRC(t, d, createPrimaryCmdOwner())
	sameResponse(t, d, rawCommand(ccEvictControl, []uint32{rhOwner, transientFirst}, 1, nil, u32b(0x81000010)))
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(transientFirst)))
	sameRC(t, d, rawCommand(ccCreatePrimary, []uint32{rhEndorsement}, 1, nil, createPrimaryParams()...))
	sameResponse(t, d, rawCommand(ccEvictControl, []uint32{rhOwner, transientFirst}, 1, nil, u32b(0x81010001)))
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(transientFirst)))
	for _, cmd := range [][]byte{
		hierarchyControl(rhEndorsement, rhEndorsement, 0),
		rawCommand(ccReadPublic, []uint32{0x81000010}, 0, nil),
		rawCommand(ccReadPublic, []uint32{0x81010001}, 0, nil),
		hierarchyControl(rhOwner, rhOwner, 0),
		rawCommand(ccReadPublic, []uint32{0x81000010}, 0, nil),
		rawCommand(ccEvictControl, []uint32{rhPlatform, 0x81010001}, 1, nil, u32b(0x81010001)),
		hierarchyControl(rhPlatform, rhOwner, 1),
		rawCommand(ccEvictControl, []uint32{rhOwner, 0x81010001}, 1, nil, u32b(0x81010001)),
		rawCommand(ccEvictControl, []uint32{rhOwner, 0x81000010}, 1, nil, u32b(0x81000010)),
	} {
		sameRC(t, d, cmd) // the keys differ: each TPM has its own seeds
	}
}

// TestClearResetsAdminState checks what TPM2_Clear resets besides the
// owner hierarchy: the storage and endorsement enables, the
// dictionary-attack parameters and count, and Clock and the reset and
// restart counts; Time does not move.
func TestClearResetsAdminState(t *testing.T) {
	v, clk := newClockTPM(t)
	clk.Advance(3 * time.Second)
	admMust(t, v, rcSuccess, daParams(10, 20, 30))
	unseal := daObject(t, v, false)
	admMust(t, v, admAuthFail, unseal("guess"))
	admMust(t, v, rcSuccess, clockSet(1<<30))
	admMust(t, v, rcSuccess, hierarchyControl(rhOwner, rhOwner, 0))
	admMust(t, v, rcSuccess, hierarchyControl(rhEndorsement, rhEndorsement, 0))
	powerRestart(t, v, suState, suState)
	admMust(t, v, rcSuccess, rawCommand(ccClear, []uint32{rhLockout}, 1, nil))
	for prop, want := range map[uint32]uint32{0x20E: 0, 0x20F: defaultMaxTries, 0x210: defaultRecoveryTime, 0x211: defaultLockoutRecovery} {
		if got := admProperty(t, v, prop); got != want {
			t.Errorf("property %#x: %d, want %d", prop, got, want)
		}
	}
	p := admMust(t, v, rcSuccess, rawCommand(ccReadClock, nil, 0, nil))
	if tm, clock, restarts := admBE64(p), admBE64(p[8:]), admBE32(p[20:]); tm != 3000 || clock != 0 || restarts != 0 {
		t.Errorf("after Clear: time %d clock %d restartCount %d, want 3000 0 0", tm, clock, restarts)
	}
	admMust(t, v, rcSuccess, createPrimaryCmdOwner())
	admMust(t, v, rcSuccess, rawCommand(ccCreatePrimary, []uint32{rhEndorsement}, 1, nil, createPrimaryParams()...))
}

// TestDifferentialClear compares what TPM2_Clear leaves of the admin
// state with the reference TPM.
func TestDifferentialClear(t *testing.T) {
	d := newDual(t)
	const pidx = 0x01500070
	ppub := nvPublic(pidx, nvPPWrite|nvPPRead|nvPlatformCreate|nvNoDA, 4)
	for _, cmd := range [][]byte{
		daParams(10, 20, 30),
		hierarchyControl(rhOwner, rhOwner, 0),
		hierarchyControl(rhEndorsement, rhEndorsement, 0),
		hierarchyControl(rhPlatform, rhPlatformNV, 0),
		rawCommand(ccNVDefineSpace, []uint32{rhPlatform}, 1, nil, b2b(nil), b2b(ppub)),
		rawCommand(ccClear, []uint32{rhLockout}, 1, nil),
		rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(0x20E), u32b(4)),
		createPrimaryCmdOwner(),
		rawCommand(ccNVDefineSpace, []uint32{rhPlatform}, 1, nil, b2b(nil), b2b(ppub)),
	} {
		sameRC(t, d, cmd)
	}
	read := rawCommand(ccReadClock, nil, 0, nil)
	a, _ := d.v.Send(read)
	b := simSend(d.sim, read)
	if ca, cb := admBE64(a[18:]), admBE64(b[18:]); ca > 1000 || cb > 1000 {
		t.Errorf("clock after Clear: vtpm %d, reference %d", ca, cb)
	}
	if !bytes.Equal(a[26:], b[26:]) {
		t.Errorf("counts after Clear: vtpm %x, reference %x", a[26:], b[26:])
	}
}

// TestDifferentialLoadIntoDisabledHierarchy loads a public key into the
// owner hierarchy with LoadExternal and a saved context of an owner key,
// while the storage hierarchy is disabled, on both TPMs.
func TestDifferentialLoadIntoDisabledHierarchy(t *testing.T) {
	d := newDual(t)
	// An ECC P-256 public key (the generator point: any point will do).
	pub := bytesOf(u16b(algECC), u16b(algSHA256), u32b(oaSign|oaUserWithAuth|oaNoDA), u16b(0),
		u16b(algNull), u16b(algECDSA), u16b(algSHA256), u16b(curveNISTP256), u16b(algNull),
		b2b(mustHex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296")),
		b2b(mustHex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")))
	load := func(hier uint32) []byte {
		return rawCommand(ccLoadExternal, nil, 0, nil, b2b(nil), b2b(pub), u32b(hier))
	}
	sameResponse(t, d, load(rhOwner))
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(transientFirst)))
	sameRC(t, d, createPrimaryCmdOwner())
	va, _ := d.v.Send(rawCommand(ccContextSave, []uint32{transientFirst}, 0, nil))
	vb := simSend(d.sim, rawCommand(ccContextSave, []uint32{transientFirst}, 0, nil))
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(transientFirst)))
	sameResponse(t, d, hierarchyControl(rhOwner, rhOwner, 0))
	for _, hier := range []uint32{rhOwner, rhNull, rhEndorsement} {
		sameResponse(t, d, load(hier))
		d.v.Send(rawCommand(ccFlushContext, nil, 0, nil, u32b(transientFirst)))
		simSend(d.sim, rawCommand(ccFlushContext, nil, 0, nil, u32b(transientFirst)))
	}
	ctxLoad := rawCommand(ccContextLoad, nil, 0, nil, va[10:])
	a, _ := d.v.Send(ctxLoad)
	b := simSend(d.sim, rawCommand(ccContextLoad, nil, 0, nil, vb[10:]))
	if !bytes.Equal(a, b) {
		t.Errorf("ContextLoad into the disabled storage hierarchy: vtpm %x, reference %x", a, b)
	}
	if len(d.v.s.Transient) != 0 {
		t.Errorf("%d objects left loaded", len(d.v.s.Transient))
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestDifferentialCapabilityHandlesOfDisabledHierarchies lists the
// transient, persistent and NV handles (TPM_CAP_HANDLES) while the
// storage, endorsement and platform hierarchies and platformNV are
// disabled, on both TPMs. The reference lists persistent objects and NV
// indices that a disabled hierarchy hides (NvCapGetPersistent and
// NvCapGetIndex do not look at the enables); disabling a hierarchy
// flushes its loaded objects, so those are gone from the transient list.
func TestDifferentialCapabilityHandlesOfDisabledHierarchies(t *testing.T) {
	d := newDual(t)
	const idx, pidx = 0x01500080, 0x01500081
	ppub := nvPublic(pidx, nvPPWrite|nvPPRead|nvPlatformCreate|nvNoDA, 4)
	sameResponse(t, d, defineNV(idx, nil, admNVBase, 4))
	sameResponse(t, d, rawCommand(ccNVDefineSpace, []uint32{rhPlatform}, 1, nil, b2b(nil), b2b(ppub)))
	for _, x := range []struct{ hier, persistent uint32 }{
		{rhOwner, 0x81000020}, {rhEndorsement, 0x81010020}, {rhPlatform, 0x81800020},
	} {
		sameRC(t, d, rawCommand(ccCreatePrimary, []uint32{x.hier}, 1, nil, createPrimaryParams()...))
		auth := uint32(rhOwner)
		if x.hier == rhPlatform {
			auth = rhPlatform
		}
		sameResponse(t, d, rawCommand(ccEvictControl, []uint32{auth, transientFirst}, 1, nil, u32b(x.persistent)))
		sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(transientFirst)))
	}
	// One loaded object in each hierarchy (the reference holds three).
	for _, h := range []uint32{rhOwner, rhEndorsement, rhPlatform} {
		sameRC(t, d, rawCommand(ccCreatePrimary, []uint32{h}, 1, nil, createPrimaryParams()...))
	}
	handles := func(ht uint32) []byte {
		return rawCommand(ccGetCapability, nil, 0, nil, u32b(capHandles), u32b(ht<<24), u32b(maxCapHandles))
	}
	list := func() {
		t.Helper()
		for _, ht := range []uint32{htTransient, htPersistent, htNVIndex} {
			sameResponse(t, d, handles(ht))
		}
		// TPM_PT_HR_NV_INDEX, TPM_PT_HR_LOADED, TPM_PT_HR_PERSISTENT.
		for _, pt := range []uint32{0x202, 0x203, 0x20C} {
			a, _ := d.v.Send(rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(pt), u32b(1)))
			b := simSend(d.sim, rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(pt), u32b(1)))
			if !bytes.Equal(a, b) {
				t.Errorf("TPM property %#x: vtpm %x, reference %x", pt, a, b)
			}
		}
	}
	list()
	for _, cmd := range [][]byte{
		hierarchyControl(rhOwner, rhOwner, 0),
		hierarchyControl(rhEndorsement, rhEndorsement, 0),
		hierarchyControl(rhPlatform, rhPlatformNV, 0),
	} {
		sameResponse(t, d, cmd)
		list()
	}
	sameResponse(t, d, hierarchyControl(rhPlatform, rhPlatform, 0))
	list()
	if n := len(d.v.handles(htPersistent)); n != 3 {
		t.Errorf("%d persistent handles listed, want the 3 hidden ones", n)
	}
}
