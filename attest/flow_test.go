package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/shieldvm/shieldvm/attest/attesttest"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
)

// t0 is the fixed time of the tests.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

// testBoot is the log a simulated host "booted": firmware in PCR 0, the
// Secure Boot state in PCR 7, a boot loader in PCR 4, separators.
func testBoot() *attesttest.LogBuilder {
	b := attesttest.NewLogBuilder(measure.SHA256)
	b.Add(0, measure.EV_POST_CODE, []byte("firmware volume"))
	b.Add(7, measure.EV_EFI_ACTION, []byte("Secure Boot state"))
	for _, r := range []uint32{0, 1, 2, 3, 4, 5, 6, 7} {
		b.Add(r, measure.EV_SEPARATOR, []byte{0, 0, 0, 0})
	}
	b.Add(4, measure.EV_EFI_ACTION, []byte("boot loader"))
	return b
}

// env is a simulated host and a verifier that knows it.
type env struct {
	t        testing.TB
	clk      *clock
	att      *Attester
	boot     *attesttest.LogBuilder
	reg      *MemoryRegistry
	ver      *Verifier
	cfg      VerifierConfig
	release  []byte
	tokenKey *ecdsa.PrivateKey
	issuer   *TokenIssuer
}

// withSimulator runs f with a fresh simulator TPM booted with testBoot.
// The simulator is a process-wide singleton: simulator.Get serializes.
func withSimulator(t *testing.T, acfg AttesterConfig, f func(e *env)) {
	t.Helper()
	simulate(t, acfg, f)
}

func withSimulatorB(b *testing.B, f func(e *env)) {
	b.Helper()
	simulate(b, AttesterConfig{}, f)
}

func simulate(t testing.TB, acfg AttesterConfig, f func(e *env)) {
	t.Helper()
	simulateBoot(t, acfg, testBoot(), f)
}

func simulateBoot(t testing.TB, acfg AttesterConfig, boot *attesttest.LogBuilder, f func(e *env)) {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	tpm := transport.FromReadWriter(sim)
	if err := boot.Extend(tpm); err != nil {
		t.Fatal(err)
	}
	acfg.EventLog = func(context.Context) ([]byte, error) { return boot.Bytes(), nil }
	att, err := NewAttester(context.Background(), tpm, acfg)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	e := newEnv(t, boot)
	e.att = att
	ek, err := parseEKPublic(att.EKPublic())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.AddEK(ek.pub.Key, "host-1"); err != nil {
		t.Fatal(err)
	}
	f(e)
}

