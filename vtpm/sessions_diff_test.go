package vtpm

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TestDifferentialSessions runs go-tpm session flows (HMAC sessions
// unsalted, salted with RSA and ECC keys, bound, with AES parameter
// encryption; a reused session saved and loaded; a replayed session
// context; wrong HMACs) on the vTPM and on the reference TPM, each with
// its own keys, and compares the response codes command by command.
func TestDifferentialSessions(t *testing.T) {
	a := &recorder{tpm: newTestTPM(t)}
	outA := sessionDiffScenario(t, a)
	b := &recorder{tpm: simTPM{getSim(t)}}
	outB := sessionDiffScenario(t, b)
	if len(a.rcs) != len(b.rcs) {
		t.Fatalf("vtpm ran %d commands, reference %d", len(a.rcs), len(b.rcs))
	}
	for i := range a.rcs {
		if a.rcs[i] != b.rcs[i] {
			t.Errorf("command %d (%#x): vtpm rc %#x, reference rc %#x", i, a.ccs[i], a.rcs[i], b.rcs[i])
		}
	}
	if !slices.Equal(outA, outB) {
		t.Errorf("outputs differ:\nvtpm      %q\nreference %q", outA, outB)
	}
}

// sessionDiffScenario returns what the client learned (unsealed data, go-tpm
// errors), which must be the same on both TPMs.
func sessionDiffScenario(t *testing.T, d transport.TPM) []string {
	var out []string
	f := newSessionFixture(t, d, true, false)
	auth := tpm2.Auth(f.sealedAuth)
	sealedH := tpm2.TPMHandle(f.sealed.ObjectHandle)
	for _, opts := range [][]tpm2.AuthOption{
		{auth},
		{auth, tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t))},
		{auth, tpm2.Salted(f.rsaSRK.ObjectHandle, f.rsaPub(t)), tpm2.AESEncryption(128, tpm2.EncryptOut)},
		{auth, tpm2.Bound(sealedH, f.sealed.Name, f.sealedAuth), tpm2.AESEncryption(256, tpm2.EncryptOut)},
		{auth, tpm2.Bound(tpm2.TPMRHOwner, tpm2.TPM2BName{Buffer: handleBytes(rhOwner)}, nil), tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t))},
		{tpm2.Auth([]byte("wrong")), tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t))},
	} {
		got, err := f.unseal(d, tpm2.HMAC(tpm2.TPMAlgSHA256, 16, opts...))
		out = append(out, fmt.Sprintf("%q %#x", got, rcErr(err)))
	}
	// The failed HMAC counted towards lockout; reset it.
	d.Send(rawCommand(ccDictionaryAttackLockReset, []uint32{rhLockout}, 1, nil))

	// A reused, salted session, saved and loaded between uses.
	s, closeSession, err := tpm2.HMACSession(d, tpm2.TPMAlgSHA256, 20, auth, tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t)), tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		t.Fatalf("HMACSession: %v", err)
	}
	got, err := f.unseal(d, s)
	out = append(out, fmt.Sprintf("%q %#x", got, rcErr(err)))
	ctx, err := tpm2.ContextSave{SaveHandle: s.Handle()}.Execute(d)
	if err != nil {
		t.Fatalf("ContextSave(session): %v", err)
	}
	got, err = f.unseal(d, s) // the saved session is not loaded
	out = append(out, fmt.Sprintf("%q %#x", got, rcErr(err)))
	_, err = tpm2.ContextLoad{Context: ctx.Context}.Execute(d)
	out = append(out, fmt.Sprintf("load %#x", rcErr(err)))
	got, err = f.unseal(d, s)
	out = append(out, fmt.Sprintf("%q %#x", got, rcErr(err)))
	_, err = tpm2.ContextLoad{Context: ctx.Context}.Execute(d) // replay
	out = append(out, fmt.Sprintf("replay %#x", rcErr(err)))
	ctx2, err := tpm2.ContextSave{SaveHandle: s.Handle()}.Execute(d)
	if err != nil {
		t.Fatalf("ContextSave(session): %v", err)
	}
	_, err = tpm2.ContextLoad{Context: ctx.Context}.Execute(d) // an older context
	out = append(out, fmt.Sprintf("old %#x", rcErr(err)))
	tampered := ctx2.Context
	tampered.ContextBlob.Buffer = slices.Clone(tampered.ContextBlob.Buffer)
	tampered.ContextBlob.Buffer[len(tampered.ContextBlob.Buffer)-1] ^= 1
	_, err = tpm2.ContextLoad{Context: tampered}.Execute(d)
	out = append(out, fmt.Sprintf("tampered %#x", rcErr(err)))
	_, err = tpm2.ContextLoad{Context: ctx2.Context}.Execute(d)
	out = append(out, fmt.Sprintf("load %#x", rcErr(err)))
	got, err = f.unseal(d, s)
	out = append(out, fmt.Sprintf("%q %#x", got, rcErr(err)))
	closeSession()

	tpm2.FlushContext{FlushHandle: f.rsaSRK.ObjectHandle}.Execute(d)

	// Create with the sensitive data encrypted on the way in and the
	// private blob on the way out, Load and Unseal through sessions.
	srk := func(s tpm2.Session) tpm2.AuthHandle {
		return tpm2.AuthHandle{Handle: f.eccSRK.ObjectHandle, Name: f.eccSRK.Name, Auth: s}
	}
	salted := tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t))
	created, err := tpm2.Create{
		ParentHandle: srk(tpm2.HMAC(tpm2.TPMAlgSHA256, 16, salted, tpm2.AESEncryption(128, tpm2.EncryptInOut))),
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: []byte("child")},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("created through a session")}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true, NoDA: true},
		}),
	}.Execute(d)
	out = append(out, fmt.Sprintf("Create %#x", rcErr(err)))
	if err == nil {
		tpm2.FlushContext{FlushHandle: f.sealed.ObjectHandle}.Execute(d)
		loaded, err := tpm2.Load{ParentHandle: srk(tpm2.HMAC(tpm2.TPMAlgSHA384, 16, tpm2.Bound(f.eccSRK.ObjectHandle, f.eccSRK.Name, nil), tpm2.AESEncryption(256, tpm2.EncryptIn))),
			InPrivate: created.OutPrivate, InPublic: created.OutPublic}.Execute(d)
		out = append(out, fmt.Sprintf("Load %#x", rcErr(err)))
		if err == nil {
			rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name,
				Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth([]byte("child")), salted, tpm2.AESEncryption(128, tpm2.EncryptOut))}}.Execute(d)
			if err == nil {
				out = append(out, fmt.Sprintf("Unseal %q", rsp.OutData.Buffer))
			} else {
				out = append(out, fmt.Sprintf("Unseal %#x", rcErr(err)))
			}
			tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(d)
		}
	}
	nvScenario(t, d, f)

	// HierarchyChangeAuth with a salted HMAC session that encrypts the
	// new authValue: the response HMAC is computed with the new one.
	_, err = tpm2.HierarchyChangeAuth{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(t)), tpm2.AESEncryption(128, tpm2.EncryptIn))},
		NewAuth:    tpm2.TPM2BAuth{Buffer: []byte("new owner auth")},
	}.Execute(d)
	out = append(out, fmt.Sprintf("HierarchyChangeAuth %v", err))
	_, err = tpm2.HierarchyChangeAuth{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth([]byte("new owner auth")))},
	}.Execute(d)
	out = append(out, fmt.Sprintf("HierarchyChangeAuth back %v", err))
	return out
}

