package vtpm

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/client"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TestPolicyGoTPMSessions authorizes unseals with go-tpm's own policy
// sessions, which send command HMACs and check response HMACs: plain,
// salted with the SRK and encrypting the unsealed secret, and a
// just-in-time tpm2.Policy session.
func TestPolicyGoTPMSessions(t *testing.T) {
	v := newTestTPM(t)
	policy := pcrPolicy(t, v)
	f := sealWithPolicy(t, v, policy, nil, false)
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	srk, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	srkPub, err := srk.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []tpm2.AuthOption
	}{
		{"unsalted", nil},
		{"salted, encrypted response", []tpm2.AuthOption{tpm2.Salted(srk.ObjectHandle, *srkPub), tpm2.AESEncryption(128, tpm2.EncryptOut)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, closer, err := tpm2.PolicySession(v, tpm2.TPMAlgSHA256, 16, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer closer()
			if _, err := (tpm2.PolicyPCR{PolicySession: s.Handle(), Pcrs: pcrSel16}).Execute(v); err != nil {
				t.Fatal(err)
			}
			got, err := f.unseal(v, s)
			if err != nil || !bytes.Equal(got, f.secret) {
				t.Fatalf("Unseal = %q, %v", got, err)
			}
		})
	}
	jit := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicyPCR{PolicySession: h, Pcrs: pcrSel16}.Execute(tp)
		return err
	})
	if got, err := f.unseal(v, jit); err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal with tpm2.Policy = %q, %v", got, err)
	}
	extend16(t, v, 4)
	_, err = f.unseal(v, jit)
	wantRC(t, "tpm2.Policy Unseal after PCR_Extend", err, rcPolicyFail|rcS1)
}

// TestPolicyAuthValueHMAC: after PolicyAuthValue the command HMAC is keyed
// with the object's authValue; a wrong one fails with DA accounting.
func TestPolicyAuthValueHMAC(t *testing.T) {
	v := newTestTPM(t)
	policy := calc(t, &tpm2.PolicyAuthValue{})
	f := sealWithPolicy(t, v, policy, []byte("correct horse"), false)
	try := func(pw string) error {
		s, closer, err := tpm2.PolicySession(v, tpm2.TPMAlgSHA256, 16, tpm2.Auth([]byte(pw)))
		if err != nil {
			t.Fatal(err)
		}
		defer closer()
		if _, err := (tpm2.PolicyAuthValue{PolicySession: s.Handle()}).Execute(v); err != nil {
			t.Fatal(err)
		}
		got, err := f.unseal(v, s)
		if err == nil && !bytes.Equal(got, f.secret) {
			t.Fatalf("Unseal = %q", got)
		}
		return err
	}
	if err := try("correct horse"); err != nil {
		t.Fatalf("Unseal with the right authValue: %v", err)
	}
	wantRC(t, "Unseal with a wrong authValue", try("battery staple"), rcAuthFail|rcS1)
	if v.s.DA.FailedTries != 1 {
		t.Errorf("failedTries = %d, want 1", v.s.DA.FailedTries)
	}
	// PolicyAuthValue with an empty HMAC (a client that forgot the
	// authValue) fails too.
	s := startPolicy(t, v, false)
	policyRaw(v, ccPolicyAuthValue, []uint32{uint32(s.handle)})
	_, err := f.unseal(v, s)
	wantRC(t, "Unseal with an empty HMAC after PolicyAuthValue", err, rcAuthFail|rcS1)
}

// TestPolicyGoTPMToolsSealUnseal seals with go-tpm-tools' client to the
// current PCRs 7 and 16 and unseals through its PolicyPCR session; after a
// PCR_Extend the unseal fails.
func TestPolicyGoTPMToolsSealUnseal(t *testing.T) {
	v := newTestTPM(t)
	rw := v.ReadWriter()
	srk, err := client.StorageRootKeyECC(rw)
	if err != nil {
		t.Fatal(err)
	}
	defer srk.Close()
	secret := []byte("go-tpm-tools secret")
	sel := legacy.PCRSelection{Hash: legacy.AlgSHA256, PCRs: []int{7, 16}}
	sealed, err := srk.Seal(secret, client.SealOpts{Current: sel})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	got, err := srk.Unseal(sealed, client.UnsealOpts{CertifyCurrent: sel})
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	extend16(t, v, 5)
	if got, err := srk.Unseal(sealed, client.UnsealOpts{}); err == nil {
		t.Fatalf("Unseal after PCR_Extend = %q, want an error", got)
	}
}

// TestPolicySessionReset: a continued policy session starts again after
// it authorized a command, and PolicyRestart resets it.
func TestPolicySessionReset(t *testing.T) {
	v := newTestTPM(t)
	policy := pcrPolicy(t, v)
	f := sealWithPolicy(t, v, policy, nil, false)
	s := startPolicy(t, v, false)
	s.cont = true
	tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}.Execute(v)
	if _, err := f.unseal(v, s); err != nil {
		t.Fatal(err)
	}
	if d := policyDigest(t, v, s); !bytes.Equal(d, make([]byte, 32)) {
		t.Errorf("digest after use %x, want zeros", d)
	}
	_, err := f.unseal(v, s)
	wantRC(t, "second Unseal with a used session", err, rcPolicyFail|rcS1)
	tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}.Execute(v)
	tpm2.PolicyCommandCode{PolicySession: s.handle, Code: tpm2.TPMCCUnseal}.Execute(v)
	if rc := policyRaw(v, ccPolicyRestart, []uint32{uint32(s.handle)}); rc != rcSuccess {
		t.Fatalf("PolicyRestart: rc %#x", rc)
	}
	if d := policyDigest(t, v, s); !bytes.Equal(d, make([]byte, 32)) {
		t.Errorf("digest after PolicyRestart %x, want zeros", d)
	}
	tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}.Execute(v)
	if _, err := f.unseal(v, s); err != nil {
		t.Fatalf("Unseal after PolicyRestart: %v", err)
	}
}

