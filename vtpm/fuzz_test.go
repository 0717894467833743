package vtpm

import (
	"crypto/rsa"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/cryptotest"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	gotpm "github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

var update = flag.Bool("update", false, "rewrite testdata/commands from real client sessions")

// splitCommands splits a stream of TPM commands by their size fields.
func splitCommands(b []byte) [][]byte {
	var cmds [][]byte
	for len(b) >= 10 {
		n := int(binary.BigEndian.Uint32(b[2:]))
		if n < 10 || n > len(b) {
			n = len(b)
		}
		cmds = append(cmds, b[:n])
		b = b[n:]
	}
	if len(b) > 0 {
		cmds = append(cmds, b)
	}
	return cmds
}

// fuzzBase is a sealed TPM whose RSA primary cache already holds the RSA
// EK and SRK, so that fuzzing does not spend its time deriving RSA primes.
var fuzzBase = sync.OnceValues(func() ([]byte, error) {
	v, err := New(Config{VMID: "fuzz"})
	if err != nil {
		return nil, err
	}
	defer v.Close()
	rw := &readWriter{tpm: v}
	for _, f := range []func(io any) error{
		func(any) error { k, err := client.EndorsementKeyRSA(rw); k.Close(); return err },
		func(any) error { k, err := client.StorageRootKeyRSA(rw); k.Close(); return err },
	} {
		if err := f(nil); err != nil {
			return nil, err
		}
	}
	return v.Seal(testKey)
})

// maxFuzzCommands bounds the commands of one input, so that the fuzzer
// spends its time on variety rather than on long sequences of signatures.
const maxFuzzCommands = 48

// FuzzSend feeds command sequences to Send, the guest's whole attack
// surface, and then probes what they left behind (stateProbe). The seeds are the commands go-tpm-tools and go-tpm clients sent
// in this package's tests (testdata/commands). Every response must be a
// well-formed TPM response of at most 4096 bytes, whatever the input.
func FuzzSend(f *testing.F) {
	files, _ := filepath.Glob("testdata/commands/*.bin")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Deriving RSA primes under coverage instrumentation takes minutes;
	// use the fixed test keys of testdata/fuzz-rsa-keys.txt instead.
	defer useFixedRSAKeys(f)()

	base, err := loadFuzzBase()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		// The TPM's randomness (nonces, keys) repeats from input to
		// input: a crash reproduces, and the session streams recorded
		// with the same seed (TestRecordCommands/sessions) get the
		// nonces their HMACs and encrypted parameters were made with.
		cryptotest.SetGlobalRandom(t, fuzzRandSeed)
		v, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		cmds := splitCommands(stream)
		if len(cmds) > maxFuzzCommands {
			cmds = cmds[:maxFuzzCommands]
		}
		for _, cmd := range cmds {
			checkSend(t, v, cmd)
		}
		// Then use whatever the stream left behind with the passwords the
		// TPM holds for it (stateProbe: every object signs, is read and
		// saved, every NV index read, every sequence updated), which
		// byte-level mutation rarely manages on its own.
		for _, cmd := range stateProbe(v) {
			checkSend(t, v, cmd)
		}
	})
}

// checkSend sends cmd and checks that the response is well formed.
func checkSend(t *testing.T, v *TPM, cmd []byte) {
	t.Helper()
	rsp, err := v.Send(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if len(rsp) < 10 || len(rsp) > maxResponseSize {
		t.Fatalf("response of %d bytes", len(rsp))
	}
	if int(binary.BigEndian.Uint32(rsp[2:])) != len(rsp) {
		t.Fatalf("response size field %d, length %d", binary.BigEndian.Uint32(rsp[2:]), len(rsp))
	}
	tag := binary.BigEndian.Uint16(rsp)
	if tag != stNoSessions && tag != stSessions {
		t.Fatalf("response tag %#x", tag)
	}
	if rcOf(rsp) != rcSuccess && len(rsp) != 10 {
		t.Fatalf("error response of %d bytes", len(rsp))
	}
	if rcOf(rsp) == rcSuccess && tag == stSessions {
		checkResponseSessions(t, cmd, rsp)
	}
}

// TestRecordCommands records the commands real clients send into
// testdata/commands when run with -update.
//
// Its subtests can be run alone, for example
// go test ./vtpm -run TestRecordCommands/sessions -update.
func TestRecordCommands(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/commands")
	}
	t.Run("clients", recordClientCommands)
	t.Run("sessions", recordSessionCommands)
	t.Run("sequence-contexts", recordSequenceContextCommands)
	t.Run("audit", recordAuditCommands)
	t.Run("cmdaudit", recordCmdAuditCommands)
}

