package vtpm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"
)

// symKeyCmd is a LoadExternal of an AES key (in the null hierarchy, as
// LoadExternal requires for a key with its sensitive part) with the given
// mode and attributes.
func symKeyCmd(key []byte, mode uint16, attrs uint32) []byte {
	seed := bytes.Repeat([]byte{0x5e}, 32)
	unique := sha256.Sum256(append(append([]byte(nil), seed...), key...))
	pub := bytesOf(u16b(algSymCipher), u16b(algSHA256), u32b(attrs), u16b(0),
		u16b(algAES), u16b(uint16(len(key)*8)), u16b(mode), b2b(unique[:]))
	sens := bytesOf(u16b(algSymCipher), b2b([]byte("keypw")), b2b(seed), b2b(key))
	return rawCommand(ccLoadExternal, nil, 0, nil, b2b(sens), b2b(pub), u32b(rhNull))
}

const symAttrs = oaSign | oaDecrypt | oaUserWithAuth | oaNoDA

func loadSymKey(t testing.TB, tp transport.TPM, key []byte, mode uint16, attrs uint32) uint32 {
	t.Helper()
	p := admMust(t, tp, rcSuccess, symKeyCmd(key, mode, attrs))
	return admBE32(p)
}

func encryptDecrypt2(h uint32, data []byte, decrypt bool, mode uint16, iv []byte) []byte {
	d := []byte{0}
	if decrypt {
		d[0] = 1
	}
	return rawCommand(ccEncryptDecrypt2, []uint32{h}, 1, []byte("keypw"), b2b(data), d, u16b(mode), b2b(iv))
}

func encryptDecrypt(h uint32, data []byte, decrypt bool, mode uint16, iv []byte) []byte {
	d := []byte{0}
	if decrypt {
		d[0] = 1
	}
	return rawCommand(ccEncryptDecrypt, []uint32{h}, 1, []byte("keypw"), d, u16b(mode), b2b(iv), b2b(data))
}

// symOut splits an EncryptDecrypt response into outData and ivOut.
func symOut(p []byte) (out, iv []byte) {
	r := newReader(rspParams(p, false))
	out = r.b2b(maxBuffer)
	iv = r.b2b(maxSymBlock)
	return
}

// goCrypt is the standard library's answer for one mode, with IV chaining
// per the TPM's definition.
func goCrypt(key []byte, mode uint16, decrypt bool, iv, in []byte) []byte {
	b, _ := aes.NewCipher(key)
	out := make([]byte, len(in))
	switch mode {
	case algCFB:
		//lint:ignore SA1019 the TPM specifies CFB.
		if decrypt {
			cipher.NewCFBDecrypter(b, iv).XORKeyStream(out, in)
		} else {
			cipher.NewCFBEncrypter(b, iv).XORKeyStream(out, in)
		}
	case algCBC:
		if decrypt {
			cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, in)
		} else {
			cipher.NewCBCEncrypter(b, iv).CryptBlocks(out, in)
		}
	case algCTR:
		cipher.NewCTR(b, iv).XORKeyStream(out, in)
	case algOFB:
		//lint:ignore SA1019 the TPM specifies OFB.
		cipher.NewOFB(b, iv).XORKeyStream(out, in)
	case algECB:
		for i := 0; i < len(in); i += 16 {
			if decrypt {
				b.Decrypt(out[i:], in[i:])
			} else {
				b.Encrypt(out[i:], in[i:])
			}
		}
	}
	return out
}

var symModes = []uint16{algCFB, algCBC, algCTR, algOFB, algECB}

