package vtpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ccList marshals a TPML_CC.
func ccList(ccs ...uint32) []byte {
	b := u32b(uint32(len(ccs)))
	for _, cc := range ccs {
		b = append(b, u32b(cc)...)
	}
	return b
}

// setAuditCmd is TPM2_SetCommandCodeAuditStatus with a password.
func setAuditCmd(auth uint32, pw []byte, alg uint16, set, clr []uint32) []byte {
	return rawCommand(ccSetCommandCodeAuditStatus, []uint32{auth}, 1, pw, u16b(alg), ccList(set...), ccList(clr...))
}

// getCmdAuditCmd is TPM2_GetCommandAuditDigest with the endorsement
// password pw and the signing key's password signPW; scheme is the
// TPMT_SIG_SCHEME.
func getCmdAuditCmd(sign uint32, pw, signPW, scheme []byte) []byte {
	return sessCommand(ccGetCommandAuditDigest, []uint32{rhEndorsement, sign},
		[][]byte{sessEntry(rsPW, nil, saContinueSession, pw), sessEntry(rsPW, nil, saContinueSession, signPW)},
		b2b([]byte("qualifying")), scheme)
}

// cmdAuditInfo is a parsed TPMS_COMMAND_AUDIT_INFO.
type cmdAuditInfo struct {
	counter       uint64
	alg           uint16
	digest        []byte
	commandDigest []byte
}

func (i cmdAuditInfo) String() string {
	return fmt.Sprintf("counter %d alg %#x digest %x commandDigest %x", i.counter, i.alg, i.digest, i.commandDigest)
}

// parseCmdAuditInfo parses the attestation of a successful
// GetCommandAuditDigest response; it checks the attestation's type and
// returns the attest structure's bytes too.
func parseCmdAuditInfo(rsp []byte) (cmdAuditInfo, []byte, bool) {
	var i cmdAuditInfo
	if rcOf(rsp) != rcSuccess {
		return i, nil, false
	}
	r := newReader(rspParams(rsp[10:], false))
	attest := r.b2b(maxResponseSize)
	ar := newReader(attest)
	magic, typ := ar.u32(), ar.u16()
	ar.b2b(maxDigestSize + 2) // qualifiedSigner
	ar.b2b(maxDataSize)       // extraData
	ar.bytes(17 + 8)          // clockInfo, firmwareVersion
	i.counter = ar.u64()
	i.alg = ar.u16()
	i.digest = ar.b2b(maxDigestSize)
	i.commandDigest = ar.b2b(maxDigestSize)
	return i, attest, ar.ok() && ar.empty() && magic == generatedValue && typ == stAttestCommandAudit
}