// TestDifferentialXORParameterEncryption writes an NV index through an XOR
// session that decrypts the data and reads it back through one that
// encrypts it, on both TPMs, with the raw client (go-tpm only does AES).
func TestDifferentialXORParameterEncryption(t *testing.T) {
	run := func(d transport.TPM) []string {
		return xorScenario(t, d)
	}
	a := run(newTestTPM(t))
	b := run(simTPM{getSim(t)})
	if !slices.Equal(a, b) {
		t.Errorf("vtpm %q\nreference %q", a, b)
	}
}

func xorScenario(t *testing.T, d transport.TPM) []string {
	const idx = 0x01500030
	nvAuth := []byte("xor-auth")
	var out []string
	rsp, _ := d.Send(rawCommand(ccNVDefineSpace, []uint32{rhOwner}, 1, nil, b2b(nvAuth),
		b2b(bytesOf(u32b(idx), u16b(algSHA256), u32b(nvAuthWrite|nvAuthRead|nvNoDA), u16b(0), u16b(32)))))
	if rcOf(rsp) != rcSuccess {
		t.Fatalf("NV_DefineSpace: %#x", rcOf(rsp))
	}
	nvName := func() []byte {
		rsp, _ := d.Send(rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil))
		r := newReader(rsp[10:])
		r.b2b(maxCommandSize)
		return append([]byte(nil), r.b2b(maxDigestSize+2)...)
	}
	for _, sym := range []struct{ alg, bits, hash uint16 }{{algXOR, 0, algSHA256}, {algXOR, 0, algSHA1}, {algAES, 128, algSHA256}, {algAES, 256, algSHA384}} {
		for _, bind := range []bool{false, true} {
			bh, ba := uint32(rhNull), []byte(nil)
			if bind {
				bh, ba = idx, nvAuth
			}
			s := startRawSession(t, d, seHMAC, sym.alg, sym.bits, sym.hash, bh, ba)
			data := []byte(fmt.Sprintf("secret %#x %v", sym.alg, bind))
			hmacAuth := nvAuth
			if bind {
				hmacAuth = nil // the bind entity's authValue is in the session key
			}
			w := rawAuthCommand{cc: ccNVWrite, handles: []uint32{idx, idx}, names: [][]byte{nvName(), nvName()},
				attrs: saContinueSession | saDecrypt, hmacAuth: hmacAuth, encAuth: nvAuth, params: bytesOf(b2b(data), u16b(0))}
			rsp, _ := d.Send(s.build(w))
			_, err := s.parse(rsp, w, false)
			out = append(out, fmt.Sprintf("write %v", err))
			// Read back in clear: the TPM decrypted what the client
			// encrypted.
			rsp, _ = d.Send(rawCommand(ccNVRead, []uint32{idx, idx}, 1, nvAuth, u16b(uint16(len(data))), u16b(0)))
			clearData := []byte(nil)
			if rcOf(rsp) == rcSuccess {
				r := newReader(rsp[14:])
				clearData = r.b2b(maxNVBufferSize)
			}
			out = append(out, fmt.Sprintf("clear %q", clearData))
			rd := rawAuthCommand{cc: ccNVRead, handles: []uint32{idx, idx}, names: [][]byte{nvName(), nvName()},
				attrs: saEncrypt, hmacAuth: hmacAuth, encAuth: nvAuth, params: bytesOf(u16b(uint16(len(data))), u16b(0))}
			rsp, _ = d.Send(s.build(rd))
			p, err := s.parse(rsp, rd, false)
			out = append(out, fmt.Sprintf("read %v %q", err, p))
			if err == nil && !bytes.Equal(p[2:], data) {
				t.Errorf("%#x bind %v: read %q, wrote %q", sym.alg, bind, p[2:], data)
			}
		}
	}
	d.Send(rawCommand(ccNVUndefineSpace, []uint32{rhOwner, idx}, 1, nil))
	return out
}