// writeCommands writes a recorded command stream to testdata/commands.
func writeCommands(t *testing.T, name string, cmds [][]byte) {
	var all []byte
	for _, c := range cmds {
		all = append(all, c...)
	}
	os.MkdirAll("testdata/commands", 0o755)
	if err := os.WriteFile(filepath.Join("testdata/commands", name+".bin"), all, 0o644); err != nil {
		t.Fatal(err)
	}
}

func recordClientCommands(t *testing.T) {
	write := func(name string, cmds [][]byte) { writeCommands(t, name, cmds) }
	// go-tpm-tools: EKs, SRK, AK, quote.
	v := newTestTPM(t)
	rw := &readWriter{tpm: v}
	for _, mk := range []func() (*client.Key, error){
		func() (*client.Key, error) { return client.EndorsementKeyECC(rw) },
		func() (*client.Key, error) { return client.EndorsementKeyRSA(rw) },
		func() (*client.Key, error) { return client.StorageRootKeyECC(rw) },
	} {
		k, err := mk()
		if err != nil {
			t.Fatal(err)
		}
		k.Close()
	}
	write("gotpmtools-keys", rw.sent)
	rw.sent = nil
	ak, err := client.AttestationKeyECC(rw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ak.Quote(tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}, []byte("nonce")); err != nil {
		t.Fatal(err)
	}
	ak.Close()
	write("gotpmtools-quote", rw.sent)

	// go-tpm: the key, PCR and NV scenarios of the differential tests.
	rec := &sendLog{tpm: newTestTPM(t)}
	keyScenario(t, rec)
	write("gotpm-keys", rec.cmds)
	rec = &sendLog{tpm: newTestTPM(t)}
	provision(t, rec, 2, 600)
	for _, pcr := range []uint32{0, 7, 16, 23} {
		rec.Send(rawCommand(ccPCREvent, []uint32{pcr}, 1, nil, b2b([]byte("event"))))
	}
	rec.Send(rawCommand(ccPCRRead, nil, 0, nil, u32b(1), u16b(algSHA256), []byte{3, 0xFF, 0xFF, 0xFF}))
	rec.Send(rawCommand(ccGetCapability, nil, 0, nil, u32b(capTPMProperties), u32b(0x100), u32b(100)))
	rec.Send(rawCommand(ccNVIncrement, []uint32{rhOwner, 0x01500000}, 1, nil))
	write("gotpm-pcr-nv", rec.cmds)
}

// sendLog records the commands sent through it and their responses.
type sendLog struct {
	tpm  *TPM
	cmds [][]byte
	rsps [][]byte
}

func (s *sendLog) Send(cmd []byte) ([]byte, error) {
	s.cmds = append(s.cmds, append([]byte(nil), cmd...))
	rsp, err := s.tpm.Send(cmd)
	s.rsps = append(s.rsps, rsp)
	return rsp, err
}

// loadFuzzRSAKeys reads "bits modulus prime" lines of test RSA keys.
func loadFuzzRSAKeys(t testing.TB) map[int][2][]byte {
	b, err := os.ReadFile("testdata/fuzz-rsa-keys.txt")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[int][2][]byte{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var bits int
		var n, p string
		if _, err := fmt.Sscan(line, &bits, &n, &p); err != nil {
			t.Fatal(err)
		}
		nb, err1 := hex.DecodeString(n)
		pb, err2 := hex.DecodeString(p)
		if err1 != nil || err2 != nil {
			t.Fatal("bad test RSA key")
		}
		keys[bits] = [2][]byte{nb, pb}
	}
	return keys
}

// useFixedRSAKeys makes RSA key derivation and generation return the fixed
// test keys of testdata/fuzz-rsa-keys.txt (deriving RSA primes under
// coverage instrumentation takes minutes). It returns the function that
// restores them.
func useFixedRSAKeys(tb testing.TB) func() {
	saveDerive, saveGenerate := deriveRSA, generateRSA
	fixed := loadFuzzRSAKeys(tb)
	deriveRSA = func(d *deriver, bits int) ([]byte, []byte) {
		k := fixed[bits]
		return append([]byte(nil), k[0]...), append([]byte(nil), k[1]...)
	}
	generateRSA = func(bits int) (*rsa.PrivateKey, error) {
		k := fixed[bits]
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(k[0]), E: 65537}
		priv, ok := rsaFromPrime(pub, k[1])
		if !ok {
			return nil, errors.New("bad fixed key")
		}
		return priv, nil
	}
	return func() { deriveRSA, generateRSA = saveDerive, saveGenerate }
}

// fuzzRandSeed seeds the TPM's randomness in FuzzSend and in the session
// recordings.
const fuzzRandSeed = 0x5e55

