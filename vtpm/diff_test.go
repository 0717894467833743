package vtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/big"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// simMu serializes the tests that use the process-wide reference TPM.
var simMu sync.Mutex

func getSim(t testing.TB) *simulator.Simulator {
	t.Helper()
	simMu.Lock()
	sim, err := simulator.Get()
	if err != nil {
		simMu.Unlock()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sim.Close()
		simMu.Unlock()
	})
	return sim
}

func simSend(sim io.ReadWriter, cmd []byte) []byte {
	if _, err := sim.Write(cmd); err != nil {
		return nil
	}
	rsp, _ := io.ReadAll(sim)
	return rsp
}

func rcOf(rsp []byte) uint32 {
	if len(rsp) < 10 {
		return 0xFFFFFFFF
	}
	return binary.BigEndian.Uint32(rsp[6:])
}

func ccOf(cmd []byte) uint32 {
	if len(cmd) < 10 {
		return 0
	}
	return binary.BigEndian.Uint32(cmd[6:])
}

// dual sends every command to the vTPM and to the reference TPM, checks
// that the response codes agree and that the responses of deterministic
// commands are identical, and returns the vTPM's response.
type dual struct {
	t     testing.TB
	v     *TPM
	sim   io.ReadWriter
	exact map[uint32]bool
	log   [][]byte
}

// deterministic lists the commands whose whole response must be equal on
// two TPMs with different seeds.
var deterministic = map[uint32]bool{
	ccPCRRead: true, ccPCREvent: true, ccPCRExtend: true, ccPCRReset: true,
	ccNVRead: true, ccNVReadPublic: true, ccNVWrite: true, ccNVDefineSpace: true,
	ccNVUndefineSpace: true, ccNVIncrement: true, ccNVExtend: true,
	ccLoadExternal: true, ccFlushContext: true, ccHierarchyChangeAuth: true,
	ccTestParms: true, ccSelfTest: true, ccStirRandom: true, ccEvictControl: true,
}

func (d *dual) Send(cmd []byte) ([]byte, error) {
	d.log = append(d.log, append([]byte(nil), cmd...))
	a, err := d.v.Send(cmd)
	if err != nil {
		return nil, err
	}
	b := simSend(d.sim, cmd)
	if rcOf(a) != rcOf(b) {
		d.t.Errorf("command %#x: vtpm rc %#x, reference rc %#x", ccOf(cmd), rcOf(a), rcOf(b))
	} else if deterministic[ccOf(cmd)] && !bytes.Equal(maskCounter(cmd, a), maskCounter(cmd, b)) {
		d.t.Errorf("command %#x: responses differ\nvtpm      %x\nreference %x", ccOf(cmd), a, b)
	}
	return a, nil
}

var _ transport.TPM = (*dual)(nil)

func newDual(t *testing.T) *dual {
	sim := getSim(t)
	return &dual{t: t, v: newTestTPM(t), sim: sim}
}

func pwAuth(auth []byte) tpm2.Session { return tpm2.PasswordAuth(auth) }

func TestDifferentialPCR(t *testing.T) {
	d := newDual(t)
	for _, pcr := range []uint32{0, 7, 16, 23} {
		for i := 0; i < 3; i++ {
			digest := sha256.Sum256([]byte{byte(pcr), byte(i)})
			sha1d := make([]byte, 20)
			sha1d[0] = byte(i)
			_, err := tpm2.PCRExtend{
				PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: pwAuth(nil)},
				Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
					{HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:]},
					{HashAlg: tpm2.TPMAlgSHA1, Digest: sha1d},
				}},
			}.Execute(d)
			if err != nil {
				t.Fatalf("PCR_Extend(%d): %v", pcr, err)
			}
		}
		tpm2.PCREvent{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: pwAuth(nil)},
			EventData: tpm2.TPM2BEvent{Buffer: []byte("event data")},
		}.Execute(d)
	}
	// PCRs 17-22 belong to localities 2-4: locality 0 may neither extend
	// nor reset them, and PCRs 0-15 are not resettable.
	for _, pcr := range []uint32{0, 15, 16, 17, 20, 22, 23} {
		tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: pwAuth(nil)}}.Execute(d)
		tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: pwAuth(nil)},
			Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)}}},
		}.Execute(d)
	}
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256} {
		for _, pcrs := range [][]uint{{0, 1, 2, 3, 4, 5, 6, 7}, {7, 16, 23}, {17, 18, 19, 20, 21, 22}, {8, 9, 10, 11, 12, 13, 14, 15, 16}} {
			_, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
				{Hash: alg, PCRSelect: tpm2.PCClientCompatible.PCRs(pcrs...)},
			}}}.Execute(d)
			if err != nil {
				t.Fatalf("PCR_Read: %v", err)
			}
		}
	}
}

