package policy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: decoding never panics; a policy that decodes re-encodes to
// one that decodes, and evaluates the real Windows boot without panicking.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.policy.json")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	in := windowsInput(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		b, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(b); err != nil {
			t.Fatalf("re-encoded policy does not decode: %v\n%s", err, b)
		}
		p.Evaluate(in)
	})
}
