package vtpm

import (
	"bytes"
	"encoding"
	"encoding/binary"
	mrand "math/rand/v2"
	"testing"
	"testing/cryptotest"

	"github.com/google/go-tpm/tpm2/transport"
)

func contextSave(h uint32) []byte { return rawCommand(ccContextSave, []uint32{h}, 0, nil) }

// contextLoad loads the TPMS_CONTEXT of a ContextSave response.
func contextLoad(saveRsp []byte) []byte { return rawCommand(ccContextLoad, nil, 0, nil, saveRsp[10:]) }

func flushHandleCmd(h uint32) []byte { return rawCommand(ccFlushContext, nil, 0, nil, u32b(h)) }

// saveOn sends ContextSave to one TPM and returns the response, which
// must succeed.
func saveOn(t testing.TB, tp transport.TPM, h uint32) []byte {
	t.Helper()
	rsp, err := tp.Send(contextSave(h))
	if err != nil || rcOf(rsp) != rcSuccess {
		t.Fatalf("ContextSave(%#x): rc %#x %v", h, rcOf(rsp), err)
	}
	return rsp
}

// dualSaveFlushLoad saves the context of h on both TPMs of d, flushes h,
// loads each TPM's own context back and checks that both answer the
// same (the response of ContextLoad is the new handle). It returns the
// new handle and the two contexts.
func dualSaveFlushLoad(t *testing.T, d *dual, h uint32) (uint32, []byte, []byte) {
	t.Helper()
	a, b := saveOn(t, d.v, h), saveOn(t, simTPM{d.sim}, h)
	if binary.BigEndian.Uint32(a[18:]) != savedSequence || !bytes.Equal(a[18:26], b[18:26]) {
		t.Errorf("saved handle and hierarchy: vtpm %x, reference %x", a[18:26], b[18:26])
	}
	sameResponse(t, d, flushHandleCmd(h))
	la, _ := d.v.Send(contextLoad(a))
	lb := simSend(d.sim, contextLoad(b))
	if !bytes.Equal(la, lb) || rcOf(la) != rcSuccess {
		t.Fatalf("ContextLoad\nvtpm      %x\nreference %x", la, lb)
	}
	return admBE32(la[10:]), a, b
}

