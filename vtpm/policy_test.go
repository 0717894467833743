package vtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// testPolicySession is a go-tpm session for an unsalted, unbound policy
// session whose commands carry an empty HMAC (valid when the session key
// and the authValue are both empty, Part 1, section 19.6) or, after
// PolicyPassword, the password. It ignores the response HMAC, so that the
// tests do not depend on response authorization.
type testPolicySession struct {
	handle   tpm2.TPMHandle
	nonceTPM []byte
	caller   []byte
	cont     bool
	password []byte
}

var _ tpm2.Session = (*testPolicySession)(nil)

func (s *testPolicySession) Init(transport.TPM) error           { return nil }
func (s *testPolicySession) CleanupFailure(transport.TPM) error { return nil }
func (s *testPolicySession) NonceTPM() tpm2.TPM2BNonce          { return tpm2.TPM2BNonce{Buffer: s.nonceTPM} }
func (s *testPolicySession) NewNonceCaller() error              { return nil }
func (s *testPolicySession) IsEncryption() bool                 { return false }
func (s *testPolicySession) IsDecryption() bool                 { return false }
func (s *testPolicySession) Encrypt([]byte) error               { return nil }
func (s *testPolicySession) Decrypt([]byte) error               { return nil }
func (s *testPolicySession) Handle() tpm2.TPMHandle             { return s.handle }

func (s *testPolicySession) Authorize(tpm2.TPMCC, []byte, []byte, []tpm2.TPM2BName, int) (*tpm2.TPMSAuthCommand, error) {
	return &tpm2.TPMSAuthCommand{
		Handle:        s.handle,
		Nonce:         tpm2.TPM2BNonce{Buffer: s.caller},
		Attributes:    tpm2.TPMASession{ContinueSession: s.cont},
		Authorization: tpm2.TPM2BData{Buffer: s.password},
	}, nil
}

func (s *testPolicySession) Validate(_ tpm2.TPMRC, _ tpm2.TPMCC, _ []byte, _ []tpm2.TPM2BName, _ int, auth *tpm2.TPMSAuthResponse) error {
	if len(auth.Nonce.Buffer) != 0 {
		s.nonceTPM = auth.Nonce.Buffer
	}
	return nil
}

// fataler is what the session helpers need of a testing.TB or rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// startPolicy starts an unsalted, unbound policy (or trial) session with
// SHA-256.
func startPolicy(t fataler, tp transport.TPM, trial bool) *testPolicySession {
	t.Helper()
	typ := tpm2.TPMSEPolicy
	if trial {
		typ = tpm2.TPMSETrial
	}
	caller := make([]byte, 16)
	rand.Read(caller)
	rsp, err := tpm2.StartAuthSession{
		TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull,
		NonceCaller: tpm2.TPM2BNonce{Buffer: caller},
		SessionType: typ,
		Symmetric:   tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		AuthHash:    tpm2.TPMAlgSHA256,
	}.Execute(tp)
	if err != nil {
		t.Fatalf("StartAuthSession: %v", err)
	}
	return &testPolicySession{handle: rsp.SessionHandle, nonceTPM: rsp.NonceTPM.Buffer, caller: caller}
}

func policyDigest(t fataler, tp transport.TPM, s *testPolicySession) []byte {
	t.Helper()
	rsp, err := tpm2.PolicyGetDigest{PolicySession: s.handle}.Execute(tp)
	if err != nil {
		t.Fatalf("PolicyGetDigest: %v", err)
	}
	return rsp.PolicyDigest.Buffer
}

func flush(tp transport.TPM, h tpm2.TPMHandle) { tpm2.FlushContext{FlushHandle: h}.Execute(tp) }

// policyRaw sends a policy command without authorization area and
// returns its response code.
func policyRaw(tp transport.TPM, cc uint32, handles []uint32, params ...[]byte) uint32 {
	rsp, _ := tp.Send(rawCommand(cc, handles, 0, nil, params...))
	return rcOf(rsp)
}

// rcOfErr returns the raw response code in err, or 0.
func rcOfErr(err error) uint32 {
	if err == nil {
		return 0
	}
	var e tpm2.TPMRC
	if errors.As(err, &e) {
		return uint32(e)
	}
	return 0xFFFFFFFF
}

func wantRC(t testing.TB, what string, err error, rc uint32) {
	t.Helper()
	if got := rcOfErr(err); got != rc {
		t.Errorf("%s: rc %#x (%v), want %#x", what, got, err, rc)
	}
}

