package vtpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

const (
	admNVBase = nvOwnerWrite | nvOwnerRead | nvAuthWrite | nvAuthRead | nvNoDA
	admNVBits = ntBits << nvTypeShift
)

var admAttrsH2 = qualify(rcAttributes, rcH|2*rcN)

// TestNVWriteLockedRefused locks indices for writing and checks that no
// write gets through, until the startup that the attributes name.
func TestNVWriteLockedRefused(t *testing.T) {
	v := newTestTPM(t)
	const stclear, define, defineUnwritten, plain = 0x01500001, 0x01500002, 0x01500003, 0x01500004
	admMust(t, v, rcSuccess, defineNV(stclear, nil, admNVBase|nvWriteSTClear, 8))
	admMust(t, v, rcSuccess, defineNV(define, nil, admNVBase|nvWriteDefine, 8))
	admMust(t, v, rcSuccess, defineNV(defineUnwritten, nil, admNVBase|nvWriteDefine, 8))
	admMust(t, v, rcSuccess, defineNV(plain, nil, admNVBase, 8))
	for _, idx := range []uint32{stclear, define, plain} {
		admMust(t, v, rcSuccess, nvWriteCmd(rhOwner, idx, nil, []byte("12345678"), 0))
	}
	lock := func(idx uint32) []byte { return rawCommand(ccNVWriteLock, []uint32{rhOwner, idx}, 1, nil) }
	admMust(t, v, admAttrsH2, lock(plain))
	for _, idx := range []uint32{stclear, define, defineUnwritten} {
		admMust(t, v, rcSuccess, lock(idx))
		admMust(t, v, rcSuccess, lock(idx)) // locking a locked index succeeds
		if nvAttrs(t, v, idx)&nvWriteLocked == 0 {
			t.Errorf("index %#x: TPMA_NV_WRITELOCKED not set", idx)
		}
		// Every way to write is refused, with the owner's and the
		// index's authorization.
		admMust(t, v, rcNVLocked, nvWriteCmd(rhOwner, idx, nil, []byte("x"), 0))
		admMust(t, v, rcNVLocked, nvWriteCmd(idx, idx, nil, []byte("x"), 0))
	}
	// A read is not affected.
	if p := admMust(t, v, rcSuccess, nvReadCmd(rhOwner, stclear, nil, 8, 0)); string(rspParams(p, false)[2:]) != "12345678" {
		t.Errorf("read %q", rspParams(p, false)[2:])
	}

	// TPM Resume keeps every lock.
	powerRestart(t, v, suState, suState)
	for _, idx := range []uint32{stclear, define, defineUnwritten} {
		admMust(t, v, rcNVLocked, nvWriteCmd(rhOwner, idx, nil, []byte("x"), 0))
	}
	// TPM Reset clears WRITE_STCLEAR locks and the lock of an unwritten
	// WRITEDEFINE index; a written WRITEDEFINE index stays locked.
	powerRestart(t, v, suClear, suClear)
	admMust(t, v, rcSuccess, nvWriteCmd(rhOwner, stclear, nil, []byte("y"), 0))
	admMust(t, v, rcSuccess, nvWriteCmd(rhOwner, defineUnwritten, nil, []byte("y"), 0))
	admMust(t, v, rcNVLocked, nvWriteCmd(rhOwner, define, nil, []byte("y"), 0))

	// The lock survives Seal and Open.
	admMust(t, v, rcSuccess, lock(stclear))
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	admMust(t, w, rcNVLocked, nvWriteCmd(rhOwner, stclear, nil, []byte("z"), 0))
}

