package vtpm

import (
	"crypto/ecdh"
	"crypto/rand"
	"testing"
	"testing/cryptotest"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TestRecordCredentialCommands records command streams of the
// credential, duplication, object and asymmetric commands into
// testdata/commands/credential-*.bin, seeds of FuzzSend, when run with
// -update:
//
//	go test ./vtpm -run TestRecordCredentialCommands -args -update
//
// The streams are recorded as FuzzSend replays them: on its base TPM
// (testdata/fuzz-base.bin) with its fixed RSA keys and its deterministic
// randomness, so the blobs the TPM makes (Create, MakeCredential,
// Duplicate) are the same on replay and the recorded commands that use
// them (Load, ActivateCredential, Import) succeed there too. Client-side
// material (software credentials and duplicates) is made first, outside
// the recording, from the base's primary keys, which are derived and so
// also the same on replay; the recorded client draws no randomness of its
// own (password sessions, and policy sessions with fixed nonces).
func TestRecordCredentialCommands(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/commands/credential-*.bin")
	}
	defer useFixedRSAKeys(t)()
	base, err := loadFuzzBase()
	if err != nil {
		t.Fatal(err)
	}
	open := func() *TPM {
		v, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// Client-side material for the base's primaries.
	a := open()
	eccSRK := createSRK(t, a, tpm2.ECCSRKTemplate)
	rsaSRK := createSRK(t, a, tpm2.RSASRKTemplate)
	akRsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}, InPublic: tpm2.New2B(eccSigningTemplate)}.Execute(a)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	type cred struct{ id, enc []byte }
	creds := map[string]cred{}
	for name, srk := range map[string]loadedKey{"ECC": eccSRK, "RSA": rsaSRK} {
		pub, _ := srk.pub.Contents()
		encap, err := tpm2.ImportEncapsulationKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		id, enc, err := tpm2.CreateCredential(rand.Reader, encap, akRsp.Name.Buffer, []byte("software credential"))
		if err != nil {
			t.Fatal(err)
		}
		creds[name] = cred{id, enc}
	}
	_, swPub, swSens := softwareECCKey(t)
	swName, _ := tpm2.ObjectName(&swPub)
	sp, _ := eccSRK.pub.Contents()
	encap, _ := tpm2.ImportEncapsulationKey(sp)
	swDup, swSeed, err := tpm2.CreateDuplicate(rand.Reader, encap, swName.Buffer, tpm2.Marshal(swSens))
	if err != nil {
		t.Fatal(err)
	}
	ecdhKey, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)

	record := func(name string, run func(tp transport.TPM)) {
		t.Run(name, func(t *testing.T) {
			cryptotest.SetGlobalRandom(t, fuzzRandSeed)
			v := open()
			defer v.Close()
			rec := &sendLog{tpm: v}
			run(rec)
			if len(rec.cmds) > maxFuzzCommands {
				t.Fatalf("%d commands, FuzzSend runs %d", len(rec.cmds), maxFuzzCommands)
			}
			writeCommands(t, name, rec.cmds)
		})
	}
	primaryAK := func(tp transport.TPM) loadedKey {
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}, InPublic: tpm2.New2B(eccSigningTemplate)}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		return loadedKey{rsp.ObjectHandle, rsp.Name, rsp.OutPublic}
	}

	record("credential-activate", func(tp transport.TPM) {
		for _, k := range []struct {
			name string
			tmpl tpm2.TPMTPublic
		}{{"ECC", tpm2.ECCSRKTemplate}, {"RSA", tpm2.RSASRKTemplate}} {
			srk := createSRK(t, tp, k.tmpl)
			ak := primaryAK(tp)
			mc := makeCredential(t, tp, srk, ak.name, []byte("TPM-made credential"))
			mustActivate(t, tp, ak, srk, mc.CredentialBlob.Buffer, mc.Secret.Buffer)
			c := creds[k.name]
			mustActivate(t, tp, ak, srk, c.id, c.enc)
			bad := append([]byte(nil), c.id...)
			bad[len(bad)-1] ^= 1
			activateCredential(tp, ak, srk, bad, c.enc)
			activateCredential(tp, srk, srk, c.id, c.enc)
			ak.flush(tp)
			srk.flush(tp)
		}
	})

	record("credential-duplicate", func(tp transport.TPM) {
		srk := createSRK(t, tp, tpm2.ECCSRKTemplate)
		imp, err := importAndLoad(t, tp, srk, nil, tpm2.New2B(swPub), swDup, swSeed, symNull)
		if err != nil {
			t.Fatalf("Import: %v", err)
		}
		imp.flush(tp)
		if _, _, rc := rewrap(tp, srk.handle, srk.handle, swDup, swName.Buffer, swSeed); rc != rcSuccess {
			t.Fatalf("Rewrap: %#x", rc)
		}
		rewrap(tp, srk.handle, tpm2.TPMRHNull, swDup, swName.Buffer, swSeed)
		key, _ := createChild(t, tp, srk, duplicableSigningTemplate(t, true), nil)
		sess := rawPolicySession(t, tp, ccDuplicate)
		rsp, err := tp.Send(rawPolicyCommand(ccDuplicate, []uint32{uint32(key.handle), uint32(srk.handle)}, sess, b2b(nil), symDefBytes(symAES128)))
		if err != nil || rcOf(rsp) != rcSuccess {
			t.Fatalf("Duplicate: rc %#x", rcOf(rsp))
		}
		r := newReader(rsp[14:])
		keyOut, dup, seed := r.b2b(maxDataSize), r.b2b(maxPrivateSize), r.b2b(maxEncSecret)
		k2, err := importAndLoad(t, tp, srk, keyOut, key.pub, dup, seed, aes128CFB)
		if err != nil {
			t.Fatalf("Import of the TPM's duplicate: %v", err)
		}
		k2.flush(tp)
		key.flush(tp)
		srk.flush(tp)
	})

	record("credential-objcmds", func(tp transport.TPM) { objScenario(t, tp) })

	record("credential-asym", func(tp transport.TPM) {
		k := loadFuzzRSAKeys(t)[2048]
		rsaPub := tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true, Decrypt: true, NoDA: true},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, Scheme: rsaScheme2(tpm2.TPMAlgNull), KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k[0]}),
		}
		rsaSens := tpm2.TPMTSensitive{SensitiveType: tpm2.TPMAlgRSA,
			Sensitive: tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgRSA, &tpm2.TPM2BPrivateKeyRSA{Buffer: k[1]})}
		rl, err := tpm2.LoadExternal{InPrivate: tpm2.New2B(rsaSens), InPublic: tpm2.New2B(rsaPub), Hierarchy: tpm2.TPMRHNull}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		h := uint32(rl.ObjectHandle)
		for _, s := range [][]byte{rsaNull, rsaES, rsaOAEP256} {
			rsp, _ := tp.Send(rsaEncryptCmd(h, []byte("fuzz me"), s, []byte("l\x00")))
			tp.Send(rsaDecryptCmd(h, rsp2B(t, rsp, false), s, []byte("l\x00")))
		}
		pt := ecdhKey.PublicKey().Bytes()
		eccPub := tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true, Decrypt: true, NoDA: true},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}, CurveID: tpm2.TPMECCNistP256,
				KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]}}),
		}
		eccSens := tpm2.TPMTSensitive{SensitiveType: tpm2.TPMAlgECC,
			Sensitive: tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: ecdhKey.Bytes()})}
		el, err := tpm2.LoadExternal{InPrivate: tpm2.New2B(eccSens), InPublic: tpm2.New2B(eccPub), Hierarchy: tpm2.TPMRHNull}.Execute(tp)
		if err != nil {
			t.Fatal(err)
		}
		eh := uint32(el.ObjectHandle)
		kg, _ := tp.Send(rawCommand(ccECDHKeyGen, []uint32{eh}, 0, nil))
		r := newReader(kg[10:])
		r.b2b(200)
		tp.Send(rawCommand(ccECDHZGen, []uint32{eh}, 1, nil, b2b(r.b2b(200))))
		tp.Send(rawCommand(ccECDHZGen, []uint32{eh}, 1, nil, eccPoint2B(peer.PublicKey())))
		tp.Send(rawCommand(ccECDHZGen, []uint32{eh}, 1, nil, b2b(append(b2b(make([]byte, 32)), b2b(make([]byte, 32))...))))
	})
}

