package vtpm

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// object is a loaded key or data object. Public is the marshalled
// TPMT_PUBLIC; the sensitive part is kept decoded. The crypto keys are built
// lazily from Sensitive on first use, so that opening a sealed state with
// many keys costs no public-key arithmetic.
type object struct {
	Public    []byte `cbor:"1,keyasint"`
	Auth      []byte `cbor:"2,keyasint"`
	Seed      []byte `cbor:"3,keyasint"` // seedValue: protection seed or obfuscation value
	Sensitive []byte `cbor:"4,keyasint"` // ECC d, RSA p, keyed-hash data or symmetric key
	HasPriv   bool   `cbor:"5,keyasint"` // false for public-only LoadExternal objects
	Hierarchy uint32 `cbor:"6,keyasint"`
	QName     []byte `cbor:"7,keyasint"` // qualified name
	External  bool   `cbor:"8,keyasint"` // loaded with LoadExternal: never persistent

	pub  *publicArea
	name []byte
	priv crypto.Signer // *ecdsa.PrivateKey or *rsa.PrivateKey, built on demand
	pk   crypto.PublicKey
}

// init decodes Public and computes the name. It is run on every object that
// enters the TPM, including objects decoded from a sealed state.
func (o *object) init() bool {
	r := newReader(o.Public)
	p := parsePublic(&r, true)
	if p == nil || !r.empty() {
		return false
	}
	o.pub = p
	o.name = nameOf(p.NameAlg, o.Public)
	return true
}

func (o *object) attrs() uint32 { return o.pub.Attrs }

func (o *object) clear() {
	clear(o.Auth)
	clear(o.Seed)
	clear(o.Sensitive)
	o.priv = nil
}

func (o *object) isStorageParent() bool {
	a := o.pub.Attrs
	return o.HasPriv && a&oaRestricted != 0 && a&oaDecrypt != 0 && a&oaSign == 0 &&
		(o.pub.Type == algRSA || o.pub.Type == algECC) && o.pub.SymAlg == algAES && o.pub.SymMode == algCFB &&
		isHash(o.pub.NameAlg) // its nameAlg keys its children's protection
}

func curveOf(id uint16) elliptic.Curve {
	switch id {
	case curveNISTP256:
		return elliptic.P256()
	case curveNISTP384:
		return elliptic.P384()
	}
	return nil
}

func curveBytes(id uint16) int {
	if id == curveNISTP384 {
		return 48
	}
	return 32
}

// publicKey returns the object's public key as a Go value.
func (o *object) publicKey() (crypto.PublicKey, bool) {
	if o.pk != nil {
		return o.pk, true
	}
	p := o.pub
	switch p.Type {
	case algECC:
		c := curveOf(p.Curve)
		n := curveBytes(p.Curve)
		if c == nil || len(p.X) > n || len(p.Y) > n {
			return nil, false
		}
		pt := make([]byte, 1+2*n)
		pt[0] = 4
		copy(pt[1+n-len(p.X):], p.X)
		copy(pt[1+2*n-len(p.Y):], p.Y)
		k, err := ecdsa.ParseUncompressedPublicKey(c, pt)
		if err != nil {
			return nil, false
		}
		o.pk = k
	case algRSA:
		if len(p.Unique) != int(p.KeyBits)/8 || p.Unique[0] == 0 {
			return nil, false
		}
		e := int(p.Exponent)
		if e == 0 {
			e = 65537
		}
		o.pk = &rsa.PublicKey{N: new(big.Int).SetBytes(p.Unique), E: e}
	default:
		return nil, false
	}
	return o.pk, true
}

