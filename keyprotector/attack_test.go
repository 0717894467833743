package keyprotector

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"errors"
	"testing"
)

// TestSplicedStanzaFromAnotherKeyProtectorRejected: a stanza that wraps
// another VM's TK to the same guardian does not open in this key
// protector, even when whoever splices it can re-sign and re-MAC the whole
// (the owner itself): the HPKE info binds the KP id and generation.
func TestSplicedStanzaFromAnotherKeyProtectorRejected(t *testing.T) {
	ctx := context.Background()
	for _, suite := range []Suite{SuiteX25519, SuiteMLKEM768X25519} {
		t.Run(suite.String(), func(t *testing.T) {
			f := newFixture(t, suite)
			other, err := New(ctx, f.owner, []*Descriptor{f.fabric.Descriptor()}, &Config{Now: fixedNow})
			if err != nil {
				t.Fatal(err)
			}
			tk := mustUnwrap(t, f.kp, f.owner)
			i := f.kp.auth.index(f.fabric.Descriptor().KeyID())
			spliced := reseal(t, f.kp, f.owner, tk, func(b *kpBody) {
				b.Stanzas[i] = other.body.Stanzas[i]
			})
			kp, err := Parse(spliced)
			if err != nil {
				t.Fatalf("the forgery should be well formed and signed: %v", err)
			}
			if _, err := Release(ctx, kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow}); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("spliced stanza: got %v, want ErrUnwrap", err)
			}
			// The same splice into a later generation of the same KP.
			next, err := f.kp.Rekey(ctx, f.fabric)
			if err != nil {
				t.Fatal(err)
			}
			tk1 := mustUnwrap(t, next, f.owner)
			spliced = reseal(t, next, f.fabric, tk1, func(b *kpBody) { b.Stanzas[i] = f.kp.body.Stanzas[i] })
			kp, err = Parse(spliced)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kp.Unwrap(ctx, f.owner, nil); err != nil {
				t.Fatal("the owner's stanza was not touched:", err)
			}
			if _, err := Release(ctx, kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow}); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("stanza of generation 0 in generation 1: got %v, want ErrUnwrap", err)
			}
			// Without the re-signing, the splice fails the signature.
			unsigned := reseal(t, f.kp, f.other, nil, func(b *kpBody) { b.Stanzas[i] = other.body.Stanzas[i] })
			if _, err := Parse(unsigned); !errors.Is(err, ErrSignature) {
				t.Fatalf("splice signed by an unlisted key: got %v, want ErrSignature", err)
			}
		})
	}
}

// TestGuardianAddedByNonOwnerRejected: only the owner's key can change the
// guardian list.
func TestGuardianAddedByNonOwnerRejected(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, SuiteX25519)
	intruder := f.other.Descriptor()

	t.Run("Grant by a fabric guardian", func(t *testing.T) {
		if _, err := f.kp.Grant(ctx, f.fabric, intruder, &Config{Now: fixedNow}); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("got %v, want ErrNotOwner", err)
		}
	})
	t.Run("authorization signed by a listed guardian that knows TK", func(t *testing.T) {
		tk := mustUnwrap(t, f.kp, f.owner) // the fabric guardian could unwrap the same
		auth := forgeAuthorization(t, f.kp, f.fabric, f.owner.Descriptor(), []*Descriptor{f.fabric.Descriptor(), intruder}, 2)
		forged := reseal(t, f.kp, f.fabric, tk, func(b *kpBody) {
			b.Authorization = auth
			b.Stanzas = append(b.Stanzas, stanza{KeyID: intruder.id[:], Wrapped: []byte("x")})
			sortStanzas(b, f.owner.Descriptor().id)
		})
		if _, err := Parse(forged); !errors.Is(err, ErrSignature) {
			t.Fatalf("got %v, want ErrSignature", err)
		}
	})
	t.Run("owner replaced by an attacker who does not know TK", func(t *testing.T) {
		attacker := f.other
		auth := forgeAuthorization(t, f.kp, attacker, attacker.Descriptor(), []*Descriptor{f.owner.Descriptor(), f.fabric.Descriptor()}, 2)
		forged := reseal(t, f.kp, attacker, nil, func(b *kpBody) {
			b.Authorization = auth
			// The attacker keeps the real stanzas, in the new order, and
			// wraps a TK of its own to itself.
			var st []stanza
			for _, d := range []*Descriptor{attacker.Descriptor(), f.owner.Descriptor(), f.fabric.Descriptor()} {
				if d == attacker.Descriptor() {
					w, _ := mustEnc(d).seal(stanzaInfo(f.kp.id, 0, d.id), make([]byte, 32))
					st = append(st, stanza{KeyID: d.id[:], Wrapped: w})
					continue
				}
				st = append(st, f.kp.body.Stanzas[f.kp.auth.index(d.id)])
			}
			b.Stanzas = st
			sortStanzas(b, attacker.Descriptor().id)
		})
		kp, err := Parse(forged)
		if err != nil {
			t.Fatalf("the forgery is self-consistent and should parse: %v", err)
		}
		// TK still opens, but the attacker could not MAC the new body.
		if _, err := Release(ctx, kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow}); !errors.Is(err, ErrMAC) {
			t.Fatalf("got %v, want ErrMAC", err)
		}
		// An anti-rollback store also pins the owner of a KP id.
		store := &MemoryStore{}
		if _, err := Release(ctx, f.kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow, Store: store}); err != nil {
			t.Fatal(err)
		}
		tk := mustUnwrap(t, f.kp, f.owner)
		remac := reseal(t, kp, attacker, tk, func(*kpBody) {}) // as if the attacker knew TK
		kp2, err := Parse(remac)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Release(ctx, kp2, f.fabric, f.host, &ReleaseConfig{Now: fixedNow, Store: store}); !errors.Is(err, ErrOwnerChanged) {
			t.Fatalf("got %v, want ErrOwnerChanged", err)
		}
	})
}

