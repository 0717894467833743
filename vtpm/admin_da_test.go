package vtpm

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// admClock is a settable Config.Now.
type admClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *admClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *admClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClockTPM(t testing.TB) (*TPM, *admClock) {
	t.Helper()
	clk := &admClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	v, err := New(Config{VMID: "test-vm", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, clk
}

// daObject loads a sealed data object with the password "correct horse"
// (DA-protected unless noDA) and returns an Unseal command builder.
func daObject(t testing.TB, v *TPM, noDA bool) func(pw string) []byte {
	t.Helper()
	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	parent := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: pwAuth(nil)}
	sealed, err := tpm2.Create{
		ParentHandle: parent,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: []byte("correct horse")},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("secret")}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true, NoDA: noDA},
		}),
	}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := tpm2.Load{ParentHandle: parent, InPrivate: sealed.OutPrivate, InPublic: sealed.OutPublic}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	h := uint32(obj.ObjectHandle)
	return func(pw string) []byte { return rawCommand(ccUnseal, []uint32{h}, 1, []byte(pw)) }
}

var (
	admAuthFail = qualify(rcAuthFail, rcS|rcN)
	admBadAuth  = qualify(rcBadAuth, rcS|rcN)
)

func daReset(pw string) []byte {
	return rawCommand(ccDictionaryAttackLockReset, []uint32{rhLockout}, 1, []byte(pw))
}

func daParams(maxTries, recovery, lockoutRecovery uint32) []byte {
	return rawCommand(ccDictionaryAttackParameters, []uint32{rhLockout}, 1, nil, u32b(maxTries), u32b(recovery), u32b(lockoutRecovery))
}

// TestDictionaryAttackLockoutEngages guesses the password of a
// DA-protected object until the TPM locks out: then even the right
// password is refused, until lockoutAuth resets the lockout.
func TestDictionaryAttackLockoutEngages(t *testing.T) {
	v, _ := newClockTPM(t)
	unseal := daObject(t, v, false)
	for i := 0; i < defaultMaxTries; i++ {
		admMust(t, v, admAuthFail, unseal("guess"))
	}
	admMust(t, v, rcLockout, unseal("guess"))
	admMust(t, v, rcLockout, unseal("correct horse"))
	if got := admProperty(t, v, 0x20E); got != defaultMaxTries {
		t.Errorf("TPM_PT_LOCKOUT_COUNTER %d, want %d", got, defaultMaxTries)
	}
	// The lockout survives Seal and Open.
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	admMust(t, w, rcLockout, rawCommand(ccUnseal, []uint32{transientFirst + 1}, 1, []byte("correct horse")))
	admMust(t, v, rcSuccess, daReset(""))
	admMust(t, v, rcSuccess, unseal("correct horse"))
}

// TestDictionaryAttackNoDAObjectNotCounted checks that failures against
// a noDA object answer TPM_RC_BAD_AUTH and never lock the TPM out.
func TestDictionaryAttackNoDAObjectNotCounted(t *testing.T) {
	v, _ := newClockTPM(t)
	unseal := daObject(t, v, true)
	for i := 0; i < 2*defaultMaxTries; i++ {
		admMust(t, v, admBadAuth, unseal("guess"))
	}
	admMust(t, v, rcSuccess, unseal("correct horse"))
}

// TestDictionaryAttackHealsWithClock checks that one failure is forgiven
// per recoveryTime of TPM clock, and not earlier.
func TestDictionaryAttackHealsWithClock(t *testing.T) {
	v, clk := newClockTPM(t)
	admMust(t, v, rcSuccess, daParams(2, 10, 10))
	unseal := daObject(t, v, false)
	admMust(t, v, admAuthFail, unseal("guess"))
	admMust(t, v, admAuthFail, unseal("guess"))
	admMust(t, v, rcLockout, unseal("correct horse"))
	clk.Advance(9 * time.Second)
	admMust(t, v, rcLockout, unseal("correct horse"))
	clk.Advance(time.Second)
	// One failure forgiven: one more guess is possible, then lockout.
	admMust(t, v, rcSuccess, unseal("correct horse"))
	admMust(t, v, admAuthFail, unseal("guess"))
	admMust(t, v, rcLockout, unseal("correct horse"))
	clk.Advance(20 * time.Second)
	if got := admProperty(t, v, 0x20E); got != 0 {
		t.Errorf("TPM_PT_LOCKOUT_COUNTER %d after 2 recovery times, want 0", got)
	}
}

