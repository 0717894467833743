package vtpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/shieldvm/shieldvm/attest"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// testKey is a loaded key on some TPM: its handle, name and public area.
type loadedKey struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    tpm2.TPM2BPublic
}

func (k loadedKey) auth() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: pwAuth(nil)}
}

func (k loadedKey) named() tpm2.NamedHandle { return tpm2.NamedHandle{Handle: k.handle, Name: k.name} }

func (k loadedKey) flush(tp transport.TPM) { tpm2.FlushContext{FlushHandle: k.handle}.Execute(tp) }

// createSRK creates a storage primary key (userWithAuth set, so password
// sessions authorize it) in the owner hierarchy.
func createSRK(t testing.TB, tp transport.TPM, tmpl tpm2.TPMTPublic) loadedKey {
	t.Helper()
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(tp)
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	return loadedKey{rsp.ObjectHandle, rsp.Name, rsp.OutPublic}
}

// eccSigningTemplate is an unrestricted ECDSA P-256 key.
var eccSigningTemplate = tpm2.TPMTPublic{
	Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
		CurveID: tpm2.TPMECCNistP256,
	}),
}

// createChild creates and loads a child of parent from tmpl.
func createChild(t testing.TB, tp transport.TPM, parent loadedKey, tmpl tpm2.TPMTPublic, sens *tpm2.TPMSSensitiveCreate) (loadedKey, tpm2.TPM2BPrivate) {
	t.Helper()
	cr := tpm2.Create{ParentHandle: parent.auth(), InPublic: tpm2.New2B(tmpl)}
	if sens != nil {
		cr.InSensitive = tpm2.TPM2BSensitiveCreate{Sensitive: sens}
	}
	rsp, err := cr.Execute(tp)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	l, err := tpm2.Load{ParentHandle: parent.auth(), InPrivate: rsp.OutPrivate, InPublic: rsp.OutPublic}.Execute(tp)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return loadedKey{l.ObjectHandle, l.Name, rsp.OutPublic}, rsp.OutPrivate
}

// loadPublic loads the public part of a key from another TPM.
func loadPublic(t testing.TB, tp transport.TPM, pub tpm2.TPM2BPublic) loadedKey {
	t.Helper()
	rsp, err := tpm2.LoadExternal{InPublic: pub, Hierarchy: tpm2.TPMRHNull}.Execute(tp)
	if err != nil {
		t.Fatalf("LoadExternal: %v", err)
	}
	return loadedKey{rsp.ObjectHandle, rsp.Name, pub}
}

func makeCredential(t testing.TB, tp transport.TPM, key loadedKey, name tpm2.TPM2BName, secret []byte) *tpm2.MakeCredentialResponse {
	t.Helper()
	rsp, err := tpm2.MakeCredential{Handle: key.handle, Credential: tpm2.TPM2BDigest{Buffer: secret}, ObjectName: name}.Execute(tp)
	if err != nil {
		t.Fatalf("MakeCredential: %v", err)
	}
	return rsp
}

func activateCredential(tp transport.TPM, obj, key loadedKey, blob, secret []byte) ([]byte, error) {
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: obj.auth(),
		KeyHandle:      key.auth(),
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: blob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: secret},
	}.Execute(tp)
	if err != nil {
		return nil, err
	}
	return rsp.CertInfo.Buffer, nil
}

var srkTemplates = []struct {
	name string
	tmpl tpm2.TPMTPublic
}{
	{"ECC", tpm2.ECCSRKTemplate},
	{"RSA", tpm2.RSASRKTemplate},
}

