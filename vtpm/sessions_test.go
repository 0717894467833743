package vtpm

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"pgregory.net/rapid"
)

// sessionFixture is what the session scenarios need on a TPM: storage keys
// to salt with and a sealed object with an authValue.
type sessionFixture struct {
	eccSRK, rsaSRK *tpm2.CreatePrimaryResponse
	sealed         *tpm2.LoadResponse
	sealedAuth     []byte
}

func (f *sessionFixture) eccPub(t testing.TB) tpm2.TPMTPublic {
	p, err := f.eccSRK.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	return *p
}

func (f *sessionFixture) rsaPub(t testing.TB) tpm2.TPMTPublic {
	p, err := f.rsaSRK.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	return *p
}

// newSessionFixture creates an ECC and (if rsa) an RSA storage primary and
// loads a sealed object with authValue "sealed-auth" under the ECC one.
func newSessionFixture(t testing.TB, d transport.TPM, rsa bool, noDA bool) *sessionFixture {
	t.Helper()
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}
	f := &sessionFixture{sealedAuth: []byte("sealed-auth")}
	var err error
	f.eccSRK, err = tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(d)
	if err != nil {
		t.Fatalf("CreatePrimary(ECC): %v", err)
	}
	if rsa {
		f.rsaSRK, err = tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.RSASRKTemplate)}.Execute(d)
		if err != nil {
			t.Fatalf("CreatePrimary(RSA): %v", err)
		}
	}
	srk := tpm2.AuthHandle{Handle: f.eccSRK.ObjectHandle, Name: f.eccSRK.Name, Auth: pwAuth(nil)}
	sealed, err := tpm2.Create{
		ParentHandle: srk,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: f.sealedAuth},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("the disk key")}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true, NoDA: noDA},
		}),
	}.Execute(d)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	f.sealed, err = tpm2.Load{ParentHandle: srk, InPrivate: sealed.OutPrivate, InPublic: sealed.OutPublic}.Execute(d)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return f
}

func (f *sessionFixture) unseal(d transport.TPM, s tpm2.Session) ([]byte, error) {
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: f.sealed.ObjectHandle, Name: f.sealed.Name, Auth: s}}.Execute(d)
	if err != nil {
		return nil, err
	}
	return rsp.OutData.Buffer, nil
}

// TestHMACSessions unseals through go-tpm HMAC sessions of every kind the
// vTPM implements; go-tpm checks each response HMAC and decrypts the
// encrypted responses, so a success is an interoperable session.
func TestHMACSessions(t *testing.T) {
	v := newTestTPM(t)
	f := newSessionFixture(t, v, true, true)
	auth := tpm2.Auth(f.sealedAuth)
	sealedH := tpm2.TPMHandle(f.sealed.ObjectHandle)
	cases := map[string][]tpm2.AuthOption{
		"unsalted unbound":     {auth},
		"ECC salted":           {auth, tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t))},
		"RSA salted":           {auth, tpm2.Salted(f.rsaSRK.ObjectHandle, f.rsaPub(t))},
		"bound to the object":  {auth, tpm2.Bound(sealedH, f.sealed.Name, f.sealedAuth)},
		"bound to owner":       {auth, tpm2.Bound(tpm2.TPMRHOwner, tpm2.TPM2BName{Buffer: handleBytes(rhOwner)}, nil)},
		"salted bound AES-128": {auth, tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t)), tpm2.Bound(sealedH, f.sealed.Name, f.sealedAuth), tpm2.AESEncryption(128, tpm2.EncryptOut)},
		"AES-256 encrypt out":  {auth, tpm2.AESEncryption(256, tpm2.EncryptOut)},
		"RSA salted AES-128":   {auth, tpm2.Salted(f.rsaSRK.ObjectHandle, f.rsaPub(t)), tpm2.AESEncryption(128, tpm2.EncryptOut)},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			for _, hash := range []tpm2.TPMIAlgHash{tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA384} {
				nonce := 16
				got, err := f.unseal(v, tpm2.HMAC(hash, nonce, opts...))
				if err != nil {
					t.Fatalf("hash %v: Unseal: %v", hash, err)
				}
				if string(got) != "the disk key" {
					t.Fatalf("hash %v: Unseal = %q", hash, got)
				}
			}
		})
	}
	// The one-shot sessions were flushed after use (continueSession
	// clear).
	if n := len(v.sessions); n != 0 {
		t.Errorf("%d sessions left", n)
	}
}