func mustActivate(t *testing.T, tp transport.TPM, obj, key loadedKey, id, enc []byte) {
	t.Helper()
	if _, err := activateCredential(tp, obj, key, id, enc); err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
}

// rawPolicySession starts a policy session with a fixed caller nonce and
// runs PolicyCommandCode(cc) in it, drawing no client randomness.
func rawPolicySession(t *testing.T, tp transport.TPM, cc uint32) uint32 {
	t.Helper()
	rsp, err := tp.Send(rawCommand(ccStartAuthSession, []uint32{rhNull, rhNull}, 0, nil,
		b2b(make([]byte, 16)), b2b(nil), []byte{sePolicy}, u16b(algNull), u16b(algSHA256)))
	if err != nil || rcOf(rsp) != rcSuccess {
		t.Fatalf("StartAuthSession: rc %#x", rcOf(rsp))
	}
	h := beU32(rsp[10:14])
	rsp, err = tp.Send(rawCommand(ccPolicyCommandCode, []uint32{h}, 0, nil, u32b(cc)))
	if err != nil || rcOf(rsp) != rcSuccess {
		t.Fatalf("PolicyCommandCode: rc %#x", rcOf(rsp))
	}
	return h
}

// rawPolicyCommand builds a command whose first handle is authorized by
// the policy session sess (fixed caller nonce, no HMAC).
func rawPolicyCommand(cc uint32, handles []uint32, sess uint32, params ...[]byte) []byte {
	var w writer
	w.u16(stSessions)
	w.u32(0)
	w.u32(cc)
	for _, h := range handles {
		w.u32(h)
	}
	var a writer
	a.u32(sess)
	a.b2b(make([]byte, 16))
	a.u8(saContinueSession)
	a.b2b(nil)
	w.u32(uint32(len(a.b)))
	w.raw(a.b)
	for _, p := range params {
		w.raw(p)
	}
	putU32(w.b[2:], uint32(len(w.b)))
	return w.b
}

func beU32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
