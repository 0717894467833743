package vtpm

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/cryptotest"
)

// stateSeeds returns the plaintexts of real sealed states and their
// generations: the fuzz base after each recorded command stream of
// testdata/commands (keys, NV, sessions, sequences, policies, audit), and
// each of those after Shutdown(STATE).
func stateSeeds(tb testing.TB) (pts [][]byte, gens []uint64) {
	base, err := loadFuzzBase()
	if err != nil {
		tb.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/commands/*.bin")
	if len(files) == 0 {
		tb.Fatal("no recorded command streams in testdata/commands")
	}
	for _, file := range files {
		stream, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		v, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
		if err != nil {
			tb.Fatal(err)
		}
		for _, cmd := range splitCommands(stream) {
			v.Send(cmd)
		}
		for _, shutdown := range []bool{false, true} {
			if shutdown {
				v.Send(rawCommand(ccShutdown, nil, 0, nil, u16b(1))) // TPM_SU_STATE
			}
			v.mu.Lock()
			v.syncClock()
			pt, err := encMode().Marshal(v.s)
			gen := v.s.Generation
			v.mu.Unlock()
			if err != nil {
				tb.Fatal(err)
			}
			pts, gens = append(pts, pt), append(gens, gen)
		}
		v.Close()
	}
	return pts, gens
}

// stateProbe returns commands that touch every part of an opened state:
// both startups, the capabilities, every PCR, the clock, every persistent
// and loaded object (ReadPublic, Sign, ContextSave), every NV index
// (NV_ReadPublic, NV_Read), every sequence (SequenceUpdate), and a
// Shutdown(STATE). Objects and NV indices are authorized with the
// password the state holds for them.
func stateProbe(v *TPM) [][]byte {
	v.mu.Lock()
	var objects, nv, seqs []uint32
	auth := map[uint32][]byte{} // the password of each entity, from the state
	for h, o := range v.s.Persistent {
		objects, auth[h] = append(objects, h), o.Auth
	}
	for h, o := range v.s.Transient {
		objects, auth[h] = append(objects, h), o.Auth
	}
	for h, x := range v.s.NV {
		nv, auth[h] = append(nv, h), x.Auth
	}
	for h := range v.s.Sequences {
		seqs = append(seqs, h)
	}
	v.mu.Unlock()
	slices.Sort(objects)
	slices.Sort(nv)
	slices.Sort(seqs)

	cmds := [][]byte{
		rawCommand(ccStartup, nil, 0, nil, u16b(1)), // TPM_SU_STATE
		rawCommand(ccStartup, nil, 0, nil, u16b(0)), // TPM_SU_CLEAR
		rawCommand(ccReadClock, nil, 0, nil),
		rawCommand(ccGetRandom, nil, 0, nil, u16b(16)),
	}
	for _, c := range []struct{ cap, first uint32 }{
		{capAlgs, 0}, {capHandles, 0x80000000}, {capHandles, 0x81000000}, {capHandles, 0x01000000},
		{capHandles, 0x02000000}, {capHandles, 0x03000000}, {capCommands, 0}, {capAuditCommands, 0},
		{capPCRs, 0}, {capTPMProperties, 0x100}, {capTPMProperties, 0x200}, {capAuthPolicies, 0x40000000},
	} {
		cmds = append(cmds, rawCommand(ccGetCapability, nil, 0, nil, u32b(c.cap), u32b(c.first), u32b(64)))
	}
	for _, alg := range []uint16{algSHA1, algSHA256, algSHA384, algSHA512} {
		cmds = append(cmds, rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(alg), []byte{3, 0xFF, 0xFF, 0xFF}))
	}
	for _, h := range objects {
		cmds = append(cmds,
			rawCommand(ccReadPublic, []uint32{h}, 0, nil),
			// Sign a digest with the key's own scheme (TPM_ALG_NULL) and
			// a null ticket.
			rawCommand(ccSign, []uint32{h}, 1, auth[h], b2b(make([]byte, 32)), u16b(algNull),
				u16b(stHashCheck), u32b(rhNull), u16b(0)),
			rawCommand(ccContextSave, []uint32{h}, 0, nil))
	}
	for _, h := range nv {
		cmds = append(cmds,
			rawCommand(ccNVReadPublic, []uint32{h}, 0, nil),
			rawCommand(ccNVRead, []uint32{h, h}, 1, auth[h], u16b(64), u16b(0)))
	}
	for _, h := range seqs {
		cmds = append(cmds, rawCommand(ccSequenceUpdate, []uint32{h}, 1, nil, b2b([]byte("more"))))
	}
	return append(cmds, rawCommand(ccShutdown, nil, 0, nil, u16b(1)))
}

// FuzzOpenState feeds the decrypted form of a sealed state to the decoder
// and checks that Open runs on it, with its generation. A state that a
// buggy or older version wrote, or that a holder of the sealing key
// crafted, must be refused with ErrBadState or give a TPM that answers
// every command with a well-formed response, seals, and opens again.
// Seeds are real states (stateSeeds).
func FuzzOpenState(f *testing.F) {
	defer useFixedRSAKeys(f)()
	pts, gens := stateSeeds(f)
	for i := range pts {
		f.Add(pts[i], gens[i])
	}
	f.Fuzz(func(t *testing.T, pt []byte, gen uint64) {
		cryptotest.SetGlobalRandom(t, fuzzRandSeed)
		v, err := openState(pt, gen, OpenConfig{VMID: "fuzz"})
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("refused with %v, want ErrBadState", err)
			}
			return
		}
		defer v.Close()
		for _, cmd := range stateProbe(v) {
			rsp, err := v.Send(cmd)
			if err != nil {
				t.Fatal(err)
			}
			if len(rsp) < 10 || len(rsp) > maxResponseSize || int(binary.BigEndian.Uint32(rsp[2:])) != len(rsp) {
				t.Fatalf("malformed response %x to %x", rsp, cmd)
			}
		}
		blob, err := v.Seal(testKey)
		if err != nil {
			t.Fatalf("a state that opened does not seal: %v", err)
		}
		w, err := Open(blob, testKey, OpenConfig{VMID: "fuzz"})
		if err != nil {
			t.Fatalf("a state that opened and sealed does not open again: %v", err)
		}
		w.Close()
	})
}

// TestStateSeedsOpen checks that every seed of FuzzOpenState is a state
// Open accepts, so that the fuzzer starts from states that reach the
// command handlers, and that the probe's commands succeed on some of them.
func TestStateSeedsOpen(t *testing.T) {
	defer useFixedRSAKeys(t)()
	pts, gens := stateSeeds(t)
	ok := 0
	for i := range pts {
		v, err := openState(pts[i], gens[i], OpenConfig{VMID: "fuzz"})
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		for _, cmd := range stateProbe(v) {
			if rsp, _ := v.Send(cmd); rcOf(rsp) == rcSuccess && binary.BigEndian.Uint32(cmd[6:]) == ccSign {
				ok++
			}
		}
		v.Close()
	}
	if ok == 0 {
		t.Fatal("no seed's probe signed with a stored key")
	}
}
