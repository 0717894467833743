package vtpm_test

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/shieldvm/shieldvm/vtpm"
)

// A guest that does not trust the path to its TPM salts its sessions with
// a key the TPM holds, so that authorization values and secrets cross the
// bus only under HMACs and parameter encryption: here a secret is sealed
// with its sensitive data encrypted on the way in, and unsealed with the
// data encrypted on the way out.
func Example_saltedSession() {
	v, err := vtpm.New(vtpm.Config{VMID: "vm-42"})
	if err != nil {
		panic(err)
	}
	defer v.Close()
	srk, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(v)
	if err != nil {
		panic(err)
	}
	srkPub, err := srk.OutPublic.Contents()
	if err != nil {
		panic(err)
	}
	// A session salted with the storage key (ECDH), encrypting the first
	// command parameter, the first response parameter or both with
	// AES-128-CFB. (Only commands whose first parameter is a TPM2B can
	// have it encrypted: Unseal takes none.)
	salted := func(auth []byte, dir tpm2.AuthOption) tpm2.Session {
		return tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(auth), tpm2.Salted(srk.ObjectHandle, *srkPub), dir)
	}
	inOut := tpm2.AESEncryption(128, tpm2.EncryptInOut)
	out := tpm2.AESEncryption(128, tpm2.EncryptOut)
	parent := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: salted(nil, inOut)}
	sealed, err := tpm2.Create{
		ParentHandle: parent,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: []byte("passphrase")},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("disk key")}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true},
		}),
	}.Execute(v)
	if err != nil {
		panic(err)
	}
	parent.Auth = salted(nil, inOut)
	obj, err := tpm2.Load{ParentHandle: parent, InPrivate: sealed.OutPrivate, InPublic: sealed.OutPublic}.Execute(v)
	if err != nil {
		panic(err)
	}
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: salted([]byte("passphrase"), out)}}.Execute(v)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", rsp.OutData.Buffer)

	// A wrong passphrase fails the HMAC and counts towards lockout.
	_, err = tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: salted([]byte("guess"), out)}}.Execute(v)
	fmt.Println(err)
	// Output:
	// disk key
	// TPM_RC_AUTH_FAIL (session 1): the authorization HMAC check failed and DA counter incremented
}