// TestDifferentialSequenceContext starts hash, HMAC and event sequences on
// the vTPM and the reference TPM, updates them, saves their contexts,
// flushes them, loads the contexts back, updates and completes them, and
// compares every response byte for byte: the sequences continue where
// they were, with their authValue (a wrong one is TPM_RC_BAD_AUTH on
// both, the right one works). Hashcheck tickets are keyed with each TPM's
// own proof: their hierarchies are compared with the reference, and the
// tickets with the vTPM's ticket for the same digest, which a sequence
// that was never saved gets.
func TestDifferentialSequenceContext(t *testing.T) {
	d := newDual(t)
	data := bytes.Repeat([]byte("sequence context "), 50)
	start := func(cmd []byte) uint32 {
		rsp := sameResponse(t, d, cmd)
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("start %#x: rc %#x", ccOf(cmd), rcOf(rsp))
		}
		return admBE32(rsp[10:])
	}
	pw := []byte("seq auth")
	for _, alg := range []uint16{algSHA1, algSHA256, algSHA384, algSHA512} {
		h := start(hashSeqStart(pw, alg))
		sameResponse(t, d, seqUpdate(h, pw, data[:333]))
		h, _, _ = dualSaveFlushLoad(t, d, h)
		sameResponse(t, d, seqUpdate(h, []byte("wrong"), data))
		sameResponse(t, d, seqUpdate(h, pw, data[333:]))
		// Saved and loaded twice: the state is still the same.
		h, _, _ = dualSaveFlushLoad(t, d, h)
		sameResponse(t, d, seqComplete(h, pw, []byte("end"), rhNull))
		sameResponse(t, d, seqUpdate(h, pw, nil)) // completed: flushed
	}
	// With a ticket.
	h := start(hashSeqStart(nil, algSHA256))
	sameResponse(t, d, seqUpdate(h, nil, data))
	h, _, _ = dualSaveFlushLoad(t, d, h)
	a, _ := d.v.Send(seqComplete(h, nil, data, rhOwner))
	b := simSend(d.sim, seqComplete(h, nil, data, rhOwner))
	da, ha, ta := completeResult(a[10:])
	db, hb, tb := completeResult(b[10:])
	if !bytes.Equal(da, db) || ha != hb || ha != rhOwner || len(tb) == 0 {
		t.Errorf("SequenceComplete with a ticket after ContextLoad\nvtpm      %x\nreference %x", a, b)
	}
	if want := d.v.ticket(rhOwner, algSHA256, stHashCheck, da); !bytes.Equal(ta, want) {
		t.Errorf("ticket after ContextLoad %x, without the save %x", ta, want)
	}
	// The first block decides the ticket, before and after the save.
	gen := []byte{0xff, 0x54, 0x43, 0x47}
	for _, tc := range []struct{ first, next []byte }{
		{append(gen, 1), []byte("safe")}, {[]byte("ab"), []byte("safe")}, {[]byte("safe"), gen}, {nil, gen}, {nil, []byte("safe")},
	} {
		first := tc.first
		h := start(hashSeqStart(nil, algSHA384))
		if first != nil {
			sameResponse(t, d, seqUpdate(h, nil, first))
		}
		h, _, _ = dualSaveFlushLoad(t, d, h)
		sameResponse(t, d, seqUpdate(h, nil, tc.next))
		a, _ := d.v.Send(seqComplete(h, nil, data, rhEndorsement))
		b := simSend(d.sim, seqComplete(h, nil, data, rhEndorsement))
		da, ha, ta := completeResult(a[10:])
		db, hb, tb := completeResult(b[10:])
		if !bytes.Equal(da, db) || ha != hb || (len(ta) == 0) != (len(tb) == 0) {
			t.Errorf("first block %x: SequenceComplete\nvtpm      %x\nreference %x", first, a, b)
		}
	}
	// HMAC sequences.
	k := start(hmacKeyCmd([]byte("hmac key"), algHMAC, algSHA384, hmacAttrs))
	for _, alg := range []uint16{algNull, algSHA384} {
		h := start(hmacSeqStart(k, pw, alg))
		sameResponse(t, d, seqUpdate(h, pw, data))
		h, _, _ = dualSaveFlushLoad(t, d, h)
		sameResponse(t, d, seqUpdate(h, []byte("wrong"), data))
		sameResponse(t, d, seqUpdate(h, pw, data[:100]))
		sameResponse(t, d, seqComplete(h, pw, data[:7], rhOwner))
	}
	// An HMAC sequence saved before any data, whose key is flushed
	// before the load: the sequence does not need its key.
	h = start(hmacSeqStart(k, nil, algNull))
	ctxA, ctxB := saveOn(t, d.v, h), saveOn(t, simTPM{d.sim}, h)
	sameResponse(t, d, flushHandleCmd(h))
	sameResponse(t, d, flushHandleCmd(k))
	la, _ := d.v.Send(contextLoad(ctxA))
	if lb := simSend(d.sim, contextLoad(ctxB)); !bytes.Equal(la, lb) {
		t.Fatalf("ContextLoad\nvtpm      %x\nreference %x", la, lb)
	}
	sameResponse(t, d, seqComplete(admBE32(la[10:]), nil, data, rhNull))
	// A context loads again while valid, as any object context: each
	// load is its own sequence from the saved state.
	la, _ = d.v.Send(contextLoad(ctxA))
	if lb := simSend(d.sim, contextLoad(ctxB)); !bytes.Equal(la, lb) {
		t.Fatalf("second ContextLoad\nvtpm      %x\nreference %x", la, lb)
	}
	sameResponse(t, d, seqComplete(admBE32(la[10:]), nil, data, rhNull))
	// Event sequences, extended into PCR 16 and read back.
	for _, pcr := range []uint32{rhNull, 16} {
		h := start(hashSeqStart([]byte("e"), algNull))
		sameResponse(t, d, seqUpdate(h, []byte("e"), data))
		h, _, _ = dualSaveFlushLoad(t, d, h)
		sameResponse(t, d, seqComplete(h, []byte("e"), nil, rhNull))
		sameResponse(t, d, seqUpdate(h, []byte("e"), data[:10]))
		sameResponse(t, d, eventSeqComplete(pcr, h, []byte("e"), data[:100]))
	}
	read := rawCommand(ccPCRRead, nil, 0, nil, bytesOf(u32b(2), u16b(algSHA1), []byte{3, 0, 0, 1}, u16b(algSHA256), []byte{3, 0, 0, 1}))
	if va, vb := sendOne(d.v, read), simSend(d.sim, read); !bytes.Equal(maskCounter(read, va), maskCounter(read, vb)) {
		t.Errorf("PCR 16 after an event sequence\nvtpm      %x\nreference %x", va, vb)
	}
}