// TestEncryptDecryptModes checks every mode against the standard library,
// for block-aligned and partial sizes, and that the returned IV continues
// the chain: two calls give what one call gives.
func TestEncryptDecryptModes(t *testing.T) {
	v := newTestTPM(t)
	for _, keyLen := range []int{16, 32} {
		key := bytes.Repeat([]byte{byte(keyLen)}, keyLen)
		h := loadSymKey(t, v, key, algNull, symAttrs)
		for _, mode := range symModes {
			iv := bytes.Repeat([]byte{7}, 16)
			if mode == algECB {
				iv = nil
			}
			for _, n := range []int{0, 1, 15, 16, 17, 48, 100, 1024} {
				if (mode == algCBC || mode == algECB) && n%16 != 0 {
					continue
				}
				t.Run(fmt.Sprintf("aes%d/%#x/%d", keyLen*8, mode, n), func(t *testing.T) {
					msg := make([]byte, n)
					for i := range msg {
						msg[i] = byte(i * 7)
					}
					ct, ivOut := symOut(admMust(t, v, rcSuccess, encryptDecrypt2(h, msg, false, mode, iv)))
					if want := goCrypt(key, mode, false, iv, msg); !bytes.Equal(ct, want) {
						t.Fatalf("ciphertext %x, want %x", ct, want)
					}
					pt, ivOut2 := symOut(admMust(t, v, rcSuccess, encryptDecrypt(h, ct, true, mode, iv)))
					if !bytes.Equal(pt, msg) {
						t.Fatalf("decrypted %x, want %x", pt, msg)
					}
					if !bytes.Equal(ivOut, ivOut2) || len(ivOut) != len(iv) {
						t.Errorf("ivOut %x after encryption, %x after decryption", ivOut, ivOut2)
					}
					// Chaining: the first 16 bytes, then the rest with
					// the returned IV.
					if n > 16 && mode != algECB {
						c1, iv1 := symOut(admMust(t, v, rcSuccess, encryptDecrypt2(h, msg[:16], false, mode, iv)))
						c2, _ := symOut(admMust(t, v, rcSuccess, encryptDecrypt2(h, msg[16:], false, mode, iv1)))
						if !bytes.Equal(append(c1, c2...), ct) {
							t.Errorf("chained encryption differs")
						}
					}
				})
			}
		}
	}
}

// TestEncryptDecryptKeyChecks checks the attribute and mode rules: a
// restricted key, a key without decrypt (or sign, for encryption), a mode
// other than the key's, and a key of another type are refused.
func TestEncryptDecryptKeyChecks(t *testing.T) {
	v := newTestTPM(t)
	key := bytes.Repeat([]byte{1}, 16)
	iv := make([]byte, 16)
	cfb := loadSymKey(t, v, key, algCFB, symAttrs)
	decOnly := loadSymKey(t, v, key, algCFB, oaDecrypt|oaUserWithAuth|oaNoDA)
	admMust(t, v, qualify(rcMode, rcP|3*rcN), encryptDecrypt2(cfb, []byte("x"), false, algCBC, iv))
	admMust(t, v, qualify(rcMode, rcP|2*rcN), encryptDecrypt(cfb, []byte("x"), false, algCBC, iv))
	admMust(t, v, rcSuccess, encryptDecrypt2(cfb, []byte("x"), false, algNull, iv))
	admMust(t, v, qualify(rcAttributes, rcH|rcN), encryptDecrypt2(decOnly, []byte("x"), false, algNull, iv))
	admMust(t, v, rcSuccess, encryptDecrypt2(decOnly, []byte("x"), true, algNull, iv))
	admMust(t, v, qualify(rcSize, rcP|4*rcN), encryptDecrypt2(cfb, []byte("x"), false, algNull, iv[:8]))
	admMust(t, v, qualify(rcSize, rcP|3*rcN), encryptDecrypt(cfb, []byte("x"), false, algNull, iv[:8]))
}

