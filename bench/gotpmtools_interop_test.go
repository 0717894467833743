//go:build interop

package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/tpm"
	gotpmserver "github.com/google/go-tpm-tools/server"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/tcp"
	"github.com/shieldvm/shieldvm/vtpm"
	"github.com/shieldvm/shieldvm/vtpm/server"
)

// This test lives in the bench module, behind the interop tag, because
// go-tpm-tools' server package (CreateImportBlob) pulls in go-eventlog,
// which the library's module does not depend on. It needs no Debian
// package.

// rwTPM turns a go-tpm transport into the io.ReadWriter of go-tpm-tools:
// Write sends a command, the next Read returns its whole response.
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

// servedMSSIM serves a fresh vtpm over mssim on loopback and returns a
// started go-tpm TCP client for it.
func servedMSSIM(t *testing.T) *tcp.TPM {
	t.Helper()
	tp, err := vtpm.New(vtpm.Config{DeferStartup: true})
	if err != nil {
		t.Fatal(err)
	}
	in := server.New(tp, nil)
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.ServeMSSIM(ctx, tl, pl) }()
	t.Cleanup(func() { cancel(); <-done; in.Close() })
	c, err := tcp.Open(tcp.Config{CommandAddress: tl.Addr().String(), PlatformAddress: pl.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.PowerOn(); err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(c); err != nil {
		t.Fatal(err)
	}
	return c
}

func pcr16(t *testing.T, tpm *tcp.TPM) []byte {
	t.Helper()
	r, err := (tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(16)},
	}}}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	return r.PCRValues.Digests[0].Buffer
}

func extend16(t *testing.T, tpm *tcp.TPM) {
	t.Helper()
	_, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
			{HashAlg: tpm2.TPMAlgSHA256, Digest: bytes.Repeat([]byte{0x16}, 32)}}},
	}).Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
}

// TestInteropGoTPMToolsImport imports secrets that go-tpm-tools' server package
// sealed to the EK of a served TPM (server.CreateImportBlob, as a
// guardian service sends them), without and with a PCR policy, and checks
// that the PCR-bound one no longer imports after the PCR changed.
func TestInteropGoTPMToolsImport(t *testing.T) {
	for _, alg := range []string{"RSA", "ECC"} {
		t.Run(alg, func(t *testing.T) {
			c := servedMSSIM(t)
			rw := &rwTPM{tpm: c}
			ekFn := client.EndorsementKeyRSA
			if alg == "ECC" {
				ekFn = client.EndorsementKeyECC
			}
			ek, err := ekFn(rw)
			if err != nil {
				t.Fatal(err)
			}
			defer ek.Close()
			secret := []byte("a VM's transport key")
			blob, err := gotpmserver.CreateImportBlob(ek.PublicKey(), secret, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ek.Import(blob)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("imported %q, want %q", got, secret)
			}

			pcr := pcr16(t, c)
			bound, err := gotpmserver.CreateImportBlob(ek.PublicKey(), secret,
				&pb.PCRs{Hash: pb.HashAlgo_SHA256, Pcrs: map[uint32][]byte{16: pcr}})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := ek.Import(bound); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("PCR-bound import: %q, %v", got, err)
			}
			extend16(t, c)
			got, err = ek.Import(bound)
			if err == nil {
				t.Fatalf("imported %q after PCR 16 changed", got)
			}
			var se legacy.SessionError
			if !errors.As(err, &se) || se.Code != legacy.RCPolicyFail {
				t.Fatalf("import after the PCR changed: %v, want TPM_RC_POLICY_FAIL", err)
			}
			// A blob for another EK does not import.
			other := sha256.Sum256(secret)
			blob.EncryptedSeed = append([]byte(nil), blob.EncryptedSeed...)
			blob.EncryptedSeed[len(blob.EncryptedSeed)/2] ^= other[0] | 1
			if _, err := ek.Import(blob); err == nil {
				t.Fatal("a blob whose encrypted seed was changed imported")
			} else if errors.Is(err, io.EOF) {
				t.Fatalf("transport error: %v", err)
			}
		})
	}
}
