package bench

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	attestation "github.com/google/go-attestation/attest"
	"github.com/google/go-tpm-tools/client"
	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm-tools/server"
	"github.com/google/go-tpm-tools/simulator"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/measure"
)

// verifyCase is one piece of evidence in the form each side takes, and the
// three things timed on it: our full verification, the peer's, and the
// signature check alone (the floor of any verifier).
type verifyCase struct {
	ours, peer, sig func() error
	// boot, if set, is our verification without the facts (quote and log
	// only), timed beside the rest to show where the time goes.
	boot func() error
}

// tpmSignature is a decoded TPMT_SIGNATURE (TPM 2.0 Library, Part 2,
// section 11.3.4) for the signature-only timing: RSASSA or ECDSA.
type tpmSignature struct {
	hash crypto.Hash
	rsa  []byte
	r, s *big.Int
}

func decodeSignature(tb testing.TB, b []byte) *tpmSignature {
	tb.Helper()
	be := binary.BigEndian
	if len(b) < 6 {
		tb.Fatal("short TPMT_SIGNATURE")
	}
	alg, hashAlg := be.Uint16(b), be.Uint16(b[2:])
	var h crypto.Hash
	switch hashAlg {
	case 0x0004:
		h = crypto.SHA1
	case 0x000B:
		h = crypto.SHA256
	default:
		tb.Fatalf("signature hash %#x", hashAlg)
	}
	b = b[4:]
	next := func() []byte {
		n := int(be.Uint16(b))
		v := b[2 : 2+n]
		b = b[2+n:]
		return v
	}
	switch alg {
	case 0x0014: // TPM_ALG_RSASSA
		return &tpmSignature{hash: h, rsa: next()}
	case 0x0018: // TPM_ALG_ECDSA
		r := new(big.Int).SetBytes(next())
		s := new(big.Int).SetBytes(next())
		return &tpmSignature{hash: h, r: r, s: s}
	}
	tb.Fatalf("signature algorithm %#x", alg)
	return nil
}

// sigCheck returns the bare signature verification of msg: hash, then
// RSASSA-PKCS1-v1_5 or ECDSA verify with the AK's key.
func sigCheck(tb testing.TB, key crypto.PublicKey, msg, sig []byte) func() error {
	s := decodeSignature(tb, sig)
	return func() error {
		var digest []byte
		switch s.hash {
		case crypto.SHA1:
			d := sha1.Sum(msg)
			digest = d[:]
		default:
			d := sha256.Sum256(msg)
			digest = d[:]
		}
		switch k := key.(type) {
		case *rsa.PublicKey:
			return rsa.VerifyPKCS1v15(k, s.hash, digest, s.rsa)
		case *ecdsa.PublicKey:
			if !ecdsa.Verify(k, digest, s.r, s.s) {
				return attest.ErrSignature
			}
			return nil
		}
		tb.Fatalf("key %T", key)
		return nil
	}
}

// windowsCase is the real Windows Server boot on a GCE Shielded VM
// (go-attestation's JSON platform parameters): an RSA-2048 AK, a quote of
// SHA-1 PCRs 0-23 signed with RSASSA-SHA1, and the WBCL event log.
//
// Ours: ParseAKPublic, VerifyBoot (signature, extra data, PCR digest, log
// parse and replay against the quoted PCRs). go-attestation's path on the
// same bytes: ParseAKPublic, AKPublic.Verify (signature, nonce, PCR
// digest), ParseEventLog, EventLog.Verify.
func windowsCase(tb testing.TB, tamper bool) *verifyCase {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "attest", "testdata", "windows_gcp_shielded_vm.json"))
	if err != nil {
		tb.Fatal(err)
	}
	ev, err := attest.ImportGoAttestation(raw)
	if err != nil {
		tb.Fatal(err)
	}
	var params struct {
		AK    struct{ Public []byte }
		Quote struct{ Quote, Signature []byte }
		Log   struct {
			PCRs []attestation.PCR
			Raw  []byte
		}
	}
	if err := json.Unmarshal(raw, &params); err != nil {
		tb.Fatal(err)
	}
	if tamper {
		ev.EventLog = tamperLog(tb, ev.EventLog, measure.SHA1, 12)
		params.Log.Raw = ev.EventLog
	}
	quote := attestation.Quote{Quote: params.Quote.Quote, Signature: params.Quote.Signature}
	pcrs, logRaw, akRaw := params.Log.PCRs, params.Log.Raw, params.AK.Public
	opts := attest.BootOptions{Quote: attest.QuoteOptions{InsecureAllowSHA1: true}}
	ak, err := attest.ParseAKPublic(ev.AKPublic)
	if err != nil {
		tb.Fatal(err)
	}
	return &verifyCase{
		ours: func() error {
			ak, err := attest.ParseAKPublic(ev.AKPublic)
			if err != nil {
				return err
			}
			_, err = attest.VerifyBoot(ak, ev.Quote, ev.PCRs, ev.EventLog, opts)
			return err
		},
		peer: func() error {
			ak, err := attestation.ParseAKPublic(akRaw)
			if err != nil {
				return err
			}
			if err := ak.Verify(quote, pcrs, nil); err != nil {
				return err
			}
			el, err := attestation.ParseEventLog(logRaw)
			if err != nil {
				return err
			}
			_, err = el.Verify(pcrs)
			return err
		},
		sig: sigCheck(tb, ak.Key, ev.Quote.Attest, ev.Quote.Signature),
	}
}

