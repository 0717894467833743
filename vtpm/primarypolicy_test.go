package vtpm

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

func setPrimaryPolicy(h uint32, digest []byte, alg uint16) []byte {
	return rawCommand(ccSetPrimaryPolicy, []uint32{h}, 1, nil, b2b(digest), u16b(alg))
}

// ccPolicyDigest is the policyDigest of a session that ran only
// PolicyCommandCode(cc).
func ccPolicyDigest(alg, cc uint32) []byte {
	return digestOf(uint16(alg), make([]byte, digestSize(uint16(alg))), u32b(ccPolicyCommandCode), u32b(cc))
}

// secretPolicyDigest is the policyDigest of a session that ran only
// PolicySecret(h) with an empty policyRef.
func secretPolicyDigest(h uint32) []byte {
	d := digestOf(algSHA256, make([]byte, 32), u32b(ccPolicySecret), u32b(h))
	return digestOf(algSHA256, d, nil)
}

func authPoliciesCap(prop, count uint32) []byte {
	return rawCommand(ccGetCapability, nil, 0, nil, u32b(capAuthPolicies), u32b(prop), u32b(count))
}

// createPrimaryWithPolicy is CreatePrimary under hierarchy h authorized
// by the policy session s.
func createPrimaryWithPolicy(h, s uint32) []byte {
	return rawPolicyCommand(ccCreatePrimary, []uint32{h}, s, createPrimaryParams()...)
}

// TestDifferentialSetPrimaryPolicy compares TPM2_SetPrimaryPolicy and
// TPM_CAP_AUTH_POLICIES, good and bad, with the reference TPM byte for
// byte.
func TestDifferentialSetPrimaryPolicy(t *testing.T) {
	d := newDual(t)
	d32 := bytes.Repeat([]byte{0xA5}, 32)
	cmds := [][]byte{
		authPoliciesCap(rhOwner, 16),
		setPrimaryPolicy(rhOwner, d32, algSHA256),
		setPrimaryPolicy(rhEndorsement, d32[:20], algSHA1),
		setPrimaryPolicy(rhLockout, bytes.Repeat([]byte{7}, 48), algSHA384),
		setPrimaryPolicy(rhPlatform, bytes.Repeat([]byte{8}, 64), algSHA512),
		authPoliciesCap(rhOwner, 16),
		setPrimaryPolicy(rhPlatform, d32, algSHA256),
		authPoliciesCap(0x40000000, 16),
		authPoliciesCap(rhEndorsement, 16),
		authPoliciesCap(rhEndorsement, 1),
		authPoliciesCap(rhOwner, 0),
		authPoliciesCap(rhPlatformNV, 16),
		authPoliciesCap(0x400000FF, 16),
		authPoliciesCap(0x40FFFFFF, 16),
		authPoliciesCap(0x81000000, 16),
		authPoliciesCap(0, 16),
		// Wrong sizes for the algorithm.
		setPrimaryPolicy(rhOwner, d32[:20], algSHA256),
		setPrimaryPolicy(rhOwner, d32, algSHA1),
		setPrimaryPolicy(rhOwner, nil, algSHA256),
		setPrimaryPolicy(rhOwner, d32, algNull),
		setPrimaryPolicy(rhOwner, bytes.Repeat([]byte{1}, 65), algSHA256),
		setPrimaryPolicy(rhOwner, bytes.Repeat([]byte{1}, 49), algSHA384),
		setPrimaryPolicy(rhOwner, bytes.Repeat([]byte{1}, 48), algSHA512),
		setPrimaryPolicy(rhOwner, bytes.Repeat([]byte{1}, 64), algSHA384),
		// Not hash algorithms.
		setPrimaryPolicy(rhOwner, d32, algAES),
		setPrimaryPolicy(rhOwner, d32, algRSA),
		setPrimaryPolicy(rhOwner, d32, 0xFFFF),
		setPrimaryPolicy(rhOwner, nil, 0),
		// Malformed parameter areas.
		rawCommand(ccSetPrimaryPolicy, []uint32{rhOwner}, 1, nil, b2b(d32), []byte{0}),
		rawCommand(ccSetPrimaryPolicy, []uint32{rhOwner}, 1, nil, b2b(d32)),
		rawCommand(ccSetPrimaryPolicy, []uint32{rhOwner}, 1, nil, u16b(32), d32[:8]),
		rawCommand(ccSetPrimaryPolicy, []uint32{rhOwner}, 1, nil, b2b(d32), u16b(algSHA256), []byte{0}),
		// Handles that are not TPMI_RH_HIERARCHY_AUTH, and authorization.
		setPrimaryPolicy(rhNull, nil, algNull),
		setPrimaryPolicy(rhPlatformNV, nil, algNull),
		setPrimaryPolicy(transientFirst, nil, algNull),
		rawCommand(ccSetPrimaryPolicy, []uint32{rhOwner}, 0, nil, b2b(nil), u16b(algNull)),
		rawCommand(ccSetPrimaryPolicy, []uint32{rhEndorsement}, 1, []byte("wrong"), b2b(nil), u16b(algNull)),
		rawCommand(ccHierarchyChangeAuth, []uint32{rhOwner}, 1, nil, b2b([]byte("owner"))),
		rawCommand(ccSetPrimaryPolicy, []uint32{rhOwner}, 1, []byte("owner"), b2b(d32[:20]), u16b(algSHA1)),
		authPoliciesCap(rhOwner, 16),
		// TPM_ALG_NULL with an empty digest removes a policy.
		setPrimaryPolicy(rhEndorsement, nil, algNull),
		authPoliciesCap(rhOwner, 16),
		// A disabled hierarchy's handle is refused.
		hierarchyControl(rhEndorsement, rhEndorsement, 0),
		setPrimaryPolicy(rhEndorsement, d32, algSHA256),
		hierarchyControl(rhPlatform, rhEndorsement, 1),
	}
	for _, cmd := range cmds {
		sameResponse(t, d, cmd)
	}
	// TPM Reset removes the platform policy only.
	dualReset(t, d)
	sameResponse(t, d, authPoliciesCap(rhOwner, 16))
	// TPM2_Clear removes the owner, endorsement and lockout policies.
	for _, cmd := range [][]byte{
		setPrimaryPolicy(rhPlatform, d32, algSHA256),
		setPrimaryPolicy(rhEndorsement, d32, algSHA256),
		rawCommand(ccClear, []uint32{rhPlatform}, 1, nil),
		authPoliciesCap(rhOwner, 16),
	} {
		sameResponse(t, d, cmd)
	}
	if p := d.v.s.Policies; len(p.Platform.Digest) != 32 || len(p.Owner.Digest)+len(p.Endorsement.Digest)+len(p.Lockout.Digest) != 0 {
		t.Errorf("after Clear: policies %+v, want the platform's only", p)
	}
}

