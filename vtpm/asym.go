package vtpm

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// Asymmetric secret transport (Part 1, section 11.4.10 "Secret Sharing"
// and Annex B.10 and C.6): a seed is sent to the holder of a decryption key
// either as RSA-OAEP ciphertext with a label, or as an ephemeral ECC point
// from which both sides derive the seed with one-pass Diffie-Hellman and
// KDFe. TPM2_MakeCredential and TPM2_ActivateCredential use the label
// "IDENTITY", TPM2_Duplicate, TPM2_Rewrap and TPM2_Import "DUPLICATE".

// Command codes of this file and of the credential, duplication and object
// commands (Part 2, section 6.5.2).
const (
	ccActivateCredential = 0x147
	ccCertifyCreation    = 0x14A
	ccDuplicate          = 0x14B
	ccRewrap             = 0x152
	ccECDHZGen           = 0x154
	ccImport             = 0x156
	ccRSADecrypt         = 0x159
	ccECDHKeyGen         = 0x163
	ccMakeCredential     = 0x168
	ccRSAEncrypt         = 0x174
	ccNVCertify          = 0x184
	ccCreateLoaded       = 0x191
)

// maxECCParameter bounds a TPM2B_ECC_PARAMETER on input: the reference
// TPM accepts coordinates up to the size of a P-521 one and then refuses
// them as points not on the curve, so a longer one here is also
// TPM_RC_ECC_POINT rather than TPM_RC_SIZE.
const maxECCParameter = 66

// Response codes used only by these commands.
const (
	rcNoResult = rcVer1 + 0x054 // TPM_RC_NO_RESULT
)

func init() {
	register(&cmdDef{cc: ccRSAEncrypt, handles: []handleKind{hkObject}, fn: (*TPM).cmdRSAEncrypt})
	register(&cmdDef{cc: ccRSADecrypt, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdRSADecrypt})
	register(&cmdDef{cc: ccECDHKeyGen, handles: []handleKind{hkObject}, fn: (*TPM).cmdECDHKeyGen})
	register(&cmdDef{cc: ccECDHZGen, handles: []handleKind{hkObject}, auth: 1, fn: (*TPM).cmdECDHZGen})
}

// ecdhCurve returns the crypto/ecdh curve of a TPM curve, or nil.
func ecdhCurve(id uint16) ecdh.Curve {
	switch id {
	case curveNISTP256:
		return ecdh.P256()
	case curveNISTP384:
		return ecdh.P384()
	}
	return nil
}

// ecdhPoint builds a crypto/ecdh public key from TPMS_ECC_POINT
// coordinates, which may be shorter than the field size. It fails with
// TPM_RC_ECC_POINT for anything that is not a point on the curve,
// including the point at infinity.
func ecdhPoint(curve uint16, x, y []byte) (*ecdh.PublicKey, uint32) {
	c := ecdhCurve(curve)
	n := curveBytes(curve)
	if c == nil || len(x) > n || len(y) > n {
		return nil, rcECCPoint
	}
	pt := make([]byte, 1+2*n)
	pt[0] = 4
	copy(pt[1+n-len(x):], x)
	copy(pt[1+2*n-len(y):], y)
	k, err := c.NewPublicKey(pt)
	if err != nil {
		return nil, rcECCPoint
	}
	return k, rcSuccess
}

// ecdhPrivate returns an object's ECC private key for key agreement.
func (o *object) ecdhPrivate() (*ecdh.PrivateKey, bool) {
	c := ecdhCurve(o.pub.Curve)
	n := curveBytes(o.pub.Curve)
	if c == nil || !o.HasPriv || len(o.Sensitive) > n {
		return nil, false
	}
	d := make([]byte, n)
	copy(d[n-len(o.Sensitive):], o.Sensitive)
	k, err := c.NewPrivateKey(d)
	clear(d)
	if err != nil {
		return nil, false
	}
	return k, true
}

// marshalECCPoint writes a TPMS_ECC_POINT of an uncompressed point.
func marshalECCPoint(w *writer, k *ecdh.PublicKey) {
	b := k.Bytes()
	n := (len(b) - 1) / 2
	w.b2b(b[1 : 1+n])
	w.b2b(b[1+n:])
}

