package vtpm

import (
	"bytes"
	"testing"
)

func pcrValue(t *testing.T, v *TPM, pcr int) []byte {
	t.Helper()
	sel := []byte{3, 0, 0, 0}
	sel[1+pcr/8] = 1 << (pcr % 8)
	rsp := mustSend(t, v, rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(algSHA256), sel))
	return rsp[len(rsp)-32:]
}

// TestShutdownStateResume checks TPM Resume (Shutdown(STATE), power loss,
// Startup(STATE)) across Seal and Open: the static PCRs keep their values,
// PCRs 16 and 23 are reset, and the restart count goes up.
func TestShutdownStateResume(t *testing.T) {
	v := newTestTPM(t)
	for _, pcr := range []uint32{0, 16} {
		mustSend(t, v, rawCommand(ccPCREvent, []uint32{pcr}, 1, nil, b2b([]byte("boot"))))
	}
	pcr0 := pcrValue(t, v, 0)
	if rsp, _ := v.Send(rawCommand(ccStartup, nil, 0, nil, u16b(suClear))); rcOf(rsp) != rcInitialize {
		t.Fatalf("second Startup: rc %#x, want TPM_RC_INITIALIZE", rcOf(rsp))
	}
	mustSend(t, v, rawCommand(ccShutdown, nil, 0, nil, u16b(suState)))
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if rsp, _ := w.Send(rawCommand(ccGetRandom, nil, 0, nil, u16b(8))); rcOf(rsp) != rcInitialize {
		t.Fatalf("command before Startup: rc %#x, want TPM_RC_INITIALIZE", rcOf(rsp))
	}
	mustSend(t, w, rawCommand(ccStartup, nil, 0, nil, u16b(suState)))
	if got := pcrValue(t, w, 0); !bytes.Equal(got, pcr0) {
		t.Errorf("PCR 0 after resume %x, want %x", got, pcr0)
	}
	if got := pcrValue(t, w, 16); !bytes.Equal(got, make([]byte, 32)) {
		t.Errorf("PCR 16 after resume %x, want zeros", got)
	}
	clock := mustSend(t, w, rawCommand(ccReadClock, nil, 0, nil))
	if restart := clock[10+16+4 : 10+16+8]; !bytes.Equal(restart, []byte{0, 0, 0, 1}) {
		t.Errorf("restartCount %x after resume, want 1", restart)
	}

	// Startup(STATE) needs a preceding Shutdown(STATE).
	w.PowerCycle()
	if rsp, _ := w.Send(rawCommand(ccStartup, nil, 0, nil, u16b(suState))); rcOf(rsp) != rcValue|rcP|rcN {
		t.Fatalf("Startup(STATE) without Shutdown(STATE): rc %#x", rcOf(rsp))
	}
	mustSend(t, w, rawCommand(ccStartup, nil, 0, nil, u16b(suClear)))
	if got := pcrValue(t, w, 0); !bytes.Equal(got, make([]byte, 32)) {
		t.Errorf("PCR 0 after TPM Reset %x, want zeros", got)
	}
}

// TestTransientObjectsMigrate seals a running TPM with a loaded key and
// checks that the key is usable after Open, as in a live migration.
func TestTransientObjectsMigrate(t *testing.T) {
	v := newTestTPM(t)
	rsp := mustSend(t, v, createPrimaryCmdAK())
	h := rsp[10:14]
	blob, _ := v.Seal(testKey)
	w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mustSend(t, w, rawCommand(ccQuote, []uint32{uint32(h[0])<<24 | uint32(h[1])<<16 | uint32(h[2])<<8 | uint32(h[3])}, 1, nil,
		b2b([]byte("nonce")), u16b(algNull), u32b(1), u16b(algSHA256), []byte{3, 0xFF, 0, 0}))
}