// sortStanzas puts stanzas in authorization order: owner first, then
// by key id.
func sortStanzas(b *kpBody, owner KeyID) {
	st := b.Stanzas
	for i := range st {
		for j := i + 1; j < len(st); j++ {
			less := func(x, y stanza) bool {
				if bytes.Equal(x.KeyID, owner[:]) {
					return true
				}
				if bytes.Equal(y.KeyID, owner[:]) {
					return false
				}
				return bytes.Compare(x.KeyID, y.KeyID) < 0
			}
			if less(st[j], st[i]) {
				st[i], st[j] = st[j], st[i]
			}
		}
	}
}

// TestGuardianStrippedByHostRejected: a host administrator cannot remove a
// guardian (for example the owner's own, to keep the owner from seeing a
// rekey, or a second fabric) from the list.
func TestGuardianStrippedByHostRejected(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, SuiteX25519)
	second := testGuardian(t, "fabric-2", SuiteX25519, SignatureEdDSA)
	kp, err := f.kp.Grant(ctx, f.owner, second.Descriptor(), &Config{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	j := kp.auth.index(second.Descriptor().KeyID())
	t.Run("stanza removed", func(t *testing.T) {
		forged := reseal(t, kp, f.fabric, nil, func(b *kpBody) { b.Stanzas = slicesDelete(b.Stanzas, j) })
		if _, err := Parse(forged); !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v, want ErrMalformed", err)
		}
	})
	t.Run("guardian removed from the authorization", func(t *testing.T) {
		auth := forgeAuthorization(t, kp, f.other, f.owner.Descriptor(), []*Descriptor{f.fabric.Descriptor()}, 3)
		forged := reseal(t, kp, f.fabric, nil, func(b *kpBody) {
			b.Authorization = auth
			b.Stanzas = slicesDelete(b.Stanzas, j)
		})
		if _, err := Parse(forged); !errors.Is(err, ErrSignature) {
			t.Fatalf("got %v, want ErrSignature", err)
		}
	})
	t.Run("owner stripped", func(t *testing.T) {
		forged := reseal(t, kp, f.fabric, nil, func(b *kpBody) { b.Stanzas = b.Stanzas[1:] })
		if _, err := Parse(forged); !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v, want ErrMalformed", err)
		}
	})
	t.Run("older authorization replayed", func(t *testing.T) {
		store := &MemoryStore{}
		if _, err := Release(ctx, kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow, Store: store, KeepKey: true}); err != nil {
			t.Fatal(err)
		}
		_, err := Release(ctx, f.kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow, Store: store, KeepKey: true})
		var re *RollbackError
		if !errors.As(err, &re) || re.Presented.AuthorizationVersion != 1 || re.Latest.AuthorizationVersion != 2 {
			t.Fatalf("got %v, want a RollbackError from authorization 2 to 1", err)
		}
	})
}