// TestNVReadLockSurvivesUntilReset read-locks an index and checks that
// it stays unreadable across TPM Resume and becomes readable at TPM
// Restart.
func TestNVReadLockSurvivesUntilReset(t *testing.T) {
	v := newTestTPM(t)
	const idx, plain = 0x01500010, 0x01500011
	admMust(t, v, rcSuccess, defineNV(idx, []byte("pw"), admNVBase|nvReadSTClear, 16))
	admMust(t, v, rcSuccess, defineNV(plain, nil, admNVBase, 16))
	admMust(t, v, rcSuccess, nvWriteCmd(rhOwner, idx, nil, []byte("secret"), 0))
	readLock := func(auth, idx uint32, pw []byte) []byte {
		return rawCommand(ccNVReadLock, []uint32{auth, idx}, 1, pw)
	}
	admMust(t, v, admAttrsH2, readLock(rhOwner, plain, nil))
	admMust(t, v, rcSuccess, readLock(idx, idx, []byte("pw")))
	admMust(t, v, rcSuccess, readLock(rhOwner, idx, nil))
	admMust(t, v, rcNVLocked, nvReadCmd(rhOwner, idx, nil, 6, 0))
	admMust(t, v, rcNVLocked, nvReadCmd(idx, idx, []byte("pw"), 6, 0))
	// Writes still work.
	admMust(t, v, rcSuccess, nvWriteCmd(rhOwner, idx, nil, []byte("other!"), 0))
	powerRestart(t, v, suState, suState)
	admMust(t, v, rcNVLocked, nvReadCmd(rhOwner, idx, nil, 6, 0))
	// TPM Restart: Shutdown(STATE) then Startup(CLEAR).
	powerRestart(t, v, suState, suClear)
	p := admMust(t, v, rcSuccess, nvReadCmd(rhOwner, idx, nil, 6, 0))
	if got := string(rspParams(p, false)[2:]); got != "other!" {
		t.Errorf("read %q after restart", got)
	}
}

// TestNVGlobalWriteLock locks every GLOBALLOCK index and nothing else.
func TestNVGlobalWriteLock(t *testing.T) {
	v := newTestTPM(t)
	const global, other = 0x01500020, 0x01500021
	admMust(t, v, rcSuccess, defineNV(global, nil, admNVBase|nvGlobalLock, 4))
	admMust(t, v, rcSuccess, defineNV(other, nil, admNVBase, 4))
	admMust(t, v, rcSuccess, rawCommand(ccNVGlobalWriteLock, []uint32{rhOwner}, 1, nil))
	admMust(t, v, rcNVLocked, nvWriteCmd(rhOwner, global, nil, []byte("x"), 0))
	admMust(t, v, rcSuccess, nvWriteCmd(rhOwner, other, nil, []byte("x"), 0))
	// Only the owner or the platform may lock globally.
	admMust(t, v, qualify(rcValue, rcH|rcN), rawCommand(ccNVGlobalWriteLock, []uint32{rhEndorsement}, 1, nil))
	powerRestart(t, v, suClear, suClear)
	admMust(t, v, rcSuccess, nvWriteCmd(rhOwner, global, nil, []byte("x"), 0))
}

// TestNVSetBits ORs bits into a bit-field index.
func TestNVSetBits(t *testing.T) {
	v := newTestTPM(t)
	const bits, plain = 0x01500030, 0x01500031
	admMust(t, v, rcSuccess, defineNV(bits, nil, admNVBase|admNVBits|nvWriteSTClear, 8))
	admMust(t, v, rcSuccess, defineNV(plain, nil, admNVBase, 8))
	setBits := func(idx uint32, b uint64) []byte {
		return rawCommand(ccNVSetBits, []uint32{rhOwner, idx}, 1, nil, admU64(b))
	}
	admMust(t, v, rcNVUninitialized, nvReadCmd(rhOwner, bits, nil, 8, 0))
	admMust(t, v, rcSuccess, setBits(bits, 0x0101))
	admMust(t, v, rcSuccess, setBits(bits, 0x8000000000000010))
	p := admMust(t, v, rcSuccess, nvReadCmd(rhOwner, bits, nil, 8, 0))
	if got := binary.BigEndian.Uint64(rspParams(p, false)[2:]); got != 0x8000000000000111 {
		t.Errorf("bits %#x, want 0x8000000000000111", got)
	}
	admMust(t, v, admAttrsH2, setBits(plain, 1))
	// NV_Write is not for bit fields.
	admMust(t, v, rcAttributes, nvWriteCmd(rhOwner, bits, nil, make([]byte, 8), 0))
	admMust(t, v, rcSuccess, rawCommand(ccNVWriteLock, []uint32{rhOwner, bits}, 1, nil))
	admMust(t, v, rcNVLocked, setBits(bits, 2))
}