// sealFixture is a loaded sealed object with a given policy.
type sealFixture struct {
	obj    tpm2.NamedHandle
	secret []byte
}

func sealWithPolicy(t testing.TB, tp transport.TPM, policy []byte, userAuth []byte, userWithAuth bool) sealFixture {
	t.Helper()
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	srk, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	srkH := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
	secret := []byte("disk key 0123456789abcdef")
	sealed, err := tpm2.Create{
		ParentHandle: srkH,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: userAuth},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: userWithAuth},
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		}),
	}.Execute(tp)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	obj, err := tpm2.Load{ParentHandle: srkH, InPrivate: sealed.OutPrivate, InPublic: sealed.OutPublic}.Execute(tp)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// The reference TPM holds three objects: free the SRK's slot.
	flush(tp, srk.ObjectHandle)
	return sealFixture{obj: tpm2.NamedHandle{Handle: obj.ObjectHandle, Name: obj.Name}, secret: secret}
}

func (f sealFixture) unseal(tp transport.TPM, s tpm2.Session) ([]byte, error) {
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: f.obj.Handle, Name: f.obj.Name, Auth: s}}.Execute(tp)
	if err != nil {
		return nil, err
	}
	return rsp.OutData.Buffer, nil
}

var pcrSel16 = tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
	{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(7, 16)},
}}

func extend16(t testing.TB, tp transport.TPM, b byte) {
	t.Helper()
	d := sha256.Sum256([]byte{b})
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: 16, Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}.Execute(tp)
	if err != nil {
		t.Fatalf("PCR_Extend: %v", err)
	}
}

// calc computes a policy digest offline with go-tpm's PolicyCalculator:
// an implementation independent of ours.
func calc(t testing.TB, cmds ...tpm2.PolicyCommand) []byte {
	t.Helper()
	pc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if err := c.Update(pc); err != nil {
			t.Fatalf("%T.Update: %v", c, err)
		}
	}
	return pc.Hash().Digest
}

// pcrPolicy returns the PolicyPCR digest of PCRs 7 and 16 as they are now.
func pcrPolicy(t testing.TB, tp transport.TPM) []byte {
	t.Helper()
	s := startPolicy(t, tp, true)
	defer flush(tp, s.handle)
	if _, err := (tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}).Execute(tp); err != nil {
		t.Fatalf("PolicyPCR (trial): %v", err)
	}
	return policyDigest(t, tp, s)
}

const (
	rcS1 = rcS | rcN // session 1 qualifier
)

// TestPolicyPCRUnseal seals to PolicyPCR and unseals through a policy
// session; the digest equals go-tpm's offline computation.
func TestPolicyPCRUnseal(t *testing.T) {
	v := newTestTPM(t)
	extend16(t, v, 1)
	policy := pcrPolicy(t, v)
	pcrs, err := tpm2.PCRRead{PCRSelectionIn: pcrSel16}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, d := range pcrs.PCRValues.Digests {
		h.Write(d.Buffer)
	}
	if want := calc(t, &tpm2.PolicyPCR{Pcrs: pcrSel16, PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}}); !bytes.Equal(policy, want) {
		t.Fatalf("PolicyPCR digest %x, go-tpm computes %x", policy, want)
	}
	f := sealWithPolicy(t, v, policy, nil, false)
	s := startPolicy(t, v, false)
	if _, err := (tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}).Execute(v); err != nil {
		t.Fatalf("PolicyPCR: %v", err)
	}
	got, err := f.unseal(v, s)
	if err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	// Without userWithAuth a password cannot unseal it.
	_, err = f.unseal(v, tpm2.PasswordAuth(nil))
	wantRC(t, "password Unseal of a policy-only object", err, rcAuthUnavailable)
}