// signer returns the private key, building it on first use.
func (o *object) signer() (crypto.Signer, bool) {
	if o.priv != nil {
		return o.priv, true
	}
	if !o.HasPriv {
		return nil, false
	}
	p := o.pub
	switch p.Type {
	case algECC:
		c := curveOf(p.Curve)
		if c == nil || len(o.Sensitive) > curveBytes(p.Curve) {
			return nil, false
		}
		d := make([]byte, curveBytes(p.Curve))
		copy(d[len(d)-len(o.Sensitive):], o.Sensitive)
		k, err := ecdsa.ParseRawPrivateKey(c, d)
		clear(d)
		if err != nil {
			return nil, false
		}
		o.priv = k
	case algRSA:
		pk, ok := o.publicKey()
		if !ok {
			return nil, false
		}
		k, ok := rsaFromPrime(pk.(*rsa.PublicKey), o.Sensitive)
		if !ok {
			return nil, false
		}
		o.priv = k
	default:
		return nil, false
	}
	return o.priv, true
}

func rsaFromPrime(pub *rsa.PublicKey, prime []byte) (*rsa.PrivateKey, bool) {
	p := new(big.Int).SetBytes(prime)
	if p.Sign() == 0 {
		return nil, false
	}
	q, m := new(big.Int).DivMod(pub.N, p, new(big.Int))
	if m.Sign() != 0 || q.Cmp(big.NewInt(1)) <= 0 || p.Cmp(big.NewInt(1)) <= 0 {
		return nil, false
	}
	one := big.NewInt(1)
	phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
	d := new(big.Int).ModInverse(big.NewInt(int64(pub.E)), phi)
	if d == nil {
		return nil, false
	}
	k := &rsa.PrivateKey{PublicKey: *pub, D: d, Primes: []*big.Int{p, q}}
	k.Precompute()
	if k.Validate() != nil {
		return nil, false
	}
	return k, true
}

// checkTemplate validates a creation template (Part 1, section 27.2 and
// Part 3, section 12.1 "PublicAttributesValidation"). It returns an
// unqualified response code.
func checkTemplate(p *publicArea, sc *sensitiveCreate) uint32 {
	a := p.Attrs
	if a&oaReserved != 0 {
		return rcReservedBits
	}
	if p.NameAlg == algNull {
		return rcHash
	}
	if len(p.AuthPolicy) != 0 && len(p.AuthPolicy) != hashOf(p.NameAlg).Size() {
		return rcSize
	}
	if a&oaFixedTPM != 0 && a&oaFixedParent == 0 {
		return rcAttributes
	}
	restricted := a&oaRestricted != 0
	sign := a&oaSign != 0
	decrypt := a&oaDecrypt != 0
	if restricted && sign && decrypt {
		return rcAttributes
	}
	if a&oaX509Sign != 0 {
		return rcAttributes
	}
	switch p.Type {
	case algKeyedHash:
		if len(sc.Data) != 0 && a&oaSensitiveDataOrigin != 0 {
			return rcAttributes
		}
		if !sign && !decrypt {
			// A sealed data object: the caller provides the data.
			if a&oaSensitiveDataOrigin != 0 {
				return rcAttributes
			}
			if p.Scheme != algNull {
				return rcScheme
			}
			if restricted {
				return rcAttributes
			}
			return rcSuccess
		}
		if sign && decrypt && p.Scheme != algNull {
			return rcScheme
		}
		if sign && p.Scheme == algXOR || decrypt && p.Scheme == algHMAC {
			return rcScheme
		}
		if restricted && p.Scheme == algNull {
			return rcScheme
		}
	case algSymCipher:
		if len(sc.Data) != 0 && a&oaSensitiveDataOrigin != 0 {
			return rcAttributes
		}
		// As the reference TPM: a symmetric key must sign (its mode is
		// then a MAC, in later revisions), decrypt, or both; tpm2-tools'
		// default AES key sets both.
		if !sign && !decrypt {
			return rcAttributes
		}
		if p.SymMode == algNull && !restricted {
			return rcMode
		}
	case algRSA, algECC:
		if len(sc.Data) != 0 {
			return rcSize
		}
		if a&oaSensitiveDataOrigin == 0 {
			return rcAttributes
		}
		if !sign && !decrypt {
			return rcAttributes
		}
		if p.Type == algRSA && p.Exponent != 0 && p.Exponent != 65537 {
			return rcRange
		}
		if p.Type == algECC && p.KDF != algNull {
			return rcKDF
		}
		if restricted && decrypt {
			// A storage parent: AES in CFB mode, no scheme.
			if p.SymAlg != algAES || p.SymMode != algCFB {
				return rcSymmetric
			}
			if p.Scheme != algNull {
				return rcScheme
			}
			return rcSuccess
		}
		if p.SymAlg != algNull {
			return rcSymmetric
		}
		if restricted && sign {
			if p.Scheme == algNull {
				return rcScheme
			}
		}
		return asymSchemeRC(p)
	}
	return rcSuccess
}

