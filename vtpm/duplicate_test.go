package vtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// duplicablePolicy is PolicyCommandCode(TPM2_Duplicate): the usual
// authPolicy of an object that may be duplicated.
func duplicablePolicy(t testing.TB) []byte {
	t.Helper()
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := (tpm2.PolicyCommandCode{Code: tpm2.TPMCCDuplicate}).Update(calc); err != nil {
		t.Fatal(err)
	}
	return calc.Hash().Digest
}

// dupSession is a policy session that satisfies duplicablePolicy.
func dupSession() tpm2.Session {
	return tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicyCommandCode{PolicySession: h, Code: tpm2.TPMCCDuplicate}.Execute(tp)
		return err
	})
}

// duplicableSigningTemplate is an ECDSA key that may be duplicated with
// duplicablePolicy; encrypted selects encryptedDuplication.
func duplicableSigningTemplate(t testing.TB, encrypted bool) tpm2.TPMTPublic {
	tmpl := eccSigningTemplate
	tmpl.ObjectAttributes.FixedTPM = false
	tmpl.ObjectAttributes.FixedParent = false
	tmpl.ObjectAttributes.EncryptedDuplication = encrypted
	tmpl.AuthPolicy = tpm2.TPM2BDigest{Buffer: duplicablePolicy(t)}
	return tmpl
}

var aes128CFB = tpm2.TPMTSymDef{
	Algorithm: tpm2.TPMAlgAES,
	KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
	Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
}

var symNull = tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}

// softwareECCKey is an ECDSA P-256 key made outside any TPM, with its
// TPMT_PUBLIC (duplicable, userWithAuth) and TPMT_SENSITIVE.
func softwareECCKey(t testing.TB) (*ecdsa.PrivateKey, tpm2.TPMTPublic, tpm2.TPMTSensitive) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt, _ := k.PublicKey.Bytes()
	d, _ := k.Bytes()
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]},
		}),
	}
	sens := tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgECC,
		AuthValue:     tpm2.TPM2BAuth{Buffer: []byte("key auth")},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: d}),
	}
	return k, pub, sens
}

// signWith signs a digest with a loaded ECDSA key and checks the signature
// against pk.
func signWith(t testing.TB, tp transport.TPM, key tpm2.AuthHandle, pk *ecdsa.PublicKey) {
	t.Helper()
	digest := sha256.Sum256([]byte("imported key signs"))
	sig, err := tpm2.Sign{KeyHandle: key, Digest: tpm2.TPM2BDigest{Buffer: digest[:]},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull}}.Execute(tp)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	es, err := sig.Signature.Signature.ECDSA()
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.Verify(pk, digest[:], bigInt(es.SignatureR.Buffer), bigInt(es.SignatureS.Buffer)) {
		t.Fatal("signature of the imported key does not verify")
	}
}

func importAndLoad(t testing.TB, tp transport.TPM, parent loadedKey, encKey []byte, pub tpm2.TPM2BPublic, dup, seed []byte, sym tpm2.TPMTSymDef) (loadedKey, error) {
	t.Helper()
	im, err := tpm2.Import{
		ParentHandle:  parent.auth(),
		EncryptionKey: tpm2.TPM2BData{Buffer: encKey},
		ObjectPublic:  pub,
		Duplicate:     tpm2.TPM2BPrivate{Buffer: dup},
		InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: seed},
		Symmetric:     sym,
	}.Execute(tp)
	if err != nil {
		return loadedKey{}, err
	}
	l, err := tpm2.Load{ParentHandle: parent.auth(), InPrivate: im.OutPrivate, InPublic: pub}.Execute(tp)
	if err != nil {
		t.Fatalf("Load of the imported object: %v", err)
	}
	return loadedKey{l.ObjectHandle, l.Name, pub}, nil
}

// TestImportSoftwareDuplicate imports a key wrapped in software by go-tpm's
// CreateDuplicate (outer wrapper only) under ECC and RSA parents, loads it
// and signs with it.
func TestImportSoftwareDuplicate(t *testing.T) {
	for _, st := range srkTemplates {
		t.Run(st.name, func(t *testing.T) {
			v := newTestTPM(t)
			srk := createSRK(t, v, st.tmpl)
			k, pub, sens := softwareECCKey(t)
			name, err := tpm2.ObjectName(&pub)
			if err != nil {
				t.Fatal(err)
			}
			srkPub, _ := srk.pub.Contents()
			encap, err := tpm2.ImportEncapsulationKey(srkPub)
			if err != nil {
				t.Fatal(err)
			}
			dup, seed, err := tpm2.CreateDuplicate(rand.Reader, encap, name.Buffer, tpm2.Marshal(sens))
			if err != nil {
				t.Fatal(err)
			}
			key, err := importAndLoad(t, v, srk, nil, tpm2.New2B(pub), dup, seed, symNull)
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			signWith(t, v, tpm2.AuthHandle{Handle: key.handle, Name: key.name, Auth: pwAuth([]byte("key auth"))}, &k.PublicKey)
		})
	}
}