// TestPolicyWrongPCRsCannotUnseal: after a PCR changes, a policy session
// cannot unseal a secret sealed to the old PCR values, however the
// attacker orders PolicyPCR, PCR_Extend and Unseal.
func TestPolicyWrongPCRsCannotUnseal(t *testing.T) {
	v := newTestTPM(t)
	policy := pcrPolicy(t, v)
	f := sealWithPolicy(t, v, policy, nil, false)
	pcrs, err := tpm2.PCRRead{PCRSelectionIn: pcrSel16}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, d := range pcrs.PCRValues.Digests {
		h.Write(d.Buffer)
	}
	oldDigest := h.Sum(nil)

	// The PCR changes between PolicyPCR and Unseal.
	s := startPolicy(t, v, false)
	if _, err := (tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}).Execute(v); err != nil {
		t.Fatal(err)
	}
	extend16(t, v, 2)
	_, err = f.unseal(v, s)
	wantRC(t, "Unseal after PCR_Extend", err, rcPCRChanged)

	// The PCR changed before PolicyPCR: the digest differs.
	s = startPolicy(t, v, false)
	if _, err := (tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}).Execute(v); err != nil {
		t.Fatal(err)
	}
	_, err = f.unseal(v, s)
	wantRC(t, "Unseal with the wrong PCRs", err, rcPolicyFail|rcS1)

	// Claiming the old PCR digest is refused by PolicyPCR itself.
	s = startPolicy(t, v, false)
	_, err = tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16, PcrDigest: tpm2.TPM2BDigest{Buffer: oldDigest}}.Execute(v)
	wantRC(t, "PolicyPCR with the old digest", err, rcValue|rcP|rcN)
	_, err = f.unseal(v, s)
	wantRC(t, "Unseal after a refused PolicyPCR", err, rcPolicyFail|rcS1)
}

// TestTrialSessionCannotAuthorize: a trial session computes the right
// digest but cannot authorize a command.
func TestTrialSessionCannotAuthorize(t *testing.T) {
	v := newTestTPM(t)
	policy := pcrPolicy(t, v)
	f := sealWithPolicy(t, v, policy, nil, false)
	s := startPolicy(t, v, true)
	if _, err := (tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}).Execute(v); err != nil {
		t.Fatal(err)
	}
	if d := policyDigest(t, v, s); !bytes.Equal(d, policy) {
		t.Fatalf("trial digest %x, want %x", d, policy)
	}
	_, err := f.unseal(v, s)
	wantRC(t, "Unseal with a trial session", err, rcAttributes|rcS1)
}

// TestPolicyORBranchForgeryRejected: a PolicyOR of two branches (the
// owner's secret, or PCR 16 as sealed). After PCR 16 changes, an attacker
// can neither claim the PCR branch nor list a branch of their own.
func TestPolicyORBranchForgeryRejected(t *testing.T) {
	v := newTestTPM(t)
	branchPCR := pcrPolicy(t, v)
	branchOwner := calc(t, &tpm2.PolicySecret{AuthHandle: tpm2.NamedHandle{Handle: tpm2.TPMRHOwner, Name: tpm2.HandleName(tpm2.TPMRHOwner)}})
	list := tpm2.TPMLDigest{Digests: []tpm2.TPM2BDigest{{Buffer: branchPCR}, {Buffer: branchOwner}}}
	policy := calc(t, &tpm2.PolicyOr{PHashList: list})

	// The TPM's trial digest of the tree equals go-tpm's.
	tr := startPolicy(t, v, true)
	tpm2.PolicyPCR{PolicySession: tr.handle, Pcrs: pcrSel16}.Execute(v)
	if _, err := (tpm2.PolicyOr{PolicySession: tr.handle, PHashList: list}).Execute(v); err != nil {
		t.Fatal(err)
	}
	if d := policyDigest(t, v, tr); !bytes.Equal(d, policy) {
		t.Fatalf("PolicyOR trial digest %x, go-tpm computes %x", d, policy)
	}
	flush(v, tr.handle)

	f := sealWithPolicy(t, v, policy, nil, false)
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	if _, err := (tpm2.HierarchyChangeAuth{AuthHandle: owner, NewAuth: tpm2.TPM2BAuth{Buffer: []byte("owner secret")}}).Execute(v); err != nil {
		t.Fatal(err)
	}
	// Legitimate use of the PCR branch.
	s := startPolicy(t, v, false)
	tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}.Execute(v)
	if _, err := (tpm2.PolicyOr{PolicySession: s.handle, PHashList: list}).Execute(v); err != nil {
		t.Fatalf("PolicyOR: %v", err)
	}
	if got, err := f.unseal(v, s); err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal via the PCR branch = %q, %v", got, err)
	}
	flush(v, s.handle)

	extend16(t, v, 9)
	// The PCR branch no longer matches: PolicyOR refuses.
	s = startPolicy(t, v, false)
	tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}.Execute(v)
	_, err := tpm2.PolicyOr{PolicySession: s.handle, PHashList: list}.Execute(v)
	wantRC(t, "PolicyOR without a matching branch", err, rcValue|rcP|rcN)
	// Listing the session's own digest as a branch is accepted by
	// PolicyOR but gives another digest, which Unseal refuses.
	forged := tpm2.TPMLDigest{Digests: []tpm2.TPM2BDigest{{Buffer: policyDigest(t, v, s)}, {Buffer: branchOwner}}}
	if _, err := (tpm2.PolicyOr{PolicySession: s.handle, PHashList: forged}).Execute(v); err != nil {
		t.Fatal(err)
	}
	_, err = f.unseal(v, s)
	wantRC(t, "Unseal with a forged branch", err, rcPolicyFail|rcS1)
	flush(v, s.handle)

	// The owner branch with a wrong owner password fails; with the
	// right one it unseals.
	s = startPolicy(t, v, false)
	_, err = tpm2.PolicySecret{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth([]byte("guess"))}, PolicySession: s.handle}.Execute(v)
	wantRC(t, "PolicySecret with a wrong password", err, rcBadAuth|rcS1)
	if _, err := (tpm2.PolicySecret{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth([]byte("owner secret"))}, PolicySession: s.handle}).Execute(v); err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.PolicyOr{PolicySession: s.handle, PHashList: list}).Execute(v); err != nil {
		t.Fatal(err)
	}
	if got, err := f.unseal(v, s); err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal via the owner branch = %q, %v", got, err)
	}
}