// TestHMACSessionReuse uses one HMAC session for many commands: the nonces
// roll on every use, and a stale HMAC (computed with an old nonceTPM) is
// refused.
func TestHMACSessionReuse(t *testing.T) {
	v := newTestTPM(t)
	f := newSessionFixture(t, v, false, true)
	s, closeSession, err := tpm2.HMACSession(v, tpm2.TPMAlgSHA256, 32, tpm2.Auth(f.sealedAuth),
		tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t)), tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		t.Fatal(err)
	}
	defer closeSession()
	var nonces [][]byte
	for i := 0; i < 5; i++ {
		got, err := f.unseal(v, s)
		if err != nil || string(got) != "the disk key" {
			t.Fatalf("use %d: Unseal = %q, %v", i, got, err)
		}
		nonces = append(nonces, slices.Clone(s.NonceTPM().Buffer))
	}
	for i := 1; i < len(nonces); i++ {
		if bytes.Equal(nonces[i], nonces[i-1]) {
			t.Fatalf("nonceTPM did not roll at use %d", i)
		}
	}
	if len(v.sessions) != 1 {
		t.Errorf("%d sessions, want 1", len(v.sessions))
	}
}

// TestParameterEncryption writes and reads an NV index and creates an
// object through sessions that encrypt the command's first parameter
// (decrypt), the response's (encrypt) or both, including sessions that
// only encrypt and authorize nothing.
func TestParameterEncryption(t *testing.T) {
	v := newTestTPM(t)
	f := newSessionFixture(t, v, false, true)
	nvScenario(t, v, f)
}

// nvScenario defines an NV index with an authValue and writes and reads
// it through parameter-encrypted sessions.
func nvScenario(t testing.TB, d transport.TPM, f *sessionFixture) {
	t.Helper()
	const idx = tpm2.TPMHandle(0x01500020)
	nvAuth := []byte("nv-auth")
	salt := tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t))
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, salt, tpm2.AESEncryption(128, tpm2.EncryptIn))}
	_, err := tpm2.NVDefineSpace{
		AuthHandle: owner,
		Auth:       tpm2.TPM2BAuth{Buffer: nvAuth},
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{AuthWrite: true, AuthRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
			DataSize:   64,
		}),
	}.Execute(d)
	if err != nil {
		t.Fatalf("NV_DefineSpace with an encrypted authValue: %v", err)
	}
	pub, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	nvH := func(s tpm2.Session) tpm2.AuthHandle {
		return tpm2.AuthHandle{Handle: idx, Name: pub.NVName, Auth: s}
	}
	secret := []byte("a secret that must not cross the bus in clear")
	_, err = tpm2.NVWrite{
		AuthHandle: nvH(tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(nvAuth), salt, tpm2.AESEncryption(128, tpm2.EncryptIn))),
		NVIndex:    tpm2.NamedHandle{Handle: idx, Name: pub.NVName},
		Data:       tpm2.TPM2BMaxNVBuffer{Buffer: secret},
	}.Execute(d)
	if err != nil {
		t.Fatalf("NV_Write: %v", err)
	}
	pub, _ = tpm2.NVReadPublic{NVIndex: idx}.Execute(d) // the name changed with TPMA_NV_WRITTEN
	read := func(s tpm2.Session, extra ...tpm2.Session) []byte {
		t.Helper()
		rsp, err := tpm2.NVRead{AuthHandle: nvH(s), NVIndex: tpm2.NamedHandle{Handle: idx, Name: pub.NVName}, Size: uint16(len(secret))}.Execute(d, extra...)
		if err != nil {
			t.Fatalf("NV_Read: %v", err)
		}
		return rsp.Data.Buffer
	}
	if got := read(tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(nvAuth), salt, tpm2.AESEncryption(128, tpm2.EncryptOut))); !bytes.Equal(got, secret) {
		t.Fatalf("NV_Read (encrypt session) = %q", got)
	}
	// A password authorizes; a second, salted session only encrypts.
	if got := read(pwAuth(nvAuth), tpm2.HMAC(tpm2.TPMAlgSHA256, 16, salt, tpm2.AESEncryption(128, tpm2.EncryptOut))); !bytes.Equal(got, secret) {
		t.Fatalf("NV_Read (separate encrypt session) = %q", got)
	}
	if got := read(tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(nvAuth)), tpm2.HMAC(tpm2.TPMAlgSHA384, 16, salt, tpm2.AESEncryption(256, tpm2.EncryptOut))); !bytes.Equal(got, secret) {
		t.Fatalf("NV_Read (HMAC session and encrypt session) = %q", got)
	}
	tpm2.NVUndefineSpace{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}, NVIndex: tpm2.NamedHandle{Handle: idx, Name: pub.NVName}}.Execute(d)
}