// sessEntry is one entry of an authorization area.
func sessEntry(h uint32, nonce []byte, attrs uint8, mac []byte) []byte {
	return bytesOf(u32b(h), b2b(nonce), []byte{attrs}, b2b(mac))
}

// sessCommand builds a command with the given authorization entries.
func sessCommand(cc uint32, handles []uint32, entries [][]byte, params ...[]byte) []byte {
	var w writer
	w.u16(stSessions)
	w.u32(0)
	w.u32(cc)
	for _, h := range handles {
		w.u32(h)
	}
	a := bytesOf(entries...)
	w.u32(uint32(len(a)))
	w.raw(a)
	for _, p := range params {
		w.raw(p)
	}
	putU32(w.b[2:], uint32(len(w.b)))
	return w.b
}

// TestDifferentialSessionErrors sends malformed session areas and
// StartAuthSession requests to both TPMs and compares the whole error
// responses, with their session, handle and parameter numbers.
func TestDifferentialSessionErrors(t *testing.T) {
	d := newDual(t)
	nonce := bytes.Repeat([]byte{7}, 16)
	start := func(typ uint8, sym []byte) uint32 {
		rsp, _ := d.Send(rawCommand(ccStartAuthSession, []uint32{rhNull, rhNull}, 0, nil, b2b(nonce), b2b(nil), []byte{typ}, sym, u16b(algSHA256)))
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("StartAuthSession: %#x", rcOf(rsp))
		}
		return binaryU32(rsp[10:])
	}
	aes := sessSymDef(algAES, 128, 0)
	hA := start(seHMAC, aes)
	hX := start(seHMAC, sessSymDef(algXOR, 0, algSHA256))
	hN := start(seHMAC, sessSymDef(algNull, 0, 0))

	// Keys for the salted-session cases: a storage key, a signing key and
	// a public-only object.
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}
	srk, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(eccSigningTemplate)}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := tpm2.LoadExternal{InPublic: signer.OutPublic, Hierarchy: tpm2.TPMRHOwner}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	srkH, signH, extH := uint32(srk.ObjectHandle), uint32(signer.ObjectHandle), uint32(ext.ObjectHandle)

	const idx = 0x01500040
	d.Send(rawCommand(ccNVDefineSpace, []uint32{rhOwner}, 1, nil, b2b(nil),
		b2b(bytesOf(u32b(idx), u16b(algSHA256), u32b(nvOwnerWrite|nvOwnerRead|nvNoDA), u16b(0), u16b(32)))))

	pw := sessEntry(rsPW, nil, saContinueSession, nil)
	startSAS := func(tpmKey, bind uint32, params ...[]byte) []byte {
		return rawCommand(ccStartAuthSession, []uint32{tpmKey, bind}, 0, nil, params...)
	}
	eccPoint := bytesOf(u16b(32), bytes.Repeat([]byte{1}, 32), u16b(32), bytes.Repeat([]byte{2}, 32))
	type tc struct {
		name string
		cmd  []byte
	}
	cases := []tc{
		{"decrypt on a command without parameters", sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(hA, nonce, saContinueSession|saDecrypt, nil)})},
		{"decrypt on a command without TPM2B parameter", sessCommand(ccNVRead, []uint32{rhOwner, idx}, [][]byte{sessEntry(hA, nonce, saContinueSession|saDecrypt, nil)}, u16b(4), u16b(0))},
		{"encrypt on a command without TPM2B response", sessCommand(ccNVWrite, []uint32{rhOwner, idx}, [][]byte{sessEntry(hA, nonce, saContinueSession|saEncrypt, nil)}, b2b([]byte("x")), u16b(0))},
		{"decrypt without symmetric algorithm", sessCommand(ccNVWrite, []uint32{rhOwner, idx}, [][]byte{sessEntry(hN, nonce, saContinueSession|saDecrypt, nil)}, b2b([]byte("x")), u16b(0))},
		{"encrypt without symmetric algorithm", sessCommand(ccGetRandom, nil, [][]byte{sessEntry(hN, nonce, saContinueSession|saEncrypt, nil)}, u16b(8))},
		{"two decrypt sessions", sessCommand(ccNVWrite, []uint32{rhOwner, idx}, [][]byte{sessEntry(hA, nonce, saContinueSession|saDecrypt, nil), sessEntry(hX, nonce, saContinueSession|saDecrypt, nil)}, b2b([]byte("x")), u16b(0))},
		{"two encrypt sessions", sessCommand(ccGetRandom, nil, [][]byte{sessEntry(hA, nonce, saContinueSession|saEncrypt, nil), sessEntry(hX, nonce, saContinueSession|saEncrypt, nil)}, u16b(8))},
		{"one session twice", sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(hA, nonce, saContinueSession, nil), sessEntry(hA, nonce, saContinueSession|saEncrypt, nil)})},
		{"session handle out of range", sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(hmacSessionFirst+maxActiveSessions, nonce, saContinueSession, nil)})},
		{"policy session handle out of range", sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(policySessionFirst+maxActiveSessions, nonce, saContinueSession, nil)})},
		{"session not loaded", sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(hmacSessionFirst+9, nonce, saContinueSession, nil)})},
		{"second session authorizes nothing", sessCommand(ccPCRReset, []uint32{16}, [][]byte{pw, sessEntry(hA, nonce, saContinueSession, nil)})},
		{"nonce too large", sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(hA, make([]byte, 65), saContinueSession, nil)})},
		{"hmac too large", sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(hA, nonce, saContinueSession, make([]byte, 65))})},
		{"wrong hmac on a PCR", sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(hA, nonce, saContinueSession, make([]byte, 32))})},
		{"wrong hmac on a session that only encrypts", sessCommand(ccGetRandom, nil, [][]byte{sessEntry(hA, nonce, saContinueSession|saEncrypt, make([]byte, 32))}, u16b(8))},
		{"audit on a password session", sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(rsPW, nil, saContinueSession|saAudit, nil)})},
		{"admin role with a password", sessCommand(0x13B /* NV_ChangeAuth */, []uint32{idx}, [][]byte{sessEntry(rsPW, nil, saContinueSession, []byte("wrong"))}, b2b([]byte("new")))},
		{"admin role with an HMAC session", sessCommand(0x13B /* NV_ChangeAuth */, []uint32{idx}, [][]byte{sessEntry(hA, nonce, saContinueSession, make([]byte, 32))}, b2b([]byte("new")))},
		{"sessions on ContextSave", sessCommand(ccContextSave, []uint32{hA}, [][]byte{pw})},
		{"sessions on FlushContext", sessCommand(ccFlushContext, nil, [][]byte{pw}, u32b(hA))},
		{"decrypt size beyond the parameters", sessCommand(ccNVWrite, []uint32{rhOwner, idx}, [][]byte{sessEntry(hA, nonce, saContinueSession|saDecrypt, nil)}, u16b(0xFFFF), []byte("abcd"), u16b(0))},
		{"decrypt size beyond the parameters (XOR)", sessCommand(ccNVWrite, []uint32{rhOwner, idx}, [][]byte{sessEntry(hX, nonce, saContinueSession|saDecrypt, nil)}, u16b(100), []byte("abcd"), u16b(0))},
		// A size that reaches into the next parameter is valid: the
		// decrypted bytes then fail to unmarshal, or not.
		{"decrypt size into the next parameter", sessCommand(ccNVWrite, []uint32{rhOwner, idx}, [][]byte{sessEntry(hA, nonce, saContinueSession|saDecrypt, nil)}, u16b(5), []byte("abcd"), u16b(0))},
		{"decrypt size to the end", sessCommand(ccNVWrite, []uint32{rhOwner, idx}, [][]byte{sessEntry(hX, nonce, saContinueSession|saDecrypt, nil)}, u16b(6), []byte("abcd"), u16b(0))},
		// Sizes one or two bytes past the end, and parameter areas too
		// short for a size, are where this reference (go-tpm-tools
		// v0.4.10) still reads and writes past the buffer
		// (CVE-2023-1017/1018); TestParameterEncryptionOversizeRejected
		// covers them.
		{"decrypt size beyond the parameters (encrypt-only session)", sessCommand(ccNVWrite, []uint32{rhOwner, idx}, [][]byte{pw, sessEntry(hA, nonce, saContinueSession|saDecrypt, nil)}, u16b(0x1000), u16b(0))},

		{"start: nonce too short", startSAS(rhNull, rhNull, b2b(make([]byte, 15)), b2b(nil), []byte{seHMAC}, aes, u16b(algSHA256))},
		{"start: nonce longer than the digest", startSAS(rhNull, rhNull, b2b(make([]byte, 33)), b2b(nil), []byte{seHMAC}, aes, u16b(algSHA256))},
		{"start: salt without key", startSAS(rhNull, rhNull, b2b(nonce), b2b([]byte{1}), []byte{seHMAC}, aes, u16b(algSHA256))},
		{"start: key without salt", startSAS(srkH, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, aes, u16b(algSHA256))},
		{"start: signing key", startSAS(signH, rhNull, b2b(nonce), b2b(eccPoint), []byte{seHMAC}, aes, u16b(algSHA256))},
		{"start: public-only key", startSAS(extH, rhNull, b2b(nonce), b2b(eccPoint), []byte{seHMAC}, aes, u16b(algSHA256))},
		{"start: point not on the curve", startSAS(srkH, rhNull, b2b(nonce), b2b(eccPoint), []byte{seHMAC}, aes, u16b(algSHA256))},
		{"start: salt not a point", startSAS(srkH, rhNull, b2b(nonce), b2b([]byte{0, 40, 1}), []byte{seHMAC}, aes, u16b(algSHA256))},
		{"start: bind to a public-only object", startSAS(rhNull, extH, b2b(nonce), b2b(nil), []byte{seHMAC}, aes, u16b(algSHA256))},
		{"start: session type 2", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{2}, aes, u16b(algSHA256))},
		{"start: AES-192", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, bytesOf(u16b(algAES), u16b(192), u16b(algCFB)), u16b(algSHA256))},
		{"start: AES-CBC", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, bytesOf(u16b(algAES), u16b(128), u16b(algCBC)), u16b(algSHA256))},
		{"start: AES without mode", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, bytesOf(u16b(algAES), u16b(128), u16b(algNull)), u16b(algSHA256))},
		{"start: AES unknown mode", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, bytesOf(u16b(algAES), u16b(128), u16b(0x77)), u16b(algSHA256))},
		{"start: XOR with an unknown hash", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, bytesOf(u16b(algXOR), u16b(0x77)), u16b(algSHA256))},
		{"start: XOR with a null hash", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, bytesOf(u16b(algXOR), u16b(algNull)), u16b(algSHA256))},
		{"start: unknown symmetric", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, u16b(algRSA), u16b(algSHA256))},
		{"start: null hash", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, aes, u16b(algNull))},
		{"start: truncated", startSAS(rhNull, rhNull, b2b(nonce), b2b(nil), []byte{seHMAC}, u16b(algAES))},
		// The reference holds three loaded sessions, the vTPM sixteen
		// (TestSessionMemory).
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d.t = t
			a, _ := d.v.Send(c.cmd)
			b := simSend(d.sim, c.cmd)
			if rcOf(a) != rcSuccess && !bytes.Equal(a, b) || rcOf(a) != rcOf(b) {
				t.Errorf("vtpm %x, reference %x", a, b)
			}
		})
	}
	// With a free session slot, a trial session cannot authorize.
	d.Send(rawCommand(ccFlushContext, nil, 0, nil, u32b(hN)))
	hT := start(seTrial, sessSymDef(algNull, 0, 0))
	cmd := sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(hT, nonce, saContinueSession, nil)})
	if a, b := sendOne(d.v, cmd), simSend(d.sim, cmd); !bytes.Equal(a, b) {
		t.Errorf("trial session: vtpm %x, reference %x", a, b)
	}
	// A saved session is not loaded; FlushContext still flushes it.
	for _, tp := range []transport.TPM{d.v, simTPM{d.sim}} {
		rsp, _ := tp.Send(rawCommand(ccContextSave, []uint32{hA}, 0, nil))
		if rcOf(rsp) != rcSuccess {
			t.Fatalf("ContextSave: %#x", rcOf(rsp))
		}
	}
	for _, cmd := range [][]byte{
		sessCommand(ccPCRReset, []uint32{16}, [][]byte{sessEntry(hA, nonce, saContinueSession, nil)}),
		rawCommand(ccContextSave, []uint32{hA}, 0, nil),
		rawCommand(ccFlushContext, nil, 0, nil, u32b(hA)),
		rawCommand(ccFlushContext, nil, 0, nil, u32b(hA)),
	} {
		if a, b := sendOne(d.v, cmd), simSend(d.sim, cmd); !bytes.Equal(a, b) {
			t.Errorf("saved session, command %#x: vtpm %x, reference %x", ccOf(cmd), a, b)
		}
	}
}

