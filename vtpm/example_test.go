package vtpm_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/google/go-tpm-tools/client"
	legacy "github.com/google/go-tpm/legacy/tpm2"

	"github.com/google/go-tpm/tpm2"
	"github.com/shieldvm/shieldvm/vtpm"
)

func ExampleNew() {
	v, err := vtpm.New(vtpm.Config{VMID: "vm-42"})
	if err != nil {
		panic(err)
	}
	defer v.Close()
	digest := sha256.Sum256([]byte("kernel"))
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(8), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:]}}},
	}.Execute(v)
	if err != nil {
		panic(err)
	}
	rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(8)},
	}}}.Execute(v)
	if err != nil {
		panic(err)
	}
	fmt.Printf("PCR 8: %x\n", rsp.PCRValues.Digests[0].Buffer[:8])
	// Output: PCR 8: 457040d352c9be38
}

func ExampleOpen() {
	var key [32]byte // in shieldvm, derived from the VM's transport key
	v, _ := vtpm.New(vtpm.Config{VMID: "vm-42"})
	blob, err := v.Seal(&key)
	if err != nil {
		panic(err)
	}
	gen := v.Generation()
	v.Close()

	w, err := vtpm.Open(blob, &key, vtpm.OpenConfig{VMID: "vm-42", MinGeneration: gen})
	if err != nil {
		panic(err)
	}
	defer w.Close()
	fmt.Println("opened generation", w.Generation())

	_, err = vtpm.Open(blob, &key, vtpm.OpenConfig{VMID: "vm-43"})
	fmt.Println(errors.Is(err, vtpm.ErrWrongVM))
	// Output:
	// opened generation 1
	// true
}

func ExampleTPM_ReadWriter() {
	v, err := vtpm.New(vtpm.Config{VMID: "vm-42"})
	if err != nil {
		panic(err)
	}
	defer v.Close()
	ak, err := client.AttestationKeyECC(v.ReadWriter())
	if err != nil {
		panic(err)
	}
	defer ak.Close()
	q, err := ak.Quote(legacy.PCRSelection{Hash: legacy.AlgSHA256, PCRs: []int{0, 7}}, []byte("nonce"))
	if err != nil {
		panic(err)
	}
	fmt.Println("quote over", len(q.GetPcrs().GetPcrs()), "PCRs, verified by go-tpm-tools")
	// Output: quote over 2 PCRs, verified by go-tpm-tools
}
