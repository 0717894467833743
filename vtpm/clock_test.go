package vtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"math/big"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

func clockSet(v uint64) []byte {
	return rawCommand(ccClockSet, []uint32{rhOwner}, 1, nil, admU64(v))
}

// TestClockSet moves the clock forward, never back, and leaves Time (the
// time since TPM Reset) alone.
func TestClockSet(t *testing.T) {
	v, clk := newClockTPM(t)
	clk.Advance(5 * time.Second)
	before := admMust(t, v, rcSuccess, rawCommand(ccReadClock, nil, 0, nil))
	tm, c := admBE64(before), admBE64(before[8:])
	if tm != 5000 || c != 5000 {
		t.Fatalf("time %d clock %d, want 5000 5000", tm, c)
	}
	admMust(t, v, qualify(rcValue, rcP|rcN), clockSet(c-1))
	admMust(t, v, qualify(rcValue, rcP|rcN), clockSet(maxClock+1))
	admMust(t, v, rcSuccess, clockSet(1<<40))
	admMust(t, v, rcSuccess, clockSet(1<<40)) // the same value is allowed
	clk.Advance(time.Second)
	after := admMust(t, v, rcSuccess, rawCommand(ccReadClock, nil, 0, nil))
	if tm, c := admBE64(after), admBE64(after[8:]); tm != 6000 || c != 1<<40+1000 {
		t.Errorf("after ClockSet: time %d clock %d, want 6000 %d", tm, c, uint64(1<<40+1000))
	}
	admMust(t, v, qualify(rcValue, rcH|rcN), rawCommand(ccClockSet, []uint32{rhEndorsement}, 1, nil, admU64(1<<41)))
	admMust(t, v, rcSuccess, rawCommand(ccClockSet, []uint32{rhPlatform}, 1, nil, admU64(maxClock)))
}

// TestClockRateAdjust checks the bounds of the adjustment and the rate it
// sets.
func TestClockRateAdjust(t *testing.T) {
	v := newTestTPM(t)
	adj := func(a int8) []byte {
		return rawCommand(ccClockRateAdjust, []uint32{rhOwner}, 1, nil, []byte{byte(a)})
	}
	admMust(t, v, qualify(rcValue, rcP|rcN), adj(4))
	admMust(t, v, qualify(rcValue, rcP|rcN), adj(-4))
	admMust(t, v, rcSuccess, adj(-3)) // coarse slower
	admMust(t, v, rcSuccess, adj(1))  // fine faster
	if got := v.s.ClockAdjust; got != clockAdjustCoarse-clockAdjustFine {
		t.Errorf("ClockAdjust %d, want %d", got, clockAdjustCoarse-clockAdjustFine)
	}
	for i := 0; i < 100; i++ {
		admMust(t, v, rcSuccess, adj(3))
	}
	if got := v.s.ClockAdjust; got != -clockAdjustLimit {
		t.Errorf("ClockAdjust %d, want the limit %d", got, -clockAdjustLimit)
	}
	// The clock runs 30000/25000 as fast.
	if got := v.clockScaled(25000); got != 30000 {
		t.Errorf("25 s scaled to %d ms, want 30000", got)
	}
	if got := v.clockScaled(1 << 62); got <= 1<<62 {
		t.Errorf("no overflow expected: %d", got)
	}
}