// TestLockoutAuthFailureLocksLockout checks that a wrong lockoutAuth
// locks lockoutAuth itself for lockoutRecovery seconds, so that
// lockoutAuth cannot be guessed at speed either.
func TestLockoutAuthFailureLocksLockout(t *testing.T) {
	v, clk := newClockTPM(t)
	admMust(t, v, rcSuccess, rawCommand(ccHierarchyChangeAuth, []uint32{rhLockout}, 1, nil, b2b([]byte("lockpw"))))
	admMust(t, v, admAuthFail, daReset("guess"))
	admMust(t, v, rcLockout, daReset("lockpw"))
	admMust(t, v, rcLockout, daReset("guess"))
	// Object authorizations are not affected.
	unseal := daObject(t, v, false)
	admMust(t, v, rcSuccess, unseal("correct horse"))
	clk.Advance((defaultLockoutRecovery - 1) * time.Second)
	admMust(t, v, rcLockout, daReset("lockpw"))
	clk.Advance(time.Second)
	admMust(t, v, rcSuccess, daReset("lockpw"))
}

// TestLockoutAuthLockedUntilStartup checks that with lockoutRecovery 0 a
// wrong lockoutAuth locks it until the next TPM2_Startup, whatever the
// clock does.
func TestLockoutAuthLockedUntilStartup(t *testing.T) {
	v, clk := newClockTPM(t)
	admMust(t, v, rcSuccess, daParams(3, 1000, 0))
	admMust(t, v, admAuthFail, daReset("guess"))
	clk.Advance(1000 * time.Hour)
	admMust(t, v, rcLockout, daReset(""))
	powerRestart(t, v, suState, suState)
	admMust(t, v, rcSuccess, daReset(""))
}

// TestClockSetDoesNotHealLockout checks that the owner cannot release a
// dictionary-attack lockout, or lockoutAuth's, by setting the clock
// forward: only lockoutAuth may reset the failure count.
func TestClockSetDoesNotHealLockout(t *testing.T) {
	v, _ := newClockTPM(t)
	unseal := daObject(t, v, false)
	for i := 0; i < defaultMaxTries; i++ {
		admMust(t, v, admAuthFail, unseal("guess"))
	}
	admMust(t, v, admAuthFail, daReset("guess"))
	clock := admReadClock(t, v)
	admMust(t, v, rcSuccess, rawCommand(ccClockSet, []uint32{rhOwner}, 1, nil, admU64(clock+100*defaultRecoveryTime*1000)))
	admMust(t, v, rcLockout, unseal("correct horse"))
	admMust(t, v, rcLockout, daReset(""))
}

// TestDictionaryAttackPowerLossCounts checks that losing power without
// TPM2_Shutdown after a DA-protected authorization counts as a failure, so
// that cutting power cannot hide a guess; an orderly shutdown does not.
func TestDictionaryAttackPowerLossCounts(t *testing.T) {
	v, _ := newClockTPM(t)
	unseal := daObject(t, v, false)
	admMust(t, v, rcSuccess, unseal("correct horse"))
	v.PowerCycle()
	admMust(t, v, rcSuccess, rawCommand(ccStartup, nil, 0, nil, u16b(suClear)))
	if got := admProperty(t, v, 0x20E); got != 1 {
		t.Errorf("failures after a power loss: %d, want 1", got)
	}
	// No DA-protected authorization since: a second power loss counts
	// nothing, and an orderly restart neither.
	v.PowerCycle()
	admMust(t, v, rcSuccess, rawCommand(ccStartup, nil, 0, nil, u16b(suClear)))
	powerRestart(t, v, suClear, suClear)
	if got := admProperty(t, v, 0x20E); got != 1 {
		t.Errorf("failures: %d, want 1", got)
	}
}

// TestDictionaryAttackMaxTriesZero checks that maxTries 0 keeps every
// DA-protected entity locked out, as in the reference implementation.
func TestDictionaryAttackMaxTriesZero(t *testing.T) {
	v, _ := newClockTPM(t)
	unseal := daObject(t, v, false)
	admMust(t, v, rcSuccess, daParams(0, 1000, 1000))
	admMust(t, v, rcLockout, unseal("correct horse"))
	admMust(t, v, rcSuccess, daReset(""))
	admMust(t, v, rcLockout, unseal("correct horse"))
}