// authority is a policy-signing key held outside the TPM and loaded as a
// public key into the owner hierarchy, so that TPM2_VerifySignature
// issues tickets.
type authority struct {
	key  *ecdsa.PrivateKey
	h    tpm2.TPMHandle
	name tpm2.TPM2BName
}

func newAuthority(t testing.TB, tp transport.TPM) authority {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x, y := k.PublicKey.X.FillBytes(make([]byte, 32)), k.PublicKey.Y.FillBytes(make([]byte, 32))
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{SignEncrypt: true, UserWithAuth: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}}),
	}
	rsp, err := tpm2.LoadExternal{InPublic: tpm2.New2B(pub), Hierarchy: tpm2.TPMRHOwner}.Execute(tp)
	if err != nil {
		t.Fatalf("LoadExternal: %v", err)
	}
	return authority{key: k, h: rsp.ObjectHandle, name: rsp.Name}
}

func (a authority) sign(t testing.TB, digest []byte) tpm2.TPMTSignature {
	t.Helper()
	r, s, err := ecdsa.Sign(rand.Reader, a.key, digest)
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash:       tpm2.TPMAlgSHA256,
		SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
		SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, 32))},
	})}
}

// approve signs H(approvedPolicy || policyRef) and has the TPM verify the
// signature, returning the verification ticket.
func (a authority) approve(t testing.TB, tp transport.TPM, approved, ref []byte) tpm2.TPMTTKVerified {
	t.Helper()
	aHash := sha256.Sum256(append(append([]byte(nil), approved...), ref...))
	rsp, err := tpm2.VerifySignature{
		KeyHandle: tpm2.NamedHandle{Handle: a.h, Name: a.name},
		Digest:    tpm2.TPM2BDigest{Buffer: aHash[:]},
		Signature: a.sign(t, aHash[:]),
	}.Execute(tp)
	if err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	return rsp.Validation
}

