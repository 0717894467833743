package vtpm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"pgregory.net/rapid"
)

var testKey = &[32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}

func mustSend(t testing.TB, v transport.TPM, cmd []byte) []byte {
	t.Helper()
	rsp, err := v.Send(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if rcOf(rsp) != rcSuccess {
		t.Fatalf("command %#x: rc %#x", ccOf(cmd), rcOf(rsp))
	}
	return rsp
}

// provision gives a TPM what a running VM's vTPM holds: an EK and an SRK
// made persistent, more persistent keys, and NV data.
func provision(t testing.TB, v transport.TPM, persistent int, nvBytes int) {
	t.Helper()
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	templates := []tpm2.TPMTPublic{tpm2.ECCEKTemplate, tpm2.ECCSRKTemplate}
	for i := 0; i < persistent; i++ {
		tmpl := tpm2.ECCSRKTemplate
		tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: []byte{byte(i)}}})
		templates = append(templates, tmpl)
	}
	for i, tmpl := range templates {
		hier := tpm2.TPMRHOwner
		if i == 0 {
			hier = tpm2.TPMRHEndorsement
		}
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: hier, Auth: tpm2.PasswordAuth(nil)}, InPublic: tpm2.New2B(tmpl)}.Execute(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: &tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, PersistentHandle: tpm2.TPMIDHPersistent(0x81000100 + i)}).Execute(v); err != nil {
			t.Fatal(err)
		}
		tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(v)
	}
	for off := 0; off < nvBytes; off += 512 {
		idx := uint32(0x01500000 + off/512)
		n := min(512, nvBytes-off)
		_, err := tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: tpm2.TPMIRHNVIndex(idx), NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NoDA: true}, DataSize: uint16(n),
		})}.Execute(v)
		if err != nil {
			t.Fatal(err)
		}
		mustSend(t, v, rawCommand(ccNVWrite, []uint32{rhOwner, idx}, 1, nil, b2b(bytes.Repeat([]byte{byte(off)}, n)), u16b(0)))
	}
}

// observe returns every observable of a TPM that Seal must keep: PCRs of
// all banks, NV public areas and contents, persistent keys' public areas,
// and the EK that CreatePrimary derives.
func observe(t testing.TB, v *TPM) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, alg := range hashAlgs {
		for _, sel := range [][]byte{{0xFF, 0, 0}, {0, 0xFF, 0}, {0, 0, 0xFF}} {
			rsp := mustSend(t, v, rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(alg), []byte{3}, sel))
			out.Write(rsp)
		}
	}
	for _, h := range v.handlesOf(htNVIndex) {
		out.Write(mustSend(t, v, rawCommand(ccNVReadPublic, []uint32{h}, 0, nil)))
		rsp, _ := v.Send(rawCommand(ccNVRead, []uint32{rhOwner, h}, 1, nil, u16b(512), u16b(0)))
		out.Write(rsp)
	}
	for _, h := range v.handlesOf(htPersistent) {
		out.Write(mustSend(t, v, rawCommand(ccReadPublic, []uint32{h}, 0, nil)))
	}
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)}, InPublic: tpm2.New2B(tpm2.ECCEKTemplate)}.Execute(v)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(rsp.Name.Buffer)
	tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(v)
	return out.Bytes()
}

func (t *TPM) handlesOf(ht uint32) []uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.handles(ht)
}

func TestSealOpenKeepsObservables(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		v, err := New(Config{VMID: "vm-1"})
		if err != nil {
			rt.Fatal(err)
		}
		defer v.Close()
		provision(t, v, rapid.IntRange(0, 3).Draw(rt, "persistent"), rapid.IntRange(0, 1024).Draw(rt, "nv"))
		for _, pcr := range rapid.SliceOfN(rapid.IntRange(0, 23), 0, 8).Draw(rt, "pcrs") {
			v.Send(rawCommand(ccPCREvent, []uint32{uint32(pcr)}, 1, nil, b2b([]byte{byte(pcr)})))
		}
		before := observe(t, v)
		blob, err := v.Seal(testKey)
		if err != nil {
			rt.Fatal(err)
		}
		w, err := Open(blob, testKey, OpenConfig{VMID: "vm-1", MinGeneration: v.Generation()})
		if err != nil {
			rt.Fatal(err)
		}
		defer w.Close()
		if after := observe(t, w); !bytes.Equal(before, after) {
			rt.Fatalf("observables changed across Seal and Open")
		}
	})
}