// importBlob builds the pb.ImportBlob that go-tpm-tools'
// server.CreateImportBlob makes (a sealed keyed-hash object, userWithAuth,
// no policy, wrapped for the storage key srkPub). go-tpm-tools' server
// package pulls in go-eventlog, which stays out of this module (it is a
// peer we only compare against, in bench/), so the blob is built here with
// go-tpm's CreateDuplicate, in the same format.
func importBlob(t testing.TB, srkPub tpm2.TPM2BPublic, pub tpm2.TPMTPublic, sens tpm2.TPMTSensitive) *pb.ImportBlob {
	t.Helper()
	sp, err := srkPub.Contents()
	if err != nil {
		t.Fatal(err)
	}
	encap, err := tpm2.ImportEncapsulationKey(sp)
	if err != nil {
		t.Fatal(err)
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		t.Fatal(err)
	}
	dup, seed, err := tpm2.CreateDuplicate(rand.Reader, encap, name.Buffer, tpm2.Marshal(sens))
	if err != nil {
		t.Fatal(err)
	}
	return &pb.ImportBlob{Duplicate: dup, EncryptedSeed: seed, PublicArea: tpm2.Marshal(pub)}
}

// sealedObject is a keyed-hash data object holding secret, as
// go-tpm-tools' CreateImportBlob makes it.
func sealedObject(secret []byte) (tpm2.TPMTPublic, tpm2.TPMTSensitive) {
	obf := make([]byte, 32)
	rand.Read(obf)
	unique := sha256.Sum256(append(append([]byte(nil), obf...), secret...))
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true},
		Parameters:       tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
		Unique:           tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique[:]}),
	}
	sens := tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: obf},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: secret}),
	}
	return pub, sens
}

// TestGoTPMToolsImport: go-tpm-tools' client.Key.Import recovers a secret
// sealed to its SRK on our vTPM (TPM2_Import, TPM2_Load, TPM2_Unseal), and
// client.Key.ImportSigningKey imports a software key that then signs.
func TestGoTPMToolsImport(t *testing.T) {
	v := newTestTPM(t)
	rw := v.ReadWriter()
	for _, mk := range []struct {
		name string
		fn   func() (*client.Key, error)
	}{
		{"ECC", func() (*client.Key, error) { return client.StorageRootKeyECC(rw) }},
		{"RSA", func() (*client.Key, error) { return client.StorageRootKeyRSA(rw) }},
	} {
		t.Run(mk.name, func(t *testing.T) {
			srk, err := mk.fn()
			if err != nil {
				t.Fatal(err)
			}
			defer srk.Close()
			srkPub := tpm2.BytesAs2B[tpm2.TPMTPublic](mustEncode(t, srk))
			secret := []byte("a disk key sealed for go-tpm-tools")
			pub, sens := sealedObject(secret)
			blob := importBlob(t, srkPub, pub, sens)
			got, err := srk.Import(blob)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("Import = %q, %v", got, err)
			}
			// The same blob with its duplicate changed does not import.
			blob.Duplicate[len(blob.Duplicate)-1] ^= 1
			if _, err := srk.Import(blob); err == nil {
				t.Fatal("a tampered import blob imported")
			}

			k, kpub, ksens := softwareECCKey(t)
			ksens.AuthValue = tpm2.TPM2BAuth{}
			sk, err := srk.ImportSigningKey(importBlob(t, srkPub, kpub, ksens))
			if err != nil {
				t.Fatalf("ImportSigningKey: %v", err)
			}
			defer sk.Close()
			if !sk.PublicKey().(*ecdsa.PublicKey).Equal(&k.PublicKey) {
				t.Fatal("imported signing key has another public key")
			}
			digest := sha256.Sum256([]byte("signed by an imported key"))
			sig, err := sk.SignData([]byte("signed by an imported key"))
			if err != nil {
				t.Fatalf("SignData: %v", err)
			}
			if !ecdsa.VerifyASN1(&k.PublicKey, digest[:], sig) {
				t.Fatal("signature of the imported key does not verify")
			}
		})
	}
}