// asymSchemeRC checks that an RSA or ECC key's scheme fits its sign and
// decrypt attributes (part of SchemeChecks in the reference
// implementation): a signing scheme only for a key that signs and does not
// decrypt, a decryption scheme only for one that decrypts and does not
// sign. The signing commands rely on it: an RSAES scheme has no hash.
func asymSchemeRC(p *publicArea) uint32 {
	sign := p.Attrs&oaSign != 0
	decrypt := p.Attrs&oaDecrypt != 0
	switch p.Scheme {
	case algRSASSA, algRSAPSS, algECDSA:
		if !sign || decrypt {
			return rcScheme
		}
	case algOAEP, algRSAES, algECDH:
		if !decrypt || sign {
			return rcScheme
		}
	}
	return rcSuccess
}

// deriver produces the key material of a primary object from its
// hierarchy's primary seed, the template's name and the caller's sensitive
// data, with KDFa (Part 1, section 11.4.10.2):
//
//	KDFa(nameAlg, seed, label, Name(template), counter || data, bits)
//
// The same template on the same seed always yields the same key.
type deriver struct {
	hier uint32
	h    crypto.Hash
	seed []byte
	name []byte
	data []byte
	ctxV []byte
}

func (d *deriver) bytes(label string, counter uint32, bits int) []byte {
	d.ctxV = binary.BigEndian.AppendUint32(d.ctxV[:0], counter)
	d.ctxV = append(d.ctxV, d.data...)
	return tpm2.KDFa(d.h, d.seed, label, d.name, d.ctxV, bits)
}

// eccPrivate derives an ECC private key by rejection sampling (FIPS 186-5,
// A.4.2): candidates from the KDF until one lies in [1, n-1].
func (d *deriver) eccPrivate(c elliptic.Curve) *ecdsa.PrivateKey {
	n := (c.Params().BitSize + 7) / 8
	for i := uint32(1); ; i++ {
		b := d.bytes("ECC", i, n*8)
		k, err := ecdsa.ParseRawPrivateKey(c, b)
		clear(b)
		if err == nil {
			return k
		}
	}
}

// rsaPrime derives an RSA prime of bits bits with p-1 coprime to e,
// starting at counter *i.
func (d *deriver) rsaPrime(bits int, e int64, i *uint32) *big.Int {
	one := big.NewInt(1)
	E := big.NewInt(e)
	g := new(big.Int)
	for {
		*i++
		b := d.bytes("RSA", *i, bits)
		b[0] |= 0xC0
		b[len(b)-1] |= 1
		p := new(big.Int).SetBytes(b)
		clear(b)
		if !smallPrimeSieve(p) {
			continue
		}
		if g.GCD(nil, nil, new(big.Int).Sub(p, one), E).Cmp(one) != 0 {
			continue
		}
		if p.ProbablyPrime(20) {
			return p
		}
	}
}

var smallPrimes = func() []uint64 {
	var ps []uint64
	for n := uint64(3); len(ps) < 200; n += 2 {
		prime := true
		for _, q := range ps {
			if q*q > n {
				break
			}
			if n%q == 0 {
				prime = false
				break
			}
		}
		if prime {
			ps = append(ps, n)
		}
	}
	return ps
}()

func smallPrimeSieve(p *big.Int) bool {
	var m big.Int
	for _, q := range smallPrimes {
		if m.Mod(p, m.SetUint64(q)).Sign() == 0 {
			return false
		}
	}
	return true
}

