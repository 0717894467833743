package keyprotector

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"math/big"
	"runtime"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// toBeSigned rebuilds a COSE_Sign1 Sig_structure (RFC 9052, section 4.4).
func toBeSigned(s *signed, external []byte) []byte {
	return marshal([]any{"Signature1", cbor.RawMessage(s.msg.Headers.RawProtected), external, s.msg.Payload})
}

// es256Verify is the bare primitive under a COSE ES256 verification:
// SHA-256 of the message and an ECDSA P-256 verification.
func es256Verify(b *testing.B, pub *ecdsa.PublicKey, msg, sig []byte) {
	h := sha256.Sum256(msg)
	if !ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		b.Fatal("primitive verification failed")
	}
}

// BenchmarkRelease measures Release as a key protection service runs it:
// Parse of the key protector bytes (which verifies the owner's
// authorization and the key protector signature), the rules, the unwrap
// with the MAC check, and the HPKE seal to the host. In the same loop it
// measures the primitives that work is made of, on the same data: two
// ES256 verifications (SHA-256 + ECDSA), one HPKE open of the stanza, the
// MAC (HKDF + HMAC-SHA256 over the body), one HPKE seal to the host. It
// reports both, in wall time and in thread CPU time, and their ratios;
// ns/op is the sum of both halves. With /rekey, Release also makes TK' and
// the re-keyed key protector, and the primitives also count TK' sealed to
// every guardian and one ES256 signature.
func BenchmarkRelease(b *testing.B) {
	for _, suite := range []Suite{SuiteX25519, SuiteMLKEM768X25519} {
		for _, mode := range []string{"keep", "rekey"} {
			b.Run(suite.String()+"/"+mode, func(b *testing.B) { benchRelease(b, suite, mode == "rekey") })
		}
	}
}

