package keyprotector

import (
	"context"
	"crypto/hpke"
	"sync"
	"testing"
	"time"
)

// testNow is the fixed time of every test.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return testNow }

var (
	guardianCacheMu sync.Mutex
	guardianCache   = map[string]*KeyGuardian{}
)

// testGuardian returns a guardian generated once per test binary for
// (name, suite, alg).
func testGuardian(t testing.TB, name string, suite Suite, alg SignatureAlgorithm) *KeyGuardian {
	t.Helper()
	key := name + "/" + suite.String() + "/" + alg.String()
	guardianCacheMu.Lock()
	defer guardianCacheMu.Unlock()
	if g := guardianCache[key]; g != nil {
		return g
	}
	g, err := GenerateGuardian(&GuardianConfig{Name: name, Suite: suite, SignatureAlgorithm: alg, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	guardianCache[key] = g
	return g
}

type fixture struct {
	owner, fabric, other *KeyGuardian
	kp                   *KeyProtector
	hostKey              hpke.PrivateKey
	host                 *Host
}

func newFixture(t testing.TB, suite Suite) *fixture {
	t.Helper()
	f := &fixture{
		owner:  testGuardian(t, "owner", suite, SignatureES256),
		fabric: testGuardian(t, "fabric", suite, SignatureES256),
		other:  testGuardian(t, "other", suite, SignatureEdDSA),
	}
	var err error
	f.kp, err = New(context.Background(), f.owner, []*Descriptor{f.fabric.Descriptor()}, &Config{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	hs := SuiteX25519
	if suite.PostQuantum() {
		hs = SuiteMLKEM768X25519
	}
	kem, _ := hs.kem()
	if f.hostKey, err = kem.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	f.host = &Host{
		ReleaseKey: f.hostKey.PublicKey(),
		Binding:    Binding{TokenHash: [32]byte{1, 2, 3}, Nonce: []byte("nonce-0123456789")},
		Verdict:    VerdictAffirming,
		PolicyID:   "baseline",
	}
	return f
}
