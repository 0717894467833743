package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"

	"github.com/shieldvm/shieldvm/examples/hgs/server"
	"github.com/shieldvm/shieldvm/examples/internal/api"
	"github.com/shieldvm/shieldvm/keyprotector"
)

// A guardian service in a few lines: a store, a guardian, a token key and
// a challenge secret. A host that asks for a key without a health token is
// told to attest first (steps 1 and 2 of the protocol).
func ExampleNew() {
	guardian, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "fabric-hgs"})
	tokenKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	secret := make([]byte, 32)
	rand.Read(secret)
	svc, err := server.New(server.Config{
		Store:           &server.MemoryStore{},
		Guardian:        guardian,
		TokenKey:        tokenKey,
		ChallengeSecret: secret,
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	ts := httptest.NewTLSServer(svc.Handler())
	defer ts.Close()

	hostKey, _ := keyprotector.SuiteX25519.GenerateHostKey()
	owner, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "owner"})
	kp, _ := keyprotector.New(context.Background(), owner, []*keyprotector.Descriptor{guardian.Descriptor()}, &keyprotector.Config{})
	body, _ := api.Marshal(&api.ReleaseRequest{KeyProtector: kp.Marshal(), ReleaseKey: api.MarshalReleaseKey(hostKey.PublicKey())})
	resp, err := ts.Client().Post(ts.URL+api.PathRelease, api.ContentTypeCBOR, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var p api.Problem
	json.NewDecoder(resp.Body).Decode(&p)
	fmt.Println(resp.StatusCode, p.Code)
	// Output: 401 attestation_required
}
