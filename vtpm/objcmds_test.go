package vtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// verifyAttest checks an ECDSA signature over a TPM2B_ATTEST and decodes
// it.
func verifyAttest(t testing.TB, pub tpm2.TPM2BPublic, attest tpm2.TPM2BAttest, sig tpm2.TPMTSignature) *tpm2.TPMSAttest {
	t.Helper()
	p, err := pub.Contents()
	if err != nil {
		t.Fatal(err)
	}
	pk, err := tpm2.Pub(*p)
	if err != nil {
		t.Fatal(err)
	}
	es, err := sig.Signature.ECDSA()
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(attest.Bytes())
	if !ecdsa.Verify(pk.(*ecdsa.PublicKey), d[:], bigInt(es.SignatureR.Buffer), bigInt(es.SignatureS.Buffer)) {
		t.Fatal("attestation signature does not verify")
	}
	a, err := attest.Contents()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func withAuth(k loadedKey, auth []byte) tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: pwAuth(auth)}
}

// TestObjectChangeAuth changes a key's authValue: the returned private
// area loads with the new authValue, and the old one no longer works on
// it.
func TestObjectChangeAuth(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	key, _ := createChild(t, v, srk, eccSigningTemplate, &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: []byte("old")}})
	rsp, err := tpm2.ObjectChangeAuth{ObjectHandle: withAuth(key, []byte("old")), ParentHandle: srk.named(), NewAuth: tpm2.TPM2BAuth{Buffer: []byte("new")}}.Execute(v)
	if err != nil {
		t.Fatalf("ObjectChangeAuth: %v", err)
	}
	l, err := tpm2.Load{ParentHandle: srk.auth(), InPrivate: rsp.OutPrivate, InPublic: key.pub}.Execute(v)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	changed := loadedKey{l.ObjectHandle, l.Name, key.pub}
	p, _ := key.pub.Contents()
	pk, _ := tpm2.Pub(*p)
	signWith(t, v, withAuth(changed, []byte("new")), pk.(*ecdsa.PublicKey))
	digest := sha256.Sum256(nil)
	_, err = tpm2.Sign{KeyHandle: withAuth(changed, []byte("old")), Digest: tpm2.TPM2BDigest{Buffer: digest[:]},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull}}.Execute(v)
	if !errors.Is(err, tpm2.TPMRCAuthFail) {
		t.Errorf("old authValue on the changed key: %v, want TPM_RC_AUTH_FAIL", err)
	}
	// The loaded original keeps the old authValue.
	signWith(t, v, withAuth(key, []byte("old")), pk.(*ecdsa.PublicKey))
}

