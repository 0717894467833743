package vtpm

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"math/big"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// both sends one command to our vTPM and to the reference TPM and returns
// the two responses.
func (d *dual) both(cmd []byte) (ours, ref []byte) {
	d.t.Helper()
	a, err := d.v.Send(cmd)
	if err != nil {
		d.t.Fatal(err)
	}
	return a, simSend(d.sim, cmd)
}

// sameResponse sends cmd to both TPMs and requires identical responses:
// the command is deterministic given the same key.
func (d *dual) sameResponse(what string, cmd []byte) []byte {
	d.t.Helper()
	a, b := d.both(cmd)
	if !bytes.Equal(a, b) {
		d.t.Errorf("%s: responses differ\nvtpm      %x\nreference %x", what, a, b)
	}
	return a
}

// sameRC sends cmd to both TPMs and requires the same response code.
func (d *dual) sameRC(what string, cmd []byte) (ours, ref []byte) {
	d.t.Helper()
	a, b := d.both(cmd)
	if rcOf(a) != rcOf(b) {
		d.t.Errorf("%s: vtpm rc %#x, reference rc %#x", what, rcOf(a), rcOf(b))
	}
	return a, b
}

// rsp2B returns the first TPM2B of a response's parameters, after the
// parameterSize of a command with sessions when sessions is set.
func rsp2B(t testing.TB, rsp []byte, sessions bool) []byte {
	t.Helper()
	if rcOf(rsp) != rcSuccess {
		t.Fatalf("rc %#x", rcOf(rsp))
	}
	off := 10
	if sessions {
		off += 4
	}
	r := newReader(rsp[off:])
	b := r.b2b(4096)
	if !r.ok() {
		t.Fatal("short response")
	}
	return b
}

// externalRSA loads the test RSA-2048 key of testdata/fuzz-rsa-keys.txt,
// private part included, with a decryption scheme, into the null
// hierarchy of both TPMs; the handles are the same on both.
func externalRSA(t *testing.T, d *dual, scheme tpm2.TPMTRSAScheme) uint32 {
	k := loadFuzzRSAKeys(t)[2048]
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true, Decrypt: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, Scheme: scheme, KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k[0]}),
	}
	sens := tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgRSA,
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgRSA, &tpm2.TPM2BPrivateKeyRSA{Buffer: k[1]}),
	}
	rsp, err := tpm2.LoadExternal{InPrivate: tpm2.New2B(sens), InPublic: tpm2.New2B(pub), Hierarchy: tpm2.TPMRHNull}.Execute(d)
	if err != nil {
		t.Fatalf("LoadExternal: %v", err)
	}
	return uint32(rsp.ObjectHandle)
}

func rsaScheme2(scheme tpm2.TPMAlgID) tpm2.TPMTRSAScheme {
	switch scheme {
	case tpm2.TPMAlgOAEP:
		return tpm2.TPMTRSAScheme{Scheme: scheme, Details: tpm2.NewTPMUAsymScheme(scheme, &tpm2.TPMSEncSchemeOAEP{HashAlg: tpm2.TPMAlgSHA256})}
	case tpm2.TPMAlgRSAES:
		return tpm2.TPMTRSAScheme{Scheme: scheme, Details: tpm2.NewTPMUAsymScheme(scheme, &tpm2.TPMSEncSchemeRSAES{})}
	}
	return tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull}
}

// Marshalled TPMT_RSA_DECRYPT values.
var (
	rsaNull     = u16b(algNull)
	rsaES       = u16b(algRSAES)
	rsaOAEP256  = append(u16b(algOAEP), u16b(algSHA256)...)
	rsaOAEPSHA1 = append(u16b(algOAEP), u16b(algSHA1)...)
)

func rsaEncryptCmd(h uint32, msg, scheme, label []byte) []byte {
	return rawCommand(ccRSAEncrypt, []uint32{h}, 0, nil, b2b(msg), scheme, b2b(label))
}

func rsaDecryptCmd(h uint32, ct, scheme, label []byte) []byte {
	return rawCommand(ccRSADecrypt, []uint32{h}, 1, nil, b2b(ct), scheme, b2b(label))
}