func slicesDelete(s []stanza, i int) []stanza {
	return append(append([]stanza(nil), s[:i]...), s[i+1:]...)
}

// TestOlderGenerationRejectedWithAntiRollback: a key protector from a
// backup, older than one already released, is refused when a store is
// configured, and only then.
func TestOlderGenerationRejectedWithAntiRollback(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, SuiteX25519)
	store := &MemoryStore{}
	cfg := &ReleaseConfig{Now: fixedNow, Store: store}
	kp := f.kp
	backup := f.kp
	for range 3 {
		resp, err := Release(ctx, kp, f.fabric, f.host, cfg)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(resp, kp, f.hostKey, &f.host.Binding)
		if err != nil {
			t.Fatal(err)
		}
		kp = r.NextKeyProtector
	}
	if _, err := Release(ctx, kp, f.fabric, f.host, cfg); err != nil {
		t.Fatal(err)
	}
	_, err := Release(ctx, backup, f.fabric, f.host, cfg)
	var re *RollbackError
	if !errors.As(err, &re) || !errors.Is(err, ErrRollback) || re.Presented.Generation != 0 || re.Latest.Generation != 3 {
		t.Fatalf("got %v, want RollbackError from generation 3 to 0", err)
	}
	if _, err := backup.Unwrap(ctx, f.owner, &UnwrapConfig{Store: store}); !errors.Is(err, ErrRollback) {
		t.Fatalf("Unwrap with the store: got %v, want ErrRollback", err)
	}
	// Without a store there is no memory, so no protection: documented.
	if _, err := Release(ctx, backup, f.fabric, f.host, &ReleaseConfig{Now: fixedNow}); err != nil {
		t.Fatal(err)
	}
}

// TestOneByteChangedAnywhereRejected flips each bit of every byte of a key
// protector, a release response and shielding data; none is accepted.
func TestOneByteChangedAnywhereRejected(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, SuiteX25519)
	raw := f.kp.Marshal()
	for i := range raw {
		for _, bit := range []byte{0x01, 0x80} {
			m := bytes.Clone(raw)
			m[i] ^= bit
			kp, err := Parse(m)
			if err != nil {
				continue
			}
			if _, err := kp.Unwrap(ctx, f.owner, nil); err == nil {
				t.Fatalf("key protector with byte %d ^ %#x accepted", i, bit)
			}
		}
	}
	resp, err := Release(ctx, f.kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	for i := range resp {
		m := bytes.Clone(resp)
		m[i] ^= 0x01
		if _, err := Open(m, f.kp, f.hostKey, &f.host.Binding); err == nil {
			t.Fatalf("release response with byte %d changed opened", i)
		}
	}
	d := f.fabric.Descriptor().Marshal()
	for i := range d {
		m := bytes.Clone(d)
		m[i] ^= 0x01
		if _, err := ParseDescriptor(m); err == nil {
			t.Fatalf("descriptor with byte %d changed parsed", i)
		}
	}
	sd, err := NewShieldingData(ctx, f.owner, []*Descriptor{f.fabric.Descriptor()}, &ShieldingContents{Secrets: map[string][]byte{"admin-password": []byte("hunter2")}}, &Config{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	sraw := sd.Marshal()
	for i := range sraw {
		m := bytes.Clone(sraw)
		m[i] ^= 0x01
		s, err := ParseShieldingData(m)
		if err != nil {
			continue
		}
		if _, err := s.Open(ctx, f.owner, nil); err == nil {
			t.Fatalf("shielding data with byte %d changed opened", i)
		}
	}
}

// TestUnlistedGuardianRejectedWithTypedError: a guardian not in the list
// gets a *NotListedError naming its key id, from every operation.
func TestUnlistedGuardianRejectedWithTypedError(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, SuiteX25519)
	stranger := f.other
	check := func(what string, err error) {
		t.Helper()
		var nl *NotListedError
		if !errors.As(err, &nl) || nl.KeyID != stranger.Descriptor().KeyID() || !errors.Is(err, ErrNotListed) {
			t.Errorf("%s: got %v, want *NotListedError for %s", what, err, stranger.Descriptor().KeyID())
		}
	}
	_, err := f.kp.Unwrap(ctx, stranger, nil)
	check("Unwrap", err)
	_, err = Release(ctx, f.kp, stranger, f.host, &ReleaseConfig{Now: fixedNow})
	check("Release", err)
	_, err = f.kp.Rekey(ctx, stranger)
	check("Rekey", err)
	_, err = f.kp.Revoke(ctx, f.owner, stranger.Descriptor().KeyID(), &Config{Now: fixedNow})
	check("Revoke", err)
}

// TestReleaseToAnotherHostKeyCannotOpen: a release is sealed to the host
// key of the binding; any other host key, or the right key with another
// token or nonce, does not open it.
func TestReleaseToAnotherHostKeyCannotOpen(t *testing.T) {
	ctx := context.Background()
	for _, suite := range []Suite{SuiteX25519, SuiteMLKEM768X25519} {
		t.Run(suite.String(), func(t *testing.T) {
			f := newFixture(t, suite)
			resp, err := Release(ctx, f.kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow})
			if err != nil {
				t.Fatal(err)
			}
			kem := f.hostKey.KEM()
			thief, err := kem.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Open(resp, f.kp, thief, &f.host.Binding); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("another host key: got %v, want ErrUnwrap", err)
			}
			b := f.host.Binding
			b.Nonce = []byte("another nonce")
			if _, err := Open(resp, f.kp, f.hostKey, &b); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("another nonce: got %v, want ErrUnwrap", err)
			}
			b = f.host.Binding
			b.TokenHash[0] ^= 1
			if _, err := Open(resp, f.kp, f.hostKey, &b); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("another token: got %v, want ErrUnwrap", err)
			}
			p256, _ := hpke.DHKEM(ecdh.P256()).GenerateKey()
			if _, err := Open(resp, f.kp, p256, &f.host.Binding); err == nil {
				t.Fatal("a P-256 host key opened an X25519 release")
			}
			if _, err := Open(resp, f.kp, f.hostKey, &f.host.Binding); err != nil {
				t.Fatal("the right host cannot open:", err)
			}
		})
	}
}