func benchRelease(b *testing.B, suite Suite, rekey bool) {
	ctx := context.Background()
	f := newFixture(b, suite)
	raw := f.kp.Marshal()
	cfg := &ReleaseConfig{Now: fixedNow, KeepKey: !rekey}

	// Inputs of the primitives.
	outer, _ := parseSign1(raw, "kp")
	auth, _ := parseSign1(f.kp.auth.raw, "auth")
	authTBS, kpTBS := toBeSigned(auth, aadAuthorization), toBeSigned(outer, aadKeyProtector)
	owner, err := ecdsa.ParseUncompressedPublicKey(ecdsaCurve, f.owner.Descriptor().body.SigKey)
	if err != nil {
		b.Fatal(err)
	}
	i := f.kp.auth.index(f.fabric.Descriptor().KeyID())
	info := stanzaInfo(f.kp.id, 0, f.fabric.Descriptor().KeyID())
	wrapped := f.kp.body.Stanzas[i].Wrapped
	fabricKey := f.fabric.keys.HPKE
	macIn := macInput(&f.kp.body)
	hostInfo := releaseInfo(f.kp.id, 0, suite, f.host.ReleaseKey.Bytes(), &f.host.Binding, nil)
	plain := marshal(sealedKeys{Key: make([]byte, 32)})

	// Extra primitives of a re-key: TK' sealed to every guardian and the
	// new key protector signed (SHA-256 + ECDSA) by the releasing guardian.
	var guardianKeys []hpke.PublicKey
	for _, d := range f.kp.auth.all {
		guardianKeys = append(guardianKeys, mustEnc(d).hpke)
	}
	signKey := f.fabric.keys.Signer.(*ecdsa.PrivateKey)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var tRelease, tPrim, cRelease, cPrim time.Duration
	b.ReportAllocs()
	for b.Loop() {
		c0 := threadCPU()
		t0 := time.Now()
		kp, err := Parse(raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Release(ctx, kp, f.fabric, f.host, cfg); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		c1 := threadCPU()
		es256Verify(b, owner, authTBS, auth.msg.Signature)
		es256Verify(b, owner, kpTBS, outer.msg.Signature)
		tk, err := hpke.Open(fabricKey, hpkeKDF, hpkeAEAD, info, wrapped)
		if err != nil {
			b.Fatal(err)
		}
		mk, _ := hkdf.Key(sha256.New, tk, nil, "shieldvm/v1/kp-mac-key", 32)
		h := hmac.New(sha256.New, mk)
		h.Write(macIn)
		if !hmac.Equal(h.Sum(nil), f.kp.body.MAC) {
			b.Fatal("MAC")
		}
		if _, err := hpke.Seal(f.host.ReleaseKey, hpkeKDF, hpkeAEAD, hostInfo, plain); err != nil {
			b.Fatal(err)
		}
		if rekey {
			var next [32]byte
			rand.Read(next[:])
			for i, pk := range guardianKeys {
				if _, err := hpke.Seal(pk, hpkeKDF, hpkeAEAD, stanzaInfo(f.kp.id, 1, f.kp.auth.all[i].id), next[:]); err != nil {
					b.Fatal(err)
				}
			}
			h := sha256.Sum256(kpTBS)
			if _, err := ecdsa.SignASN1(rand.Reader, signKey, h[:]); err != nil {
				b.Fatal(err)
			}
		}
		c2 := threadCPU()
		t2 := time.Now()
		tRelease += t1.Sub(t0)
		tPrim += t2.Sub(t1)
		cRelease += c1 - c0
		cPrim += c2 - c1
	}
	n := float64(b.N)
	// Wall time, which a loaded machine inflates unevenly...
	b.ReportMetric(float64(tRelease.Nanoseconds())/n, "release-ns/op")
	b.ReportMetric(float64(tPrim.Nanoseconds())/n, "primitives-ns/op")
	// ...and thread CPU time, which it does not.
	b.ReportMetric(float64(cRelease.Nanoseconds())/n, "release-cpu-ns/op")
	b.ReportMetric(float64(cPrim.Nanoseconds())/n, "primitives-cpu-ns/op")
	b.ReportMetric(float64(cRelease)/float64(cPrim), "release/primitives-cpu")
	b.ReportMetric(n/cRelease.Seconds(), "releases/cpu-s")
}

// BenchmarkOpen measures the host side: open the response and check TK
// (and TK' with the re-keyed key protector) against the MACs.
func BenchmarkOpen(b *testing.B) {
	for _, suite := range []Suite{SuiteX25519, SuiteMLKEM768X25519} {
		b.Run(suite.String(), func(b *testing.B) {
			f := newFixture(b, suite)
			resp, err := Release(context.Background(), f.kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Open(resp, f.kp, f.hostKey, &f.host.Binding); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSuiteSize reports the bytes each suite adds to a key protector
// per guardian (its stanza plus its descriptor in the authorization), and
// the stanza alone; ns/op is New with an owner and one guardian.
func BenchmarkSuiteSize(b *testing.B) {
	for _, suite := range []Suite{SuiteX25519, SuiteP256, SuiteMLKEM768X25519, SuiteRSAOAEP3072} {
		b.Run(suite.String(), func(b *testing.B) {
			ctx := context.Background()
			ownerSuite := suite
			if suite == SuiteRSAOAEP3072 {
				ownerSuite = SuiteP256
			}
			owner := testGuardian(b, "owner", ownerSuite, SignatureES256)
			var g *KeyGuardian
			if suite == SuiteRSAOAEP3072 {
				g = rsaGuardian(b, "hsm")
			} else {
				g = testGuardian(b, "fabric", suite, SignatureES256)
			}
			alone, err := New(ctx, owner, nil, &Config{Now: fixedNow})
			if err != nil {
				b.Fatal(err)
			}
			var kp *KeyProtector
			for b.Loop() {
				if kp, err = New(ctx, owner, []*Descriptor{g.Descriptor()}, &Config{Now: fixedNow}); err != nil {
					b.Fatal(err)
				}
			}
			i := kp.auth.index(g.Descriptor().KeyID())
			b.ReportMetric(float64(len(kp.raw)-len(alone.raw)), "bytes/guardian")
			b.ReportMetric(float64(len(kp.body.Stanzas[i].Wrapped)), "wrapped-bytes")
			b.ReportMetric(float64(len(g.Descriptor().raw)), "descriptor-bytes")
		})
	}
}

func BenchmarkDerive(b *testing.B) {
	f := newFixture(b, SuiteX25519)
	tk := mustUnwrap(b, f.kp, f.owner)
	b.ReportAllocs()
	for b.Loop() {
		_ = tk.Derive(LabelVTPMState)
	}
}

var ecdsaCurve = elliptic.P256()