// TestPolicyAuthorizeWrongSignerRejected: an object sealed to "any policy
// the authority approves" unseals with an approved PCR policy, but not
// with a policy that another key approved, nor with an approval for
// another policy.
func TestPolicyAuthorizeWrongSignerRejected(t *testing.T) {
	v := newTestTPM(t)
	auth := newAuthority(t, v)
	attacker := newAuthority(t, v)
	ref := []byte("disk-unlock")
	policy := calc(t, &tpm2.PolicyAuthorize{PolicyRef: tpm2.TPM2BDigest{Buffer: ref}, KeySign: auth.name})
	f := sealWithPolicy(t, v, policy, nil, false)
	approved := pcrPolicy(t, v)

	run := func(name tpm2.TPM2BName, tk tpm2.TPMTTKVerified, approvedArg []byte) (*testPolicySession, error) {
		s := startPolicy(t, v, false)
		if _, err := (tpm2.PolicyPCR{PolicySession: s.handle, Pcrs: pcrSel16}).Execute(v); err != nil {
			t.Fatal(err)
		}
		_, err := tpm2.PolicyAuthorize{PolicySession: s.handle, ApprovedPolicy: tpm2.TPM2BDigest{Buffer: approvedArg},
			PolicyRef: tpm2.TPM2BDigest{Buffer: ref}, KeySign: name, CheckTicket: tk}.Execute(v)
		return s, err
	}
	s, err := run(auth.name, auth.approve(t, v, approved, ref), approved)
	if err != nil {
		t.Fatalf("PolicyAuthorize: %v", err)
	}
	if got, err := f.unseal(v, s); err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal with an approved policy = %q, %v", got, err)
	}
	flush(v, s.handle)

	// The attacker's ticket presented under the authority's name.
	s, err = run(auth.name, attacker.approve(t, v, approved, ref), approved)
	wantRC(t, "PolicyAuthorize with another signer's ticket", err, rcValue|rcP|4*rcN)
	flush(v, s.handle)
	// The attacker's approval under the attacker's name: accepted, but
	// the digest names the attacker's key.
	s, err = run(attacker.name, attacker.approve(t, v, approved, ref), approved)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.unseal(v, s)
	wantRC(t, "Unseal with another signer's approval", err, rcPolicyFail|rcS1)
	flush(v, s.handle)
	// An approval of another policy does not cover this one.
	other := calc(t, &tpm2.PolicyAuthValue{})
	s, err = run(auth.name, auth.approve(t, v, other, ref), other)
	wantRC(t, "PolicyAuthorize of a policy the session does not have", err, rcValue|rcP|rcN)
	flush(v, s.handle)
	// An approval for another policyRef.
	s, err = run(auth.name, auth.approve(t, v, approved, []byte("other-ref")), approved)
	wantRC(t, "PolicyAuthorize with an approval for another policyRef", err, rcValue|rcP|4*rcN)
	flush(v, s.handle)
}

// TestPolicyCpHashMismatchRejected: a session bound by PolicyCpHash to one
// command cannot authorize another. The object's policy is any policy the
// authority approves; the authority approved "Unseal of this object".
func TestPolicyCpHashMismatchRejected(t *testing.T) {
	v := newTestTPM(t)
	auth := newAuthority(t, v)
	policy := calc(t, &tpm2.PolicyAuthorize{KeySign: auth.name})
	f := sealWithPolicy(t, v, policy, nil, false)
	g := sealWithPolicy(t, v, policy, nil, false)
	cpHash := func(obj tpm2.NamedHandle) []byte {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], ccUnseal)
		d := sha256.Sum256(append(b[:], obj.Name.Buffer...))
		return d[:]
	}
	approved := calc(t, &tpm2.PolicyCPHash{CPHashA: tpm2.TPM2BDigest{Buffer: cpHash(f.obj)}})
	tk := auth.approve(t, v, approved, nil)
	session := func() *testPolicySession {
		s := startPolicy(t, v, false)
		if _, err := (tpm2.PolicyCPHash{PolicySession: s.handle, CPHashA: tpm2.TPM2BDigest{Buffer: cpHash(f.obj)}}).Execute(v); err != nil {
			t.Fatal(err)
		}
		if _, err := (tpm2.PolicyAuthorize{PolicySession: s.handle, ApprovedPolicy: tpm2.TPM2BDigest{Buffer: approved}, KeySign: auth.name, CheckTicket: tk}).Execute(v); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := session()
	if got, err := f.unseal(v, s); err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal of the approved object = %q, %v", got, err)
	}
	flush(v, s.handle)
	s = session()
	_, err := g.unseal(v, s)
	wantRC(t, "Unseal of another object", err, rcPolicyFail|rcS1)
	flush(v, s.handle)
	// A second, different cpHash is refused.
	s = startPolicy(t, v, false)
	tpm2.PolicyCPHash{PolicySession: s.handle, CPHashA: tpm2.TPM2BDigest{Buffer: cpHash(f.obj)}}.Execute(v)
	_, err = tpm2.PolicyCPHash{PolicySession: s.handle, CPHashA: tpm2.TPM2BDigest{Buffer: cpHash(g.obj)}}.Execute(v)
	wantRC(t, "second PolicyCpHash", err, rcCpHash)
	flush(v, s.handle)
}

