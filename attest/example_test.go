package attest_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/policy"
)

// Verify a stored quote and its event log: the real Windows Server boot
// of a GCE Shielded VM, whose quote carries no qualifying data and is
// signed with SHA-1.
func ExampleVerifyBoot() {
	data, _ := os.ReadFile("testdata/windows_gcp_shielded_vm.json")
	e, err := attest.ImportGoAttestation(data)
	if err != nil {
		fmt.Println(err)
		return
	}
	ak, err := attest.ParseAKPublic(e.AKPublic)
	if err != nil {
		fmt.Println(err)
		return
	}
	boot, err := attest.VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, attest.BootOptions{
		Quote: attest.QuoteOptions{QualifyingData: nil, InsecureAllowSHA1: true},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("quoted:", boot.Quote.Selection[0].Alg, boot.Quote.Selection[0].Registers())
	fmt.Println("verified events:", boot.Log.NumEvents())

	// The same quote offered as the answer to a challenge is refused.
	_, err = attest.VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, attest.BootOptions{
		Quote: attest.QuoteOptions{QualifyingData: []byte("a fresh nonce"), InsecureAllowSHA1: true},
	})
	fmt.Println(errors.Is(err, attest.ErrQualifyingData))
	// Output:
	// quoted: sha1 [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23]
	// verified events: 21
	// true
}

// Challenges are stateless: any replica with the secret checks them.
func ExampleChallenger() {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	secret := bytes.Repeat([]byte{0x42}, 32)
	issuer, _ := attest.NewChallenger(secret, attest.ChallengeConfig{Now: func() time.Time { return now }})
	replica, _ := attest.NewChallenger(secret, attest.ChallengeConfig{Now: func() time.Time { return now.Add(6 * time.Minute) }})

	ch, _ := issuer.New()
	_, err := issuer.Check(ch)
	fmt.Println(len(ch), err)
	_, err = replica.Check(ch)
	fmt.Println(errors.Is(err, attest.ErrChallengeExpired))
	// Output:
	// 57 <nil>
	// true
}

// Issue a health token for a verified result, and verify it as the key
// protection side does before releasing a key to the host.
func ExampleVerifyToken() {
	now := func() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) }
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	issuer, _ := attest.NewTokenIssuer(key, attest.IssuerConfig{Name: "hgs.example", Now: now})
	release := []byte("host release public key")
	tok, err := issuer.Issue(&attest.Result{
		Status:     policy.Affirming,
		PolicyID:   "fabric-2025",
		Host:       attest.HostClaims{ID: "host-1", Mode: attest.ModeTPM},
		ReleaseKey: release,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	t, err := attest.VerifyToken(tok, key.Public(), attest.TokenOptions{Issuer: "hgs.example", ReleaseKey: release, Now: now})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(t.Host.ID, t.Host.Mode, t.Status, t.PolicyID, time.Unix(t.Expiry, 0).UTC())
	fmt.Printf("release key %q\n", t.ReleaseKey())

	_, err = attest.VerifyToken(tok, key.Public(), attest.TokenOptions{ReleaseKey: []byte("another host"), Now: now})
	fmt.Println(errors.Is(err, attest.ErrTokenReleaseKey))
	// Output:
	// host-1 tpm affirming fabric-2025 2025-06-01 20:00:00 +0000 UTC
	// release key "host release public key"
	// true
}

// The quote's qualifying data binds the challenge and the release key:
// SHA-256(challenge ‖ release key), here of 57 zero bytes and "release key"
// (python3 -c "import hashlib; print(hashlib.sha256(bytes(57)+b'release key').hexdigest())").
func ExampleQualifyingData() {
	ch := make([]byte, attest.ChallengeSize)
	fmt.Printf("%x\n", attest.QualifyingData(ch, []byte("release key"))[:8])
	// Output:
	// 60c6bf56d2c8fcaa
}