// objScenario runs ObjectChangeAuth, CreateLoaded, CertifyCreation and
// NV_Certify, good and bad, on one TPM; TestObjectCommandsDifferential
// compares the response codes with the reference's. The reference holds
// three objects at a time.
func objScenario(t *testing.T, tp transport.TPM) {
	srk := createSRK(t, tp, tpm2.ECCSRKTemplate)
	defer srk.flush(tp)
	key, _ := createChild(t, tp, srk, eccSigningTemplate, &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: []byte("old")}})
	change := func(obj loadedKey, auth []byte, parent loadedKey, newAuth []byte) {
		tpm2.ObjectChangeAuth{ObjectHandle: withAuth(obj, auth), ParentHandle: parent.named(), NewAuth: tpm2.TPM2BAuth{Buffer: newAuth}}.Execute(tp)
	}
	change(key, []byte("old"), srk, []byte("new"))
	change(key, []byte("old"), key, []byte("new"))                     // not its parent
	change(key, []byte("old"), srk, bytes.Repeat([]byte{1}, 33))       // longer than SHA-256
	change(key, []byte("old"), srk, append(make([]byte, 32), 0, 0, 0)) // trailing zeros do not count
	change(srk, nil, key, nil)                                         // a primary has no parent object
	change(key, []byte("wrong"), srk, []byte("new"))                   // AUTH_FAIL
	key.flush(tp)

	// CreateLoaded: an ordinary key, a primary, and bad templates.
	cl := func(parent tpm2.TPMHandle, tmpl tpm2.TPMTPublic) {
		rsp, err := tpm2.CreateLoaded{
			ParentHandle: tpm2.AuthHandle{Handle: parent, Auth: pwAuth(nil)},
			InPublic:     tpm2.New2BTemplate(&tmpl),
		}.Execute(tp)
		if err == nil {
			tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tp)
		}
	}
	cl(srk.handle, eccSigningTemplate)
	cl(tpm2.TPMRHOwner, tpm2.ECCSRKTemplate)
	cl(tpm2.TPMRHNull, eccSigningTemplate)
	bad := eccSigningTemplate
	bad.ObjectAttributes.SensitiveDataOrigin = false
	cl(srk.handle, bad)
	fixed := eccSigningTemplate
	fixed.ObjectAttributes.FixedParent = false
	cl(srk.handle, fixed)
	cl(tpm2.TPMHandle(rhLockout), eccSigningTemplate)

	// CertifyCreation.
	signer, _ := createChild(t, tp, srk, eccSigningTemplate, nil)
	defer signer.flush(tp)
	cr, err := tpm2.Create{ParentHandle: srk.auth(), InPublic: tpm2.New2B(eccSigningTemplate)}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tpm2.Load{ParentHandle: srk.auth(), InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	obj := loadedKey{l.ObjectHandle, l.Name, cr.OutPublic}
	certify := func(hash []byte, ticket tpm2.TPMTTKCreation) {
		tpm2.CertifyCreation{SignHandle: signer.auth(), ObjectHandle: obj.named(), QualifyingData: tpm2.TPM2BData{Buffer: []byte("q")},
			CreationHash: tpm2.TPM2BDigest{Buffer: hash}, InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, CreationTicket: ticket}.Execute(tp)
	}
	certify(cr.CreationHash.Buffer, cr.CreationTicket)
	other := bytes.Clone(cr.CreationHash.Buffer)
	other[0] ^= 1
	certify(other, cr.CreationTicket)
	wrongHier := cr.CreationTicket
	wrongHier.Hierarchy = tpm2.TPMRHEndorsement
	certify(cr.CreationHash.Buffer, wrongHier)
	tpm2.CertifyCreation{SignHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHNull, Auth: pwAuth(nil)}, ObjectHandle: obj.named(),
		CreationHash: cr.CreationHash, InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, CreationTicket: cr.CreationTicket}.Execute(tp)
	obj.flush(tp)

	// NV_Certify.
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}
	const idx = tpm2.TPMHandle(0x01500020)
	tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256, DataSize: 64,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, AuthWrite: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
	})}.Execute(tp)
	nvPub, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	nvH := tpm2.NamedHandle{Handle: idx, Name: nvPub.NVName}
	nvc := func(size, off uint16) {
		tpm2.NVCertify{SignHandle: signer.auth(), AuthHandle: owner, NVIndex: nvH, QualifyingData: tpm2.TPM2BData{Buffer: []byte("nonce")},
			InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, Size: size, Offset: off}.Execute(tp)
	}
	nvc(8, 0) // NV_UNINITIALIZED
	tpm2.NVWrite{AuthHandle: owner, NVIndex: nvH, Data: tpm2.TPM2BMaxNVBuffer{Buffer: []byte("certified NV contents")}}.Execute(tp)
	nvPub, _ = tpm2.NVReadPublic{NVIndex: idx}.Execute(tp)
	nvH.Name = nvPub.NVName
	nvc(16, 0)
	nvc(8, 56)
	nvc(8, 60) // NV_RANGE
	nvc(0, 0)  // digest form
	tpm2.NVUndefineSpace{AuthHandle: owner, NVIndex: nvH}.Execute(tp)
}

func TestObjectCommandsDifferential(t *testing.T) {
	a := &recorder{tpm: newTestTPM(t)}
	objScenario(t, a)
	b := &recorder{tpm: simTPM{getSim(t)}}
	objScenario(t, b)
	compareRecorders(t, a, b)
}

// TestCreateLoaded: an ordinary key created and loaded at once signs;
// a primary made by CreateLoaded is the one CreatePrimary makes.
func TestCreateLoaded(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	rsp, err := tpm2.CreateLoaded{ParentHandle: srk.auth(), InPublic: tpm2.New2BTemplate(&eccSigningTemplate)}.Execute(v)
	if err != nil {
		t.Fatalf("CreateLoaded: %v", err)
	}
	p, _ := rsp.OutPublic.Contents()
	pk, _ := tpm2.Pub(*p)
	signWith(t, v, tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name, Auth: pwAuth(nil)}, pk.(*ecdsa.PublicKey))
	// The private area loads again under the same parent.
	l, err := tpm2.Load{ParentHandle: srk.auth(), InPrivate: rsp.OutPrivate, InPublic: rsp.OutPublic}.Execute(v)
	if err != nil || !bytes.Equal(l.Name.Buffer, rsp.Name.Buffer) {
		t.Fatalf("Load of CreateLoaded's private area: %v", err)
	}

	for _, tmpl := range []tpm2.TPMTPublic{tpm2.ECCSRKTemplate, tpm2.RSASRKTemplate} {
		prim, err := tpm2.CreateLoaded{ParentHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}, InPublic: tpm2.New2BTemplate(&tmpl)}.Execute(v)
		if err != nil {
			t.Fatalf("CreateLoaded(owner): %v", err)
		}
		if len(prim.OutPrivate.Buffer) != 0 {
			t.Error("CreateLoaded of a primary returned a private area")
		}
		cp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}, InPublic: tpm2.New2B(tmpl)}.Execute(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cp.Name.Buffer, prim.Name.Buffer) {
			t.Errorf("CreateLoaded(owner) name %x, CreatePrimary name %x", prim.Name.Buffer, cp.Name.Buffer)
		}
		tpm2.FlushContext{FlushHandle: prim.ObjectHandle}.Execute(v)
		tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(v)
	}
}

