package bootlog

import (
	"bytes"
	"context"
	"os"
	"slices"
	"testing"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/vtpm"
)

// realLog is a GCE Shielded VM's boot log (RHEL 8, Secure Boot on), shipped
// with the demo.
func realLog(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../../demo/testdata/rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, err = KeepBanks(b, measure.SHA256, measure.SHA384)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// quoteOf boots a fresh vtpm with log and returns verified boot from a
// quote of PCRs 0-15 in every bank.
func quoteOf(t *testing.T, log []byte) *attest.VerifiedBoot {
	t.Helper()
	tpm, err := vtpm.New(vtpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	if err := Extend(tpm, log); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	att, err := attest.NewAttester(ctx, tpm, attest.AttesterConfig{
		Banks:    []measure.HashAlg{measure.SHA256, measure.SHA384},
		EventLog: func(context.Context) ([]byte, error) { return log, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	challenge := make([]byte, attest.ChallengeSize)
	ev, err := att.Attest(ctx, challenge, []byte("release key"))
	if err != nil {
		t.Fatal(err)
	}
	ak, err := attest.ParseAKPublic(ev.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := attest.VerifyBoot(ak, ev.Quote, ev.PCRs, ev.EventLog, attest.BootOptions{
		Quote: attest.QuoteOptions{QualifyingData: attest.QualifyingData(challenge, []byte("release key"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	return vb
}

// TestExtendMatchesRealTPM: a vtpm extended with the real log holds the
// registers the real TPM quoted, so the log verifies against the quote
// of every register it extends.
func TestExtendMatchesRealTPM(t *testing.T) {
	log := realLog(t)
	vb := quoteOf(t, log)
	for _, r := range []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14} {
		if !vb.Log.Verified(r) {
			t.Errorf("PCR %d not verified", r)
		}
	}
	l, _ := measure.Parse(log)
	if got, want := vb.Log.NumEvents(), l.NumEvents(); got < want-1 {
		t.Errorf("%d verified events of %d", got, want)
	}
}

// TestDebugModeVisibleInFacts: the inserted event is measured, verifies
// against the quote, and shows in the verified facts.
func TestDebugModeVisibleInFacts(t *testing.T) {
	good := realLog(t)
	dbg, err := WithDebugMode(good)
	if err != nil {
		t.Fatal(err)
	}
	vbGood, vbDbg := quoteOf(t, good), quoteOf(t, dbg)
	if bytes.Equal(vbGood.Quote.PCRs[measure.SHA256][7], vbDbg.Quote.PCRs[measure.SHA256][7]) {
		t.Fatal("PCR 7 did not change")
	}
	for _, r := range []uint32{0, 4, 8} {
		if !bytes.Equal(vbGood.Quote.PCRs[measure.SHA256][r], vbDbg.Quote.PCRs[measure.SHA256][r]) {
			t.Errorf("PCR %d changed", r)
		}
	}
	f, err := vbDbg.Log.Facts()
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, a := range f.Firmware.Actions {
		actions = append(actions, a.Value)
	}
	if !slices.Contains(actions, DebugModeAction) {
		t.Errorf("actions %q lack %q", actions, DebugModeAction)
	}
	if len(f.Findings) != 0 {
		t.Errorf("findings: %v", f.Findings)
	}
}

func TestInsertRefusesLogWithoutSeparator(t *testing.T) {
	if _, err := InsertBeforeSeparator(realLog(t), 20, measure.EV_EFI_ACTION, []byte("x")); err == nil {
		t.Fatal("inserted before a separator that does not exist")
	}
	if _, err := WithDebugMode([]byte("not a log")); err == nil {
		t.Fatal("edited garbage")
	}
	if err := Extend(nil, []byte{1, 2, 3}); err == nil {
		t.Fatal("extended garbage")
	}
}
