package vtpm

import (
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TestMigratableChildOfFixedParentRefused: under a fixedTPM parent (or as
// a primary) an object's fixedParent must equal its fixedTPM (Part 1,
// section 27.2): a key that claims fixedParent but not fixedTPM could be
// duplicated with its parent while its attributes say it never moves.
// The vtpm and the reference TPM refuse it alike, at Create and
// CreatePrimary.
func TestMigratableChildOfFixedParentRefused(t *testing.T) {
	tmpl := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
	}
	run := func(t *testing.T, tp transport.TPM) (create, primary error) {
		owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
		srk, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		parent := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
		_, create = tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(tmpl)}.Execute(tp)
		_, primary = tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tmpl)}.Execute(tp)
		return create, primary
	}
	vc, vp := run(t, newTestTPM(t))
	rc, rp := run(t, simTPM{getSim(t)})
	for _, x := range []struct {
		name     string
		got, ref error
	}{{"Create", vc, rc}, {"CreatePrimary", vp, rp}} {
		if x.ref == nil || !errors.Is(x.ref, tpm2.TPMRCAttributes) {
			t.Fatalf("%s: the reference says %v, want TPM_RC_ATTRIBUTES", x.name, x.ref)
		}
		if x.got == nil || x.got.Error() != x.ref.Error() {
			t.Errorf("%s: vtpm %v, reference %v", x.name, x.got, x.ref)
		}
	}
}

// TestNullHierarchyCreationTicketCertifies: a primary object of the null
// hierarchy gets a creation ticket that CertifyCreation accepts, on the
// vtpm as on the reference TPM.
func TestNullHierarchyCreationTicketCertifies(t *testing.T) {
	for name, tp := range map[string]transport.TPM{"vtpm": newTestTPM(t), "reference": simTPM{getSim(t)}} {
		p, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHNull, Auth: tpm2.PasswordAuth(nil)}, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(p.CreationTicket.Digest.Buffer) == 0 {
			t.Errorf("%s: empty creation ticket", name)
		}
		_, err = tpm2.CertifyCreation{
			SignHandle:     tpm2.AuthHandle{Handle: tpm2.TPMRHNull, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:   tpm2.NamedHandle{Handle: p.ObjectHandle, Name: p.Name},
			CreationHash:   p.CreationHash,
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			CreationTicket: p.CreationTicket,
		}.Execute(tp)
		if err != nil {
			t.Errorf("%s: CertifyCreation: %v", name, err)
		}
	}
}

// TestSymmetricKeyAttributesMatchReference: the attribute combinations of
// a symmetric key template (tpm2-tools' default AES key sets sign and
// decrypt) get the reference TPM's answer.
func TestSymmetricKeyAttributesMatchReference(t *testing.T) {
	run := func(t *testing.T, tp transport.TPM) []error {
		srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		parent := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
		var errs []error
		for _, a := range []struct{ sign, decrypt, restricted bool }{
			{true, true, false}, {false, true, false}, {true, false, false}, {false, false, false},
			{false, true, true}, {true, true, true}, {true, false, true},
		} {
			mode := tpm2.TPMAlgCFB
			tmpl := tpm2.TPMTPublic{
				Type: tpm2.TPMAlgSymCipher, NameAlg: tpm2.TPMAlgSHA256,
				ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
					SignEncrypt: a.sign, Decrypt: a.decrypt, Restricted: a.restricted},
				Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgSymCipher, &tpm2.TPMSSymCipherParms{Sym: tpm2.TPMTSymDefObject{
					Algorithm: tpm2.TPMAlgAES, KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
					Mode: tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, mode)}}),
			}
			_, err := tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(tmpl)}.Execute(tp)
			errs = append(errs, err)
		}
		return errs
	}
	ours := run(t, newTestTPM(t))
	ref := run(t, simTPM{getSim(t)})
	for i := range ours {
		if (ours[i] == nil) != (ref[i] == nil) || ours[i] != nil && ours[i].Error() != ref[i].Error() {
			t.Errorf("case %d: vtpm %v, reference %v", i, ours[i], ref[i])
		}
	}
}

