package vtpm

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestRecordAdminCommands writes the fuzz seeds of the admin commands
// (testdata/commands/admin-*.bin) when run with -update: NV locks and bit
// fields, hierarchy control, dictionary-attack parameters, the clock,
// PCR allocation, symmetric encryption, HMAC and the sequences, each
// stream run on a fresh TPM so that its handles are the ones FuzzSend's
// base TPM hands out.
func TestRecordAdminCommands(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/commands")
	}
	record := func(name string, cmds [][]byte) {
		rec := &sendLog{tpm: newTestTPM(t)}
		for _, c := range cmds {
			rec.Send(c)
		}
		ok := 0
		for _, r := range rec.rsps {
			if rcOf(r) == rcSuccess {
				ok++
			}
		}
		t.Logf("%s: %d commands, %d succeed", name, len(cmds), ok)
		writeCommands(t, name, rec.cmds)
	}
	record("admin-nv", recordNVCommands())
	record("admin-hierarchy-da-clock", recordHierarchyCommands())
	record("admin-symmetric", recordSymmetricCommands())
	record("admin-sequences", recordSequenceCommands())
}

// TestAdminSeedsRun checks that the recorded seeds still drive the
// commands they were recorded for: most of their commands succeed on a
// fresh TPM (a seed whose commands all fail explores only the parsers).
func TestAdminSeedsRun(t *testing.T) {
	for _, name := range []string{"admin-nv", "admin-hierarchy-da-clock", "admin-symmetric", "admin-sequences"} {
		b := readSeed(t, name)
		v := newTestTPM(t)
		ok, n := 0, 0
		for _, cmd := range splitCommands(b) {
			rsp, _ := v.Send(cmd)
			n++
			if rcOf(rsp) == rcSuccess {
				ok++
			}
		}
		if n == 0 || ok*2 < n {
			t.Errorf("%s: %d of %d commands succeed", name, ok, n)
		}
	}
}

func recordNVCommands() [][]byte {
	const a, b, c, bits = 0x01500001, 0x01500002, 0x01500003, 0x01500004
	return [][]byte{
		defineNV(a, []byte("pw"), admNVBase|nvWriteSTClear|nvReadSTClear|nvGlobalLock, 16),
		defineNV(b, nil, admNVBase|nvWriteDefine, 8),
		defineNV(c, nil, admNVBase|nvClearSTClear, 8),
		defineNV(bits, nil, admNVBase|admNVBits|nvWriteSTClear, 8),
		nvWriteCmd(rhOwner, a, nil, []byte("0123456789abcdef"), 0),
		nvWriteCmd(a, a, []byte("pw"), []byte("x"), 3),
		nvWriteCmd(rhOwner, b, nil, []byte("define!!"), 0),
		rawCommand(ccNVSetBits, []uint32{rhOwner, bits}, 1, nil, admU64(0x8001)),
		rawCommand(ccNVSetBits, []uint32{bits, bits}, 1, nil, admU64(2)),
		nvReadCmd(rhOwner, bits, nil, 8, 0),
		rawCommand(ccNVReadLock, []uint32{a, a}, 1, []byte("pw")),
		nvReadCmd(a, a, []byte("pw"), 16, 0),
		rawCommand(ccNVWriteLock, []uint32{rhOwner, b}, 1, nil),
		nvWriteCmd(rhOwner, b, nil, []byte("x"), 0),
		rawCommand(ccNVGlobalWriteLock, []uint32{rhOwner}, 1, nil),
		nvWriteCmd(rhOwner, a, nil, []byte("x"), 0),
		rawCommand(ccNVWriteLock, []uint32{rhOwner, bits}, 1, nil),
		rawCommand(ccNVChangeAuth, []uint32{a}, 1, []byte("pw"), b2b([]byte("new"))),
		rawCommand(ccNVReadPublic, []uint32{a}, 0, nil),
		rawCommand(ccNVReadPublic, []uint32{b}, 0, nil),
		rawCommand(ccNVUndefineSpace, []uint32{rhOwner, c}, 1, nil),
	}
}

