package vtpm

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// policyFuzzBase returns a sealed TPM holding what policy commands refer
// to: a public signing key in the owner hierarchy, NV indices, and a
// sealed object whose policy is PolicyPCR of PCRs 7 and 16.
func policyFuzzBase(tb testing.TB) []byte {
	v, err := New(Config{VMID: "fuzz"})
	if err != nil {
		tb.Fatal(err)
	}
	defer v.Close()
	if _, err := (tpm2.LoadExternal{InPublic: tpm2.New2B(newAuthorityFromSeed(nil)), Hierarchy: tpm2.TPMRHOwner}).Execute(v); err != nil {
		tb.Fatal(err)
	}
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	for _, x := range []struct {
		idx  uint32
		size uint16
	}{{fuzzNV, 8}, {fuzzPolNV, 34}} {
		if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: tpm2.TPMHandle(x.idx), NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, AuthWrite: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
			DataSize:   x.size,
		})}).Execute(v); err != nil {
			tb.Fatal(err)
		}
	}
	v.Send(rawCommand(ccNVWrite, []uint32{rhOwner, fuzzNV}, 1, nil, b2b([]byte{0, 0, 0, 0, 0, 0, 0, 5}), u16b(0)))
	v.Send(rawCommand(ccNVWrite, []uint32{rhOwner, fuzzPolNV}, 1, nil, b2b(append(u16b(algSHA256), make([]byte, 32)...)), u16b(0)))
	f := sealWithPolicy(tb, v, pcrPolicy(tb, v), nil, false)
	if f.obj.Handle != fuzzSealed {
		tb.Fatalf("sealed object at %#x", f.obj.Handle)
	}
	blob, err := v.Seal(testKey)
	if err != nil {
		tb.Fatal(err)
	}
	return blob
}

// Handles in the policy fuzz base: the signing key, the sealed object,
// the NV indices.
const (
	fuzzKey    = transientFirst
	fuzzSealed = transientFirst + 2
	fuzzNV     = 0x01500030
	fuzzPolNV  = 0x01500031
)

// fuzzPolicyCommands are the commands FuzzPolicyCommand chooses from, with
// their handle areas (0 stands for the session) and whether the first
// handle takes a password authorization.
var fuzzPolicyCommands = []struct {
	cc      uint32
	handles []uint32
	auth    bool
}{
	{ccPolicySigned, []uint32{fuzzKey, 0}, false},
	{ccPolicySecret, []uint32{rhOwner, 0}, true},
	{ccPolicySecret, []uint32{fuzzNV, 0}, true},
	{ccPolicyTicket, []uint32{0}, false},
	{ccPolicyOR, []uint32{0}, false},
	{ccPolicyPCR, []uint32{0}, false},
	{ccPolicyLocality, []uint32{0}, false},
	{ccPolicyNV, []uint32{fuzzNV, fuzzNV, 0}, true},
	{ccPolicyCounterTimer, []uint32{0}, false},
	{ccPolicyCommandCode, []uint32{0}, false},
	{ccPolicyCpHash, []uint32{0}, false},
	{ccPolicyNameHash, []uint32{0}, false},
	{ccPolicyAuthorize, []uint32{0}, false},
	{ccPolicyAuthValue, []uint32{0}, false},
	{ccPolicyPassword, []uint32{0}, false},
	{ccPolicyGetDigest, []uint32{0}, false},
	{ccPolicyNvWritten, []uint32{0}, false},
	{ccPolicyAuthorizeNV, []uint32{rhOwner, fuzzPolNV, 0}, true},
	{ccPolicyRestart, []uint32{0}, false},
	{ccPolicyPhysPresence, []uint32{0}, false},
	{ccPolicyDupSelect, []uint32{0}, false},
	{ccPolicyTemplate, []uint32{0}, false},
}