// TestCredentialRoundTrip makes credentials with our MakeCredential and
// with go-tpm's software CreateCredential and activates them with our
// ActivateCredential.
func TestCredentialRoundTrip(t *testing.T) {
	for _, st := range srkTemplates {
		t.Run(st.name, func(t *testing.T) {
			v := newTestTPM(t)
			srk := createSRK(t, v, st.tmpl)
			ak, _ := createChild(t, v, srk, eccSigningTemplate, nil)
			secret := []byte("credential secret 0123456789abcd")

			mc := makeCredential(t, v, srk, ak.name, secret)
			got, err := activateCredential(v, ak, srk, mc.CredentialBlob.Buffer, mc.Secret.Buffer)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("ActivateCredential(MakeCredential) = %q, %v", got, err)
			}

			pub, err := srk.pub.Contents()
			if err != nil {
				t.Fatal(err)
			}
			ek, err := tpm2.ImportEncapsulationKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			id, enc, err := tpm2.CreateCredential(rand.Reader, ek, ak.name.Buffer, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err = activateCredential(v, ak, srk, id, enc)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("ActivateCredential(go-tpm CreateCredential) = %q, %v", got, err)
			}
		})
	}
}

// TestCredentialCrossReference makes credentials on one TPM for a key of
// the other and activates them there, both ways, between our vTPM and the
// reference TPM.
func TestCredentialCrossReference(t *testing.T) {
	for _, st := range srkTemplates {
		t.Run(st.name, func(t *testing.T) {
			v := newTestTPM(t)
			ref := simTPM{getSim(t)}
			for _, dir := range []struct {
				name       string
				maker, act transport.TPM
			}{{"vtpm to reference", v, ref}, {"reference to vtpm", ref, v}} {
				srk := createSRK(t, dir.act, st.tmpl)
				ak, _ := createChild(t, dir.act, srk, eccSigningTemplate, nil)
				ext := loadPublic(t, dir.maker, srk.pub)
				if !bytes.Equal(ext.name.Buffer, srk.name.Buffer) {
					t.Errorf("%s: LoadExternal name %x, key name %x", dir.name, ext.name.Buffer, srk.name.Buffer)
				}
				secret := []byte("cross-TPM credential")
				mc := makeCredential(t, dir.maker, ext, ak.name, secret)
				got, err := activateCredential(dir.act, ak, srk, mc.CredentialBlob.Buffer, mc.Secret.Buffer)
				if err != nil || !bytes.Equal(got, secret) {
					t.Errorf("%s: ActivateCredential = %q, %v", dir.name, got, err)
				}
				ext.flush(dir.maker)
				ak.flush(dir.act)
				srk.flush(dir.act)
			}
		})
	}
}

// credentialScenario runs credential commands, good and bad, on one TPM;
// TestCredentialDifferential compares their response codes with the
// reference's.
func credentialScenario(t *testing.T, tp transport.TPM, tmpl tpm2.TPMTPublic) {
	srk := createSRK(t, tp, tmpl)
	ak, _ := createChild(t, tp, srk, eccSigningTemplate, nil)
	secret := []byte("0123456789abcdef0123456789abcdef")
	mc := makeCredential(t, tp, srk, ak.name, secret)
	blob, enc := mc.CredentialBlob.Buffer, mc.Secret.Buffer
	activateCredential(tp, ak, srk, blob, enc)

	// Every byte of the blob and a few of the secret, flipped.
	for i := range blob {
		b := bytes.Clone(blob)
		b[i] ^= 0x40
		activateCredential(tp, ak, srk, b, enc)
	}
	for _, i := range []int{0, 1, 2, len(enc) / 2, len(enc) - 1} {
		e := bytes.Clone(enc)
		e[i] ^= 0x01
		activateCredential(tp, ak, srk, blob, e)
	}
	activateCredential(tp, ak, srk, blob[:len(blob)-1], enc)
	activateCredential(tp, ak, srk, blob[:1], enc)
	activateCredential(tp, ak, srk, nil, enc)
	activateCredential(tp, ak, srk, blob, enc[:len(enc)-1])
	activateCredential(tp, ak, srk, blob, nil)
	activateCredential(tp, ak, srk, blob, bytes.Repeat([]byte{0xFF}, len(enc)))
	// The wrong object: the SRK itself.
	activateCredential(tp, srk, srk, blob, enc)
	// The wrong key: a signing key cannot activate.
	activateCredential(tp, srk, ak, blob, enc)
	// MakeCredential limits.
	tpm2.MakeCredential{Handle: ak.handle, Credential: tpm2.TPM2BDigest{Buffer: secret}, ObjectName: ak.name}.Execute(tp)
	tpm2.MakeCredential{Handle: srk.handle, Credential: tpm2.TPM2BDigest{Buffer: make([]byte, 33)}, ObjectName: ak.name}.Execute(tp)
	tpm2.MakeCredential{Handle: srk.handle, Credential: tpm2.TPM2BDigest{Buffer: nil}, ObjectName: tpm2.TPM2BName{}}.Execute(tp)
	ak.flush(tp)
	srk.flush(tp)
}