func TestDifferentialNV(t *testing.T) {
	d := newDual(t)
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}
	define := func(idx uint32, nt tpm2.TPMNT, size uint16, auth []byte) error {
		_, err := tpm2.NVDefineSpace{
			AuthHandle: owner,
			Auth:       tpm2.TPM2BAuth{Buffer: auth},
			PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
				NVIndex: tpm2.TPMIRHNVIndex(idx),
				NameAlg: tpm2.TPMAlgSHA256,
				Attributes: tpm2.TPMANV{
					OwnerWrite: true, OwnerRead: true, AuthWrite: true, AuthRead: true, NoDA: true, NT: nt,
				},
				DataSize: size,
			}),
		}.Execute(d)
		return err
	}
	if err := define(0x01500001, tpm2.TPMNTOrdinary, 64, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	define(0x01500001, tpm2.TPMNTOrdinary, 64, nil) // NV_DEFINED
	define(0x01500002, tpm2.TPMNTOrdinary, 4096, nil)
	define(0x01500003, tpm2.TPMNTCounter, 8, nil)
	define(0x01500004, tpm2.TPMNTExtend, 32, nil)
	define(0x01500005, tpm2.TPMNTCounter, 4, nil)

	pub := func(idx uint32) tpm2.NamedHandle {
		rsp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(idx)}.Execute(d)
		if err != nil {
			t.Fatalf("NV_ReadPublic(%#x): %v", idx, err)
		}
		return tpm2.NamedHandle{Handle: tpm2.TPMHandle(idx), Name: rsp.NVName}
	}
	read := func(auth tpm2.TPMHandle, pw []byte, idx uint32, size, off uint16) {
		tpm2.NVRead{AuthHandle: tpm2.AuthHandle{Handle: auth, Auth: pwAuth(pw)}, NVIndex: pub(idx), Size: size, Offset: off}.Execute(d)
	}
	read(tpm2.TPMRHOwner, nil, 0x01500001, 8, 0) // NV_UNINITIALIZED
	tpm2.NVWrite{AuthHandle: owner, NVIndex: pub(0x01500001), Data: tpm2.TPM2BMaxNVBuffer{Buffer: []byte("hello")}, Offset: 3}.Execute(d)
	tpm2.NVWrite{AuthHandle: owner, NVIndex: pub(0x01500001), Data: tpm2.TPM2BMaxNVBuffer{Buffer: []byte("overflow")}, Offset: 60}.Execute(d)
	read(tpm2.TPMRHOwner, nil, 0x01500001, 16, 0)
	read(0x01500001, []byte("pw"), 0x01500001, 64, 0)
	read(0x01500001, []byte("wrong"), 0x01500001, 64, 0) // AUTH_FAIL
	read(0x01500001, []byte("pw\x00\x00"), 0x01500001, 8, 0)
	read(tpm2.TPMRHOwner, nil, 0x01500001, 65, 0) // NV_RANGE
	for i := 0; i < 3; i++ {
		tpm2.NVIncrement{AuthHandle: owner, NVIndex: pub(0x01500003)}.Execute(d)
	}
	tpm2.NVIncrement{AuthHandle: owner, NVIndex: pub(0x01500001)}.Execute(d)
	read(tpm2.TPMRHOwner, nil, 0x01500003, 8, 0)
	d.Send(rawCommand(ccNVExtend, []uint32{rhOwner, 0x01500004}, 1, nil, b2b([]byte("measure me"))))
	read(tpm2.TPMRHOwner, nil, 0x01500004, 32, 0)
	tpm2.NVUndefineSpace{AuthHandle: owner, NVIndex: pub(0x01500004)}.Execute(d)
	tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(0x01500004)}.Execute(d) // HANDLE
}

// recorder records the response code of every command.
type recorder struct {
	tpm transport.TPM
	rcs []uint32
	ccs []uint32
}

