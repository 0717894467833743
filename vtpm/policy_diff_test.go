package vtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// policyDual sends every command to the vTPM and to the reference TPM. The
// response codes must agree; the whole responses of the policy commands,
// which hold digests, tickets and no random values, must be identical.
type policyDual struct {
	t    *testing.T
	d    *dual
	sent int
}

func newPolicyDual(t *testing.T) *policyDual { return &policyDual{t: t, d: newDual(t)} }

var policyCommands = map[uint32]bool{
	ccPolicySigned: true, ccPolicySecret: true, ccPolicyTicket: true, ccPolicyOR: true, ccPolicyPCR: true,
	ccPolicyLocality: true, ccPolicyNV: true, ccPolicyCounterTimer: true, ccPolicyCommandCode: true,
	ccPolicyCpHash: true, ccPolicyNameHash: true, ccPolicyAuthorize: true, ccPolicyAuthValue: true,
	ccPolicyPassword: true, ccPolicyGetDigest: true, ccPolicyNvWritten: true, ccPolicyAuthorizeNV: true,
	ccPolicyRestart: true, ccPolicyPhysPresence: true, ccPolicyDupSelect: true, ccPolicyTemplate: true,
}

func (p *policyDual) Send(cmd []byte) ([]byte, error) {
	p.sent++
	a, err := p.d.v.Send(cmd)
	if err != nil {
		return nil, err
	}
	b := simSend(p.d.sim, cmd)
	switch {
	case rcOf(a) != rcOf(b):
		p.t.Errorf("command %#x: vtpm rc %#x, reference rc %#x", ccOf(cmd), rcOf(a), rcOf(b))
	case (policyCommands[ccOf(cmd)] || deterministic[ccOf(cmd)]) && !bytes.Equal(maskCounter(cmd, a), maskCounter(cmd, b)):
		p.t.Errorf("command %#x: responses differ\nvtpm      %x\nreference %x", ccOf(cmd), a, b)
	}
	return a, nil
}

var _ transport.TPM = (*policyDual)(nil)

// send sends raw bytes through the dual and returns the vTPM's code.
func (p *policyDual) send(cmd []byte) uint32 {
	rsp, _ := p.Send(cmd)
	return rcOf(rsp)
}

func startSession(t testing.TB, tp transport.TPM, typ tpm2.TPMSE, alg tpm2.TPMIAlgHash) uint32 {
	t.Helper()
	rsp, err := tpm2.StartAuthSession{
		TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull,
		NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 20)},
		SessionType: typ,
		Symmetric:   tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		AuthHash:    alg,
	}.Execute(tp)
	if err != nil {
		t.Fatalf("StartAuthSession: %v", err)
	}
	return uint32(rsp.SessionHandle)
}

// policyFixture defines what the policy commands refer to, identically on
// both TPMs: a public signing key loaded into the owner hierarchy and two
// NV indices.
type policyFixture struct {
	keyH    uint32
	keyName []byte
	nvIdx   uint32
	nvName  []byte
	polIdx  uint32
}

func newPolicyFixture(t *testing.T, p *policyDual) policyFixture {
	t.Helper()
	auth := newAuthorityFromSeed(t)
	rsp, err := tpm2.LoadExternal{InPublic: tpm2.New2B(auth), Hierarchy: tpm2.TPMRHOwner}.Execute(p)
	if err != nil {
		t.Fatalf("LoadExternal: %v", err)
	}
	f := policyFixture{keyH: uint32(rsp.ObjectHandle), keyName: rsp.Name.Buffer, nvIdx: 0x01500030, polIdx: 0x01500031}
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	for _, x := range []struct {
		idx  uint32
		size uint16
	}{{f.nvIdx, 8}, {f.polIdx, 34}} {
		if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: tpm2.TPMHandle(x.idx), NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, AuthWrite: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
			DataSize:   x.size,
		})}).Execute(p); err != nil {
			t.Fatalf("NV_DefineSpace: %v", err)
		}
	}
	p.send(rawCommand(ccNVWrite, []uint32{rhOwner, f.nvIdx}, 1, nil, b2b([]byte{0, 0, 0, 0, 0, 0, 0, 5}), u16b(0)))
	nv, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(f.nvIdx)}.Execute(p)
	if err != nil {
		t.Fatal(err)
	}
	f.nvName = nv.NVName.Buffer
	return f
}

// newAuthorityFromSeed returns the public area of a fixed ECC P-256
// signing key (the same on both TPMs).
func newAuthorityFromSeed(t *testing.T) tpm2.TPMTPublic {
	x, _ := bytesFromHex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296")
	y, _ := bytesFromHex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{SignEncrypt: true, UserWithAuth: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}}),
	}
}

func bytesFromHex(s string) ([]byte, error) {
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				v |= byte(c-'a') + 10
			}
		}
		b[i] = v
	}
	return b, nil
}