// TestRSAEncryptDecryptDifferential runs TPM2_RSA_Encrypt and
// TPM2_RSA_Decrypt with the same key on our vTPM and the reference TPM:
// raw RSA and every decryption are deterministic and must be byte for
// byte equal; randomized paddings are cross-checked (encrypted on one,
// decrypted on the other); errors must have the same codes.
func TestRSAEncryptDecryptDifferential(t *testing.T) {
	d := newDual(t)
	plain := externalRSA(t, d, rsaScheme2(tpm2.TPMAlgNull))
	msg := []byte("a message for the TPM's RSA key")

	// Raw RSA: deterministic both ways.
	ct := rsp2B(t, d.sameResponse("raw encrypt", rsaEncryptCmd(plain, msg, rsaNull, nil)), false)
	dec := rsp2B(t, d.sameResponse("raw decrypt", rsaDecryptCmd(plain, ct, rsaNull, nil)), true)
	if !bytes.Equal(bytes.TrimLeft(dec, "\x00"), msg) {
		t.Errorf("raw RSA round trip = %q", dec)
	}

	// Randomized paddings: encrypt on each TPM, decrypt on both.
	for _, tc := range []struct {
		name          string
		scheme, label []byte
	}{
		{"OAEP", rsaOAEP256, nil},
		{"OAEP with label", rsaOAEP256, []byte("label\x00")},
		{"OAEP with zeros in the label", rsaOAEP256, []byte("a\x00b\x00")},
		{"OAEP SHA-1", rsaOAEPSHA1, nil},
		{"RSAES", rsaES, nil},
	} {
		a, b := d.sameRC(tc.name+" encrypt", rsaEncryptCmd(plain, msg, tc.scheme, tc.label))
		for _, c := range [][]byte{rsp2B(t, a, false), rsp2B(t, b, false)} {
			got := rsp2B(t, d.sameResponse(tc.name+" decrypt", rsaDecryptCmd(plain, c, tc.scheme, tc.label)), true)
			if !bytes.Equal(got, msg) {
				t.Errorf("%s: decrypted %q", tc.name, got)
			}
		}
	}

	// A key with a scheme accepts only that scheme or TPM_ALG_NULL.
	oaepKey := externalRSA(t, d, rsaScheme2(tpm2.TPMAlgOAEP))
	a, _ := d.sameRC("OAEP key, null scheme", rsaEncryptCmd(oaepKey, msg, rsaNull, nil))
	oct := rsp2B(t, a, false)
	d.sameResponse("OAEP key, null scheme decrypt", rsaDecryptCmd(oaepKey, oct, rsaNull, nil))
	d.sameRC("OAEP key, RSAES", rsaEncryptCmd(oaepKey, msg, rsaES, nil))
	d.sameRC("OAEP key, RSAES decrypt", rsaDecryptCmd(oaepKey, oct, rsaES, nil))
	d.sameRC("OAEP key, OAEP SHA-1", rsaDecryptCmd(oaepKey, oct, rsaOAEPSHA1, nil))

	// Bad inputs.
	d.sameRC("ciphertext too short", rsaDecryptCmd(plain, ct[1:], rsaNull, nil))
	d.sameRC("ciphertext above modulus", rsaDecryptCmd(plain, bytes.Repeat([]byte{0xFF}, 256), rsaNull, nil))
	bad := bytes.Clone(oct)
	bad[10] ^= 1
	d.sameRC("OAEP padding broken", rsaDecryptCmd(oaepKey, bad, rsaNull, nil))
	d.sameRC("OAEP wrong label", rsaDecryptCmd(oaepKey, oct, rsaNull, []byte("other\x00")))
	d.sameRC("label without terminator", rsaEncryptCmd(plain, msg, rsaOAEP256, []byte("label")))
	d.sameRC("label without terminator, raw", rsaEncryptCmd(plain, msg, rsaNull, []byte("label")))
	d.sameRC("label without terminator, decrypt", rsaDecryptCmd(oaepKey, oct, rsaNull, []byte("label")))
	d.sameRC("message too long for OAEP", rsaEncryptCmd(plain, make([]byte, 200), rsaOAEP256, nil))
	d.sameRC("raw message above modulus", rsaEncryptCmd(plain, bytes.Repeat([]byte{0xFF}, 256), rsaNull, nil))
	d.sameRC("unknown scheme", rsaEncryptCmd(plain, msg, u16b(algRSASSA), nil))
	d.sameRC("bad OAEP hash", rsaEncryptCmd(plain, msg, append(u16b(algOAEP), u16b(0x77)...), nil))
}

