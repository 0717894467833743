package measure

import (
	"bytes"
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
