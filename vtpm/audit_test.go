package vtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"math/big"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// getAuditDigest sends TPM2_GetSessionAuditDigest for session h with the
// endorsement password pw, unsigned (TPM_RH_NULL).
func getAuditDigest(h uint32, pw []byte) []byte {
	return sessCommand(ccGetSessionAuditDigest, []uint32{rhEndorsement, rhNull, h},
		[][]byte{sessEntry(rsPW, nil, saContinueSession, pw), sessEntry(rsPW, nil, saContinueSession, nil)},
		b2b([]byte("qualifying")), u16b(algNull))
}

// auditInfo parses the TPMS_SESSION_AUDIT_INFO of a successful
// GetSessionAuditDigest response; it also checks the attestation's type.
func auditInfo(rsp []byte) (exclusive bool, digest []byte, ok bool) {
	if rcOf(rsp) != rcSuccess {
		return false, nil, false
	}
	r := newReader(rspParams(rsp[10:], false))
	ar := newReader(r.b2b(maxResponseSize))
	magic, typ := ar.u32(), ar.u16()
	ar.b2b(maxDigestSize + 2) // qualifiedSigner
	ar.b2b(maxDataSize)       // extraData
	ar.bytes(17 + 8)          // clockInfo, firmwareVersion
	ex := ar.u8()
	digest = ar.b2b(maxDigestSize)
	return ex == 1, digest, ar.ok() && ar.empty() && magic == generatedValue && typ == stAttestSessionAudit && ex <= 1
}

// rspSessionAttrs returns the session attributes of a response with one
// session.
func rspSessionAttrs(rsp []byte, rHandle bool) uint8 {
	if rcOf(rsp) != rcSuccess {
		return 0
	}
	r := newReader(rsp[10:])
	if rHandle {
		r.u32()
	}
	r.bytes(int(r.u32()))
	r.b2b(maxDigestSize)
	return r.u8()
}