func TestSealedStateTamperingDetected(t *testing.T) {
	v := newTestTPM(t)
	provision(t, v, 1, 100)
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(rt *rapid.T) {
		i := rapid.IntRange(0, len(blob)-1).Draw(rt, "byte")
		x := rapid.ByteRange(1, 255).Draw(rt, "xor")
		bad := append([]byte(nil), blob...)
		bad[i] ^= x
		if w, err := Open(bad, testKey, OpenConfig{VMID: "test-vm"}); err == nil {
			w.Close()
			rt.Fatalf("changed byte %d opened", i)
		}
	})
	for n := 0; n < len(blob); n += 7 {
		if _, err := Open(blob[:n], testKey, OpenConfig{VMID: "test-vm"}); err == nil {
			t.Fatalf("truncated blob (%d bytes) opened", n)
		}
	}
}

func TestSealedStateOfAnotherVMRefused(t *testing.T) {
	v := newTestTPM(t)
	blob, err := v.Seal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(blob, testKey, OpenConfig{VMID: "other-vm"}); !errors.Is(err, ErrWrongVM) {
		t.Fatalf("Open with another VM ID: %v, want ErrWrongVM", err)
	}
	// Rewriting the VM ID in the header breaks the AEAD.
	forged := bytes.Replace(blob, []byte("test-vm"), []byte("evil-vm"), 1)
	if _, err := Open(forged, testKey, OpenConfig{VMID: "evil-vm"}); !errors.Is(err, ErrBadState) {
		t.Fatalf("Open of a relabelled blob: %v, want ErrBadState", err)
	}
}

func TestSealedStateRollbackRefused(t *testing.T) {
	v := newTestTPM(t)
	old, _ := v.Seal(testKey)
	cur, _ := v.Seal(testKey)
	if _, err := Open(old, testKey, OpenConfig{VMID: "test-vm", MinGeneration: 2}); !errors.Is(err, ErrRollback) {
		t.Fatalf("Open of generation 1 after 2: %v, want ErrRollback", err)
	}
	w, err := Open(cur, testKey, OpenConfig{VMID: "test-vm", MinGeneration: 2})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
}

func TestSealedStateWrongKeyRefused(t *testing.T) {
	v := newTestTPM(t)
	blob, _ := v.Seal(testKey)
	other := *testKey
	other[0] ^= 1
	if _, err := Open(blob, &other, OpenConfig{VMID: "test-vm"}); !errors.Is(err, ErrBadState) {
		t.Fatalf("Open under another key: %v, want ErrBadState", err)
	}
}

func TestCloseZeroesSecrets(t *testing.T) {
	v := newTestTPM(t)
	provision(t, v, 1, 0)
	s := v.s
	v.Close()
	if s.OwnerSeed != [32]byte{} || s.EndorsementSeed != [32]byte{} || s.OwnerProof != [32]byte{} {
		t.Fatal("seeds not zeroed")
	}
	if _, err := v.Send(rawCommand(ccGetRandom, nil, 0, nil, u16b(8))); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}

func TestPrimaryKeysDeterministic(t *testing.T) {
	v := newTestTPM(t)
	name := func(v *TPM, tmpl tpm2.TPMTPublic) []byte {
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)}, InPublic: tpm2.New2B(tmpl)}.Execute(v)
		if err != nil {
			t.Fatal(err)
		}
		tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(v)
		return rsp.Name.Buffer
	}
	for _, tmpl := range []tpm2.TPMTPublic{tpm2.ECCEKTemplate, tpm2.RSAEKTemplate} {
		a := name(v, tmpl)
		v.PowerCycle()
		mustSend(t, v, rawCommand(ccStartup, nil, 0, nil, u16b(suClear)))
		blob, _ := v.Seal(testKey)
		w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
		if err != nil {
			t.Fatal(err)
		}
		// Drop the RSA cache: the derivation itself is deterministic.
		w.s.RSACache = nil
		if b := name(w, tmpl); !bytes.Equal(a, b) {
			t.Errorf("primary key changed across reboot and seal: %x != %x", a, b)
		}
		w.Close()
	}
}
