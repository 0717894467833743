package keyprotector

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors.json")

const vectorsFile = "testdata/vectors.json"

// vectorFile is testdata/vectors.json: fixed key protectors with every key
// needed to check them, for other implementations. Byte strings are hex.
type vectorFile struct {
	Comment string   `json:"comment"`
	Cases   []vector `json:"cases"`
}

type vector struct {
	Name string `json:"name"`
	// Private key files (KeyGuardian.MarshalPrivate) of the owner and of
	// one fabric guardian.
	OwnerPrivate    string `json:"owner_private"`
	GuardianPrivate string `json:"guardian_private"`
	KeyProtector    string `json:"key_protector"`
	// TransportKey is TK; Derived maps each label to Derive(label).
	TransportKey string            `json:"transport_key"`
	Derived      map[string]string `json:"derived"`
	// A release by the fabric guardian to HostPrivate (RFC 9180
	// SerializePrivateKey of HostSuite) bound to TokenHash and Nonce, and
	// the TK' it re-keyed to.
	HostSuite        uint16 `json:"host_suite"`
	HostPrivate      string `json:"host_private"`
	TokenHash        string `json:"token_hash"`
	Nonce            string `json:"nonce"`
	ReleaseResponse  string `json:"release_response"`
	NextTransportKey string `json:"next_transport_key"`
	// Shielding data encrypted to the same guardians, and its contents.
	ShieldingData    string            `json:"shielding_data"`
	ShieldingSecrets map[string]string `json:"shielding_secrets"`
}

var vectorLabels = []string{LabelVTPMState, LabelMigration, LabelShieldingData}

func loadVectors(t testing.TB) *vectorFile {
	t.Helper()
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		t.Fatal(err)
	}
	return &vf
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	ctx := context.Background()
	vf := loadVectors(t)
	if len(vf.Cases) != 3 {
		t.Fatalf("%d vector cases", len(vf.Cases))
	}
	for _, v := range vf.Cases {
		t.Run(v.Name, func(t *testing.T) {
			owner, err := ParseGuardian(unhex(t, v.OwnerPrivate))
			if err != nil {
				t.Fatal(err)
			}
			fabric, err := ParseGuardian(unhex(t, v.GuardianPrivate))
			if err != nil {
				t.Fatal(err)
			}
			kp, err := Parse(unhex(t, v.KeyProtector))
			if err != nil {
				t.Fatal(err)
			}
			if kp.Owner().KeyID() != owner.Descriptor().KeyID() || kp.Listed(fabric.Descriptor().KeyID()) != nil {
				t.Fatal("vector guardians do not match the key protector")
			}
			want := unhex(t, v.TransportKey)
			for _, g := range []Guardian{owner, fabric} {
				tk, err := kp.unwrap(ctx, g)
				if err != nil {
					t.Fatal(err)
				}
				if hex.EncodeToString(tk.key[:]) != v.TransportKey || len(want) != 32 {
					t.Fatalf("%s unwrapped another TK", g.Descriptor().Name())
				}
				for _, l := range vectorLabels {
					d := tk.Derive(l)
					if hex.EncodeToString(d[:]) != v.Derived[l] {
						t.Fatalf("Derive(%q) = %x, want %s", l, d, v.Derived[l])
					}
				}
			}
			kem, err := hpke.NewKEM(v.HostSuite)
			if err != nil {
				t.Fatal(err)
			}
			hostKey, err := kem.NewPrivateKey(unhex(t, v.HostPrivate))
			if err != nil {
				t.Fatal(err)
			}
			b := &Binding{Nonce: unhex(t, v.Nonce)}
			copy(b.TokenHash[:], unhex(t, v.TokenHash))
			r, err := Open(unhex(t, v.ReleaseResponse), kp, hostKey, b)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(r.Key.key[:]) != v.TransportKey || hex.EncodeToString(r.Next.key[:]) != v.NextTransportKey {
				t.Fatal("release response holds other keys")
			}
			sd, err := ParseShieldingData(unhex(t, v.ShieldingData))
			if err != nil {
				t.Fatal(err)
			}
			c, err := sd.Open(ctx, owner, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Secrets) != len(v.ShieldingSecrets) {
				t.Fatal("shielding secrets differ")
			}
			for k, s := range v.ShieldingSecrets {
				if hex.EncodeToString(c.Secrets[k]) != s {
					t.Fatalf("shielding secret %q differs", k)
				}
			}
		})
	}
}