// policyStep is one policy command of a chain: its code, its handles
// (0 stands for the session) and parameters, and whether it carries a
// password authorization for its first handle.
type policyStep struct {
	cc      uint32
	handles []uint32
	auth    bool
	params  [][]byte
}

func (s policyStep) command(session uint32) []byte {
	hs := make([]uint32, len(s.handles))
	for i, h := range s.handles {
		if h == 0 {
			h = session
		}
		hs[i] = h
	}
	n := 0
	if s.auth {
		n = 1
	}
	return rawCommand(s.cc, hs, n, nil, s.params...)
}

func pcrSel(alg uint16, pcrs ...int) []byte {
	var bits [3]byte
	for _, i := range pcrs {
		bits[i/8] |= 1 << (i % 8)
	}
	return bytesOf(u32b(1), u16b(alg), []byte{3}, bits[:])
}

// policySteps lists one step of each policy command, with the arguments
// that a trial session accepts.
func policySteps(f policyFixture, alg uint16) map[string]policyStep {
	sig := bytesOf(u16b(algECDSA), u16b(algSHA256), b2b(make([]byte, 32)), b2b(make([]byte, 32)))
	null := bytesOf(u16b(stVerified), u32b(rhNull), u16b(0))
	cp := digestOf(alg, []byte("cpHash"))
	return map[string]policyStep{
		"PolicyPCR current":       {ccPolicyPCR, []uint32{0}, false, [][]byte{b2b(nil), pcrSel(algSHA256, 0, 7, 16)}},
		"PolicyPCR sha1 bank":     {ccPolicyPCR, []uint32{0}, false, [][]byte{b2b(nil), pcrSel(algSHA1, 1, 2, 3)}},
		"PolicyPCR given digest":  {ccPolicyPCR, []uint32{0}, false, [][]byte{b2b(cp[:]), pcrSel(algSHA256, 7)}},
		"PolicySecret owner":      {ccPolicySecret, []uint32{rhOwner, 0}, true, [][]byte{b2b(nil), b2b(nil), b2b(nil), u32b(0)}},
		"PolicySecret endorse":    {ccPolicySecret, []uint32{rhEndorsement, 0}, true, [][]byte{b2b(nil), b2b(nil), b2b([]byte("ref")), u32b(0)}},
		"PolicySecret nv expire":  {ccPolicySecret, []uint32{f.nvIdx, 0}, true, [][]byte{b2b(nil), b2b(cp[:]), b2b(nil), u32b(0xFFFFFF00)}},
		"PolicySigned":            {ccPolicySigned, []uint32{f.keyH, 0}, false, [][]byte{b2b(nil), b2b(nil), b2b([]byte("ref")), u32b(0), sig}},
		"PolicyAuthValue":         {ccPolicyAuthValue, []uint32{0}, false, nil},
		"PolicyPassword":          {ccPolicyPassword, []uint32{0}, false, nil},
		"PolicyCommandCode":       {ccPolicyCommandCode, []uint32{0}, false, [][]byte{u32b(ccUnseal)}},
		"PolicyCpHash":            {ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp[:])}},
		"PolicyNameHash":          {ccPolicyNameHash, []uint32{0}, false, [][]byte{b2b(cp[:])}},
		"PolicyLocality 0-2":      {ccPolicyLocality, []uint32{0}, false, [][]byte{{0x07}}},
		"PolicyLocality extended": {ccPolicyLocality, []uint32{0}, false, [][]byte{{0x40}}},
		"PolicyCounterTimer":      {ccPolicyCounterTimer, []uint32{0}, false, [][]byte{b2b(u32b(7)), u16b(8), u16b(eoUnsignedGE)}},
		"PolicyNV":                {ccPolicyNV, []uint32{f.nvIdx, f.nvIdx, 0}, true, [][]byte{b2b([]byte{5}), u16b(7), u16b(eoEQ)}},
		"PolicyNvWritten":         {ccPolicyNvWritten, []uint32{0}, false, [][]byte{{1}}},
		"PolicyAuthorize":         {ccPolicyAuthorize, []uint32{0}, false, [][]byte{b2b(nil), b2b([]byte("ref")), b2b(f.keyName), null}},
		"PolicyAuthorizeNV":       {ccPolicyAuthorizeNV, []uint32{rhOwner, f.polIdx, 0}, true, nil},
		"PolicyRestart":           {ccPolicyRestart, []uint32{0}, false, nil},
		"PolicyPhysicalPresence":  {ccPolicyPhysPresence, []uint32{0}, false, nil},
		"PolicyDuplicationSelect": {ccPolicyDupSelect, []uint32{0}, false, [][]byte{b2b(f.keyName), b2b(f.nvName), {1}}},
		"PolicyDupSelect no obj":  {ccPolicyDupSelect, []uint32{0}, false, [][]byte{b2b(f.keyName), b2b(f.nvName), {0}}},
		"PolicyTemplate":          {ccPolicyTemplate, []uint32{0}, false, [][]byte{b2b(cp)}},
	}
}