// rcErr extracts the TPM response code of a go-tpm error.
func rcErr(err error) uint32 {
	var rc tpm2.TPMRC
	if errors.As(err, &rc) {
		return uint32(rc)
	}
	return 0xFFFFFFFF
}

// TestKDFaMatchesGoTPM checks the vTPM's KDFa against go-tpm's for random
// keys, labels, contexts and sizes.
func TestKDFaMatchesGoTPM(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		alg := rapid.SampledFrom([]uint16{algSHA1, algSHA256, algSHA384, algSHA512}).Draw(t, "alg")
		key := rapid.SliceOfN(rapid.Byte(), 0, 130).Draw(t, "key")
		label := rapid.StringMatching(`[A-Z]{1,24}`).Draw(t, "label")
		u := rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "u")
		v := rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "v")
		bits := 8 * rapid.IntRange(1, 300).Draw(t, "bytes")
		got := kdfa(alg, key, label, u, v, bits)
		want := tpm2.KDFa(hashOf(alg), key, label, u, v, bits)
		if !bytes.Equal(got, want) {
			t.Fatalf("kdfa %x, go-tpm %x", got, want)
		}
	})
}

// TestParameterEncryptionRoundTrip: for AES-128, AES-256 and XOR and every
// session hash, decrypting what was encrypted with the same key and
// nonces gives the plaintext back, and the ciphertext differs from it.
func TestParameterEncryptionRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := &session{
			hashAlg: rapid.SampledFrom([]uint16{algSHA1, algSHA256, algSHA384, algSHA512}).Draw(t, "hash"),
			symAlg:  rapid.SampledFrom([]uint16{algAES, algXOR}).Draw(t, "sym"),
		}
		if s.symAlg == algAES {
			s.symBits = rapid.SampledFrom([]uint16{128, 256}).Draw(t, "bits")
		}
		key := rapid.SliceOfN(rapid.Byte(), 0, 128).Draw(t, "key")
		newer := rapid.SliceOfN(rapid.Byte(), 16, 64).Draw(t, "newer")
		older := rapid.SliceOfN(rapid.Byte(), 16, 64).Draw(t, "older")
		plain := rapid.SliceOfN(rapid.Byte(), 1, maxNVBufferSize).Draw(t, "plain")
		b := slices.Clone(plain)
		cryptParam(s, key, newer, older, b, true)
		if len(plain) >= 8 && bytes.Equal(b, plain) {
			t.Fatal("encryption left the parameter unchanged")
		}
		cryptParam(s, key, newer, older, b, false)
		if !bytes.Equal(b, plain) {
			t.Fatalf("round trip %x, want %x", b, plain)
		}
	})
}
