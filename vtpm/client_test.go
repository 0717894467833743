package vtpm

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"testing"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"io"
)

func newTestTPM(t testing.TB) *TPM {
	t.Helper()
	v, err := New(Config{VMID: "test-vm"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// TestGoTPMToolsClient runs the go-tpm-tools client flows a host agent
// uses: EKs, an ECC attestation key and a quote, verified client-side by
// go-tpm-tools.
func TestGoTPMToolsClient(t *testing.T) {
	v := newTestTPM(t)
	rw := &readWriter{tpm: v}

	ekECC, err := client.EndorsementKeyECC(rw)
	if err != nil {
		t.Fatalf("EndorsementKeyECC: %v", err)
	}
	if _, ok := ekECC.PublicKey().(*ecdsa.PublicKey); !ok {
		t.Fatalf("ECC EK public key is %T", ekECC.PublicKey())
	}
	ekECC.Close()
	ekRSA, err := client.EndorsementKeyRSA(rw)
	if err != nil {
		t.Fatalf("EndorsementKeyRSA: %v", err)
	}
	if _, ok := ekRSA.PublicKey().(*rsa.PublicKey); !ok {
		t.Fatalf("RSA EK public key is %T", ekRSA.PublicKey())
	}
	ekRSA.Close()

	// The cached EK is the same key as a fresh derivation.
	ek2, err := client.EndorsementKeyECC(rw)
	if err != nil {
		t.Fatal(err)
	}
	ek2.Close()

	ak, err := client.AttestationKeyECC(rw)
	if err != nil {
		t.Fatalf("AttestationKeyECC: %v", err)
	}
	defer ak.Close()
	sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}
	q, err := ak.Quote(sel, []byte("nonce-0123456789"))
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	if len(q.GetPcrs().GetPcrs()) != 8 {
		t.Errorf("quote has %d PCRs, want 8", len(q.GetPcrs().GetPcrs()))
	}

	srk, err := client.StorageRootKeyECC(rw)
	if err != nil {
		t.Fatalf("StorageRootKeyECC: %v", err)
	}
	srk.Close()
}

// readWriter adapts a transport.TPM to the io.ReadWriter that go-tpm-tools
// and go-tpm's legacy API take. (transport.ToReadWriter returns io.EOF
// with the last bytes, which tpmutil treats as an error.)
type readWriter struct {
	tpm  transport.TPM
	rsp  []byte
	sent [][]byte // every command, for the fuzz corpus
}

func (rw *readWriter) Write(p []byte) (int, error) {
	rw.sent = append(rw.sent, append([]byte(nil), p...))
	rsp, err := rw.tpm.Send(p)
	if err != nil {
		return 0, err
	}
	rw.rsp = rsp
	return len(p), nil
}

func (rw *readWriter) Read(p []byte) (int, error) {
	if len(rw.rsp) == 0 {
		return 0, io.EOF
	}
	n := copy(p, rw.rsp)
	rw.rsp = rw.rsp[n:]
	return n, nil
}