func policyDigestOf(t *testing.T, p *policyDual, session uint32) []byte {
	t.Helper()
	rsp, _ := p.Send(rawCommand(ccPolicyGetDigest, []uint32{session}, 0, nil))
	if rcOf(rsp) != rcSuccess {
		t.Fatalf("PolicyGetDigest: rc %#x", rcOf(rsp))
	}
	return rsp[12:]
}

// TestDifferentialPolicyTrialDigests computes, in trial sessions of every
// hash, the digest of each policy command alone and of chains of them, and
// compares every response with the reference TPM's byte for byte.
func TestDifferentialPolicyTrialDigests(t *testing.T) {
	p := newPolicyDual(t)
	f := newPolicyFixture(t, p)
	for _, alg := range []tpm2.TPMIAlgHash{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384} {
		for name, st := range policySteps(f, uint16(alg)) {
			t.Run(name, func(t *testing.T) {
				p.t = t
				s := startSession(t, p, tpm2.TPMSETrial, alg)
				defer p.send(rawCommand(ccFlushContext, nil, 0, nil, u32b(s)))
				if rc := p.send(st.command(s)); rc != rcSuccess {
					t.Fatalf("rc %#x", rc)
				}
				policyDigestOf(t, p, s)
			})
		}
	}
	p.t = t
	steps := policySteps(f, algSHA256)
	// Chains, in the order tpm2-tools and go-tpm-tools build them.
	chains := [][]string{
		{"PolicyPCR current", "PolicyCommandCode"},
		{"PolicySecret endorse", "PolicyPCR current"},
		{"PolicyAuthValue", "PolicyCommandCode", "PolicyLocality 0-2", "PolicyPCR sha1 bank"},
		{"PolicyCpHash", "PolicySigned", "PolicyPassword", "PolicyNV"},
		{"PolicyNameHash", "PolicyCounterTimer", "PolicyNvWritten", "PolicyAuthorize"},
		{"PolicyPCR current", "PolicyRestart", "PolicyAuthorizeNV", "PolicySecret owner"},
	}
	for _, ch := range chains {
		s := startSession(t, p, tpm2.TPMSETrial, tpm2.TPMAlgSHA256)
		for _, name := range ch {
			if rc := p.send(steps[name].command(s)); rc != rcSuccess {
				t.Fatalf("%v: %s: rc %#x", ch, name, rc)
			}
			policyDigestOf(t, p, s)
		}
		p.send(rawCommand(ccFlushContext, nil, 0, nil, u32b(s)))
	}
	// A PolicyOR tree: OR(OR(a, b), c, OR(d, e, f)) over chains.
	s := startSession(t, p, tpm2.TPMSETrial, tpm2.TPMAlgSHA256)
	leaf := func(names ...string) []byte {
		p.send(rawCommand(ccPolicyRestart, []uint32{s}, 0, nil))
		for _, n := range names {
			p.send(steps[n].command(s))
		}
		return policyDigestOf(t, p, s)
	}
	or := func(digests ...[]byte) []byte {
		parts := [][]byte{u32b(uint32(len(digests)))}
		for _, d := range digests {
			parts = append(parts, b2b(d))
		}
		if rc := p.send(rawCommand(ccPolicyOR, []uint32{s}, 0, nil, parts...)); rc != rcSuccess {
			t.Fatalf("PolicyOR: rc %#x", rc)
		}
		return policyDigestOf(t, p, s)
	}
	a, b := leaf("PolicyPCR current"), leaf("PolicyAuthValue")
	ab := or(a, b)
	c := leaf("PolicySecret owner")
	d, e, ff := leaf("PolicyCommandCode"), leaf("PolicyPassword", "PolicyCpHash"), leaf("PolicyLocality 0-2")
	p.send(rawCommand(ccPolicyRestart, []uint32{s}, 0, nil))
	def := or(d, e, ff)
	p.send(rawCommand(ccPolicyRestart, []uint32{s}, 0, nil))
	root := or(ab, c, def)
	eight := make([][]byte, 8)
	for i := range eight {
		eight[i] = root
	}
	or(eight...)
	if p.sent < 100 {
		t.Errorf("only %d commands compared", p.sent)
	}
}