// TestDifferentialSequenceContextReplayAfterReset saves a sequence's
// context and loads it after a TPM Reset on both TPMs: the reset ends the
// null hierarchy's epoch, and the context is refused with
// TPM_RC_INTEGRITY, as on the reference.
func TestDifferentialSequenceContextReplayAfterReset(t *testing.T) {
	d := newDual(t)
	h := admBE32(sameResponse(t, d, hashSeqStart(nil, algSHA256))[10:])
	sameResponse(t, d, seqUpdate(h, nil, []byte("before the reset")))
	a, b := saveOn(t, d.v, h), saveOn(t, simTPM{d.sim}, h)
	dualReset(t, d)
	la, _ := d.v.Send(contextLoad(a))
	lb := simSend(d.sim, contextLoad(b))
	if want := qualify(rcIntegrity, rcP|rcN); rcOf(la) != want || rcOf(lb) != want {
		t.Errorf("ContextLoad after a TPM Reset: vtpm rc %#x, reference rc %#x, want %#x", rcOf(la), rcOf(lb), want)
	}
}

// TestSequenceContextTamperRejected changes each part of a sequence
// context that the MAC covers (the encrypted state, the MAC, the
// sequence number, the saved handle, to load it as an ordinary or
// stClear object, and the hierarchy) and checks that every change is
// refused without taking an object slot; on the reference TPM too, for
// the changes whose response code this TPM shares with it.
func TestSequenceContextTamperRejected(t *testing.T) {
	integrity := qualify(rcIntegrity, rcP|rcN)
	tamper := []struct {
		name string
		f    func(ctx []byte) // ctx: the response parameters of ContextSave
		want uint32           // 0: refused with some response code
	}{
		{"state", func(c []byte) { c[len(c)-1] ^= 1 }, integrity},
		{"first state byte", func(c []byte) { c[16+2+2+32] ^= 0x80 }, integrity},
		{"MAC", func(c []byte) { c[16+2+2] ^= 1 }, integrity},
		{"sequence number", func(c []byte) { c[7]++ }, integrity},
		{"as an object", func(c []byte) { binary.BigEndian.PutUint32(c[8:], savedObject) }, integrity},
		{"as an stClear object", func(c []byte) { binary.BigEndian.PutUint32(c[8:], savedSTClear) }, integrity},
		{"into the owner hierarchy", func(c []byte) { binary.BigEndian.PutUint32(c[12:], rhOwner) }, integrity},
		{"into a bad hierarchy", func(c []byte) { binary.BigEndian.PutUint32(c[12:], 0x40000099) }, qualify(rcValue, rcP|rcN)},
		{"MAC cut short", func(c []byte) { binary.BigEndian.PutUint16(c[18:], 2) }, 0},
	}
	run := func(t *testing.T, tp transport.TPM, check func(name string, rc uint32)) {
		h := admBE32(admMust(t, tp, rcSuccess, hashSeqStart([]byte("pw"), algSHA256)))
		admMust(t, tp, rcSuccess, seqUpdate(h, []byte("pw"), []byte("data")))
		ctx := saveOn(t, tp, h)
		admMust(t, tp, rcSuccess, flushHandleCmd(h))
		for _, tc := range tamper {
			c := bytes.Clone(ctx[10:])
			tc.f(c)
			rsp, _ := tp.Send(rawCommand(ccContextLoad, nil, 0, nil, c))
			check(tc.name, rcOf(rsp))
		}
		// The original still loads (the tests above changed copies).
		admMust(t, tp, rcSuccess, contextLoad(ctx))
	}
	v := newTestTPM(t)
	got := map[string]uint32{}
	run(t, v, func(name string, rc uint32) { got[name] = rc })
	for _, tc := range tamper {
		rc := got[tc.name]
		if rc == rcSuccess || tc.want != 0 && rc != tc.want {
			t.Errorf("%s: rc %#x, want %#x", tc.name, rc, tc.want)
		}
	}
	if n := len(v.s.Transient); n != 1 {
		t.Errorf("%d objects loaded after the tampered loads, want 1", n)
	}
	run(t, simTPM{getSim(t)}, func(name string, rc uint32) {
		for _, tc := range tamper {
			if tc.name == name && tc.want != 0 && rc != got[name] {
				t.Errorf("%s: reference rc %#x, vtpm rc %#x", name, rc, got[name])
			}
		}
	})
}