func (r *recorder) Send(cmd []byte) ([]byte, error) {
	rsp, err := r.tpm.Send(cmd)
	r.ccs = append(r.ccs, ccOf(cmd))
	r.rcs = append(r.rcs, rcOf(rsp))
	return rsp, err
}

type simTPM struct{ sim io.ReadWriter }

func (s simTPM) Send(cmd []byte) ([]byte, error) { return simSend(s.sim, cmd), nil }

// maskCounter zeroes the pcrUpdateCounter of a PCR_Read response: the
// reference TPM counts the PCR changes of its own start-up.
func maskCounter(cmd, rsp []byte) []byte {
	if ccOf(cmd) != ccPCRRead || len(rsp) < 14 {
		return rsp
	}
	rsp = append([]byte(nil), rsp...)
	copy(rsp[10:14], []byte{0, 0, 0, 0})
	return rsp
}

// TestDifferentialKeys runs the same key scenario on each TPM separately
// (each loads only its own blobs) and compares the response codes.
func TestDifferentialKeys(t *testing.T) {
	a := &recorder{tpm: newTestTPM(t)}
	keyScenario(t, a)
	b := &recorder{tpm: simTPM{getSim(t)}}
	keyScenario(t, b)
	if len(a.rcs) != len(b.rcs) {
		t.Fatalf("vtpm ran %d commands, reference %d", len(a.rcs), len(b.rcs))
	}
	for i := range a.rcs {
		if a.rcs[i] != b.rcs[i] {
			t.Errorf("command %d (%#x): vtpm rc %#x, reference rc %#x", i, a.ccs[i], a.rcs[i], b.rcs[i])
		}
	}
}