func TestCredentialDifferential(t *testing.T) {
	for _, st := range srkTemplates {
		t.Run(st.name, func(t *testing.T) {
			a := &recorder{tpm: newTestTPM(t)}
			credentialScenario(t, a, st.tmpl)
			b := &recorder{tpm: simTPM{getSim(t)}}
			credentialScenario(t, b, st.tmpl)
			compareRecorders(t, a, b)
		})
	}
}

func compareRecorders(t *testing.T, a, b *recorder) {
	t.Helper()
	if len(a.rcs) != len(b.rcs) {
		t.Fatalf("vtpm ran %d commands, reference %d", len(a.rcs), len(b.rcs))
	}
	for i := range a.rcs {
		if a.rcs[i] != b.rcs[i] {
			t.Errorf("command %d (%#x): vtpm rc %#x, reference rc %#x", i, a.ccs[i], a.rcs[i], b.rcs[i])
		}
	}
}

// TestActivateCredentialWrongKeyRefused: a credential made for one TPM's
// key does not activate with another key, even with the right object.
func TestActivateCredentialWrongKeyRefused(t *testing.T) {
	for _, st := range srkTemplates {
		t.Run(st.name, func(t *testing.T) {
			v := newTestTPM(t)
			srk := createSRK(t, v, st.tmpl)
			ak, _ := createChild(t, v, srk, eccSigningTemplate, nil)
			// Another storage key of the same type, under the SRK.
			tmpl := st.tmpl
			tmpl.Unique = tpm2.TPMUPublicID{}
			tmpl.ObjectAttributes.FixedTPM = true
			other, _ := createChild(t, v, srk, tmpl, nil)
			mc := makeCredential(t, v, srk, ak.name, []byte("for the SRK only"))
			got, err := activateCredential(v, ak, other, mc.CredentialBlob.Buffer, mc.Secret.Buffer)
			if err == nil {
				t.Fatalf("ActivateCredential with the wrong key = %q", got)
			}
			// ECDH derives a wrong seed, which the integrity HMAC
			// catches. RSA-OAEP fails to decrypt the seed: TPM_RC_VALUE,
			// or TPM_RC_SIZE when the ciphertext, as a number, is not
			// below the other key's modulus.
			switch {
			case st.name == "ECC" && errors.Is(err, tpm2.TPMRCIntegrity):
			case st.name == "RSA" && (errors.Is(err, tpm2.TPMRCValue) || errors.Is(err, tpm2.TPMRCSize)):
			default:
				t.Errorf("err = %v", err)
			}
		})
	}
}

// TestCredentialBlobTamperRejected: any change to the credential blob is
// caught by its integrity HMAC (or its size field), and no secret leaks.
func TestCredentialBlobTamperRejected(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	ak, _ := createChild(t, v, srk, eccSigningTemplate, nil)
	mc := makeCredential(t, v, srk, ak.name, []byte("tamper-evident"))
	blob, enc := mc.CredentialBlob.Buffer, mc.Secret.Buffer
	for i := range blob {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(blob)
			b[i] ^= bit
			got, err := activateCredential(v, ak, srk, b, enc)
			if err == nil {
				t.Fatalf("byte %d bit %#x: tampered blob activated: %q", i, bit, got)
			}
			if i >= 2 && !errors.Is(err, tpm2.TPMRCIntegrity) {
				t.Errorf("byte %d: err = %v, want TPM_RC_INTEGRITY", i, err)
			}
		}
	}
	// A blob made with a different seed (the secret of another credential).
	mc2 := makeCredential(t, v, srk, ak.name, []byte("tamper-evident"))
	if _, err := activateCredential(v, ak, srk, blob, mc2.Secret.Buffer); !errors.Is(err, tpm2.TPMRCIntegrity) {
		t.Errorf("blob with another credential's secret: err = %v", err)
	}
}