// linuxNonce is the extra data of the Linux quote.
var linuxNonce = bytes.Repeat([]byte{0x5a}, 32)

// linuxCase is a real Ubuntu 21.04 boot log (GRUB, no Secure Boot) under a
// quote the reference TPM simulator made after its PCRs were extended with
// the log's events, through go-tpm-tools' own client: an ECDSA P-256 AK
// (client.AttestationKeyECC), the SHA-256 quote of PCRs 0-23.
//
// Ours: ParseAKPublic, VerifyBoot, then the facts of the verified log
// (Secure Boot, firmware, GRUB, kernel command line), since the peer
// also extracts its machine state. go-tpm-tools: server.VerifyAttestation
// with the AK trusted, the SHA-256 bank and its GRUB extraction.
func linuxCase(tb testing.TB, tamper bool) *verifyCase {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "attest", "testdata", "ubuntu-2104-no-secure-boot.bin"))
	if err != nil {
		tb.Fatal(err)
	}
	l, err := measure.Parse(raw)
	if err != nil {
		tb.Fatal(err)
	}
	sim, err := simulator.Get()
	if err != nil {
		tb.Fatal(err)
	}
	defer sim.Close()
	for _, e := range l.UnverifiedEvents() {
		if e.Type == measure.EV_NO_ACTION {
			continue
		}
		for _, a := range []struct {
			ours measure.HashAlg
			tpm  legacy.Algorithm
		}{{measure.SHA1, legacy.AlgSHA1}, {measure.SHA256, legacy.AlgSHA256}} {
			d, ok := e.Digest(a.ours)
			if !ok {
				tb.Fatalf("event %d has no %v digest", e.Index, a.ours)
			}
			if err := legacy.PCRExtend(sim, tpmutil.Handle(e.Register), a.tpm, d, ""); err != nil {
				tb.Fatal(err)
			}
		}
	}
	ak, err := client.AttestationKeyECC(sim)
	if err != nil {
		tb.Fatal(err)
	}
	defer ak.Close()
	logRaw := raw
	if tamper {
		logRaw = tamperLog(tb, raw, measure.SHA256, 4)
	}
	att, err := ak.Attest(client.AttestOpts{Nonce: linuxNonce, TCGEventLog: logRaw})
	if err != nil {
		tb.Fatal(err)
	}

	// The same attestation in our evidence: the AK, the SHA-256 quote and
	// its PCR values, the log.
	var q *tpmpb.Quote
	for _, x := range att.GetQuotes() {
		if x.GetPcrs().GetHash() == 0x000B {
			q = x
		}
	}
	if q == nil {
		tb.Fatal("no SHA-256 quote")
	}
	ev := &attest.Evidence{
		AKPublic: att.GetAkPub(),
		Quote:    attest.Quote{Attest: q.GetQuote(), Signature: q.GetRawSig()},
		PCRs:     measure.QuotedValues{measure.SHA256: q.GetPcrs().GetPcrs()},
		EventLog: att.GetEventLog(),
	}
	opts := attest.BootOptions{Quote: attest.QuoteOptions{QualifyingData: linuxNonce}}
	ours, err := attest.ParseAKPublic(ev.AKPublic)
	if err != nil {
		tb.Fatal(err)
	}
	peerOpts := server.VerifyOpts{
		Nonce:      linuxNonce,
		TrustedAKs: []crypto.PublicKey{ak.PublicKey()},
		HashAlgo:   legacy.AlgSHA256,
		Loader:     server.GRUB,
	}
	if _, err := server.VerifyAttestation(att, peerOpts); err != nil && !tamper {
		tb.Logf("go-tpm-tools with GRUB extraction: %v; timing it without", err)
		peerOpts.Loader = server.UnsupportedLoader
	}
	return &verifyCase{
		ours: func() error {
			ak, err := attest.ParseAKPublic(ev.AKPublic)
			if err != nil {
				return err
			}
			boot, err := attest.VerifyBoot(ak, ev.Quote, ev.PCRs, ev.EventLog, opts)
			if err != nil {
				return err
			}
			_, err = boot.Log.Facts()
			return err
		},
		boot: func() error {
			ak, err := attest.ParseAKPublic(ev.AKPublic)
			if err != nil {
				return err
			}
			_, err = attest.VerifyBoot(ak, ev.Quote, ev.PCRs, ev.EventLog, opts)
			return err
		},
		peer: func() error {
			_, err := server.VerifyAttestation(att, peerOpts)
			return err
		},
		sig: sigCheck(tb, ours.Key, ev.Quote.Attest, ev.Quote.Signature),
	}
}

