package vtpm

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestReusedSendBufferCannotRewriteAuthPolicy: a transport that reuses
// its read buffer for the next command must not be able to change what
// the TPM stored from the previous one (here a primary key's authPolicy,
// which would let a guest rewrite the EK's policy).
func TestReusedSendBufferCannotRewriteAuthPolicy(t *testing.T) {
	v := newTestTPM(t)
	tmpl := tpm2.ECCSRKTemplate
	policy := bytes.Repeat([]byte{0x5A}, 32)
	tmpl.AuthPolicy = tpm2.TPM2BDigest{Buffer: policy}
	cmd := createPrimaryCmd(tmpl)
	rsp, err := v.Send(cmd)
	if err != nil || rcOf(rsp) != rcSuccess {
		t.Fatalf("CreatePrimary: rc %#x, %v", rcOf(rsp), err)
	}
	h := tpm2.TPMHandle(uint32(rsp[10])<<24 | uint32(rsp[11])<<16 | uint32(rsp[12])<<8 | uint32(rsp[13]))
	for i := range cmd {
		cmd[i] = 0xAA // the transport's next read lands in the same buffer
	}
	// The policy a policy session is checked against, and the public
	// area ReadPublic returns.
	if got := v.object(uint32(h)).pub.AuthPolicy; !bytes.Equal(got, policy) {
		t.Fatalf("authPolicy became %x", got)
	}
	pub, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pub.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.AuthPolicy.Buffer, policy) {
		t.Fatalf("public authPolicy became %x", p.AuthPolicy.Buffer)
	}
}