// cmdAuditScenario sets the command audit list and algorithm, runs
// audited and unaudited commands with deterministic responses, with and
// without sessions, and bad calls, and returns what a client saw: the
// response codes, the attested command audit fields (not the signatures
// or clocks), TPM_CAP_AUDIT_COMMANDS and TPM_PT_AUDIT_COUNTER_0/1. reset,
// if not nil, performs a TPM Reset.
func cmdAuditScenario(t testing.TB, d transport.TPM, reset func()) []string {
	var out []string
	rc := func(what string, cmd []byte) []byte {
		rsp := sendOne(d, cmd)
		out = append(out, fmt.Sprintf("%s: rc %#x", what, rcOf(rsp)))
		return rsp
	}
	// attest reports the attested fields. The digest of an audited
	// GetCommandAuditDigest holds the TPM's clock and is shown only by
	// its size (clocked).
	attestAs := func(what string, sign uint32, scheme []byte, clocked bool) {
		var pw []byte
		if sign != rhNull {
			pw = []byte("keypw")
		}
		rsp := sendOne(d, getCmdAuditCmd(sign, nil, pw, scheme))
		i, _, ok := parseCmdAuditInfo(rsp)
		if clocked {
			i.digest = make([]byte, len(i.digest))
		}
		out = append(out, fmt.Sprintf("%s: rc %#x %v ok %v", what, rcOf(rsp), i, ok))
	}
	attest := func(what string, sign uint32, scheme []byte) { attestAs(what, sign, scheme, false) }
	unsigned := u16b(algNull)
	capability := func(what string, prop, count uint32) {
		rsp := sendOne(d, rawCommand(ccGetCapability, nil, 0, nil, u32b(capAuditCommands), u32b(prop), u32b(count)))
		var data []byte
		if rcOf(rsp) == rcSuccess {
			data = rsp[10:]
		}
		ctr := sendOne(d, rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(0x213), u32b(2)))
		var ctrData []byte
		if rcOf(ctr) == rcSuccess {
			ctrData = ctr[10:]
		}
		out = append(out, fmt.Sprintf("%s: audit commands %x counter %x", what, data, ctrData))
	}
	hash := rawCommand(ccHash, nil, 0, nil, b2b([]byte("audited data")), u16b(algSHA256), u32b(rhNull))
	extend := rawCommand(ccPCRExtend, []uint32{16}, 1, nil, u32b(1), u16b(algSHA256), bytes.Repeat([]byte{7}, 32))
	read := rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(algSHA256), []byte{3, 0, 0, 1})

	capability("new TPM", 0, 64)
	attest("new TPM", rhNull, unsigned)
	rc("Hash, not audited", hash)
	attest("after an unaudited command", rhNull, unsigned)

	// The signing key: an HMAC key, the same on both TPMs.
	k := rc("LoadExternal", hmacKeyCmd([]byte("attestation key"), algHMAC, algSHA256, hmacAttrs))
	key := uint32(0)
	if rcOf(k) == rcSuccess {
		kr := newReader(k[10:])
		key = kr.u32()
	}

	// Shutdown and unimplemented codes are ignored.
	rc("set Hash, PCR_Extend, Shutdown, 0x1FF, 0x20000001", setAuditCmd(rhOwner, nil, algNull, []uint32{ccHash, ccPCRExtend, ccShutdown, 0x1FF, 0x20000001}, nil))
	capability("after set", 0, 64)
	capability("from PCR_Extend, one", ccPCRExtend, 1)
	capability("from 0x141", 0x141, 64)
	capability("vendor", 1<<29, 64)
	attest("after set", rhNull, unsigned)
	rc("Hash", hash)
	rc("PCR_Extend with a password", extend)
	rc("PCR_Read, not audited", read)
	attest("unsigned, digest kept", rhNull, unsigned)
	attest("unsigned again", rhNull, unsigned)
	rc("Hash, bad algorithm (not audited)", rawCommand(ccHash, nil, 0, nil, b2b(nil), u16b(algRSA), u32b(rhNull)))
	attest("after a failed command", rhNull, unsigned)
	attest("signed: the digest is reset", key, bytesOf(u16b(algHMAC), u16b(algSHA256)))
	attest("after the reset", rhNull, unsigned)
	rc("Hash starts a new digest", hash)
	attest("new digest", rhNull, unsigned)

	// Changing the algorithm empties the digest; the command is not
	// audited. The same algorithm is no change.
	rc("algorithm and list together", setAuditCmd(rhOwner, nil, algSHA256, []uint32{ccPCRRead}, nil))
	rc("algorithm and clear list together", setAuditCmd(rhOwner, nil, algSHA256, nil, []uint32{ccHash}))
	rc("the same algorithm and a list", setAuditCmd(rhOwner, nil, algSHA512, []uint32{ccHMAC}, nil))
	attest("same algorithm", rhNull, unsigned)
	rc("SHA-256", setAuditCmd(rhPlatform, nil, algSHA256, nil, nil))
	attest("after SHA-256", rhNull, unsigned)
	rc("PCR_Read, not audited", read)
	rc("HMAC", hmacCmd(key, []byte("data"), algNull))
	rc("PCR_Extend", extend)
	attest("SHA-256 digest", rhNull, unsigned)
	// The list: clear Hash and SetCommandCodeAuditStatus (which stays),
	// audit GetCommandAuditDigest itself.
	rc("clear Hash and SetCommandCodeAuditStatus, set GetCommandAuditDigest",
		setAuditCmd(rhOwner, nil, algNull, []uint32{ccGetCommandAuditDigest}, []uint32{ccHash, ccSetCommandCodeAuditStatus}))
	capability("after clear", 0, 64)
	rc("Hash, no longer audited", hash)
	attest("GetCommandAuditDigest audited", rhNull, unsigned)
	attestAs("signed and audited", key, bytesOf(u16b(algHMAC), u16b(algSHA256)), true)
	attestAs("after signed and audited", rhNull, unsigned, true)
	rc("SHA-1", setAuditCmd(rhOwner, nil, algSHA1, nil, nil))
	rc("clear GetCommandAuditDigest", setAuditCmd(rhOwner, nil, algNull, nil, []uint32{ccGetCommandAuditDigest}))
	attest("SHA-1 digest", rhNull, unsigned)

	// Bad calls.
	rc("endorsement handle", setAuditCmd(rhEndorsement, nil, algNull, []uint32{ccHash}, nil))
	rc("lockout handle", setAuditCmd(rhLockout, nil, algNull, []uint32{ccHash}, nil))
	rc("no authorization", rawCommand(ccSetCommandCodeAuditStatus, []uint32{rhOwner}, 0, nil, u16b(algNull), ccList(ccHash), ccList()))
	rc("RSA as audit algorithm", setAuditCmd(rhOwner, nil, algRSA, nil, nil))
	rc("setList too long", setAuditCmd(rhOwner, nil, algNull, make([]uint32, maxCapCC+1), nil))
	rc("clearList too long", setAuditCmd(rhOwner, nil, algNull, nil, make([]uint32, maxCapCC+1)))
	rc("clearList truncated", rawCommand(ccSetCommandCodeAuditStatus, []uint32{rhOwner}, 1, nil, u16b(algNull), ccList(), u32b(2), u32b(ccHash)))
	rc("trailing bytes", rawCommand(ccSetCommandCodeAuditStatus, []uint32{rhOwner}, 1, nil, u16b(algNull), ccList(), ccList(), []byte{0}))
	rc("GetCommandAuditDigest, owner", sessCommand(ccGetCommandAuditDigest, []uint32{rhOwner, rhNull},
		[][]byte{sessEntry(rsPW, nil, saContinueSession, nil), sessEntry(rsPW, nil, saContinueSession, nil)}, b2b(nil), unsigned))
	rc("GetCommandAuditDigest, one authorization", rawCommand(ccGetCommandAuditDigest, []uint32{rhEndorsement, rhNull}, 1, nil, b2b(nil), unsigned))
	rc("GetCommandAuditDigest, no authorization", rawCommand(ccGetCommandAuditDigest, []uint32{rhEndorsement, rhNull}, 0, nil, b2b(nil), unsigned))
	rc("GetCommandAuditDigest, wrong key password", getCmdAuditCmd(key, nil, []byte("guess"), unsigned))
	rc("GetCommandAuditDigest, extraData too long", sessCommand(ccGetCommandAuditDigest, []uint32{rhEndorsement, rhNull},
		[][]byte{sessEntry(rsPW, nil, saContinueSession, nil), sessEntry(rsPW, nil, saContinueSession, nil)}, b2b(make([]byte, 65)), unsigned))
	rc("GetCommandAuditDigest, bad scheme", getCmdAuditCmd(key, nil, []byte("keypw"), bytesOf(u16b(algRSASSA), u16b(algSHA256))))
	rc("GetCommandAuditDigest, no such key", getCmdAuditCmd(transientFirst+2, nil, nil, unsigned))
	attest("after bad calls", rhNull, unsigned)

	// TPM2_Clear sets the counter to zero and keeps the rest.
	rc("Clear", rawCommand(ccClear, []uint32{rhLockout}, 1, nil))
	capability("after Clear", 0, 64)
	attest("after Clear", rhNull, unsigned)
	if reset != nil {
		// TPM Reset empties the digest and keeps the counter.
		rc("PCR_Extend before reset", extend)
		reset()
		capability("after TPM Reset", 0, 64)
		attest("after TPM Reset", rhNull, unsigned)
		rc("PCR_Extend after reset", extend)
		attest("after TPM Reset and a command", rhNull, unsigned)
	}
	return out
}