// TestActivateCredentialWrongObjectNameRejected: a credential bound to
// one object's name does not activate for another object, even in the
// same TPM under the same key.
func TestActivateCredentialWrongObjectNameRejected(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	ak, _ := createChild(t, v, srk, eccSigningTemplate, nil)
	impostor, _ := createChild(t, v, srk, eccSigningTemplate, nil)
	mc := makeCredential(t, v, srk, ak.name, []byte("for the AK"))
	got, err := activateCredential(v, impostor, srk, mc.CredentialBlob.Buffer, mc.Secret.Buffer)
	if !errors.Is(err, tpm2.TPMRCIntegrity) {
		t.Fatalf("ActivateCredential for another object = %q, %v; want TPM_RC_INTEGRITY", got, err)
	}
	// A name that is not any loaded object's.
	mc = makeCredential(t, v, srk, tpm2.TPM2BName{Buffer: append([]byte{0, 0x0b}, make([]byte, 32)...)}, []byte("x"))
	if _, err := activateCredential(v, ak, srk, mc.CredentialBlob.Buffer, mc.Secret.Buffer); !errors.Is(err, tpm2.TPMRCIntegrity) {
		t.Fatalf("ActivateCredential for a made-up name: %v", err)
	}
}

// ekPolicySession satisfies the default EK policy,
// PolicySecret(TPM_RH_ENDORSEMENT) (TCG EK Credential Profile, 2.1.5.1).
func ekPolicySession() tpm2.Session {
	return tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: h, NonceTPM: nonce}.Execute(tp)
		return err
	})
}

// TestActivateCredentialEK activates credentials with the default RSA and
// ECC endorsement keys, whose adminWithPolicy attribute and policy
// require TPM2_PolicySecret on the endorsement hierarchy, on our vTPM and
// the reference TPM; a password cannot authorize the EK.
func TestActivateCredentialEK(t *testing.T) {
	for _, tc := range []struct {
		name string
		tmpl tpm2.TPMTPublic
	}{{"RSA", tpm2.RSAEKTemplate}, {"ECC", tpm2.ECCEKTemplate}} {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestTPM(t)
			ref := simTPM{getSim(t)}
			for _, tp := range []struct {
				name string
				tpm  transport.TPM
			}{{"vtpm", v}, {"reference", ref}} {
				ekRsp, err := tpm2.CreatePrimary{
					PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: pwAuth(nil)},
					InPublic:      tpm2.New2B(tc.tmpl),
				}.Execute(tp.tpm)
				if err != nil {
					t.Fatal(err)
				}
				ek := loadedKey{ekRsp.ObjectHandle, ekRsp.Name, ekRsp.OutPublic}
				srk := createSRK(t, tp.tpm, tpm2.ECCSRKTemplate)
				ak, _ := createChild(t, tp.tpm, srk, eccSigningTemplate, nil)
				pub, _ := ek.pub.Contents()
				encap, err := tpm2.ImportEncapsulationKey(pub)
				if err != nil {
					t.Fatal(err)
				}
				secret := []byte("activated with the EK")
				id, enc, err := tpm2.CreateCredential(rand.Reader, encap, ak.name.Buffer, secret)
				if err != nil {
					t.Fatal(err)
				}
				rsp, err := tpm2.ActivateCredential{
					ActivateHandle: ak.auth(),
					KeyHandle:      tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: ekPolicySession()},
					CredentialBlob: tpm2.TPM2BIDObject{Buffer: id},
					Secret:         tpm2.TPM2BEncryptedSecret{Buffer: enc},
				}.Execute(tp.tpm)
				if err != nil || !bytes.Equal(rsp.CertInfo.Buffer, secret) {
					t.Fatalf("%s: ActivateCredential with the EK: %v", tp.name, err)
				}
				// A password session is refused: the EK's user role needs
				// its policy.
				if _, err := activateCredential(tp.tpm, ak, ek, id, enc); !errors.Is(err, tpm2.TPMRCAuthUnavailable) {
					t.Errorf("%s: EK with a password: %v, want TPM_RC_AUTH_UNAVAILABLE", tp.name, err)
				}
				ak.flush(tp.tpm)
				srk.flush(tp.tpm)
				ek.flush(tp.tpm)
			}
		})
	}
}