func keyScenario(t *testing.T, d transport.TPM) {
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}
	for _, tmpl := range []tpm2.TPMTPublic{tpm2.ECCSRKTemplate, tpm2.RSASRKTemplate, tpm2.ECCEKTemplate, tpm2.RSAEKTemplate} {
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tmpl)}.Execute(d)
		if err != nil {
			t.Fatalf("CreatePrimary: %v", err)
		}
		tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(d)
	}
	srk, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	srkH := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: pwAuth(nil)}

	// A sealed object: Create, Load, Unseal.
	sealed, err := tpm2.Create{
		ParentHandle: srkH,
		InSensitive:  tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("secret")})}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true, NoDA: true},
		}),
	}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tpm2.Load{ParentHandle: srkH, InPrivate: sealed.OutPrivate, InPublic: sealed.OutPublic}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	un, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: pwAuth(nil)}}.Execute(d)
	if err != nil || string(un.OutData.Buffer) != "secret" {
		t.Fatalf("Unseal = %q, %v", un.OutData.Buffer, err)
	}
	// Unseal of a key is refused.
	tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: pwAuth(nil)}}.Execute(d)
	// A tampered private blob does not load.
	bad := sealed.OutPrivate
	bad.Buffer = append([]byte(nil), bad.Buffer...)
	bad.Buffer[len(bad.Buffer)-1] ^= 1
	tpm2.Load{ParentHandle: srkH, InPrivate: bad, InPublic: sealed.OutPublic}.Execute(d)

	// A signing key: Create, Load, Sign, VerifySignature, Certify, Quote.
	signKey, err := tpm2.Create{ParentHandle: srkH, InPublic: tpm2.New2B(tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
	})}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := tpm2.Load{ParentHandle: srkH, InPrivate: signKey.OutPrivate, InPublic: signKey.OutPublic}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	skH := tpm2.AuthHandle{Handle: sk.ObjectHandle, Name: sk.Name, Auth: pwAuth(nil)}
	digest := sha256.Sum256([]byte("message"))
	sig, err := tpm2.Sign{KeyHandle: skH, Digest: tpm2.TPM2BDigest{Buffer: digest[:]},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull}}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	pubArea, _ := signKey.OutPublic.Contents()
	pk, err := tpm2.Pub(*pubArea)
	if err != nil {
		t.Fatal(err)
	}
	es, _ := sig.Signature.Signature.ECDSA()
	if !ecdsa.Verify(pk.(*ecdsa.PublicKey), digest[:], bigInt(es.SignatureR.Buffer), bigInt(es.SignatureS.Buffer)) {
		t.Error("Sign: signature does not verify")
	}
	tpm2.VerifySignature{KeyHandle: tpm2.NamedHandle{Handle: sk.ObjectHandle, Name: sk.Name}, Digest: tpm2.TPM2BDigest{Buffer: digest[:]}, Signature: sig.Signature}.Execute(d)
	other := sha256.Sum256([]byte("other"))
	tpm2.VerifySignature{KeyHandle: tpm2.NamedHandle{Handle: sk.ObjectHandle, Name: sk.Name}, Digest: tpm2.TPM2BDigest{Buffer: other[:]}, Signature: sig.Signature}.Execute(d)

	q, err := tpm2.Quote{SignHandle: skH, QualifyingData: tpm2.TPM2BData{Buffer: []byte("nonce")},
		PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(0, 1, 7)}}}}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	qd := sha256.Sum256(q.Quoted.Bytes())
	qs, _ := q.Signature.Signature.ECDSA()
	if !ecdsa.Verify(pk.(*ecdsa.PublicKey), qd[:], bigInt(qs.SignatureR.Buffer), bigInt(qs.SignatureS.Buffer)) {
		t.Error("Quote: signature does not verify")
	}
	att, err := q.Quoted.Contents()
	if err != nil {
		t.Fatal(err)
	}
	if string(att.ExtraData.Buffer) != "nonce" {
		t.Errorf("quote extraData = %q", att.ExtraData.Buffer)
	}
	tpm2.Certify{ObjectHandle: tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: pwAuth(nil)}, SignHandle: skH}.Execute(d)

	// Context save and load.
	ctx, err := tpm2.ContextSave{SaveHandle: sk.ObjectHandle}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	tpm2.FlushContext{FlushHandle: sk.ObjectHandle}.Execute(d)
	cl, err := tpm2.ContextLoad{Context: ctx.Context}.Execute(d)
	if err != nil {
		t.Fatalf("ContextLoad: %v", err)
	}
	// The reference TPM holds three objects; stay within its limit.
	tpm2.FlushContext{FlushHandle: cl.LoadedHandle}.Execute(d)
	tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(d)

	// Persistence.
	tpm2.EvictControl{Auth: owner, ObjectHandle: &tpm2.NamedHandle{Handle: srk.ObjectHandle, Name: srk.Name}, PersistentHandle: 0x81000010}.Execute(d)
	tpm2.EvictControl{Auth: owner, ObjectHandle: &tpm2.NamedHandle{Handle: srk.ObjectHandle, Name: srk.Name}, PersistentHandle: 0x81000010}.Execute(d)
	tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(0x81000011)}.Execute(d)
	tpm2.EvictControl{Auth: owner, ObjectHandle: &tpm2.NamedHandle{Handle: 0x81000010, Name: srk.Name}, PersistentHandle: 0x81000010}.Execute(d)

	// LoadExternal of a public key gives the same name on both TPMs.
	tpm2.LoadExternal{InPublic: signKey.OutPublic, Hierarchy: tpm2.TPMRHOwner}.Execute(d)
	tpm2.FlushContext{FlushHandle: tpm2.TPMHandle(0x80FFFFFF)}.Execute(d)

	tpm2.TestParms{Parameters: tpm2.TPMTPublicParms{Type: tpm2.TPMAlgECC, Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{CurveID: tpm2.TPMECCNistP256})}}.Execute(d)
	tpm2.HierarchyChangeAuth{AuthHandle: owner, NewAuth: tpm2.TPM2BAuth{Buffer: []byte("owner")}}.Execute(d)
	tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(d) // AUTH_FAIL
}

func bigInt(b []byte) *big.Int { return new(big.Int).SetBytes(b) }

// rawCommand builds a command: the handles, a password session with auth
// for each of the first nauth handles, then the parameters.
func rawCommand(cc uint32, handles []uint32, nauth int, auth []byte, params ...[]byte) []byte {
	var w writer
	tag := uint16(stNoSessions)
	if nauth > 0 {
		tag = stSessions
	}
	w.u16(tag)
	w.u32(0)
	w.u32(cc)
	for _, h := range handles {
		w.u32(h)
	}
	if nauth > 0 {
		var a writer
		for i := 0; i < nauth; i++ {
			a.u32(rsPW)
			a.u16(0)
			a.u8(saContinueSession)
			a.b2b(auth)
		}
		w.u32(uint32(len(a.b)))
		w.raw(a.b)
	}
	for _, p := range params {
		w.raw(p)
	}
	binary.BigEndian.PutUint32(w.b[2:], uint32(len(w.b)))
	return w.b
}