// externalECC loads one P-256 key, private part included, into the null
// hierarchy of both TPMs for key agreement.
func externalECC(t *testing.T, d *dual, priv *ecdh.PrivateKey) uint32 {
	pt := priv.PublicKey().Bytes()
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true, Decrypt: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}, CurveID: tpm2.TPMECCNistP256,
			KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]},
		}),
	}
	sens := tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgECC,
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: priv.Bytes()}),
	}
	rsp, err := tpm2.LoadExternal{InPrivate: tpm2.New2B(sens), InPublic: tpm2.New2B(pub), Hierarchy: tpm2.TPMRHNull}.Execute(d)
	if err != nil {
		t.Fatalf("LoadExternal: %v", err)
	}
	return uint32(rsp.ObjectHandle)
}

func eccPoint2B(pub *ecdh.PublicKey) []byte {
	var w writer
	s := w.begin2b()
	marshalECCPoint(&w, pub)
	w.end2b(s)
	return w.b
}

// TestECDHDifferential: TPM2_ECDH_ZGen with the same key and point is
// byte for byte equal on both TPMs and agrees with crypto/ecdh; the point
// TPM2_ECDH_KeyGen returns is the one ZGen computes from its ephemeral
// key; invalid points are refused with the same codes.
func TestECDHDifferential(t *testing.T) {
	d := newDual(t)
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h := externalECC(t, d, priv)
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)
	zgen := func(point []byte) []byte { return rawCommand(ccECDHZGen, []uint32{h}, 1, nil, point) }
	z := rsp2B(t, d.sameResponse("ZGen", zgen(eccPoint2B(peer.PublicKey()))), true)
	want, _ := peer.ECDH(priv.PublicKey())
	if len(z) < 2+32 || !bytes.Equal(z[2:34], want) {
		t.Errorf("ZGen x = %x, crypto/ecdh %x", z, want)
	}

	for name, tpm := range map[string]func([]byte) []byte{
		"vtpm":      func(c []byte) []byte { r, _ := d.v.Send(c); return r },
		"reference": func(c []byte) []byte { return simSend(d.sim, c) },
	} {
		kg := tpm(rawCommand(ccECDHKeyGen, []uint32{h}, 0, nil))
		if rcOf(kg) != rcSuccess {
			t.Fatalf("%s: ECDH_KeyGen rc %#x", name, rcOf(kg))
		}
		r := newReader(kg[10:])
		zPoint := r.b2b(200)
		pubPoint := r.b2b(200)
		if !r.ok() {
			t.Fatalf("%s: short ECDH_KeyGen response", name)
		}
		// Our ZGen of the reference's ephemeral point, and the
		// reference's of ours, give the point KeyGen returned.
		for other, z := range map[string][]byte{
			"vtpm":      rsp2B(t, func() []byte { r, _ := d.v.Send(zgen(b2b(pubPoint))); return r }(), true),
			"reference": rsp2B(t, simSend(d.sim, zgen(b2b(pubPoint))), true),
		} {
			if !bytes.Equal(z, zPoint) {
				t.Errorf("%s ZGen of %s KeyGen's point: %x, KeyGen said %x", other, name, z, zPoint)
			}
		}
	}

	// Invalid points.
	off := peer.PublicKey().Bytes()
	off[64] ^= 1
	var w writer
	s := w.begin2b()
	w.b2b(off[1:33])
	w.b2b(off[33:])
	w.end2b(s)
	d.sameRC("point not on the curve", zgen(w.b))
	d.sameRC("empty point", zgen(b2b(nil)))
	d.sameRC("zero point", zgen(b2b(append(b2b(make([]byte, 32)), b2b(make([]byte, 32))...))))
	for _, n := range []int{49, 66, 67} {
		d.sameRC("coordinate too long", zgen(b2b(append(b2b(make([]byte, n)), b2b(make([]byte, 32))...))))
	}
	// An RSA key cannot do ECDH.
	rh := externalRSA(t, d, rsaScheme2(tpm2.TPMAlgNull))
	d.sameRC("ZGen with an RSA key", rawCommand(ccECDHZGen, []uint32{rh}, 1, nil, eccPoint2B(peer.PublicKey())))
	d.sameRC("KeyGen with an RSA key", rawCommand(ccECDHKeyGen, []uint32{rh}, 0, nil))
}