// TestMixedPostQuantumAndClassicalRejected: a key protector is all
// post-quantum or all classical, and releases only to a host key of its
// kind, so TK never travels under a weaker KEM than its guardians'.
func TestMixedPostQuantumAndClassicalRejected(t *testing.T) {
	ctx := context.Background()
	classical := newFixture(t, SuiteX25519)
	pq := newFixture(t, SuiteMLKEM768X25519)
	if _, err := New(ctx, classical.owner, []*Descriptor{pq.fabric.Descriptor()}, &Config{Now: fixedNow}); !errors.Is(err, ErrMixedSuites) {
		t.Fatalf("New: got %v", err)
	}
	if _, err := New(ctx, pq.owner, []*Descriptor{testGuardian(t, "p256", SuiteP256, SignatureES256).Descriptor()}, &Config{Now: fixedNow}); !errors.Is(err, ErrMixedSuites) {
		t.Fatalf("New with P-256: got %v", err)
	}
	if _, err := pq.kp.Grant(ctx, pq.owner, classical.fabric.Descriptor(), &Config{Now: fixedNow}); !errors.Is(err, ErrMixedSuites) {
		t.Fatalf("Grant: got %v", err)
	}
	if _, err := Release(ctx, pq.kp, pq.fabric, classical.host, &ReleaseConfig{Now: fixedNow}); !errors.Is(err, ErrMixedSuites) {
		t.Fatalf("Release of a post-quantum KP to an X25519 host key: got %v", err)
	}
	if _, err := Release(ctx, classical.kp, classical.fabric, pq.host, &ReleaseConfig{Now: fixedNow}); !errors.Is(err, ErrMixedSuites) {
		t.Fatalf("Release of a classical KP to a hybrid host key: got %v", err)
	}
	// Even the owner cannot sign a mixed list that a parser accepts.
	auth := forgeAuthorization(t, pq.kp, pq.owner, pq.owner.Descriptor(), []*Descriptor{pq.fabric.Descriptor(), classical.fabric.Descriptor()}, 2)
	forged := reseal(t, pq.kp, pq.owner, nil, func(b *kpBody) {
		b.Authorization = auth
		d := classical.fabric.Descriptor()
		w, _ := mustEnc(d).seal([]byte("x"), make([]byte, 32))
		b.Stanzas = append(b.Stanzas, stanza{KeyID: d.id[:], Wrapped: w})
		sortStanzas(b, pq.owner.Descriptor().id)
	})
	if _, err := Parse(forged); !errors.Is(err, ErrMixedSuites) {
		t.Fatalf("Parse of a mixed list: got %v", err)
	}
}