// benchVerify times the three sides of c interleaved, each call in thread
// CPU time (the goroutine is locked to its thread), and reports:
//
//   - x-PEER: the peer's CPU time over ours (wall-clock ratio beside it);
//   - verifications/s/core: our verifications per second of one core;
//   - sig-%: the signature check alone as a share of our full
//     verification (the rest is decoding, hashing and replay);
//   - ours-µs and peer-µs: CPU time per verification;
//   - with c.boot, ours-boot-µs and sig-%-boot: the same without facts.
func benchVerify(b *testing.B, c *verifyCase, peer string) {
	for name, f := range map[string]func() error{"ours": c.ours, peer: c.peer, "signature": c.sig} {
		if err := f(); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cOurs, cPeer, cSig, cBoot, wOurs, wPeer time.Duration
	for b.Loop() {
		if c.boot != nil {
			c0 := factsThreadCPU()
			_ = c.boot()
			cBoot += factsThreadCPU() - c0
		}
		t0, c0 := time.Now(), factsThreadCPU()
		_ = c.ours()
		c1, t1 := factsThreadCPU(), time.Now()
		_ = c.peer()
		c2, t2 := factsThreadCPU(), time.Now()
		_ = c.sig()
		c3 := factsThreadCPU()
		cOurs += c1 - c0
		cPeer += c2 - c1
		cSig += c3 - c2
		wOurs += t1.Sub(t0)
		wPeer += t2.Sub(t1)
	}
	n := float64(b.N)
	b.ReportMetric(float64(cPeer)/float64(cOurs), "x-"+peer)
	b.ReportMetric(float64(wPeer)/float64(wOurs), "x-"+peer+"-wall")
	b.ReportMetric(n/cOurs.Seconds(), "verifications/s/core")
	b.ReportMetric(100*float64(cSig)/float64(cOurs), "sig-%")
	b.ReportMetric(float64(cOurs.Nanoseconds())/1e3/n, "ours-µs")
	b.ReportMetric(float64(cPeer.Nanoseconds())/1e3/n, "peer-µs")
	if c.boot != nil {
		b.ReportMetric(float64(cBoot.Nanoseconds())/1e3/n, "ours-boot-µs")
		b.ReportMetric(100*float64(cSig)/float64(cBoot), "sig-%-boot")
	}
}

// BenchmarkVerifyWindowsEvidence is the full verification of the real
// Windows evidence (RSA quote) by shieldvm and by go-attestation v0.6.4,
// interleaved. Target: x-go-attestation >= 4.
func BenchmarkVerifyWindowsEvidence(b *testing.B) {
	benchVerify(b, windowsCase(b, false), "go-attestation")
}

// BenchmarkVerifyLinuxECDSA is the full verification of a real Linux log
// under an ECDSA P-256 quote by shieldvm and by go-tpm-tools v0.4.10
// server.VerifyAttestation, interleaved. Target: x-go-tpm-tools >= 4.
func BenchmarkVerifyLinuxECDSA(b *testing.B) {
	benchVerify(b, linuxCase(b, false), "go-tpm-tools")
}

// BenchmarkOursVerifyWindows and BenchmarkOursVerifyLinux are our side
// alone, for profiles.
func BenchmarkOursVerifyWindows(b *testing.B) {
	c := windowsCase(b, false)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.ours(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOursVerifyLinux(b *testing.B) {
	c := linuxCase(b, false)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.ours(); err != nil {
			b.Fatal(err)
		}
	}
}

// tamperLog returns a copy of a log with one bit of the digest of the last
// event of register reg flipped in bank alg: a component swapped after the
// quote.
func tamperLog(tb testing.TB, raw []byte, alg measure.HashAlg, reg uint32) []byte {
	tb.Helper()
	l, err := measure.Parse(raw)
	if err != nil {
		tb.Fatal(err)
	}
	var d []byte
	for _, e := range l.UnverifiedEvents() {
		if e.Register == reg && e.Type != measure.EV_NO_ACTION {
			d, _ = e.Digest(alg)
		}
	}
	i := bytes.LastIndex(raw, d)
	if len(d) == 0 || i < 0 {
		tb.Fatalf("no %v digest of register %d in the log", alg, reg)
	}
	out := bytes.Clone(raw)
	out[i] ^= 0x80
	return out
}

// TestPeersVerifySameEvidence: both sides accept the benchmark inputs, and
// both refuse them once a digest of the log is changed, so the timings
// compare verifications that check the same things.
func TestPeersVerifySameEvidence(t *testing.T) {
	for name, mk := range map[string]func(testing.TB, bool) *verifyCase{"windows": windowsCase, "linux": linuxCase} {
		good, bad := mk(t, false), mk(t, true)
		for side, f := range map[string]func() error{"ours": good.ours, "peer": good.peer, "signature": good.sig} {
			if err := f(); err != nil {
				t.Errorf("%s %s: %v", name, side, err)
			}
		}
		for side, f := range map[string]func() error{"ours": bad.ours, "peer": bad.peer} {
			if err := f(); err == nil {
				t.Errorf("%s %s accepts a log changed after the quote", name, side)
			}
		}
	}
}