// auditScenario runs audited commands with deterministic responses with
// the raw session client and returns what it saw: response codes,
// response session attributes, and the session audit digests and
// exclusivity that GetSessionAuditDigest reports.
func auditScenario(t testing.TB, d transport.TPM) []string {
	var out []string
	note := func(what string, rsp []byte, rHandle bool) {
		out = append(out, fmt.Sprintf("%s: rc %#x attrs %#x", what, rcOf(rsp), rspSessionAttrs(rsp, rHandle)))
	}
	digest := func(what string, h uint32) {
		ex, dg, ok := auditInfo(sendOne(d, getAuditDigest(h, nil)))
		out = append(out, fmt.Sprintf("%s: exclusive %v digest %x ok %v", what, ex, dg, ok))
	}
	s := startRawSession(t, d, seHMAC, algNull, 0, algSHA384, rhNull, nil)
	audited := func(what string, attrs uint8, c rawAuthCommand) {
		c.attrs = attrs
		rsp := sendOne(d, s.build(c))
		note(what, rsp, false)
		if rcOf(rsp) == rcSuccess {
			if _, err := s.parse(rsp, c, false); err != nil {
				out = append(out, fmt.Sprintf("%s: %v", what, err))
			}
		}
	}
	hash := rawAuthCommand{cc: ccHash, params: bytesOf(b2b([]byte("audited data")), u16b(algSHA256), u32b(rhNull))}
	extend := rawAuthCommand{cc: ccPCRExtend, handles: []uint32{16}, names: [][]byte{handleBytes(16)},
		params: bytesOf(u32b(1), u16b(algSHA256), bytes.Repeat([]byte{7}, 32))}
	cont, audit := uint8(saContinueSession), uint8(saContinueSession|saAudit)

	// Not an audit session yet.
	digest("before audit", s.handle)
	audited("PCR_Extend, auditExclusive and auditReset without audit", cont|saAuditExclusive|saAuditReset, extend)
	digest("still not audit", s.handle)
	// The first audited command starts the digest and exclusivity,
	// auditExclusive or not.
	audited("Hash, first audit", audit|saAuditExclusive, hash)
	audited("PCR_Extend, audit authorizing", audit, extend)
	audited("Hash, audit exclusive", audit|saAuditExclusive, hash)
	digest("three commands", s.handle)
	// GetSessionAuditDigest ran without the audit session: exclusivity
	// is gone.
	audited("Hash, exclusive after another command", audit|saAuditExclusive, hash)
	audited("Hash, not exclusive", audit, hash)
	digest("four commands", s.handle)
	audited("Hash, reset and exclusive", audit|saAuditReset|saAuditExclusive, hash)
	// A command without sessions that may have some ends exclusivity;
	// one that may not (ContextSave) does not.
	ctx := sendOne(d, rawCommand(ccContextSave, []uint32{s.handle}, 0, nil))
	note("ContextSave", ctx, false)
	if rcOf(ctx) == rcSuccess {
		note("ContextLoad", sendOne(d, rawCommand(ccContextLoad, nil, 0, nil, ctx[10:])), true)
	}
	audited("Hash, exclusive after save and load", audit|saAuditExclusive, hash)
	note("PCR_Read", sendOne(d, rawCommand(ccPCRRead, nil, 0, nil, u32b(0))), false)
	audited("Hash, exclusive after PCR_Read", audit|saAuditExclusive, hash)
	audited("PCR_Extend, reset", audit|saAuditReset, extend)
	digest("after reset", s.handle)
	// A failed command is not audited.
	bad := extend
	bad.hmacAuth = []byte("wrong")
	audited("PCR_Extend, wrong HMAC", audit, bad)
	digest("after a failed command", s.handle)

	// A session bound to an HMAC key stops being bound when it starts
	// auditing: its HMACs then include the key's authValue.
	k := sendOne(d, hmacKeyCmd([]byte("hmac key"), algHMAC, algSHA256, hmacAttrs))
	note("LoadExternal", k, true)
	if rcOf(k) == rcSuccess {
		r := newReader(k[10:])
		kh := r.u32()
		name := bytes.Clone(r.b2b(maxDigestSize + 2))
		b := startRawSession(t, d, seHMAC, algNull, 0, algSHA256, kh, []byte("keypw"))
		for i, tc := range []struct {
			attrs uint8
			auth  []byte
		}{{cont, nil}, {audit, nil}, {cont, nil}, {cont, []byte("keypw")}, {audit, []byte("keypw")}} {
			c := rawAuthCommand{cc: ccHMAC, handles: []uint32{kh}, names: [][]byte{name}, attrs: tc.attrs, hmacAuth: tc.auth,
				params: bytesOf(b2b([]byte("data")), u16b(algNull))}
			rsp := sendOne(d, b.build(c))
			note(fmt.Sprintf("HMAC %d", i), rsp, false)
			if p, err := b.parse(rsp, c, false); err == nil {
				out = append(out, fmt.Sprintf("HMAC %d: %x", i, p))
			}
		}
		digest("bound session", b.handle)
		// Two audit sessions in one command.
		c := rawAuthCommand{cc: ccHash, attrs: audit, params: hash.params, extraBefore: sessEntry(b.handle, b.nonceCaller, audit, nil)}
		note("two audit sessions", sendOne(d, s.build(c)), false)
		sendOne(d, flushHandleCmd(b.handle))
	}
	// A policy session cannot audit, and has no audit digest.
	p := startRawSession(t, d, sePolicy, algNull, 0, algSHA256, rhNull, nil)
	note("policy session audit", sendOne(d, sessCommand(ccHash, nil, [][]byte{sessEntry(p.handle, p.nonceCaller, audit, nil)}, hash.params)), false)
	note("GetSessionAuditDigest of a policy session", sendOne(d, getAuditDigest(p.handle, nil)), false)
	sendOne(d, flushHandleCmd(p.handle))
	// An HMAC session that never audited has none either.
	n := startRawSession(t, d, seHMAC, algNull, 0, algSHA256, rhNull, nil)
	note("GetSessionAuditDigest of a session that never audited", sendOne(d, getAuditDigest(n.handle, nil)), false)
	note("GetSessionAuditDigest of a flushed session", sendOne(d, getAuditDigest(n.handle+1, nil)), false)
	return out
}

// TestDifferentialSessionAudit runs auditScenario on the vTPM and on the
// reference TPM and compares what the client saw, session audit digests
// included, byte for byte.
func TestDifferentialSessionAudit(t *testing.T) {
	a := auditScenario(t, newTestTPM(t))
	b := auditScenario(t, simTPM{getSim(t)})
	if !slices.Equal(a, b) {
		for i := range max(len(a), len(b)) {
			var x, y string
			if i < len(a) {
				x = a[i]
			}
			if i < len(b) {
				y = b[i]
			}
			if x != y {
				t.Errorf("vtpm      %s\nreference %s", x, y)
			}
		}
	}
}

