package keyprotector

import (
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"errors"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

func openSimulator(t *testing.T) transport.TPM {
	t.Helper()
	sim, err := simulator.GetWithFixedSeedInsecure(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return transport.FromReadWriter(sim)
}

// TestTPMGuardian runs the whole key protector flow with a guardian whose
// keys live in the Microsoft reference TPM (go-tpm-tools simulator).
func TestTPMGuardian(t *testing.T) {
	ctx := context.Background()
	tpm := openSimulator(t)
	g, err := NewTPMGuardian(ctx, tpm, &TPMGuardianConfig{Guardian: GuardianConfig{Name: "hgs-tpm", Now: fixedNow}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Descriptor().Suite() != SuiteP256 || g.Descriptor().SignatureAlgorithm() != SignatureES256 {
		t.Fatalf("TPM guardian is %v/%v", g.Descriptor().Suite(), g.Descriptor().SignatureAlgorithm())
	}
	if _, err := g.MarshalPrivate(); err == nil {
		t.Fatal("a TPM guardian's keys were exported")
	}
	owner := testGuardian(t, "owner", SuiteP256, SignatureES256)

	// The TPM guardian as a fabric guardian: release to a host.
	kp, err := New(ctx, owner, []*Descriptor{g.Descriptor()}, &Config{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := hpke.DHKEM(ecdh.X25519()).GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	host := &Host{ReleaseKey: hostKey.PublicKey(), Verdict: VerdictAffirming, Binding: Binding{Nonce: []byte{1}}}
	resp, err := Release(ctx, kp, g, host, &ReleaseConfig{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(resp, kp, hostKey, &host.Binding)
	if err != nil {
		t.Fatal(err)
	}
	want, err := kp.Unwrap(ctx, owner, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Key.Equal(want) {
		t.Fatal("TPM guardian released another key")
	}
	// The re-keyed key protector is signed by the TPM's key.
	if r.NextKeyProtector.Signer() != g.Descriptor().KeyID() {
		t.Fatal("re-keyed key protector not signed by the TPM guardian")
	}

	// The TPM guardian as owner.
	kp2, err := New(ctx, g, []*Descriptor{owner.Descriptor()}, &Config{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kp2.Unwrap(ctx, g, nil); err != nil {
		t.Fatal(err)
	}

	// Re-open: the TPM derives the same primary keys from its seed.
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	g2, err := OpenTPMGuardian(ctx, tpm, g.Descriptor().Marshal(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	if _, err := kp2.Unwrap(ctx, g2, nil); err != nil {
		t.Fatal(err)
	}

	// Another guardian's descriptor does not open against this TPM.
	other := testGuardian(t, "other", SuiteP256, SignatureES256)
	if _, err := OpenTPMGuardian(ctx, tpm, other.Descriptor().Marshal(), nil); err == nil {
		t.Fatal("opened a TPM guardian for keys the TPM does not hold")
	}
	if _, err := NewTPMGuardian(ctx, tpm, &TPMGuardianConfig{Guardian: GuardianConfig{Name: "x", Suite: SuiteX25519}}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("X25519 TPM guardian: %v", err)
	}
}
