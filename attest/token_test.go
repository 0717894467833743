package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/shieldvm/shieldvm/policy"
)

func testResult() *Result {
	return &Result{
		Status:     policy.Affirming,
		PolicyID:   "p1",
		Host:       HostClaims{ID: "host-1", Mode: ModeTPM},
		Trust:      TrustVector{InstanceIdentity: policy.Affirming, Hardware: policy.Affirming},
		ReleaseKey: []byte("host release key"),
		Challenge:  bytes.Repeat([]byte{1}, ChallengeSize),
		Facts:      map[string]string{"secure_boot": "true"},
	}
}

func TestTokenAttacks(t *testing.T) {
	clk := &clock{t: t0}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := NewTokenIssuer(key, IssuerConfig{Name: "hgs", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Issue(testResult())
	if err != nil {
		t.Fatal(err)
	}
	opts := TokenOptions{Issuer: "hgs", ReleaseKey: []byte("host release key"), Now: clk.Now}
	vt, err := VerifyToken(tok, &key.PublicKey, opts)
	if err != nil {
		t.Fatal(err)
	}
	if vt.Host.ID != "host-1" || vt.Status != policy.Affirming || vt.PolicyID != "p1" || vt.Facts["secure_boot"] != "true" {
		t.Errorf("claims %+v", vt.Claims)
	}
	t.Run("ExpiredTokenRejected", func(t *testing.T) {
		o := opts
		o.Now = func() time.Time { return t0.Add(DefaultTokenLifetime) }
		if _, err := VerifyToken(tok, &key.PublicKey, o); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("err = %v, want ErrTokenExpired", err)
		}
	})
	t.Run("TokenFromTheFutureRejected", func(t *testing.T) {
		o := opts
		o.Now = func() time.Time { return t0.Add(-time.Hour) }
		if _, err := VerifyToken(tok, &key.PublicKey, o); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("err = %v, want ErrTokenExpired", err)
		}
	})
	t.Run("OtherSignerRejected", func(t *testing.T) {
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		oi, _ := NewTokenIssuer(other, IssuerConfig{Name: "hgs", Now: clk.Now})
		forged, err := oi.Issue(testResult())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyToken(forged, &key.PublicKey, opts); !errors.Is(err, ErrTokenSignature) {
			t.Fatalf("err = %v, want ErrTokenSignature", err)
		}
	})
	t.Run("OtherKeyTypeRejected", func(t *testing.T) {
		_, edKey, _ := ed25519.GenerateKey(rand.Reader)
		oi, _ := NewTokenIssuer(edKey, IssuerConfig{Name: "hgs", Now: clk.Now})
		forged, _ := oi.Issue(testResult())
		if _, err := VerifyToken(forged, &key.PublicKey, opts); !errors.Is(err, ErrTokenSignature) {
			t.Fatalf("err = %v, want ErrTokenSignature", err)
		}
	})
	t.Run("OtherHostKeyRejected", func(t *testing.T) {
		o := opts
		o.ReleaseKey = []byte("another host's release key")
		if _, err := VerifyToken(tok, &key.PublicKey, o); !errors.Is(err, ErrTokenReleaseKey) {
			t.Fatalf("err = %v, want ErrTokenReleaseKey", err)
		}
	})
	t.Run("TamperedPayloadRejected", func(t *testing.T) {
		bad := bytes.Clone(tok)
		i := bytes.Index(bad, []byte("host-1"))
		bad[i] = 'H'
		if _, err := VerifyToken(bad, &key.PublicKey, opts); !errors.Is(err, ErrTokenSignature) {
			t.Fatalf("err = %v, want ErrTokenSignature", err)
		}
	})
	t.Run("OtherIssuerNameRejected", func(t *testing.T) {
		o := opts
		o.Issuer = "another-hgs"
		if _, err := VerifyToken(tok, &key.PublicKey, o); err == nil {
			t.Fatal("verified with another issuer name")
		}
	})
	t.Run("WarningNeedsOptIn", func(t *testing.T) {
		r := testResult()
		r.Status = policy.Warning
		w, err := iss.Issue(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyToken(w, &key.PublicKey, opts); !errors.Is(err, ErrTokenStatus) {
			t.Fatalf("err = %v, want ErrTokenStatus", err)
		}
		o := opts
		o.AcceptWarning = true
		if _, err := VerifyToken(w, &key.PublicKey, o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ContraindicatedNotIssued", func(t *testing.T) {
		r := testResult()
		r.Status = policy.Contraindicated
		if _, err := iss.Issue(r); !errors.Is(err, ErrNotHealthy) {
			t.Fatalf("err = %v, want ErrNotHealthy", err)
		}
	})
}

// TestTokenRoundTrip: any result issued verifies to the same claims.
func TestTokenRoundTrip(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	iss, _ := NewTokenIssuer(key, IssuerConfig{Now: func() time.Time { return t0 }})
	rapid.Check(t, func(t *rapid.T) {
		r := &Result{
			Status:     rapid.SampledFrom([]policy.Status{policy.Affirming, policy.Warning}).Draw(t, "status"),
			PolicyID:   rapid.String().Draw(t, "policy"),
			Host:       HostClaims{ID: rapid.String().Draw(t, "host"), Mode: ModeHostKey, AKName: rapid.SliceOf(rapid.Byte()).Draw(t, "ak")},
			ReleaseKey: rapid.SliceOfN(rapid.Byte(), 1, 100).Draw(t, "rk"),
			Facts:      rapid.MapOf(rapid.String(), rapid.String()).Draw(t, "facts"),
		}
		tok, err := iss.Issue(r)
		if err != nil {
			t.Fatal(err)
		}
		vt, err := VerifyToken(tok, key.Public(), TokenOptions{Now: func() time.Time { return t0 }, AcceptWarning: true, ReleaseKey: r.ReleaseKey})
		if err != nil {
			t.Fatal(err)
		}
		if vt.Status != r.Status || vt.PolicyID != r.PolicyID || vt.Host.ID != r.Host.ID || !bytes.Equal(vt.Host.AKName, r.Host.AKName) || len(vt.Facts) != len(r.Facts) {
			t.Fatalf("claims %+v for %+v", vt.Claims, r)
		}
	})
}

func TestChallengeProperties(t *testing.T) {
	clk := &clock{t: t0}
	c, _ := NewChallenger(bytes.Repeat([]byte{1}, 32), ChallengeConfig{Now: clk.Now})
	other, _ := NewChallenger(bytes.Repeat([]byte{2}, 32), ChallengeConfig{Now: clk.Now})
	ch, err := c.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(ch); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Check(ch); !errors.Is(err, ErrChallengeInvalid) {
		t.Fatalf("another service's challenge: %v", err)
	}
	rapid.Check(t, func(t *rapid.T) {
		i := rapid.IntRange(0, ChallengeSize-1).Draw(t, "byte")
		bit := rapid.IntRange(0, 7).Draw(t, "bit")
		bad := bytes.Clone(ch)
		bad[i] ^= 1 << bit
		if _, err := c.Check(bad); !errors.Is(err, ErrChallengeInvalid) {
			t.Fatalf("flipped bit %d of byte %d: %v", bit, i, err)
		}
	})
	if _, err := NewChallenger(make([]byte, 16), ChallengeConfig{}); err == nil {
		t.Error("short secret accepted")
	}
}