func mustEncode(t testing.TB, k *client.Key) []byte {
	t.Helper()
	b, err := k.PublicArea().Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDuplicateReferenceToVTPM duplicates keys on the reference TPM for
// our SRK (outer wrapper only; inner and outer with encryptedDuplication)
// and imports them into our vTPM.
func TestDuplicateReferenceToVTPM(t *testing.T) {
	for _, st := range srkTemplates {
		t.Run(st.name, func(t *testing.T) {
			v := newTestTPM(t)
			ref := simTPM{getSim(t)}
			vsrk := createSRK(t, v, st.tmpl)
			rsrk := createSRK(t, ref, tpm2.ECCSRKTemplate)
			defer rsrk.flush(ref)
			for _, tc := range []struct {
				name      string
				encrypted bool
				sym       tpm2.TPMTSymDef
			}{{"outer", false, symNull}, {"inner and outer", true, aes128CFB}} {
				key, _ := createChild(t, ref, rsrk, duplicableSigningTemplate(t, tc.encrypted), nil)
				np := loadPublic(t, ref, vsrk.pub)
				d, err := tpm2.Duplicate{
					ObjectHandle:    tpm2.AuthHandle{Handle: key.handle, Name: key.name, Auth: dupSession()},
					NewParentHandle: np.named(),
					Symmetric:       tc.sym,
				}.Execute(ref)
				np.flush(ref)
				key.flush(ref)
				if err != nil {
					t.Fatalf("%s: reference Duplicate: %v", tc.name, err)
				}
				imp, err := importAndLoad(t, v, vsrk, d.EncryptionKeyOut.Buffer, key.pub, d.Duplicate.Buffer, d.OutSymSeed.Buffer, tc.sym)
				if err != nil {
					t.Fatalf("%s: Import: %v", tc.name, err)
				}
				pub, _ := key.pub.Contents()
				pk, err := tpm2.Pub(*pub)
				if err != nil {
					t.Fatal(err)
				}
				signWith(t, v, imp.auth(), pk.(*ecdsa.PublicKey))
				imp.flush(v)
			}
		})
	}
}

// duplicateInternal runs our duplication (the body of TPM2_Duplicate
// after authorization) on a loaded object. TPM2_Duplicate itself needs a
// policy session for the DUP role; TestDuplicateCommand covers that path.
func duplicateInternal(t testing.TB, v *TPM, obj, newParent loadedKey, encKey []byte, sym symDef) (keyOut, dup, seed []byte) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	o := v.object(uint32(obj.handle))
	var np *object
	if newParent.handle != tpm2.TPMRHNull {
		np = v.object(uint32(newParent.handle))
	}
	keyOut, dup, seed, rc := duplicateObject(o, np, encKey, sym)
	if rc != rcSuccess {
		t.Fatalf("duplicateObject: rc %#x", rc)
	}
	return keyOut, dup, seed
}

var symAES128 = symDef{algAES, 128, algCFB}

// TestDuplicateVTPMToReference duplicates keys of our vTPM for the
// reference TPM's SRK, with and without an inner wrapper, and imports them
// into the reference TPM, which then signs with them.
func TestDuplicateVTPMToReference(t *testing.T) {
	for _, st := range srkTemplates {
		t.Run(st.name, func(t *testing.T) {
			v := newTestTPM(t)
			ref := simTPM{getSim(t)}
			vsrk := createSRK(t, v, tpm2.ECCSRKTemplate)
			rsrk := createSRK(t, ref, st.tmpl)
			defer rsrk.flush(ref)
			np := loadPublic(t, v, rsrk.pub)
			for _, tc := range []struct {
				name      string
				encrypted bool
				sym       symDef
				tpmSym    tpm2.TPMTSymDef
				key       []byte
			}{
				{"outer", false, symDef{alg: algNull}, symNull, nil},
				{"inner and outer, TPM-made key", true, symAES128, aes128CFB, nil},
				{"inner and outer, caller's key", true, symAES128, aes128CFB, bytes.Repeat([]byte{7}, 16)},
			} {
				key, _ := createChild(t, v, vsrk, duplicableSigningTemplate(t, tc.encrypted), nil)
				keyOut, dup, seed := duplicateInternal(t, v, key, np, tc.key, tc.sym)
				encKey := tc.key
				if encKey == nil {
					encKey = keyOut
				} else if len(keyOut) != 0 {
					t.Errorf("%s: encryptionKeyOut returned with a caller's key", tc.name)
				}
				imp, err := importAndLoad(t, ref, rsrk, encKey, key.pub, dup, seed, tc.tpmSym)
				if err != nil {
					t.Fatalf("%s: reference Import: %v", tc.name, err)
				}
				pub, _ := key.pub.Contents()
				pk, _ := tpm2.Pub(*pub)
				signWith(t, ref, imp.auth(), pk.(*ecdsa.PublicKey))
				imp.flush(ref)
				key.flush(v)
			}
		})
	}
}