// TestDifferentialEncryptDecrypt compares both commands with the
// reference TPM byte for byte, with the same key loaded on both.
func TestDifferentialEncryptDecrypt(t *testing.T) {
	d := newDual(t)
	iv := []byte("0123456789abcdef")
	msg := bytes.Repeat([]byte("the quick brown fox "), 20)
	key := bytes.Repeat([]byte{0xA5}, 16)
	var loads [][]byte
	for _, mode := range append([]uint16{algNull}, symModes...) {
		loads = append(loads, symKeyCmd(key, mode, symAttrs))
	}
	loads = append(loads,
		symKeyCmd(key, algCFB, oaDecrypt|oaUserWithAuth|oaNoDA),
		symKeyCmd(key, algNull, oaSign|oaUserWithAuth|oaNoDA),
		symKeyCmd(bytes.Repeat([]byte{3}, 32), algNull, symAttrs),
		hmacKeyCmd([]byte("k"), algNull, 0, hmacAttrs|oaDecrypt))
	// A restricted key (a symmetric storage parent): only CreatePrimary
	// makes one, with a seed-derived key, so only the codes compare.
	restricted := bytesOf(u16b(algSymCipher), u16b(algSHA256), u32b(oaRestricted|oaDecrypt|oaUserWithAuth|oaNoDA|oaFixedTPM|oaFixedParent|oaSensitiveDataOrigin), u16b(0),
		u16b(algAES), u16b(128), u16b(algCFB), u16b(0))
	rsp := sameRC(t, d, rawCommand(ccCreatePrimary, []uint32{rhOwner}, 1, nil, b2b(bytesOf(b2b([]byte("keypw")), u16b(0))), b2b(restricted), b2b(nil), u32b(0)))
	if rcOf(rsp) == rcSuccess {
		h := admBE32(rsp[10:])
		for _, dec := range []bool{false, true} {
			sameResponse(t, d, encryptDecrypt2(h, msg[:16], dec, algNull, iv))
		}
		sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
	}
	// The reference TPM has three object slots: one key at a time.
	for _, load := range loads {
		rsp := sameResponse(t, d, load)
		if rcOf(rsp) != rcSuccess {
			continue
		}
		h := admBE32(rsp[10:])
		for _, mode := range append([]uint16{algNull, 0x99}, symModes...) {
			for _, dec := range []bool{false, true} {
				for _, n := range []int{0, 5, 16, 33, 64} {
					for _, ivIn := range [][]byte{iv, nil, iv[:15]} {
						sameResponse(t, d, encryptDecrypt2(h, msg[:n], dec, mode, ivIn))
						sameResponse(t, d, encryptDecrypt(h, msg[:n], dec, mode, ivIn))
					}
				}
			}
		}
		// Malformed parameters.
		for _, cmd := range [][]byte{
			rawCommand(ccEncryptDecrypt2, []uint32{h}, 1, []byte("keypw"), b2b(msg), []byte{2}, u16b(algCFB), b2b(iv)),
			rawCommand(ccEncryptDecrypt2, []uint32{h}, 1, []byte("keypw"), b2b(msg), []byte{0}, u16b(algCFB), b2b(make([]byte, 17))),
			rawCommand(ccEncryptDecrypt2, []uint32{h}, 1, []byte("keypw"), b2b(make([]byte, 1025)), []byte{0}, u16b(algCFB), b2b(iv)),
			rawCommand(ccEncryptDecrypt, []uint32{h}, 1, []byte("keypw"), []byte{0}, u16b(algCFB), b2b(iv)),
			rawCommand(ccEncryptDecrypt, []uint32{h}, 1, []byte("keypw"), []byte{0}, u16b(algCFB), b2b(iv), b2b(msg), []byte{0}),
			rawCommand(ccEncryptDecrypt, []uint32{h}, 1, []byte("wrong"), []byte{0}, u16b(algCFB), b2b(iv), b2b(msg)),
		} {
			sameResponse(t, d, cmd)
		}
		sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
	}
}

// hmacKeyCmd loads an HMAC key (keyed hash with sign) with LoadExternal.
func hmacKeyCmd(key []byte, scheme, hash uint16, attrs uint32) []byte {
	seed := bytes.Repeat([]byte{0x11}, 32)
	unique := sha256.Sum256(append(append([]byte(nil), seed...), key...))
	s := u16b(scheme)
	if scheme == algHMAC {
		s = bytesOf(s, u16b(hash))
	}
	pub := bytesOf(u16b(algKeyedHash), u16b(algSHA256), u32b(attrs), u16b(0), s, b2b(unique[:]))
	sens := bytesOf(u16b(algKeyedHash), b2b([]byte("keypw")), b2b(seed), b2b(key))
	return rawCommand(ccLoadExternal, nil, 0, nil, b2b(sens), b2b(pub), u32b(rhNull))
}

const hmacAttrs = oaSign | oaUserWithAuth | oaNoDA

func hmacCmd(h uint32, data []byte, alg uint16) []byte {
	return rawCommand(ccHMAC, []uint32{h}, 1, []byte("keypw"), b2b(data), u16b(alg))
}

// TestHMAC checks TPM2_HMAC against crypto/hmac, with the key's scheme
// and with the caller's algorithm.
func TestHMAC(t *testing.T) {
	v := newTestTPM(t)
	key := bytes.Repeat([]byte("k"), 100) // longer than a SHA-256 block
	// A keyed hash with sign and decrypt has no scheme: the caller
	// chooses the algorithm.
	h := admBE32(admMust(t, v, rcSuccess, hmacKeyCmd(key, algNull, 0, hmacAttrs|oaDecrypt)))
	h512 := loadSymKeyHMAC(t, v, key, algHMAC, algSHA512)
	msg := []byte("message to authenticate")
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	got := rspParams(admMust(t, v, rcSuccess, hmacCmd(h, msg, algSHA256)), false)
	if !bytes.Equal(got[2:], m.Sum(nil)) {
		t.Errorf("HMAC-SHA256 %x, want %x", got[2:], m.Sum(nil))
	}
	m = hmac.New(sha512.New, key)
	m.Write(msg)
	got = rspParams(admMust(t, v, rcSuccess, hmacCmd(h512, msg, algNull)), false)
	if !bytes.Equal(got[2:], m.Sum(nil)) {
		t.Errorf("HMAC-SHA512 %x, want %x", got[2:], m.Sum(nil))
	}
	admMust(t, v, qualify(rcValue, rcP|2*rcN), hmacCmd(h, msg, algNull))
	admMust(t, v, qualify(rcValue, rcP|2*rcN), hmacCmd(h512, msg, algSHA256))
}