// TestPolicySecretEndorsement: the TCG EK policy, PolicySecret of the
// endorsement hierarchy, authorized with the endorsement password.
func TestPolicySecretEndorsement(t *testing.T) {
	v := newTestTPM(t)
	// The default EK policy (TCG EK Credential Profile, B.3.2).
	ekPolicy, _ := hex.DecodeString("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
	tr := startPolicy(t, v, true)
	if _, err := (tpm2.PolicySecret{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)}, PolicySession: tr.handle}).Execute(v); err != nil {
		t.Fatal(err)
	}
	if d := policyDigest(t, v, tr); !bytes.Equal(d, ekPolicy) {
		t.Fatalf("PolicySecret(endorsement) digest %x, want the EK policy %x", d, ekPolicy)
	}
	if _, err := (tpm2.HierarchyChangeAuth{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		NewAuth: tpm2.TPM2BAuth{Buffer: []byte("endorsement")}}).Execute(v); err != nil {
		t.Fatal(err)
	}
	f := sealWithPolicy(t, v, ekPolicy, nil, false)
	s := startPolicy(t, v, false)
	_, err := tpm2.PolicySecret{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth([]byte("wrong"))}, PolicySession: s.handle}.Execute(v)
	wantRC(t, "PolicySecret with a wrong endorsement password", err, rcBadAuth|rcS1)
	_, err = f.unseal(v, s)
	wantRC(t, "Unseal after a failed PolicySecret", err, rcPolicyFail|rcS1)
	flush(v, s.handle)

	s = startPolicy(t, v, false)
	rsp, err := tpm2.PolicySecret{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth([]byte("endorsement"))}, PolicySession: s.handle}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	if len(rsp.Timeout.Buffer) != 0 || rsp.PolicyTicket.Hierarchy != tpm2.TPMRHNull {
		t.Errorf("PolicySecret without expiration returned a ticket: %+v", rsp)
	}
	if got, err := f.unseal(v, s); err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
}

// TestPolicyPasswordUnseal: PolicyPassword makes the session's HMAC field
// the object's password; a wrong one counts towards lockout.
func TestPolicyPasswordUnseal(t *testing.T) {
	v := newTestTPM(t)
	policy := calc(t, &tpm2.PolicyAuthValue{})
	tr := startPolicy(t, v, true)
	if rc := policyRaw(v, ccPolicyPassword, []uint32{uint32(tr.handle)}); rc != rcSuccess {
		t.Fatalf("PolicyPassword (trial): rc %#x", rc)
	}
	if d := policyDigest(t, v, tr); !bytes.Equal(d, policy) {
		t.Fatalf("PolicyPassword digest %x, want PolicyAuthValue's %x", d, policy)
	}
	flush(v, tr.handle)
	f := sealWithPolicy(t, v, policy, []byte("pin"), false)
	s := startPolicy(t, v, false)
	s.cont = true
	if rc := policyRaw(v, ccPolicyPassword, []uint32{uint32(s.handle)}); rc != rcSuccess {
		t.Fatalf("PolicyPassword: rc %#x", rc)
	}
	s.password = []byte("nip")
	_, err := f.unseal(v, s)
	wantRC(t, "PolicyPassword with a wrong password", err, rcAuthFail|rcS1)
	if v.s.DA.FailedTries != 1 {
		t.Errorf("failedTries = %d, want 1", v.s.DA.FailedTries)
	}
	s.password = []byte("pin")
	if got, err := f.unseal(v, s); err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
}

// TestPolicyCommandCodeLocality covers the deferred command-code and
// locality checks. The expected digests are computed here from Part 3,
// section 23.
func TestPolicyCommandCodeLocality(t *testing.T) {
	v := newTestTPM(t)
	for _, tc := range []struct {
		name  string
		cc    uint32
		param []byte
		rc    uint32
	}{
		{"unseal allowed", ccPolicyCommandCode, u32b(ccUnseal), rcSuccess},
		{"only certify allowed", ccPolicyCommandCode, u32b(ccCertify), rcPolicyCC | rcS1},
		{"locality 0 or 1", ccPolicyLocality, []byte{0x03}, rcSuccess},
		{"locality 3 only", ccPolicyLocality, []byte{0x08}, rcLocality},
	} {
		t.Run(tc.name, func(t *testing.T) {
			policy := sha256.Sum256(bytesOf(make([]byte, 32), u32b(tc.cc), tc.param))
			f := sealWithPolicy(t, v, policy[:], nil, false)
			defer flush(v, f.obj.Handle)
			s := startPolicy(t, v, false)
			defer flush(v, s.handle)
			if rc := policyRaw(v, tc.cc, []uint32{uint32(s.handle)}, tc.param); rc != rcSuccess {
				t.Fatalf("policy command: rc %#x", rc)
			}
			_, err := f.unseal(v, s)
			wantRC(t, "Unseal", err, tc.rc)
		})
	}
}