// oaepLabel is a TPM label: the string and its terminating zero (Part 1,
// section 11.4.10.3).
func oaepLabel(label string) []byte { return append([]byte(label), 0) }

// labeledEncrypt makes a fresh seed the size of the key's nameAlg digest
// and encrypts it to the key (CryptSecretEncrypt in the reference
// implementation): RSA-OAEP with the nameAlg and the label, or an ephemeral
// ECDH key and KDFe(nameAlg, Z, label, Qe.x, Qs.x). It returns the seed and
// the TPM2B_ENCRYPTED_SECRET contents, or an unqualified response code.
func labeledEncrypt(o *object, label string) (seed, secret []byte, rc uint32) {
	p := o.pub
	if p.Attrs&oaDecrypt == 0 {
		return nil, nil, rcAttributes
	}
	if !isHash(p.NameAlg) {
		// An external key without a name algorithm has no hash for
		// OAEP or KDFe.
		return nil, nil, rcHash
	}
	h := hashOf(p.NameAlg)
	switch p.Type {
	case algRSA:
		pk, ok := o.publicKey()
		if !ok {
			return nil, nil, rcKey
		}
		seed = make([]byte, h.Size())
		random(seed)
		ct, err := rsa.EncryptOAEP(h.New(), rand.Reader, pk.(*rsa.PublicKey), seed, oaepLabel(label))
		if err != nil {
			clear(seed)
			return nil, nil, rcValue
		}
		return seed, ct, rcSuccess
	case algECC:
		qs, rc := ecdhPoint(p.Curve, p.X, p.Y)
		if rc != rcSuccess {
			return nil, nil, rcKey
		}
		eph, err := qs.Curve().GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, rcFailure
		}
		z, err := eph.ECDH(qs)
		if err != nil {
			return nil, nil, rcNoResult
		}
		var w writer
		marshalECCPoint(&w, eph.PublicKey())
		n := curveBytes(p.Curve)
		ephX := w.b[2 : 2+n]
		seed = tpm2.KDFe(h, z, label, ephX, p.X, h.Size()*8)
		clear(z)
		return seed, w.b, rcSuccess
	}
	return nil, nil, rcType
}

// labeledDecrypt recovers the seed that labeledEncrypt (or a remote
// party) encrypted to o (CryptSecretDecrypt in the reference
// implementation). Errors are unqualified; unmarshalling errors of an ECC
// point are those of the secret parameter.
func labeledDecrypt(o *object, label string, secret []byte) ([]byte, uint32) {
	p := o.pub
	if !isHash(p.NameAlg) {
		return nil, rcHash
	}
	h := hashOf(p.NameAlg)
	switch p.Type {
	case algRSA:
		hashAlg := p.NameAlg
		switch p.Scheme {
		case algNull:
		case algOAEP:
			hashAlg = p.SchemeHash
		default:
			return nil, rcScheme
		}
		k, ok := o.signer()
		if !ok {
			return nil, rcKey
		}
		priv := k.(*rsa.PrivateKey)
		if len(secret) != priv.Size() || new(big.Int).SetBytes(secret).Cmp(priv.N) >= 0 {
			return nil, rcSize
		}
		seed, err := rsa.DecryptOAEP(hashOf(hashAlg).New(), nil, priv, secret, oaepLabel(label))
		if err != nil {
			return nil, rcValue
		}
		if len(seed) > hashOf(hashAlg).Size() {
			clear(seed)
			return nil, rcValue
		}
		return seed, rcSuccess
	case algECC:
		r := newReader(secret)
		x := r.b2b(maxECCParameter)
		y := r.b2b(maxECCParameter)
		if !r.ok() {
			return nil, r.code
		}
		qe, rc := ecdhPoint(p.Curve, x, y)
		if rc != rcSuccess {
			return nil, rc
		}
		d, ok := o.ecdhPrivate()
		if !ok {
			return nil, rcKey
		}
		z, err := d.ECDH(qe)
		if err != nil {
			return nil, rcNoResult
		}
		seed := tpm2.KDFe(h, z, label, x, p.X, h.Size()*8)
		clear(z)
		return seed, rcSuccess
	}
	return nil, rcType
}

// rsaDecryptScheme is a TPMT_RSA_DECRYPT.
type rsaDecryptScheme struct{ scheme, hash uint16 }