// TestDifferentialPolicyErrors sends malformed and failing policy
// commands to both TPMs and compares the response codes (and whole
// responses of the policy commands).
func TestDifferentialPolicyErrors(t *testing.T) {
	p := newPolicyDual(t)
	f := newPolicyFixture(t, p)
	cp := sha256.Sum256([]byte("cpHash"))
	cp2 := sha256.Sum256([]byte("other"))
	sig := bytesOf(u16b(algECDSA), u16b(algSHA256), b2b(make([]byte, 32)), b2b(make([]byte, 32)))
	digests := func(n int) []byte {
		parts := [][]byte{u32b(uint32(n))}
		for i := 0; i < n; i++ {
			parts = append(parts, b2b(cp[:]))
		}
		return bytesOf(parts...)
	}
	type tc struct {
		name  string
		trial bool
		pre   []policyStep
		cmd   policyStep
	}
	cases := []tc{
		{"or one digest", true, nil, policyStep{ccPolicyOR, []uint32{0}, false, [][]byte{digests(1)}}},
		{"or nine digests", true, nil, policyStep{ccPolicyOR, []uint32{0}, false, [][]byte{digests(9)}}},
		{"or no branch matches", false, nil, policyStep{ccPolicyOR, []uint32{0}, false, [][]byte{digests(2)}}},
		{"or digest too long", true, nil, policyStep{ccPolicyOR, []uint32{0}, false, [][]byte{u32b(2), b2b(make([]byte, 65)), b2b(nil)}}},
		{"cphash short", false, nil, policyStep{ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp[:20])}}},
		{"cphash twice", false, []policyStep{{ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}}, policyStep{ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp2[:])}}},
		{"namehash after cphash", false, []policyStep{{ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}}, policyStep{ccPolicyNameHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}},
		{"cphash after namehash", false, []policyStep{{ccPolicyNameHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}}, policyStep{ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}},
		{"namehash short", true, nil, policyStep{ccPolicyNameHash, []uint32{0}, false, [][]byte{b2b(cp[:31])}}},
		{"locality zero", true, nil, policyStep{ccPolicyLocality, []uint32{0}, false, [][]byte{{0}}}},
		{"locality disjoint", true, []policyStep{{ccPolicyLocality, []uint32{0}, false, [][]byte{{0x01}}}}, policyStep{ccPolicyLocality, []uint32{0}, false, [][]byte{{0x02}}}},
		{"locality mixed", true, []policyStep{{ccPolicyLocality, []uint32{0}, false, [][]byte{{0x01}}}}, policyStep{ccPolicyLocality, []uint32{0}, false, [][]byte{{0x40}}}},
		{"command code conflict", true, []policyStep{{ccPolicyCommandCode, []uint32{0}, false, [][]byte{u32b(ccUnseal)}}}, policyStep{ccPolicyCommandCode, []uint32{0}, false, [][]byte{u32b(ccSign)}}},
		{"command code unknown", true, nil, policyStep{ccPolicyCommandCode, []uint32{0}, false, [][]byte{u32b(0x100)}}},
		{"pcr wrong digest", false, nil, policyStep{ccPolicyPCR, []uint32{0}, false, [][]byte{b2b(cp[:]), pcrSel(algSHA256, 7)}}},
		{"pcr bad select", true, nil, policyStep{ccPolicyPCR, []uint32{0}, false, [][]byte{b2b(nil), bytesOf(u32b(1), u16b(algSHA256), []byte{1, 0xFF})}}},
		{"pcr bad hash", true, nil, policyStep{ccPolicyPCR, []uint32{0}, false, [][]byte{b2b(nil), bytesOf(u32b(1), u16b(0x99), []byte{3, 0, 0, 0})}}},
		{"authorize bad key alg", true, nil, policyStep{ccPolicyAuthorize, []uint32{0}, false, [][]byte{b2b(nil), b2b(nil), b2b(append(u16b(0x99), make([]byte, 32)...)), bytesOf(u16b(stVerified), u32b(rhNull), u16b(0))}}},
		{"authorize bad key size", true, nil, policyStep{ccPolicyAuthorize, []uint32{0}, false, [][]byte{b2b(nil), b2b(nil), b2b(append(u16b(algSHA256), make([]byte, 20)...)), bytesOf(u16b(stVerified), u32b(rhNull), u16b(0))}}},
		{"authorize bad ticket tag", true, nil, policyStep{ccPolicyAuthorize, []uint32{0}, false, [][]byte{b2b(nil), b2b(nil), b2b(f.keyName), bytesOf(u16b(stHashCheck), u32b(rhNull), u16b(0))}}},
		{"authorize not approved", false, nil, policyStep{ccPolicyAuthorize, []uint32{0}, false, [][]byte{b2b(cp[:]), b2b(nil), b2b(f.keyName), bytesOf(u16b(stVerified), u32b(rhOwner), b2b(cp[:]))}}},
		{"authorize bad ticket", false, nil, policyStep{ccPolicyAuthorize, []uint32{0}, false, [][]byte{b2b(make([]byte, 32)), b2b(nil), b2b(f.keyName), bytesOf(u16b(stVerified), u32b(rhOwner), b2b(cp[:]))}}},
		{"nv offset too large", false, nil, policyStep{ccPolicyNV, []uint32{f.nvIdx, f.nvIdx, 0}, true, [][]byte{b2b([]byte{5}), u16b(9), u16b(eoEQ)}}},
		{"nv operand too large", false, nil, policyStep{ccPolicyNV, []uint32{f.nvIdx, f.nvIdx, 0}, true, [][]byte{b2b([]byte{0, 5}), u16b(7), u16b(eoEQ)}}},
		{"nv comparison fails", false, nil, policyStep{ccPolicyNV, []uint32{f.nvIdx, f.nvIdx, 0}, true, [][]byte{b2b([]byte{6}), u16b(7), u16b(eoEQ)}}},
		{"nv bad operation", true, nil, policyStep{ccPolicyNV, []uint32{f.nvIdx, f.nvIdx, 0}, true, [][]byte{b2b([]byte{6}), u16b(7), u16b(12)}}},
		{"nv unwritten", false, nil, policyStep{ccPolicyNV, []uint32{rhOwner, f.polIdx, 0}, true, [][]byte{b2b([]byte{6}), u16b(0), u16b(eoEQ)}}},
		{"authorize nv unwritten", false, nil, policyStep{ccPolicyAuthorizeNV, []uint32{rhOwner, f.polIdx, 0}, true, nil}},
		{"counter timer offset", true, nil, policyStep{ccPolicyCounterTimer, []uint32{0}, false, [][]byte{b2b([]byte{1}), u16b(26), u16b(eoEQ)}}},
		{"counter timer range", true, nil, policyStep{ccPolicyCounterTimer, []uint32{0}, false, [][]byte{b2b(make([]byte, 8)), u16b(20), u16b(eoEQ)}}},
		{"counter timer fails", false, nil, policyStep{ccPolicyCounterTimer, []uint32{0}, false, [][]byte{b2b([]byte{0xFF}), u16b(24), u16b(eoEQ)}}},
		{"nv written twice", true, []policyStep{{ccPolicyNvWritten, []uint32{0}, false, [][]byte{{1}}}}, policyStep{ccPolicyNvWritten, []uint32{0}, false, [][]byte{{0}}}},
		{"nv written bad bool", true, nil, policyStep{ccPolicyNvWritten, []uint32{0}, false, [][]byte{{2}}}},
		{"secret null", true, nil, policyStep{ccPolicySecret, []uint32{rhNull, 0}, true, [][]byte{b2b(nil), b2b(nil), b2b(nil), u32b(0)}}},
		{"secret wrong nonce", false, nil, policyStep{ccPolicySecret, []uint32{rhOwner, 0}, true, [][]byte{b2b(cp[:]), b2b(nil), b2b(nil), u32b(0)}}},
		{"secret cphash short", false, nil, policyStep{ccPolicySecret, []uint32{rhOwner, 0}, true, [][]byte{b2b(nil), b2b(cp[:10]), b2b(nil), u32b(0)}}},
		{"secret cphash conflict", false, []policyStep{{ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}}, policyStep{ccPolicySecret, []uint32{rhOwner, 0}, true, [][]byte{b2b(nil), b2b(cp2[:]), b2b(nil), u32b(0)}}},
		{"signed bad signature", false, nil, policyStep{ccPolicySigned, []uint32{f.keyH, 0}, false, [][]byte{b2b(nil), b2b(nil), b2b(nil), u32b(0), sig}}},
		{"signed null signature", false, nil, policyStep{ccPolicySigned, []uint32{f.keyH, 0}, false, [][]byte{b2b(nil), b2b(nil), b2b(nil), u32b(0), u16b(algNull)}}},
		{"signed bad scheme", true, nil, policyStep{ccPolicySigned, []uint32{f.keyH, 0}, false, [][]byte{b2b(nil), b2b(nil), b2b(nil), u32b(0), u16b(0x77)}}},
		{"signed truncated hmac", false, nil, policyStep{ccPolicySigned, []uint32{f.keyH, 0}, false, [][]byte{b2b(nil), b2b(nil), b2b(nil), u32b(0), u16b(algHMAC)}}},
		{"signed hmac bad hash", true, nil, policyStep{ccPolicySigned, []uint32{f.keyH, 0}, false, [][]byte{b2b(nil), b2b(nil), b2b(nil), u32b(0), u16b(algHMAC), u16b(0x99)}}},
		{"signed wrong nonce", false, nil, policyStep{ccPolicySigned, []uint32{f.keyH, 0}, false, [][]byte{b2b(cp[:]), b2b(nil), b2b(nil), u32b(0), sig}}},
		{"ticket in trial", true, nil, policyStep{ccPolicyTicket, []uint32{0}, false, [][]byte{b2b(make([]byte, 8)), b2b(nil), b2b(nil), b2b(f.keyName), u16b(stAuthSigned), u32b(rhOwner), b2b(cp[:])}}},
		{"ticket short timeout", false, nil, policyStep{ccPolicyTicket, []uint32{0}, false, [][]byte{b2b(make([]byte, 4)), b2b(nil), b2b(nil), b2b(f.keyName), u16b(stAuthSigned), u32b(rhOwner), b2b(cp[:])}}},
		{"ticket forged", false, nil, policyStep{ccPolicyTicket, []uint32{0}, false, [][]byte{b2b(bytesOf(u32b(0), u32b(1<<30))), b2b(nil), b2b(nil), b2b(f.keyName), u16b(stAuthSigned), u32b(rhOwner), b2b(cp[:])}}},
		{"ticket bad tag", false, nil, policyStep{ccPolicyTicket, []uint32{0}, false, [][]byte{b2b(make([]byte, 8)), b2b(nil), b2b(nil), b2b(f.keyName), u16b(stVerified), u32b(rhOwner), b2b(cp[:])}}},
		{"dupselect after cphash", true, []policyStep{{ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}}, policyStep{ccPolicyDupSelect, []uint32{0}, false, [][]byte{b2b(f.keyName), b2b(f.nvName), {1}}}},
		{"dupselect after command code", true, []policyStep{{ccPolicyCommandCode, []uint32{0}, false, [][]byte{u32b(ccUnseal)}}}, policyStep{ccPolicyDupSelect, []uint32{0}, false, [][]byte{b2b(f.keyName), b2b(f.nvName), {1}}}},
		{"dupselect bad bool", true, nil, policyStep{ccPolicyDupSelect, []uint32{0}, false, [][]byte{b2b(f.keyName), b2b(f.nvName), {2}}}},
		{"template short", true, nil, policyStep{ccPolicyTemplate, []uint32{0}, false, [][]byte{b2b(cp[:31])}}},
		{"template twice", true, []policyStep{{ccPolicyTemplate, []uint32{0}, false, [][]byte{b2b(cp[:])}}}, policyStep{ccPolicyTemplate, []uint32{0}, false, [][]byte{b2b(cp2[:])}}},
		{"template after cphash", true, []policyStep{{ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}}, policyStep{ccPolicyTemplate, []uint32{0}, false, [][]byte{b2b(cp[:])}}},
		{"cphash after template", true, []policyStep{{ccPolicyTemplate, []uint32{0}, false, [][]byte{b2b(cp[:])}}}, policyStep{ccPolicyCpHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}},
		{"namehash after template", true, []policyStep{{ccPolicyTemplate, []uint32{0}, false, [][]byte{b2b(cp[:])}}}, policyStep{ccPolicyNameHash, []uint32{0}, false, [][]byte{b2b(cp[:])}}},
		{"get digest extra bytes", true, nil, policyStep{ccPolicyGetDigest, []uint32{0}, false, [][]byte{{0}}}},
		{"session not loaded", true, nil, policyStep{ccPolicyAuthValue, []uint32{0x03000007}, false, nil}},
		{"hmac session handle", true, nil, policyStep{ccPolicyAuthValue, []uint32{0x02000000}, false, nil}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p.t = t
			typ := tpm2.TPMSEPolicy
			if c.trial {
				typ = tpm2.TPMSETrial
			}
			s := startSession(t, p, typ, tpm2.TPMAlgSHA256)
			defer p.send(rawCommand(ccFlushContext, nil, 0, nil, u32b(s)))
			for _, st := range c.pre {
				if rc := p.send(st.command(s)); rc != rcSuccess {
					t.Fatalf("setup: rc %#x", rc)
				}
			}
			if rc := p.send(c.cmd.command(s)); rc == rcSuccess {
				t.Errorf("succeeded")
			}
			policyDigestOf(t, p, s)
		})
	}
}

