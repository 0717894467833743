package vtpm

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Response codes the attack tests expect, with their session or parameter
// numbers.
const (
	rcBadAuthS1   = rcBadAuth | rcS | rcN
	rcAuthFailS1  = rcAuthFail | rcS | rcN
	rcSizeS1      = rcSize | rcS | rcN
	rcSizeS2      = rcSize | rcS | 2*rcN
	rcInsuffS1    = rcInsufficient | rcS | rcN
	rcValueP2     = rcValue | rcP | 2*rcN
	rcHandleP1    = rcHandle | rcP | rcN
	rcIntegrityP1 = rcIntegrity | rcP | rcN
)

// TestHMACWrongKeyRefused: an HMAC computed without the entity's
// authValue (a guessed password, or none) is refused, with
// TPM_RC_AUTH_FAIL for a DA-protected object and TPM_RC_BAD_AUTH for a noDA
// one, and the command does not run.
func TestHMACWrongKeyRefused(t *testing.T) {
	for _, noDA := range []bool{true, false} {
		v := newTestTPM(t)
		f := newSessionFixture(t, v, false, noDA)
		want := uint32(rcAuthFailS1)
		if noDA {
			want = rcBadAuthS1
		}
		for _, opts := range [][]tpm2.AuthOption{
			{tpm2.Auth([]byte("sealed-auth!"))},
			{tpm2.Auth(nil)},
			{tpm2.Auth([]byte("wrong")), tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t)), tpm2.AESEncryption(128, tpm2.EncryptOut)},
		} {
			got, err := f.unseal(v, tpm2.HMAC(tpm2.TPMAlgSHA256, 16, opts...))
			if rcErr(err) != want || got != nil {
				t.Errorf("noDA %v: Unseal with a wrong key = %q, rc %#x, want %#x", noDA, got, rcErr(err), want)
			}
			v.Send(rawCommand(ccDictionaryAttackLockReset, []uint32{rhLockout}, 1, nil))
		}
	}
}

// TestHMACWrongKeyEngagesLockout: after maxTries wrong HMACs against a
// DA-protected object, dictionary-attack lockout engages and even the
// right key fails with TPM_RC_LOCKOUT, until DictionaryAttackLockReset.
func TestHMACWrongKeyEngagesLockout(t *testing.T) {
	v := newTestTPM(t)
	f := newSessionFixture(t, v, false, false)
	var rcs []uint32
	for _, pw := range []string{"guess1", "guess2", "guess3", "sealed-auth"} {
		_, err := f.unseal(v, tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth([]byte(pw))))
		rcs = append(rcs, rcErr(err))
	}
	if want := []uint32{rcAuthFailS1, rcAuthFailS1, rcAuthFailS1, rcLockout}; !slices.Equal(rcs, want) {
		t.Fatalf("response codes %#x, want %#x", rcs, want)
	}
	// A session bound to the DA-protected object is subject to lockout
	// whatever it authorizes, here a PCR.
	s := startRawSession(t, v, seHMAC, algNull, 0, algSHA256, uint32(f.sealed.ObjectHandle), f.sealedAuth)
	c := rawAuthCommand{cc: ccPCRReset, handles: []uint32{16}, names: [][]byte{handleBytes(16)}, attrs: saContinueSession}
	if rc := rcOf(sendOne(v, s.build(c))); rc != rcLockout {
		t.Errorf("session bound to a locked-out object: rc %#x, want %#x", rc, rcLockout)
	}
	v.Send(rawCommand(ccDictionaryAttackLockReset, []uint32{rhLockout}, 1, nil))
	if got, err := f.unseal(v, tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(f.sealedAuth))); err != nil || string(got) != "the disk key" {
		t.Errorf("after DictionaryAttackLockReset: Unseal = %q, %v", got, err)
	}
	// A wrong HMAC on the PCR through the bound session counts too
	// (isDaBound in the reference implementation).
	c.hmacAuth = []byte("not the PCR's authValue")
	if rc := rcOf(sendOne(v, s.build(c))); rc != rcAuthFailS1 {
		t.Errorf("bound session, wrong HMAC on a PCR: rc %#x, want %#x", rc, rcAuthFailS1)
	}
	if v.s.DA.FailedTries != 1 {
		t.Errorf("failedTries = %d, want 1", v.s.DA.FailedTries)
	}
}

