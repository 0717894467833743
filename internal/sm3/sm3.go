// Package sm3 implements the SM3 hash function (GB/T 32905-2016, also
// ISO/IEC 10118-3:2018), which TPM 2.0 logs may use for a register bank
// (TPM_ALG_SM3_256). It exists so that measure can replay SM3 banks with the
// standard library alone; it is not constant-time-hardened beyond what a hash
// of public data needs.
package sm3

import (
	"encoding/binary"
	"math/bits"
)

// Size is the size of an SM3 digest in bytes.
const Size = 32

const blockSize = 64

var iv = [8]uint32{0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600, 0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e}

// Sum returns the SM3 digest of data. It allocates nothing.
func Sum(data []byte) [Size]byte {
	v := iv
	n := len(data)
	for len(data) >= blockSize {
		compress(&v, data[:blockSize])
		data = data[blockSize:]
	}
	// Padding: 0x80, zeros, then the bit length as a big-endian uint64.
	var tail [2 * blockSize]byte
	r := copy(tail[:], data)
	tail[r] = 0x80
	end := blockSize
	if r+1+8 > blockSize {
		end = 2 * blockSize
	}
	binary.BigEndian.PutUint64(tail[end-8:end], uint64(n)<<3)
	for off := 0; off < end; off += blockSize {
		compress(&v, tail[off:off+blockSize])
	}
	var out [Size]byte
	for i, x := range v {
		binary.BigEndian.PutUint32(out[4*i:], x)
	}
	return out
}

func p0(x uint32) uint32 { return x ^ bits.RotateLeft32(x, 9) ^ bits.RotateLeft32(x, 17) }
func p1(x uint32) uint32 { return x ^ bits.RotateLeft32(x, 15) ^ bits.RotateLeft32(x, 23) }

// compress is the compression function CF of GB/T 32905-2016, section 5.3.3.
func compress(v *[8]uint32, block []byte) {
	var w [68]uint32
	for i := range 16 {
		w[i] = binary.BigEndian.Uint32(block[4*i:])
	}
	for j := 16; j < 68; j++ {
		w[j] = p1(w[j-16]^w[j-9]^bits.RotateLeft32(w[j-3], 15)) ^ bits.RotateLeft32(w[j-13], 7) ^ w[j-6]
	}
	a, b, c, d, e, f, g, h := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
	for j := range 64 {
		t := uint32(0x79cc4519)
		if j >= 16 {
			t = 0x7a879d8a
		}
		a12 := bits.RotateLeft32(a, 12)
		ss1 := bits.RotateLeft32(a12+e+bits.RotateLeft32(t, j%32), 7)
		ss2 := ss1 ^ a12
		var ff, gg uint32
		if j < 16 {
			ff = a ^ b ^ c
			gg = e ^ f ^ g
		} else {
			ff = (a & b) | (a & c) | (b & c)
			gg = (e & f) | (^e & g)
		}
		tt1 := ff + d + ss2 + (w[j] ^ w[j+4])
		tt2 := gg + h + ss1 + w[j]
		d = c
		c = bits.RotateLeft32(b, 9)
		b = a
		a = tt1
		h = g
		g = bits.RotateLeft32(f, 19)
		f = e
		e = p0(tt2)
	}
	v[0] ^= a
	v[1] ^= b
	v[2] ^= c
	v[3] ^= d
	v[4] ^= e
	v[5] ^= f
	v[6] ^= g
	v[7] ^= h
}
