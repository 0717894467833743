package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/examples/internal/api"
	"github.com/shieldvm/shieldvm/keyprotector"
	"github.com/shieldvm/shieldvm/policy"
)

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

func newService(t testing.TB, clk *clock) (*Service, *DirStore) {
	t.Helper()
	store, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "hgs", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	tk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := New(Config{
		Store: store, Guardian: g, TokenKey: tk, ChallengeSecret: bytes.Repeat([]byte{9}, 32),
		Logger: slog.New(slog.DiscardHandler), Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	pol := &policy.Policy{Version: policy.Version, ID: "p", PCRs: map[string]map[string][]policy.Digest{"sha256": {"0": {make(policy.Digest, 32)}}}}
	doc, err := pol.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetPolicy(context.Background(), doc); err != nil {
		t.Fatal(err)
	}
	return s, store
}

func TestConfigRequired(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New accepted an empty config")
	}
	clk := &clock{t: time.Now()}
	s, store := newService(t, clk)
	cfg := s.cfg
	cfg.ChallengeSecret = make([]byte, 31)
	if _, err := New(cfg); err == nil {
		t.Fatal("New accepted a 31-byte challenge secret")
	}
	_ = store
}

// TestExpiredTokenRefused: a token is refused once its lifetime is over.
func TestExpiredTokenRefused(t *testing.T) {
	clk := &clock{t: time.Now()}
	s, _ := newService(t, clk)
	hk, _ := keyprotector.SuiteX25519.GenerateHostKey()
	rk := api.MarshalReleaseKey(hk.PublicKey())
	tok, err := s.issuer.Issue(&attest.Result{Status: policy.Affirming, PolicyID: "p", Host: attest.HostClaims{ID: "h", Mode: attest.ModeHostKey}, ReleaseKey: rk, Challenge: make([]byte, attest.ChallengeSize)})
	if err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(attest.DefaultTokenLifetime + time.Second)
	body, _ := api.Marshal(&api.ReleaseRequest{KeyProtector: []byte{1}, Token: tok, ReleaseKey: rk})
	rec := do(s, "POST", api.PathRelease, api.ContentTypeCBOR, body)
	if rec.Code != 401 || problemCode(t, rec) != api.CodeTokenExpired {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
}

func do(s *Service, method, path, ctype string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

func problemCode(t testing.TB, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var p api.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("not a problem document: %q", rec.Body.String())
	}
	return p.Code
}

func TestStoreConflictsAndRollback(t *testing.T) {
	ctx := context.Background()
	store, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der := func(k *ecdsa.PrivateKey) []byte {
		h, _ := attest.KeyDigest(k.Public())
		_ = h
		b, _ := marshalPKIX(k)
		return b
	}
	h1 := &Host{ID: "a", Mode: attest.ModeHostKey, Key: der(k1)}
	if err := store.PutHost(ctx, h1); err != nil {
		t.Fatal(err)
	}
	if err := store.PutHost(ctx, h1); err != nil {
		t.Fatalf("registering again: %v", err)
	}
	for name, h := range map[string]*Host{
		"same id, other key":   {ID: "a", Mode: attest.ModeHostKey, Key: der(k2)},
		"same key, other id":   {ID: "b", Mode: attest.ModeHostKey, Key: der(k1)},
		"same key, other mode": {ID: "a", Mode: attest.ModeTPM, Key: der(k1)},
	} {
		if err := store.PutHost(ctx, h); !errors.Is(err, ErrConflict) {
			t.Errorf("%s: %v, want ErrConflict", name, err)
		}
	}
	if _, err := store.Host(ctx, [32]byte{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown host: %v", err)
	}
	var id keyprotector.ID
	owner := keyprotector.KeyID{1}
	if err := store.Advance(ctx, id, keyprotector.State{Owner: owner, Generation: 2, AuthorizationVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if err := store.Advance(ctx, id, keyprotector.State{Owner: owner, Generation: 1, AuthorizationVersion: 1}); !errors.Is(err, keyprotector.ErrRollback) {
		t.Errorf("older generation: %v", err)
	}
	if err := store.Advance(ctx, id, keyprotector.State{Owner: keyprotector.KeyID{2}, Generation: 3, AuthorizationVersion: 1}); !errors.Is(err, keyprotector.ErrOwnerChanged) {
		t.Errorf("other owner: %v", err)
	}
	if err := store.Advance(ctx, id, keyprotector.State{Owner: owner, Generation: 3, AuthorizationVersion: 1}); err != nil {
		t.Errorf("newer: %v", err)
	}
}

// FuzzHandler sends arbitrary bodies to every endpoint: the answer is
// never a 5xx and every error is a problem document.
func FuzzHandler(f *testing.F) {
	files, _ := filepath.Glob("../../internal/api/testdata/*.cbor")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for ep := range byte(len(endpoints)) {
			f.Add(ep, b)
		}
	}
	f.Add(byte(5), []byte(`{"version":1,"id":"x","pcrs":{"sha256":{"0":["00"]}}}`))
	f.Add(byte(6), []byte("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"))
	clk := &clock{t: time.Now()}
	s, _ := newService(f, clk)
	s.cfg.AdminTokenSHA256 = sha256.Sum256([]byte("fuzz-admin"))
	h := s.Handler()
	f.Fuzz(func(t *testing.T, ep byte, body []byte) {
		e := endpoints[int(ep)%len(endpoints)]
		req := httptest.NewRequest(e.method, e.path, bytes.NewReader(body))
		req.Header.Set("Content-Type", e.ctype)
		req.Header.Set("Authorization", "Bearer fuzz-admin")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", e.method, e.path, rec.Code, rec.Body.String())
		}
		if rec.Code >= 400 {
			problemCode(t, rec)
		}
		io.Copy(io.Discard, rec.Body)
	})
}

var endpoints = []struct{ method, path, ctype string }{
	{http.MethodPost, api.PathChallenge, api.ContentTypeCBOR},
	{http.MethodPost, api.PathAttest, api.ContentTypeCBOR},
	{http.MethodPost, api.PathRelease, api.ContentTypeCBOR},
	{http.MethodGet, api.PathGuardian, ""},
	{http.MethodPost, api.PathRelease, "application/json"},
	{http.MethodPut, api.PathAdminPolicy, api.ContentTypeJSON},
	{http.MethodPut, api.PathAdminHosts + "/h", api.ContentTypePEM},
}

func marshalPKIX(k *ecdsa.PrivateKey) ([]byte, error) { return x509.MarshalPKIXPublicKey(k.Public()) }