// fuzzBaseFile is the TPM that FuzzSend starts every input from, sealed
// with testKey for the VM "fuzz". The session streams of testdata/commands
// were recorded on it, so that their salts decrypt with its keys. It is
// written by TestRecordCommands/sessions.
const fuzzBaseFile = "testdata/fuzz-base.bin"

// loadFuzzBase returns the sealed fuzz base TPM: testdata/fuzz-base.bin, or
// a fresh one if that file does not open (an older state format).
func loadFuzzBase() ([]byte, error) {
	b, err := os.ReadFile(fuzzBaseFile)
	if err == nil {
		if v, err := Open(b, testKey, OpenConfig{VMID: "fuzz"}); err == nil {
			v.Close()
			return b, nil
		}
	}
	return fuzzBase()
}

// checkResponseSessions checks the response authorization area of a
// successful command with sessions: the parameter size fits, and the rest
// is one well-formed entry (nonce, attributes, HMAC) per command session.
func checkResponseSessions(t *testing.T, cmd, rsp []byte) {
	def := lookupCommand(ccOf(cmd))
	r := newReader(rsp[10:])
	if def != nil && def.rHandle {
		r.u32()
	}
	r.bytes(int(r.u32()))
	n := 0
	for r.ok() && !r.empty() {
		r.b2b(maxDigestSize)
		r.u8()
		r.b2b(maxDigestSize)
		n++
	}
	if !r.ok() || n == 0 || n > 3 {
		t.Fatalf("malformed response authorization area (%d entries): %x", n, rsp)
	}
}

// recordSessionCommands records session streams on the fuzz base TPM with
// FuzzSend's deterministic randomness and a raw client whose nonces come
// from a stream of their own, so that FuzzSend replays them with the
// nonces their HMACs and parameter encryption were computed with.
func recordSessionCommands(t *testing.T) {
	defer useFixedRSAKeys(t)()
	base, err := fuzzBase()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fuzzBaseFile, base, 0o644); err != nil {
		t.Fatal(err)
	}
	saveRand := rawClientRand
	defer func() { rawClientRand = saveRand }()
	// exact streams must replay to the recorded response codes. go-tpm's
	// streams do not: its client draws its nonces and salts from the
	// same (deterministic) source as the TPM, so that on replay the TPM
	// gets other nonces and the HMACs after the first fail; they still
	// seed salted StartAuthSessions that decrypt with the base's keys.
	record := func(name string, exact bool, scenario func(d transport.TPM)) {
		clientRand := mrand.NewChaCha8([32]byte{'c', 'l', 'i', 'e', 'n', 't'})
		rawClientRand = func(b []byte) { clientRand.Read(b) }
		cryptotest.SetGlobalRandom(t, fuzzRandSeed)
		v, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		rec := &sendLog{tpm: v}
		scenario(rec)
		writeCommands(t, name, rec.cmds)
		if !exact {
			return
		}
		// The stream replays to the same responses.
		cryptotest.SetGlobalRandom(t, fuzzRandSeed)
		w, err := Open(base, testKey, OpenConfig{VMID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		for i, cmd := range rec.cmds {
			a, _ := w.Send(cmd)
			if rcOf(a) != rcOf(rec.rsps[i]) {
				t.Errorf("%s: command %d (%#x) replays to rc %#x, recorded %#x", name, i, ccOf(cmd), rcOf(a), rcOf(rec.rsps[i]))
			}
		}
	}
	record("sessions-raw", true, func(d transport.TPM) {
		rawSessionScenario(t, d)
		xorScenario(t, d)
	})
	record("sessions-gotpm", false, func(d transport.TPM) {
		f := newSessionFixture(t, d, true, false)
		auth := gotpm.Auth(f.sealedAuth)
		for _, opts := range [][]gotpm.AuthOption{
			{auth},
			{auth, gotpm.Salted(f.eccSRK.ObjectHandle, f.eccPub(t)), gotpm.AESEncryption(128, gotpm.EncryptOut)},
			{auth, gotpm.Salted(f.rsaSRK.ObjectHandle, f.rsaPub(t)), gotpm.AESEncryption(256, gotpm.EncryptOut)},
			{auth, gotpm.Bound(f.sealed.ObjectHandle, f.sealed.Name, f.sealedAuth)},
			{gotpm.Auth([]byte("wrong"))},
		} {
			f.unseal(d, gotpm.HMAC(gotpm.TPMAlgSHA256, 16, opts...))
		}
		gotpm.FlushContext{FlushHandle: f.rsaSRK.ObjectHandle}.Execute(d)
		nvScenario(t, d, f)
	})
	record("sessions-cve-2023-1017", true, func(d transport.TPM) {
		for _, cmd := range oversizeCommands(t, d) {
			d.Send(cmd)
		}
	})
}