// TestSaltedSessionWrongKeyRefused: a salt encrypted to another key than
// tpmKey does not decrypt (TPM_RC_VALUE), and a session whose client
// derived its session key from another salt than the TPM (an attacker
// who swapped the encrypted salt) cannot authorize anything.
func TestSaltedSessionWrongKeyRefused(t *testing.T) {
	v := newTestTPM(t)
	f := newSessionFixture(t, v, true, true)
	auth := tpm2.Auth(f.sealedAuth)
	// The salt is encrypted to the RSA key but the session names the
	// ECC key, and the other way round.
	for _, s := range []tpm2.Session{
		tpm2.HMAC(tpm2.TPMAlgSHA256, 16, auth, tpm2.Salted(f.eccSRK.ObjectHandle, f.rsaPub(t))),
		tpm2.HMAC(tpm2.TPMAlgSHA256, 16, auth, tpm2.Salted(f.rsaSRK.ObjectHandle, f.eccPub(t))),
	} {
		if _, err := f.unseal(v, s); rcErr(err) != rcValueP2 {
			t.Errorf("salt for another key: rc %#x, want %#x", rcErr(err), rcValueP2)
		}
	}
	// A man in the middle replaces the encrypted salt with one of his
	// own: the TPM's session key differs from the client's, so the
	// first HMAC fails.
	for _, pub := range []tpm2.TPMTPublic{f.eccPub(t), f.rsaPub(t)} {
		handle := f.eccSRK.ObjectHandle
		if pub.Type == tpm2.TPMAlgRSA {
			handle = f.rsaSRK.ObjectHandle
		}
		mitm := &saltSwapper{tpm: v, pub: pub}
		_, err := f.unseal(mitm, tpm2.HMAC(tpm2.TPMAlgSHA256, 16, auth, tpm2.Salted(handle, pub)))
		if !mitm.swapped || rcErr(err) != rcBadAuthS1 {
			t.Errorf("%v: swapped salt: rc %#x (swapped %v), want %#x", pub.Type, rcErr(err), mitm.swapped, rcBadAuthS1)
		}
	}
}

// saltSwapper replaces the encrypted salt of StartAuthSession with a fresh
// one encrypted to the same key.
type saltSwapper struct {
	tpm     transport.TPM
	pub     tpm2.TPMTPublic
	swapped bool
}

func (m *saltSwapper) Send(cmd []byte) ([]byte, error) {
	if ccOf(cmd) == ccStartAuthSession {
		r := newReader(cmd[18:])
		nonce := r.b2b(maxDigestSize)
		old := r.b2b(maxRSAKeyBytes)
		rest := r.rest()
		enc, _, err := getSalt(m.pub)
		if err == nil && len(old) != 0 {
			cmd = bytesOf(cmd[:18], b2b(nonce), b2b(enc), rest)
			putU32(cmd[2:], uint32(len(cmd)))
			m.swapped = true
		}
	}
	return m.tpm.Send(cmd)
}

// getSalt makes an encrypted salt for pub with go-tpm.
func getSalt(pub tpm2.TPMTPublic) ([]byte, []byte, error) {
	key, err := tpm2.ImportEncapsulationKey(&pub)
	if err != nil {
		return nil, nil, err
	}
	salt, enc, err := tpm2.CreateEncryptedSalt(rand.Reader, key)
	return enc, salt, err
}