func recordHierarchyCommands() [][]byte {
	return [][]byte{
		daParams(5, 100, 100),
		daReset(""),
		rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(0x20E), u32b(4)),
		clockSet(1 << 40),
		rawCommand(ccClockRateAdjust, []uint32{rhOwner}, 1, nil, []byte{0xFF}),
		rawCommand(ccReadClock, nil, 0, nil),
		rawCommand(ccGetTime, []uint32{rhEndorsement, rhNull}, 2, nil, b2b([]byte("nonce")), u16b(algNull)),
		createPrimaryCmdOwner(),
		rawCommand(ccGetTime, []uint32{rhEndorsement, transientFirst}, 2, nil, b2b([]byte("nonce")), u16b(algNull)),
		pcrAllocate(bankSel(nil, []uint16{algSHA1})),
		rawCommand(ccShutdown, nil, 0, nil, u16b(suState)),
		hierarchyControl(rhOwner, rhEndorsement, 0),
		hierarchyControl(rhEndorsement, rhEndorsement, 0),
		hierarchyControl(rhPlatform, rhEndorsement, 1),
		hierarchyControl(rhPlatform, rhPlatformNV, 0),
		hierarchyControl(rhPlatform, rhPlatformNV, 1),
		hierarchyControl(rhOwner, rhOwner, 0),
		rawCommand(ccReadPublic, []uint32{transientFirst}, 0, nil),
		hierarchyControl(rhPlatform, rhOwner, 1),
	}
}

func recordSymmetricCommands() [][]byte {
	key := bytes.Repeat([]byte{0x42}, 16)
	iv := []byte("0123456789abcdef")
	msg := bytes.Repeat([]byte("plaintext "), 10)
	cmds := [][]byte{symKeyCmd(key, algNull, symAttrs)}
	h := uint32(transientFirst)
	for _, mode := range symModes {
		ivIn := iv
		if mode == algECB {
			ivIn = nil
		}
		cmds = append(cmds, encryptDecrypt2(h, msg[:96], false, mode, ivIn), encryptDecrypt(h, msg[:96], true, mode, ivIn))
	}
	cmds = append(cmds,
		encryptDecrypt2(h, msg[:5], false, algCFB, iv[:8]),
		symKeyCmd(bytes.Repeat([]byte{1}, 32), algCTR, symAttrs),
		encryptDecrypt2(h+1, msg, false, algNull, iv),
		hmacKeyCmd([]byte("hmac key"), algHMAC, algSHA256, hmacAttrs),
		hmacCmd(h+2, msg, algNull),
		hmacCmd(h+2, msg, algSHA256),
		hmacCmd(h+2, msg, algSHA1),
	)
	return cmds
}

func recordSequenceCommands() [][]byte {
	data := bytes.Repeat([]byte("sequence data "), 20)
	h := uint32(transientFirst)
	return [][]byte{
		hashSeqStart([]byte("a"), algSHA256),
		seqUpdate(h, []byte("a"), data),
		seqUpdate(h, []byte("a"), data),
		seqComplete(h, []byte("a"), data, rhOwner),
		hashSeqStart(nil, algNull),
		seqUpdate(h, nil, data),
		eventSeqComplete(16, h, nil, data),
		hmacKeyCmd([]byte("hmac key"), algHMAC, algSHA384, hmacAttrs),
		hmacSeqStart(h, []byte("b"), algNull),
		seqUpdate(h+1, []byte("b"), data),
		seqComplete(h+1, []byte("b"), data, rhNull),
		hashSeqStart(nil, algSHA1),
		seqUpdate(h+1, nil, []byte{0xff, 0x54, 0x43, 0x47}),
		seqComplete(h+1, nil, nil, rhEndorsement),
		hashSeqStart(nil, algSHA512),
		rawCommand(ccFlushContext, nil, 0, nil, u32b(h+1)),
		seqUpdate(h+1, nil, data),
	}
}

func readSeed(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "commands", name+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