// TestDuplicatePasswordDoesNotCountTowardsLockout: TPM2_Duplicate's DUP
// role takes only policy sessions, so a password is refused with
// TPM_RC_AUTH_TYPE before it is compared: a wrong one must not count
// towards dictionary-attack lockout (as on the reference TPM).
func TestDuplicatePasswordDoesNotCountTowardsLockout(t *testing.T) {
	run := func(t *testing.T, tp transport.TPM) (error, uint32) {
		srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		parent := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
		tmpl := tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true},
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: make([]byte, 32)}}
		obj, err := tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(tmpl),
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				UserAuth: tpm2.TPM2BAuth{Buffer: []byte("right")},
				Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("secret")})}}}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		ld, err := tpm2.Load{ParentHandle: parent, InPrivate: obj.OutPrivate, InPublic: obj.OutPublic}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		_, dupErr := tpm2.Duplicate{
			ObjectHandle:    tpm2.AuthHandle{Handle: ld.ObjectHandle, Name: ld.Name, Auth: tpm2.PasswordAuth([]byte("wrong"))},
			NewParentHandle: tpm2.NamedHandle{Handle: tpm2.TPMRHNull, Name: tpm2.HandleName(tpm2.TPMRHNull)},
			Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(tp)
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: 0x20E, PropertyCount: 1}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		props, _ := rsp.CapabilityData.Data.TPMProperties()
		return dupErr, props.TPMProperty[0].Value
	}
	vErr, vCount := run(t, newTestTPM(t))
	rErr, rCount := run(t, simTPM{getSim(t)})
	if rErr == nil || vErr == nil || vErr.Error() != rErr.Error() {
		t.Errorf("Duplicate with a password: vtpm %v, reference %v", vErr, rErr)
	}
	if !errors.Is(vErr, tpm2.TPMRCAuthType) {
		t.Errorf("vtpm: %v, want TPM_RC_AUTH_TYPE", vErr)
	}
	if vCount != 0 || rCount != 0 {
		t.Errorf("lockout counter: vtpm %d, reference %d; want 0", vCount, rCount)
	}
}

// TestHiddenEntityPasswordNotChecked: a persistent object of a disabled
// hierarchy does not exist for commands (TPM_RC_HANDLE), and that answer
// comes before its authorization is checked, so a wrong password on it is
// neither reported nor counted towards lockout (as on the reference TPM).
func TestHiddenEntityPasswordNotChecked(t *testing.T) {
	run := func(t *testing.T, tp transport.TPM) (error, uint32) {
		owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
		srk, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		parent := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
		obj, err := tpm2.Create{ParentHandle: parent,
			InPublic: tpm2.New2B(tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
				ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true}}),
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				UserAuth: tpm2.TPM2BAuth{Buffer: []byte("right")},
				Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("secret")})}}}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		ld, err := tpm2.Load{ParentHandle: parent, InPrivate: obj.OutPrivate, InPublic: obj.OutPublic}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		const ph = tpm2.TPMHandle(0x81000010)
		if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: &tpm2.NamedHandle{Handle: ld.ObjectHandle, Name: ld.Name}, PersistentHandle: ph}).Execute(tp); err != nil {
			t.Fatal(err)
		}
		rsp, err := tp.Send(rawCommand(ccHierarchyControl, []uint32{rhPlatform}, 1, nil, u32b(rhOwner), []byte{0}))
		if err != nil || rcOf(rsp) != rcSuccess {
			t.Fatalf("HierarchyControl: %#x %v", rcOf(rsp), err)
		}
		_, unsealErr := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: ph, Name: ld.Name, Auth: tpm2.PasswordAuth([]byte("wrong"))}}.Execute(tp)
		caps, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: 0x20E, PropertyCount: 1}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		props, _ := caps.CapabilityData.Data.TPMProperties()
		return unsealErr, props.TPMProperty[0].Value
	}
	vErr, vCount := run(t, newTestTPM(t))
	rErr, rCount := run(t, simTPM{getSim(t)})
	if vErr == nil || rErr == nil || vErr.Error() != rErr.Error() {
		t.Errorf("Unseal of a hidden object: vtpm %v, reference %v", vErr, rErr)
	}
	if vCount != 0 || rCount != 0 {
		t.Errorf("lockout counter: vtpm %d, reference %d; want 0", vCount, rCount)
	}
}

// TestLoadExternalSymKeyWithoutNameAlg: an external symmetric key whose
// public area has no name algorithm loads (as on the reference TPM) and
// does not take the TPM down (a FuzzSend find: the binding check asked
// the null algorithm for its digest size).
func TestLoadExternalSymKeyWithoutNameAlg(t *testing.T) {
	pub := tpm2.TPMTPublic{Type: tpm2.TPMAlgSymCipher, NameAlg: tpm2.TPMAlgNull,
		ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true, Decrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgSymCipher, &tpm2.TPMSSymCipherParms{Sym: tpm2.TPMTSymDefObject{
			Algorithm: tpm2.TPMAlgAES, KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
			Mode: tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)}}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgSymCipher, &tpm2.TPM2BDigest{}),
	}
	sens := tpm2.TPMTSensitive{SensitiveType: tpm2.TPMAlgSymCipher, SeedValue: tpm2.TPM2BDigest{Buffer: make([]byte, 32)},
		Sensitive: tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgSymCipher, &tpm2.TPM2BSymKey{Buffer: make([]byte, 16)})}
	for _, x := range []struct {
		name string
		tp   transport.TPM
	}{{"reference", simTPM{getSim(t)}}, {"vtpm", newTestTPM(t)}} {
		if _, err := (tpm2.LoadExternal{InPublic: tpm2.New2B(pub), InPrivate: tpm2.New2B(sens), Hierarchy: tpm2.TPMRHNull}).Execute(x.tp); err != nil {
			t.Errorf("%s: %v", x.name, err)
		}
	}
}