// TestSequenceContextFromAnotherTPMRejected loads one TPM's sequence
// context into another: its MAC is keyed with the first TPM's null proof.
func TestSequenceContextFromAnotherTPMRejected(t *testing.T) {
	v, w := newTestTPM(t), newTestTPM(t)
	h := startSeq(t, v, hashSeqStart(nil, algSHA256))
	admMust(t, w, rcSuccess, hashSeqStart(nil, algSHA256)) // same sequence number and handle
	ctx := saveOn(t, v, h)
	saveOn(t, w, h)
	admMust(t, w, qualify(rcIntegrity, rcP|rcN), contextLoad(ctx))
}

// TestSequenceContextReplayAfterResetRejected checks that a sequence
// context, bound to the null hierarchy's epoch, loads after a TPM Restart
// and a TPM Resume (the reference's sequence contexts do not carry the
// clear count) but not after a TPM Reset, and not after a later TPM Reset
// of a copy opened from a state sealed with the context valid.
func TestSequenceContextReplayAfterResetRejected(t *testing.T) {
	v := newTestTPM(t)
	h := startSeq(t, v, hashSeqStart([]byte("pw"), algSHA256))
	admMust(t, v, rcSuccess, seqUpdate(h, []byte("pw"), []byte("abc")))
	ctx := saveOn(t, v, h)
	complete := func(tp transport.TPM) {
		t.Helper()
		h := admBE32(admMust(t, tp, rcSuccess, contextLoad(ctx)))
		dgst, _, _ := completeResult(admMust(t, tp, rcSuccess, seqComplete(h, []byte("pw"), []byte("def"), rhNull)))
		if want := digestOf(algSHA256, []byte("abcdef")); !bytes.Equal(dgst, want) {
			t.Errorf("digest %x, want %x", dgst, want)
		}
	}
	powerRestart(t, v, suState, suClear) // TPM Restart
	complete(v)
	powerRestart(t, v, suState, suState) // TPM Resume
	complete(v)
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	complete(w)                          // a migrated TPM is the same TPM
	powerRestart(t, v, suClear, suClear) // TPM Reset
	admMust(t, v, qualify(rcIntegrity, rcP|rcN), contextLoad(ctx))
	powerRestart(t, w, suClear, suClear)
	admMust(t, w, qualify(rcIntegrity, rcP|rcN), contextLoad(ctx))
}

