package vtpm

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"
)

// Helpers shared by the admin tests (NV locks, hierarchies, DA, clock,
// PCR allocation, symmetric and sequence commands). They build commands by
// hand with password sessions, so that every byte the TPMs compare is
// visible in the test.

// send sends cmd and returns the response code and the response
// parameters (after the parameter size for a response with sessions).
func admSend(t testing.TB, tp transport.TPM, cmd []byte) (uint32, []byte) {
	t.Helper()
	rsp, err := tp.Send(cmd)
	if err != nil {
		t.Fatal(err)
	}
	rc := rcOf(rsp)
	if rc != rcSuccess {
		return rc, nil
	}
	return rc, rsp[10:]
}

// params strips the response handle (if any) and the parameter size of a
// response to a command sent with sessions; it returns the parameters.
func rspParams(rsp []byte, handle bool) []byte {
	if handle {
		rsp = rsp[4:]
	}
	n := binary.BigEndian.Uint32(rsp)
	return rsp[4 : 4+n]
}

// admMust fails the test unless cmd answers want.
func admMust(t testing.TB, tp transport.TPM, want uint32, cmd []byte) []byte {
	t.Helper()
	rc, p := admSend(t, tp, cmd)
	if rc != want {
		t.Fatalf("command %#x: rc %#x, want %#x", ccOf(cmd), rc, want)
	}
	return p
}

func admU64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// nvPublic marshals a TPMS_NV_PUBLIC.
func nvPublic(idx uint32, attrs uint32, size uint16) []byte {
	return bytesOf(u32b(idx), u16b(algSHA256), u32b(attrs), u16b(0), u16b(size))
}

// defineNV defines an index with owner authorization.
func defineNV(idx uint32, auth []byte, attrs uint32, size uint16) []byte {
	return rawCommand(ccNVDefineSpace, []uint32{rhOwner}, 1, nil, b2b(auth), b2b(nvPublic(idx, attrs, size)))
}

func nvWriteCmd(auth, idx uint32, pw []byte, data []byte, off uint16) []byte {
	return rawCommand(ccNVWrite, []uint32{auth, idx}, 1, pw, b2b(data), u16b(off))
}

func nvReadCmd(auth, idx uint32, pw []byte, size, off uint16) []byte {
	return rawCommand(ccNVRead, []uint32{auth, idx}, 1, pw, u16b(size), u16b(off))
}

// nvAttrs reads TPMA_NV of an index with NV_ReadPublic.
func nvAttrs(t testing.TB, tp transport.TPM, idx uint32) uint32 {
	t.Helper()
	p := admMust(t, tp, rcSuccess, rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil))
	return binary.BigEndian.Uint32(p[2+4+2:])
}

// restart shuts the vTPM down with su, cuts its power and starts it with
// su again: TPM Reset for CLEAR, TPM Resume for STATE.
func powerRestart(t testing.TB, v *TPM, shutdown, startup uint16) {
	t.Helper()
	admMust(t, v, rcSuccess, rawCommand(ccShutdown, nil, 0, nil, u16b(shutdown)))
	if err := v.PowerCycle(); err != nil {
		t.Fatal(err)
	}
	admMust(t, v, rcSuccess, rawCommand(ccStartup, nil, 0, nil, u16b(startup)))
}

// dualReset performs a TPM Reset (Shutdown(CLEAR), power cycle,
// Startup(CLEAR)) on both TPMs of d.
func dualReset(t testing.TB, d *dual) {
	t.Helper()
	powerRestart(t, d.v, suClear, suClear)
	if err := d.sim.(interface{ Reset() error }).Reset(); err != nil {
		t.Fatal(err)
	}
}

// sameResponse sends cmd to both TPMs of d and fails unless the responses
// are identical byte for byte. It returns the response.
func sameResponse(t testing.TB, d *dual, cmd []byte) []byte {
	t.Helper()
	a, _ := d.v.Send(cmd)
	b := simSend(d.sim, cmd)
	if !bytes.Equal(a, b) {
		t.Errorf("command %#x: responses differ\nvtpm      %x\nreference %x", ccOf(cmd), a, b)
	}
	return a
}

// sameRC sends cmd to both TPMs of d and fails unless the response codes
// are equal (and so the error responses, which are only a header).
func sameRC(t testing.TB, d *dual, cmd []byte) []byte {
	t.Helper()
	a, _ := d.v.Send(cmd)
	b := simSend(d.sim, cmd)
	if rcOf(a) != rcOf(b) {
		t.Errorf("command %#x: vtpm rc %#x, reference rc %#x", ccOf(cmd), rcOf(a), rcOf(b))
	}
	return a
}