// TestRewrap moves a duplicate made by the reference TPM for our SRK to
// another parent with our TPM2_Rewrap, and imports it there.
func TestRewrap(t *testing.T) {
	v := newTestTPM(t)
	ref := simTPM{getSim(t)}
	vsrk := createSRK(t, v, tpm2.ECCSRKTemplate)
	other, _ := createChild(t, v, vsrk, tpm2.RSASRKTemplate, nil)
	rsrk := createSRK(t, ref, tpm2.ECCSRKTemplate)
	defer rsrk.flush(ref)
	key, _ := createChild(t, ref, rsrk, duplicableSigningTemplate(t, false), nil)
	np := loadPublic(t, ref, vsrk.pub)
	d, err := tpm2.Duplicate{
		ObjectHandle:    tpm2.AuthHandle{Handle: key.handle, Name: key.name, Auth: dupSession()},
		NewParentHandle: np.named(),
		Symmetric:       symNull,
	}.Execute(ref)
	np.flush(ref)
	key.flush(ref)
	if err != nil {
		t.Fatalf("reference Duplicate: %v", err)
	}
	rwDup, rwSeed, rc := rewrap(v, vsrk.handle, other.handle, d.Duplicate.Buffer, key.name.Buffer, d.OutSymSeed.Buffer)
	if rc != rcSuccess {
		t.Fatalf("Rewrap: rc %#x", rc)
	}
	// The old wrapper no longer imports under the new parent; the new one
	// does, and not under the old parent.
	if _, err := importAndLoad(t, v, other, nil, key.pub, d.Duplicate.Buffer, d.OutSymSeed.Buffer, symNull); err == nil {
		t.Error("the old duplicate imported under the new parent")
	}
	if _, err := importAndLoad(t, v, vsrk, nil, key.pub, rwDup, rwSeed, symNull); err == nil {
		t.Error("the rewrapped duplicate imported under the old parent")
	}
	imp, err := importAndLoad(t, v, other, nil, key.pub, rwDup, rwSeed, symNull)
	if err != nil {
		t.Fatalf("Import of the rewrapped duplicate: %v", err)
	}
	pub, _ := key.pub.Contents()
	pk, _ := tpm2.Pub(*pub)
	signWith(t, v, imp.auth(), pk.(*ecdsa.PublicKey))

	// Rewrap to TPM_RH_NULL strips the outer wrapper, and the bare
	// sensitive area imports without a seed.
	bareDup, bareSeed, rc := rewrap(v, vsrk.handle, tpm2.TPMRHNull, d.Duplicate.Buffer, key.name.Buffer, d.OutSymSeed.Buffer)
	if rc != rcSuccess {
		t.Fatalf("Rewrap to TPM_RH_NULL: rc %#x", rc)
	}
	if len(bareSeed) != 0 {
		t.Error("Rewrap to TPM_RH_NULL returned a seed")
	}
	imp.flush(v)
	if _, err := importAndLoad(t, v, other, nil, key.pub, bareDup, nil, symNull); err != nil {
		t.Fatalf("Import of an unwrapped duplicate: %v", err)
	}
}

// TestImportTamperedDuplicateRejected: a duplicate changed in any byte,
// bound to another public area, or wrapped for another parent does not
// import; the outer and inner integrity checks catch it.
func TestImportTamperedDuplicateRejected(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	np := loadPublic(t, v, srk.pub)
	key, _ := createChild(t, v, srk, duplicableSigningTemplate(t, true), nil)
	keyOut, dup, seed := duplicateInternal(t, v, key, np, nil, symAES128)
	if _, err := importAndLoad(t, v, srk, keyOut, key.pub, dup, seed, aes128CFB); err != nil {
		t.Fatalf("untampered Import: %v", err)
	}
	tryImport := func(encKey []byte, pub tpm2.TPM2BPublic, dup, seed []byte, sym tpm2.TPMTSymDef) error {
		_, err := tpm2.Import{
			ParentHandle: srk.auth(), EncryptionKey: tpm2.TPM2BData{Buffer: encKey}, ObjectPublic: pub,
			Duplicate: tpm2.TPM2BPrivate{Buffer: dup}, InSymSeed: tpm2.TPM2BEncryptedSecret{Buffer: seed}, Symmetric: sym,
		}.Execute(v)
		return err
	}
	for i := range dup {
		d := bytes.Clone(dup)
		d[i] ^= 0x10
		err := tryImport(keyOut, key.pub, d, seed, aes128CFB)
		if err == nil {
			t.Fatalf("duplicate with byte %d changed imported", i)
		}
		if i >= 2 && !errors.Is(err, tpm2.TPMRCIntegrity) {
			t.Errorf("byte %d: %v, want TPM_RC_INTEGRITY", i, err)
		}
	}
	// The wrong inner key: the outer wrapper is intact, the inner
	// integrity (or, as in the reference TPM, the size of the decrypted
	// integrity field) fails.
	wrongKey := bytes.Clone(keyOut)
	wrongKey[0] ^= 1
	if err := tryImport(wrongKey, key.pub, dup, seed, aes128CFB); !errors.Is(err, tpm2.TPMRCIntegrity) && !errors.Is(err, tpm2.TPMRCSize) {
		t.Errorf("wrong inner key: %v", err)
	}
	// Another public area (a different policy) with the same blob.
	pub, _ := key.pub.Contents()
	pub.AuthPolicy = tpm2.TPM2BDigest{}
	pub.ObjectAttributes.UserWithAuth = true
	if err := tryImport(keyOut, tpm2.New2B(*pub), dup, seed, aes128CFB); !errors.Is(err, tpm2.TPMRCIntegrity) {
		t.Errorf("swapped public area: %v", err)
	}
	// encryptedDuplication without the inner or outer wrapper.
	if err := tryImport(nil, key.pub, dup, seed, symNull); !errors.Is(err, tpm2.TPMRCAttributes) {
		t.Errorf("encryptedDuplication without inner wrapper: %v", err)
	}
	if err := tryImport(keyOut, key.pub, dup, nil, aes128CFB); !errors.Is(err, tpm2.TPMRCAttributes) {
		t.Errorf("encryptedDuplication without outer wrapper: %v", err)
	}
	// A duplicate for another parent.
	other, _ := createChild(t, v, srk, tpm2.ECCSRKTemplate, nil)
	if _, err := importAndLoad(t, v, other, keyOut, key.pub, dup, seed, aes128CFB); err == nil {
		t.Error("a duplicate for the SRK imported under another parent")
	}
}