func binaryU32(b []byte) uint32 {
	r := newReader(b)
	return r.u32()
}

func sendOne(tp transport.TPM, cmd []byte) []byte {
	rsp, _ := tp.Send(cmd)
	return rsp
}

// TestDifferentialRawSessions runs sessions go-tpm cannot build (sessions
// that only encrypt or decrypt and authorize nothing, a session bound to
// the owner hierarchy, decrypt sessions on PCR_Event and StirRandom, and a
// session saved, loaded and flushed) on both TPMs and compares what the
// client sees.
func TestDifferentialRawSessions(t *testing.T) {
	a := rawSessionScenario(t, newTestTPM(t))
	b := rawSessionScenario(t, simTPM{getSim(t)})
	if !slices.Equal(a, b) {
		t.Errorf("vtpm %q\nreference %q", a, b)
	}
}

func rawSessionScenario(t testing.TB, d transport.TPM) []string {
	var out []string
	note := func(what string, p []byte, err error) {
		out = append(out, fmt.Sprintf("%s: %v %d", what, err, len(p)))
	}
	for _, sym := range []struct{ alg, bits uint16 }{{algAES, 128}, {algXOR, 0}} {
		// A session that only encrypts the response of GetRandom.
		s := startRawSession(t, d, seHMAC, sym.alg, sym.bits, algSHA256, rhNull, nil)
		c := rawAuthCommand{cc: ccGetRandom, attrs: saContinueSession | saEncrypt, params: u16b(24)}
		p, err := s.parse(sendOne(d, s.build(c)), c, false)
		note("GetRandom", p, err)
		// One that decrypts StirRandom's input.
		c = rawAuthCommand{cc: ccStirRandom, attrs: saContinueSession | saDecrypt, params: b2b([]byte("entropy from the guest"))}
		p, err = s.parse(sendOne(d, s.build(c)), c, false)
		note("StirRandom", p, err)
		// An HMAC session authorizing PCR 16 and decrypting the event.
		c = rawAuthCommand{cc: ccPCREvent, handles: []uint32{16}, names: [][]byte{handleBytes(16)}, attrs: saContinueSession | saDecrypt, params: b2b([]byte("an event"))}
		p, err = s.parse(sendOne(d, s.build(c)), c, false)
		note("PCR_Event", p, err)
		rsp := sendOne(d, rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(algSHA256), []byte{3, 0, 0, 1}))
		out = append(out, fmt.Sprintf("PCR 16: %x", rsp[len(rsp)-32:]))
		// Saved, loaded, used, then flushed by its last use.
		rsp = sendOne(d, rawCommand(ccContextSave, []uint32{s.handle}, 0, nil))
		out = append(out, fmt.Sprintf("ContextSave %#x", rcOf(rsp)))
		if rcOf(rsp) == rcSuccess {
			rsp = sendOne(d, rawCommand(ccContextLoad, nil, 0, nil, rsp[10:]))
			out = append(out, fmt.Sprintf("ContextLoad %#x", rcOf(rsp)))
		}
		c = rawAuthCommand{cc: ccGetRandom, attrs: saEncrypt, params: u16b(8)}
		p, err = s.parse(sendOne(d, s.build(c)), c, false)
		note("GetRandom (last use)", p, err)
		rsp = sendOne(d, rawCommand(ccFlushContext, nil, 0, nil, u32b(s.handle)))
		out = append(out, fmt.Sprintf("flushed by its last use: %#x", rcOf(rsp)))

		// A session bound to the owner hierarchy: its HMAC key is the
		// session key alone when it authorizes the owner.
		s = startRawSession(t, d, seHMAC, sym.alg, sym.bits, algSHA1, rhOwner, nil)
		const idx = 0x01500060
		c = rawAuthCommand{cc: ccNVDefineSpace, handles: []uint32{rhOwner}, names: [][]byte{handleBytes(rhOwner)}, attrs: saContinueSession | saDecrypt,
			params: bytesOf(b2b([]byte("index auth")), b2b(bytesOf(u32b(idx), u16b(algSHA256), u32b(nvOwnerWrite|nvOwnerRead|nvNoDA), u16b(0), u16b(8))))}
		p, err = s.parse(sendOne(d, s.build(c)), c, false)
		note("NV_DefineSpace (bound)", p, err)
		c = rawAuthCommand{cc: ccNVUndefineSpace, handles: []uint32{rhOwner, idx}, attrs: saContinueSession}
		rsp = sendOne(d, rawCommand(ccNVReadPublic, []uint32{idx}, 0, nil))
		if rcOf(rsp) == rcSuccess {
			r := newReader(rsp[10:])
			r.b2b(maxCommandSize)
			c.names = [][]byte{handleBytes(rhOwner), r.b2b(maxDigestSize + 2)}
			p, err = s.parse(sendOne(d, s.build(c)), c, false)
			note("NV_UndefineSpace (bound)", p, err)
		}
		sendOne(d, rawCommand(ccFlushContext, nil, 0, nil, u32b(s.handle)))
	}
	return out
}