// TestSequenceContextDoesNotLeakSecrets checks that a saved HMAC
// sequence's context shows neither its authValue nor its key (the HMAC
// pads) nor its hash state in the clear.
func TestSequenceContextDoesNotLeakSecrets(t *testing.T) {
	v := newTestTPM(t)
	key := bytes.Repeat([]byte("K"), 32)
	auth := []byte("sequence authValue, secret")
	k := admBE32(admMust(t, v, rcSuccess, hmacKeyCmd(key, algHMAC, algSHA256, hmacAttrs)))
	h := startSeq(t, v, hmacSeqStart(k, auth, algNull))
	admMust(t, v, rcSuccess, seqUpdate(h, auth, []byte("data")))
	q := v.s.Sequences[h]
	opad := bytes.Clone(q.opad)
	st, err := q.h[0].(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx := saveOn(t, v, h)[10:]
	for name, secret := range map[string][]byte{"authValue": auth, "outer pad": opad[:16], "inner hash state": st[4:36]} {
		if bytes.Contains(ctx, secret) {
			t.Errorf("the context shows the %s", name)
		}
	}
}

// sequenceContextSeed is the FuzzSend seed of sequence contexts
// (testdata/commands/sequence-contexts.bin): hash, HMAC and event
// sequences saved, flushed, loaded and completed, a context loaded twice
// and a tampered one. It is recorded on FuzzSend's base TPM with
// FuzzSend's randomness, so that its contexts load when FuzzSend replays
// it.
const sequenceContextSeed = "sequence-contexts"

// sequenceContextScenario sends the commands of sequenceContextSeed.
func sequenceContextScenario(d transport.TPM) {
	data := bytes.Repeat([]byte("fuzz seed "), 30)
	h := uint32(transientFirst)
	saveFlushLoad := func(h uint32) []byte {
		ctx := sendOne(d, contextSave(h))
		sendOne(d, flushHandleCmd(h))
		if rcOf(ctx) == rcSuccess {
			sendOne(d, contextLoad(ctx))
		}
		return ctx
	}
	sendOne(d, hashSeqStart([]byte("a"), algSHA256))
	sendOne(d, seqUpdate(h, []byte("a"), data))
	saveFlushLoad(h)
	sendOne(d, seqUpdate(h, []byte("a"), data))
	sendOne(d, seqComplete(h, []byte("a"), data, rhOwner))
	sendOne(d, hmacKeyCmd([]byte("hmac key"), algHMAC, algSHA384, hmacAttrs))
	sendOne(d, hmacSeqStart(h, []byte("b"), algNull))
	sendOne(d, seqUpdate(h+1, []byte("b"), data))
	ctx := saveFlushLoad(h + 1)
	sendOne(d, seqComplete(h+1, []byte("b"), data, rhNull))
	if rcOf(ctx) == rcSuccess {
		sendOne(d, contextLoad(ctx))
		bad := bytes.Clone(ctx)
		bad[len(bad)-1] ^= 1
		sendOne(d, contextLoad(bad))
	}
	sendOne(d, seqComplete(h+1, []byte("b"), nil, rhNull))
	sendOne(d, hashSeqStart(nil, algNull))
	sendOne(d, seqUpdate(h+1, nil, data))
	saveFlushLoad(h + 1)
	sendOne(d, eventSeqComplete(16, h+1, nil, data))
}

// recordOnFuzzBase records the commands of scenario, run on the fuzz
// base TPM with FuzzSend's randomness and the raw client's own
// deterministic nonces, as the FuzzSend seed testdata/commands/name.bin,
// so that FuzzSend replays it with the nonces and context keys it was
// recorded with.
func recordOnFuzzBase(t *testing.T, name string, scenario func(d transport.TPM)) {
	base, err := loadFuzzBase()
	if err != nil {
		t.Fatal(err)
	}
	saveRand := rawClientRand
	defer func() { rawClientRand = saveRand }()
	clientRand := mrand.NewChaCha8([32]byte{'c', 'l', 'i', 'e', 'n', 't'})
	rawClientRand = func(b []byte) { clientRand.Read(b) }
	cryptotest.SetGlobalRandom(t, fuzzRandSeed)
	v, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rec := &sendLog{tpm: v}
	scenario(rec)
	writeCommands(t, name, rec.cmds)
}

// recordSequenceContextCommands writes sequenceContextSeed
// (TestRecordCommands/sequence-contexts).
func recordSequenceContextCommands(t *testing.T) {
	recordOnFuzzBase(t, sequenceContextSeed, sequenceContextScenario)
}

// replaySeed replays a seed of testdata/commands as FuzzSend does and
// returns each command's response code.
func replaySeed(t *testing.T, name string) (ccs, rcs []uint32) {
	b := readSeed(t, name)
	base, err := loadFuzzBase()
	if err != nil {
		t.Fatal(err)
	}
	cryptotest.SetGlobalRandom(t, fuzzRandSeed)
	v, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, cmd := range splitCommands(b) {
		rsp, _ := v.Send(cmd)
		ccs = append(ccs, ccOf(cmd))
		rcs = append(rcs, rcOf(rsp))
	}
	return ccs, rcs
}

// TestSequenceContextSeedReplays checks that FuzzSend, replaying the
// sequence-context seed, gets as far as the recording did: every
// ContextLoad but the tampered one succeeds, and so do the sequences.
func TestSequenceContextSeedReplays(t *testing.T) {
	ccs, rcs := replaySeed(t, sequenceContextSeed)
	loads, failed := 0, 0
	for i, cc := range ccs {
		if cc == ccContextLoad {
			loads++
		}
		if rcs[i] != rcSuccess {
			failed++
			if cc != ccContextLoad {
				t.Errorf("command %d (%#x): rc %#x", i, cc, rcs[i])
			}
		}
	}
	if loads != 5 || failed != 1 {
		t.Errorf("%d ContextLoads, %d commands failed; want 5 and 1 (the tampered context)", loads, failed)
	}
}