// rewrap sends TPM2_Rewrap (go-tpm has no command type for it) with a
// password session for the old parent.
func rewrap(tp transport.TPM, oldParent, newParent tpm2.TPMHandle, dup, name, seed []byte) (outDup, outSeed []byte, rc uint32) {
	rsp, err := tp.Send(rawCommand(ccRewrap, []uint32{uint32(oldParent), uint32(newParent)}, 1, nil, b2b(dup), b2b(name), b2b(seed)))
	if err != nil {
		return nil, nil, rcFailure
	}
	if rc := rcOf(rsp); rc != rcSuccess {
		return nil, nil, rc
	}
	r := newReader(rsp[14:])
	outDup = r.b2b(maxPrivateSize)
	outSeed = r.b2b(maxEncSecret)
	if !r.ok() {
		return nil, nil, rcFailure
	}
	return outDup, outSeed, rcSuccess
}

// runPolicyAuthorized runs a command handler as if a policy session had
// authorized its first handle: it skips the authorization area, which
// needs the policy commands, and tests the handler itself.
func runPolicyAuthorized(v *TPM, cc uint32, handles []uint32, params ...[]byte) uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := &call{def: lookupCommand(cc), tag: stSessions, nh: len(handles), nsess: 1}
	copy(c.h[:], handles)
	c.sess[0].handle = policySessionFirst
	for i, h := range handles {
		if rc := v.handleLoaded(h); rc != rcSuccess {
			return qualify(rc, rcH|uint32(i+1)<<8)
		}
	}
	var p []byte
	for _, b := range params {
		p = append(p, b...)
	}
	c.w.b = make([]byte, rspPrefix)
	c.r = newReader(p)
	c.r.param(1)
	return c.def.fn(v, c)
}

func symDefBytes(s symDef) []byte {
	if s.alg == algNull {
		return u16b(algNull)
	}
	return append(append(u16b(s.alg), u16b(s.bits)...), u16b(s.mode)...)
}

// TestDuplicateFixedParentRefused: an object whose fixedParent is set
// never leaves its parent, whatever policy authorizes TPM2_Duplicate; the
// reference TPM refuses it with the same code.
func TestDuplicateFixedParentRefused(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	np := loadPublic(t, v, srk.pub)
	tmpl := duplicableSigningTemplate(t, false)
	tmpl.ObjectAttributes.FixedTPM = true
	tmpl.ObjectAttributes.FixedParent = true
	fixed, _ := createChild(t, v, srk, tmpl, nil)
	rc := runPolicyAuthorized(v, ccDuplicate, []uint32{uint32(fixed.handle), uint32(np.handle)}, b2b(nil), symDefBytes(symDef{alg: algNull}))
	want := uint32(qualify(rcAttributes, rcH|rcN))
	if rc != want {
		t.Fatalf("Duplicate of a fixedParent object: rc %#x, want %#x", rc, want)
	}
	// The same object with fixedParent clear duplicates.
	free, _ := createChild(t, v, srk, duplicableSigningTemplate(t, false), nil)
	if rc := runPolicyAuthorized(v, ccDuplicate, []uint32{uint32(free.handle), uint32(np.handle)}, b2b(nil), symDefBytes(symDef{alg: algNull})); rc != rcSuccess {
		t.Fatalf("Duplicate of a duplicable object: rc %#x", rc)
	}

	// The reference TPM, with a real policy session.
	ref := simTPM{getSim(t)}
	rsrk := createSRK(t, ref, tpm2.ECCSRKTemplate)
	defer rsrk.flush(ref)
	rfixed, _ := createChild(t, ref, rsrk, tmpl, nil)
	defer rfixed.flush(ref)
	_, err := tpm2.Duplicate{
		ObjectHandle:    tpm2.AuthHandle{Handle: rfixed.handle, Name: rfixed.name, Auth: dupSession()},
		NewParentHandle: rsrk.named(),
		Symmetric:       symNull,
	}.Execute(ref)
	var fmt1 tpm2.TPMFmt1Error
	if !errors.As(err, &fmt1) || !errors.Is(err, tpm2.TPMRCAttributes) {
		t.Fatalf("reference Duplicate of a fixedParent object: %v", err)
	}
	if isH, n := fmt1.Handle(); !isH || n != 1 {
		t.Errorf("reference error %v is not about handle 1", err)
	}
}

