package server

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/go-tpm-tools/client"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"
)

// rwTPM turns a command/response transport into the io.ReadWriter of
// go-tpm-tools and go-tpm's legacy package: Write sends a command, the
// next Read returns its whole response.
type rwTPM struct {
	tpm interface{ Send([]byte) ([]byte, error) }
	rsp []byte
}

func (r *rwTPM) Write(cmd []byte) (int, error) {
	rsp, err := r.tpm.Send(cmd)
	if err != nil {
		return 0, err
	}
	r.rsp = rsp
	return len(cmd), nil
}

func (r *rwTPM) Read(p []byte) (int, error) {
	if r.rsp == nil {
		return 0, io.EOF
	}
	if len(p) < len(r.rsp) {
		return 0, io.ErrShortBuffer
	}
	n := copy(p, r.rsp)
	r.rsp = nil
	return n, nil
}

// goTPMToolsClient serves a started TPM over mssim and returns a
// go-tpm-tools io.ReadWriter for it, the mssim client (for go-tpm), and the
// instance's command trace.
func goTPMToolsClient(t *testing.T) (io.ReadWriter, *mssimClient, *tpmTrace) {
	t.Helper()
	in := New(newTPM(t, ""), nil)
	tr := &tpmTrace{}
	in.trace = tr.hook
	s := serveMSSIM(t, in)
	c := dialMSSIM(t, s)
	c.powerOn(t)
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(c); err != nil {
		t.Fatal(err)
	}
	return &rwTPM{tpm: c}, c, tr
}

// skipIfMissing skips the test when err came from a command the engine
// refused for lack of a feature, which it names; it returns otherwise.
func skipIfMissing(t *testing.T, tr *tpmTrace, err error) {
	t.Helper()
	if f := missingFeature(lastFailure(tr.take())); f != "" {
		t.Skipf("engine lacks %s: %v", f, err)
	}
}

// TestGoTPMToolsSealUnsealPCRs seals with go-tpm-tools' client to PCRs 7
// and 16 of a served TPM, unseals (also with the creation certified
// against the current PCRs), and checks that the secret no longer unseals
// after PCR 16 is extended.
func TestGoTPMToolsSealUnsealPCRs(t *testing.T) {
	rw, c, tr := goTPMToolsClient(t)
	srk, err := client.StorageRootKeyECC(rw)
	if err != nil {
		skipIfMissing(t, tr, err)
		t.Fatal(err)
	}
	defer srk.Close()
	secret := []byte("a disk key sealed to PCRs 7, 16")
	sel := legacy.PCRSelection{Hash: legacy.AlgSHA256, PCRs: []int{7, 16}}
	sealed, err := srk.Seal(secret, client.SealOpts{Current: sel})
	if err != nil {
		skipIfMissing(t, tr, err)
		t.Fatal(err)
	}
	got, err := srk.Unseal(sealed, client.UnsealOpts{})
	if err != nil {
		skipIfMissing(t, tr, err)
		t.Fatal(err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("unsealed %q, want %q", got, secret)
	}
	t.Run("CertifyCurrent", func(t *testing.T) {
		tr.take()
		got, err := srk.Unseal(sealed, client.UnsealOpts{CertifyCurrent: legacy.PCRSelection{Hash: legacy.AlgSHA256, PCRs: []int{7, 16}}})
		if err != nil {
			skipIfMissing(t, tr, err)
			t.Fatal(err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("unsealed %q, want %q", got, secret)
		}
	})
	extend16(t, c, 0x16)
	tr.take()
	if got, err := srk.Unseal(sealed, client.UnsealOpts{}); err == nil {
		t.Fatalf("unsealed %q after PCR 16 changed", got)
	}
	if f := lastFailure(tr.take()); f == nil || f.cc != 0x15E || f.rc != rcPolicyFailSession1 {
		t.Fatalf("unseal after the PCR changed failed on %+v, want TPM2_Unseal with TPM_RC_POLICY_FAIL", f)
	}
}