// TestResponseHMACTamperDetected: the response HMAC covers the response
// parameters (encrypted or not), so a change on the way back from the TPM
// is detected by the client (go-tpm), whatever byte it touches.
func TestResponseHMACTamperDetected(t *testing.T) {
	v := newTestTPM(t)
	f := newSessionFixture(t, v, false, true)
	for _, opts := range [][]tpm2.AuthOption{
		{tpm2.Auth(f.sealedAuth)},
		{tpm2.Auth(f.sealedAuth), tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t)), tpm2.AESEncryption(128, tpm2.EncryptOut)},
	} {
		// The response is 10 (header) + 4 (parameterSize) + 2+12
		// (outData) + 2+32 (nonce) + 1 (attributes) + 2+32 (HMAC).
		for off := 14; off < 97; off++ {
			if off == 62 {
				continue // the attributes: go-tpm reads continueSession from them
			}
			tamper := &tamperer{tpm: v, cc: ccUnseal, off: off}
			got, err := f.unseal(tamper, tpm2.HMAC(tpm2.TPMAlgSHA256, 32, opts...))
			if !tamper.done {
				t.Fatalf("offset %d: response not tampered", off)
			}
			if err == nil {
				t.Errorf("offset %d: tampered response accepted, Unseal = %q", off, got)
			}
		}
		// Untampered, it works.
		if got, err := f.unseal(v, tpm2.HMAC(tpm2.TPMAlgSHA256, 32, opts...)); err != nil || string(got) != "the disk key" {
			t.Fatalf("Unseal = %q, %v", got, err)
		}
	}
}

// tamperer flips one bit of the response to command cc at offset off.
type tamperer struct {
	tpm  transport.TPM
	cc   uint32
	off  int
	done bool
}

func (m *tamperer) Send(cmd []byte) ([]byte, error) {
	rsp, err := m.tpm.Send(cmd)
	if err == nil && ccOf(cmd) == m.cc && m.off < len(rsp) {
		rsp = slices.Clone(rsp)
		rsp[m.off] ^= 0x10
		m.done = true
	}
	return rsp, err
}

// TestParameterEncryptionOversizeRejected is the CVE-2023-1017 and
// CVE-2023-1018 attack: the 2-byte size of an encrypted first parameter
// claims more bytes than the command holds, so that the TPM decrypts past
// the parameter area (an out-of-bounds write) or reads past it. The
// reference implementation in go-tpm-tools v0.4.10 still accepts sizes of
// up to two bytes past the end (it compares with the area including the
// size field) and reads a size field from a one-byte area; the vTPM
// refuses every such command with TPM_RC_SIZE or TPM_RC_INSUFFICIENT and
// the session's number, changes nothing, and never writes to the caller's
// command buffer.
func TestParameterEncryptionOversizeRejected(t *testing.T) {
	v := newTestTPM(t)
	const idx = 0x01500050
	if rc := rcOf(sendOne(v, rawCommand(ccNVDefineSpace, []uint32{rhOwner}, 1, nil, b2b(nil),
		b2b(bytesOf(u32b(idx), u16b(algSHA256), u32b(nvOwnerWrite|nvOwnerRead|nvNoDA), u16b(0), u16b(64)))))); rc != rcSuccess {
		t.Fatalf("NV_DefineSpace: %#x", rc)
	}
	write := func(s *rawSession, pos int, params []byte) rawAuthCommand {
		c := rawAuthCommand{cc: ccNVWrite, handles: []uint32{rhOwner, idx}, attrs: saContinueSession | saDecrypt, params: params}
		if pos == 2 {
			c.extraBefore = sessEntry(rsPW, nil, saContinueSession, nil)
		}
		return c
	}
	data := []byte("0123456789")
	valid := bytesOf(b2b(data), u16b(0))
	for _, sym := range []struct{ alg, bits uint16 }{{algAES, 128}, {algXOR, 0}} {
		for _, pos := range []int{1, 2} {
			s := startRawSession(t, v, seHMAC, sym.alg, sym.bits, algSHA256, rhNull, nil)
			want := func(rc uint32) uint32 {
				if pos == 2 {
					return rc&^(0x7<<8) | uint32(pos)<<8
				}
				return rc
			}
			cases := []struct {
				name   string
				size   int // the size field, or -1 to keep it
				params []byte
				rc     uint32
			}{
				// 10 bytes of data, then the 2-byte offset: a size of
				// up to 12 stays in the area.
				{"one past the end", 13, valid, rcSizeS1},
				{"two past the end (the reference's off-by-two)", 14, valid, rcSizeS1},
				{"far past the end", 0xFFFF, valid, rcSizeS1},
				{"area of one byte", -1, []byte{0x7F}, rcInsuffS1},
				{"empty area", -1, nil, rcInsuffS1},
				{"size with no data", 1, u16b(0), rcSizeS1},
			}
			for _, c := range cases {
				cmd := s.build(write(s, pos, c.params))
				if c.size >= 0 {
					// The size field of the first parameter, after the
					// auth area: patch it (the HMAC is empty for this
					// unbound session on ownerAuth).
					off := len(cmd) - len(c.params)
					binary.BigEndian.PutUint16(cmd[off:], uint16(c.size))
				}
				before := slices.Clone(cmd)
				rsp := sendOne(v, cmd)
				if got := rcOf(rsp); got != want(c.rc) {
					t.Errorf("%#x session %d, %s: rc %#x, want %#x", sym.alg, pos, c.name, got, want(c.rc))
				}
				if !bytes.Equal(cmd, before) {
					t.Errorf("%#x session %d, %s: the command buffer changed", sym.alg, pos, c.name)
				}
			}
			// The session still works and the index was never written.
			w := write(s, pos, valid)
			rsp := sendOne(v, s.build(w))
			if _, err := s.parse(rsp, w, false); err != nil && pos == 1 {
				t.Fatalf("%#x: valid NV_Write: %v", sym.alg, err)
			}
			if rcOf(rsp) != rcSuccess {
				t.Fatalf("%#x session %d: valid NV_Write: rc %#x", sym.alg, pos, rcOf(rsp))
			}
			rsp = sendOne(v, rawCommand(ccNVRead, []uint32{rhOwner, idx}, 1, nil, u16b(10), u16b(0)))
			if rcOf(rsp) != rcSuccess || !bytes.Equal(rsp[len(rsp)-15:len(rsp)-5], data) {
				t.Errorf("%#x session %d: NV data %x after the valid write", sym.alg, pos, rsp)
			}
			sendOne(v, rawCommand(ccFlushContext, nil, 0, nil, u32b(s.handle)))
		}
	}
}