// rsaKey derives an RSA key of the template's size (FIPS 186-5, A.1.3 in
// spirit: probable primes from a deterministic bit source).
func (d *deriver) rsaKey(bits int) (n, p []byte) {
	var i uint32
	e := int64(65537)
	for {
		P := d.rsaPrime(bits/2, e, &i)
		Q := d.rsaPrime(bits/2, e, &i)
		// |P - Q| > 2^(bits/2 - 100)
		diff := new(big.Int).Sub(P, Q)
		if diff.Abs(diff).BitLen() <= bits/2-100 {
			continue
		}
		N := new(big.Int).Mul(P, Q)
		if N.BitLen() != bits {
			continue
		}
		return N.FillBytes(make([]byte, bits/8)), P.FillBytes(make([]byte, bits/16))
	}
}

// deriveRSA derives RSA primary keys; FuzzSend replaces it with a fixed
// key so that fuzzing explores the parsers instead of prime generation.
var deriveRSA = (*deriver).rsaKey

// generateRSA makes the RSA keys of TPM2_Create; FuzzSend replaces it too.
var generateRSA = func(bits int) (*rsa.PrivateKey, error) { return rsa.GenerateKey(nil, bits) }

// rsaCacheEntry caches a derived RSA primary key: deriving RSA primes costs
// tens of milliseconds, so the result is kept in the sealed state. The
// cache only accelerates: a miss derives the same key again.
type rsaCacheEntry struct {
	Hierarchy uint32   `cbor:"4,keyasint"`
	ID        [32]byte `cbor:"1,keyasint"` // HMAC(seed, template name || data)
	Modulus   []byte   `cbor:"2,keyasint"`
	Prime     []byte   `cbor:"3,keyasint"`
}

func rsaCacheID(seed, name, data []byte) [32]byte {
	m := hmac.New(sha256.New, seed)
	m.Write([]byte("vtpm rsa primary cache\x00"))
	m.Write(name)
	m.Write(data)
	var id [32]byte
	m.Sum(id[:0])
	return id
}

// newObject fills in the public and sensitive parts of a new object from a
// validated template. If d is not nil the key material is derived (primary
// objects); otherwise it is random.
func (t *TPM) newObject(p *publicArea, sc *sensitiveCreate, d *deriver) (*object, uint32) {
	o := &object{HasPriv: true, Auth: append([]byte(nil), trimZeros(sc.UserAuth)...)}
	hsize := hashOf(p.NameAlg).Size()
	needSeed := p.Type == algKeyedHash || p.Type == algSymCipher ||
		p.Attrs&oaRestricted != 0 && p.Attrs&oaDecrypt != 0
	if needSeed {
		if d != nil {
			o.Seed = d.bytes("SEED", 0, hsize*8)
		} else {
			o.Seed = make([]byte, hsize)
			random(o.Seed)
		}
	}
	switch p.Type {
	case algECC:
		c := curveOf(p.Curve)
		var k *ecdsa.PrivateKey
		if d != nil {
			k = d.eccPrivate(c)
		} else {
			var err error
			if k, err = ecdsa.GenerateKey(c, nil); err != nil {
				return nil, rcFailure
			}
		}
		raw, err := k.Bytes()
		if err != nil {
			return nil, rcFailure
		}
		o.Sensitive = raw
		pt, err := k.PublicKey.Bytes()
		if err != nil {
			return nil, rcFailure
		}
		n := curveBytes(p.Curve)
		p.X = pt[1 : 1+n]
		p.Y = pt[1+n:]
		o.priv = k
		o.pk = &k.PublicKey
	case algRSA:
		bits := int(p.KeyBits)
		if d != nil {
			id := rsaCacheID(d.seed, d.name, d.data)
			var hit *rsaCacheEntry
			for i := range t.s.RSACache {
				if hmac.Equal(t.s.RSACache[i].ID[:], id[:]) {
					hit = &t.s.RSACache[i]
					break
				}
			}
			if hit == nil {
				n, pr := deriveRSA(d, bits)
				if len(t.s.RSACache) >= maxRSAPrimaryCache {
					clear(t.s.RSACache[0].Prime)
					t.s.RSACache = append(t.s.RSACache[:0], t.s.RSACache[1:]...)
				}
				t.s.RSACache = append(t.s.RSACache, rsaCacheEntry{Hierarchy: d.hier, ID: id, Modulus: n, Prime: pr})
				hit = &t.s.RSACache[len(t.s.RSACache)-1]
			}
			p.Unique = append([]byte(nil), hit.Modulus...)
			o.Sensitive = append([]byte(nil), hit.Prime...)
		} else {
			k, err := generateRSA(bits)
			if err != nil {
				return nil, rcFailure
			}
			p.Unique = k.N.FillBytes(make([]byte, bits/8))
			o.Sensitive = k.Primes[0].FillBytes(make([]byte, bits/16))
			o.priv = k
			o.pk = &k.PublicKey
		}
	case algKeyedHash, algSymCipher:
		switch {
		case len(sc.Data) != 0 || p.Type == algKeyedHash && p.Attrs&(oaSign|oaDecrypt) == 0:
			o.Sensitive = append([]byte(nil), sc.Data...)
		default:
			n := hsize
			label := "KEYEDHASH"
			if p.Type == algSymCipher {
				n = int(p.SymBits) / 8
				label = "SYMCIPHER"
			}
			if d != nil {
				o.Sensitive = d.bytes(label, 0, n*8)
			} else {
				o.Sensitive = make([]byte, n)
				random(o.Sensitive)
			}
		}
		p.Unique = digestOf(p.NameAlg, o.Seed, o.Sensitive)
	}
	o.Public = p.bytes()
	o.pub = p
	o.name = nameOf(p.NameAlg, o.Public)
	return o, rcSuccess
}

