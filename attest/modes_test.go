package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/shieldvm/shieldvm/policy"
)

// TestHostKeyMode: a host with a registered host key; the attacks on it.
func TestHostKeyMode(t *testing.T) {
	withSimulator(t, AttesterConfig{}, func(e *env) {
		hostKey := ed25519.NewKeyFromSeed(make([]byte, 32))
		if err := e.reg.AddHostKey(hostKey.Public(), "host-key-1"); err != nil {
			t.Fatal(err)
		}
		cfg := e.cfg
		cfg.Modes = []Mode{ModeHostKey}
		ver, _ := NewVerifier(cfg)
		ctx := context.Background()
		mk := func(key ed25519.PrivateKey, akName []byte) *Evidence {
			ch, err := ver.NewChallenge()
			if err != nil {
				t.Fatal(err)
			}
			ev, err := e.att.Attest(ctx, ch, e.release)
			if err != nil {
				t.Fatal(err)
			}
			ak, _ := ParseAKPublic(ev.AKPublic)
			if akName == nil {
				akName = ak.Name
			}
			ev.Mode = ModeHostKey
			if ev.HostKey, err = SignHostKeyProof(key, ch, akName, e.release); err != nil {
				t.Fatal(err)
			}
			return ev
		}
		r, err := ver.Verify(ctx, mk(hostKey, nil))
		if err != nil || r.Host.ID != "host-key-1" || r.Host.Mode != ModeHostKey || r.Status != policy.Affirming {
			t.Fatalf("result %+v, err %v", r, err)
		}
		t.Run("UnregisteredHostKeyDenied", func(t *testing.T) {
			k := ed25519.NewKeyFromSeed([]byte("another host key seed 32 bytes!!"))
			if _, err := ver.Verify(ctx, mk(k, nil)); !errors.Is(err, ErrUnregistered) {
				t.Fatalf("err = %v, want ErrUnregistered", err)
			}
		})
		t.Run("HostKeyProofForAnotherAKDenied", func(t *testing.T) {
			if _, err := ver.Verify(ctx, mk(hostKey, []byte("another AK name"))); !errors.Is(err, ErrHostKey) {
				t.Fatalf("err = %v, want ErrHostKey", err)
			}
		})
		t.Run("HostKeyRegisteredAsEKDenied", func(t *testing.T) {
			// A key registered for one mode does not identify in another.
			reg := &MemoryRegistry{}
			reg.AddEK(hostKey.Public(), "confused")
			c := cfg
			c.Registry = reg
			v2, _ := NewVerifier(c)
			if _, err := v2.Verify(ctx, mk(hostKey, nil)); !errors.Is(err, ErrUnregistered) {
				t.Fatalf("err = %v, want ErrUnregistered", err)
			}
		})
	})
}

// TestAdminMode: group membership identifies the host, with a warning on
// the instance identity (a claim, not a hardware-rooted proof).
func TestAdminMode(t *testing.T) {
	withSimulator(t, AttesterConfig{}, func(e *env) {
		e.reg.AddGroupMember("fabric-a", "host-7")
		cfg := e.cfg
		cfg.Modes = []Mode{ModeAdmin}
		ver, _ := NewVerifier(cfg)
		ctx := context.Background()
		mk := func(id string) *Evidence {
			ch, _ := ver.NewChallenge()
			ev, err := e.att.Attest(ctx, ch, e.release)
			if err != nil {
				t.Fatal(err)
			}
			ev.Mode, ev.Admin = ModeAdmin, &AdminClaim{HostID: id}
			return ev
		}
		r, err := ver.Verify(ctx, mk("host-7"))
		if err != nil || r.Host.Group != "fabric-a" || r.Trust.InstanceIdentity != policy.Warning {
			t.Fatalf("result %+v, err %v", r, err)
		}
		if _, err := ver.Verify(ctx, mk("host-8")); !errors.Is(err, ErrUnregistered) {
			t.Fatalf("host outside the group: err = %v, want ErrUnregistered", err)
		}
	})
}

// TestEKCertificateChain: with manufacturer roots configured, the EK
// certificate must chain to them and be the EK's.
func TestEKCertificateChain(t *testing.T) {
	withSimulator(t, AttesterConfig{}, func(e *env) {
		ek, err := parseEKPublic(e.att.EKPublic())
		if err != nil {
			t.Fatal(err)
		}
		root, rootKey := newCA(t, "TPM Manufacturer Root")
		otherRoot, otherKey := newCA(t, "Someone Else")
		ekCert := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, pub any) []byte {
			// The TPM manufacturer SAN is critical and holds only a
			// directoryName (TCG EK Credential Profile, section 3.2.9).
			san, _ := asn1.Marshal([]asn1.RawValue{{Class: 2, Tag: 4, IsCompound: true, Bytes: mustMarshal(t, pkix.Name{CommonName: "id:54504D00"}.ToRDNSequence())}})
			tmpl := &x509.Certificate{
				SerialNumber:    big.NewInt(2),
				NotBefore:       t0.Add(-time.Hour),
				NotAfter:        t0.Add(24 * time.Hour),
				KeyUsage:        x509.KeyUsageKeyEncipherment,
				ExtraExtensions: []pkix.Extension{{Id: oidSAN, Critical: true, Value: san}},
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
			if err != nil {
				t.Fatal(err)
			}
			return der
		}
		pool := x509.NewCertPool()
		pool.AddCert(root)
		cfg := e.cfg
		cfg.EKRoots = pool
		ver, _ := NewVerifier(cfg)
		run := func(cert []byte) error {
			ch, err := ver.NewTPMChallenge(e.att.EKPublic(), e.att.AKPublic())
			if err != nil {
				t.Fatal(err)
			}
			ev, err := e.att.AttestTPM(context.Background(), ch, e.release, cert)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ver.Verify(context.Background(), ev)
			return err
		}
		if err := run(ekCert(root, rootKey, ek.pub.Key)); err != nil {
			t.Fatal(err)
		}
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		for name, cert := range map[string][]byte{
			"EKCertificateFromOtherRootDenied": ekCert(otherRoot, otherKey, ek.pub.Key),
			"EKCertificateForOtherKeyDenied":   ekCert(root, rootKey, &other.PublicKey),
			"MissingEKCertificateDenied":       nil,
		} {
			t.Run(name, func(t *testing.T) {
				if err := run(cert); !errors.Is(err, ErrEKCertificate) {
					t.Fatalf("err = %v, want ErrEKCertificate", err)
				}
			})
		}
	})
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