// TestDifferentialPolicySessionContext saves and loads a policy session in
// the middle of its policy, on both TPMs: the policy digest survives the
// round trip, and the saved session cannot be used meanwhile.
func TestDifferentialPolicySessionContext(t *testing.T) {
	run := func(tp transport.TPM) []string {
		var out []string
		s := startRawSession(t, tp, sePolicy, algNull, 0, algSHA256, rhNull, nil)
		add := func(what string, rsp []byte) {
			if rcOf(rsp) != rcSuccess {
				out = append(out, fmt.Sprintf("%s: %#x", what, rcOf(rsp)))
				return
			}
			out = append(out, fmt.Sprintf("%s: %x", what, rsp[10:]))
		}
		add("PolicyCommandCode", sendOne(tp, rawCommand(0x16C, []uint32{s.handle}, 0, nil, u32b(ccUnseal))))
		add("PolicyGetDigest", sendOne(tp, rawCommand(ccPolicyGetDigest, []uint32{s.handle}, 0, nil)))
		ctx := sendOne(tp, rawCommand(ccContextSave, []uint32{s.handle}, 0, nil))
		out = append(out, fmt.Sprintf("ContextSave %#x", rcOf(ctx)))
		add("PolicyGetDigest (saved)", sendOne(tp, rawCommand(ccPolicyGetDigest, []uint32{s.handle}, 0, nil)))
		add("PolicyAuthValue (saved)", sendOne(tp, rawCommand(0x16B, []uint32{s.handle}, 0, nil)))
		if rcOf(ctx) == rcSuccess {
			rsp := sendOne(tp, rawCommand(ccContextLoad, nil, 0, nil, ctx[10:]))
			out = append(out, fmt.Sprintf("ContextLoad %#x", rcOf(rsp)))
		}
		add("PolicyGetDigest (loaded)", sendOne(tp, rawCommand(ccPolicyGetDigest, []uint32{s.handle}, 0, nil)))
		add("PolicyAuthValue", sendOne(tp, rawCommand(0x16B, []uint32{s.handle}, 0, nil)))
		add("PolicyGetDigest", sendOne(tp, rawCommand(ccPolicyGetDigest, []uint32{s.handle}, 0, nil)))
		return out
	}
	a := run(newTestTPM(t))
	b := run(simTPM{getSim(t)})
	if !slices.Equal(a, b) {
		t.Errorf("vtpm %q\nreference %q", a, b)
	}
}