// TestCertifyCreation certifies a key with its creation ticket and checks
// the signed TPMS_CREATION_INFO; TestCertifyCreationForgedTicketRejected
// shows a changed creation hash is refused.
func TestCertifyCreation(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	signer, _ := createChild(t, v, srk, eccSigningTemplate, nil)
	cr, err := tpm2.Create{ParentHandle: srk.auth(), InPublic: tpm2.New2B(eccSigningTemplate)}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tpm2.Load{ParentHandle: srk.auth(), InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := tpm2.CertifyCreation{SignHandle: signer.auth(), ObjectHandle: tpm2.NamedHandle{Handle: l.ObjectHandle, Name: l.Name},
		QualifyingData: tpm2.TPM2BData{Buffer: []byte("nonce")}, CreationHash: cr.CreationHash,
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, CreationTicket: cr.CreationTicket}.Execute(v)
	if err != nil {
		t.Fatalf("CertifyCreation: %v", err)
	}
	a := verifyAttest(t, signer.pub, rsp.CertifyInfo, rsp.Signature)
	if a.Type != tpm2.TPMSTAttestCreation || string(a.ExtraData.Buffer) != "nonce" {
		t.Fatalf("attest type %v, extra data %q", a.Type, a.ExtraData.Buffer)
	}
	info, err := a.Attested.Creation()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(info.ObjectName.Buffer, l.Name.Buffer) || !bytes.Equal(info.CreationHash.Buffer, cr.CreationHash.Buffer) {
		t.Error("TPMS_CREATION_INFO does not name the object and its creation hash")
	}
	// The creation data hashes to the creation hash.
	ch := sha256.Sum256(cr.CreationData.Bytes())
	if !bytes.Equal(ch[:], cr.CreationHash.Buffer) {
		t.Error("creation hash is not the digest of the creation data")
	}
}

func TestCertifyCreationForgedTicketRejected(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	signer, _ := createChild(t, v, srk, eccSigningTemplate, nil)
	cr, err := tpm2.Create{ParentHandle: srk.auth(), InPublic: tpm2.New2B(eccSigningTemplate)}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := tpm2.Load{ParentHandle: srk.auth(), InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}.Execute(v)
	// The creation hash of other creation data (another PCR selection,
	// say) with the real ticket, and the real hash with a made-up ticket.
	forged := sha256.Sum256([]byte("creation data the TPM never saw"))
	for _, tc := range []struct {
		hash   []byte
		ticket tpm2.TPMTTKCreation
	}{
		{forged[:], cr.CreationTicket},
		{cr.CreationHash.Buffer, tpm2.TPMTTKCreation{Tag: tpm2.TPMSTCreation, Hierarchy: tpm2.TPMRHOwner, Digest: tpm2.TPM2BDigest{Buffer: make([]byte, 32)}}},
		{cr.CreationHash.Buffer, tpm2.TPMTTKCreation{Tag: tpm2.TPMSTCreation, Hierarchy: tpm2.TPMRHNull}},
	} {
		_, err := tpm2.CertifyCreation{SignHandle: signer.auth(), ObjectHandle: tpm2.NamedHandle{Handle: l.ObjectHandle, Name: l.Name},
			CreationHash: tpm2.TPM2BDigest{Buffer: tc.hash}, InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, CreationTicket: tc.ticket}.Execute(v)
		if !errors.Is(err, tpm2.TPMRCTicket) {
			t.Errorf("forged creation ticket: %v, want TPM_RC_TICKET", err)
		}
	}
}

// TestNVCertify signs a range of an NV index and a digest of all of it.
func TestNVCertify(t *testing.T) {
	v := newTestTPM(t)
	srk := createSRK(t, v, tpm2.ECCSRKTemplate)
	signer, _ := createChild(t, v, srk, eccSigningTemplate, nil)
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}
	const idx = tpm2.TPMHandle(0x01500021)
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256, DataSize: 32,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
	})}).Execute(v); err != nil {
		t.Fatal(err)
	}
	data := []byte("0123456789abcdef0123456789abcdef")
	pub, _ := tpm2.NVReadPublic{NVIndex: idx}.Execute(v)
	nvH := tpm2.NamedHandle{Handle: idx, Name: pub.NVName}
	if _, err := (tpm2.NVWrite{AuthHandle: owner, NVIndex: nvH, Data: tpm2.TPM2BMaxNVBuffer{Buffer: data}}).Execute(v); err != nil {
		t.Fatal(err)
	}
	pub, _ = tpm2.NVReadPublic{NVIndex: idx}.Execute(v)
	nvH.Name = pub.NVName
	rsp, err := tpm2.NVCertify{SignHandle: signer.auth(), AuthHandle: owner, NVIndex: nvH, QualifyingData: tpm2.TPM2BData{Buffer: []byte("n")},
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, Size: 10, Offset: 4}.Execute(v)
	if err != nil {
		t.Fatalf("NV_Certify: %v", err)
	}
	a := verifyAttest(t, signer.pub, rsp.CertifyInfo, rsp.Signature)
	info, err := a.Attested.NV()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(info.IndexName.Buffer, nvH.Name.Buffer) || info.Offset != 4 || !bytes.Equal(info.NVContents.Buffer, data[4:14]) {
		t.Errorf("TPMS_NV_CERTIFY_INFO = %x %d %q", info.IndexName.Buffer, info.Offset, info.NVContents.Buffer)
	}
	rsp, err = tpm2.NVCertify{SignHandle: signer.auth(), AuthHandle: owner, NVIndex: nvH,
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}}.Execute(v)
	if err != nil {
		t.Fatalf("NV_Certify (digest): %v", err)
	}
	a = verifyAttest(t, signer.pub, rsp.CertifyInfo, rsp.Signature)
	if a.Type != tpm2.TPMSTAttestNVDigest {
		t.Fatalf("attest type %v", a.Type)
	}
	di, err := a.Attested.NVDigest()
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if !bytes.Equal(di.NVDigest.Buffer, want[:]) {
		t.Errorf("nvDigest %x, want %x", di.NVDigest.Buffer, want)
	}
}