// TestClockRateAdjustRuns checks that the adjusted rate is the rate of
// Clock and Time between commands.
func TestClockRateAdjustRuns(t *testing.T) {
	v, clk := newClockTPM(t)
	for i := 0; i < 100; i++ {
		admMust(t, v, rcSuccess, rawCommand(ccClockRateAdjust, []uint32{rhPlatform}, 1, nil, []byte{3}))
	}
	p := admMust(t, v, rcSuccess, rawCommand(ccReadClock, nil, 0, nil))
	clk.Advance(10 * time.Second)
	q := admMust(t, v, rcSuccess, rawCommand(ccReadClock, nil, 0, nil))
	if dt, dc := admBE64(q)-admBE64(p), admBE64(q[8:])-admBE64(p[8:]); dt != 12000 || dc != 12000 {
		t.Errorf("10 s at the fastest rate: time +%d, clock +%d, want +12000", dt, dc)
	}
	for i := 0; i < 200; i++ {
		admMust(t, v, rcSuccess, rawCommand(ccClockRateAdjust, []uint32{rhPlatform}, 1, nil, []byte{0xFD}))
	}
	p = admMust(t, v, rcSuccess, rawCommand(ccReadClock, nil, 0, nil))
	clk.Advance(35 * time.Second)
	q = admMust(t, v, rcSuccess, rawCommand(ccReadClock, nil, 0, nil))
	if dc := admBE64(q[8:]) - admBE64(p[8:]); dc != 30000 {
		t.Errorf("35 s at the slowest rate: clock +%d, want +30000", dc)
	}
}

// TestGetTime signs a TPMS_TIME_ATTEST_INFO with an ECC key and checks
// the signature and the attested values.
func TestGetTime(t *testing.T) {
	v, clk := newClockTPM(t)
	clk.Advance(1234 * time.Millisecond)
	key, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)},
		InPublic:      tpm2.New2B(akTemplate),
	}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := tpm2.GetTime{
		PrivacyAdminHandle: tpm2.TPMRHEndorsement,
		SignHandle:         tpm2.AuthHandle{Handle: key.ObjectHandle, Name: key.Name, Auth: pwAuth(nil)},
		QualifyingData:     tpm2.TPM2BData{Buffer: []byte("nonce")},
		InScheme:           tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	att, err := rsp.TimeInfo.Contents()
	if err != nil {
		t.Fatal(err)
	}
	if att.Type != tpm2.TPMSTAttestTime || !bytes.Equal(att.ExtraData.Buffer, []byte("nonce")) {
		t.Fatalf("attest type %#x extra %q", att.Type, att.ExtraData.Buffer)
	}
	ti, err := att.Attested.Time()
	if err != nil {
		t.Fatal(err)
	}
	if ti.Time.Time != 1234 || ti.Time.ClockInfo.Clock != 1234 || ti.Time.ClockInfo.ResetCount != 0 {
		t.Errorf("time info %+v", ti.Time)
	}
	pub, err := key.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	ecc, _ := pub.Unique.ECC()
	pk := &ecdsa.PublicKey{Curve: curveOf(curveNISTP256), X: new(big.Int).SetBytes(ecc.X.Buffer), Y: new(big.Int).SetBytes(ecc.Y.Buffer)}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(rsp.TimeInfo.Bytes())
	if !ecdsa.Verify(pk, digest[:], new(big.Int).SetBytes(sig.SignatureR.Buffer), new(big.Int).SetBytes(sig.SignatureS.Buffer)) {
		t.Error("GetTime signature does not verify")
	}
	// Only the endorsement hierarchy is the privacy administrator.
	admMust(t, v, qualify(rcValue, rcH|rcN), rawCommand(ccGetTime, []uint32{rhOwner, rhNull}, 2, nil, b2b(nil), u16b(algNull)))
}

