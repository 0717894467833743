package vtpm

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// bankSel marshals a TPML_PCR_SELECTION of whole banks: each alg with
// every PCR selected, or none for the algs in none.
func bankSel(all []uint16, none []uint16) []byte {
	var w writer
	w.u32(uint32(len(all) + len(none)))
	for _, a := range all {
		w.u16(a)
		w.u8(3)
		w.raw([]byte{0xFF, 0xFF, 0xFF})
	}
	for _, a := range none {
		w.u16(a)
		w.u8(3)
		w.raw([]byte{0, 0, 0})
	}
	return w.b
}

func pcrAllocate(sel []byte) []byte {
	return rawCommand(ccPCRAllocate, []uint32{rhPlatform}, 1, nil, sel)
}

// TestPCRAllocateAtNextReset deallocates the SHA-1 bank and checks that
// nothing changes until the next Startup(CLEAR), that Shutdown(STATE) is
// refused meanwhile, and that afterwards the bank is neither read, nor
// extended, nor quoted.
func TestPCRAllocateAtNextReset(t *testing.T) {
	v := newTestTPM(t)
	p := admMust(t, v, rcSuccess, pcrAllocate(bankSel(nil, []uint16{algSHA1})))
	want := bytesOf([]byte{1}, u32b(numPCRs), u32b(numPCRs*(32+48+64)), u32b(pcrBanksSize))
	if got := rspParams(p, false); !bytes.Equal(got, want) {
		t.Errorf("PCR_Allocate response %x, want %x", got, want)
	}
	read := rawCommand(ccPCRRead, nil, 0, nil, bankSel([]uint16{algSHA1, algSHA256}, nil))
	before := admMust(t, v, rcSuccess, read)
	if n := admBE32(before[4+4+6*2:]); n != 8 {
		t.Fatalf("PCR_Read before the reset: %d digests", n)
	}
	admMust(t, v, qualify(rcType, rcP|rcN), rawCommand(ccShutdown, nil, 0, nil, u16b(suState)))
	powerRestart(t, v, suClear, suClear)
	after := admMust(t, v, rcSuccess, read)
	// The SHA-1 selection comes back empty; the SHA-256 one has the
	// first 8 PCRs.
	sels := after[4 : 4+4+2*6]
	if want := bytesOf(u32b(2), u16b(algSHA1), []byte{3, 0, 0, 0}, u16b(algSHA256), []byte{3, 0xFF, 0, 0}); !bytes.Equal(sels, want) {
		t.Errorf("PCR_Read selection %x, want %x", sels, want)
	}
	// Extending the SHA-1 bank changes nothing, and does not count.
	sha1PCR := append([]byte(nil), v.s.PCR.get(algSHA1, 1)...)
	admMust(t, v, rcSuccess, rawCommand(ccPCRExtend, []uint32{1}, 1, nil, u32b(1), u16b(algSHA1), make([]byte, 20)))
	if !bytes.Equal(v.s.PCR.get(algSHA1, 1), sha1PCR) {
		t.Error("an unallocated PCR was extended")
	}
	if v.s.PCRCounter != 0 {
		t.Errorf("pcrUpdateCounter %d after extending an unallocated PCR", v.s.PCRCounter)
	}
	// The allocation survives Seal and Open, and may be undone.
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.pcrAllocated(algSHA1, 0) || !w.pcrAllocated(algSHA256, 0) {
		t.Error("allocation lost by Seal and Open")
	}
	admMust(t, w, rcSuccess, pcrAllocate(bankSel([]uint16{algSHA1}, nil)))
	powerRestart(t, w, suClear, suClear)
	if !w.pcrAllocated(algSHA1, 0) {
		t.Error("SHA-1 bank not allocated again")
	}
}

// TestPCRAllocateKeepsCRTMPCRs checks that the H-CRTM PCR 0 and the D-RTM
// PCR 17 cannot be deallocated from every bank.
func TestPCRAllocateKeepsCRTMPCRs(t *testing.T) {
	v := newTestTPM(t)
	admMust(t, v, rcPCR, pcrAllocate(bankSel(nil, hashAlgs[:])))
	admMust(t, v, qualify(rcValue, rcH|rcN), rawCommand(ccPCRAllocate, []uint32{rhOwner}, 1, nil, bankSel(nil, nil)))
	if v.s.PCRAllocPending {
		t.Error("a refused allocation is pending")
	}
}