// TestDifferentialHierarchyPolicyAuthorizes authorizes commands on the
// owner, endorsement, lockout and platform hierarchies with policy
// sessions whose digest is the hierarchy's authPolicy, and with sessions
// whose digest is not, on both TPMs.
func TestDifferentialHierarchyPolicyAuthorizes(t *testing.T) {
	d := newDual(t)
	sameResponse(t, d, setPrimaryPolicy(rhOwner, ccPolicyDigest(algSHA256, ccCreatePrimary), algSHA256))
	sameResponse(t, d, setPrimaryPolicy(rhEndorsement, secretPolicyDigest(rhOwner), algSHA256))
	sameResponse(t, d, setPrimaryPolicy(rhLockout, ccPolicyDigest(algSHA1, ccDictionaryAttackLockReset), algSHA1))
	flush := func() {
		sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(transientFirst)))
	}
	// authorized sends a command that the policy must authorize on both
	// TPMs (their keys differ, so only the codes are compared).
	authorized := func(cmd []byte) {
		t.Helper()
		if rc := rcOf(sameRC(t, d, cmd)); rc != rcSuccess {
			t.Errorf("command %#x with the hierarchy's policy: rc %#x", ccOf(cmd), rc)
		}
	}

	// The owner's policy: PolicyCommandCode(CreatePrimary).
	s := rawPolicySession(t, d, ccCreatePrimary)
	authorized(createPrimaryWithPolicy(rhOwner, s))
	flush()
	// The session continues with a fresh policyDigest, which is not
	// the owner's policy.
	sameResponse(t, d, createPrimaryWithPolicy(rhOwner, s))
	// The right digest, but for another command: the digest no longer
	// matches.
	sameResponse(t, d, rawPolicyCommand(ccHierarchyChangeAuth, []uint32{rhOwner}, s, b2b(nil)))
	sameResponse(t, d, rawCommand(ccPolicyCommandCode, []uint32{s}, 0, nil, u32b(ccCreatePrimary)))
	sameResponse(t, d, rawPolicyCommand(ccHierarchyChangeAuth, []uint32{rhOwner}, s, b2b(nil)))
	// The endorsement hierarchy has no PolicyCommandCode policy.
	sameResponse(t, d, rawCommand(ccPolicyCommandCode, []uint32{s}, 0, nil, u32b(ccCreatePrimary)))
	sameResponse(t, d, createPrimaryWithPolicy(rhEndorsement, s))
	// The platform hierarchy has no policy at all.
	sameResponse(t, d, rawCommand(ccPolicyCommandCode, []uint32{s}, 0, nil, u32b(ccCreatePrimary)))
	sameResponse(t, d, createPrimaryWithPolicy(rhPlatform, s))
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(s)))

	// The endorsement policy: PolicySecret(owner).
	s = rawPolicySession(t, d, ccCreatePrimary)
	sameResponse(t, d, rawCommand(ccPolicyRestart, []uint32{s}, 0, nil))
	sameResponse(t, d, rawCommand(ccPolicySecret, []uint32{rhOwner, s}, 1, nil, b2b(nil), b2b(nil), b2b(nil), u32b(0)))
	authorized(createPrimaryWithPolicy(rhEndorsement, s))
	flush()
	sameResponse(t, d, rawCommand(ccPolicySecret, []uint32{rhEndorsement, s}, 1, nil, b2b(nil), b2b(nil), b2b(nil), u32b(0)))
	sameResponse(t, d, createPrimaryWithPolicy(rhEndorsement, s))
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(s)))

	// The lockout policy is a SHA-1 policy: a SHA-256 session with the
	// same commands does not satisfy it, a SHA-1 session does.
	s = rawPolicySession(t, d, ccDictionaryAttackLockReset)
	sameResponse(t, d, rawPolicyCommand(ccDictionaryAttackLockReset, []uint32{rhLockout}, s))
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(s)))
	rsp := sameRC(t, d, rawCommand(ccStartAuthSession, []uint32{rhNull, rhNull}, 0, nil,
		b2b(make([]byte, 16)), b2b(nil), []byte{sePolicy}, u16b(algNull), u16b(algSHA1)))
	if rcOf(rsp) != rcSuccess {
		t.Fatalf("StartAuthSession: rc %#x", rcOf(rsp))
	}
	s = beU32(rsp[10:])
	sameResponse(t, d, rawCommand(ccPolicyCommandCode, []uint32{s}, 0, nil, u32b(ccDictionaryAttackLockReset)))
	authorized(rawPolicyCommand(ccDictionaryAttackLockReset, []uint32{rhLockout}, s))
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(s)))

	// The platform policy, until TPM Reset.
	sameResponse(t, d, setPrimaryPolicy(rhPlatform, ccPolicyDigest(algSHA256, ccCreatePrimary), algSHA256))
	s = rawPolicySession(t, d, ccCreatePrimary)
	authorized(createPrimaryWithPolicy(rhPlatform, s))
	flush()
	dualReset(t, d)
	s = rawPolicySession(t, d, ccCreatePrimary)
	sameResponse(t, d, createPrimaryWithPolicy(rhPlatform, s))
	authorized(createPrimaryWithPolicy(rhOwner, s))
	flush()

	// After TPM2_Clear the owner has no policy.
	sameResponse(t, d, rawCommand(ccClear, []uint32{rhPlatform}, 1, nil))
	sameResponse(t, d, rawCommand(ccPolicyCommandCode, []uint32{s}, 0, nil, u32b(ccCreatePrimary)))
	sameResponse(t, d, createPrimaryWithPolicy(rhOwner, s))
}

