package sm3

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// The examples of GB/T 32905-2016, appendix A.
func TestVectors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"},
		{strings.Repeat("abcd", 16), "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"},
	} {
		got := Sum([]byte(tc.in))
		if hex.EncodeToString(got[:]) != tc.want {
			t.Errorf("Sum(%q) = %x, want %s", tc.in, got, tc.want)
		}
	}
}

// TestPaddingBoundaries checks that every message length around the block
// boundaries hashes without a panic and that equal inputs agree.
func TestPaddingBoundaries(t *testing.T) {
	seen := map[[Size]byte]int{}
	for n := range 3*blockSize + 1 {
		msg := bytes.Repeat([]byte{'x'}, n)
		d := Sum(msg)
		if d != Sum(bytes.Clone(msg)) {
			t.Fatalf("length %d: not deterministic", n)
		}
		if prev, ok := seen[d]; ok {
			t.Fatalf("lengths %d and %d collide", prev, n)
		}
		seen[d] = n
	}
}

func BenchmarkSum64(b *testing.B) {
	buf := make([]byte, 64)
	b.SetBytes(64)
	for b.Loop() {
		Sum(buf)
	}
}
