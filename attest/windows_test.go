package attest

import (
	"errors"
	"os"
	"testing"

	"github.com/shieldvm/shieldvm/measure"
)

// loadWindows reads the real Windows Server boot on a GCE Shielded VM:
// an RSA AK, a SHA-1 quote of PCRs 0-23, and the WBCL event log.
func loadWindows(t testing.TB) (*Evidence, *AKPublic) {
	t.Helper()
	b, err := os.ReadFile("testdata/windows_gcp_shielded_vm.json")
	if err != nil {
		t.Fatal(err)
	}
	e, err := ImportGoAttestation(b)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := ParseAKPublic(e.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	return e, ak
}

// windowsOptions are the options the real Windows evidence needs: its
// quote is signed with SHA-1 over the SHA-1 bank, and carries no extra
// data (go-attestation's JSON has an empty nonce, and so has the quote).
var windowsOptions = BootOptions{Quote: QuoteOptions{QualifyingData: nil, InsecureAllowSHA1: true}}

func TestWindowsEvidenceVerifies(t *testing.T) {
	e, ak := loadWindows(t)
	boot, err := VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, windowsOptions)
	if err != nil {
		t.Fatal(err)
	}
	if got := boot.Quote.Selection; len(got) != 1 || got[0].Alg != measure.SHA1 || got[0].PCRs != 0xffffff {
		t.Errorf("selection %+v, want SHA-1 PCRs 0-23", got)
	}
	if len(boot.Quote.ExtraData) != 0 {
		t.Errorf("extra data %x", boot.Quote.ExtraData)
	}
	rep := boot.Log.Report()
	if rep.Prefix != rep.Events || rep.Events == 0 {
		t.Errorf("verified prefix %d of %d events", rep.Prefix, rep.Events)
	}
	if boot.Log.NumEvents() < 20 {
		t.Errorf("%d verified events", boot.Log.NumEvents())
	}
	for _, r := range []uint32{0, 4, 5, 7, 11, 12, 13, 14} {
		if !boot.Log.Verified(r) {
			t.Errorf("PCR %d not verified", r)
		}
	}
}

func TestWindowsEvidenceSHA1RefusedByDefault(t *testing.T) {
	e, ak := loadWindows(t)
	_, err := VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, BootOptions{})
	if !errors.Is(err, ErrWeakAlgorithm) {
		t.Fatalf("err = %v, want ErrWeakAlgorithm", err)
	}
}

// TestWindowsQuoteWithOtherNonceDenied: the real quote offered as the
// answer to a challenge it was not made for.
func TestWindowsQuoteWithOtherNonceDenied(t *testing.T) {
	e, ak := loadWindows(t)
	opts := windowsOptions
	opts.Quote.QualifyingData = QualifyingData(make([]byte, ChallengeSize), []byte("release key"))
	if _, err := VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, opts); !errors.Is(err, ErrQualifyingData) {
		t.Fatalf("err = %v, want ErrQualifyingData", err)
	}
}

// TestWindowsLogChangedAfterQuoteDenied: one digest byte of the real log
// changed (a measured component swapped after the fact).
func TestWindowsLogChangedAfterQuoteDenied(t *testing.T) {
	e, ak := loadWindows(t)
	l, err := measure.Parse(e.EventLog)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the last PCR-12 event's SHA-1 digest in the raw log.
	evs := l.UnverifiedEvents()
	var target *measure.Event
	for i := range evs {
		if evs[i].Register == 12 && evs[i].Type != measure.EV_NO_ACTION {
			target = &evs[i]
		}
	}
	d, _ := target.Digest(measure.SHA1)
	log := append([]byte(nil), e.EventLog...)
	off := indexOf(log, d)
	if off < 0 {
		t.Fatal("digest not found in the raw log")
	}
	log[off] ^= 0x80
	_, err = VerifyBoot(ak, e.Quote, e.PCRs, log, windowsOptions)
	if !errors.Is(err, ErrLog) || !errors.Is(err, measure.ErrMismatch) {
		t.Fatalf("err = %v, want ErrLog wrapping measure.ErrMismatch", err)
	}
}

// TestWindowsPCRValuesSwappedDenied: the PCR values offered with the quote
// are not the ones it signed.
func TestWindowsPCRValuesSwappedDenied(t *testing.T) {
	e, ak := loadWindows(t)
	e.PCRs[measure.SHA1][12], e.PCRs[measure.SHA1][13] = e.PCRs[measure.SHA1][13], e.PCRs[measure.SHA1][12]
	if _, err := VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, windowsOptions); !errors.Is(err, ErrPCRDigest) {
		t.Fatalf("err = %v, want ErrPCRDigest", err)
	}
}

func indexOf(b, sub []byte) int {
	for i := 0; i+len(sub) <= len(b); i++ {
		if string(b[i:i+len(sub)]) == string(sub) {
			return i
		}
	}
	return -1
}