// TestHierarchyPolicyWrongDigestRefused checks that a policy session
// authorizes a hierarchy only when its digest is the hierarchy's
// authPolicy: a session that asserted another command, a trial session
// with the right digest, and a session with the right digest but the
// wrong hash algorithm are refused; the right session succeeds.
func TestHierarchyPolicyWrongDigestRefused(t *testing.T) {
	v := newTestTPM(t)
	admMust(t, v, rcSuccess, setPrimaryPolicy(rhOwner, ccPolicyDigest(algSHA256, ccCreatePrimary), algSHA256))
	// Owner auth is now a non-empty password; the attacker does not know it.
	admMust(t, v, rcSuccess, rawCommand(ccHierarchyChangeAuth, []uint32{rhOwner}, 1, nil, b2b([]byte("secret"))))
	policyFail := qualify(rcPolicyFail, rcS|rcN)

	s := rawPolicySession(t, v, ccNVDefineSpace)
	admMust(t, v, policyFail, createPrimaryWithPolicy(rhOwner, s))

	// A trial session computes the right digest but authorizes nothing.
	rsp, _ := v.Send(rawCommand(ccStartAuthSession, []uint32{rhNull, rhNull}, 0, nil,
		b2b(make([]byte, 16)), b2b(nil), []byte{seTrial}, u16b(algNull), u16b(algSHA256)))
	trial := beU32(rsp[10:])
	admMust(t, v, rcSuccess, rawCommand(ccPolicyCommandCode, []uint32{trial}, 0, nil, u32b(ccCreatePrimary)))
	admMust(t, v, qualify(rcAttributes, rcS|rcN), createPrimaryWithPolicy(rhOwner, trial))

	// A SHA-1 policy of the same commands is not the owner's policy.
	admMust(t, v, rcSuccess, setPrimaryPolicy(rhEndorsement, ccPolicyDigest(algSHA1, ccCreatePrimary), algSHA1))
	s2 := rawPolicySession(t, v, ccCreatePrimary)
	admMust(t, v, policyFail, createPrimaryWithPolicy(rhEndorsement, s2))

	// The right session works, with no password.
	s3 := rawPolicySession(t, v, ccCreatePrimary)
	admMust(t, v, rcSuccess, createPrimaryWithPolicy(rhOwner, s3))
}