// TestDifferentialCommandAudit runs cmdAuditScenario on the vTPM and on
// the reference TPM and compares what the client saw: response codes,
// the attested audit counter, algorithm, audit digest and command digest,
// and the capabilities.
func TestDifferentialCommandAudit(t *testing.T) {
	v := newTestTPM(t)
	a := cmdAuditScenario(t, v, func() { powerRestart(t, v, suClear, suClear) })
	sim := getSim(t)
	b := cmdAuditScenario(t, simTPM{sim}, func() {
		if err := sim.Reset(); err != nil {
			t.Fatal(err)
		}
	})
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

// TestCommandAuditListChangeWithoutAuthRefused: an administrator without
// the owner's or the platform's authorization cannot drop a command from
// the audit list (or change the algorithm, which would empty the
// digest): the command fails as on the reference TPM, and the list, the
// digest and the counter are unchanged.
func TestCommandAuditListChangeWithoutAuthRefused(t *testing.T) {
	run := func(tp transport.TPM) []string {
		var out []string
		sendOne(tp, setAuditCmd(rhOwner, nil, algNull, []uint32{ccPCRExtend}, nil))
		sendOne(tp, rawCommand(ccPCRExtend, []uint32{16}, 1, nil, u32b(1), u16b(algSHA256), bytes.Repeat([]byte{7}, 32)))
		sendOne(tp, rawCommand(ccHierarchyChangeAuth, []uint32{rhOwner}, 1, nil, b2b([]byte("owner"))))
		sendOne(tp, rawCommand(ccHierarchyChangeAuth, []uint32{rhEndorsement}, 1, nil, b2b([]byte("privacy admin"))))
		state := func() string {
			i, _, ok := parseCmdAuditInfo(sendOne(tp, getCmdAuditCmd(rhNull, []byte("privacy admin"), nil, u16b(algNull))))
			rsp := sendOne(tp, rawCommand(ccGetCapability, nil, 0, nil, u32b(capAuditCommands), u32b(0), u32b(64)))
			return fmt.Sprintf("%v ok %v list %x", i, ok, rsp)
		}
		before := state()
		for _, tc := range []struct {
			name string
			cmd  []byte
		}{
			{"drop, no password", setAuditCmd(rhOwner, nil, algNull, nil, []uint32{ccPCRExtend})},
			{"drop, wrong password", setAuditCmd(rhOwner, []byte("guess"), algNull, nil, []uint32{ccPCRExtend})},
			{"drop, endorsement's password", setAuditCmd(rhEndorsement, []byte("privacy admin"), algNull, nil, []uint32{ccPCRExtend})},
			{"drop, no session", rawCommand(ccSetCommandCodeAuditStatus, []uint32{rhOwner}, 0, nil, u16b(algNull), ccList(), ccList(ccPCRExtend))},
			{"algorithm, wrong password", setAuditCmd(rhOwner, []byte("guess"), algSHA256, nil, nil)},
		} {
			out = append(out, fmt.Sprintf("%s: %#x", tc.name, rcOf(sendOne(tp, tc.cmd))))
		}
		if after := state(); after != before {
			out = append(out, fmt.Sprintf("audit state changed:\n%s\n%s", before, after))
		}
		return out
	}
	a := run(newTestTPM(t))
	want := []string{"drop, no password: 0x9a2", "drop, wrong password: 0x9a2", "drop, endorsement's password: 0x184",
		"drop, no session: 0x125", "algorithm, wrong password: 0x9a2"}
	if !slices.Equal(a, want) {
		t.Errorf("vtpm %q\nwant %q", a, want)
	}
	if b := run(simTPM{getSim(t)}); !slices.Equal(a, b) {
		t.Errorf("vtpm %q\nreference %q", a, b)
	}
}

// auditedCommand splits a command into its code, handle area and the
// parameters as sent, given its number of handles.
func auditedCommand(cmd []byte, nh int) (cc uint32, handles []uint32, params []byte) {
	r := newReader(cmd)
	tag := r.u16()
	r.u32()
	cc = r.u32()
	for range nh {
		handles = append(handles, r.u32())
	}
	if tag == stSessions {
		r.bytes(int(r.u32()))
	}
	return cc, handles, r.rest()
}

// responseParams returns the parameters of a successful response.
func responseParams(rsp []byte, rHandle bool) []byte {
	b := rsp[10:]
	if rHandle {
		b = b[4:]
	}
	if binary16(rsp) == stSessions {
		return rspParams(b, false)
	}
	return b
}

func binary16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

// TestAuditedCommandMissingFromDigestDetected: an audited command that
// left no trace in the audit digest would let its effect go unseen by the
// verifier. Each kind of audited command (without sessions, with a
// password, with an HMAC session that encrypts its parameter, with a
// response handle, one that may have no sessions) must move the digest to
// exactly H(digest || cpHash || rpHash) as the client computes it from
// the bytes it sent and received; a failed audited command must not move
// it.
func TestAuditedCommandMissingFromDigestDetected(t *testing.T) {
	v := newTestTPM(t)
	admMust(t, v, rcSuccess, setAuditCmd(rhOwner, nil, algSHA256, nil, nil))
	admMust(t, v, rcSuccess, setAuditCmd(rhOwner, nil, algNull, []uint32{ccHash, ccPCRExtend, ccLoadExternal, ccContextSave, ccGetRandom}, nil))
	digest := func() []byte {
		i, _, ok := parseCmdAuditInfo(sendOne(v, getCmdAuditCmd(rhNull, nil, nil, u16b(algNull))))
		if !ok {
			t.Fatal("GetCommandAuditDigest failed")
		}
		return i.digest
	}
	s := startRawSession(t, v, seHMAC, algAES, 128, algSHA256, rhNull, nil)
	enc := s.build(rawAuthCommand{cc: ccHash, attrs: saContinueSession | saDecrypt,
		params: bytesOf(b2b([]byte("secret data")), u16b(algSHA256), u32b(rhNull))})
	for _, tc := range []struct {
		name    string
		cmd     []byte
		nh      int
		names   [][]byte
		rHandle bool
	}{
		{"no sessions", rawCommand(ccHash, nil, 0, nil, b2b([]byte("data")), u16b(algSHA256), u32b(rhNull)), 0, nil, false},
		{"password", rawCommand(ccPCRExtend, []uint32{16}, 1, nil, u32b(1), u16b(algSHA256), bytes.Repeat([]byte{7}, 32)), 1, [][]byte{handleBytes(16)}, false},
		{"HMAC session, encrypted parameter", enc, 0, nil, false},
		{"response handle", hmacKeyCmd([]byte("key"), algHMAC, algSHA256, hmacAttrs), 0, nil, true},
		{"random response", rawCommand(ccGetRandom, nil, 0, nil, u16b(16)), 0, nil, false},
		{"no sessions allowed", rawCommand(ccContextSave, []uint32{transientFirst}, 0, nil), 1, nil, false},
	} {
		before := digest()
		rsp := sendOne(v, tc.cmd)
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("%s: rc %#x", tc.name, rcOf(rsp))
		}
		cc, handles, params := auditedCommand(tc.cmd, tc.nh)
		names := tc.names
		if cc == ccContextSave {
			// The loaded key's Name, read back.
			p := admMust(t, v, rcSuccess, rawCommand(ccReadPublic, handles, 0, nil))
			r := newReader(p)
			r.b2b(maxResponseSize)
			names = [][]byte{r.b2b(maxDigestSize + 2)}
		}
		h := sha256.New()
		h.Write(u32b(cc))
		for _, n := range names {
			h.Write(n)
		}
		h.Write(params)
		cpHash := h.Sum(nil)
		h.Reset()
		h.Write(u32b(0))
		h.Write(u32b(cc))
		h.Write(responseParams(rsp, tc.rHandle))
		rpHash := h.Sum(nil)
		h.Reset()
		h.Write(before)
		h.Write(cpHash)
		h.Write(rpHash)
		if got, want := digest(), h.Sum(nil); !bytes.Equal(got, want) {
			t.Errorf("%s: digest %x, want %x", tc.name, got, want)
		}
	}
	before := digest()
	if rc := rcOf(sendOne(v, rawCommand(ccPCRExtend, []uint32{16}, 1, []byte("wrong"), u32b(1), u16b(algSHA256), bytes.Repeat([]byte{7}, 32)))); rc == rcSuccess {
		t.Fatal("PCR_Extend with a wrong password succeeded")
	}
	if got := digest(); !bytes.Equal(got, before) {
		t.Errorf("a failed audited command changed the digest from %x to %x", before, got)
	}
}