// rsaExternalCmd is a LoadExternal of the test RSA-2048 key with the
// given attributes and marshalled TPMT_RSA_SCHEME, private part included
// when priv is set.
func rsaExternalCmd(t testing.TB, attrs uint32, scheme []byte, priv bool) []byte {
	k := loadFuzzRSAKeys(t)[2048]
	pub := bytesOf(u16b(algRSA), u16b(algSHA256), u32b(attrs), u16b(0),
		u16b(algNull), scheme, u16b(2048), u32b(0), b2b(k[0]))
	var sens []byte
	if priv {
		sens = bytesOf(u16b(algRSA), b2b(nil), b2b(nil), b2b(k[1]))
	}
	return rawCommand(ccLoadExternal, nil, 0, nil, b2b(sens), b2b(pub), u32b(rhNull))
}

// TestSignWithRSAESKeyRefused stops a guest from crashing the TPM with
// TPM2_Sign or TPM2_Quote on an RSA key it loaded with LoadExternal with
// the sign attribute and the RSAES scheme: the key's scheme, which has no
// hash, became the signing scheme, and crypto.Hash(0) panicked.
// LoadExternal must refuse, as the reference does (SchemeChecks), every
// scheme that does not fit the key's sign and decrypt attributes.
func TestSignWithRSAESKeyRefused(t *testing.T) {
	d := newDual(t)
	sha := func(alg uint16) []byte { return bytesOf(u16b(alg), u16b(algSHA256)) }
	const base = oaUserWithAuth | oaNoDA
	for _, priv := range []bool{true, false} {
		for _, scheme := range [][]byte{u16b(algNull), u16b(algRSAES), sha(algOAEP), sha(algRSASSA)} {
			for _, attrs := range []uint32{base | oaSign, base | oaDecrypt, base | oaSign | oaDecrypt} {
				rsp := sameRC(t, d, rsaExternalCmd(t, attrs, scheme, priv))
				if rcOf(rsp) != rcSuccess {
					continue
				}
				h := admBE32(rsp[10:])
				if !priv {
					sameRC(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
					continue
				}
				sameRC(t, d, rawCommand(ccSign, []uint32{h}, 1, nil, b2b(make([]byte, 32)), u16b(algNull),
					u16b(stHashCheck), u32b(rhNull), u16b(0)))
				sameRC(t, d, rawCommand(ccQuote, []uint32{h}, 1, nil, b2b(nil), u16b(algNull),
					u32b(1), u16b(algSHA256), []byte{3, 0xFF, 0, 0}))
				sameRC(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
			}
		}
	}
}

// TestSignRSAPSS stops a guest from crashing the TPM with TPM2_Sign in
// the RSA-PSS scheme, with any RSA signing key: the salt was drawn from a
// nil random source, which panicked. Both TPMs must sign (the signatures
// differ by their random salt).
func TestSignRSAPSS(t *testing.T) {
	d := newDual(t)
	pss := bytesOf(u16b(algRSAPSS), u16b(algSHA256))
	for _, scheme := range [][]byte{u16b(algNull), pss} {
		rsp := sameRC(t, d, rsaExternalCmd(t, oaSign|oaUserWithAuth|oaNoDA, scheme, true))
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("LoadExternal: rc %#x", rcOf(rsp))
		}
		h := admBE32(rsp[10:])
		rsp = sameRC(t, d, rawCommand(ccSign, []uint32{h}, 1, nil, b2b(make([]byte, 32)), pss,
			u16b(stHashCheck), u32b(rhNull), u16b(0)))
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("Sign RSA-PSS: rc %#x", rcOf(rsp))
		}
		// parameterSize, sigAlg, hash, TPM2B signature.
		pk := &rsa.PublicKey{N: new(big.Int).SetBytes(loadFuzzRSAKeys(t)[2048][0]), E: 65537}
		if err := rsa.VerifyPSS(pk, crypto.SHA256, make([]byte, 32), rsp[20:20+256], nil); err != nil {
			t.Errorf("RSA-PSS signature: %v", err)
		}
		sameRC(t, d, rawCommand(ccQuote, []uint32{h}, 1, nil, b2b(nil), pss,
			u32b(1), u16b(algSHA256), []byte{3, 0xFF, 0, 0}))
		sameRC(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
	}
}

// nullNameAlgVerifyCmds returns a LoadExternal of the public part of a
// P-256 signing key with a TPM_ALG_NULL nameAlg into the owner hierarchy,
// then a VerifySignature of a valid signature by it for object handle h.
func nullNameAlgVerifyCmds(t testing.TB, h uint32) (load, verify []byte) {
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), bytes.Repeat([]byte{0x33}, 32))
	if err != nil {
		t.Fatal(err)
	}
	x, y := k.X.FillBytes(make([]byte, 32)), k.Y.FillBytes(make([]byte, 32))
	pub := bytesOf(u16b(algECC), u16b(algNull), u32b(oaSign|oaUserWithAuth|oaNoDA), u16b(0),
		u16b(algNull), u16b(algNull), u16b(curveNISTP256), u16b(algNull), b2b(x), b2b(y))
	load = rawCommand(ccLoadExternal, nil, 0, nil, b2b(nil), b2b(pub), u32b(rhOwner))
	digest := make([]byte, 32)
	r, s, err := ecdsa.Sign(rand.Reader, k, digest)
	if err != nil {
		t.Fatal(err)
	}
	verify = rawCommand(ccVerifySignature, []uint32{h}, 0, nil, b2b(digest), u16b(algECDSA), u16b(algSHA256),
		b2b(r.FillBytes(make([]byte, 32))), b2b(s.FillBytes(make([]byte, 32))))
	return load, verify
}