// TestHierarchyPolicyRemovedByClear checks that TPM2_Clear takes away
// the owner policy an attacker might have planted, so that it no longer
// authorizes the new owner's hierarchy.
func TestHierarchyPolicyRemovedByClear(t *testing.T) {
	v := newTestTPM(t)
	admMust(t, v, rcSuccess, setPrimaryPolicy(rhOwner, ccPolicyDigest(algSHA256, ccCreatePrimary), algSHA256))
	admMust(t, v, rcSuccess, setPrimaryPolicy(rhLockout, ccPolicyDigest(algSHA256, ccClear), algSHA256))
	s := rawPolicySession(t, v, ccClear)
	admMust(t, v, rcSuccess, rawPolicyCommand(ccClear, []uint32{rhLockout}, s))
	admMust(t, v, rcSuccess, rawCommand(ccPolicyCommandCode, []uint32{s}, 0, nil, u32b(ccCreatePrimary)))
	admMust(t, v, rcAuthUnavailable, createPrimaryWithPolicy(rhOwner, s))
	admMust(t, v, rcSuccess, rawCommand(ccPolicyRestart, []uint32{s}, 0, nil))
	admMust(t, v, rcSuccess, rawCommand(ccPolicyCommandCode, []uint32{s}, 0, nil, u32b(ccClear)))
	admMust(t, v, rcAuthUnavailable, rawPolicyCommand(ccClear, []uint32{rhLockout}, s))
}