// parseRSADecrypt decodes a TPMT_RSA_DECRYPT.
func parseRSADecrypt(r *reader) rsaDecryptScheme {
	var s rsaDecryptScheme
	s.scheme = r.u16()
	if !r.ok() {
		return s
	}
	switch s.scheme {
	case algNull, algRSAES:
	case algOAEP:
		s.hash = r.u16()
		if r.ok() && !isHash(s.hash) {
			r.fail(rcHash)
		}
	default:
		r.fail(rcValue)
	}
	return s
}

// rsaScheme picks the padding of RSA_Encrypt and RSA_Decrypt from the
// key's scheme and the caller's (Part 3, section 14.2): a key with a scheme
// accepts only that scheme or TPM_ALG_NULL.
func rsaScheme(o *object, in rsaDecryptScheme) (rsaDecryptScheme, uint32) {
	p := o.pub
	if p.Scheme == algNull {
		return in, rcSuccess
	}
	key := rsaDecryptScheme{p.Scheme, p.SchemeHash}
	if p.Scheme != algOAEP && p.Scheme != algRSAES {
		return key, qualify(rcScheme, rcH|rcN)
	}
	if in.scheme == algNull || in == key {
		return key, rcSuccess
	}
	return key, qualify(rcScheme, rcP|2*rcN)
}

// rsaDecryptKey checks that handle 1 is an RSA decryption key.
func (t *TPM) rsaDecryptKey(c *call) (*object, uint32) {
	o := t.object(c.h[0])
	if o.pub.Type != algRSA {
		return nil, qualify(rcKey, rcH|rcN)
	}
	if o.attrs()&oaDecrypt == 0 || o.attrs()&oaRestricted != 0 {
		return nil, qualify(rcAttributes, rcH|rcN)
	}
	return o, rcSuccess
}