// TestSessionAuditGoTPM runs go-tpm's audit session flow: GetCapability
// audited by an exclusive audit session, the digest computed client-side
// by go-tpm (tpm2.AuditCommand), and GetSessionAuditDigest signed by a
// restricted ECDSA key, whose signature is checked.
func TestSessionAuditGoTPM(t *testing.T) {
	v := newTestTPM(t)
	sess, closeSession, err := tpm2.HMACSession(v, tpm2.TPMAlgSHA256, 16, tpm2.AuditExclusive())
	if err != nil {
		t.Fatal(err)
	}
	defer closeSession()
	tmpl := tpm2.ECCSRKTemplate
	tmpl.ObjectAttributes.Decrypt = false
	tmpl.ObjectAttributes.SignEncrypt = true
	tmpl.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
		CurveID: tpm2.TPMECCNistP256,
	})
	signer, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	audit, err := tpm2.NewAudit(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	for _, prop := range []tpm2.TPMPT{tpm2.TPMPTFamilyIndicator, tpm2.TPMPTManufacturer, tpm2.TPMPTMaxDigest} {
		cmd := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(prop), PropertyCount: 1}
		rsp, err := cmd.Execute(v, sess)
		if err != nil {
			t.Fatalf("GetCapability: %v", err)
		}
		if err := tpm2.AuditCommand(audit, cmd, rsp); err != nil {
			t.Fatal(err)
		}
	}
	rsp, err := tpm2.GetSessionAuditDigest{
		PrivacyAdminHandle: tpm2.TPMRHEndorsement,
		SignHandle:         tpm2.NamedHandle{Handle: signer.ObjectHandle, Name: signer.Name},
		SessionHandle:      sess.Handle(),
		QualifyingData:     tpm2.TPM2BData{Buffer: []byte("nonce")},
	}.Execute(v)
	if err != nil {
		t.Fatalf("GetSessionAuditDigest: %v", err)
	}
	attest, err := rsp.AuditInfo.Contents()
	if err != nil {
		t.Fatal(err)
	}
	info, err := attest.Attested.SessionAudit()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(info.SessionDigest.Buffer, audit.Digest()) || !bool(info.ExclusiveSession) || !bytes.Equal(attest.ExtraData.Buffer, []byte("nonce")) {
		t.Errorf("session audit: digest %x exclusive %v, go-tpm computed %x", info.SessionDigest.Buffer, info.ExclusiveSession, audit.Digest())
	}
	pub, err := signer.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	ep, err := pub.Unique.ECC()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		t.Fatal(err)
	}
	pk := &ecdsa.PublicKey{Curve: curveOf(curveNISTP256), X: new(big.Int).SetBytes(ep.X.Buffer), Y: new(big.Int).SetBytes(ep.Y.Buffer)}
	d := sha256.Sum256(tpm2.Marshal(attest))
	if !ecdsa.Verify(pk, d[:], new(big.Int).SetBytes(sig.SignatureR.Buffer), new(big.Int).SetBytes(sig.SignatureS.Buffer)) {
		t.Error("the session audit attestation's signature does not verify")
	}
}

// TestAuditExclusiveInterleavedCommandRejected: a command that another
// client slips in between two commands of an exclusive audit session,
// without that session, makes the auditor's next command with
// auditExclusive fail with TPM_RC_EXCLUSIVE, and GetSessionAuditDigest
// no longer reports the session as exclusive, so the auditor cannot be
// told that nothing else ran.
func TestAuditExclusiveInterleavedCommandRejected(t *testing.T) {
	for _, interleaved := range []struct {
		name string
		cmd  []byte
	}{
		{"PCR_Extend with a password", rawCommand(ccPCRExtend, []uint32{16}, 1, nil, u32b(0))},
		{"GetRandom without sessions", rawCommand(ccGetRandom, nil, 0, nil, u16b(8))},
	} {
		t.Run(interleaved.name, func(t *testing.T) {
			v := newTestTPM(t)
			s := startRawSession(t, v, seHMAC, algNull, 0, algSHA256, rhNull, nil)
			c := rawAuthCommand{cc: ccHash, attrs: saContinueSession | saAudit | saAuditExclusive,
				params: bytesOf(b2b([]byte("audited")), u16b(algSHA256), u32b(rhNull))}
			for range 2 {
				if _, err := s.parse(sendOne(v, s.build(c)), c, false); err != nil {
					t.Fatal(err)
				}
			}
			admMust(t, v, rcSuccess, interleaved.cmd)
			if rc := rcOf(sendOne(v, s.build(c))); rc != rcExclusive {
				t.Errorf("auditExclusive after an interleaved command: rc %#x, want %#x", rc, rcExclusive)
			}
			if ex, _, ok := auditInfo(sendOne(v, getAuditDigest(s.handle, nil))); !ok || ex {
				t.Errorf("GetSessionAuditDigest: exclusive %v (ok %v), want false", ex, ok)
			}
		})
	}
}

