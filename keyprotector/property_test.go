package keyprotector

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// pool returns an owner and five guardians of one class, with both
// signature algorithms.
func pool(t testing.TB, suite Suite) (*KeyGuardian, []*KeyGuardian) {
	owner := testGuardian(t, "owner", suite, SignatureES256)
	var gs []*KeyGuardian
	for i := range 5 {
		alg := SignatureES256
		if i%2 == 1 {
			alg = SignatureEdDSA
		}
		gs = append(gs, testGuardian(t, fmt.Sprintf("pool-%d", i), suite, alg))
	}
	return owner, gs
}

// TestPropertyNewUnwrap: every listed guardian unwraps the same TK, no
// other guardian does, and the encoding round-trips exactly.
func TestPropertyNewUnwrap(t *testing.T) {
	ctx := context.Background()
	owner, gs := pool(t, SuiteX25519)
	rapid.Check(t, func(t *rapid.T) {
		listed := map[int]bool{}
		var ds []*Descriptor
		for i := range gs {
			if rapid.Bool().Draw(t, fmt.Sprintf("list%d", i)) {
				listed[i] = true
				ds = append(ds, gs[i].Descriptor())
			}
		}
		kp, err := New(ctx, owner, ds, &Config{Now: fixedNow})
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(kp.Marshal())
		if err != nil || string(again.Marshal()) != string(kp.Marshal()) {
			t.Fatalf("round trip: %v", err)
		}
		if kp.Generation() != 0 || kp.AuthorizationVersion() != 1 || len(kp.Guardians()) != len(ds)+1 {
			t.Fatalf("generation %d, authorization %d, %d guardians", kp.Generation(), kp.AuthorizationVersion(), len(kp.Guardians()))
		}
		tk, err := again.Unwrap(ctx, owner, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, g := range gs {
			got, err := again.unwrap(ctx, g)
			switch {
			case listed[i] && (err != nil || !got.Equal(tk)):
				t.Fatalf("listed guardian %d: %v", i, err)
			case !listed[i] && !errors.Is(err, ErrNotListed):
				t.Fatalf("unlisted guardian %d: %v", i, err)
			}
		}
	})
}

// TestPropertyGrantRevokeRekey runs random sequences of Grant, Revoke and
// Rekey against a model: the list is what the owner made it, the
// authorization version counts the owner's changes, the generation counts
// re-keys, TK changes exactly at each re-key and never repeats, every
// listed guardian unwraps it and no other does, and an anti-rollback
// store accepts the sequence in order and refuses every earlier state.
func TestPropertyGrantRevokeRekey(t *testing.T) {
	ctx := context.Background()
	for _, suite := range []Suite{SuiteX25519, SuiteMLKEM768X25519} {
		t.Run(suite.String(), func(t *testing.T) {
			owner, gs := pool(t, suite)
			rapid.Check(t, func(t *rapid.T) {
				kp, err := New(ctx, owner, nil, &Config{Now: fixedNow})
				if err != nil {
					t.Fatal(err)
				}
				listed := map[int]bool{}
				store := &MemoryStore{}
				history := []*KeyProtector{kp}
				tk := mustUnwrap(t, kp, owner)
				seen := []*TransportKey{tk}
				wantAuth, wantGen := uint64(1), uint64(0)
				steps := rapid.IntRange(1, 8).Draw(t, "steps")
				for range steps {
					i := rapid.IntRange(0, len(gs)-1).Draw(t, "guardian")
					switch op := rapid.SampledFrom([]string{"grant", "revoke", "rekey"}).Draw(t, "op"); {
					case op == "grant" && !listed[i]:
						kp, err = kp.Grant(ctx, owner, gs[i].Descriptor(), &Config{Now: fixedNow})
						listed[i] = true
						wantAuth++
					case op == "revoke" && listed[i]:
						kp, err = kp.Revoke(ctx, owner, gs[i].Descriptor().KeyID(), &Config{Now: fixedNow})
						delete(listed, i)
						wantAuth++
					case op == "rekey":
						signer := Guardian(owner)
						if listed[i] {
							signer = gs[i]
						}
						kp, err = kp.Rekey(ctx, signer)
						wantGen++
					default:
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					if kp, err = Parse(kp.Marshal()); err != nil {
						t.Fatal(err)
					}
					if kp.AuthorizationVersion() != wantAuth || kp.Generation() != wantGen || len(kp.Guardians()) != len(listed)+1 {
						t.Fatalf("authorization %d want %d, generation %d want %d, %d guardians want %d",
							kp.AuthorizationVersion(), wantAuth, kp.Generation(), wantGen, len(kp.Guardians()), len(listed)+1)
					}
					cur := mustUnwrap(t, kp, owner)
					prev := seen[len(seen)-1]
					if (kp.Generation() == prev.Generation()) != cur.Equal(prev) {
						t.Fatal("TK changed without a re-key, or a re-key kept TK")
					}
					if kp.Generation() != prev.Generation() {
						for _, old := range seen {
							if old.key == cur.key {
								t.Fatal("a re-key repeated an earlier TK")
							}
						}
						seen = append(seen, cur)
					}
					for j, g := range gs {
						got, err := kp.unwrap(ctx, g)
						if listed[j] != (err == nil) || (err == nil && !got.Equal(cur)) {
							t.Fatalf("guardian %d listed=%v: %v", j, listed[j], err)
						}
					}
					if err := kp.advance(ctx, store); err != nil {
						t.Fatalf("store refused the newest state: %v", err)
					}
					history = append(history, kp)
				}
				for _, old := range history {
					err := old.advance(ctx, store)
					newest := old.Generation() == kp.Generation() && old.AuthorizationVersion() == kp.AuthorizationVersion()
					if newest != (err == nil) {
						t.Fatalf("store: generation %d authorization %d: %v", old.Generation(), old.AuthorizationVersion(), err)
					}
				}
			})
		})
	}
}