// FuzzPolicyCommand runs a sequence of policy commands with fuzzed
// parameters on a policy or trial session, then tries to unseal the
// PolicyPCR-sealed object with it. It checks that responses are well
// formed, that a failed policy command leaves the policyDigest unchanged,
// that a trial session never authorizes, and that an unseal succeeds only
// when the session's digest is the object's policy.
//
// Input: a flags byte (bit 0: trial session; bits 1-2: session hash), then
// records of [command index, parameter length (2 bytes), parameters].
func FuzzPolicyCommand(f *testing.F) {
	for _, seed := range policyFuzzSeeds() {
		f.Add(seed)
	}
	base := policyFuzzBase(f)
	open := func(t *testing.T) *TPM {
		v, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 1 {
			return
		}
		v := open(t)
		defer v.Close()
		trial := in[0]&1 != 0
		alg := [...]uint16{algSHA256, algSHA1, algSHA384, algSHA512}[in[0]>>1&3]
		typ := byte(sePolicy)
		if trial {
			typ = seTrial
		}
		rsp, _ := v.Send(rawCommand(ccStartAuthSession, []uint32{rhNull, rhNull}, 0, nil,
			b2b(make([]byte, 16)), b2b(nil), []byte{typ}, u16b(algNull), u16b(alg)))
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("StartAuthSession: rc %#x", rcOf(rsp))
		}
		sess := binary.BigEndian.Uint32(rsp[10:])
		digest := func() []byte {
			rsp, _ := v.Send(rawCommand(ccPolicyGetDigest, []uint32{sess}, 0, nil))
			if rcOf(rsp) != rcSuccess || len(rsp) != 12+hashOf(alg).Size() {
				t.Fatalf("PolicyGetDigest: %x", rsp)
			}
			return rsp[12:]
		}
		in = in[1:]
		for n := 0; len(in) >= 3 && n < 16; n++ {
			c := fuzzPolicyCommands[int(in[0])%len(fuzzPolicyCommands)]
			size := int(binary.BigEndian.Uint16(in[1:]))
			in = in[3:]
			if size > len(in) {
				size = len(in)
			}
			params := in[:size]
			in = in[size:]
			hs := make([]uint32, len(c.handles))
			for i, h := range c.handles {
				if h == 0 {
					h = sess
				}
				hs[i] = h
			}
			nauth := 0
			if c.auth {
				nauth = 1
			}
			before := digest()
			rsp, err := v.Send(rawCommand(c.cc, hs, nauth, nil, params))
			if err != nil {
				t.Fatal(err)
			}
			if len(rsp) < 10 || int(binary.BigEndian.Uint32(rsp[2:])) != len(rsp) {
				t.Fatalf("malformed response %x", rsp)
			}
			if rcOf(rsp) != rcSuccess {
				if len(rsp) != 10 {
					t.Fatalf("error response of %d bytes", len(rsp))
				}
				if after := digest(); !bytes.Equal(before, after) {
					t.Fatalf("command %#x failed with rc %#x but changed the digest", c.cc, rcOf(rsp))
				}
			}
		}
		d := append([]byte(nil), digest()...)
		auth := bytesOf(u32b(sess), b2b(make([]byte, 16)), []byte{0}, b2b(nil))
		cmd := bytesOf(u16b(stSessions), u32b(0), u32b(ccUnseal), u32b(fuzzSealed), u32b(uint32(len(auth))), auth)
		binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
		rsp, _ = v.Send(cmd)
		if rcOf(rsp) == rcSuccess {
			o := v.s.Transient[fuzzSealed]
			if trial {
				t.Fatal("a trial session unsealed")
			}
			if alg != o.pub.NameAlg || !bytes.Equal(d, o.pub.AuthPolicy) {
				t.Fatalf("unsealed with digest %x, policy %x", d, o.pub.AuthPolicy)
			}
		}
	})
}

// policyFuzzSeeds encodes policy command sequences that succeed on the
// fuzz base, including the one that unseals.
func policyFuzzSeeds() [][]byte {
	index := func(cc uint32, h0 uint32) byte {
		for i, c := range fuzzPolicyCommands {
			if c.cc == cc && (h0 == 0 || c.handles[0] == h0) {
				return byte(i)
			}
		}
		panic("unknown policy command")
	}
	rec := func(cc, h0 uint32, params ...[]byte) []byte {
		p := bytesOf(params...)
		return bytesOf([]byte{index(cc, h0)}, u16b(uint16(len(p))), p)
	}
	cp := digestOf(algSHA256, []byte("cpHash"))
	sig := bytesOf(u16b(algECDSA), u16b(algSHA256), b2b(make([]byte, 32)), b2b(make([]byte, 32)))
	pcr := rec(ccPolicyPCR, 0, b2b(nil), pcrSel(algSHA256, 7, 16))
	all := [][]byte{
		rec(ccPolicySigned, 0, b2b(nil), b2b(nil), b2b([]byte("ref")), u32b(0), sig),
		rec(ccPolicySecret, rhOwner, b2b(nil), b2b(nil), b2b(nil), u32b(0xFFFFFFF6)),
		rec(ccPolicySecret, fuzzNV, b2b(nil), b2b(cp), b2b(nil), u32b(0)),
		rec(ccPolicyTicket, 0, b2b(make([]byte, 8)), b2b(nil), b2b(nil), b2b(u32b(rhOwner)), u16b(stAuthSecret), u32b(rhOwner), b2b(cp)),
		rec(ccPolicyOR, 0, u32b(2), b2b(make([]byte, 32)), b2b(cp)),
		pcr,
		rec(ccPolicyLocality, 0, []byte{3}),
		rec(ccPolicyNV, 0, b2b([]byte{5}), u16b(7), u16b(eoEQ)),
		rec(ccPolicyCounterTimer, 0, b2b(u32b(7)), u16b(8), u16b(eoUnsignedGE)),
		rec(ccPolicyCommandCode, 0, u32b(ccUnseal)),
		rec(ccPolicyCpHash, 0, b2b(cp)),
		rec(ccPolicyNameHash, 0, b2b(cp)),
		rec(ccPolicyAuthorize, 0, b2b(nil), b2b(nil), b2b(append(u16b(algSHA256), cp...)), u16b(stVerified), u32b(rhNull), u16b(0)),
		rec(ccPolicyAuthValue, 0),
		rec(ccPolicyPassword, 0),
		rec(ccPolicyNvWritten, 0, []byte{1}),
		rec(ccPolicyAuthorizeNV, 0),
		rec(ccPolicyRestart, 0),
		rec(ccPolicyPhysPresence, 0),
		rec(ccPolicyDupSelect, 0, b2b(append(u16b(algSHA256), cp...)), b2b(u32b(rhNull)), []byte{1}),
		rec(ccPolicyTemplate, 0, b2b(cp)),
	}
	seeds := [][]byte{bytesOf([]byte{0}, pcr), bytesOf([]byte{1}, pcr)}
	for _, r := range all {
		seeds = append(seeds, bytesOf([]byte{1}, r), bytesOf([]byte{0}, r))
	}
	seeds = append(seeds, bytesOf(append([][]byte{{1}}, all...)...), bytesOf([]byte{2}, pcr, all[4], all[9]))
	return seeds
}