func b2b(b []byte) []byte {
	var w writer
	w.b2b(b)
	return w.b
}

func u16b(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32b(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// TestDifferentialMalformed sends malformed commands to both TPMs and
// compares the whole error responses, including the handle, parameter and
// session numbers of format-one codes.
func TestDifferentialMalformed(t *testing.T) {
	d := newDual(t)
	getRandom := rawCommand(ccGetRandom, nil, 0, nil, u16b(16))
	cases := map[string][]byte{
		"short header":          {0x80, 0x01, 0x00, 0x00},
		"bad tag":               {0x00, 0xC1, 0, 0, 0, 10, 0, 0, 0x01, 0x7B},
		"size larger":           {0x80, 0x01, 0, 0, 0, 14, 0, 0, 0x01, 0x7B, 0, 16},
		"size smaller":          {0x80, 0x01, 0, 0, 0, 11, 0, 0, 0x01, 0x7B, 0, 16},
		"unknown command":       {0x80, 0x01, 0, 0, 0, 10, 0x20, 0, 0x01, 0x7B},
		"missing parameter":     rawCommand(ccGetRandom, nil, 0, nil),
		"extra parameter":       append(getRandom[:len(getRandom):len(getRandom)], 0),
		"pcr out of range":      rawCommand(ccPCRExtend, []uint32{24}, 1, nil, u32b(0)),
		"pcr no auth":           rawCommand(ccPCRExtend, []uint32{1}, 0, nil, u32b(0)),
		"pcr bad hash":          rawCommand(ccPCRExtend, []uint32{1}, 1, nil, u32b(1), u16b(0x99)),
		"pcr short digest":      rawCommand(ccPCRExtend, []uint32{1}, 1, nil, u32b(1), u16b(algSHA256), make([]byte, 10)),
		"pcr too many digests":  rawCommand(ccPCRExtend, []uint32{1}, 1, nil, u32b(9)),
		"pcr read bad select":   rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(algSHA256), []byte{1, 0xFF}),
		"pcr read unknown hash": rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(0x77), []byte{3, 0xFF, 0, 0}),
		"transient not loaded":  rawCommand(ccReadPublic, []uint32{0x80000002}, 0, nil),
		"persistent missing":    rawCommand(ccReadPublic, []uint32{0x81000099}, 0, nil),
		"nv missing":            rawCommand(ccNVReadPublic, []uint32{0x01000099}, 0, nil),
		"flush bad handle":      rawCommand(ccFlushContext, nil, 0, nil, u32b(0x40000001)),
		"flush not loaded":      rawCommand(ccFlushContext, nil, 0, nil, u32b(0x80000001)),
		"auth size too small":   append(rawCommand(ccPCRReset, []uint32{16}, 0, nil)[:14:14], 0, 0, 0, 3),
		"wrong owner password":  rawCommand(ccHierarchyChangeAuth, []uint32{rhOwner}, 1, []byte("x"), b2b(nil)),
		"capability unknown":    rawCommand(ccGetCapability, nil, 0, nil, u32b(0x77), u32b(0), u32b(1)),
		"startup twice":         rawCommand(ccStartup, nil, 0, nil, u16b(suClear)),
		"shutdown bad type":     rawCommand(ccShutdown, nil, 0, nil, u16b(7)),
		"selftest bad bool":     rawCommand(ccSelfTest, nil, 0, nil, []byte{2}),
		"hash unknown alg":      rawCommand(ccHash, nil, 0, nil, b2b([]byte("x")), u16b(0x55), u32b(rhOwner)),
		"create primary bad type": rawCommand(ccCreatePrimary, []uint32{rhOwner}, 1, nil,
			b2b(make([]byte, 4)), b2b(append(u16b(0x99), make([]byte, 10)...)), b2b(nil), u32b(0)),
		"create primary bad curve": rawCommand(ccCreatePrimary, []uint32{rhOwner}, 1, nil, b2b(make([]byte, 4)),
			b2b(bytesOf(u16b(algECC), u16b(algSHA256), u32b(0x00040072), u16b(0), u16b(algNull), u16b(algNull), u16b(0x42), u16b(algNull), u16b(0), u16b(0))),
			b2b(nil), u32b(0)),
		"auth size too large": bytesOf(u16b(stSessions), u32b(27), u32b(ccPCRReset), u32b(16), u32b(100),
			u32b(rsPW), u16b(0), []byte{1}, u16b(0)),
		"auth area short":             bytesOf(u16b(stSessions), u32b(22), u32b(ccPCRReset), u32b(16), u32b(4), u32b(rsPW)),
		"auth area leftover":          bytesOf(u16b(stSessions), u32b(28), u32b(ccPCRReset), u32b(16), u32b(10), u32b(rsPW), u16b(0), []byte{1}, u16b(0), []byte{0}),
		"password with nonce":         bytesOf(u16b(stSessions), u32b(29), u32b(ccPCRReset), u32b(16), u32b(11), u32b(rsPW), b2b([]byte{1}), []byte{1}, u16b(0)),
		"password bad attrs":          bytesOf(u16b(stSessions), u32b(27), u32b(ccPCRReset), u32b(16), u32b(9), u32b(rsPW), u16b(0), []byte{0x21}, u16b(0)),
		"reserved attrs":              bytesOf(u16b(stSessions), u32b(27), u32b(ccPCRReset), u32b(16), u32b(9), u32b(rsPW), u16b(0), []byte{0x08}, u16b(0)),
		"session not loaded":          bytesOf(u16b(stSessions), u32b(27), u32b(ccPCRReset), u32b(16), u32b(9), u32b(0x03000001), u16b(0), []byte{1}, u16b(0)),
		"session bad handle":          bytesOf(u16b(stSessions), u32b(27), u32b(ccPCRReset), u32b(16), u32b(9), u32b(0x40000001), u16b(0), []byte{1}, u16b(0)),
		"four sessions":               rawCommand(ccPCRReset, []uint32{16}, 4, nil),
		"two password sessions":       rawCommand(ccPCRReset, []uint32{16}, 2, nil),
		"hmac too long":               rawCommand(ccPCRReset, []uint32{16}, 1, make([]byte, 65)),
		"sessions on no-auth command": rawCommand(ccGetRandom, nil, 1, nil, u16b(8)),
		"nv define too large": rawCommand(ccNVDefineSpace, []uint32{rhOwner}, 1, nil, b2b(nil),
			b2b(bytesOf(u32b(0x01500010), u16b(algSHA256), u32b(0x00060006), u16b(0), u16b(4096)))),
	}
	for name, cmd := range cases {
		t.Run(name, func(t *testing.T) {
			d.t = t
			d.Send(cmd)
			a, _ := d.v.Send(cmd)
			b := simSend(d.sim, cmd)
			if !bytes.Equal(a, b) {
				t.Errorf("vtpm %x, reference %x", a, b)
			}
		})
	}
}

