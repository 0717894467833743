package measure

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"pgregory.net/rapid"
)

// TestIsPrintableASCIIMatchesBytes: the word-at-a-time check agrees with
// the byte-by-byte one for every byte value at every position of a word
// and of the tail, and on any input.
func TestIsPrintableASCIIMatchesBytes(t *testing.T) {
	for n := 1; n <= 17; n++ {
		for pos := range n {
			for c := range 256 {
				b := bytes.Repeat([]byte{'a'}, n)
				b[pos] = byte(c)
				if got, want := isPrintableASCII(b), printableBytes(b); got != want {
					t.Fatalf("%q: isPrintableASCII = %v, want %v", b, got, want)
				}
			}
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		b := rapid.SliceOfN(rapid.SampledFrom([]byte{0, 0x09, 0x0A, 0x0D, 0x1F, 0x20, 'x', 0x7E, 0x7F, 0x80, 0xFF}), 0, 40).Draw(t, "b")
		if got, want := isPrintableASCII(b), printableBytes(b); got != want {
			t.Fatalf("%q: isPrintableASCII = %v, want %v", b, got, want)
		}
	})
}

// TestFactsFastPathsAgree: the facts of every log of the corpus, built
// with every shortcut (events built one at a time from the records, lists
// sized in advance, the decode arena, remembered digests), equal those
// built without any, value for value and in JSON.
func TestFactsFastPathsAgree(t *testing.T) {
	for _, c := range factsCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			v, err := c.log.Verify(c.quoted, VerifyOptions{})
			if err != nil {
				t.Skip(err) // a log that extends nothing
			}
			checkFastPathsAgree(t, v)
		})
	}
}

func checkFastPathsAgree(t testing.TB, v *VerifiedLog) {
	t.Helper()
	fast, err := v.facts(false)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := v.facts(true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fast, slow) {
		jf, _ := json.MarshalIndent(fast, "", " ")
		js, _ := json.MarshalIndent(slow, "", " ")
		if bytes.Equal(jf, js) {
			t.Fatalf("facts differ in Go values only (nil and empty lists?):\nfast %+v\nslow %+v", fast, slow)
		}
		t.Fatalf("facts differ:\nfast %s\nslow %s", jf, js)
	}
}