// TestPolicyFuzzBaseUnseals checks the fuzz harness: on the fuzz base, a
// PolicyPCR session unseals the sealed object, so that FuzzPolicyCommand
// can reach successful unseals.
func TestPolicyFuzzBaseUnseals(t *testing.T) {
	v, err := Open(policyFuzzBase(t), testKey, OpenConfig{VMID: "fuzz"})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	s := startPolicy(t, v, false)
	if rc := policyRaw(v, ccPolicyPCR, []uint32{uint32(s.handle)}, b2b(nil), pcrSel(algSHA256, 7, 16)); rc != rcSuccess {
		t.Fatalf("PolicyPCR: rc %#x", rc)
	}
	f := sealFixture{obj: tpm2.NamedHandle{Handle: fuzzSealed, Name: tpm2.TPM2BName{Buffer: v.s.Transient[fuzzSealed].name}}}
	if _, err := f.unseal(v, s); err != nil {
		t.Fatalf("Unseal: %v", err)
	}
}

// TestRecordPolicyCommands records, with -update, the command streams of
// policy scenarios into testdata/commands, where FuzzSend takes its
// seeds: trial digests of every policy command, and policy sessions that
// unseal, fail and are reset.
func TestRecordPolicyCommands(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/commands/policy-*.bin")
	}
	rec := &sendLog{tpm: newTestTPM(t)}
	policyScenario(t, rec)
	writeCommands(t, "policy-sessions", rec.cmds)

	rec = &sendLog{tpm: newTestTPM(t)}
	f := policyFixture{keyH: fuzzKey, nvIdx: 0x01500030, polIdx: 0x01500031}
	if _, err := (tpm2.LoadExternal{InPublic: tpm2.New2B(newAuthorityFromSeed(nil)), Hierarchy: tpm2.TPMRHOwner}).Execute(rec); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint32{f.nvIdx, f.polIdx} {
		rec.Send(rawCommand(ccNVDefineSpace, []uint32{rhOwner}, 1, nil, b2b(nil),
			b2b(bytesOf(u32b(idx), u16b(algSHA256), u32b(0x0006000E|nvNoDA), u16b(0), u16b(34)))))
	}
	rec.Send(rawCommand(ccNVWrite, []uint32{rhOwner, f.nvIdx}, 1, nil, b2b([]byte{0, 0, 0, 0, 0, 0, 0, 5}), u16b(0)))
	f.keyName = rec.tpm.s.Transient[fuzzKey].name
	for _, alg := range []uint16{algSHA1, algSHA256} {
		for _, st := range policySteps(f, alg) {
			s := startSession(t, rec, tpm2.TPMSETrial, tpm2.TPMIAlgHash(alg))
			rec.Send(st.command(s))
			rec.Send(rawCommand(ccPolicyGetDigest, []uint32{s}, 0, nil))
			rec.Send(rawCommand(ccFlushContext, nil, 0, nil, u32b(s)))
		}
	}
	writeCommands(t, "policy-trial", rec.cmds)
}
