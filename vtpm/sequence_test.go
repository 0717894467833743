package vtpm

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"hash"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

func hashSeqStart(auth []byte, alg uint16) []byte {
	return rawCommand(ccHashSequenceStart, nil, 0, nil, b2b(auth), u16b(alg))
}

func hmacSeqStart(key uint32, auth []byte, alg uint16) []byte {
	return rawCommand(ccHMACStart, []uint32{key}, 1, []byte("keypw"), b2b(auth), u16b(alg))
}

func seqUpdate(h uint32, pw, data []byte) []byte {
	return rawCommand(ccSequenceUpdate, []uint32{h}, 1, pw, b2b(data))
}

func seqComplete(h uint32, pw, data []byte, hier uint32) []byte {
	return rawCommand(ccSequenceComplete, []uint32{h}, 1, pw, b2b(data), u32b(hier))
}

// eventSeqComplete authorizes the PCR with the empty password and the
// sequence with pw.
func eventSeqComplete(pcr, h uint32, pw, data []byte) []byte {
	var a writer
	for _, auth := range [][]byte{nil, pw} {
		a.u32(rsPW)
		a.u16(0)
		a.u8(saContinueSession)
		a.b2b(auth)
	}
	cmd := bytesOf(u16b(stSessions), u32b(0), u32b(ccEventSequenceComplete), u32b(pcr), u32b(h), u32b(uint32(len(a.b))), a.b, b2b(data))
	binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
	return cmd
}

// startSeq runs a sequence start command and returns the handle.
func startSeq(t testing.TB, tp transport.TPM, cmd []byte) uint32 {
	t.Helper()
	return admBE32(admMust(t, tp, rcSuccess, cmd))
}

// completeResult parses SequenceComplete's result and validation ticket.
func completeResult(p []byte) (digest []byte, hier uint32, ticket []byte) {
	r := newReader(rspParams(p, false))
	digest = r.b2b(maxDigestSize)
	r.u16()
	hier = r.u32()
	ticket = r.b2b(maxDigestSize)
	return
}

// TestHashSequence hashes 1 MiB in pieces with every algorithm, checks
// the digest, and checks that the hashcheck ticket equals TPM2_Hash's for
// the same data (a restricted key accepts either).
func TestHashSequence(t *testing.T) {
	v := newTestTPM(t)
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 31)
	}
	for _, alg := range hashAlgs {
		h := startSeq(t, v, hashSeqStart([]byte("seqpw"), alg))
		off := 0
		for ; off+1000 < len(data); off += 1000 {
			admMust(t, v, rcSuccess, seqUpdate(h, []byte("seqpw"), data[off:off+1000]))
		}
		d, hier, ticket := completeResult(admMust(t, v, rcSuccess, seqComplete(h, []byte("seqpw"), data[off:], rhOwner)))
		if want := digestOf(alg, data); !bytes.Equal(d, want) {
			t.Errorf("alg %#x: digest %x, want %x", alg, d, want)
		}
		if hier != rhOwner || !bytes.Equal(ticket, v.ticket(rhOwner, alg, stHashCheck, d)) {
			t.Errorf("alg %#x: ticket %#x %x", alg, hier, ticket)
		}
		// The sequence is gone.
		admMust(t, v, rcReferenceH0, seqUpdate(h, []byte("seqpw"), nil))
	}
	// The ticket for a short message equals TPM2_Hash's.
	h := startSeq(t, v, hashSeqStart(nil, algSHA256))
	admMust(t, v, rcSuccess, seqUpdate(h, nil, []byte("hello ")))
	_, _, ticket := completeResult(admMust(t, v, rcSuccess, seqComplete(h, nil, []byte("world"), rhEndorsement)))
	r := newReader(admMust(t, v, rcSuccess, rawCommand(ccHash, nil, 0, nil, b2b([]byte("hello world")), u16b(algSHA256), u32b(rhEndorsement))))
	r.b2b(64)
	r.u16()
	r.u32()
	if want := r.b2b(64); !bytes.Equal(ticket, want) {
		t.Errorf("sequence ticket %x, TPM2_Hash ticket %x", ticket, want)
	}
}