// TestDuplicateChecks covers the parameter checks of TPM2_Duplicate.
func TestDuplicateChecks(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	np := loadPublic(t, v, srk.pub)
	enc, _ := createChild(t, v, srk, duplicableSigningTemplate(t, true), nil)
	plain, _ := createChild(t, v, srk, duplicableSigningTemplate(t, false), nil)
	signer, _ := createChild(t, v, srk, eccSigningTemplate, nil)
	null := uint32(rhNull)
	for _, tc := range []struct {
		name    string
		handles []uint32
		key     []byte
		sym     symDef
		want    uint32
	}{
		{"encryptedDuplication without inner wrapper", []uint32{uint32(enc.handle), uint32(np.handle)}, nil, symDef{alg: algNull}, qualify(rcSymmetric, rcP|2*rcN)},
		{"encryptedDuplication to TPM_RH_NULL", []uint32{uint32(enc.handle), null}, nil, symAES128, qualify(rcHierarchy, rcH|2*rcN)},
		{"key without inner wrapper", []uint32{uint32(plain.handle), uint32(np.handle)}, make([]byte, 16), symDef{alg: algNull}, qualify(rcSize, rcP|rcN)},
		{"key of the wrong size", []uint32{uint32(plain.handle), uint32(np.handle)}, make([]byte, 15), symAES128, qualify(rcSize, rcP|rcN)},
		{"new parent not a storage key", []uint32{uint32(plain.handle), uint32(signer.handle)}, nil, symDef{alg: algNull}, qualify(rcType, rcH|2*rcN)},
		{"to TPM_RH_NULL", []uint32{uint32(plain.handle), null}, nil, symDef{alg: algNull}, rcSuccess},
		{"inner only", []uint32{uint32(plain.handle), null}, nil, symAES128, rcSuccess},
	} {
		if rc := runPolicyAuthorized(v, ccDuplicate, tc.handles, b2b(tc.key), symDefBytes(tc.sym)); rc != tc.want {
			t.Errorf("%s: rc %#x, want %#x", tc.name, rc, tc.want)
		}
	}
}