// TestNVClearSTClear checks that an index with TPMA_NV_CLEAR_STCLEAR is
// unwritten after TPM Restart but not after TPM Resume.
func TestNVClearSTClear(t *testing.T) {
	v := newTestTPM(t)
	const idx = 0x01500040
	admMust(t, v, rcSuccess, defineNV(idx, nil, admNVBase|nvClearSTClear, 4))
	admMust(t, v, rcSuccess, nvWriteCmd(rhOwner, idx, nil, []byte("abcd"), 0))
	powerRestart(t, v, suState, suState)
	admMust(t, v, rcSuccess, nvReadCmd(rhOwner, idx, nil, 4, 0))
	powerRestart(t, v, suState, suClear)
	admMust(t, v, rcNVUninitialized, nvReadCmd(rhOwner, idx, nil, 4, 0))
}

// TestNVChangeAuthRefusesPassword checks that a password cannot change an
// index's authValue: NV_ChangeAuth needs the ADMIN role, which for an
// index only its policy provides.
func TestNVChangeAuthRefusesPassword(t *testing.T) {
	v := newTestTPM(t)
	const idx = 0x01500050
	admMust(t, v, rcSuccess, defineNV(idx, []byte("old"), admNVBase, 4))
	admMust(t, v, rcAuthType, rawCommand(ccNVChangeAuth, []uint32{idx}, 1, []byte("old"), b2b([]byte("new"))))
	admMust(t, v, rcSuccess, nvWriteCmd(idx, idx, []byte("old"), []byte("x"), 0))
}

// TestNVChangeAuthHandler runs the NV_ChangeAuth handler as dispatch runs
// it once a policy session has authorized the ADMIN role, and checks the
// new authValue in use and the size limit.
func TestNVChangeAuthHandler(t *testing.T) {
	v := newTestTPM(t)
	const idx = 0x01500051
	admMust(t, v, rcSuccess, defineNV(idx, []byte("old"), admNVBase, 4))
	run := func(newAuth []byte) uint32 {
		c := &call{def: lookupCommand(ccNVChangeAuth), nh: 1, nsess: 1}
		c.h[0] = idx
		c.sess[0].handle = policySessionFirst
		c.r = newReader(b2b(newAuth))
		c.r.param(1)
		v.mu.Lock()
		defer v.mu.Unlock()
		return c.def.fn(v, c)
	}
	if rc := run(bytes.Repeat([]byte{1}, 33)); rc != qualify(rcSize, rcP|rcN) {
		t.Errorf("33-byte authValue: rc %#x", rc)
	}
	if rc := run(append([]byte("new"), make([]byte, 40)...)); rc != rcSuccess {
		t.Errorf("trailing zeros: rc %#x", rc)
	}
	admMust(t, v, qualify(rcBadAuth, rcS|rcN), nvWriteCmd(idx, idx, []byte("old"), []byte("x"), 0))
	admMust(t, v, rcSuccess, nvWriteCmd(idx, idx, []byte("new"), []byte("x"), 0))
}

// TestNVChangeAuthPolicy changes an index's authValue through a policy
// session with PolicyCommandCode(NV_ChangeAuth), as tpm2-tools does, on
// the vTPM and the reference TPM, and checks that a policy for another
// command, or a password, cannot.
func TestNVChangeAuthPolicy(t *testing.T) {
	a := &recorder{tpm: newTestTPM(t)}
	nvChangeAuthScenario(t, a)
	b := &recorder{tpm: simTPM{getSim(t)}}
	nvChangeAuthScenario(t, b)
	if len(a.rcs) != len(b.rcs) {
		t.Fatalf("vtpm ran %d commands, reference %d", len(a.rcs), len(b.rcs))
	}
	for i := range a.rcs {
		if a.rcs[i] != b.rcs[i] {
			t.Errorf("command %d (%#x): vtpm rc %#x, reference rc %#x", i, a.ccs[i], a.rcs[i], b.rcs[i])
		}
	}
}

