package keyprotector

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReleaseRules: the owner's signed rules decide which verdicts and
// policies get the key.
func TestReleaseRules(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, SuiteX25519)
	warnOK, err := New(ctx, f.owner, []*Descriptor{f.fabric.Descriptor()}, &Config{Now: fixedNow, Rules: Rules{MinVerdict: VerdictWarning, PolicyIDs: []string{"strict", "baseline"}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := warnOK.Rules(); r.MinVerdict != VerdictWarning || len(r.PolicyIDs) != 2 || r.PolicyIDs[0] != "baseline" {
		t.Fatalf("rules %+v", r)
	}
	for _, tc := range []struct {
		name    string
		kp      *KeyProtector
		verdict Verdict
		policy  string
		ok      bool
	}{
		{"affirming on default rules", f.kp, VerdictAffirming, "any", true},
		{"warning on default rules", f.kp, VerdictWarning, "any", false},
		{"no verdict", f.kp, VerdictNone, "any", false},
		{"contraindicated", warnOK, VerdictContraindicated, "baseline", false},
		{"unknown tier", warnOK, Verdict(3), "baseline", false},
		{"warning allowed", warnOK, VerdictWarning, "baseline", true},
		{"policy not accepted", warnOK, VerdictAffirming, "lenient", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := *f.host
			h.Verdict, h.PolicyID = tc.verdict, tc.policy
			_, err := Release(ctx, tc.kp, f.fabric, &h, &ReleaseConfig{Now: fixedNow})
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrDenied)) {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := New(ctx, f.owner, nil, &Config{Now: fixedNow, Rules: Rules{MinVerdict: VerdictContraindicated}}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("rules allowing contraindicated hosts: %v", err)
	}
}

// TestOfflineUnwrapLimited: a guardian other than the owner may take TK
// itself only as often as the owner allowed, counted by the store.
func TestOfflineUnwrapLimited(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, SuiteX25519)
	if _, err := f.kp.Unwrap(ctx, f.fabric, &UnwrapConfig{Store: &MemoryStore{}}); !errors.Is(err, ErrDenied) {
		t.Fatalf("default rules: %v", err)
	}
	kp, err := New(ctx, f.owner, []*Descriptor{f.fabric.Descriptor()}, &Config{Now: fixedNow, Rules: Rules{MaxOfflineUnwraps: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kp.Unwrap(ctx, f.fabric, nil); !errors.Is(err, ErrDenied) {
		t.Fatalf("no store to count: %v", err)
	}
	store := &MemoryStore{}
	for i := range 3 {
		_, err := kp.Unwrap(ctx, f.fabric, &UnwrapConfig{Store: store})
		if (i < 2) != (err == nil) {
			t.Fatalf("unwrap %d: %v", i+1, err)
		}
	}
	for range 3 {
		if _, err := kp.Unwrap(ctx, f.owner, &UnwrapConfig{Store: store}); err != nil {
			t.Fatal("the owner is never limited:", err)
		}
	}
}

// TestExpiredGuardianCannotRelease and cannot be granted.
func TestExpiredGuardianRejected(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, SuiteX25519)
	later := func() time.Time { return testNow.Add(DefaultValidity + 24*time.Hour) }
	if _, err := Release(ctx, f.kp, f.fabric, f.host, &ReleaseConfig{Now: later}); !errors.Is(err, ErrValidity) {
		t.Fatalf("Release: %v", err)
	}
	if _, err := f.kp.Grant(ctx, f.owner, f.other.Descriptor(), &Config{Now: later}); !errors.Is(err, ErrValidity) {
		t.Fatalf("Grant: %v", err)
	}
	if _, err := New(ctx, f.owner, []*Descriptor{f.fabric.Descriptor()}, &Config{Now: later}); !errors.Is(err, ErrValidity) {
		t.Fatalf("New: %v", err)
	}
	// The owner can still revoke an expired guardian, with its own
	// descriptor expired too.
	if _, err := f.kp.Revoke(ctx, f.owner, f.fabric.Descriptor().KeyID(), &Config{Now: later}); err != nil {
		t.Fatalf("Revoke after expiry: %v", err)
	}
}

// TestErrorsDoNotContainSecrets: no error of a failed operation carries TK
// or a key derived from it.
func TestErrorsDoNotContainSecrets(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, SuiteX25519)
	tk := mustUnwrap(t, f.kp, f.owner)
	secrets := []string{hex.EncodeToString(tk.key[:]), string(tk.key[:])}
	for _, l := range vectorLabels {
		d := tk.Derive(l)
		secrets = append(secrets, hex.EncodeToString(d[:]), string(d[:]))
	}
	resp, _ := Release(ctx, f.kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow})
	forged := reseal(t, f.kp, f.fabric, nil, func(b *kpBody) { b.MAC[0] ^= 1 })
	kp, err := Parse(forged)
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	_, err = kp.Unwrap(ctx, f.owner, nil)
	errs = append(errs, err)
	_, err = Open(resp, kp, f.hostKey, &f.host.Binding)
	errs = append(errs, err)
	_, err = Release(ctx, kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow})
	errs = append(errs, err)
	for _, err := range errs {
		if err == nil {
			t.Fatal("forged MAC accepted")
		}
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				t.Fatalf("error %q contains a secret", err)
			}
		}
	}
}

// TestMemoryStoreConcurrent: concurrent advances never lose the maximum
// and never accept a state below one already recorded (run with -race).
func TestMemoryStoreConcurrent(t *testing.T) {
	ctx := context.Background()
	s := &MemoryStore{}
	id := ID{1}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				st := State{Generation: uint64(i*8 + g), AuthorizationVersion: 1}
				if err := s.Advance(ctx, id, st); err != nil && !errors.Is(err, ErrRollback) {
					t.Error(err)
				}
				s.CountUnwrap(ctx, id)
			}
		})
	}
	wg.Wait()
	if st, ok := s.Latest(id); !ok || st.Generation != 199*8+7 {
		t.Fatalf("latest %+v", st)
	}
	if n, _ := s.CountUnwrap(ctx, id); n != 8*200+1 {
		t.Fatalf("count %d", n)
	}
}