func bytesOf(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// capData sends GetCapability and returns the capability data after the
// moreData byte and the capability selector.
func capData(t *testing.T, tp transport.TPM, capability, prop, count uint32) []byte {
	t.Helper()
	rsp, _ := tp.Send(rawCommand(ccGetCapability, nil, 0, nil, u32b(capability), u32b(prop), u32b(count)))
	if rcOf(rsp) != rcSuccess || len(rsp) < 15 {
		t.Fatalf("GetCapability(%#x): rc %#x", capability, rcOf(rsp))
	}
	return rsp[15:]
}

// pairs decodes a list of (uint32 or uint16 key, uint32 value) pairs.
func pairs(b []byte, keySize int) map[uint32]uint32 {
	r := newReader(b)
	n := int(r.u32())
	m := map[uint32]uint32{}
	for i := 0; i < n && r.ok(); i++ {
		var k uint32
		if keySize == 2 {
			k = uint32(r.u16())
		} else {
			k = r.u32()
		}
		m[k] = r.u32()
	}
	return m
}

// TestDifferentialCapabilities compares the capabilities on which clients
// base decisions: PCR banks and PC Client PCR attributes, the size limits,
// the attributes of the algorithms and commands both TPMs implement, the
// permanent handles and the ECC curves.
func TestDifferentialCapabilities(t *testing.T) {
	v := newTestTPM(t)
	sim := simTPM{getSim(t)}

	if a, b := capData(t, v, capPCRs, 0, 8), capData(t, sim, capPCRs, 0, 8); !bytes.Equal(a, b) {
		t.Errorf("PCR banks: vtpm %x, reference %x", a, b)
	}
	if a, b := capData(t, v, capHandles, 0x40000000, 64), capData(t, sim, capHandles, 0x40000000, 64); !bytes.Equal(a, b) {
		t.Errorf("permanent handles: vtpm %x, reference %x", a, b)
	}
	// PC Client PCR attributes: save, extend and reset localities,
	// no-increment, D-RTM reset.
	pa := map[uint32][]byte{}
	pb := map[uint32][]byte{}
	for _, x := range []struct {
		tp transport.TPM
		m  map[uint32][]byte
	}{{v, pa}, {sim, pb}} {
		r := newReader(capData(t, x.tp, capPCRProperties, 0, 64))
		n := int(r.u32())
		for i := 0; i < n && r.ok(); i++ {
			tag := r.u32()
			x.m[tag] = r.bytes(int(r.u8()))
		}
	}
	for tag := uint32(0); tag <= ptPCRDRTMReset; tag++ {
		if !bytes.Equal(pa[tag], pb[tag]) {
			t.Errorf("PCR property %#x: vtpm %x, reference %x", tag, pa[tag], pb[tag])
		}
	}
	// Fixed properties that bound what a client may send.
	fa := pairs(capData(t, v, capTPMProperties, 0x100, 127), 4)
	fb := pairs(capData(t, sim, capTPMProperties, 0x100, 127), 4)
	for _, p := range []uint32{0x100, 0x10D, 0x112, 0x113, 0x117, 0x119, 0x11B, 0x11C, 0x11D, 0x11E, 0x11F, 0x120, 0x12C, 0x12E} {
		if fa[p] != fb[p] {
			t.Errorf("TPM property %#x: vtpm %#x, reference %#x", p, fa[p], fb[p])
		}
	}
	// Algorithms: those we list must exist in the reference with the
	// same attributes.
	aa := pairs(capData(t, v, capAlgs, 0, 169), 2)
	ab := pairs(capData(t, sim, capAlgs, 0, 169), 2)
	for alg, attrs := range aa {
		if ref, ok := ab[alg]; !ok || ref != attrs {
			t.Errorf("algorithm %#x: vtpm attributes %#x, reference %#x (listed %v)", alg, attrs, ref, ok)
		}
	}
	// Commands: the same handle counts and response-handle bit.
	cmdsOf := func(tp transport.TPM) map[uint32]uint32 {
		r := newReader(capData(t, tp, capCommands, 0, 254))
		n := int(r.u32())
		m := map[uint32]uint32{}
		for i := 0; i < n && r.ok(); i++ {
			a := r.u32()
			m[a&0xFFFF] = a
		}
		return m
	}
	ca, cb := cmdsOf(v), cmdsOf(sim)
	for cc, a := range ca {
		b, ok := cb[cc]
		const mask = 7<<25 | 1<<28 // cHandles, rHandle
		if !ok || a&mask != b&mask {
			t.Errorf("command %#x: vtpm TPMA_CC %#x, reference %#x (listed %v)", cc, a, b, ok)
		}
	}
	// ECC curves: ours are a subset of the reference's.
	r := newReader(capData(t, sim, capECCCurves, 0, 64))
	refCurves := map[uint16]bool{}
	for n := int(r.u32()); n > 0 && r.ok(); n-- {
		refCurves[r.u16()] = true
	}
	for _, c := range []uint16{curveNISTP256, curveNISTP384} {
		if !refCurves[c] {
			t.Errorf("curve %#x not in the reference", c)
		}
	}
}

// TestDifferentialDictionaryAttack guesses an object's password until the
// TPM locks out, on both TPMs, then resets the lockout.
func TestDifferentialDictionaryAttack(t *testing.T) {
	a := &recorder{tpm: newTestTPM(t)}
	daScenario(t, a)
	b := &recorder{tpm: simTPM{getSim(t)}}
	daScenario(t, b)
	// Three failures, then lockout even for the right password; after
	// the reset it unseals; a wrong lockoutAuth locks lockoutAuth.
	want := []uint32{0x98e, 0x98e, 0x98e, rcLockout, rcLockout, rcSuccess, rcSuccess, 0x98e, rcLockout}
	if got := a.rcs[3:12]; !slices.Equal(got, want) {
		t.Errorf("vtpm response codes %#x, want %#x", got, want)
	}
	if len(a.rcs) != len(b.rcs) {
		t.Fatalf("vtpm ran %d commands, reference %d", len(a.rcs), len(b.rcs))
	}
	for i := range a.rcs {
		if a.rcs[i] != b.rcs[i] {
			t.Errorf("command %d (%#x): vtpm rc %#x, reference rc %#x", i, a.ccs[i], a.rcs[i], b.rcs[i])
		}
	}
}

func daScenario(t *testing.T, d transport.TPM) {
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}
	srk, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	srkH := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: pwAuth(nil)}
	sealed, err := tpm2.Create{
		ParentHandle: srkH,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: []byte("correct horse")},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: []byte("secret")}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true},
		}),
	}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := tpm2.Load{ParentHandle: srkH, InPrivate: sealed.OutPrivate, InPublic: sealed.OutPublic}.Execute(d)
	if err != nil {
		t.Fatal(err)
	}
	unseal := func(pw string) {
		tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: pwAuth([]byte(pw))}}.Execute(d)
	}
	for _, pw := range []string{"guess1", "guess2", "guess3", "guess4", "correct horse"} {
		unseal(pw)
	}
	reset := func(pw string) { d.Send(rawCommand(ccDictionaryAttackLockReset, []uint32{rhLockout}, 1, []byte(pw))) }
	reset("")
	unseal("correct horse")
	// A wrong lockout password locks lockoutAuth itself.
	reset("x")
	reset("")
	tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(d)
	tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(d)
}