func newEnv(t testing.TB, boot *attesttest.LogBuilder) *env {
	clk := &clock{t: t0}
	ch, err := NewChallenger(bytes.Repeat([]byte{7}, 32), ChallengeConfig{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	vals := boot.Values()[measure.SHA256]
	pol := &policy.Policy{
		Version: 1,
		ID:      "test-pcrs",
		PCRs: map[string]map[string][]policy.Digest{"sha256": {
			"0": {vals[0]}, "4": {vals[4]}, "7": {vals[7]},
		}},
	}
	if err := pol.Check(); err != nil {
		t.Fatal(err)
	}
	reg := &MemoryRegistry{}
	cfg := VerifierConfig{Challenger: ch, Registry: reg, Policy: pol, Now: clk.Now}
	ver, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := NewTokenIssuer(tk, IssuerConfig{Name: "hgs.test", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, clk: clk, boot: boot, reg: reg, ver: ver, cfg: cfg, release: []byte("host release public key"), tokenKey: tk, issuer: iss}
}

// evidence runs the ModeTPM protocol and returns the encoded evidence.
func (e *env) evidence() []byte {
	e.t.Helper()
	ch, err := e.ver.NewTPMChallenge(e.att.EKPublic(), e.att.AKPublic())
	if err != nil {
		e.t.Fatal(err)
	}
	ev, err := e.att.AttestTPM(context.Background(), ch, e.release, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := ev.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) verify(b []byte) (*Result, error) {
	ev, err := ParseEvidence(b)
	if err != nil {
		return nil, err
	}
	return e.ver.Verify(context.Background(), ev)
}

func TestSimulatorTPMModeEndToEnd(t *testing.T) {
	for _, alg := range []AKAlgorithm{AKECCP256, AKRSA2048} {
		withSimulator(t, AttesterConfig{AK: alg}, func(e *env) {
			r, err := e.verify(e.evidence())
			if err != nil {
				t.Fatalf("AK %d: %v", alg, err)
			}
			if r.Status != policy.Affirming || r.Host.ID != "host-1" || r.Host.Mode != ModeTPM {
				t.Fatalf("result %v %+v", r.Status, r.Host)
			}
			if got := len(r.Log.Events()); got != len(e.boot.Events()) {
				t.Errorf("%d verified events, want %d", got, len(e.boot.Events()))
			}
			tok, err := e.issuer.Issue(r)
			if err != nil {
				t.Fatal(err)
			}
			vt, err := VerifyToken(tok, &e.tokenKey.PublicKey, TokenOptions{ReleaseKey: e.release, Now: e.clk.Now, Issuer: "hgs.test"})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(vt.ReleaseKey(), e.release) || vt.Host.ID != "host-1" || vt.Expiry != t0.Add(8*time.Hour).Unix() {
				t.Errorf("token claims %+v", vt.Claims)
			}
		})
	}
}

// TestAttacks runs each attack of the threat table against evidence from
// the simulator; each must be denied with its own error.
func TestAttacks(t *testing.T) {
	withSimulator(t, AttesterConfig{}, func(e *env) {
		good := e.evidence()
		mutate := func(f func(ev *Evidence)) []byte {
			ev, err := ParseEvidence(good)
			if err != nil {
				t.Fatal(err)
			}
			f(ev)
			b, err := ev.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		t.Run("UnregisteredEKDenied", func(t *testing.T) {
			ver, _ := NewVerifier(VerifierConfig{Challenger: e.cfg.Challenger, Registry: &MemoryRegistry{}, Policy: e.cfg.Policy})
			ev, _ := ParseEvidence(good)
			if _, err := ver.Verify(context.Background(), ev); !errors.Is(err, ErrUnregistered) {
				t.Fatalf("err = %v, want ErrUnregistered", err)
			}
		})
		t.Run("ExpiredChallengeDenied", func(t *testing.T) {
			defer func(old time.Time) { e.clk.t = old }(e.clk.t)
			e.clk.t = e.clk.t.Add(5*time.Minute + time.Second)
			if _, err := e.verify(good); !errors.Is(err, ErrChallengeExpired) {
				t.Fatalf("err = %v, want ErrChallengeExpired", err)
			}
		})
		t.Run("ReplayedChallengeDenied", func(t *testing.T) {
			cfg := e.cfg
			cfg.ReplayGuard = &MemoryReplayGuard{Now: e.clk.Now}
			ver, _ := NewVerifier(cfg)
			ev, _ := ParseEvidence(good)
			if _, err := ver.Verify(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			if _, err := ver.Verify(context.Background(), ev); !errors.Is(err, ErrChallengeReplayed) {
				t.Fatalf("second use: err = %v, want ErrChallengeReplayed", err)
			}
		})
		t.Run("ForgedChallengeDenied", func(t *testing.T) {
			b := mutate(func(ev *Evidence) { ev.Challenge[10] ^= 1 })
			if _, err := e.verify(b); !errors.Is(err, ErrChallengeInvalid) {
				t.Fatalf("err = %v, want ErrChallengeInvalid", err)
			}
		})
		t.Run("OtherReleaseKeyDenied", func(t *testing.T) {
			b := mutate(func(ev *Evidence) { ev.ReleaseKey = []byte("attacker release key") })
			if _, err := e.verify(b); !errors.Is(err, ErrQualifyingData) {
				t.Fatalf("err = %v, want ErrQualifyingData", err)
			}
		})
		t.Run("ForgedQuoteSignatureDenied", func(t *testing.T) {
			b := mutate(func(ev *Evidence) { ev.Quote.Attest[len(ev.Quote.Attest)-1] ^= 1 })
			if _, err := e.verify(b); !errors.Is(err, ErrSignature) {
				t.Fatalf("err = %v, want ErrSignature", err)
			}
		})
		t.Run("PCRValuesNotQuotedDenied", func(t *testing.T) {
			b := mutate(func(ev *Evidence) { ev.PCRs[measure.SHA256][7][0] ^= 1 })
			if _, err := e.verify(b); !errors.Is(err, ErrPCRDigest) {
				t.Fatalf("err = %v, want ErrPCRDigest", err)
			}
		})
		t.Run("LogChangedAfterQuoteDenied", func(t *testing.T) {
			b := mutate(func(ev *Evidence) {
				// Replace the boot loader event's digest with another's.
				l := attesttest.NewLogBuilder(measure.SHA256)
				for _, x := range e.boot.Events() {
					if bytes.Equal(x.Data, []byte("boot loader")) {
						l.Add(x.PCR, x.Type, []byte("another boot loader"))
						continue
					}
					l.AddDigests(x.PCR, x.Type, x.Data, x.Digests)
				}
				ev.EventLog = l.Bytes()
			})
			if _, err := e.verify(b); !errors.Is(err, ErrLog) || !errors.Is(err, measure.ErrMismatch) {
				t.Fatalf("err = %v, want ErrLog and measure.ErrMismatch", err)
			}
		})
		t.Run("ActivationWithoutTheTPMDenied", func(t *testing.T) {
			b := mutate(func(ev *Evidence) { ev.TPM.ActivationSecret = bytes.Repeat([]byte{1}, 32) })
			if _, err := e.verify(b); !errors.Is(err, ErrActivation) {
				t.Fatalf("err = %v, want ErrActivation", err)
			}
		})
		t.Run("OtherEKDenied", func(t *testing.T) {
			// The registered EK claimed for an AK whose credential was
			// made for another EK (here: the activation secret of the
			// real EK does not transfer to the SRK-like key).
			b := mutate(func(ev *Evidence) { ev.TPM.EKPublic = ev.TPM.EKPublic[:len(ev.TPM.EKPublic)-1] })
			if _, err := e.verify(b); err == nil {
				t.Fatal("verified with a damaged EK")
			}
		})
		t.Run("ModeNotAllowedDenied", func(t *testing.T) {
			b := mutate(func(ev *Evidence) {
				ev.Mode, ev.TPM, ev.Admin = ModeAdmin, nil, &AdminClaim{HostID: "host-1"}
			})
			if _, err := e.verify(b); !errors.Is(err, ErrModeNotAllowed) {
				t.Fatalf("err = %v, want ErrModeNotAllowed", err)
			}
		})
	})
}

// TestQuoteOverOtherPCRsDenied: a host that quotes PCRs 0-3 while its log
// also extends PCRs 4 and 7 is denied: the events of the unquoted
// registers could say anything.
func TestQuoteOverOtherPCRsDenied(t *testing.T) {
	withSimulator(t, AttesterConfig{PCRs: []uint{0, 1, 2, 3}}, func(e *env) {
		_, err := e.verify(e.evidence())
		if !errors.Is(err, ErrLog) {
			t.Fatalf("err = %v, want ErrLog", err)
		}
	})
}

// TestDebuggerBootDenied: a host whose firmware booted in UEFI debug mode
// presents authentic evidence; the verifier denies it with the reason and
// the event, and no token is issued.
func TestDebuggerBootDenied(t *testing.T) {
	boot := testBoot()
	boot.Add(7, measure.EV_EFI_ACTION, []byte("UEFI Debug Mode"))
	simulateBoot(t, AttesterConfig{}, boot, func(e *env) {
		pol := &policy.Policy{Version: 1, ID: "no-debug", HGS: &policy.HGSRules{UefiDebugDisabled: policy.Enforce}}
		if err := pol.Check(); err != nil {
			t.Fatal(err)
		}
		cfg := e.cfg
		cfg.Policy = pol
		e.ver, _ = NewVerifier(cfg)
		r, err := e.verify(e.evidence())
		var denied *DeniedError
		if !errors.As(err, &denied) || !errors.Is(err, ErrDenied) {
			t.Fatalf("err = %v, want a DeniedError", err)
		}
		if r == nil || r.Status != policy.Contraindicated || r.Trust.Configuration != policy.Contraindicated {
			t.Fatalf("result %+v", r)
		}
		f := denied.Verdict.Failed()
		if len(f) != 1 || f[0].Rule != "hgs.UefiDebugDisabled" || len(f[0].Events) != 1 || f[0].Events[0].PCR != 7 {
			t.Fatalf("failed rules %+v", f)
		}
		if _, err := e.issuer.Issue(r); !errors.Is(err, ErrNotHealthy) {
			t.Fatalf("Issue = %v, want ErrNotHealthy", err)
		}
	})
}

// TestChallengerAloneMakesTPMChallenges: a front end that holds only a
// Challenger (no registry, no policy) makes the ModeTPM challenge; a
// verifier replica whose Challenger shares the secret accepts the
// activation, and one with another secret refuses it.
func TestChallengerAloneMakesTPMChallenges(t *testing.T) {
	withSimulator(t, AttesterConfig{}, func(e *env) {
		front, err := NewChallenger(bytes.Repeat([]byte{7}, 32), ChallengeConfig{Now: e.clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := front.NewTPMChallenge(e.att.EKPublic(), e.att.AKPublic())
		if err != nil {
			t.Fatal(err)
		}
		ev, err := e.att.AttestTPM(context.Background(), ch, e.release, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.ver.Verify(context.Background(), ev); err != nil {
			t.Fatalf("replica sharing the secret: %v", err)
		}
		other, err := NewChallenger(bytes.Repeat([]byte{8}, 32), ChallengeConfig{Now: e.clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		cfg := e.cfg
		cfg.Challenger = other
		v2, err := NewVerifier(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v2.Verify(context.Background(), ev); !errors.Is(err, ErrChallengeInvalid) {
			t.Fatalf("replica with another secret: err = %v, want ErrChallengeInvalid", err)
		}
	})
}
