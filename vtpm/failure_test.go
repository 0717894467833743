package vtpm

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestMain turns off Send's recovery, so that a panic anywhere in the
// engine fails the test or the fuzzer that found it, with its stack.
func TestMain(m *testing.M) {
	recoverPanics = false
	os.Exit(m.Run())
}

// TestGuestCrashBugCostsOnlyItsOwnTPM stops a guest that found a crash bug
// in the engine from taking down the process and with it every other VM's
// TPM: the panic is recovered, that TPM alone enters failure mode (every
// command answers TPM_RC_FAILURE, Seal refuses so that the last good
// sealed state stays on disk, a power cycle does not heal it), and the
// other TPMs of the process run on.
func TestGuestCrashBugCostsOnlyItsOwnTPM(t *testing.T) {
	recoverPanics = true
	defer func() { recoverPanics = false }()
	victim, other := newTestTPM(t), newTestTPM(t)
	getRandom := rawCommand(ccGetRandom, nil, 0, nil, u16b(8))

	d := lookupCommand(ccGetRandom)
	fn := d.fn
	d.fn = func(*TPM, *call) uint32 { panic("injected engine bug") }
	rsp, err := victim.Send(getRandom)
	d.fn = fn
	if err != nil || rcOf(rsp) != rcFailure || len(rsp) != 10 {
		t.Fatalf("the command that panicked: %x, %v; want a TPM_RC_FAILURE response", rsp, err)
	}
	if err := victim.Failure(); err == nil || !strings.Contains(err.Error(), "0x17b") {
		t.Fatalf("Failure() = %v, want the command code and the cause", err)
	}

	for _, cmd := range [][]byte{getRandom, rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(algSHA256), []byte{3, 1, 0, 0})} {
		if rsp, _ := victim.Send(cmd); rcOf(rsp) != rcFailure {
			t.Errorf("command %#x in failure mode: rc %#x, want TPM_RC_FAILURE", ccOf(cmd), rcOf(rsp))
		}
	}
	if _, err := victim.Seal(testKey); !errors.Is(err, ErrFailureMode) {
		t.Errorf("Seal in failure mode: %v, want ErrFailureMode", err)
	}
	if err := victim.PowerCycle(); err != nil {
		t.Fatal(err)
	}
	if rsp, _ := victim.Send(rawCommand(ccStartup, nil, 0, nil, u16b(0))); rcOf(rsp) != rcFailure {
		t.Errorf("Startup after a power cycle in failure mode: rc %#x, want TPM_RC_FAILURE", rcOf(rsp))
	}
	if rsp, err := other.Send(getRandom); err != nil || rcOf(rsp) != rcSuccess {
		t.Errorf("another TPM of the process: %x, %v", rsp, err)
	}
	if other.Failure() != nil {
		t.Errorf("another TPM is in failure mode: %v", other.Failure())
	}
}
