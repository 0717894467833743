package measure

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"

	"github.com/shieldvm/shieldvm/internal/sm3"
)

// HashAlg is a TPM_ALG_ID that names a digest algorithm of a register bank
// (TPM 2.0 Library, Part 2, section 6.3). A log may declare algorithms this
// package does not know; their digests are parsed and carried, but their
// banks cannot be replayed.
type HashAlg uint16

// The digest algorithms of PC Client and TDX logs.
const (
	SHA1    HashAlg = 0x0004
	SHA256  HashAlg = 0x000B
	SHA384  HashAlg = 0x000C
	SHA512  HashAlg = 0x000D
	SM3_256 HashAlg = 0x0012
)

// MaxDigestSize is the largest digest of any algorithm a log may declare.
// A Spec ID event that declares a larger one is rejected.
const MaxDigestSize = 64

// String returns the lower-case name used in JSON and on the command line
// ("sha256"), or "alg0x00NN" for an algorithm this package does not know.
func (a HashAlg) String() string {
	switch a {
	case SHA1:
		return "sha1"
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	case SHA512:
		return "sha512"
	case SM3_256:
		return "sm3_256"
	}
	return fmt.Sprintf("alg0x%04x", uint16(a))
}

// ParseHashAlg is the inverse of [HashAlg.String] for the known algorithms.
func ParseHashAlg(s string) (HashAlg, error) {
	for _, a := range []HashAlg{SHA1, SHA256, SHA384, SHA512, SM3_256} {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("measure: unknown digest algorithm %q", s)
}

// Size returns the digest size of a known algorithm, or 0.
func (a HashAlg) Size() int {
	switch a {
	case SHA1:
		return sha1.Size
	case SHA256, SM3_256:
		return 32
	case SHA384:
		return sha512.Size384
	case SHA512:
		return sha512.Size
	}
	return 0
}

// Known reports whether this package can compute digests of the algorithm,
// and so replay its bank.
func (a HashAlg) Known() bool { return a.Size() != 0 }

// Sum returns the digest of data, in a fixed-size array whose first
// a.Size() bytes hold it. It returns false for an unknown algorithm.
func (a HashAlg) Sum(data []byte) (out [MaxDigestSize]byte, ok bool) {
	switch a {
	case SHA1:
		s := sha1.Sum(data)
		copy(out[:], s[:])
	case SHA256:
		s := sha256.Sum256(data)
		copy(out[:], s[:])
	case SHA384:
		s := sha512.Sum384(data)
		copy(out[:], s[:])
	case SHA512:
		s := sha512.Sum512(data)
		copy(out[:], s[:])
	case SM3_256:
		s := sm3.Sum(data)
		copy(out[:], s[:])
	default:
		return out, false
	}
	return out, true
}

// extend sets reg (a.Size() bytes) to H(reg ‖ digest), the TPM2_PCR_Extend
// operation. digest is a.Size() bytes. It allocates nothing.
func extend(a HashAlg, reg []byte, digest []byte) {
	var buf [2 * MaxDigestSize]byte
	n := copy(buf[:], reg)
	n += copy(buf[n:], digest)
	switch a {
	case SHA1:
		s := sha1.Sum(buf[:n])
		copy(reg, s[:])
	case SHA256:
		s := sha256.Sum256(buf[:n])
		copy(reg, s[:])
	case SHA384:
		s := sha512.Sum384(buf[:n])
		copy(reg, s[:])
	case SHA512:
		s := sha512.Sum512(buf[:n])
		copy(reg, s[:])
	case SM3_256:
		s := sm3.Sum(buf[:n])
		copy(reg, s[:])
	}
}