func loadSymKeyHMAC(t testing.TB, tp transport.TPM, key []byte, scheme, hash uint16) uint32 {
	t.Helper()
	return admBE32(admMust(t, tp, rcSuccess, hmacKeyCmd(key, scheme, hash, hmacAttrs)))
}

// TestDifferentialHMAC compares TPM2_HMAC with the reference TPM.
func TestDifferentialHMAC(t *testing.T) {
	d := newDual(t)
	key := []byte("an hmac key")
	loads := [][]byte{
		hmacKeyCmd(key, algNull, 0, hmacAttrs|oaDecrypt),
		hmacKeyCmd(key, algHMAC, algSHA384, hmacAttrs),
		hmacKeyCmd(bytes.Repeat(key, 20), algHMAC, algSHA1, hmacAttrs),
		hmacKeyCmd(key, algNull, 0, oaUserWithAuth|oaNoDA),
		symKeyCmd(bytes.Repeat([]byte{1}, 16), algCFB, symAttrs),
	}
	for _, load := range loads {
		rsp := sameResponse(t, d, load)
		if rcOf(rsp) != rcSuccess {
			continue
		}
		h := admBE32(rsp[10:])
		for _, alg := range []uint16{algNull, algSHA1, algSHA256, algSHA384, algSHA512, 0x99} {
			sameResponse(t, d, hmacCmd(h, []byte("data"), alg))
			sameResponse(t, d, hmacCmd(h, nil, alg))
		}
		sameResponse(t, d, hmacCmd(h, make([]byte, 1025), algSHA256))
		sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
	}
	// A restricted HMAC key (only CreatePrimary makes one).
	restricted := bytesOf(u16b(algKeyedHash), u16b(algSHA256), u32b(oaRestricted|hmacAttrs|oaFixedTPM|oaFixedParent|oaSensitiveDataOrigin), u16b(0),
		u16b(algHMAC), u16b(algSHA256), u16b(0))
	rsp := sameRC(t, d, rawCommand(ccCreatePrimary, []uint32{rhOwner}, 1, nil, b2b(bytesOf(b2b([]byte("keypw")), u16b(0))), b2b(restricted), b2b(nil), u32b(0)))
	if rcOf(rsp) == rcSuccess {
		h := admBE32(rsp[10:])
		sameResponse(t, d, hmacCmd(h, []byte("data"), algNull))
		sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
	}
}

// TestDifferentialSignWithSymmetricKeyRefused stops a guest from crashing
// the TPM (and with it every VM's TPM in the process) with TPM2_Sign on a
// symmetric key that has the sign attribute (as tpm2-tools makes AES keys):
// such a key has no signing scheme, and Sign must refuse it with the
// reference's code, whatever scheme the caller names.
func TestDifferentialSignWithSymmetricKeyRefused(t *testing.T) {
	d := newDual(t)
	key := bytes.Repeat([]byte{0xA5}, 16)
	for _, attrs := range []uint32{symAttrs, oaSign | oaUserWithAuth | oaNoDA} {
		rsp := sameResponse(t, d, symKeyCmd(key, algCFB, attrs))
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("LoadExternal: rc %#x", rcOf(rsp))
		}
		h := admBE32(rsp[10:])
		for _, scheme := range [][]byte{
			u16b(algNull),
			bytesOf(u16b(algHMAC), u16b(algSHA256)),
			bytesOf(u16b(algECDSA), u16b(algSHA256)),
			bytesOf(u16b(algRSASSA), u16b(algSHA256)),
		} {
			rsp := sameResponse(t, d, rawCommand(ccSign, []uint32{h}, 1, []byte("keypw"), b2b(make([]byte, 32)), scheme,
				u16b(stHashCheck), u32b(rhNull), u16b(0)))
			if rcOf(rsp) == rcSuccess {
				t.Errorf("Sign with a symmetric key and scheme %x succeeded", scheme)
			}
			// The attestation commands sign with a key of the caller's
			// choice too.
			sameResponse(t, d, rawCommand(ccQuote, []uint32{h}, 1, []byte("keypw"), b2b(nil), scheme,
				u32b(1), u16b(algSHA256), []byte{3, 0xFF, 0, 0}))
			sameResponse(t, d, rawCommand(ccCertify, []uint32{h, h}, 2, []byte("keypw"), b2b(nil), scheme))
		}
		sameResponse(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(h)))
	}
}