// TestPolicyExpiredAuthorizationRejected: an authorization that
// PolicySecret limited to 10 seconds cannot be used later, neither by its
// session nor through its ticket.
func TestPolicyExpiredAuthorizationRejected(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	v, err := New(Config{VMID: "test-vm", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ownerName := tpm2.NamedHandle{Handle: tpm2.TPMRHOwner, Name: tpm2.HandleName(tpm2.TPMRHOwner)}
	policy := calc(t, &tpm2.PolicySecret{AuthHandle: ownerName})
	f := sealWithPolicy(t, v, policy, nil, false)
	secret := func(s *testPolicySession, exp int32) (*tpm2.PolicySecretResponse, error) {
		return tpm2.PolicySecret{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: s.handle, Expiration: exp}.Execute(v)
	}
	// Within the 10 seconds.
	s := startPolicy(t, v, false)
	if _, err := secret(s, 10); err != nil {
		t.Fatal(err)
	}
	now = now.Add(9 * time.Second)
	if _, err := f.unseal(v, s); err != nil {
		t.Fatalf("Unseal after 9 s: %v", err)
	}
	// After them.
	s = startPolicy(t, v, false)
	if _, err := secret(s, 10); err != nil {
		t.Fatal(err)
	}
	now = now.Add(11 * time.Second)
	_, err = f.unseal(v, s)
	wantRC(t, "Unseal after 11 s", err, rcExpired|rcS1)
	flush(v, s.handle)

	// A ticket (negative expiration) carries the same limit.
	s = startPolicy(t, v, false)
	rsp, err := secret(s, -10)
	if err != nil {
		t.Fatal(err)
	}
	flush(v, s.handle)
	ticket := func() uint32 {
		s := startPolicy(t, v, false)
		defer flush(v, s.handle)
		return policyRaw(v, ccPolicyTicket, []uint32{uint32(s.handle)}, b2b(rsp.Timeout.Buffer), b2b(nil), b2b(nil),
			b2b(ownerName.Name.Buffer), u16b(uint16(rsp.PolicyTicket.Tag)), u32b(uint32(rsp.PolicyTicket.Hierarchy)), b2b(rsp.PolicyTicket.Digest.Buffer))
	}
	now = now.Add(5 * time.Second)
	if rc := ticket(); rc != rcSuccess {
		t.Fatalf("PolicyTicket after 5 s: rc %#x", rc)
	}
	now = now.Add(6 * time.Second)
	if rc := ticket(); rc != rcExpired|rcP|rcN {
		t.Errorf("PolicyTicket after 11 s: rc %#x, want %#x", rc, rcExpired|rcP|rcN)
	}
	// A ticket made for the empty nonce expires on TPM Reset.
	s = startPolicy(t, v, false)
	if rsp, err = secret(s, -60); err != nil {
		t.Fatal(err)
	}
	flush(v, s.handle)
	if rc := ticket(); rc != rcSuccess {
		t.Fatalf("PolicyTicket of a new ticket: rc %#x", rc)
	}
	if err := v.PowerCycle(); err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(v); err != nil {
		t.Fatal(err)
	}
	if rc := ticket(); rc != rcTicket|rcP|5*rcN {
		t.Errorf("PolicyTicket after a TPM Reset: rc %#x, want %#x", rc, rcTicket|rcP|5*rcN)
	}
}

// TestPolicySecretHMAC authorizes PolicySecret's authHandle with an HMAC
// session instead of a password: right and wrong owner authValue.
func TestPolicySecretHMAC(t *testing.T) {
	v := newTestTPM(t)
	ownerName := tpm2.NamedHandle{Handle: tpm2.TPMRHOwner, Name: tpm2.HandleName(tpm2.TPMRHOwner)}
	f := sealWithPolicy(t, v, calc(t, &tpm2.PolicySecret{AuthHandle: ownerName}), nil, false)
	if _, err := (tpm2.HierarchyChangeAuth{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NewAuth: tpm2.TPM2BAuth{Buffer: []byte("owner secret")}}).Execute(v); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		auth string
		rc   uint32
	}{{"owner secret", rcSuccess}, {"guess", rcBadAuth | rcS1}} {
		s := startPolicy(t, v, false)
		_, err := tpm2.PolicySecret{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner,
			Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth([]byte(tc.auth)))}, PolicySession: s.handle}.Execute(v)
		wantRC(t, "PolicySecret with an HMAC session, owner auth "+tc.auth, err, tc.rc)
		if err == nil {
			if _, err := f.unseal(v, s); err != nil {
				t.Errorf("Unseal: %v", err)
			}
		}
		flush(v, s.handle)
	}
}