// importScenario runs Import, Duplicate and Rewrap commands that fail, and
// one that succeeds, on one TPM; TestImportDifferential compares their
// response codes with the reference's.
func importScenario(t *testing.T, tp transport.TPM, tmpl tpm2.TPMTPublic) {
	srk := createSRK(t, tp, tmpl)
	defer srk.flush(tp)
	_, pub, sens := softwareECCKey(t)
	name, _ := tpm2.ObjectName(&pub)
	sp, _ := srk.pub.Contents()
	encap, _ := tpm2.ImportEncapsulationKey(sp)
	dup, seed, err := tpm2.CreateDuplicate(rand.Reader, encap, name.Buffer, tpm2.Marshal(sens))
	if err != nil {
		t.Fatal(err)
	}
	imp := func(parent loadedKey, key []byte, pub tpm2.TPMTPublic, dup, seed []byte, sym tpm2.TPMTSymDef) {
		tpm2.Import{ParentHandle: parent.auth(), EncryptionKey: tpm2.TPM2BData{Buffer: key}, ObjectPublic: tpm2.New2B(pub),
			Duplicate: tpm2.TPM2BPrivate{Buffer: dup}, InSymSeed: tpm2.TPM2BEncryptedSecret{Buffer: seed}, Symmetric: sym}.Execute(tp)
	}
	imp(srk, nil, pub, dup, seed, symNull)
	fixed := pub
	fixed.ObjectAttributes.FixedTPM = true
	fixed.ObjectAttributes.FixedParent = true
	imp(srk, nil, fixed, dup, seed, symNull)
	edup := pub
	edup.ObjectAttributes.EncryptedDuplication = true
	imp(srk, nil, edup, dup, seed, symNull)
	imp(srk, make([]byte, 16), pub, dup, seed, symNull)
	imp(srk, make([]byte, 8), pub, dup, seed, aes128CFB)
	imp(srk, nil, pub, dup, seed[:len(seed)-1], symNull)
	bad := bytes.Clone(seed)
	bad[len(bad)/2] ^= 1
	imp(srk, nil, pub, dup, bad, symNull)
	for _, i := range []int{0, 1, 2, len(dup) / 2, len(dup) - 1} {
		d := bytes.Clone(dup)
		d[i] ^= 0x08
		imp(srk, nil, pub, d, seed, symNull)
	}
	imp(srk, nil, pub, dup[:10], seed, symNull)
	// The wrong public area for the blob, and a signing key as parent.
	other := pub
	other.ObjectAttributes.NoDA = true
	imp(srk, nil, other, dup, seed, symNull)
	signer, _ := createChild(t, tp, srk, eccSigningTemplate, nil)
	imp(signer, nil, pub, dup, seed, symNull)
	// Duplicate with a password: the DUP role needs a policy session.
	tpm2.Duplicate{ObjectHandle: signer.auth(), NewParentHandle: srk.named(), Symmetric: symNull}.Execute(tp)
	signer.flush(tp)
	// Rewrap with a seed but no old parent, and without a seed.
	rc := func(_, _ []byte, rc uint32) uint32 { return rc }
	rc(rewrap(tp, tpm2.TPMRHNull, srk.handle, dup, name.Buffer, seed))
	rc(rewrap(tp, srk.handle, srk.handle, dup, name.Buffer, nil))
	rc(rewrap(tp, srk.handle, tpm2.TPMRHNull, dup, name.Buffer, bad))
	rc(rewrap(tp, srk.handle, tpm2.TPMRHNull, dup, name.Buffer, seed))
}

func TestImportDifferential(t *testing.T) {
	for _, st := range srkTemplates {
		t.Run(st.name, func(t *testing.T) {
			a := &recorder{tpm: newTestTPM(t)}
			importScenario(t, a, st.tmpl)
			b := &recorder{tpm: simTPM{getSim(t)}}
			importScenario(t, b, st.tmpl)
			compareRecorders(t, a, b)
		})
	}
}

// TestGoTPMToolsImportEK is go-tpm-tools' sealed-secret flow on our vTPM
// with the endorsement key as the import parent (its EKSession runs
// PolicySecret for every use), without and with a PCR policy on the
// secret: the PCR-bound secret unseals through PolicyPCR until the PCR
// changes, and never after.
func TestGoTPMToolsImportEK(t *testing.T) {
	v := newTestTPM(t)
	rw := v.ReadWriter()
	for _, mk := range []struct {
		name string
		fn   func() (*client.Key, error)
	}{
		{"ECC", func() (*client.Key, error) { return client.EndorsementKeyECC(rw) }},
		{"RSA", func() (*client.Key, error) { return client.EndorsementKeyRSA(rw) }},
	} {
		t.Run(mk.name, func(t *testing.T) {
			ek, err := mk.fn()
			if err != nil {
				t.Fatal(err)
			}
			defer ek.Close()
			ekPub := tpm2.BytesAs2B[tpm2.TPMTPublic](mustEncode(t, ek))
			secret := []byte("sealed to the EK")
			pub, sens := sealedObject(secret)
			got, err := ek.Import(importBlob(t, ekPub, pub, sens))
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("Import = %q, %v", got, err)
			}

			// Bound to PCR 16's current value.
			sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(16)}}}
			pr, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(v)
			if err != nil {
				t.Fatal(err)
			}
			val := pr.PCRValues.Digests[0].Buffer
			calc, _ := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
			pd := sha256.Sum256(val)
			if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: pd[:]}, Pcrs: sel}).Update(calc); err != nil {
				t.Fatal(err)
			}
			pub, sens = sealedObject(secret)
			pub.ObjectAttributes.UserWithAuth = false
			pub.ObjectAttributes.AdminWithPolicy = true
			pub.AuthPolicy = tpm2.TPM2BDigest{Buffer: calc.Hash().Digest}
			blob := importBlob(t, ekPub, pub, sens)
			blob.Pcrs = &pb.PCRs{Hash: pb.HashAlgo_SHA256, Pcrs: map[uint32][]byte{16: val}}
			got, err = ek.Import(blob)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("Import with PCR policy = %q, %v", got, err)
			}
			if _, err := (tpm2.PCRExtend{PCRHandle: tpm2.AuthHandle{Handle: 16, Auth: pwAuth(nil)},
				Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)}}}}).Execute(v); err != nil {
				t.Fatal(err)
			}
			if got, err := ek.Import(blob); err == nil {
				t.Fatalf("Import after the PCR changed = %q", got)
			}
			tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: 16, Auth: pwAuth(nil)}}.Execute(v)
		})
	}
}