func nvChangeAuthScenario(t *testing.T, tp *recorder) {
	const idx = 0x01500052
	// policyDigest = SHA-256(0^32 || TPM_CC_PolicyCommandCode || TPM_CC_NV_ChangeAuth)
	policy := sha256.Sum256(bytesOf(make([]byte, 32), u32b(0x16C), u32b(ccNVChangeAuth)))
	pub := bytesOf(u32b(idx), u16b(algSHA256), u32b(admNVBase), b2b(policy[:]), u16b(4))
	admMust(t, tp, rcSuccess, rawCommand(ccNVDefineSpace, []uint32{rhOwner}, 1, nil, b2b([]byte("old")), b2b(pub)))
	changeAuth := func(code tpm2.TPMCC, newAuth string) {
		sess, closeSess, err := tpm2.PolicySession(tp, tpm2.TPMAlgSHA256, 16)
		if err != nil {
			t.Fatalf("policy session: %v", err)
		}
		defer closeSess()
		if _, err := (tpm2.PolicyCommandCode{PolicySession: sess.Handle(), Code: code}).Execute(tp); err != nil {
			t.Fatalf("PolicyCommandCode: %v", err)
		}
		// continueSession: the deferred close flushes the session.
		auth := bytesOf(u32b(uint32(sess.Handle())), b2b(nil), []byte{saContinueSession}, b2b(nil))
		cmd := bytesOf(u16b(stSessions), u32b(0), u32b(ccNVChangeAuth), u32b(idx), u32b(uint32(len(auth))), auth, b2b([]byte(newAuth)))
		binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
		tp.Send(cmd)
	}
	changeAuth(tpm2.TPMCCNVWrite, "evil")
	tp.Send(rawCommand(ccNVChangeAuth, []uint32{idx}, 1, []byte("old"), b2b([]byte("evil"))))
	tp.Send(nvWriteCmd(idx, idx, []byte("evil"), []byte("x"), 0))
	changeAuth(tpm2.TPMCCNVChangeAuth, "new")
	tp.Send(nvWriteCmd(idx, idx, []byte("old"), []byte("x"), 0))
	tp.Send(nvWriteCmd(idx, idx, []byte("new"), []byte("x"), 0))
	tp.Send(rawCommand(ccNVUndefineSpace, []uint32{rhOwner, idx}, 1, nil))
}