// TestSequenceTicketRefusedForGeneratedValue checks that a hash sequence
// whose data starts with TPM_GENERATED_VALUE gets no ticket, whether the
// prefix comes in the first update, in pieces, or at completion: such a
// digest signed by a restricted key could pass for an attestation.
func TestSequenceTicketRefusedForGeneratedValue(t *testing.T) {
	v := newTestTPM(t)
	gen := []byte{0xff, 0x54, 0x43, 0x47}
	for name, parts := range map[string][][]byte{
		"first update":    {append(gen, "forged quote"...)},
		"split prefix":    {gen[:2], gen[2:], []byte("forged")},
		"at completion":   {nil},
		"short first":     {[]byte("abc"), []byte("defgh")},
		"completion only": nil,
	} {
		t.Run(name, func(t *testing.T) {
			h := startSeq(t, v, hashSeqStart(nil, algSHA256))
			for _, p := range parts {
				if p != nil {
					admMust(t, v, rcSuccess, seqUpdate(h, nil, p))
				}
			}
			last := []byte("tail")
			if name == "at completion" {
				last = append(gen, "forged"...)
			}
			_, hier, ticket := completeResult(admMust(t, v, rcSuccess, seqComplete(h, nil, last, rhOwner)))
			safe := name == "completion only"
			if safe != (hier == rhOwner && len(ticket) == 32) {
				t.Errorf("ticket hierarchy %#x, %d bytes; want a ticket: %v", hier, len(ticket), safe)
			}
		})
	}
}

// TestHMACSequence checks HMAC sequences against crypto/hmac.
func TestHMACSequence(t *testing.T) {
	v := newTestTPM(t)
	for _, tc := range []struct {
		alg uint16
		h   func() hash.Hash
	}{{algSHA1, sha1.New}, {algSHA256, sha256.New}, {algSHA384, sha512.New384}, {algSHA512, sha512.New}} {
		for _, keyLen := range []int{1, 64, 128} {
			key := bytes.Repeat([]byte{byte(keyLen)}, keyLen)
			k := admBE32(admMust(t, v, rcSuccess, hmacKeyCmd(key, algHMAC, tc.alg, hmacAttrs)))
			h := startSeq(t, v, hmacSeqStart(k, []byte("s"), algNull))
			m := hmac.New(tc.h, key)
			for i := 0; i < 5; i++ {
				chunk := bytes.Repeat([]byte{byte(i)}, 100*i)
				m.Write(chunk)
				admMust(t, v, rcSuccess, seqUpdate(h, []byte("s"), chunk))
			}
			m.Write([]byte("end"))
			d, hier, ticket := completeResult(admMust(t, v, rcSuccess, seqComplete(h, []byte("s"), []byte("end"), rhOwner)))
			if !bytes.Equal(d, m.Sum(nil)) || hier != rhNull || len(ticket) != 0 {
				t.Errorf("alg %#x key %d: HMAC %x (ticket %#x), want %x", tc.alg, keyLen, d, hier, m.Sum(nil))
			}
			admMust(t, v, rcSuccess, rawCommand(ccFlushContext, nil, 0, nil, u32b(k)))
		}
	}
}