// TestDifferentialClock compares ClockSet, ClockRateAdjust and GetTime
// with the reference TPM: every response code, and the unsigned
// TPMS_ATTEST of GetTime field by field where both TPMs must agree.
func TestDifferentialClock(t *testing.T) {
	d := newDual(t)
	// The reference's clock carries over from earlier tests in this
	// process: start both from above both clocks.
	ra := rawCommand(ccReadClock, nil, 0, nil)
	va, _ := d.v.Send(ra)
	base := max(admBE64(va[18:]), admBE64(simSend(d.sim, ra)[18:])) + 1<<40
	for _, cmd := range [][]byte{
		clockSet(maxClock + 1),
		clockSet(base),
		// Backwards: refused. (ClockSet(0) on a TPM manufactured less
		// than a millisecond ago, whose Clock is still 0, is not.)
		clockSet(base - 1),
		rawCommand(ccClockSet, []uint32{rhEndorsement}, 1, nil, admU64(base+1)),
		rawCommand(ccClockSet, []uint32{rhOwner}, 1, nil, u32b(1)),
		rawCommand(ccClockRateAdjust, []uint32{rhOwner}, 1, nil, []byte{4}),
		rawCommand(ccClockRateAdjust, []uint32{rhOwner}, 1, nil, []byte{0xFC}),
		rawCommand(ccClockRateAdjust, []uint32{rhPlatform}, 1, nil, []byte{0xFD}),
		rawCommand(ccClockRateAdjust, []uint32{rhOwner}, 1, nil, []byte{3}),
		rawCommand(ccClockRateAdjust, []uint32{rhOwner}, 1, nil, []byte{0}),
		rawCommand(ccClockRateAdjust, []uint32{rhOwner}, 1, nil),
		rawCommand(ccGetTime, []uint32{rhOwner, rhNull}, 2, nil, b2b(nil), u16b(algNull)),
		rawCommand(ccGetTime, []uint32{rhEndorsement, rhNull}, 2, nil, b2b(make([]byte, 67)), u16b(algNull)),
		rawCommand(ccGetTime, []uint32{rhEndorsement, rhNull}, 2, nil, b2b(nil), u16b(algRSASSA), u16b(algSHA256)),
		rawCommand(ccGetTime, []uint32{rhEndorsement, rhNull}, 1, nil, b2b(nil), u16b(algNull)),
	} {
		sameRC(t, d, cmd)
	}
	cmd := rawCommand(ccGetTime, []uint32{rhEndorsement, rhNull}, 2, nil, b2b([]byte("qualifying")), u16b(algNull))
	a, _ := d.v.Send(cmd)
	b := simSend(d.sim, cmd)
	if rcOf(a) != rcSuccess || rcOf(b) != rcSuccess {
		t.Fatalf("GetTime: vtpm rc %#x, reference rc %#x", rcOf(a), rcOf(b))
	}
	if len(a) != len(b) {
		t.Fatalf("GetTime: vtpm %d bytes, reference %d\nvtpm      %x\nreference %x", len(a), len(b), a, b)
	}
	pa, pb := rspParams(a[10:], false), rspParams(b[10:], false)
	// TPM2B_ATTEST: size, magic, type, qualifiedSigner (TPM_RH_NULL),
	// extraData (2+4+2+6+2+10) then clockInfo (17) and firmwareVersion
	// (8) of the header, then the attested time (8), clockInfo (17) and
	// firmwareVersion (8), then the null signature.
	const hdr = 2 + 4 + 2 + 6 + 2 + 10
	if !bytes.Equal(pa[:hdr], pb[:hdr]) {
		t.Errorf("attest header: vtpm %x, reference %x", pa[:hdr], pb[:hdr])
	}
	clockOf := func(p []byte) uint64 { return admBE64(p[hdr:]) }
	attClock := func(p []byte) uint64 { return admBE64(p[hdr+17+8+8:]) }
	if ca, cb := clockOf(pa), clockOf(pb); ca < base || cb < base || ca-cb+5000 > 10000 {
		t.Errorf("clock: vtpm %d, reference %d", ca, cb)
	}
	if attClock(pa) != clockOf(pa) || attClock(pb) != clockOf(pb) {
		t.Errorf("attested clock differs from the header's")
	}
	// restartCount and safe of the attested clockInfo, in clear. (The
	// reference counts its first startup as a TPM Reset, so resetCount
	// differs by one.)
	ra, rb := pa[hdr+17+8+8+12:hdr+17+8+8+17], pb[hdr+17+8+8+12:hdr+17+8+8+17]
	if !bytes.Equal(ra, rb) {
		t.Errorf("attested counts: vtpm %x, reference %x", ra, rb)
	}
	if !bytes.Equal(pa[len(pa)-2:], pb[len(pb)-2:]) {
		t.Errorf("signature: vtpm %x, reference %x", pa[len(pa)-2:], pb[len(pb)-2:])
	}
}