// TestDifferentialNVLocks runs the lock, bit-field and authValue commands
// on the vTPM and the reference TPM, across a TPM Reset, and compares
// every response byte for byte.
func TestDifferentialNVLocks(t *testing.T) {
	d := newDual(t)
	const (
		stclear = 0x01500001
		define  = 0x01500002
		unwrit  = 0x01500003
		readClr = 0x01500004
		global  = 0x01500005
		bits    = 0x01500006
		clrSt   = 0x01500007
		plain   = 0x01500008
		orderly = 0x0150000A
	)
	cmds := [][]byte{
		defineNV(stclear, nil, admNVBase|nvWriteSTClear, 8),
		defineNV(define, nil, admNVBase|nvWriteDefine, 8),
		defineNV(unwrit, nil, admNVBase|nvWriteDefine, 8),
		defineNV(readClr, []byte("pw"), admNVBase|nvReadSTClear, 8),
		defineNV(global, nil, admNVBase|nvGlobalLock, 8),
		defineNV(bits, nil, admNVBase|admNVBits|nvWriteSTClear, 8),
		defineNV(clrSt, nil, admNVBase|nvClearSTClear, 8),
		defineNV(plain, []byte("pw"), admNVBase, 8),
		// Bits index with an ordinary size, and writes of each kind.
		defineNV(0x01500009, nil, admNVBase|admNVBits, 4),
		defineNV(orderly, nil, admNVBase|nvOrderly, 8),
		nvWriteCmd(rhOwner, orderly, nil, []byte("orderly!"), 0),
		nvReadCmd(rhOwner, orderly, nil, 8, 0),
		nvWriteCmd(rhOwner, stclear, nil, []byte("stclear!"), 0),
		nvWriteCmd(rhOwner, define, nil, []byte("define!!"), 0),
		nvWriteCmd(rhOwner, readClr, nil, []byte("readclr!"), 0),
		nvWriteCmd(rhOwner, clrSt, nil, []byte("clearst!"), 0),
		rawCommand(ccNVSetBits, []uint32{rhOwner, bits}, 1, nil, admU64(0x0102030405060708)),
		rawCommand(ccNVSetBits, []uint32{rhOwner, bits}, 1, nil, admU64(0x8000000000000000)),
		rawCommand(ccNVSetBits, []uint32{rhOwner, plain}, 1, nil, admU64(1)),
		rawCommand(ccNVSetBits, []uint32{plain, plain}, 1, []byte("pw"), admU64(1)),
		rawCommand(ccNVSetBits, []uint32{rhOwner, bits}, 1, nil, admU64(1), []byte{0}),
		nvReadCmd(rhOwner, bits, nil, 8, 0),
		rawCommand(ccNVWriteLock, []uint32{rhOwner, plain}, 1, nil),
		rawCommand(ccNVWriteLock, []uint32{rhOwner, stclear}, 1, nil),
		rawCommand(ccNVWriteLock, []uint32{stclear, stclear}, 1, nil),
		rawCommand(ccNVWriteLock, []uint32{rhOwner, define}, 1, nil),
		rawCommand(ccNVWriteLock, []uint32{rhOwner, unwrit}, 1, nil),
		rawCommand(ccNVWriteLock, []uint32{rhOwner, bits}, 1, nil),
		rawCommand(ccNVWriteLock, []uint32{rhPlatform, stclear}, 1, nil),
		nvWriteCmd(rhOwner, stclear, nil, []byte("x"), 0),
		nvWriteCmd(rhOwner, define, nil, []byte("x"), 0),
		nvWriteCmd(rhOwner, unwrit, nil, []byte("x"), 0),
		rawCommand(ccNVSetBits, []uint32{rhOwner, bits}, 1, nil, admU64(2)),
		rawCommand(ccNVReadLock, []uint32{rhOwner, plain}, 1, nil),
		rawCommand(ccNVReadLock, []uint32{readClr, readClr}, 1, []byte("pw")),
		rawCommand(ccNVReadLock, []uint32{readClr, readClr}, 1, []byte("pw")),
		rawCommand(ccNVReadLock, []uint32{rhOwner, readClr}, 1, nil),
		nvReadCmd(rhOwner, readClr, nil, 8, 0),
		nvReadCmd(readClr, readClr, []byte("pw"), 8, 0),
		nvWriteCmd(rhOwner, readClr, nil, []byte("written!"), 0),
		rawCommand(ccNVGlobalWriteLock, []uint32{rhOwner}, 1, nil),
		rawCommand(ccNVGlobalWriteLock, []uint32{rhOwner}, 1, nil, []byte{0}),
		rawCommand(ccNVGlobalWriteLock, []uint32{rhLockout}, 1, nil),
		nvWriteCmd(rhOwner, global, nil, []byte("x"), 0),
		rawCommand(ccNVChangeAuth, []uint32{plain}, 1, []byte("pw"), b2b([]byte("new"))),
	}
	pub := func(idx uint32) []byte { return rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil) }
	for _, cmd := range cmds {
		sameResponse(t, d, cmd)
	}
	for idx := uint32(stclear); idx <= plain; idx++ {
		sameResponse(t, d, pub(idx))
	}
	dualReset(t, d)
	after := [][]byte{
		nvWriteCmd(rhOwner, stclear, nil, []byte("x"), 0),
		nvWriteCmd(rhOwner, define, nil, []byte("x"), 0),
		nvWriteCmd(rhOwner, unwrit, nil, []byte("x"), 0),
		nvWriteCmd(rhOwner, global, nil, []byte("x"), 0),
		rawCommand(ccNVSetBits, []uint32{rhOwner, bits}, 1, nil, admU64(4)),
		nvReadCmd(rhOwner, bits, nil, 8, 0),
		nvReadCmd(rhOwner, readClr, nil, 8, 0),
		nvReadCmd(rhOwner, clrSt, nil, 8, 0),
		nvReadCmd(rhOwner, orderly, nil, 8, 0),
		rawCommand(ccNVReadPublic, []uint32{orderly}, 0, nil),
	}
	for _, cmd := range after {
		sameResponse(t, d, cmd)
	}
	for idx := uint32(stclear); idx <= plain; idx++ {
		sameResponse(t, d, pub(idx))
	}
}
