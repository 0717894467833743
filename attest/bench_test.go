package attest

import (
	"context"
	"testing"
	"time"
)

// BenchmarkVerifyWindows is the full verification of the real Windows
// evidence from its bytes: AK decoding, RSA-2048 quote signature, PCR
// digest, WBCL parse and replay against the quoted PCRs.
func BenchmarkVerifyWindows(b *testing.B) {
	e, ak0 := loadWindows(b)
	b.SetBytes(int64(len(e.EventLog)))
	for b.Loop() {
		ak, err := ParseAKPublic(e.AKPublic)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, windowsOptions); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
	_ = ak0
}

// BenchmarkSignatureShareWindows interleaves, in each iteration, one
// signature check alone and one full verification of the real Windows
// evidence, so both run under the same conditions; it reports the share
// of a full verification that the signature check is (sig-%). Its ns/op
// is the sum of both.
func BenchmarkSignatureShareWindows(b *testing.B) {
	e, ak0 := loadWindows(b)
	sig, err := parseSignature(e.Quote.Signature)
	if err != nil {
		b.Fatal(err)
	}
	var sigT, fullT time.Duration
	for b.Loop() {
		t1 := time.Now()
		if err := checkSignature(ak0.Key, e.Quote.Attest, sig, true); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		ak, err := ParseAKPublic(e.AKPublic)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, windowsOptions); err != nil {
			b.Fatal(err)
		}
		sigT += t2.Sub(t1)
		fullT += time.Since(t2)
	}
	b.ReportMetric(100*float64(sigT)/float64(fullT), "sig-%")
	b.ReportMetric(float64(fullT.Nanoseconds())/float64(b.N), "full-ns/op")
}

// BenchmarkVerifySignatureOnly is the RSA quote signature check alone:
// the floor of BenchmarkVerifyWindows.
func BenchmarkVerifySignatureOnly(b *testing.B) {
	e, ak := loadWindows(b)
	sig, err := parseSignature(e.Quote.Signature)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := checkSignature(ak.Key, e.Quote.Attest, sig, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifierTPMMode is Verifier.Verify of simulator evidence with an
// ECDSA P-256 AK, from the encoded evidence: CBOR decoding, challenge MAC,
// quote, log replay, credential-activation check, registry, policy.
func BenchmarkVerifierTPMMode(b *testing.B) {
	var ev []byte
	var e *env
	withSimulatorB(b, func(x *env) {
		e = x
		ev = x.evidence()
	})
	ctx := context.Background()
	parsed, err := ParseEvidence(ev)
	if err != nil {
		b.Fatal(err)
	}
	ak, _ := ParseAKPublic(parsed.AKPublic)
	for b.Loop() {
		p, err := ParseEvidence(ev)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.ver.Verify(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
	_ = ak
}

// BenchmarkTokenVerify is verifying an ES256 token.
func BenchmarkTokenVerify(b *testing.B) {
	e := newEnv(b, testBoot())
	tok, err := e.issuer.sign(&Claims{Issuer: "x", IssuedAt: t0.Unix(), Expiry: t0.Add(time.Hour).Unix(), Profile: TokenProfile, Status: 2, Cnf: Confirmation{ReleaseKey: e.release}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := VerifyToken(tok, &e.tokenKey.PublicKey, TokenOptions{Now: e.clk.Now}); err != nil {
			b.Fatal(err)
		}
	}
}