// TestDuplicateCommand runs TPM2_Duplicate itself, authorized by a
// PolicyCommandCode(TPM2_Duplicate) session, and imports the result into
// the reference TPM.
func TestDuplicateCommand(t *testing.T) {
	v := newTestTPM(t)
	ref := simTPM{getSim(t)}
	vsrk := createSRK(t, v, tpm2.ECCSRKTemplate)
	rsrk := createSRK(t, ref, tpm2.RSASRKTemplate)
	defer rsrk.flush(ref)
	np := loadPublic(t, v, rsrk.pub)
	key, _ := createChild(t, v, vsrk, duplicableSigningTemplate(t, true), nil)
	d, err := tpm2.Duplicate{
		ObjectHandle:    tpm2.AuthHandle{Handle: key.handle, Name: key.name, Auth: dupSession()},
		NewParentHandle: np.named(),
		Symmetric:       aes128CFB,
	}.Execute(v)
	if err != nil {
		t.Fatalf("Duplicate: %v", err)
	}
	imp, err := importAndLoad(t, ref, rsrk, d.EncryptionKeyOut.Buffer, key.pub, d.Duplicate.Buffer, d.OutSymSeed.Buffer, aes128CFB)
	if err != nil {
		t.Fatalf("reference Import: %v", err)
	}
	defer imp.flush(ref)
	pub, _ := key.pub.Contents()
	pk, _ := tpm2.Pub(*pub)
	signWith(t, ref, imp.auth(), pk.(*ecdsa.PublicKey))

	// A password cannot authorize the DUP role, nor a policy for another
	// command.
	if _, err := (tpm2.Duplicate{ObjectHandle: key.auth(), NewParentHandle: np.named(), Symmetric: aes128CFB}).Execute(v); !errors.Is(err, tpm2.TPMRCAuthType) {
		t.Errorf("Duplicate with a password: %v, want TPM_RC_AUTH_TYPE", err)
	}
	wrong := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicyCommandCode{PolicySession: h, Code: tpm2.TPMCCSign}.Execute(tp)
		return err
	})
	if _, err := (tpm2.Duplicate{ObjectHandle: tpm2.AuthHandle{Handle: key.handle, Name: key.name, Auth: wrong}, NewParentHandle: np.named(), Symmetric: aes128CFB}).Execute(v); err == nil {
		t.Error("Duplicate authorized by a PolicyCommandCode(TPM2_Sign) session")
	}
}

// FuzzImport feeds mutated TPM2_Import parameters (encryptionKey,
// objectPublic, duplicate, inSymSeed, symmetricAlg) to a TPM holding the
// storage key they were made for. The seeds are valid duplicates, with and
// without an inner wrapper. Whatever the input, the response is well
// formed, and a private area that Import returns loads.
func FuzzImport(f *testing.F) {
	defer useFixedRSAKeys(f)()
	base, err := loadFuzzBase()
	if err != nil {
		f.Fatal(err)
	}
	open := func(t testing.TB) (*TPM, loadedKey) {
		v, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		return v, createSRK(t, v, tpm2.ECCSRKTemplate)
	}
	v, srk := open(f)
	np := loadPublic(f, v, srk.pub)
	for _, enc := range []bool{false, true} {
		key, _ := createChild(f, v, srk, duplicableSigningTemplate(f, enc), nil)
		sym := symDef{alg: algNull}
		if enc {
			sym = symAES128
		}
		keyOut, dup, seed := duplicateInternal(f, v, key, np, nil, sym)
		f.Add(keyOut, key.pub.Bytes(), dup, seed, symDefBytes(sym))
		key.flush(v)
	}
	v.Close()
	f.Fuzz(func(t *testing.T, encKey, pub, dup, seed, sym []byte) {
		v, srk := open(t)
		defer v.Close()
		cmd := rawCommand(ccImport, []uint32{uint32(srk.handle)}, 1, nil, b2b(encKey), b2b(pub), b2b(dup), b2b(seed), sym)
		rsp, err := v.Send(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if rcOf(rsp) != rcSuccess {
			if len(rsp) != 10 {
				t.Fatalf("error response of %d bytes", len(rsp))
			}
			return
		}
		priv := rsp2B(t, rsp, true)
		l, err := v.Send(rawCommand(ccLoad, []uint32{uint32(srk.handle)}, 1, nil, b2b(priv), b2b(pub)))
		if err != nil || rcOf(l) != rcSuccess {
			t.Fatalf("Import succeeded but Load of its private area failed: rc %#x", rcOf(l))
		}
	})
}