// TestPrimaryPolicySealRoundTrip checks that the hierarchy policies
// survive Seal and Open and still authorize, that a state sealed before
// they existed opens without policies, and that a sealed policy whose
// digest does not fit its algorithm is refused.
func TestPrimaryPolicySealRoundTrip(t *testing.T) {
	base, err := os.ReadFile(fuzzBaseFile)
	if err != nil {
		t.Fatal(err)
	}
	old, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
	if err != nil {
		t.Fatalf("opening a state sealed before hierarchy policies: %v", err)
	}
	if p := old.s.Policies; p.Owner.Digest != nil || p.Endorsement.Digest != nil || p.Platform.Digest != nil || p.Lockout.Digest != nil {
		t.Errorf("old state: policies %+v", old.s.Policies)
	}
	old.Close()

	// A state without policies encodes as before they existed (so
	// that older versions still open it): no key 85.
	v := newTestTPM(t)
	plain, err := encMode().Marshal(v.s)
	if err != nil {
		t.Fatal(err)
	}
	var top map[int]any
	if err := decMode().Unmarshal(plain, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top[85]; ok {
		t.Errorf("a state without policies encodes key 85")
	}

	admMust(t, v, rcSuccess, setPrimaryPolicy(rhOwner, ccPolicyDigest(algSHA256, ccCreatePrimary), algSHA256))
	admMust(t, v, rcSuccess, setPrimaryPolicy(rhPlatform, bytes.Repeat([]byte{3}, 64), algSHA512))
	admMust(t, v, rcSuccess, setPrimaryPolicy(rhLockout, bytes.Repeat([]byte{4}, 20), algSHA1))
	want := admMust(t, v, rcSuccess, authPoliciesCap(rhOwner, 16))
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := admMust(t, w, rcSuccess, authPoliciesCap(rhOwner, 16)); !bytes.Equal(got, want) {
		t.Errorf("policies after Open:\n%x\nwant\n%x", got, want)
	}
	s := rawPolicySession(t, w, ccCreatePrimary)
	admMust(t, w, rcSuccess, createPrimaryWithPolicy(rhOwner, s))

	for name, p := range map[string]hierPolicy{
		"short digest":   {Alg: algSHA256, Digest: make([]byte, 20)},
		"no algorithm":   {Digest: make([]byte, 32)},
		"not a hash":     {Alg: algAES, Digest: make([]byte, 32)},
		"algorithm only": {Alg: algSHA256},
	} {
		v.s.Policies.Endorsement = p
		blob, err := v.Seal(testKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"}); !errors.Is(err, ErrBadState) {
			t.Errorf("%s: Open: %v, want ErrBadState", name, err)
		}
	}
}

// TestDifferentialPlatformPolicyAtStartup checks on both TPMs that TPM
// Restart (Shutdown(STATE), Startup(CLEAR)) removes the platform policy
// and keeps the owner's, and on the vTPM that TPM Resume keeps both.
func TestDifferentialPlatformPolicyAtStartup(t *testing.T) {
	d := newDual(t)
	pol := ccPolicyDigest(algSHA512, ccCreatePrimary)
	sameResponse(t, d, setPrimaryPolicy(rhPlatform, pol, algSHA512))
	sameResponse(t, d, setPrimaryPolicy(rhOwner, pol, algSHA512))
	sameResponse(t, d, rawCommand(ccShutdown, nil, 0, nil, u16b(suState)))
	powerRestart(t, d.v, suState, suState)
	want := bytesOf(u32b(rhOwner), u16b(algSHA512), pol)
	if got := admMust(t, d.v, rcSuccess, authPoliciesCap(rhOwner, 16)); !bytes.Contains(got, want) || !bytes.Contains(got, bytesOf(u32b(rhPlatform), u16b(algSHA512), pol)) {
		t.Errorf("after TPM Resume: %x", got)
	}
	d.v.Send(rawCommand(ccShutdown, nil, 0, nil, u16b(suState)))
	if err := d.v.PowerCycle(); err != nil {
		t.Fatal(err)
	}
	admMust(t, d.v, rcSuccess, rawCommand(ccStartup, nil, 0, nil, u16b(suClear)))
	if err := d.sim.(interface{ Reset() error }).Reset(); err != nil {
		t.Fatal(err)
	}
	got := sameResponse(t, d, authPoliciesCap(rhOwner, 16))
	if !bytes.Contains(got, want) || !bytes.Contains(got, bytesOf(u32b(rhPlatform), u16b(algNull))) {
		t.Errorf("after TPM Restart: %x", got)
	}
	rsp := sameRC(t, d, rawCommand(ccStartAuthSession, []uint32{rhNull, rhNull}, 0, nil,
		b2b(make([]byte, 16)), b2b(nil), []byte{sePolicy}, u16b(algNull), u16b(algSHA512)))
	s := beU32(rsp[10:])
	sameResponse(t, d, rawCommand(ccPolicyCommandCode, []uint32{s}, 0, nil, u32b(ccCreatePrimary)))
	sameResponse(t, d, createPrimaryWithPolicy(rhPlatform, s))
	if rc := rcOf(sameRC(t, d, createPrimaryWithPolicy(rhOwner, s))); rc != rcSuccess {
		t.Errorf("CreatePrimary with the owner's SHA-512 policy: rc %#x", rc)
	}
}