// TestCommandAuditGoTPM checks a command audit digest against go-tpm's
// client-side computation (tpm2.AuditCommand) of commands run with go-tpm,
// and the ECDSA signature of the attestation.
func TestCommandAuditGoTPM(t *testing.T) {
	v := newTestTPM(t)
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
	admMust(t, v, rcSuccess, setAuditCmd(rhOwner, nil, algNull, []uint32{ccGetRandom, ccPCRExtend, ccGetCapability}, nil))
	// A signed digest empties it: go-tpm's digest starts from there.
	getSigned := func() (cmdAuditInfo, []byte, []byte) {
		rsp := sendOne(v, getCmdAuditCmd(uint32(signer.ObjectHandle), nil, nil, u16b(algNull)))
		i, attest, ok := parseCmdAuditInfo(rsp)
		if !ok {
			t.Fatalf("GetCommandAuditDigest: rc %#x", rcOf(rsp))
		}
		r := newReader(rspParams(rsp[10:], false))
		r.b2b(maxResponseSize)
		return i, attest, r.rest()
	}
	first, _, _ := getSigned()
	audit, err := tpm2.NewAudit(tpm2.TPMAlgSHA512)
	if err != nil {
		t.Fatal(err)
	}
	pcr := tpm2.PCRExtend{PCRHandle: tpm2.AuthHandle{Handle: 16, Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: bytes.Repeat([]byte{1}, 32)}}}}
	pcrRsp, err := pcr.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm2.AuditCommand(audit, pcr, pcrRsp); err != nil {
		t.Fatal(err)
	}
	rnd := tpm2.GetRandom{BytesRequested: 32}
	rndRsp, err := rnd.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm2.AuditCommand(audit, rnd, rndRsp); err != nil {
		t.Fatal(err)
	}
	sess, closeSession, err := tpm2.HMACSession(v, tpm2.TPMAlgSHA256, 16, tpm2.Audit())
	if err != nil {
		t.Fatal(err)
	}
	defer closeSession()
	gc := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTFamilyIndicator), PropertyCount: 1}
	gcRsp, err := gc.Execute(v, sess)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm2.AuditCommand(audit, gc, gcRsp); err != nil {
		t.Fatal(err)
	}
	info, attest, sigBytes := getSigned()
	if info.counter != first.counter+1 || info.alg != algSHA512 || !bytes.Equal(info.digest, audit.Digest()) {
		t.Errorf("attested %v; want counter %d, SHA-512, digest %x", info, first.counter+1, audit.Digest())
	}
	h := crypto.SHA512.New()
	for _, cc := range slices.Sorted(slices.Values([]uint32{ccPCRExtend, ccGetRandom, ccSetCommandCodeAuditStatus, ccGetCapability})) {
		h.Write(u32b(cc))
	}
	if !bytes.Equal(info.commandDigest, h.Sum(nil)) {
		t.Errorf("commandDigest %x, want %x", info.commandDigest, h.Sum(nil))
	}
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		t.Fatal(err)
	}
	ecc, err := sig.Signature.ECDSA()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signer.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	ep, err := pub.Unique.ECC()
	if err != nil {
		t.Fatal(err)
	}
	pk := &ecdsa.PublicKey{Curve: curveOf(curveNISTP256), X: new(big.Int).SetBytes(ep.X.Buffer), Y: new(big.Int).SetBytes(ep.Y.Buffer)}
	d := sha256.Sum256(attest)
	if !ecdsa.Verify(pk, d[:], new(big.Int).SetBytes(ecc.SignatureR.Buffer), new(big.Int).SetBytes(ecc.SignatureS.Buffer)) {
		t.Error("the command audit attestation's signature does not verify")
	}
}

