package keyprotector

import (
	"bytes"
	"context"
	"crypto/hpke"
	"errors"
	"testing"
)

// knownError reports whether err is of a class this package documents:
// decoders must fail with these, never with anything else, and never panic.
func knownError(err error) bool {
	for _, e := range []error{ErrMalformed, ErrSignature, ErrMAC, ErrUnwrap, ErrMixedSuites, ErrUnsupported, ErrNotListed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

type fuzzSeeds struct {
	kps, descriptors, auths, responses, shielding, privates [][]byte
}

func seeds(f *testing.F) *fuzzSeeds {
	vf := loadVectors(f)
	s := &fuzzSeeds{}
	for _, v := range vf.Cases {
		kpRaw := unhex(f, v.KeyProtector)
		kp, err := Parse(kpRaw)
		if err != nil {
			f.Fatal(err)
		}
		s.kps = append(s.kps, kpRaw)
		s.auths = append(s.auths, kp.auth.raw)
		for _, d := range kp.Guardians() {
			s.descriptors = append(s.descriptors, d.Marshal())
		}
		s.responses = append(s.responses, unhex(f, v.ReleaseResponse))
		s.shielding = append(s.shielding, unhex(f, v.ShieldingData))
		s.privates = append(s.privates, unhex(f, v.OwnerPrivate), unhex(f, v.GuardianPrivate))
	}
	return s
}

func FuzzParse(f *testing.F) {
	for _, b := range seeds(f).kps {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kp, err := Parse(data)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if !bytes.Equal(kp.Marshal(), data) {
			t.Fatal("accepted a key protector that does not round-trip")
		}
	})
}

func FuzzParseDescriptor(f *testing.F) {
	for _, b := range seeds(f).descriptors {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseDescriptor(data)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if !bytes.Equal(d.Marshal(), data) {
			t.Fatal("accepted a descriptor that does not round-trip")
		}
		if _, err := d.encryptionKey(); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseAuthorization(f *testing.F) {
	s := seeds(f)
	vf := loadVectors(f)
	for i, b := range s.auths {
		kp, _ := Parse(unhex(f, vf.Cases[i].KeyProtector))
		f.Add(b, kp.id[:])
	}
	f.Fuzz(func(t *testing.T, data, id []byte) {
		var kid ID
		copy(kid[:], id)
		a, err := parseAuthorization(data, kid)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if !bytes.Equal(a.raw, data) || len(a.all) == 0 || len(a.all) > MaxGuardians {
			t.Fatal("inconsistent authorization accepted")
		}
	})
}

func FuzzOpenResponse(f *testing.F) {
	s := seeds(f)
	vf := loadVectors(f)
	v := vf.Cases[0]
	kp, err := Parse(unhex(f, v.KeyProtector))
	if err != nil {
		f.Fatal(err)
	}
	kem, _ := hpke.NewKEM(v.HostSuite)
	hostKey, err := kem.NewPrivateKey(unhex(f, v.HostPrivate))
	if err != nil {
		f.Fatal(err)
	}
	b := &Binding{Nonce: unhex(f, v.Nonce)}
	copy(b.TokenHash[:], unhex(f, v.TokenHash))
	for _, r := range s.responses {
		f.Add(r)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, _, _, err := ParseResponse(data); err != nil && !knownError(err) {
			t.Fatalf("ParseResponse: unexpected error class: %v", err)
		}
		r, err := Open(data, kp, hostKey, b)
		if err != nil {
			return // the response may be for another key protector: any error will do
		}
		if r.Key == nil {
			t.Fatal("opened with no key")
		}
	})
}

func FuzzParseShieldingData(f *testing.F) {
	s := seeds(f)
	vf := loadVectors(f)
	owner, err := ParseGuardian(unhex(f, vf.Cases[0].OwnerPrivate))
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range s.shielding {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sd, err := ParseShieldingData(data)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if !bytes.Equal(sd.Marshal(), data) {
			t.Fatal("accepted shielding data that does not round-trip")
		}
		if _, err := sd.Open(context.Background(), owner, nil); err != nil && !knownError(err) {
			t.Fatalf("Open: unexpected error class: %v", err)
		}
	})
}

// FuzzShieldingContents fuzzes the decoder of decrypted shielding contents,
// which the AEAD keeps out of an attacker's reach in FuzzParseShieldingData.
func FuzzShieldingContents(f *testing.F) {
	f.Add(marshal(contentsBody{Secrets: map[string][]byte{"a": []byte("b")}, Templates: []templateBody{{Name: "t", Digest: make([]byte, 32), Signer: make([]byte, 32)}}}))
	f.Add(marshal(contentsBody{Secrets: map[string][]byte{}, Templates: []templateBody{}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseContents(data)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		for _, tm := range c.Templates {
			if c.CheckTemplate(tm.DiskDigest, tm.Signer) != nil {
				t.Fatal("a listed template is refused")
			}
		}
	})
}

func FuzzParseGuardian(f *testing.F) {
	for _, b := range seeds(f).privates {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGuardian(data)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		again, err := g.MarshalPrivate()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted a private key file that does not round-trip: %v", err)
		}
	})
}
