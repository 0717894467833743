package attest

import (
	"context"
	"os"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
)

// linuxEvidence replays a real Ubuntu boot log into the simulator's SHA-256
// bank, then quotes it with an ECDSA P-256 AK: a real Linux log under a
// TPM-made quote (the simulator's PCRs hold exactly what the firmware
// extended).
func linuxEvidence(t testing.TB) (*Evidence, *AKPublic) {
	t.Helper()
	raw, err := os.ReadFile("testdata/ubuntu-2104-no-secure-boot.bin")
	if err != nil {
		t.Fatal(err)
	}
	l, err := measure.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	tpm := transport.FromReadWriter(sim)
	for _, ev := range l.UnverifiedEvents() {
		if ev.Type == measure.EV_NO_ACTION {
			continue
		}
		d, ok := ev.Digest(measure.SHA256)
		if !ok {
			t.Fatalf("event %d has no SHA-256 digest", ev.Index)
		}
		if _, err := (tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(ev.Register), Auth: tpm2.PasswordAuth(nil)},
			Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d}}},
		}).Execute(tpm); err != nil {
			t.Fatal(err)
		}
	}
	att, err := NewAttester(context.Background(), tpm, AttesterConfig{EventLog: func(context.Context) ([]byte, error) { return raw, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	ev, err := att.Attest(context.Background(), make([]byte, ChallengeSize), []byte("rk"))
	if err != nil {
		t.Fatal(err)
	}
	ak, err := ParseAKPublic(ev.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	return ev, ak
}

var linuxOptions = BootOptions{Quote: QuoteOptions{QualifyingData: QualifyingData(make([]byte, ChallengeSize), []byte("rk"))}}

// TestLinuxRealLogECDSAQuote: the real Ubuntu log verifies under the
// simulator's ECDSA quote, facts and all, and a policy judges it.
func TestLinuxRealLogECDSAQuote(t *testing.T) {
	ev, ak := linuxEvidence(t)
	boot, err := VerifyBoot(ak, ev.Quote, ev.PCRs, ev.EventLog, linuxOptions)
	if err != nil {
		t.Fatal(err)
	}
	if boot.Quote.SignatureHash.String() != "SHA-256" {
		t.Errorf("signature hash %v", boot.Quote.SignatureHash)
	}
	p := &policy.Policy{Version: 1, ID: "linux", HGS: &policy.HGSRules{SecureBootEnabled: policy.Enforce, UefiDebugDisabled: policy.Enforce}}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	v := p.Evaluate(&policy.Input{PCRs: boot.Quote.PCRs, Log: boot.Log})
	// This machine booted without Secure Boot: the policy says so.
	if v.Status != policy.Contraindicated || len(v.Failed()) != 1 || v.Failed()[0].Rule != "hgs.SecureBootEnabled" {
		t.Fatalf("verdict %v", v)
	}
}

// BenchmarkVerifyLinuxECDSA is the full verification of a real Linux log
// (Ubuntu 21.04, 38 KB) under an ECDSA P-256 quote of PCRs 0-15.
func BenchmarkVerifyLinuxECDSA(b *testing.B) {
	ev, _ := linuxEvidence(b)
	b.SetBytes(int64(len(ev.EventLog)))
	for b.Loop() {
		ak, err := ParseAKPublic(ev.AKPublic)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := VerifyBoot(ak, ev.Quote, ev.PCRs, ev.EventLog, linuxOptions); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
}