// TestCommandAuditAcrossStartup checks the lifecycle of the audit state
// (CommandAuditStartup in the reference implementation): the digest
// survives TPM Resume and TPM Restart, TPM Reset (also after a power
// loss) empties it, and the list, the algorithm and the counter survive
// all of them.
func TestCommandAuditAcrossStartup(t *testing.T) {
	v := newTestTPM(t)
	admMust(t, v, rcSuccess, setAuditCmd(rhOwner, nil, algSHA256, nil, nil))
	admMust(t, v, rcSuccess, setAuditCmd(rhOwner, nil, algNull, []uint32{ccGetRandom}, nil))
	info := func() cmdAuditInfo {
		i, _, ok := parseCmdAuditInfo(sendOne(v, getCmdAuditCmd(rhNull, nil, nil, u16b(algNull))))
		if !ok {
			t.Fatal("GetCommandAuditDigest failed")
		}
		return i
	}
	before := info()
	if before.counter != 1 || len(before.digest) != 32 {
		t.Fatalf("after SetCommandCodeAuditStatus: %v", before)
	}
	for _, tc := range []struct {
		name              string
		shutdown, startup uint16
		keep              bool
	}{
		{"resume", suState, suState, true},
		{"restart", suState, suClear, true},
		{"reset", suClear, suClear, false},
	} {
		before := info()
		powerRestart(t, v, tc.shutdown, tc.startup)
		got := info()
		if got.counter != before.counter || got.alg != algSHA256 || !bytes.Equal(got.commandDigest, before.commandDigest) {
			t.Errorf("%s: %v, before %v", tc.name, got, before)
		}
		if keep := bytes.Equal(got.digest, before.digest); keep != tc.keep || !tc.keep && len(got.digest) != 0 {
			t.Errorf("%s: digest %x, before %x", tc.name, got.digest, before.digest)
		}
		admMust(t, v, rcSuccess, rawCommand(ccGetRandom, nil, 0, nil, u16b(8)))
	}
	// A power loss without Shutdown is a TPM Reset.
	if err := v.PowerCycle(); err != nil {
		t.Fatal(err)
	}
	admMust(t, v, rcSuccess, rawCommand(ccStartup, nil, 0, nil, u16b(suClear)))
	if got := info(); len(got.digest) != 0 || got.counter != 2 {
		t.Errorf("after a power loss: %v", got)
	}
	// Startup itself can be audited.
	admMust(t, v, rcSuccess, setAuditCmd(rhOwner, nil, algNull, []uint32{ccStartup}, nil))
	powerRestart(t, v, suClear, suClear)
	if got := info(); len(got.digest) != 32 || got.counter != 4 {
		t.Errorf("after an audited Startup: %v", got)
	}
}