// TestAttesterActivatesOnVTPM runs the attest package's host side on our
// vTPM: its Attester creates the RSA EK and an AK, and Activate recovers a
// credential made for them (as attest's Challenger makes it) through a
// PolicySecret session.
func TestAttesterActivatesOnVTPM(t *testing.T) {
	v := newTestTPM(t)
	ctx := context.Background()
	a, err := attest.NewAttester(ctx, v, attest.AttesterConfig{})
	if err != nil {
		t.Fatalf("NewAttester: %v", err)
	}
	defer a.Close()
	ek, err := tpm2.Unmarshal[tpm2.TPMTPublic](a.EKPublic())
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tpm2.Unmarshal[tpm2.TPMTPublic](a.AKPublic())
	if err != nil {
		t.Fatal(err)
	}
	akName, err := tpm2.ObjectName(ak)
	if err != nil {
		t.Fatal(err)
	}
	encap, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{0x5a}, 32)
	id, enc, err := tpm2.CreateCredential(rand.Reader, encap, akName.Buffer, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Activate(ctx, attest.Credential{IDObject: id, EncryptedSecret: enc})
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Activate = %x, %v", got, err)
	}
	// A challenge from attest's Challenger activates too.
	ch, err := attest.NewChallenger(bytes.Repeat([]byte{1}, 32), attest.ChallengeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ch.NewTPMChallenge(a.EKPublic(), a.AKPublic())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Activate(ctx, tc.Credential); err != nil {
		t.Fatalf("Activate(NewTPMChallenge): %v", err)
	}
}

// FuzzActivateCredential feeds mutated credential blobs and secrets to
// TPM2_ActivateCredential with the ECC and RSA storage keys they were made
// for. The response is always well formed, and a recovered credential is
// never longer than a digest.
func FuzzActivateCredential(f *testing.F) {
	defer useFixedRSAKeys(f)()
	base, err := loadFuzzBase()
	if err != nil {
		f.Fatal(err)
	}
	type keys struct {
		ak       loadedKey
		ecc, rsa loadedKey
	}
	open := func(t testing.TB) (*TPM, keys) {
		v, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		ak, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}, InPublic: tpm2.New2B(eccSigningTemplate)}.Execute(v)
		if err != nil {
			t.Fatal(err)
		}
		return v, keys{loadedKey{ak.ObjectHandle, ak.Name, ak.OutPublic}, createSRK(t, v, tpm2.ECCSRKTemplate), createSRK(t, v, tpm2.RSASRKTemplate)}
	}
	v, k := open(f)
	for i, key := range []loadedKey{k.ecc, k.rsa} {
		mc := makeCredential(f, v, key, k.ak.name, []byte("fuzzed credential"))
		f.Add(uint8(i), mc.CredentialBlob.Buffer, mc.Secret.Buffer)
	}
	v.Close()
	f.Fuzz(func(t *testing.T, which uint8, blob, secret []byte) {
		v, k := open(t)
		defer v.Close()
		key := k.ecc
		if which&1 == 1 {
			key = k.rsa
		}
		rsp, err := v.Send(rawCommand(ccActivateCredential, []uint32{uint32(k.ak.handle), uint32(key.handle)}, 2, nil, b2b(blob), b2b(secret)))
		if err != nil {
			t.Fatal(err)
		}
		if rcOf(rsp) != rcSuccess {
			if len(rsp) != 10 {
				t.Fatalf("error response of %d bytes", len(rsp))
			}
			return
		}
		if c := rsp2B(t, rsp, true); len(c) > 32 {
			t.Fatalf("credential of %d bytes from a SHA-256 key", len(c))
		}
	})
}