// TestEventSequence extends the same event into two PCRs, once with
// PCR_Event and once with an event sequence, and checks that the results
// and the PCRs agree in every bank.
func TestEventSequence(t *testing.T) {
	v := newTestTPM(t)
	event := []byte("an event of some length, sent in two pieces")
	want := rspParams(admMust(t, v, rcSuccess, rawCommand(ccPCREvent, []uint32{10}, 1, nil, b2b(event))), false)
	h := startSeq(t, v, hashSeqStart([]byte("e"), algNull))
	admMust(t, v, rcSuccess, seqUpdate(h, []byte("e"), event[:10]))
	admMust(t, v, qualify(rcMode, rcH|rcN), seqComplete(h, []byte("e"), nil, rhNull))
	got := rspParams(admMust(t, v, rcSuccess, eventSeqComplete(11, h, []byte("e"), event[10:])), false)
	if !bytes.Equal(got, want) {
		t.Errorf("EventSequenceComplete %x, PCR_Event %x", got, want)
	}
	for _, alg := range hashAlgs {
		if !bytes.Equal(v.s.PCR.get(alg, 10), v.s.PCR.get(alg, 11)) {
			t.Errorf("bank %#x: PCR 10 %x, PCR 11 %x", alg, v.s.PCR.get(alg, 10), v.s.PCR.get(alg, 11))
		}
	}
	// An event sequence completed with TPM_RH_NULL extends nothing, and
	// one for a locality-4 PCR is refused.
	h = startSeq(t, v, hashSeqStart(nil, algNull))
	admMust(t, v, rcLocality, eventSeqComplete(17, h, nil, nil))
	admMust(t, v, rcSuccess, eventSeqComplete(rhNull, h, nil, nil))
}

// TestSequenceSlots checks that sequences use the transient object
// slots: they run out with the objects, FlushContext frees them, and a
// sequence handle is not an object for other commands.
func TestSequenceSlots(t *testing.T) {
	v := newTestTPM(t)
	var hs []uint32
	for i := 0; i < maxLoadedObjects; i++ {
		hs = append(hs, startSeq(t, v, hashSeqStart(nil, algSHA256)))
	}
	admMust(t, v, rcObjectMemory, hashSeqStart(nil, algSHA256))
	admMust(t, v, rcObjectMemory, createPrimaryCmdOwner())
	admMust(t, v, rcSequence, rawCommand(ccReadPublic, []uint32{hs[0]}, 0, nil))
	admMust(t, v, qualify(rcAttributes, rcH|rcN), rawCommand(ccUnseal, []uint32{hs[0]}, 1, nil))
	admMust(t, v, qualify(rcAttributes, rcH|2*rcN), rawCommand(ccEvictControl, []uint32{rhOwner, hs[0]}, 1, nil, u32b(0x81000002)))
	for _, h := range hs {
		admMust(t, v, rcSuccess, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
	}
	if len(v.s.Sequences) != 0 {
		t.Errorf("%d sequences left after flushing them all", len(v.s.Sequences))
	}
	// A flushed slot reused by an object is not a sequence.
	p := admMust(t, v, rcSuccess, createPrimaryCmdOwner())
	admMust(t, v, qualify(rcMode, rcH|rcN), seqUpdate(admBE32(p), nil, []byte("x")))
}

// TestSequenceAuthNotDictionaryAttacked checks that guessing a sequence's
// authValue fails with TPM_RC_BAD_AUTH and never locks the TPM out.
func TestSequenceAuthNotDictionaryAttacked(t *testing.T) {
	v := newTestTPM(t)
	h := startSeq(t, v, hashSeqStart([]byte("right"), algSHA256))
	for i := 0; i < 5; i++ {
		admMust(t, v, admBadAuth, seqUpdate(h, []byte("wrong"), nil))
	}
	admMust(t, v, rcSuccess, seqUpdate(h, []byte("right"), nil))
	if got := admProperty(t, v, 0x20E); got != 0 {
		t.Errorf("lockout counter %d", got)
	}
}

// TestSequenceSurvivesSealOpen seals a TPM in the middle of every kind
// of sequence and finishes them on the opened copy.
func TestSequenceSurvivesSealOpen(t *testing.T) {
	v := newTestTPM(t)
	k := admBE32(admMust(t, v, rcSuccess, hmacKeyCmd([]byte("key"), algHMAC, algSHA256, hmacAttrs)))
	hh := startSeq(t, v, hashSeqStart([]byte("a"), algSHA384))
	hm := startSeq(t, v, hmacSeqStart(k, []byte("b"), algNull))
	he := startSeq(t, v, hashSeqStart([]byte("c"), algNull))
	for _, h := range []uint32{hh, hm, he} {
		pw := map[uint32][]byte{hh: []byte("a"), hm: []byte("b"), he: []byte("c")}[h]
		admMust(t, v, rcSuccess, seqUpdate(h, pw, []byte("first half ")))
	}
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	msg := []byte("first half second half")
	d, _, _ := completeResult(admMust(t, w, rcSuccess, seqComplete(hh, []byte("a"), []byte("second half"), rhNull)))
	if !bytes.Equal(d, digestOf(algSHA384, msg)) {
		t.Errorf("hash sequence after Open: %x", d)
	}
	m := hmac.New(sha256.New, []byte("key"))
	m.Write(msg)
	d, _, _ = completeResult(admMust(t, w, rcSuccess, seqComplete(hm, []byte("b"), []byte("second half"), rhNull)))
	if !bytes.Equal(d, m.Sum(nil)) {
		t.Errorf("HMAC sequence after Open: %x", d)
	}
	got := rspParams(admMust(t, w, rcSuccess, eventSeqComplete(rhNull, he, []byte("c"), []byte("second half"))), false)
	if !bytes.Contains(got, digestOf(algSHA512, msg)) {
		t.Errorf("event sequence after Open: %x", got)
	}
	// The original continues independently.
	admMust(t, v, rcSuccess, seqComplete(hh, []byte("a"), nil, rhNull))
}

// TestSequenceGoTPM runs a hash sequence with go-tpm's commands.
func TestSequenceGoTPM(t *testing.T) {
	v := newTestTPM(t)
	start, err := tpm2.HashSequenceStart{Auth: tpm2.TPM2BAuth{Buffer: []byte("pw")}, HashAlg: tpm2.TPMAlgSHA256}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	seq := tpm2.AuthHandle{Handle: start.SequenceHandle, Auth: pwAuth([]byte("pw"))}
	if _, err := (tpm2.SequenceUpdate{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: []byte("abc")}}).Execute(v); err != nil {
		t.Fatal(err)
	}
	rsp, err := tpm2.SequenceComplete{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: []byte("def")}, Hierarchy: tpm2.TPMRHOwner}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256([]byte("abcdef")); !bytes.Equal(rsp.Result.Buffer, want[:]) {
		t.Errorf("digest %x", rsp.Result.Buffer)
	}
}