// TestCommandAuditSealRoundTrip checks that the list, the algorithm, the
// counter and the digest survive Seal and Open, that a state sealed
// before command audit existed opens with a new TPM's audit state, and
// that Open refuses a malformed audit state.
func TestCommandAuditSealRoundTrip(t *testing.T) {
	v := newTestTPM(t)
	state := func(v *TPM) string {
		i, _, ok := parseCmdAuditInfo(sendOne(v, getCmdAuditCmd(rhNull, nil, nil, u16b(algNull))))
		capa := sendOne(v, rawCommand(ccGetCapability, nil, 0, nil, u32b(capAuditCommands), u32b(0), u32b(64)))
		ctr := sendOne(v, rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(0x213), u32b(2)))
		return fmt.Sprintf("%v ok %v list %x counter %x", i, ok, capa, ctr)
	}
	fresh := state(v)
	admMust(t, v, rcSuccess, setAuditCmd(rhOwner, nil, algSHA1, nil, nil))
	admMust(t, v, rcSuccess, setAuditCmd(rhOwner, nil, algNull, []uint32{ccGetRandom, ccHash}, nil))
	admMust(t, v, rcSuccess, rawCommand(ccGetRandom, nil, 0, nil, u16b(8)))
	want := state(v)
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := state(w); got != want {
		t.Errorf("after Seal and Open:\n%s\nwant\n%s", got, want)
	}

	// The fuzz base was sealed before command audit existed.
	base, err := loadFuzzBase()
	if err != nil {
		t.Fatal(err)
	}
	old, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got := state(old); got != fresh {
		t.Errorf("a state sealed before command audit:\n%s\nwant a new TPM's\n%s", got, fresh)
	}

	for _, tc := range []struct {
		name  string
		audit commandAudit
	}{
		{"digest of the wrong size", commandAudit{Alg: algSHA256, Digest: make([]byte, 20)}},
		{"not a hash", commandAudit{Alg: algRSA}},
		{"unimplemented command", commandAudit{Commands: []uint32{0x1FF}}},
		{"Shutdown", commandAudit{Commands: []uint32{ccShutdown}}},
		{"SetCommandCodeAuditStatus", commandAudit{Commands: []uint32{ccSetCommandCodeAuditStatus}}},
		{"unsorted", commandAudit{Commands: []uint32{ccHash, ccGetRandom}}},
		{"duplicate", commandAudit{Commands: []uint32{ccHash, ccHash}}},
	} {
		b := newTestTPM(t)
		b.s.Audit = tc.audit
		blob, err := b.Seal(testKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"}); !errors.Is(err, ErrBadState) {
			t.Errorf("%s: Open: %v, want ErrBadState", tc.name, err)
		}
	}
}

// cmdAuditSeed is the FuzzSend seed of command audit
// (testdata/commands/cmdaudit.bin): cmdAuditScenario recorded on
// FuzzSend's base TPM.
const cmdAuditSeed = "cmdaudit"

func recordCmdAuditCommands(t *testing.T) {
	recordOnFuzzBase(t, cmdAuditSeed, func(d transport.TPM) { cmdAuditScenario(t, d, nil) })
}

// TestCmdAuditSeedReplays checks that FuzzSend, replaying the command
// audit seed, reaches the command audit code as the recording did.
func TestCmdAuditSeedReplays(t *testing.T) {
	ccs, rcs := replaySeed(t, cmdAuditSeed)
	ok := map[uint32]int{}
	for i, cc := range ccs {
		if rcs[i] == rcSuccess {
			ok[cc]++
		}
	}
	if ok[ccGetCommandAuditDigest] != 19 || ok[ccSetCommandCodeAuditStatus] != 6 || ok[ccClear] != 1 {
		t.Errorf("successful commands by code: %v", ok)
	}
}