// TestPolicySignedTicket: PolicySigned with an authority's signature over
// the session's nonce, then a ticket that stands for the signature in
// another session, and a forged ticket.
func TestPolicySignedTicket(t *testing.T) {
	v := newTestTPM(t)
	auth := newAuthority(t, v)
	ref := []byte("ref")
	policy := calc(t, &tpm2.PolicySigned{AuthObject: tpm2.NamedHandle{Handle: auth.h, Name: auth.name}, PolicyRef: tpm2.TPM2BNonce{Buffer: ref}})
	f := sealWithPolicy(t, v, policy, nil, false)
	signed := func(s *testPolicySession, exp int32, key authority) (*tpm2.PolicySignedResponse, error) {
		var e [4]byte
		binary.BigEndian.PutUint32(e[:], uint32(exp))
		aHash := sha256.Sum256(bytes.Join([][]byte{s.nonceTPM, e[:], ref}, nil))
		return tpm2.PolicySigned{PolicySession: s.handle, AuthObject: tpm2.NamedHandle{Handle: auth.h, Name: auth.name},
			NonceTPM: tpm2.TPM2BNonce{Buffer: s.nonceTPM}, PolicyRef: tpm2.TPM2BNonce{Buffer: ref}, Expiration: exp,
			Auth: key.sign(t, aHash[:])}.Execute(v)
	}
	attacker := newAuthority(t, v)
	s := startPolicy(t, v, false)
	_, err := signed(s, 0, attacker)
	wantRC(t, "PolicySigned by another key", err, rcSignature|rcP|5*rcN)
	rsp, err := signed(s, -600, auth)
	if err != nil {
		t.Fatalf("PolicySigned: %v", err)
	}
	if got, err := f.unseal(v, s); err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	flush(v, s.handle)
	if len(rsp.Timeout.Buffer) != 8 || rsp.PolicyTicket.Tag != tpm2.TPMSTAuthSigned {
		t.Fatalf("no ticket: %+v", rsp)
	}
	ticket := func(s *testPolicySession, tk tpm2.TPMTTKAuth) uint32 {
		return policyRaw(v, ccPolicyTicket, []uint32{uint32(s.handle)}, b2b(rsp.Timeout.Buffer), b2b(nil), b2b(ref),
			b2b(auth.name.Buffer), u16b(uint16(tk.Tag)), u32b(uint32(tk.Hierarchy)), b2b(tk.Digest.Buffer))
	}
	// The ticket was bound to the first session's nonce, so it does
	// not expire on reset; it works in a new session until its timeout.
	s = startPolicy(t, v, false)
	if rc := ticket(s, rsp.PolicyTicket); rc != rcSuccess {
		t.Fatalf("PolicyTicket: rc %#x", rc)
	}
	if got, err := f.unseal(v, s); err != nil || !bytes.Equal(got, f.secret) {
		t.Fatalf("Unseal with a ticket = %q, %v", got, err)
	}
	flush(v, s.handle)
	forged := rsp.PolicyTicket
	forged.Digest.Buffer = append([]byte(nil), forged.Digest.Buffer...)
	forged.Digest.Buffer[0] ^= 1
	s = startPolicy(t, v, false)
	if rc := ticket(s, forged); rc != rcTicket|rcP|5*rcN {
		t.Errorf("PolicyTicket with a forged ticket: rc %#x, want %#x", rc, rcTicket|rcP|5*rcN)
	}
	flush(v, s.handle)
	// A signature over another session's nonce is refused.
	s = startPolicy(t, v, false)
	s2 := startPolicy(t, v, false)
	s.nonceTPM, s2.nonceTPM = s2.nonceTPM, s.nonceTPM
	_, err = signed(s, 0, auth)
	wantRC(t, "PolicySigned over another session's nonce", err, rcNonce|rcP|rcN)
}