// TestDifferentialPCRAllocate compares PCR_Allocate and its effect after
// TPM Reset with the reference TPM.
func TestDifferentialPCRAllocate(t *testing.T) {
	d := newDual(t)
	partial := bytesOf(u32b(1), u16b(algSHA384), []byte{3, 0x0F, 0x00, 0x02})
	for _, cmd := range [][]byte{
		pcrAllocate(bankSel(nil, hashAlgs[:])),
		pcrAllocate(bytesOf(u32b(1), u16b(algSHA256), []byte{2, 0xFF, 0xFF})),
		pcrAllocate(bytesOf(u32b(1), u16b(0x99), []byte{3, 0xFF, 0xFF, 0xFF})),
		pcrAllocate(bytesOf(u32b(5))),
		rawCommand(ccPCRAllocate, []uint32{rhOwner}, 1, nil, bankSel(nil, nil)),
		pcrAllocate(bankSel(nil, []uint16{algSHA1, algSHA512})),
		pcrAllocate(partial),
		pcrAllocate(bankSel(nil, nil)),
		// The last one wins, applied to the current allocation.
		pcrAllocate(bytesOf(u32b(3), u16b(algSHA1), []byte{3, 0, 0, 0}, partial[4:], u16b(algSHA512), []byte{3, 0, 0, 0})),
		rawCommand(ccShutdown, nil, 0, nil, u16b(suState)),
	} {
		sameResponse(t, d, cmd)
	}
	dualReset(t, d)
	ext := func(pcr uint32) []byte {
		return rawCommand(ccPCRExtend, []uint32{pcr}, 1, nil, u32b(4),
			u16b(algSHA1), bytes.Repeat([]byte{1}, 20), u16b(algSHA256), bytes.Repeat([]byte{2}, 32),
			u16b(algSHA384), bytes.Repeat([]byte{3}, 48), u16b(algSHA512), bytes.Repeat([]byte{4}, 64))
	}
	for _, cmd := range [][]byte{
		ext(0), ext(1), ext(4), ext(16), ext(23),
		rawCommand(ccPCREvent, []uint32{2}, 1, nil, b2b([]byte("event"))),
		rawCommand(ccPCRRead, nil, 0, nil, bankSel(hashAlgs[:], nil)),
		rawCommand(ccPCRRead, nil, 0, nil, bytesOf(u32b(1), u16b(algSHA384), []byte{3, 0xFF, 0xFF, 0xFF})),
		rawCommand(ccPCRRead, nil, 0, nil, bytesOf(u32b(2), u16b(algSHA1), []byte{3, 0xFF, 0xFF, 0xFF}, u16b(algSHA512), []byte{3, 0xFF, 0xFF, 0xFF})),
		rawCommand(ccPCRRead, nil, 0, nil, bytesOf(u32b(1), u16b(algSHA256), []byte{3, 0x13, 0x00, 0x81})),
		pcrAllocate(bankSel(hashAlgs[:], nil)),
	} {
		sameRC(t, d, cmd)
		read := rawCommand(ccPCRRead, nil, 0, nil, bankSel([]uint16{algSHA1, algSHA384}, nil))
		b := simSend(d.sim, read)
		c, _ := d.v.Send(read)
		if !bytes.Equal(b[14:], c[14:]) {
			t.Errorf("after %#x: PCRs differ\nvtpm      %x\nreference %x", ccOf(cmd), c, b)
		}
	}
	dualReset(t, d)
	read := rawCommand(ccPCRRead, nil, 0, nil, bankSel(hashAlgs[:], nil))
	a, _ := d.v.Send(read)
	if b := simSend(d.sim, read); !bytes.Equal(maskCounter(read, a), maskCounter(read, b)) {
		t.Errorf("PCR_Read after the second reset\nvtpm      %x\nreference %x", a, b)
	}
}

// TestQuoteSelectionLeavesOutUnallocatedPCRs: a quote's attested selection
// names only allocated PCRs, like its digest, so a verifier is never told
// that an unallocated (never extended) bank was quoted.
func TestQuoteSelectionLeavesOutUnallocatedPCRs(t *testing.T) {
	v := newTestTPM(t)
	admMust(t, v, rcSuccess, pcrAllocate(bankSel(nil, []uint16{algSHA1})))
	powerRestart(t, v, suClear, suClear)
	rsp, err := tpm2.Quote{
		SignHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHNull, Auth: tpm2.PasswordAuth(nil)},
		InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0xFF, 0, 0}},
			{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xFF, 0, 0}},
		}},
	}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	att, err := rsp.Quoted.Contents()
	if err != nil {
		t.Fatal(err)
	}
	q, err := att.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range q.PCRSelect.PCRSelections {
		want := []byte{0xFF, 0, 0}
		if s.Hash == tpm2.TPMAlgSHA1 {
			want = []byte{0, 0, 0}
		}
		if !bytes.Equal(s.PCRSelect, want) {
			t.Errorf("quoted selection of bank %v: %x, want %x", s.Hash, s.PCRSelect, want)
		}
	}
}

// TestCapabilityPCRsReportsAllocation: TPM_CAP_PCRS reports the current
// allocation, as on the reference TPM, before and after the reset that
// applies a PCR_Allocate.
func TestCapabilityPCRsReportsAllocation(t *testing.T) {
	d := newDual(t)
	getPCRs := rawCommand(ccGetCapability, nil, 0, nil, u32b(capPCRs), u32b(0), u32b(1))
	sameResponse(t, d, getPCRs)
	sameRC(t, d, pcrAllocate(bytesOf(u32b(2), u16b(algSHA1), []byte{3, 0, 0, 0}, u16b(algSHA384), []byte{3, 0x0F, 0x00, 0x02})))
	sameResponse(t, d, getPCRs)
	dualReset(t, d)
	sameResponse(t, d, getPCRs)
}