// TestNVCertifyDifferential certifies the same NV index contents on our
// vTPM and the reference TPM without a signing key (TPM_RH_NULL): the
// attested TPMS_NV_CERTIFY_INFO and TPMS_NV_DIGEST_CERTIFY_INFO must be
// byte for byte equal (the clock and firmware fields of the header
// differ between the TPMs and are not compared).
func TestNVCertifyDifferential(t *testing.T) {
	d := newDual(t)
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}
	const idx = tpm2.TPMHandle(0x01500022)
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256, DataSize: 48,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
	})}).Execute(d); err != nil {
		t.Fatal(err)
	}
	pub, _ := tpm2.NVReadPublic{NVIndex: idx}.Execute(d)
	nvH := tpm2.NamedHandle{Handle: idx, Name: pub.NVName}
	if _, err := (tpm2.NVWrite{AuthHandle: owner, NVIndex: nvH, Data: tpm2.TPM2BMaxNVBuffer{Buffer: []byte("the same bytes on both TPMs")}, Offset: 5}).Execute(d); err != nil {
		t.Fatal(err)
	}
	pub, _ = tpm2.NVReadPublic{NVIndex: idx}.Execute(d)
	nvH.Name = pub.NVName
	for _, tc := range []struct{ size, off uint16 }{{20, 3}, {48, 0}, {1, 47}, {0, 0}} {
		cmd := rawCommand(ccNVCertify, []uint32{rhNull, rhOwner, uint32(idx)}, 2, nil,
			b2b([]byte("qualifying data")), u16b(algNull), u16b(tc.size), u16b(tc.off))
		a, b := d.sameRC("NV_Certify", cmd)
		if rcOf(a) != rcSuccess {
			t.Fatalf("NV_Certify(%d, %d): rc %#x", tc.size, tc.off, rcOf(a))
		}
		// TPMS_ATTEST: magic, type, qualifiedSigner, extraData,
		// clockInfo (17 bytes), firmwareVersion (8), then attested.
		var heads, bodies [2][]byte
		for i, rsp := range [][]byte{a, b} {
			raw := rsp2B(t, rsp, true)
			r := newReader(raw)
			r.u32()
			r.u16()
			r.b2b(maxNameSize)
			r.b2b(maxDataSize)
			r.bytes(17 + 8)
			if !r.ok() {
				t.Fatalf("short TPMS_ATTEST %x", raw)
			}
			body := r.rest()
			heads[i] = raw[:6]
			bodies[i] = body
		}
		if !bytes.Equal(heads[0], heads[1]) {
			t.Errorf("NV_Certify(%d, %d): magic and type %x / %x", tc.size, tc.off, heads[0], heads[1])
		}
		if !bytes.Equal(bodies[0], bodies[1]) {
			t.Errorf("NV_Certify(%d, %d): attested\nvtpm      %x\nreference %x", tc.size, tc.off, bodies[0], bodies[1])
		}
	}
	tpm2.NVUndefineSpace{AuthHandle: owner, NVIndex: nvH}.Execute(d)
}
