package keyprotector_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"

	"github.com/shieldvm/shieldvm/keyprotector"
)

// The whole life of a key protector: the owner makes it for a VM and a
// fabric guardian service; at VM start the service releases TK to an
// attested host, re-keying it; the host opens the release and derives its
// vTPM state key.
func Example() {
	ctx := context.Background()
	owner, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "tenant-owner"})
	if err != nil {
		log.Fatal(err)
	}
	hgs, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "hgs.fabric.example"})
	if err != nil {
		log.Fatal(err)
	}

	// The owner makes the key protector; it travels with the VM.
	kp, err := keyprotector.New(ctx, owner, []*keyprotector.Descriptor{hgs.Descriptor()}, nil)
	if err != nil {
		log.Fatal(err)
	}

	// The host's release key; its public half is in the health token.
	hostKey, err := keyprotector.SuiteX25519.GenerateHostKey()
	if err != nil {
		log.Fatal(err)
	}
	token := []byte("a verified health token")
	host := &keyprotector.Host{
		ReleaseKey: hostKey.PublicKey(),
		Binding:    keyprotector.Binding{TokenHash: sha256.Sum256(token), Nonce: []byte("challenge nonce")},
		Verdict:    keyprotector.VerdictAffirming,
		PolicyID:   "baseline",
	}

	// The key protection service releases TK, and TK' at the next generation.
	response, err := keyprotector.Release(ctx, kp, hgs, host, nil)
	if err != nil {
		log.Fatal(err)
	}

	// The host opens it.
	released, err := keyprotector.Open(response, kp, hostKey, &host.Binding)
	if err != nil {
		log.Fatal(err)
	}
	defer released.Destroy()
	stateKey := released.Next.Derive(keyprotector.LabelVTPMState)
	fmt.Println("generation:", released.NextKeyProtector.Generation())
	fmt.Println("vTPM state key bytes:", len(stateKey))

	// Another host, with another key, cannot open the same response.
	thief, _ := keyprotector.SuiteX25519.GenerateHostKey()
	_, err = keyprotector.Open(response, kp, thief, &host.Binding)
	fmt.Println("thief:", errors.Is(err, keyprotector.ErrUnwrap))
	// Output:
	// generation: 1
	// vTPM state key bytes: 32
	// thief: true
}

func ExampleKeyProtector_Grant() {
	ctx := context.Background()
	owner, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "owner"})
	hgs1, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "hgs-1"})
	hgs2, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "hgs-2", SignatureAlgorithm: keyprotector.SignatureEdDSA})
	kp, err := keyprotector.New(ctx, owner, []*keyprotector.Descriptor{hgs1.Descriptor()}, nil)
	if err != nil {
		log.Fatal(err)
	}
	// Only the owner may change the list.
	_, err = kp.Grant(ctx, hgs1, hgs2.Descriptor(), nil)
	fmt.Println("grant by hgs-1:", err)
	kp, err = kp.Grant(ctx, owner, hgs2.Descriptor(), nil)
	if err != nil {
		log.Fatal(err)
	}
	kp, err = kp.Revoke(ctx, owner, hgs1.Descriptor().KeyID(), nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range kp.Guardians() {
		fmt.Println(d.Name())
	}
	fmt.Println("authorization version:", kp.AuthorizationVersion())
	_, err = kp.Unwrap(ctx, hgs1, nil)
	var nl *keyprotector.NotListedError
	fmt.Println("hgs-1 not listed:", errors.As(err, &nl))
	// Output:
	// grant by hgs-1: keyprotector: only the owner may do this
	// owner
	// hgs-2
	// authorization version: 3
	// hgs-1 not listed: true
}

func ExampleTransportKey_Derive() {
	ctx := context.Background()
	owner, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "owner", Suite: keyprotector.SuiteMLKEM768X25519})
	kp, _ := keyprotector.New(ctx, owner, nil, nil)
	tk, err := kp.Unwrap(ctx, owner, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tk.Destroy()
	a, b := tk.Derive(keyprotector.LabelVTPMState), tk.Derive(keyprotector.LabelMigration)
	fmt.Println(len(a), a != b, kp.PostQuantum())
	// Output: 32 true true
}

func ExampleMemoryStore() {
	ctx := context.Background()
	owner, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "owner"})
	hgs, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "hgs"})
	kp, _ := keyprotector.New(ctx, owner, []*keyprotector.Descriptor{hgs.Descriptor()}, nil)
	hostKey, _ := keyprotector.SuiteX25519.GenerateHostKey()
	host := &keyprotector.Host{ReleaseKey: hostKey.PublicKey(), Verdict: keyprotector.VerdictAffirming}
	store := &keyprotector.MemoryStore{}
	cfg := &keyprotector.ReleaseConfig{Store: store}

	resp, _ := keyprotector.Release(ctx, kp, hgs, host, cfg) // generation 0
	r, _ := keyprotector.Open(resp, kp, hostKey, &host.Binding)
	if _, err := keyprotector.Release(ctx, r.NextKeyProtector, hgs, host, cfg); err != nil { // generation 1
		log.Fatal(err)
	}
	// The generation 0 key protector, restored from a backup:
	_, err := keyprotector.Release(ctx, kp, hgs, host, cfg)
	fmt.Println(errors.Is(err, keyprotector.ErrRollback))
	// Output: true
}

func ExampleNewShieldingData() {
	ctx := context.Background()
	owner, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "owner"})
	hgs, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "hgs"})
	trusted := keyprotector.Template{Name: "ws2025", DiskDigest: sha256.Sum256([]byte("disk")), Signer: sha256.Sum256([]byte("signer"))}
	sd, err := keyprotector.NewShieldingData(ctx, owner, []*keyprotector.Descriptor{hgs.Descriptor()}, &keyprotector.ShieldingContents{
		Secrets:   map[string][]byte{"admin-password": []byte("s3cret")},
		Templates: []keyprotector.Template{trusted},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	c, err := sd.Open(ctx, owner, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.CheckTemplate(trusted.DiskDigest, trusted.Signer))
	fmt.Println(c.CheckTemplate(sha256.Sum256([]byte("infected disk")), trusted.Signer) != nil)
	// Output:
	// <nil>
	// true
}
