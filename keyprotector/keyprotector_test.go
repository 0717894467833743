package keyprotector

import (
	"context"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, suite := range []Suite{SuiteX25519, SuiteP256, SuiteMLKEM768X25519} {
		t.Run(suite.String(), func(t *testing.T) {
			f := newFixture(t, suite)
			kp, err := Parse(f.kp.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			tk1, err := kp.Unwrap(ctx, f.owner, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := Release(ctx, kp, f.fabric, f.host, &ReleaseConfig{Now: fixedNow})
			if err != nil {
				t.Fatal(err)
			}
			r, err := Open(resp, kp, f.hostKey, &f.host.Binding)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Key.Equal(tk1) {
				t.Fatal("released TK differs from the owner's")
			}
			if r.Next == nil || r.NextKeyProtector.Generation() != 1 {
				t.Fatal("no re-key")
			}
			tk2, err := r.NextKeyProtector.Unwrap(ctx, f.owner, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !tk2.Equal(r.Next) || tk2.Equal(tk1) {
				t.Fatal("next TK wrong")
			}
		})
	}
	_ = errors.Is
}