// TestDifferentialSequences runs hash, HMAC and event sequences and their
// errors on both TPMs and compares the responses byte for byte (tickets
// excepted: they are keyed with each TPM's own proof).
func TestDifferentialSequences(t *testing.T) {
	d := newDual(t)
	data := bytes.Repeat([]byte("0123456789"), 100)
	start := func(cmd []byte) uint32 {
		rsp := sameResponse(t, d, cmd)
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("start %#x: rc %#x", ccOf(cmd), rcOf(rsp))
		}
		return admBE32(rsp[10:])
	}
	for _, alg := range []uint16{algSHA1, algSHA256, algSHA384, algSHA512} {
		h := start(hashSeqStart([]byte("pw"), alg))
		sameResponse(t, d, seqUpdate(h, []byte("pw"), data))
		sameResponse(t, d, seqUpdate(h, []byte("pw"), nil))
		sameResponse(t, d, seqUpdate(h, []byte("pw"), make([]byte, 1025)))
		sameResponse(t, d, seqUpdate(h, []byte("pw"), append(b2b(data), 0)))
		sameResponse(t, d, seqUpdate(h, []byte("bad"), data))
		sameResponse(t, d, eventSeqComplete(rhNull, h, []byte("pw"), nil))
		sameResponse(t, d, seqComplete(h, []byte("pw"), data, 0x40000002))
		sameResponse(t, d, seqComplete(h, []byte("pw"), data, rhNull))
		sameResponse(t, d, seqUpdate(h, []byte("pw"), data))
	}
	// A hash sequence with a ticket: the digest and the hierarchy agree.
	// (The ticket's HMAC differs in key, and in form: this TPM's
	// hashcheck tickets, which TPM2_Hash and TPM2_Sign share, are
	// HMAC-nameAlg over tag and digest; the reference's HMAC-SHA512 over
	// tag, hashAlg and digest.)
	h := start(hashSeqStart(nil, algSHA256))
	a, _ := d.v.Send(seqComplete(h, nil, data, rhOwner))
	b := simSend(d.sim, seqComplete(h, nil, data, rhOwner))
	da, ha, ta := completeResult(a[10:])
	db, hb, tb := completeResult(b[10:])
	if !bytes.Equal(da, db) || ha != hb || len(ta) == 0 || len(tb) == 0 {
		t.Errorf("SequenceComplete with a ticket\nvtpm      %x\nreference %x", a, b)
	}
	sameResponse(t, d, hashSeqStart(nil, 0x99))
	sameResponse(t, d, hashSeqStart(make([]byte, 65), algSHA256))
	// HMAC sequences.
	k := start(hmacKeyCmd([]byte("hmac key"), algHMAC, algSHA384, hmacAttrs))
	for _, alg := range []uint16{algNull, algSHA384, algSHA256, 0x99} {
		rsp := sameResponse(t, d, hmacSeqStart(k, []byte("s"), alg))
		if rcOf(rsp) != rcSuccess {
			continue
		}
		h := admBE32(rsp[10:])
		sameResponse(t, d, seqUpdate(h, []byte("s"), data))
		sameResponse(t, d, seqComplete(h, []byte("s"), data, rhOwner))
	}
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(k)))
	// Event sequences, into a PCR then read back.
	for _, pcr := range []uint32{rhNull, 5, 16, 17} {
		h := start(hashSeqStart([]byte("e"), algNull))
		sameResponse(t, d, seqUpdate(h, []byte("e"), data))
		sameResponse(t, d, seqComplete(h, []byte("e"), nil, rhNull))
		sameResponse(t, d, eventSeqComplete(pcr, h, []byte("e"), data[:100]))
		if rcOf(sameRC(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))) != rcSuccess {
			continue
		}
	}
	read := rawCommand(ccPCRRead, nil, 0, nil, bytesOf(u32b(2), u16b(algSHA1), []byte{3, 0x20, 0, 0}, u16b(algSHA512), []byte{3, 0x20, 0, 0}))
	va, _ := d.v.Send(read)
	if vb := simSend(d.sim, read); !bytes.Equal(maskCounter(read, va), maskCounter(read, vb)) {
		t.Errorf("PCR 5 after an event sequence\nvtpm      %x\nreference %x", va, vb)
	}
	// Flushing a sequence frees its slot on both.
	h = start(hashSeqStart(nil, algSHA1))
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
	sameResponse(t, d, seqUpdate(h, nil, data))
}