// TestSessionContextReplayRejected: a session context can be loaded once.
// After the load, or after a later save, the old context is refused
// (TPM_RC_HANDLE), so a replayed context cannot roll a session back to
// old nonces; a changed context fails its integrity check, and a context
// does not load into another TPM or after a TPM Reset.
func TestSessionContextReplayRejected(t *testing.T) {
	v := newTestTPM(t)
	f := newSessionFixture(t, v, false, true)
	s, closeSession, err := tpm2.HMACSession(v, tpm2.TPMAlgSHA256, 16, tpm2.Auth(f.sealedAuth), tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer closeSession()
	save := func() tpm2.TPMSContext {
		t.Helper()
		rsp, err := tpm2.ContextSave{SaveHandle: s.Handle()}.Execute(v)
		if err != nil {
			t.Fatalf("ContextSave: %v", err)
		}
		return rsp.Context
	}
	load := func(ctx tpm2.TPMSContext, tp transport.TPM) uint32 {
		_, err := tpm2.ContextLoad{Context: ctx}.Execute(tp)
		return rcErr(err)
	}
	ctx1 := save()
	if _, err := f.unseal(v, s); rcErr(err) != rcReferenceS0 {
		t.Errorf("use of a saved session: rc %#x, want %#x", rcErr(err), rcReferenceS0)
	}
	if rc := rcOf(sendOne(v, rawCommand(ccContextSave, []uint32{uint32(s.Handle())}, 0, nil))); rc != rcReferenceH0 {
		t.Errorf("ContextSave of a saved session: rc %#x, want %#x", rc, rcReferenceH0)
	}
	if rc := load(ctx1, v); rc != 0xFFFFFFFF {
		t.Fatalf("ContextLoad: rc %#x", rc)
	}
	if got, err := f.unseal(v, s); err != nil || string(got) != "the disk key" {
		t.Fatalf("Unseal after load = %q, %v", got, err)
	}
	if rc := load(ctx1, v); rc != rcHandleP1 {
		t.Errorf("replayed context: rc %#x, want %#x", rc, rcHandleP1)
	}
	ctx2 := save()
	if rc := load(ctx1, v); rc != rcHandleP1 {
		t.Errorf("older context: rc %#x, want %#x", rc, rcHandleP1)
	}
	for i := range ctx2.ContextBlob.Buffer {
		bad := ctx2
		bad.ContextBlob.Buffer = slices.Clone(ctx2.ContextBlob.Buffer)
		bad.ContextBlob.Buffer[i] ^= 1
		// A changed integrity size answers TPM_RC_SIZE: qualified when
		// it is not the integrity's size, unqualified (as the reference
		// unmarshals it) when it exceeds any digest.
		if rc := load(bad, v); rc != rcIntegrityP1 && rc != rcSize|rcP|rcN && rc != rcSize {
			t.Fatalf("context changed at byte %d: rc %#x", i, rc)
		}
	}
	bad := ctx2
	bad.Sequence++
	if rc := load(bad, v); rc != rcIntegrityP1 {
		t.Errorf("context with another sequence: rc %#x, want %#x", rc, rcIntegrityP1)
	}
	other := newTestTPM(t)
	if rc := load(ctx2, other); rc != rcIntegrityP1 {
		t.Errorf("context loaded into another TPM: rc %#x, want %#x", rc, rcIntegrityP1)
	}
	if rc := load(ctx2, v); rc != 0xFFFFFFFF {
		t.Fatalf("ContextLoad: rc %#x", rc)
	}
	if got, err := f.unseal(v, s); err != nil || string(got) != "the disk key" {
		t.Fatalf("Unseal after the second load = %q, %v", got, err)
	}
	ctx3 := save()
	v.PowerCycle()
	sendOne(v, rawCommand(ccStartup, nil, 0, nil, u16b(suClear)))
	if rc := load(ctx3, v); rc != rcIntegrityP1 {
		t.Errorf("context after a TPM Reset: rc %#x, want %#x", rc, rcIntegrityP1)
	}
}

// TestSessionMemory: sixteen sessions can be loaded; one more is
// TPM_RC_SESSION_MEMORY, and with saved sessions holding the remaining
// handles, TPM_RC_SESSION_HANDLES.
func TestSessionMemory(t *testing.T) {
	v := newTestTPM(t)
	var hs []uint32
	for i := 0; i < maxSessions; i++ {
		hs = append(hs, startRawSession(t, v, seHMAC, algNull, 0, algSHA256, rhNull, nil).handle)
	}
	start := rawCommand(ccStartAuthSession, []uint32{rhNull, rhNull}, 0, nil, b2b(make([]byte, 16)), b2b(nil), []byte{seHMAC}, u16b(algNull), u16b(algSHA256))
	if rc := rcOf(sendOne(v, start)); rc != rcSessionMemory {
		t.Errorf("17th session: rc %#x, want %#x", rc, rcSessionMemory)
	}
	if rc := rcOf(sendOne(v, rawCommand(ccContextSave, []uint32{hs[3]}, 0, nil))); rc != rcSuccess {
		t.Fatalf("ContextSave: %#x", rc)
	}
	if rc := rcOf(sendOne(v, start)); rc != rcSessionHandles {
		t.Errorf("with a saved session: rc %#x, want %#x", rc, rcSessionHandles)
	}
	sendOne(v, rawCommand(ccFlushContext, nil, 0, nil, u32b(hs[3])))
	if rsp := sendOne(v, start); rcOf(rsp) != rcSuccess || binaryU32(rsp[10:]) != hs[3] {
		t.Errorf("after the flush: rsp %x, want handle %#x", rsp, hs[3])
	}
}

// oversizeCommands defines an NV index on d and returns NV_Write commands
// whose encrypted first parameter claims more bytes than the command
// holds, through AES and XOR sessions in the first and second position:
// the CVE-2023-1017/1018 seeds of FuzzSend.
func oversizeCommands(t testing.TB, d transport.TPM) [][]byte {
	const idx = 0x01500050
	sendOne(d, rawCommand(ccNVDefineSpace, []uint32{rhOwner}, 1, nil, b2b(nil),
		b2b(bytesOf(u32b(idx), u16b(algSHA256), u32b(nvOwnerWrite|nvOwnerRead|nvNoDA), u16b(0), u16b(64)))))
	var cmds [][]byte
	valid := bytesOf(b2b([]byte("0123456789")), u16b(0))
	for _, sym := range []struct{ alg, bits uint16 }{{algAES, 128}, {algXOR, 0}} {
		s := startRawSession(t, d, seHMAC, sym.alg, sym.bits, algSHA256, rhNull, nil)
		for _, pos := range []int{1, 2} {
			for _, size := range []int{12, 13, 14, 0xFFFF, -1, -2} {
				params := valid
				switch size {
				case -1:
					params = []byte{0x7F}
				case -2:
					params = nil
				}
				c := rawAuthCommand{cc: ccNVWrite, handles: []uint32{rhOwner, idx}, attrs: saContinueSession | saDecrypt, params: params}
				if pos == 2 {
					c.extraBefore = sessEntry(rsPW, nil, saContinueSession, nil)
				}
				cmd := s.build(c)
				if size >= 0 {
					binary.BigEndian.PutUint16(cmd[len(cmd)-len(params):], uint16(size))
				}
				cmds = append(cmds, cmd)
			}
		}
	}
	return cmds
}

// eccNullNameAlgKeyCmd is a LoadExternal of a P-256 decryption key with
// its private part and TPM_ALG_NULL as nameAlg (which only LoadExternal
// accepts), and d as the private scalar.
func eccNullNameAlgKeyCmd(d byte) []byte {
	priv, err := ecdh.P256().NewPrivateKey(bytes.Repeat([]byte{d}, 32))
	if err != nil {
		panic(err)
	}
	pt := priv.PublicKey().Bytes()
	pub := bytesOf(u16b(algECC), u16b(algNull), u32b(oaDecrypt|oaUserWithAuth|oaNoDA), u16b(0),
		u16b(algNull), u16b(algNull), u16b(curveNISTP256), u16b(algNull), b2b(pt[1:33]), b2b(pt[33:]))
	sens := bytesOf(u16b(algECC), b2b(nil), b2b(nil), b2b(priv.Bytes()))
	return rawCommand(ccLoadExternal, nil, 0, nil, b2b(sens), b2b(pub), u32b(rhNull))
}

// saltedSessionCmd starts an HMAC session salted with the ECC key h, the
// ephemeral point being that of the private scalar d.
func saltedSessionCmd(h uint32, d byte) []byte {
	eph, err := ecdh.P256().NewPrivateKey(bytes.Repeat([]byte{d}, 32))
	if err != nil {
		panic(err)
	}
	ep := eph.PublicKey().Bytes()
	salt := bytesOf(b2b(ep[1:33]), b2b(ep[33:]))
	return rawCommand(ccStartAuthSession, []uint32{h, rhNull}, 0, nil, b2b(make([]byte, 16)), b2b(salt),
		[]byte{seHMAC}, u16b(algNull), u16b(algSHA256))
}

// TestSaltedSessionWithNullNameAlgECCKey stops a guest from crashing the
// TPM with StartAuthSession salted by an ECC key it loaded with
// LoadExternal, its private part and a TPM_ALG_NULL nameAlg: KDFe of the
// salt used the nameAlg's hash, and crypto.Hash(0).Size panicked. The
// reference TPM derives an empty salt (KDFe of no bits) and succeeds.
func TestSaltedSessionWithNullNameAlgECCKey(t *testing.T) {
	d := newDual(t)
	rsp := sameRC(t, d, eccNullNameAlgKeyCmd(0x11))
	if rcOf(rsp) != rcSuccess {
		t.Fatalf("LoadExternal: rc %#x", rcOf(rsp))
	}
	h := admBE32(rsp[10:])
	for _, typ := range []byte{seHMAC, sePolicy, seTrial} {
		cmd := saltedSessionCmd(h, 0x22)
		cmd[len(cmd)-5] = typ
		rsp := sameRC(t, d, cmd)
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("StartAuthSession type %#x: rc %#x", typ, rcOf(rsp))
		}
		sameRC(t, d, rawCommand(ccFlushContext, nil, 0, nil, u32b(admBE32(rsp[10:]))))
	}
}
