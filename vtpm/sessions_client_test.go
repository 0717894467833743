package vtpm

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// rawSession is a minimal, independent client for sessions, written from
// Part 1, sections 19 and 21, to test what go-tpm cannot send: XOR
// parameter encryption, sessions that only encrypt, and malformed
// authorization areas with valid HMACs. It supports unsalted sessions,
// bound or not.
type rawSession struct {
	handle      uint32
	hashAlg     uint16
	symAlg      uint16
	symBits     uint16
	nonceCaller []byte
	nonceTPM    []byte
	key         []byte // session key
}

// rawClientRand fills the raw client's nonces. Recordings of fuzz seeds
// replace it with a stream of their own, so that the TPM's randomness
// (which FuzzSend makes deterministic) is not shared with the client's.
var rawClientRand = func(b []byte) { rand.Read(b) }

// sessSymDef marshals a TPMT_SYM_DEF.
func sessSymDef(alg, bits, hashAlg uint16) []byte {
	switch alg {
	case algAES:
		return bytesOf(u16b(algAES), u16b(bits), u16b(algCFB))
	case algXOR:
		return bytesOf(u16b(algXOR), u16b(hashAlg))
	}
	return u16b(algNull)
}

// startRawSession starts an unsalted session of type typ, bound to bind
// (whose authValue is bindAuth) unless bind is TPM_RH_NULL.
func startRawSession(t testing.TB, d transport.TPM, typ uint8, symAlg, symBits, hashAlg uint16, bind uint32, bindAuth []byte) *rawSession {
	t.Helper()
	s := &rawSession{hashAlg: hashAlg, symAlg: symAlg, symBits: symBits, nonceCaller: make([]byte, 16)}
	rawClientRand(s.nonceCaller)
	rsp, err := d.Send(rawCommand(ccStartAuthSession, []uint32{rhNull, bind}, 0, nil,
		b2b(s.nonceCaller), b2b(nil), []byte{typ}, sessSymDef(symAlg, symBits, hashAlg), u16b(hashAlg)))
	if err != nil || rcOf(rsp) != rcSuccess {
		t.Fatalf("StartAuthSession: rc %#x, %v", rcOf(rsp), err)
	}
	r := newReader(rsp[10:])
	s.handle = r.u32()
	s.nonceTPM = append([]byte(nil), r.b2b(maxDigestSize)...)
	if bind != rhNull {
		h := hashOf(hashAlg)
		s.key = tpm2.KDFa(h, trimZeros(bindAuth), "ATH", s.nonceTPM, s.nonceCaller, h.Size()*8)
	}
	return s
}

// paramKey is sessionKey || authValue.
func (s *rawSession) paramKey(auth []byte) []byte {
	return append(append([]byte(nil), s.key...), trimZeros(auth)...)
}

// crypt encrypts or decrypts the buffer of the TPM2B at the start of p in
// place.
func (s *rawSession) crypt(auth, p []byte, newer, older []byte, encrypt bool) {
	if len(p) < 2 {
		return
	}
	n := int(binary.BigEndian.Uint16(p))
	if n > len(p)-2 {
		n = len(p) - 2
	}
	cryptParam(&session{hashAlg: s.hashAlg, symAlg: s.symAlg, symBits: s.symBits}, s.paramKey(auth), newer, older, p[2:2+n], encrypt)
}

// rawAuthCommand is a command with one session: the handles (with their
// names), the session's attributes, and the parameters in clear, which
// are encrypted when attrs has decrypt. hmacKeyAuth is the authValue
// included in the HMAC key (nil for the session's bind entity); encAuth
// the one included in the parameter-encryption key.
type rawAuthCommand struct {
	cc          uint32
	handles     []uint32
	names       [][]byte
	attrs       uint8
	hmacAuth    []byte
	encAuth     []byte
	params      []byte
	sizeTamper  func(params []byte) // changes the encrypted parameters before the HMAC
	extraBefore []byte              // an authorization entry before this session's
}

// build marshals the command, computing the HMAC over the (encrypted)
// parameters.
func (s *rawSession) build(c rawAuthCommand) []byte {
	params := append([]byte(nil), c.params...)
	if c.attrs&saDecrypt != 0 {
		s.crypt(c.encAuth, params, s.nonceCaller, s.nonceTPM, true)
	}
	if c.sizeTamper != nil {
		c.sizeTamper(params)
	}
	h := hashOf(s.hashAlg).New()
	h.Write(u32b(c.cc))
	for _, n := range c.names {
		h.Write(n)
	}
	h.Write(params)
	cp := h.Sum(nil)
	key := append(append([]byte(nil), s.key...), trimZeros(c.hmacAuth)...)
	var mac []byte
	if len(key) != 0 {
		m := hmac.New(hashOf(s.hashAlg).New, key)
		m.Write(cp)
		m.Write(s.nonceCaller)
		m.Write(s.nonceTPM)
		m.Write([]byte{c.attrs})
		mac = m.Sum(nil)
	}
	var w writer
	w.u16(stSessions)
	w.u32(0)
	w.u32(c.cc)
	for _, hd := range c.handles {
		w.u32(hd)
	}
	var a writer
	a.raw(c.extraBefore)
	a.u32(s.handle)
	a.b2b(s.nonceCaller)
	a.u8(c.attrs)
	a.b2b(mac)
	w.u32(uint32(len(a.b)))
	w.raw(a.b)
	w.raw(params)
	binary.BigEndian.PutUint32(w.b[2:], uint32(len(w.b)))
	return w.b
}

// parse checks a response to a command built with build: its response
// HMAC, and decrypts the first response parameter for an encrypt session.
// It rolls the session's nonces.
func (s *rawSession) parse(rsp []byte, c rawAuthCommand, rHandle bool) ([]byte, error) {
	if rcOf(rsp) != rcSuccess {
		return nil, fmt.Errorf("rc %#x", rcOf(rsp))
	}
	r := newReader(rsp[10:])
	if rHandle {
		r.u32()
	}
	params := append([]byte(nil), r.bytes(int(r.u32()))...)
	nonceTPM := r.b2b(maxDigestSize)
	attrs := r.u8()
	mac := r.b2b(maxDigestSize)
	if !r.ok() || !r.empty() {
		return nil, errors.New("malformed response session")
	}
	s.nonceTPM = append([]byte(nil), nonceTPM...)
	key := append(append([]byte(nil), s.key...), trimZeros(c.hmacAuth)...)
	if len(key) != 0 || len(mac) != 0 {
		h := hashOf(s.hashAlg).New()
		h.Write(u32b(rcSuccess))
		h.Write(u32b(c.cc))
		h.Write(params)
		m := hmac.New(hashOf(s.hashAlg).New, key)
		m.Write(h.Sum(nil))
		m.Write(s.nonceTPM)
		m.Write(s.nonceCaller)
		m.Write([]byte{attrs})
		if !hmac.Equal(m.Sum(nil), mac) {
			return nil, errors.New("response HMAC does not verify")
		}
	}
	if c.attrs&saEncrypt != 0 {
		s.crypt(c.encAuth, params, s.nonceTPM, s.nonceCaller, false)
	}
	rawClientRand(s.nonceCaller)
	return params, nil
}