// rsaGuardian makes an RSA-OAEP-3072 guardian with an in-memory key, which
// the package itself refuses to generate (RSA is for HSM and TPM keys).
func rsaGuardian(t testing.TB, name string) *KeyGuardian {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGuardian(context.Background(), PrivateKeys{Signer: sk, RSA: rk}, &GuardianConfig{Name: name, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	g.software = true
	return g
}

func generateVectors(t *testing.T) {
	ctx := context.Background()
	vf := vectorFile{Comment: "shieldvm keyprotector test vectors, format version 1; see docs/keyprotector.md. Generated by go test ./keyprotector -run TestVectors -update."}
	cases := []struct {
		name          string
		owner, fabric func() *KeyGuardian
		host          hpke.KEM
	}{
		{"x25519", func() *KeyGuardian { return testGuardian(t, "vector-owner", SuiteX25519, SignatureES256) },
			func() *KeyGuardian { return testGuardian(t, "vector-fabric", SuiteX25519, SignatureEdDSA) }, hpke.DHKEM(ecdh.X25519())},
		{"p256-rsa-oaep-3072", func() *KeyGuardian { return testGuardian(t, "vector-owner", SuiteP256, SignatureES256) },
			func() *KeyGuardian { return rsaGuardian(t, "vector-hsm") }, hpke.DHKEM(ecdh.P256())},
		{"mlkem768-x25519", func() *KeyGuardian { return testGuardian(t, "vector-owner", SuiteMLKEM768X25519, SignatureES256) },
			func() *KeyGuardian { return testGuardian(t, "vector-fabric", SuiteMLKEM768X25519, SignatureEdDSA) }, hpke.MLKEM768X25519()},
	}
	for _, c := range cases {
		owner, fabric := c.owner(), c.fabric()
		kp, err := New(ctx, owner, []*Descriptor{fabric.Descriptor()}, &Config{Now: fixedNow, Rules: Rules{PolicyIDs: []string{"baseline-2026"}}})
		if err != nil {
			t.Fatal(err)
		}
		tk := mustUnwrap(t, kp, owner)
		v := vector{Name: c.name, KeyProtector: hex.EncodeToString(kp.Marshal()), TransportKey: hex.EncodeToString(tk.key[:]), Derived: map[string]string{}}
		for _, l := range vectorLabels {
			d := tk.Derive(l)
			v.Derived[l] = hex.EncodeToString(d[:])
		}
		for _, p := range []struct {
			g   *KeyGuardian
			out *string
		}{{owner, &v.OwnerPrivate}, {fabric, &v.GuardianPrivate}} {
			b, err := p.g.MarshalPrivate()
			if err != nil {
				t.Fatal(err)
			}
			*p.out = hex.EncodeToString(b)
		}
		hk, err := c.host.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		hb, err := hk.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		v.HostSuite, v.HostPrivate = c.host.ID(), hex.EncodeToString(hb)
		host := &Host{ReleaseKey: hk.PublicKey(), Verdict: VerdictAffirming, PolicyID: "baseline-2026",
			Binding: Binding{TokenHash: [32]byte(unhex(t, "5ba93c9db0cff93f52b521d7420e43f6eda2784f5ba93c9db0cff93f52b521d7")), Nonce: []byte("challenge-nonce-0001")}}
		v.TokenHash, v.Nonce = hex.EncodeToString(host.Binding.TokenHash[:]), hex.EncodeToString(host.Binding.Nonce)
		resp, err := Release(ctx, kp, fabric, host, &ReleaseConfig{Now: fixedNow})
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(resp, kp, hk, &host.Binding)
		if err != nil {
			t.Fatal(err)
		}
		v.ReleaseResponse, v.NextTransportKey = hex.EncodeToString(resp), hex.EncodeToString(r.Next.key[:])
		secrets := map[string][]byte{"admin-password": []byte("correct horse battery staple"), "unattend.xml": []byte("<unattend/>")}
		sd, err := NewShieldingData(ctx, owner, []*Descriptor{fabric.Descriptor()}, &ShieldingContents{
			Secrets:   secrets,
			Templates: []Template{{Name: "ws2025-datacenter", DiskDigest: [32]byte{0xd1, 0x5c}, Signer: [32]byte{0x51, 0x6e}}},
		}, &Config{Now: fixedNow})
		if err != nil {
			t.Fatal(err)
		}
		v.ShieldingData, v.ShieldingSecrets = hex.EncodeToString(sd.Marshal()), map[string]string{}
		for k, s := range secrets {
			v.ShieldingSecrets[k] = hex.EncodeToString(s)
		}
		vf.Cases = append(vf.Cases, v)
	}
	out, err := json.MarshalIndent(vf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(vectorsFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

var _ = crypto.SHA256