// TestDifferentialSaltKeys salts sessions with keys of several kinds (the
// TCG EK templates, an unrestricted RSA key with an explicit
// OAEP-SHA384 scheme, one with RSAES, ECC P-384) on both TPMs; each
// session authorizes PCR_Event and encrypts its event, which needs the TPM
// and go-tpm to agree on the session key.
func TestDifferentialSaltKeys(t *testing.T) {
	rsaKey := func(bits tpm2.TPMKeyBits, scheme tpm2.TPMTRSAScheme) tpm2.TPMTPublic {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, Decrypt: true},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, Scheme: scheme, KeyBits: bits}),
		}
	}
	oaep384 := tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgOAEP, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgOAEP, &tpm2.TPMSEncSchemeOAEP{HashAlg: tpm2.TPMAlgSHA384})}
	rsaes := tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSAES, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSAES, &tpm2.TPMSEncSchemeRSAES{})}
	p384 := tpm2.ECCSRKTemplate
	p384.NameAlg = tpm2.TPMAlgSHA384
	p384.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES, KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(256)), Mode: tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)},
		CurveID:   tpm2.TPMECCNistP384,
	})
	keys := []struct {
		name string
		tmpl tpm2.TPMTPublic
		hier tpm2.TPMHandle
	}{
		{"RSA EK", tpm2.RSAEKTemplate, tpm2.TPMRHEndorsement},
		{"ECC EK", tpm2.ECCEKTemplate, tpm2.TPMRHEndorsement},
		{"RSA-2048 OAEP-SHA384", rsaKey(2048, oaep384), tpm2.TPMRHOwner},
		{"RSA-2048 RSAES", rsaKey(2048, rsaes), tpm2.TPMRHOwner},
		{"ECC P-384 storage key", p384, tpm2.TPMRHOwner},
	}
	run := func(tp transport.TPM) []string {
		var out []string
		for _, k := range keys {
			rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: k.hier, Auth: pwAuth(nil)}, InPublic: tpm2.New2B(k.tmpl)}.Execute(tp)
			if err != nil {
				out = append(out, fmt.Sprintf("%s: CreatePrimary %#x", k.name, rcErr(err)))
				continue
			}
			pub, _ := rsp.OutPublic.Contents()
			for _, hash := range []tpm2.TPMIAlgHash{tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA1} {
				_, err = tpm2.PCREvent{PCRHandle: tpm2.AuthHandle{Handle: 16,
					Auth: tpm2.HMAC(hash, 20, tpm2.Salted(rsp.ObjectHandle, *pub), tpm2.AESEncryption(128, tpm2.EncryptIn))},
					EventData: tpm2.TPM2BEvent{Buffer: []byte("salted")}}.Execute(tp)
				out = append(out, fmt.Sprintf("%s %v: %v", k.name, hash, err))
			}
			tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tp)
		}
		return out
	}
	a := run(newTestTPM(t))
	b := run(simTPM{getSim(t)})
	if !slices.Equal(a, b) {
		t.Errorf("vtpm %q\nreference %q", a, b)
	}
	for _, s := range a {
		t.Log(s)
	}
}