// marshalSensitive encodes a TPM2B_SENSITIVE (Part 2, section 12.3.3).
func (o *object) marshalSensitive(w *writer) {
	s := w.begin2b()
	w.u16(o.pub.Type)
	w.b2b(o.Auth)
	w.b2b(o.Seed)
	w.b2b(o.Sensitive)
	w.end2b(s)
}

// parseSensitive decodes a TPMT_SENSITIVE into o.
func parseSensitive(r *reader, o *object) {
	typ := r.u16()
	if r.ok() && typ != o.pub.Type {
		r.fail(rcType)
		return
	}
	o.Auth = append([]byte(nil), trimZeros(r.b2b(maxDigestSize))...)
	o.Seed = append([]byte(nil), r.b2b(maxDigestSize)...)
	max := maxSymData
	switch o.pub.Type {
	case algRSA:
		max = maxRSAKeyBytes / 2
	case algECC:
		max = maxECCKeyBytes
	}
	o.Sensitive = append([]byte(nil), r.b2b(max)...)
	o.HasPriv = true
}

// checkBinding verifies that a loaded sensitive area belongs to its public
// area (TPM_RC_BINDING, Part 3, section 12.2).
func (o *object) checkBinding() bool {
	p := o.pub
	switch p.Type {
	case algECC:
		k, ok := o.signer()
		if !ok {
			return false
		}
		pub, ok := o.publicKey()
		return ok && k.(*ecdsa.PrivateKey).PublicKey.Equal(pub)
	case algRSA:
		if len(o.Sensitive) != int(p.KeyBits)/16 {
			return false
		}
		_, ok := o.signer()
		return ok
	case algKeyedHash, algSymCipher:
		if p.Type == algSymCipher && len(o.Sensitive) != int(p.SymBits)/8 {
			return false
		}
		if p.NameAlg == algNull {
			// An external object without a name algorithm (LoadExternal
			// only): no unique digest binds the key to its public area,
			// as in the reference TPM.
			return true
		}
		if !isHash(p.NameAlg) || len(o.Seed) != hashOf(p.NameAlg).Size() {
			return false
		}
		return hmac.Equal(p.Unique, digestOf(p.NameAlg, o.Seed, o.Sensitive))
	}
	return false
}

