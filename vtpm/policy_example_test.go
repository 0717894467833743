package vtpm_test

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/shieldvm/shieldvm/vtpm"
)

// Example_sealToPCRPolicy seals a disk key to the current value of PCR 7
// with go-tpm, unseals it through a PolicyPCR session, and shows that the
// unseal fails once PCR 7 changes.
func Example_sealToPCRPolicy() {
	v, err := vtpm.New(vtpm.Config{VMID: "vm-42"})
	if err != nil {
		panic(err)
	}
	defer v.Close()
	pcrs := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(7)},
	}}

	// The policy: PolicyPCR of PCR 7 as it is now, computed by the TPM in
	// a trial session.
	trial, closeTrial, err := tpm2.PolicySession(v, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
	if err != nil {
		panic(err)
	}
	if _, err := (tpm2.PolicyPCR{PolicySession: trial.Handle(), Pcrs: pcrs}).Execute(v); err != nil {
		panic(err)
	}
	digest, err := tpm2.PolicyGetDigest{PolicySession: trial.Handle()}.Execute(v)
	if err != nil {
		panic(err)
	}
	closeTrial()

	// Seal under the SRK; without userWithAuth only the policy opens it.
	srk, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(v)
	if err != nil {
		panic(err)
	}
	parent := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
	sealed, err := tpm2.Create{
		ParentHandle: parent,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("disk key")}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true},
			AuthPolicy:       digest.PolicyDigest,
		}),
	}.Execute(v)
	if err != nil {
		panic(err)
	}
	obj, err := tpm2.Load{ParentHandle: parent, InPrivate: sealed.OutPrivate, InPublic: sealed.OutPublic}.Execute(v)
	if err != nil {
		panic(err)
	}

	unseal := func() ([]byte, error) {
		s, closeSession, err := tpm2.PolicySession(v, tpm2.TPMAlgSHA256, 16)
		if err != nil {
			return nil, err
		}
		defer closeSession()
		if _, err := (tpm2.PolicyPCR{PolicySession: s.Handle(), Pcrs: pcrs}).Execute(v); err != nil {
			return nil, err
		}
		rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: s}}.Execute(v)
		if err != nil {
			return nil, err
		}
		return rsp.OutData.Buffer, nil
	}
	secret, err := unseal()
	fmt.Printf("unsealed %q, error %v\n", secret, err)

	// Something else boots: PCR 7 changes and the policy no longer holds.
	d := sha256.Sum256([]byte("another bootloader"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: 7, Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}).Execute(v); err != nil {
		panic(err)
	}
	_, err = unseal()
	fmt.Println("after PCR_Extend, policy check failed:", errors.Is(err, tpm2.TPMRCPolicyFail))
	// Output:
	// unsealed "disk key", error <nil>
	// after PCR_Extend, policy check failed: true
}
