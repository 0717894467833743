package attest

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/shieldvm/shieldvm/measure"
)

var update = flag.Bool("update", false, "regenerate testdata/evidence_tpm_p256.cbor from the simulator")

const evidenceGolden = "testdata/evidence_tpm_p256.cbor"

// TestEvidenceGolden keeps a ModeTPM evidence from the simulator in
// testdata, as a fuzz seed and a decoding fixture; -update regenerates it.
func TestEvidenceGolden(t *testing.T) {
	if *update {
		withSimulator(t, AttesterConfig{}, func(e *env) {
			if err := os.WriteFile(evidenceGolden, e.evidence(), 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
	b, err := os.ReadFile(evidenceGolden)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := ParseEvidence(b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ev.Marshal()
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-encoding differs (err %v)", err)
	}
	// The quote and log still verify (the challenge has long expired).
	ak, err := ParseAKPublic(ev.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyBoot(ak, ev.Quote, ev.PCRs, ev.EventLog, BootOptions{Quote: QuoteOptions{QualifyingData: QualifyingData(ev.Challenge, ev.ReleaseKey)}}); err != nil {
		t.Fatal(err)
	}
}

func evidenceSeeds(f *testing.F) {
	if b, err := os.ReadFile(evidenceGolden); err == nil {
		f.Add(b)
	}
	// Go's fuzzer stalls on inputs of tens of kilobytes: the real Windows
	// evidence is a seed with its log cut to its first events.
	w, _ := loadWindows(f)
	w.Mode, w.Challenge, w.Admin = ModeAdmin, make([]byte, ChallengeSize), &AdminClaim{HostID: "windows"}
	w.EventLog = w.EventLog[:2048]
	if b, err := w.Marshal(); err == nil {
		f.Add(b)
	}
}

// FuzzParseEvidence: decoding never panics; what decodes re-encodes to
// evidence that decodes to the same value; the decoders behind
// verification never panic on it.
//
// Long runs: go test ./attest -run XXX -fuzz FuzzParseEvidence
// -fuzzminimizetime 1x. The evidence seeds are kilobytes long, and the
// default minimization of each new input (up to 60 s) starves the run on a
// busy machine.
func FuzzParseEvidence(f *testing.F) {
	evidenceSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := ParseEvidence(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		b, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ev2, err := ParseEvidence(b)
		if err != nil {
			t.Fatalf("re-encoded evidence does not decode: %v", err)
		}
		// Deterministic encoding: the round trip is a fixed point.
		if b2, err := ev2.Marshal(); err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("round trip differs (err %v)", err)
		}
		// The decoders behind verification (FuzzTPMStructures covers the
		// signature check).
		ParseAKPublic(ev.AKPublic)
		parseAttest(ev.Quote.Attest)
		parseSignature(ev.Quote.Signature)
		if ev.TPM != nil {
			parseEKPublic(ev.TPM.EKPublic)
		}
		if l, err := measure.Parse(ev.EventLog); err == nil {
			l.Verify(ev.PCRs, measure.VerifyOptions{})
		}
	})
}

// FuzzTPMStructures: the TPM structure decoders never panic, and the real
// Windows quote verifies only unmodified.
func FuzzTPMStructures(f *testing.F) {
	w, _ := loadWindows(f)
	f.Add(w.AKPublic, w.Quote.Attest, w.Quote.Signature)
	if b, err := os.ReadFile(evidenceGolden); err == nil {
		if ev, err := ParseEvidence(b); err == nil {
			f.Add(ev.AKPublic, ev.Quote.Attest, ev.Quote.Signature)
			f.Add(ev.TPM.EKPublic, ev.Quote.Attest, ev.Quote.Signature)
		}
	}
	f.Fuzz(func(t *testing.T, pub, attest, sig []byte) {
		parsePublic(pub)
		parseEKPublic(pub)
		parseAttest(attest)
		parseSignature(sig)
		ak, err := ParseAKPublic(pub)
		if err != nil {
			return
		}
		_, err = VerifyQuote(ak, Quote{Attest: attest, Signature: sig}, w.PCRs, QuoteOptions{InsecureAllowSHA1: true})
		if err == nil && !(bytes.Equal(pub, w.AKPublic) && bytes.Equal(attest, w.Quote.Attest)) {
			// Another AK or quote that verifies would be a forgery
			// unless the fuzzer rebuilt a TPM2B form of the same key.
			if _, err2 := ParseAKPublic(pub); err2 != nil || !bytes.Equal(attest, w.Quote.Attest) {
				t.Fatalf("a modified quote verified")
			}
		}
	})
}

// FuzzVerifyToken: token decoding never panics, and only the issuer's
// token verifies.
func FuzzVerifyToken(f *testing.F) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	now := func() time.Time { return t0 }
	iss, err := NewTokenIssuer(key, IssuerConfig{Now: now})
	if err != nil {
		f.Fatal(err)
	}
	good, err := iss.sign(&Claims{Issuer: "shieldvm", IssuedAt: t0.Unix(), Expiry: t0.Add(time.Hour).Unix(), Profile: TokenProfile, Status: 2, Cnf: Confirmation{ReleaseKey: []byte("rk")}, Facts: map[string]string{"secure_boot": "on"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, tok []byte) {
		vt, err := VerifyToken(tok, key.Public(), TokenOptions{Now: now})
		if err != nil {
			return
		}
		if vt.Hash() == [32]byte{} || len(vt.ReleaseKey()) == 0 {
			t.Fatal("verified token without hash or release key")
		}
	})
}

// FuzzImportGoAttestation: the JSON importer never panics.
func FuzzImportGoAttestation(f *testing.F) {
	b, err := os.ReadFile("testdata/windows_gcp_shielded_vm.json")
	if err != nil {
		f.Fatal(err)
	}
	// The real file with its log cut short (Go's fuzzer stalls on inputs
	// of tens of kilobytes).
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		f.Fatal(err)
	}
	m["Log"].(map[string]any)["Raw"] = m["Log"].(map[string]any)["Raw"].(string)[:1024]
	small, err := json.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(small)
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := ImportGoAttestation(data); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
	})
}