// TestVerifySignatureWithNullNameAlgKey stops a guest from crashing the
// TPM with VerifySignature or CertifyCreation on a public key it loaded
// with LoadExternal in a hierarchy with a TPM_ALG_NULL nameAlg: the
// ticket's HMAC used the nameAlg, and crypto.Hash(0).New panicked. As the
// reference, VerifySignature returns a NULL ticket and CertifyCreation
// refuses any creation ticket (TPM_RC_TICKET).
func TestVerifySignatureWithNullNameAlgKey(t *testing.T) {
	d := newDual(t)
	load, _ := nullNameAlgVerifyCmds(t, 0)
	rsp := sameRC(t, d, load)
	if rcOf(rsp) != rcSuccess {
		t.Fatalf("LoadExternal: rc %#x", rcOf(rsp))
	}
	h := admBE32(rsp[10:])
	_, verify := nullNameAlgVerifyCmds(t, h)
	if rsp := sameResponse(t, d, verify); rcOf(rsp) != rcSuccess {
		t.Errorf("VerifySignature: rc %#x", rcOf(rsp))
	}
	for _, ticket := range [][]byte{nil, make([]byte, 32)} {
		sameRC(t, d, rawCommand(ccCertifyCreation, []uint32{rhNull, h}, 1, nil, b2b(nil), b2b(make([]byte, 32)),
			u16b(algNull), u16b(stCreation), u32b(rhOwner), b2b(ticket)))
	}
}