// TestDifferentialPolicyAuthorization runs the same policy-session
// authorizations on each TPM separately (each seals its own object) and
// compares the response codes: successes, PCR changes, wrong policies,
// trial sessions, command codes, PolicySecret through a policy session.
func TestDifferentialPolicyAuthorization(t *testing.T) {
	a := &recorder{tpm: newTestTPM(t)}
	policyScenario(t, a)
	b := &recorder{tpm: simTPM{getSim(t)}}
	policyScenario(t, b)
	if len(a.rcs) != len(b.rcs) {
		t.Fatalf("vtpm ran %d commands, reference %d", len(a.rcs), len(b.rcs))
	}
	for i := range a.rcs {
		if a.rcs[i] != b.rcs[i] {
			t.Errorf("command %d (%#x): vtpm rc %#x, reference rc %#x", i, a.ccs[i], a.rcs[i], b.rcs[i])
		}
	}
}

func policyScenario(t *testing.T, tp transport.TPM) {
	policy := pcrPolicy(t, tp)
	f := sealWithPolicy(t, tp, policy, []byte("pw"), false)
	run := func(trial, cont bool, steps ...func(h tpm2.TPMHandle)) {
		s := startPolicy(t, tp, trial)
		s.cont = cont
		for _, st := range steps {
			st(s.handle)
		}
		f.unseal(tp, s)
		flush(tp, s.handle)
	}
	pcr := func(h tpm2.TPMHandle) { tpm2.PolicyPCR{PolicySession: h, Pcrs: pcrSel16}.Execute(tp) }
	run(false, false, pcr)
	run(false, true, pcr)
	run(true, false, pcr)
	run(false, false)
	run(false, false, pcr, func(tpm2.TPMHandle) { extend16(t, tp, 3) })
	run(false, false, pcr)
	flush(tp, f.obj.Handle)
	// A continued session is reset after it authorized: the second
	// Unseal fails.
	s := startPolicy(t, tp, false)
	s.cont = true
	policy2 := pcrPolicy(t, tp)
	g := sealWithPolicy(t, tp, policy2, nil, false)
	pcr(s.handle)
	g.unseal(tp, s)
	g.unseal(tp, s)
	pcr(s.handle)
	g.unseal(tp, s)
	flush(tp, s.handle)
	// PolicySecret authorized by a policy session without
	// PolicyAuthValue or PolicyPassword is refused (TPM_RC_MODE).
	outer := startPolicy(t, tp, false)
	inner := startPolicy(t, tp, false)
	tpm2.PolicySecret{AuthHandle: tpm2.AuthHandle{Handle: g.obj.Handle, Name: g.obj.Name, Auth: inner}, PolicySession: outer.handle}.Execute(tp)
	flush(tp, outer.handle)
	flush(tp, inner.handle)
	flush(tp, g.obj.Handle)
	// The object's authValue through PolicyPassword, right and wrong.
	pw := calc(t, &tpm2.PolicyAuthValue{})
	h := sealWithPolicy(t, tp, pw, []byte("pw"), false)
	for _, guess := range []string{"pw", "wrong"} {
		s := startPolicy(t, tp, false)
		tp.Send(rawCommand(ccPolicyPassword, []uint32{uint32(s.handle)}, 0, nil))
		s.password = []byte(guess)
		h.unseal(tp, s)
		flush(tp, s.handle)
	}
}