// FuzzSequenceState feeds the sealed form of a sequence to its decoder,
// which Open runs on every sealed state. Seeds are real sequences of each
// kind, sealed mid-stream. Whatever decodes must encode again to the same
// bytes and keep hashing.
func FuzzSequenceState(f *testing.F) {
	v := newTestTPM(f)
	k := admBE32(admMust(f, v, rcSuccess, hmacKeyCmd([]byte("key"), algHMAC, algSHA256, hmacAttrs)))
	for _, cmd := range [][]byte{hashSeqStart(nil, algSHA1), hashSeqStart(nil, algSHA512), hashSeqStart(nil, algNull), hmacSeqStart(k, nil, algNull)} {
		h := startSeq(f, v, cmd)
		admMust(f, v, rcSuccess, seqUpdate(h, nil, []byte("some data")))
		b, err := v.s.Sequences[h].MarshalCBOR()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var q sequence
		if err := q.UnmarshalCBOR(b); err != nil {
			return
		}
		out, err := q.MarshalCBOR()
		if err != nil {
			t.Fatalf("re-encoding a decoded sequence: %v", err)
		}
		var q2 sequence
		if err := q2.UnmarshalCBOR(out); err != nil {
			t.Fatalf("decoding a re-encoded sequence: %v", err)
		}
		out2, _ := q2.MarshalCBOR()
		if !bytes.Equal(out, out2) {
			t.Fatalf("not a fixed point:\n%x\n%x", out, out2)
		}
		for _, h := range q.h {
			h.Write([]byte("more"))
			h.Sum(nil)
		}
		if q.kind == seqHMAC {
			q.hmacSum()
		}
	})
}