// TestDifferentialTemplates creates primaries from invalid templates on
// both TPMs and compares the response codes.
func TestDifferentialTemplates(t *testing.T) {
	d := newDual(t)
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)}
	ecc := func(f func(p *tpm2.TPMTPublic)) tpm2.TPMTPublic {
		p := tpm2.ECCSRKTemplate
		f(&p)
		return p
	}
	signParms := tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
		CurveID: tpm2.TPMECCNistP256,
	})
	cases := map[string]tpm2.TPMTPublic{
		"no sensitiveDataOrigin":       ecc(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = false }),
		"fixedTPM without fixedParent": ecc(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedParent = false }),
		"restricted sign and decrypt":  ecc(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = true }),
		"storage key without symmetric": ecc(func(p *tpm2.TPMTPublic) {
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, CurveID: tpm2.TPMECCNistP256})
		}),
		"storage key with a scheme": ecc(func(p *tpm2.TPMTPublic) {
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES, KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)), Mode: tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)},
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
				CurveID:   tpm2.TPMECCNistP256})
		}),
		"restricted signer without scheme": ecc(func(p *tpm2.TPMTPublic) {
			p.ObjectAttributes.Decrypt = false
			p.ObjectAttributes.SignEncrypt = true
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{CurveID: tpm2.TPMECCNistP256})
		}),
		"signer with symmetric": ecc(func(p *tpm2.TPMTPublic) {
			p.ObjectAttributes.Decrypt = false
			p.ObjectAttributes.Restricted = false
			p.ObjectAttributes.SignEncrypt = true
		}),
		"unrestricted signer": ecc(func(p *tpm2.TPMTPublic) {
			p.ObjectAttributes.Decrypt = false
			p.ObjectAttributes.Restricted = false
			p.ObjectAttributes.SignEncrypt = true
			p.Parameters = signParms
		}),
		"policy of the wrong size": ecc(func(p *tpm2.TPMTPublic) { p.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 20)} }),
		"sealed object with origin": {
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true, SensitiveDataOrigin: true},
		},
		"rsa exponent 3": func() tpm2.TPMTPublic {
			p := tpm2.RSASRKTemplate
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES, KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)), Mode: tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)},
				KeyBits:   2048, Exponent: 3})
			return p
		}(),
	}
	for name, tmpl := range cases {
		t.Run(name, func(t *testing.T) {
			d.t = t
			rsp, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(tmpl)}.Execute(d)
			if err == nil {
				tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(d)
			}
		})
	}
}
