package keyprotector

import (
	"bytes"
	"context"
	"crypto/hpke"
	"slices"
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

// reseal re-encodes kp after mutate, re-MACs it under tk if tk is not nil
// (an attacker who knows TK) and re-signs it with signer: the strongest
// forgeries the checks must still catch.
func reseal(t testing.TB, kp *KeyProtector, signer Guardian, tk *TransportKey, mutate func(*kpBody)) []byte {
	t.Helper()
	b := kp.body
	b.Stanzas = append([]stanza(nil), b.Stanzas...)
	mutate(&b)
	if tk != nil {
		b.MAC = tk.mac(macInput(&b))
	}
	sd := signer.Descriptor()
	raw, err := sign1(context.Background(), sd.SignatureAlgorithm(), sd.KeyID(), signer.Sign, aadKeyProtector, marshal(b))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// forgeAuthorization signs an authorization listing owner and guardians
// with signer's key.
func forgeAuthorization(t testing.TB, kp *KeyProtector, signer Guardian, owner *Descriptor, guardians []*Descriptor, version uint64) []byte {
	t.Helper()
	body := kp.auth.body
	body.Owner = owner.raw
	body.AuthVersion = version
	body.Guardians = [][]byte{}
	sorted := append([]*Descriptor(nil), guardians...)
	slices.SortFunc(sorted, func(a, b *Descriptor) int { return bytes.Compare(a.id[:], b.id[:]) })
	for _, d := range sorted {
		body.Guardians = append(body.Guardians, d.raw)
	}
	sd := signer.Descriptor()
	raw, err := sign1(context.Background(), sd.SignatureAlgorithm(), sd.KeyID(), signer.Sign, aadAuthorization, marshal(body))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// fatalT is what both *testing.T and *rapid.T provide.
type fatalT interface {
	Helper()
	Fatal(args ...any)
}

func mustUnwrap(t fatalT, kp *KeyProtector, g Guardian) *TransportKey {
	t.Helper()
	tk, err := kp.Unwrap(context.Background(), g, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func mustEnc(d *Descriptor) *encryptionKey {
	k, err := d.encryptionKey()
	if err != nil {
		panic(err)
	}
	return k
}
