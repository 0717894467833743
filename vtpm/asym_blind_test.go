package vtpm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"math/big"
	"testing"
)

// TestRawRSADecryptBlinded: the blinded CRT private operation of
// RSA_Decrypt with the null scheme gives ct^d mod n, for many ciphertexts
// (each call draws new blinding values), including 0, 1 and n-1.
func TestRawRSADecryptBlinded(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	cts := [][]byte{{0}, {1}, new(big.Int).Sub(priv.N, big.NewInt(1)).Bytes()}
	for range 20 {
		c, _ := rand.Int(rand.Reader, priv.N)
		cts = append(cts, c.Bytes())
	}
	for _, ct := range cts {
		ct = new(big.Int).SetBytes(ct).FillBytes(make([]byte, priv.Size()))
		want := new(big.Int).Exp(new(big.Int).SetBytes(ct), priv.D, priv.N).FillBytes(make([]byte, priv.Size()))
		for range 2 {
			got, err := rawRSADecrypt(priv, ct)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("ct %x: got %x, want %x", ct, got, want)
			}
		}
	}
}
