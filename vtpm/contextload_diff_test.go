package vtpm

import (
	"bytes"
	"testing"
)

// TestDifferentialContextLoadMalformed loads saved object and session
// contexts with a changed hierarchy, saved handle or blob on both TPMs:
// the response codes must be the reference's, parameter numbers included.
// The two TPMs' blobs differ in format (the reference's integrity value is
// a SHA-512 HMAC, this TPM's a SHA-256 one), so the blobs made here have
// the size of each TPM's own integrity value where the size matters.
func TestDifferentialContextLoadMalformed(t *testing.T) {
	d := newDual(t)
	sameRC(t, d, createPrimaryCmdOwner())
	save := func(h uint32) (a, b []byte) {
		cmd := rawCommand(ccContextSave, []uint32{h}, 0, nil)
		a, _ = d.v.Send(cmd)
		b = simSend(d.sim, cmd)
		if rcOf(a) != rcSuccess || rcOf(b) != rcSuccess {
			t.Fatalf("ContextSave(%#x): vtpm rc %#x, reference rc %#x", h, rcOf(a), rcOf(b))
		}
		return a[10:], b[10:]
	}
	objA, objB := save(transientFirst)
	s := rawPolicySession(t, d, ccCreatePrimary)
	sesA, sesB := save(s)
	// TPMS_CONTEXT: sequence (8), savedHandle (4), hierarchy (4),
	// contextBlob (TPM2B).
	type mutation struct {
		name string
		f    func(ctx []byte) []byte
	}
	set32 := func(off int, v uint32) func([]byte) []byte {
		return func(ctx []byte) []byte {
			c := bytes.Clone(ctx)
			putU32(c[off:], v)
			return c
		}
	}
	blob := func(b []byte) func([]byte) []byte {
		return func(ctx []byte) []byte { return bytesOf(ctx[:16], b2b(b)) }
	}
	// ownBlob is a blob whose integrity value has the size of the
	// TPM's own (SHA-256 here, SHA-512 on the reference), followed by
	// n bytes of data.
	ownBlob := func(n int) func([]byte) []byte {
		return func(ctx []byte) []byte {
			size := int(ctx[18])<<8 | int(ctx[19])
			return bytesOf(ctx[:16], b2b(bytesOf(b2b(make([]byte, size)), make([]byte, n))))
		}
	}
	mutations := []mutation{
		{"hierarchy 0", set32(12, 0)},
		{"hierarchy lockout", set32(12, rhLockout)},
		{"hierarchy platformNV", set32(12, rhPlatformNV)},
		{"hierarchy 0x40000002", set32(12, 0x40000002)},
		{"hierarchy transient", set32(12, transientFirst)},
		{"hierarchy endorsement", set32(12, rhEndorsement)},
		{"hierarchy null", set32(12, rhNull)},
		{"saved handle persistent", set32(8, 0x81000000)},
		{"saved handle sequence", set32(8, 0x80000001)},
		{"saved handle 0x80000003", set32(8, 0x80000003)},
		{"saved handle stClear", set32(8, savedSTClear)},
		{"saved handle last HMAC session", set32(8, hmacSessionFirst+0xFF)},
		{"saved handle policy session", set32(8, policySessionFirst)},
		{"saved handle HMAC session", set32(8, hmacSessionFirst)},
		{"saved handle invalid, hierarchy invalid", func(c []byte) []byte { return set32(12, 0)(set32(8, 0x81000000)(c)) }},
		{"hierarchy invalid, short blob", func(c []byte) []byte { return set32(12, 0)(c)[:20] }},
		{"empty blob", blob(nil)},
		{"blob of an empty integrity", blob(u16b(0))},
		{"blob of a short integrity", blob(bytesOf(b2b(make([]byte, 20)), make([]byte, 16)))},
		{"blob of an oversized integrity", blob(bytesOf(b2b(make([]byte, 65)), make([]byte, 16)))},
		{"blob cut in the integrity", blob(bytesOf(u16b(32), make([]byte, 10)))},
		{"blob without data", ownBlob(0)},
		{"blob with 7 bytes of data", ownBlob(7)},
		{"blob with 8 bytes of data", ownBlob(8)},
		{"blob with a zero integrity", ownBlob(200)},
		{"sequence", func(c []byte) []byte { c = bytes.Clone(c); c[7] ^= 1; return c }},
	}
	for _, m := range mutations {
		for _, kind := range []struct {
			name string
			a, b []byte
		}{{"object", objA, objB}, {"session", sesA, sesB}} {
			if bytes.Equal(m.f(kind.a), kind.a) {
				continue // the session's hierarchy is TPM_RH_NULL already
			}
			a, _ := d.v.Send(rawCommand(ccContextLoad, nil, 0, nil, m.f(kind.a)))
			b := simSend(d.sim, rawCommand(ccContextLoad, nil, 0, nil, m.f(kind.b)))
			if rcOf(a) != rcOf(b) {
				t.Errorf("%s context, %s: vtpm rc %#x, reference rc %#x", kind.name, m.name, rcOf(a), rcOf(b))
			} else if rcOf(a) == rcSuccess {
				t.Errorf("%s context, %s: loaded", kind.name, m.name)
			}
		}
	}
	// The unchanged contexts still load.
	sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(transientFirst)))
	if a, _ := d.v.Send(rawCommand(ccContextLoad, nil, 0, nil, objA)); rcOf(a) != rcSuccess {
		t.Errorf("object context: rc %#x", rcOf(a))
	}
	if a, _ := d.v.Send(rawCommand(ccContextLoad, nil, 0, nil, sesA)); rcOf(a) != rcSuccess {
		t.Errorf("session context: rc %#x", rcOf(a))
	}
}