// TestPolicyNVCounter gates an unseal on an NV counter's value.
func TestPolicyNVCounter(t *testing.T) {
	v := newTestTPM(t)
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	pub := tpm2.TPMSNVPublic{NVIndex: 0x01500020, NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, AuthWrite: true, NoDA: true, NT: tpm2.TPMNTCounter}, DataSize: 8}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(pub)}).Execute(v); err != nil {
		t.Fatal(err)
	}
	nvName := func() tpm2.TPM2BName {
		rsp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(0x01500020)}.Execute(v)
		if err != nil {
			t.Fatal(err)
		}
		return rsp.NVName
	}
	nv := tpm2.NamedHandle{Handle: 0x01500020, Name: nvName()}
	if _, err := (tpm2.NVIncrement{AuthHandle: owner, NVIndex: nv}).Execute(v); err != nil {
		t.Fatal(err)
	}
	// The name changes once the index is written (TPMA_NV_WRITTEN).
	nv.Name = nvName()
	two := []byte{0, 0, 0, 0, 0, 0, 0, 2}
	cmd := tpm2.PolicyNV{AuthHandle: tpm2.AuthHandle{Handle: nv.Handle, Name: nv.Name, Auth: tpm2.PasswordAuth(nil)}, NVIndex: nv,
		OperandB: tpm2.TPM2BOperand{Buffer: two}, Operation: tpm2.TPMEOUnsignedLT}
	policy := calc(t, &cmd)
	f := sealWithPolicy(t, v, policy, nil, false)
	s := startPolicy(t, v, false)
	cmd.PolicySession = s.handle
	if _, err := cmd.Execute(v); err != nil {
		t.Fatalf("PolicyNV (counter 1 < 2): %v", err)
	}
	if _, err := f.unseal(v, s); err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	flush(v, s.handle)
	tpm2.NVIncrement{AuthHandle: owner, NVIndex: nv}.Execute(v)
	s = startPolicy(t, v, false)
	cmd.PolicySession = s.handle
	_, err := cmd.Execute(v)
	wantRC(t, "PolicyNV (counter 2 < 2)", err, rcPolicy)
}

func TestPolicyCompare(t *testing.T) {
	for _, tc := range []struct {
		op   uint16
		a, b []byte
		want bool
	}{
		{eoEQ, []byte{1, 2}, []byte{1, 2}, true},
		{eoNEQ, []byte{1, 2}, []byte{1, 2}, false},
		{eoSignedGT, []byte{0x01}, []byte{0xFF}, true},
		{eoUnsignedGT, []byte{0x01}, []byte{0xFF}, false},
		{eoSignedLT, []byte{0x80, 0}, []byte{0x7F, 0xFF}, true},
		{eoUnsignedLT, []byte{0x80, 0}, []byte{0x7F, 0xFF}, false},
		{eoSignedGE, []byte{0xFE}, []byte{0xFE}, true},
		{eoUnsignedGE, []byte{0x00}, []byte{0x01}, false},
		{eoSignedLE, []byte{0xFF}, []byte{0xFE}, false},
		{eoUnsignedLE, []byte{0x01, 0x00}, []byte{0x01, 0x01}, true},
		{eoBitSet, []byte{0xF3}, []byte{0x13}, true},
		{eoBitSet, []byte{0xF3}, []byte{0x0C}, false},
		{eoBitClear, []byte{0xF3}, []byte{0x0C}, true},
		{eoBitClear, []byte{0xF3}, []byte{0x01}, false},
	} {
		if got := policyCompare(tc.op, tc.a, tc.b); got != tc.want {
			t.Errorf("policyCompare(%d, %x, %x) = %v, want %v", tc.op, tc.a, tc.b, got, tc.want)
		}
	}
}

// TestPolicyPhysicalPresenceNeverSatisfied: no software can assert
// physical presence on a vTPM, so a policy that requires it authorizes
// nothing. (The reference simulator asserts physical presence; a vTPM has
// no operator at the machine.)
func TestPolicyPhysicalPresenceNeverSatisfied(t *testing.T) {
	v := newTestTPM(t)
	policy := sha256.Sum256(bytesOf(make([]byte, 32), u32b(ccPolicyPhysPresence)))
	f := sealWithPolicy(t, v, policy[:], nil, false)
	s := startPolicy(t, v, false)
	if rc := policyRaw(v, ccPolicyPhysPresence, []uint32{uint32(s.handle)}); rc != rcSuccess {
		t.Fatalf("PolicyPhysicalPresence: rc %#x", rc)
	}
	if d := policyDigest(t, v, s); !bytes.Equal(d, policy[:]) {
		t.Fatalf("digest %x, want %x", d, policy)
	}
	_, err := f.unseal(v, s)
	wantRC(t, "Unseal with PolicyPhysicalPresence", err, rcPP|rcS1)
}