// protect wraps a child's sensitive area under its storage parent (Part 1,
// section 23: "Protected Storage"): AES-CFB with a key from KDFa(parent
// seed, "STORAGE", name), then an outer HMAC keyed with KDFa(parent seed,
// "INTEGRITY") over the ciphertext and the name. It returns TPM2B_PRIVATE
// contents.
func protect(parent *object, child *object) []byte {
	var sw writer
	child.marshalSensitive(&sw)
	pp := parent.pub
	h := hashOf(pp.NameAlg)
	symKey := tpm2.KDFa(h, parent.Seed, "STORAGE", child.name, nil, int(pp.SymBits))
	cfbEncrypt(symKey, sw.b)
	clear(symKey)
	hmacKey := tpm2.KDFa(h, parent.Seed, "INTEGRITY", nil, nil, h.Size()*8)
	m := hmac.New(h.New, hmacKey)
	m.Write(sw.b)
	m.Write(child.name)
	var w writer
	w.b2b(m.Sum(nil))
	w.raw(sw.b)
	clear(hmacKey)
	return w.b
}

// unprotect checks and decrypts a TPM2B_PRIVATE made by protect. It
// returns TPM_RC_INTEGRITY for any change.
func unprotect(parent *object, name, priv []byte) ([]byte, uint32) {
	pp := parent.pub
	h := hashOf(pp.NameAlg)
	r := newReader(priv)
	tag := r.b2b(maxDigestSize)
	if !r.ok() || len(tag) != h.Size() {
		return nil, rcIntegrity
	}
	enc := r.rest()
	hmacKey := tpm2.KDFa(h, parent.Seed, "INTEGRITY", nil, nil, h.Size()*8)
	m := hmac.New(h.New, hmacKey)
	m.Write(enc)
	m.Write(name)
	ok := hmac.Equal(m.Sum(nil), tag)
	clear(hmacKey)
	if !ok {
		return nil, rcIntegrity
	}
	out := append([]byte(nil), enc...)
	symKey := tpm2.KDFa(h, parent.Seed, "STORAGE", name, nil, int(pp.SymBits))
	cfbDecrypt(symKey, out)
	clear(symKey)
	return out, rcSuccess
}

func cfbEncrypt(key, b []byte) {
	c, err := aes.NewCipher(key)
	if err != nil {
		panic("vtpm: bad AES key size") // key sizes come from validated templates
	}
	//lint:ignore SA1019 TPM 2.0 specifies CFB for protected storage.
	cipher.NewCFBEncrypter(c, make([]byte, 16)).XORKeyStream(b, b)
}

func cfbDecrypt(key, b []byte) {
	c, err := aes.NewCipher(key)
	if err != nil {
		panic("vtpm: bad AES key size")
	}
	//lint:ignore SA1019 TPM 2.0 specifies CFB for protected storage.
	cipher.NewCFBDecrypter(c, make([]byte, 16)).XORKeyStream(b, b)
}

// purgeRSACache drops cached RSA primaries of the null hierarchy, whose
// seed changes at every TPM Reset, and of hierarchies whose seed changed.
func (t *TPM) purgeRSACache(hiers ...uint32) {
	keep := t.s.RSACache[:0]
	for _, e := range t.s.RSACache {
		drop := e.Hierarchy == rhNull
		for _, h := range hiers {
			drop = drop || e.Hierarchy == h
		}
		if drop {
			clear(e.Prime)
			continue
		}
		keep = append(keep, e)
	}
	t.s.RSACache = keep
}

func newHMAC(alg uint16, key []byte) hash.Hash { return hmac.New(hashOf(alg).New, key) }

const sha256Hash = crypto.SHA256

func cfbEncryptIV(key, iv, b []byte) {
	c, err := aes.NewCipher(key)
	if err != nil {
		panic("vtpm: bad AES key size")
	}
	//lint:ignore SA1019 TPM 2.0 specifies CFB.
	cipher.NewCFBEncrypter(c, iv).XORKeyStream(b, b)
}

func cfbDecryptIV(key, iv, b []byte) {
	c, err := aes.NewCipher(key)
	if err != nil {
		panic("vtpm: bad AES key size")
	}
	//lint:ignore SA1019 TPM 2.0 specifies CFB.
	cipher.NewCFBDecrypter(c, iv).XORKeyStream(b, b)
}
