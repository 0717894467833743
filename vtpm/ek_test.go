package vtpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/client"
)

func testCA(t *testing.T) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test EK CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key}
}

// TestEKCertificates checks that the EK certificates in NV certify the EKs
// that go-tpm-tools derives, and chain to the CA.
func TestEKCertificates(t *testing.T) {
	ca := testCA(t)
	v, err := New(Config{VMID: "vm", EKCA: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rw := &readWriter{tpm: v}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, tc := range []struct {
		name string
		ek   func() (*client.Key, error)
	}{
		{"RSA", func() (*client.Key, error) { return client.EndorsementKeyRSA(rw) }},
		{"ECC", func() (*client.Key, error) { return client.EndorsementKeyECC(rw) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := tc.ek()
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			cert := k.Cert()
			if cert == nil {
				t.Fatal("go-tpm-tools found no EK certificate")
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Fatalf("EK certificate does not chain to the CA: %v", err)
			}
			type equaler interface{ Equal(crypto.PublicKey) bool }
			pub, ok := cert.PublicKey.(equaler)
			if !ok || !pub.Equal(k.PublicKey()) {
				t.Fatal("EK certificate is for another key")
			}
		})
	}
}