// TestDifferentialParameterEncryptionTable sends every command both TPMs
// implement with a session that asks to decrypt the first command
// parameter, then one that asks to encrypt the first response parameter,
// and checks that the vTPM refuses exactly where the reference does
// (TPM_RC_ATTRIBUTES for session 1: no TPM2B first parameter). The session
// checks come before anything else the command does, so valid handles are
// enough.
func TestDifferentialParameterEncryptionTable(t *testing.T) {
	v := newTestTPM(t)
	sim := simTPM{getSim(t)}
	type setup struct{ srk, hA, hP, idx uint32 }
	prepare := func(tp transport.TPM) setup {
		var s setup
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		s.srk = uint32(rsp.ObjectHandle)
		s.hA = startRawSession(t, tp, seHMAC, algAES, 128, algSHA256, rhNull, nil).handle
		s.hP = startRawSession(t, tp, sePolicy, algNull, 0, algSHA256, rhNull, nil).handle
		s.idx = 0x01500080
		sendOne(tp, rawCommand(ccNVDefineSpace, []uint32{rhOwner}, 1, nil, b2b(nil),
			b2b(bytesOf(u32b(s.idx), u16b(algSHA256), u32b(nvOwnerWrite|nvOwnerRead|nvAuthRead|nvAuthWrite|nvNoDA), u16b(0), u16b(8)))))
		return s
	}
	sv, ss := prepare(v), prepare(sim)
	if sv != ss {
		t.Fatalf("handles differ: vtpm %+v, reference %+v", sv, ss)
	}
	handleFor := func(k handleKind) uint32 {
		switch k {
		case hkObject, hkObjectNull, hkContext:
			return sv.srk
		case hkPCR:
			return 16
		case hkNVIndex:
			return sv.idx
		case hkPolicySession:
			return sv.hP
		case hkLockout, hkClear:
			return rhLockout
		}
		return rhOwner
	}
	const refused = rcAttributes | rcS | rcN
	n := 0
	for cc := uint32(0x11F); cc <= 0x197; cc++ {
		def := lookupCommand(cc)
		if def == nil || noSessions(cc) {
			continue
		}
		var hs []uint32
		for _, k := range def.handles {
			hs = append(hs, handleFor(k))
		}
		if cc == ccPCRAllocate {
			hs[0] = rhPlatform // TPMI_RH_PLATFORM
		}
		for _, attr := range []uint8{saDecrypt, saEncrypt} {
			cmd := sessCommand(cc, hs, [][]byte{sessEntry(sv.hA, make([]byte, 16), saContinueSession|attr, nil)}, make([]byte, 8))
			a, b := sendOne(v, cmd), sendOne(sim, cmd)
			if rcOf(b) == rcCommandCode {
				continue // not implemented by the reference
			}
			n++
			if (rcOf(a) == refused) != (rcOf(b) == refused) {
				t.Errorf("command %#x, attribute %#x: vtpm rc %#x, reference rc %#x", cc, attr, rcOf(a), rcOf(b))
			}
		}
	}
	t.Logf("%d command/attribute pairs compared", n)
}
