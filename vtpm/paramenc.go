package vtpm

import "encoding/binary"

// Session-based parameter encryption (Part 1, section 21).
//
// A session with the decrypt attribute carries the command's first
// parameter encrypted; one with the encrypt attribute makes the TPM encrypt
// the response's first parameter. Only commands whose first parameter is a
// TPM2B may use them; the encrypted bytes are the TPM2B's buffer, never its
// 2-byte size. The key is the session key concatenated with the authValue
// of the entity the session authorizes (empty for a session that
// authorizes nothing), and:
//
//   - AES-CFB: key and IV = KDFa(hash, key, "CFB", nonceNewer, nonceOlder,
//     keyBits+128), where nonceNewer is nonceCaller for commands and
//     nonceTPM for responses;
//   - XOR: the mask is KDFa(hash, key, "XOR", nonceNewer, nonceOlder,
//     8·size).
//
// The size of the encrypted TPM2B comes from the guest. It must fit in the
// parameter area that follows it: CVE-2023-1017 and CVE-2023-1018 were
// reads and writes past the command buffer in the reference
// implementation, which checked it against the whole parameter area,
// size field included. Here the check is exact, and the decryption works
// on a copy of the parameter area, never on the caller's buffer.

// paramEnc tells whether a command's first parameter (decrypt) and its
// response's first parameter (encrypt) are TPM2Bs that sessions may
// encrypt.
type paramEnc struct{ decrypt, encrypt bool }

// paramEncryption returns the parameter-encryption abilities of a command
// code, from the command attributes of the reference implementation
// (DECRYPT_2 and ENCRYPT_2). It covers every TPM 2.0 command, implemented
// or not, so that commands added later get them right.
func paramEncryption(cc uint32) paramEnc {
	switch cc {
	case ccHierarchyChangeAuth, ccNVDefineSpace, 0x12C /* PCR_SetAuthPolicy */, 0x12E, /* SetPrimaryPolicy */
		0x12F /* FieldUpgradeStart */, ccNVExtend, ccNVWrite, 0x13B /* NV_ChangeAuth */, ccPCREvent,
		0x141 /* FieldUpgradeData */, ccStirRandom, 0x149 /* PolicyNV */, 0x15B /* HMAC_Start */, 0x15C /* SequenceUpdate */, ccSign,
		0x16A /* PolicyAuthorize */, 0x16D /* PolicyCounterTimer */, 0x16E /* PolicyCpHash */, 0x170, /* PolicyNameHash */
		0x172 /* PolicyTicket */, ccVerifySignature, ccPolicyPCR, 0x183 /* PCR_SetAuthValue */, 0x185, /* EventSequenceComplete */
		0x186 /* HashSequenceStart */, 0x188 /* PolicyDuplicationSelect */, 0x190 /* PolicyTemplate */, 0x195, /* AC_Send */
		0x196 /* Policy_AC_SendSelect */ :
		return paramEnc{decrypt: true}
	case ccCreatePrimary, 0x133 /* GetCommandAuditDigest */, 0x13E /* SequenceComplete */, 0x147, /* ActivateCredential */
		ccCertify, 0x14A /* CertifyCreation */, 0x14B /* Duplicate */, 0x14C /* GetTime */, 0x14D, /* GetSessionAuditDigest */
		ccObjectChangeAuth, ccPolicySecret, 0x152 /* Rewrap */, ccCreate, 0x154 /* ECDH_ZGen */, 0x155 /* HMAC */, 0x156, /* Import */
		ccLoad, ccQuote, 0x159 /* RSA_Decrypt */, 0x160 /* PolicySigned */, ccLoadExternal, 0x168, /* MakeCredential */
		0x174 /* RSA_Encrypt */, ccStartAuthSession, ccHash, 0x184 /* NV_Certify */, 0x18B /* Commit */, 0x18D, /* ZGen_2Phase */
		0x191 /* CreateLoaded */, 0x193 /* EncryptDecrypt2 */, 0x197 /* CertifyX509 */ :
		return paramEnc{decrypt: true, encrypt: true}
	case ccNVRead, ccUnseal, 0x163 /* ECDH_KeyGen */, 0x164 /* EncryptDecrypt */, ccNVReadPublic, ccReadPublic,
		0x179 /* FirmwareRead */, ccGetRandom, ccGetTestResult, ccPolicyGetDigest, 0x18E /* EC_Ephemeral */ :
		return paramEnc{encrypt: true}
	}
	return paramEnc{}
}