// admProperty reads one TPM property with GetCapability.
func admProperty(t testing.TB, v *TPM, prop uint32) uint32 {
	t.Helper()
	p := admMust(t, v, rcSuccess, rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(prop), u32b(1)))
	m := pairs(p[5:], 4)
	return m[prop]
}

// readClock returns the TPM's Clock.
func admReadClock(t testing.TB, v *TPM) uint64 {
	t.Helper()
	p := admMust(t, v, rcSuccess, rawCommand(ccReadClock, nil, 0, nil))
	return admBE64(p[8:])
}

func admBE64(b []byte) uint64 {
	var v uint64
	for _, x := range b[:8] {
		v = v<<8 | uint64(x)
	}
	return v
}

// TestDifferentialDictionaryAttackParameters runs failures, parameter
// changes and resets on both TPMs and compares the responses and the DA
// properties. The clock does not matter here: the recovery times are
// large.
func TestDifferentialDictionaryAttackParameters(t *testing.T) {
	d := newDual(t)
	a := &recorder{tpm: d.v}
	b := &recorder{tpm: simTPM{d.sim}}
	for _, tp := range []*recorder{a, b} {
		var v *TPM
		_ = v
		srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		parent := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: pwAuth(nil)}
		sealed, err := tpm2.Create{
			ParentHandle: parent,
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				UserAuth: tpm2.TPM2BAuth{Buffer: []byte("pw")},
				Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("s")}),
			}},
			InPublic: tpm2.New2B(tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
				ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true}}),
		}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := tpm2.Load{ParentHandle: parent, InPrivate: sealed.OutPrivate, InPublic: sealed.OutPublic}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		unseal := func(pw string) { tp.Send(rawCommand(ccUnseal, []uint32{uint32(obj.ObjectHandle)}, 1, []byte(pw))) }
		props := func() {
			tp.Send(rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(0x20E), u32b(4)))
		}
		tp.Send(daParams(5, 10000, 10000))
		props()
		for i := 0; i < 3; i++ {
			unseal("guess")
		}
		props()
		tp.Send(daParams(2, 10000, 10000)) // below the count: lockout
		props()
		unseal("pw")
		tp.Send(daParams(2, 0, 10000)) // recoveryTime 0: no lockout
		unseal("guess")
		unseal("pw")
		props()
		tp.Send(daParams(0, 10000, 10000)) // maxTries 0: always locked
		unseal("pw")
		tp.Send(daReset(""))
		unseal("pw")
		tp.Send(daParams(3, 10000, 0))
		tp.Send(rawCommand(ccDictionaryAttackParameters, []uint32{rhLockout}, 1, nil, u32b(3), u32b(1000)))
		tp.Send(rawCommand(ccDictionaryAttackParameters, []uint32{rhOwner}, 1, nil, u32b(3), u32b(1000), u32b(1000)))
		tp.Send(daReset("x"))
		tp.Send(daReset(""))
		props()
		tp.Send(rawCommand(ccFlushContext, nil, 0, nil, u32b(uint32(obj.ObjectHandle))))
		tp.Send(rawCommand(ccFlushContext, nil, 0, nil, u32b(uint32(srk.ObjectHandle))))
	}
	if len(a.rcs) != len(b.rcs) {
		t.Fatalf("vtpm ran %d commands, reference %d", len(a.rcs), len(b.rcs))
	}
	for i := range a.rcs {
		if a.rcs[i] != b.rcs[i] {
			t.Errorf("command %d (%#x): vtpm rc %#x, reference rc %#x", i, a.ccs[i], a.rcs[i], b.rcs[i])
		}
	}
}

// TestDifferentialInLockoutReported: TPMA_PERMANENT's inLockout says what
// the reference says for DA parameters that lock at once (maxTries 0),
// whatever the recovery time.
func TestDifferentialInLockoutReported(t *testing.T) {
	for _, p := range [][3]uint32{{0, 0, 0}, {0, 10, 0}, {3, 0, 0}, {0, 0, 10}} {
		t.Run(fmt.Sprint(p), func(t *testing.T) {
			d := newDual(t)
			sameRC(t, d, daParams(p[0], p[1], p[2]))
			sameResponse(t, d, rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(0x200), u32b(1)))
		})
	}
}
