package vtpm

import (
	"crypto/aes"
	"crypto/cipher"
)

// Symmetric encryption with a loaded AES key: TPM2_EncryptDecrypt and
// TPM2_EncryptDecrypt2 (Part 3, sections 15.2 and 15.3), in CFB, CBC, CTR,
// OFB and ECB modes, with the IV chaining of the reference implementation
// (CryptSymmetricEncrypt) so that a caller can encrypt a long message in
// pieces.

const (
	ccEncryptDecrypt  = 0x164
	ccEncryptDecrypt2 = 0x193

	maxSymBlock = 16 // MAX_SYM_BLOCK_SIZE: TPM2B_IV
)

func init() {
	register(&cmdDef{cc: ccEncryptDecrypt, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdEncryptDecrypt})
	register(&cmdDef{cc: ccEncryptDecrypt2, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdEncryptDecrypt2})

}

// symParams are the parameters the two commands share.
type symParams struct {
	decrypt bool
	mode    uint16
	iv      []byte
	data    []byte
}

// parseCipherMode reads a TPMI_ALG_CIPHER_MODE+.
func parseCipherMode(r *reader) uint16 {
	m := r.u16()
	if r.ok() {
		switch m {
		case algCTR, algOFB, algCBC, algCFB, algECB, algNull:
		default:
			r.fail(rcMode)
		}
	}
	return m
}

func parseYesNo(r *reader) bool {
	v := r.u8()
	if r.ok() && v > 1 {
		r.fail(rcValue)
	}
	return v == 1
}

// cmdEncryptDecrypt is TPM2_EncryptDecrypt: decrypt, mode, ivIn, inData.
func (t *TPM) cmdEncryptDecrypt(c *call) uint32 {
	r := &c.r
	var p symParams
	p.decrypt = parseYesNo(r)
	r.param(2)
	p.mode = parseCipherMode(r)
	r.param(3)
	p.iv = r.b2b(maxSymBlock)
	r.param(4)
	p.data = r.b2b(maxBuffer)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	return t.encryptDecrypt(c, &p, 2, 3, 4)
}

// cmdEncryptDecrypt2 is TPM2_EncryptDecrypt2: inData first, so that it can
// be encrypted by a session.
func (t *TPM) cmdEncryptDecrypt2(c *call) uint32 {
	r := &c.r
	var p symParams
	p.data = r.b2b(maxBuffer)
	r.param(2)
	p.decrypt = parseYesNo(r)
	r.param(3)
	p.mode = parseCipherMode(r)
	r.param(4)
	p.iv = r.b2b(maxSymBlock)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	return t.encryptDecrypt(c, &p, 3, 4, 1)
}

// encryptDecrypt is EncryptDecryptShared of the reference implementation.
// modeP, ivP and dataP are the parameter numbers for errors.
func (t *TPM) encryptDecrypt(c *call, p *symParams, modeP, ivP, dataP uint32) uint32 {
	o := t.object(c.h[0])
	pub := o.pub
	if pub.Type != algSymCipher || !o.HasPriv {
		return qualify(rcKey, rcH|rcN)
	}
	a := pub.Attrs
	// A restricted key only protects its children; decryption needs
	// decrypt and encryption sign (which means "encrypt" for a
	// symmetric key).
	if a&oaRestricted != 0 || p.decrypt && a&oaDecrypt == 0 || !p.decrypt && a&oaSign == 0 {
		return qualify(rcAttributes, rcH|rcN)
	}
	mode := pub.SymMode
	if mode != algNull {
		if p.mode != algNull && p.mode != mode {
			return qualify(rcMode, rcP|modeP<<8)
		}
	} else {
		if p.mode == algNull {
			return qualify(rcMode, rcP|modeP<<8)
		}
		mode = p.mode
	}
	if pub.SymAlg != algAES || len(o.Sensitive) != int(pub.SymBits)/8 {
		return qualify(rcKey, rcH|rcN)
	}
	if mode == algECB && len(p.iv) != 0 || mode != algECB && len(p.iv) != aes.BlockSize {
		return qualify(rcSize, rcP|ivP<<8)
	}
	if (mode == algCBC || mode == algECB) && len(p.data)%aes.BlockSize != 0 {
		return qualify(rcSize, rcP|dataP<<8)
	}
	b, err := aes.NewCipher(o.Sensitive)
	if err != nil {
		return rcFailure
	}
	var iv [aes.BlockSize]byte
	copy(iv[:], p.iv)
	ivLen := len(p.iv)
	s := c.w.begin2b()
	c.w.raw(p.data)
	out := c.w.b[s:]
	if len(out) != 0 {
		symCrypt(b, mode, p.decrypt, &iv, out)
	}
	c.w.end2b(s)
	c.w.b2b(iv[:ivLen])
	clear(iv[:])
	return rcSuccess
}

// symCrypt encrypts or decrypts buf in place and leaves in iv the IV that
// continues the chain, as the reference implementation does: CBC and CFB
// the last ciphertext block (for CFB, a final partial block's ciphertext
// followed by zeros), CTR the next counter, OFB the last keystream block.
// ECB has no IV.
func symCrypt(b cipher.Block, mode uint16, decrypt bool, iv *[aes.BlockSize]byte, buf []byte) {
	const bs = aes.BlockSize
	var ks [bs]byte
	switch mode {
	case algECB:
		for i := 0; i < len(buf); i += bs {
			if decrypt {
				b.Decrypt(buf[i:i+bs], buf[i:i+bs])
			} else {
				b.Encrypt(buf[i:i+bs], buf[i:i+bs])
			}
		}
	case algCBC:
		if decrypt {
			var last [bs]byte
			copy(last[:], buf[len(buf)-bs:])
			cipher.NewCBCDecrypter(b, iv[:]).CryptBlocks(buf, buf)
			*iv = last
		} else {
			cipher.NewCBCEncrypter(b, iv[:]).CryptBlocks(buf, buf)
			copy(iv[:], buf[len(buf)-bs:])
		}
	case algCTR:
		cipher.NewCTR(b, iv[:]).XORKeyStream(buf, buf)
		addCounter(iv, uint64((len(buf)+bs-1)/bs))
	case algOFB:
		for i := 0; i < len(buf); i += bs {
			b.Encrypt(iv[:], iv[:])
			subtleXOR(buf[i:min(i+bs, len(buf))], iv[:])
		}
	case algCFB:
		for i := 0; i < len(buf); i += bs {
			b.Encrypt(ks[:], iv[:])
			chunk := buf[i:min(i+bs, len(buf))]
			if decrypt {
				copy(iv[:], chunk)
				subtleXOR(chunk, ks[:])
			} else {
				subtleXOR(chunk, ks[:])
				copy(iv[:], chunk)
			}
			clear(iv[len(chunk):])
		}
		clear(ks[:])
	}
}

// subtleXOR XORs src into dst (len(dst) <= len(src)).
func subtleXOR(dst, src []byte) {
	for i := range dst {
		dst[i] ^= src[i]
	}
}

// addCounter adds n to the 128-bit big-endian counter ctr.
func addCounter(ctr *[aes.BlockSize]byte, n uint64) {
	for i := aes.BlockSize - 1; i >= 0 && n != 0; i-- {
		s := uint64(ctr[i]) + n&0xFF
		ctr[i] = byte(s)
		n = n>>8 + s>>8
	}
}