// TestSessionAuditDigestWithoutPrivacyAdminRejected checks that
// GetSessionAuditDigest needs the endorsement hierarchy's authorization
// (the privacy administrator's), not any other hierarchy's, on both TPMs.
func TestSessionAuditDigestWithoutPrivacyAdminRejected(t *testing.T) {
	run := func(tp transport.TPM) []string {
		var out []string
		s := startRawSession(t, tp, seHMAC, algNull, 0, algSHA256, rhNull, nil)
		c := rawAuthCommand{cc: ccHash, attrs: saContinueSession | saAudit, params: bytesOf(b2b(nil), u16b(algSHA256), u32b(rhNull))}
		s.parse(sendOne(tp, s.build(c)), c, false)
		sendOne(tp, rawCommand(ccHierarchyChangeAuth, []uint32{rhEndorsement}, 1, nil, b2b([]byte("privacy admin"))))
		for _, tc := range []struct {
			name string
			cmd  []byte
		}{
			{"no password", getAuditDigest(s.handle, nil)},
			{"wrong password", getAuditDigest(s.handle, []byte("guess"))},
			{"owner instead", sessCommand(ccGetSessionAuditDigest, []uint32{rhOwner, rhNull, s.handle},
				[][]byte{sessEntry(rsPW, nil, saContinueSession, nil), sessEntry(rsPW, nil, saContinueSession, nil)}, b2b(nil), u16b(algNull))},
			{"no authorization", rawCommand(ccGetSessionAuditDigest, []uint32{rhEndorsement, rhNull, s.handle}, 0, nil, b2b(nil), u16b(algNull))},
			{"one authorization", rawCommand(ccGetSessionAuditDigest, []uint32{rhEndorsement, rhNull, s.handle}, 1, []byte("privacy admin"), b2b(nil), u16b(algNull))},
			{"right password", getAuditDigest(s.handle, []byte("privacy admin"))},
		} {
			out = append(out, fmt.Sprintf("%s: %#x", tc.name, rcOf(sendOne(tp, tc.cmd))))
		}
		return out
	}
	a := run(newTestTPM(t))
	want := []string{"no password: 0x9a2", "wrong password: 0x9a2", "owner instead: 0x184", "no authorization: 0x125", "one authorization: 0x125", "right password: 0x0"}
	if !slices.Equal(a, want) {
		t.Errorf("vtpm %q\nwant %q", a, want)
	}
	if b := run(simTPM{getSim(t)}); !slices.Equal(a, b) {
		t.Errorf("vtpm %q\nreference %q", a, b)
	}
}

// auditSeed is the FuzzSend seed of audit sessions
// (testdata/commands/audit.bin): auditScenario recorded on FuzzSend's
// base TPM.
const auditSeed = "audit"

func recordAuditCommands(t *testing.T) {
	recordOnFuzzBase(t, auditSeed, func(d transport.TPM) { auditScenario(t, d) })
}

// TestAuditSeedReplays checks that FuzzSend, replaying the audit seed,
// reaches the audit code as the recording did: its audited commands
// (whose HMACs depend on the nonces of the recording) and
// GetSessionAuditDigest succeed as often as in auditScenario.
func TestAuditSeedReplays(t *testing.T) {
	ccs, rcs := replaySeed(t, auditSeed)
	ok := map[uint32]int{}
	for i, cc := range ccs {
		if rcs[i] == rcSuccess {
			ok[cc]++
		}
	}
	if ok[ccGetSessionAuditDigest] != 5 || ok[ccHMAC] != 4 || ok[ccHash] != 5 {
		t.Errorf("successful commands by code: %v", ok)
	}
}