// paramKey is the key of parameter encryption for session i: the session
// key and, for an authorization session, the authorized entity's authValue
// (whether or not the HMAC includes it).
func (t *TPM) paramKey(c *call, i int) []byte {
	in := &c.sess[i]
	var auth []byte
	if in.assoc != rhUnassigned {
		auth = t.entityAuth(in.assoc)
	}
	return in.s.hmacKey(auth, true)
}

// decryptCommand decrypts the first parameter of the command for its
// decrypt session (CryptParameterDecryption). It returns a decrypted copy
// of the parameter area; the command buffer is left as it is, since it
// belongs to the caller and cpHash covers the encrypted bytes. A size
// field that claims more bytes than follow it is TPM_RC_SIZE, and a
// parameter area too short for a size field TPM_RC_INSUFFICIENT, both
// qualified with the session number.
func (t *TPM) decryptCommand(c *call, params []byte) ([]byte, uint32) {
	i := c.dec - 1
	q := rcS | uint32(i+1)<<8
	if len(params) < 2 {
		return nil, qualify(rcInsufficient, q)
	}
	n := int(binary.BigEndian.Uint16(params))
	if n > len(params)-2 {
		return nil, qualify(rcSize, q)
	}
	out := make([]byte, len(params))
	copy(out, params)
	in := &c.sess[i]
	s := in.s
	key := t.paramKey(c, i)
	defer clear(key)
	cryptParam(s, key, in.nonce, s.nonceTPM, out[2:2+n], false)
	return out, rcSuccess
}

// encryptResponse encrypts the first parameter of the response for the
// command's encrypt session (CryptParameterEncryption), after the nonces
// rolled. The handlers wrote the response, so its size field is in range;
// it is checked all the same.
func (t *TPM) encryptResponse(c *call, params []byte) {
	if len(params) < 2 {
		return
	}
	n := int(binary.BigEndian.Uint16(params))
	if n > len(params)-2 {
		return
	}
	i := c.enc - 1
	in := &c.sess[i]
	s := in.s
	key := t.paramKey(c, i)
	defer clear(key)
	cryptParam(s, key, s.nonceTPM, in.nonce, params[2:2+n], true)
}

// cryptParam encrypts (encrypt) or decrypts b in place with the session's
// parameter-encryption algorithm.
func cryptParam(s *session, key, nonceNewer, nonceOlder, b []byte, encrypt bool) {
	if len(b) == 0 {
		return
	}
	switch s.symAlg {
	case algXOR:
		mask := kdfa(s.hashAlg, key, "XOR", nonceNewer, nonceOlder, len(b)*8)
		for j := range b {
			b[j] ^= mask[j]
		}
		clear(mask)
	case algAES:
		kb := int(s.symBits) / 8
		k := kdfa(s.hashAlg, key, "CFB", nonceNewer, nonceOlder, (kb+16)*8)
		if encrypt {
			cfbEncryptIV(k[:kb], k[kb:], b)
		} else {
			cfbDecryptIV(k[:kb], k[kb:], b)
		}
		clear(k)
	}
}

// kdfa is KDFa (Part 1, section 11.4.10.2), the SP 800-108 counter-mode
// KDF with HMAC of the session's hash: the concatenation of HMAC(key,
// i || label || 0 || contextU || contextV || bits) for i = 1, 2, ...,
// truncated to bits (a multiple of 8 here). It is go-tpm's tpm2.KDFa
// without the reflection of encoding/binary and with one HMAC state, for
// the per-command keys of parameter encryption.
func kdfa(alg uint16, key []byte, label string, contextU, contextV []byte, bits int) []byte {
	n := bits / 8
	m := newHMAC(alg, key)
	out := make([]byte, 0, n+m.Size())
	var buf [4 + 16]byte // counter, then label || 0 if it fits
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], uint32(bits))
	lb := append(buf[4:4], label...)
	lb = append(lb, 0)
	for i := uint32(1); len(out) < n; i++ {
		m.Reset()
		binary.BigEndian.PutUint32(buf[:4], i)
		m.Write(buf[:4])
		m.Write(lb)
		m.Write(contextU)
		m.Write(contextV)
		m.Write(size[:])
		out = m.Sum(out)
	}
	return out[:n]
}