// TestDifferentialPolicyDeferredChecks compares, on each TPM separately,
// the response codes of authorizations whose deferred checks fail or
// pass: command code, cpHash, nameHash, locality, NV written, a
// PolicyAuthorize approval checked through TPM2_VerifySignature tickets,
// and PolicySigned.
func TestDifferentialPolicyDeferredChecks(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := authority{key: k}
	a := &recorder{tpm: newTestTPM(t)}
	deferredScenario(t, a, key)
	b := &recorder{tpm: simTPM{getSim(t)}}
	deferredScenario(t, b, key)
	if len(a.rcs) != len(b.rcs) {
		t.Fatalf("vtpm ran %d commands, reference %d", len(a.rcs), len(b.rcs))
	}
	for i := range a.rcs {
		if a.rcs[i] != b.rcs[i] {
			t.Errorf("command %d (%#x): vtpm rc %#x, reference rc %#x", i, a.ccs[i], a.rcs[i], b.rcs[i])
		}
	}
}

func deferredScenario(t *testing.T, tp transport.TPM, key authority) {
	raw := func(s *testPolicySession, cc uint32, params ...[]byte) {
		tp.Send(rawCommand(cc, []uint32{uint32(s.handle)}, 0, nil, params...))
	}
	sealed := func(steps func(s *testPolicySession)) sealFixture {
		tr := startPolicy(t, tp, true)
		steps(tr)
		d := policyDigest(t, tp, tr)
		flush(tp, tr.handle)
		return sealWithPolicy(t, tp, d, nil, false)
	}
	try := func(f sealFixture, steps func(s *testPolicySession)) {
		s := startPolicy(t, tp, false)
		steps(s)
		f.unseal(tp, s)
		flush(tp, s.handle)
	}
	// Command code.
	cc := func(code uint32) func(s *testPolicySession) {
		return func(s *testPolicySession) { raw(s, ccPolicyCommandCode, u32b(code)) }
	}
	f := sealed(cc(ccUnseal))
	try(f, cc(ccUnseal))
	try(f, cc(ccSign))
	flush(tp, f.obj.Handle)
	g := sealed(cc(ccCertify))
	try(g, cc(ccCertify))
	flush(tp, g.obj.Handle)
	// cpHash and nameHash of another command.
	other := sha256.Sum256([]byte("another command"))
	for _, c := range []uint32{ccPolicyCpHash, ccPolicyNameHash} {
		step := func(s *testPolicySession) { raw(s, c, b2b(other[:])) }
		f := sealed(step)
		try(f, step)
		flush(tp, f.obj.Handle)
	}
	// Locality.
	for _, loc := range []byte{0x01, 0x1E, 0x20} {
		step := func(s *testPolicySession) { raw(s, ccPolicyLocality, []byte{loc}) }
		f := sealed(step)
		try(f, step)
		flush(tp, f.obj.Handle)
	}
	// NV written on an object: the check fails.
	step := func(s *testPolicySession) { raw(s, ccPolicyNvWritten, []byte{1}) }
	f = sealed(step)
	try(f, step)
	flush(tp, f.obj.Handle)
	// PolicyAuthorize with tickets of TPM2_VerifySignature.
	x, y := key.key.PublicKey.X.FillBytes(make([]byte, 32)), key.key.PublicKey.Y.FillBytes(make([]byte, 32))
	pub := newAuthorityFromSeed(t)
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
	rsp, err := tpm2.LoadExternal{InPublic: tpm2.New2B(pub), Hierarchy: tpm2.TPMRHOwner}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	key.h, key.name = rsp.ObjectHandle, rsp.Name
	authorize := func(approved []byte, tk tpm2.TPMTTKVerified) func(s *testPolicySession) {
		return func(s *testPolicySession) {
			raw(s, ccPolicyCommandCode, u32b(ccUnseal))
			tpm2.PolicyAuthorize{PolicySession: s.handle, ApprovedPolicy: tpm2.TPM2BDigest{Buffer: approved},
				KeySign: key.name, CheckTicket: tk}.Execute(tp)
		}
	}
	approved := calc(t, &tpm2.PolicyCommandCode{Code: tpm2.TPMCCUnseal})
	f = sealed(authorize(approved, tpm2.TPMTTKVerified{Tag: tpm2.TPMSTVerified, Hierarchy: tpm2.TPMRHNull}))
	try(f, authorize(approved, key.approve(t, tp, approved, nil)))
	try(f, authorize(approved, key.approve(t, tp, approved, []byte("ref"))))
	try(f, authorize(approved, tpm2.TPMTTKVerified{Tag: tpm2.TPMSTVerified, Hierarchy: tpm2.TPMRHOwner}))
	// PolicySigned by the same key, over the session's nonce.
	signed := func(good bool) func(s *testPolicySession) {
		return func(s *testPolicySession) {
			aHash := sha256.Sum256(bytesOf(s.nonceTPM, u32b(0)))
			if !good {
				aHash[0] ^= 1
			}
			tpm2.PolicySigned{PolicySession: s.handle, AuthObject: tpm2.NamedHandle{Handle: key.h, Name: key.name},
				NonceTPM: tpm2.TPM2BNonce{Buffer: s.nonceTPM}, Auth: key.sign(t, aHash[:])}.Execute(tp)
		}
	}
	flush(tp, f.obj.Handle)
	f = sealWithPolicy(t, tp, calc(t, &tpm2.PolicySigned{AuthObject: tpm2.NamedHandle{Handle: key.h, Name: key.name}}), nil, false)
	try(f, signed(true))
	try(f, signed(false))
	flush(tp, f.obj.Handle)
	flush(tp, key.h)

	// PolicyTemplate on a primary key: Create of children from one
	// template only.
	child := tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true, NoDA: true}}
	childBytes := tpm2.Marshal(child)
	th := sha256.Sum256(childBytes)
	tmpl := func(s *testPolicySession) { raw(s, ccPolicyTemplate, b2b(th[:])) }
	tr := startPolicy(t, tp, true)
	tmpl(tr)
	parentPolicy := policyDigest(t, tp, tr)
	flush(tp, tr.handle)
	srkT := tpm2.ECCSRKTemplate
	srkT.AuthPolicy = tpm2.TPM2BDigest{Buffer: parentPolicy}
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	parent, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(srkT)}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	otherChild := child
	otherChild.ObjectAttributes.NoDA = false
	for _, pub := range []tpm2.TPMTPublic{child, otherChild} {
		s := startPolicy(t, tp, false)
		tmpl(s)
		tpm2.Create{ParentHandle: tpm2.AuthHandle{Handle: parent.ObjectHandle, Name: parent.Name, Auth: s},
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("x")})}},
			InPublic:    tpm2.New2B(pub)}.Execute(tp)
		flush(tp, s.handle)
	}

	// PolicyDuplicationSelect: an object that may be duplicated to the
	// null parent only.
	nullName := tpm2.HandleName(tpm2.TPMRHNull).Buffer
	dup := func(s *testPolicySession, objName []byte) {
		raw(s, ccPolicyDupSelect, b2b(objName), b2b(nullName), []byte{0})
	}
	tr = startPolicy(t, tp, true)
	dup(tr, nil)
	dupPolicy := policyDigest(t, tp, tr)
	flush(tp, tr.handle)
	srk, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	flush(tp, parent.ObjectHandle)
	srkH := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
	obj, err := tpm2.Create{ParentHandle: srkH, InPublic: tpm2.New2B(tpm2.TPMTPublic{
		Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true, NoDA: true},
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: dupPolicy},
	}), InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("x")})}}}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tpm2.Load{ParentHandle: srkH, InPrivate: obj.OutPrivate, InPublic: obj.OutPublic}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	for _, objName := range [][]byte{loaded.Name.Buffer, srk.Name.Buffer} {
		s := startPolicy(t, tp, false)
		dup(s, objName)
		auth := bytesOf(u32b(uint32(s.handle)), b2b(s.caller), []byte{0}, b2b(nil))
		cmd := bytesOf(u16b(stSessions), u32b(0), u32b(ccDuplicate), u32b(uint32(loaded.ObjectHandle)), u32b(rhNull),
			u32b(uint32(len(auth))), auth, b2b(nil), u16b(algNull))
		binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
		tp.Send(cmd)
		flush(tp, s.handle)
	}
	flush(tp, loaded.ObjectHandle)
	flush(tp, srk.ObjectHandle)
}