// cmdRSAEncrypt is TPM2_RSA_Encrypt (Part 3, section 14.2). Without a
// scheme the message is raw RSA: it is left-padded with zeros to the
// modulus size and must be less than the modulus.
func (t *TPM) cmdRSAEncrypt(c *call) uint32 {
	r := &c.r
	msg := r.b2b(maxRSAKeyBytes)
	r.param(2)
	in := parseRSADecrypt(r)
	r.param(3)
	label := r.b2b(maxDataSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	o, rc := t.rsaDecryptKey(c)
	if rc != rcSuccess {
		return rc
	}
	if !labelTerminated(label) {
		return qualify(rcValue, rcP|3*rcN)
	}
	s, rc := rsaScheme(o, in)
	if rc != rcSuccess {
		return rc
	}
	pkAny, ok := o.publicKey()
	if !ok {
		return qualify(rcKey, rcH|rcN)
	}
	pk := pkAny.(*rsa.PublicKey)
	var ct []byte
	var err error
	switch s.scheme {
	case algOAEP:
		ct, err = rsa.EncryptOAEP(hashOf(s.hash).New(), rand.Reader, pk, msg, label)
	case algRSAES:
		ct, err = rsa.EncryptPKCS1v15(rand.Reader, pk, msg)
	case algNull:
		// As in the reference TPM, these errors carry no parameter
		// number.
		k := pk.Size()
		m := new(big.Int).SetBytes(msg)
		if len(msg) > k || m.Cmp(pk.N) >= 0 {
			return rcSize
		}
		c := new(big.Int).Exp(m, big.NewInt(int64(pk.E)), pk.N)
		ct = c.FillBytes(make([]byte, k))
	}
	if err != nil {
		return rcValue
	}
	c.w.b2b(ct)
	return rcSuccess
}

// labelTerminated reports whether an OAEP label is empty or ends with a
// zero octet, as the reference TPM requires (TPM_RC_VALUE otherwise); the
// label is used as given, terminator included.
func labelTerminated(l []byte) bool { return len(l) == 0 || l[len(l)-1] == 0 }

// cmdRSADecrypt is TPM2_RSA_Decrypt (Part 3, section 14.3).
func (t *TPM) cmdRSADecrypt(c *call) uint32 {
	r := &c.r
	ct := r.b2b(maxRSAKeyBytes)
	r.param(2)
	in := parseRSADecrypt(r)
	r.param(3)
	label := r.b2b(maxDataSize)
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	o, rc := t.rsaDecryptKey(c)
	if rc != rcSuccess {
		return rc
	}
	if !labelTerminated(label) {
		return qualify(rcValue, rcP|3*rcN)
	}
	s, rc := rsaScheme(o, in)
	if rc != rcSuccess {
		return rc
	}
	k, ok := o.signer()
	if !ok {
		return qualify(rcKey, rcH|rcN)
	}
	priv := k.(*rsa.PrivateKey)
	// As in the reference TPM, these errors carry no parameter number.
	if len(ct) != priv.Size() || new(big.Int).SetBytes(ct).Cmp(priv.N) >= 0 {
		return rcSize
	}
	var msg []byte
	var err error
	switch s.scheme {
	case algOAEP:
		msg, err = rsa.DecryptOAEP(hashOf(s.hash).New(), nil, priv, ct, label)
	case algRSAES:
		msg, err = rsa.DecryptPKCS1v15(nil, priv, ct)
	case algNull:
		msg, err = rawRSADecrypt(priv, ct)
	}
	if err != nil {
		return rcValue
	}
	c.w.b2b(msg)
	clear(msg)
	return rcSuccess
}

// eccKeyAgreementKey checks that handle 1 is an ECC key that may do key
// agreement: decrypt set, restricted clear, and an ECDH or no scheme.
func (t *TPM) eccKeyAgreementKey(c *call, needPriv bool) (*object, uint32) {
	o := t.object(c.h[0])
	if o.pub.Type != algECC {
		return nil, qualify(rcKey, rcH|rcN)
	}
	if o.attrs()&oaDecrypt == 0 || o.attrs()&oaRestricted != 0 {
		return nil, qualify(rcAttributes, rcH|rcN)
	}
	if o.pub.Scheme != algNull && o.pub.Scheme != algECDH {
		return nil, qualify(rcScheme, rcH|rcN)
	}
	if needPriv && !o.HasPriv {
		return nil, qualify(rcKey, rcH|rcN)
	}
	return o, rcSuccess
}

// cmdECDHKeyGen is TPM2_ECDH_KeyGen (Part 3, section 14.4): an ephemeral
// key pair, the shared point with the key's public point, and the
// ephemeral public point.
func (t *TPM) cmdECDHKeyGen(c *call) uint32 {
	if rc := c.r.done(); rc != rcSuccess {
		return rc
	}
	o := t.object(c.h[0])
	if o.pub.Type != algECC {
		return qualify(rcKey, rcH|rcN)
	}
	qs, rc := ecdhPoint(o.pub.Curve, o.pub.X, o.pub.Y)
	if rc != rcSuccess {
		return qualify(rcKey, rcH|rcN)
	}
	eph, err := qs.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return rcFailure
	}
	zp, ok := sharedPoint(o.pub.Curve, eph, qs)
	if !ok {
		return rcNoResult
	}
	s := c.w.begin2b()
	writeRawPoint(&c.w, zp)
	c.w.end2b(s)
	clear(zp)
	s = c.w.begin2b()
	marshalECCPoint(&c.w, eph.PublicKey())
	c.w.end2b(s)
	return rcSuccess
}

// cmdECDHZGen is TPM2_ECDH_ZGen (Part 3, section 14.5): the point
// d·inPoint of the key's private scalar d.
func (t *TPM) cmdECDHZGen(c *call) uint32 {
	r := &c.r
	b := r.b2b(2 * (2 + maxECCParameter))
	if rc := r.done(); rc != rcSuccess {
		return rc
	}
	if len(b) == 0 {
		return qualify(rcSize, rcP|rcN)
	}
	pr := newReader(b)
	pr.param(1)
	x := pr.b2b(maxECCParameter)
	y := pr.b2b(maxECCParameter)
	if !pr.ok() {
		return pr.code
	}
	if !pr.empty() {
		return qualify(rcSize, rcP|rcN)
	}
	o, rc := t.eccKeyAgreementKey(c, true)
	if rc != rcSuccess {
		return rc
	}
	q, rc := ecdhPoint(o.pub.Curve, x, y)
	if rc != rcSuccess {
		return qualify(rc, rcP|rcN)
	}
	d, ok := o.ecdhPrivate()
	if !ok {
		return qualify(rcKey, rcH|rcN)
	}
	zp, ok := sharedPoint(o.pub.Curve, d, q)
	if !ok {
		return rcNoResult
	}
	s := c.w.begin2b()
	writeRawPoint(&c.w, zp)
	c.w.end2b(s)
	clear(zp)
	return rcSuccess
}

