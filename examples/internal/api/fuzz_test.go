package api

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shieldvm/shieldvm/attest"
)

func seeds(f *testing.F) {
	files, err := filepath.Glob("testdata/*.cbor")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// A ModeTPM challenge request and the answers a host decodes.
	for _, v := range []any{
		&ChallengeRequest{EKPublic: bytes.Repeat([]byte{1}, 314), AKPublic: bytes.Repeat([]byte{2}, 88)},
		&AttestResponse{Token: []byte{0xd2, 0x84}, Expires: 1, Status: "affirming", PolicyID: "p", HostID: "h"},
		&ReleaseResponse{Response: []byte{1, 2, 3}},
		&attest.TPMChallenge{Challenge: make([]byte, attest.ChallengeSize)},
	} {
		b, err := Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzDecoders feeds every request and response decoder (and the
// evidence parser the service calls) the same bytes: none may panic, every
// error wraps its package's ErrMalformed, and what decodes re-encodes to
// something that decodes to the same value.
func FuzzDecoders(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := DecodeChallengeRequest(data); err == nil {
			b, err := Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			r2, err := DecodeChallengeRequest(b)
			if err != nil || !bytes.Equal(r2.EKPublic, r.EKPublic) || !bytes.Equal(r2.AKPublic, r.AKPublic) {
				t.Fatalf("challenge request does not round-trip: %v", err)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("challenge request: %v is not ErrMalformed", err)
		}
		if r, err := DecodeReleaseRequest(data); err == nil {
			b, err := Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			r2, err := DecodeReleaseRequest(b)
			if err != nil || !bytes.Equal(r2.KeyProtector, r.KeyProtector) || !bytes.Equal(r2.Token, r.Token) || !bytes.Equal(r2.ReleaseKey, r.ReleaseKey) {
				t.Fatalf("release request does not round-trip: %v", err)
			}
			if _, err := ParseReleaseKey(r.ReleaseKey); err != nil {
				t.Fatalf("accepted release key does not parse: %v", err)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("release request: %v is not ErrMalformed", err)
		}
		for name, dec := range map[string]func([]byte) error{
			"attest response":  func(b []byte) error { _, err := DecodeAttestResponse(b); return err },
			"release response": func(b []byte) error { _, err := DecodeReleaseResponse(b); return err },
			"challenge":        func(b []byte) error { _, err := DecodeTPMChallenge(b); return err },
			"release key":      func(b []byte) error { _, err := ParseReleaseKey(b); return err },
		} {
			if err := dec(data); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: %v is not ErrMalformed", name, err)
			}
		}
		if ev, err := attest.ParseEvidence(data); err == nil {
			if _, err := ev.Marshal(); err != nil {
				t.Fatalf("parsed evidence does not marshal: %v", err)
			}
		}
	})
}

// TestDecodersRefuseNonCanonicalInput: strictness the service relies on.
func TestDecodersRefuseNonCanonicalInput(t *testing.T) {
	for name, b := range map[string][]byte{
		"duplicate key":    {0xa2, 0x01, 0x41, 0x00, 0x01, 0x41, 0x00},
		"indefinite map":   {0xbf, 0x01, 0x41, 0x00, 0xff},
		"tag":              {0xc0, 0xa0},
		"trailing bytes":   {0xa0, 0x00},
		"unknown key":      {0xa1, 0x07, 0x41, 0x00},
		"text for bytes":   {0xa1, 0x01, 0x61, 0x61},
		"one of EK and AK": {0xa1, 0x01, 0x41, 0x00},
		"oversized":        append([]byte{0x5a, 0, 0, 0x40, 0}, make([]byte, 0x4000)...),
	} {
		if _, err := DecodeChallengeRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	if _, err := DecodeReleaseRequest([]byte{0xa0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty release request: %v", err)
	}
}

func TestReleaseKeyRoundTrip(t *testing.T) {
	for _, s := range releaseSuites {
		k, err := s.GenerateHostKey()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseReleaseKey(MarshalReleaseKey(k.PublicKey()))
		if err != nil || !bytes.Equal(got.Bytes(), k.PublicKey().Bytes()) || got.KEM().ID() != uint16(s) {
			t.Fatalf("%v: %v", s, err)
		}
	}
	// Unknown suite, RSA (not a release suite), no key, short key.
	for _, b := range [][]byte{{0x00, 0x21, 1, 2, 3}, {0xfe, 0x01, 1, 2, 3}, {0x00, 0x20}, {0x00, 0x20, 1}} {
		if _, err := ParseReleaseKey(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%x: err = %v", b, err)
		}
	}
}