// sharedPoint returns the point d·Q, uncompressed. crypto/ecdh returns only
// the x coordinate, and TPM2_ECDH_ZGen and TPM2_ECDH_KeyGen return the
// whole point, so this uses crypto/elliptic's scalar multiplication (which
// is constant time for the NIST curves since Go 1.19).
func sharedPoint(curve uint16, d *ecdh.PrivateKey, q *ecdh.PublicKey) ([]byte, bool) {
	c := curveOf(curve)
	if c == nil {
		return nil, false
	}
	qb := q.Bytes()
	n := curveBytes(curve)
	k := d.Bytes()
	//lint:ignore SA1019 the y coordinate of the product is needed.
	px, py := c.ScalarMult(new(big.Int).SetBytes(qb[1:1+n]), new(big.Int).SetBytes(qb[1+n:]), k)
	clear(k)
	if px.Sign() == 0 && py.Sign() == 0 {
		return nil, false
	}
	out := make([]byte, 1+2*n)
	out[0] = 4
	px.FillBytes(out[1 : 1+n])
	py.FillBytes(out[1+n:])
	return out, true
}

// writeRawPoint writes an uncompressed SEC 1 point as a TPMS_ECC_POINT.
func writeRawPoint(w *writer, pt []byte) {
	n := (len(pt) - 1) / 2
	w.b2b(pt[1 : 1+n])
	w.b2b(pt[1+n:])
}

// rawRSADecrypt is the RSA private operation without padding (TPM2_RSA_
// Decrypt with the null scheme), ct^d mod n. crypto/rsa does not export
// its constant-time private operation without padding, and math/big's
// exponentiation is not constant time, so the operation is blinded
// against a guest that times it: the base with a random r (ct·r^e, which
// the result divides by r), and each CRT exponent with a random multiple
// of p-1 or q-1, so that neither the input nor the exponent bits the
// arithmetic sees repeat between calls. The result is checked by
// re-encryption, so that a fault never releases a wrong value derived
// from the key.
func rawRSADecrypt(priv *rsa.PrivateKey, ct []byte) ([]byte, error) {
	if len(priv.Primes) != 2 {
		return nil, errors.New("vtpm: RSA key without its two primes")
	}
	n, p, q := priv.N, priv.Primes[0], priv.Primes[1]
	e := big.NewInt(int64(priv.E))
	c := new(big.Int).SetBytes(ct)
	var r, rInv *big.Int
	for {
		var err error
		if r, err = rand.Int(rand.Reader, n); err != nil {
			return nil, err
		}
		if r.Sign() > 0 {
			if rInv = new(big.Int).ModInverse(r, n); rInv != nil {
				break
			}
		}
	}
	blinded := new(big.Int).Exp(r, e, n)
	blinded.Mul(blinded, c).Mod(blinded, n)
	expBlind := func(d, prime *big.Int) (*big.Int, error) {
		k, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
		if err != nil {
			return nil, err
		}
		pm1 := new(big.Int).Sub(prime, big.NewInt(1))
		x := new(big.Int).Mul(k, pm1)
		x.Add(x, new(big.Int).Mod(d, pm1))
		return new(big.Int).Exp(new(big.Int).Mod(blinded, prime), x, prime), nil
	}
	m1, err := expBlind(priv.D, p)
	if err != nil {
		return nil, err
	}
	m2, err := expBlind(priv.D, q)
	if err != nil {
		return nil, err
	}
	// m = m2 + q·((m1 - m2)·q⁻¹ mod p)
	qInv := new(big.Int).ModInverse(q, p)
	if qInv == nil {
		return nil, errors.New("vtpm: RSA primes are not coprime")
	}
	h := new(big.Int).Sub(m1, m2)
	h.Mul(h, qInv).Mod(h, p)
	m := h.Mul(h, q).Add(h, m2)
	m.Mul(m, rInv).Mod(m, n)
	if new(big.Int).Exp(m, e, n).Cmp(c) != 0 {
		return nil, errors.New("vtpm: RSA private operation failed its check")
	}
	return m.FillBytes(make([]byte, priv.Size())), nil
}
