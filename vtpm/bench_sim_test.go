package vtpm

import (
	"runtime"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// The benchmarks feed the same pre-marshalled command bytes to the vTPM
// and to the Microsoft reference TPM (go-tpm-tools/simulator) in the same
// process:
//
//	go test -run '^$' -bench . -benchmem ./vtpm/

type benchTarget struct {
	name string
	tpm  func(b *testing.B) transport.TPM
}

var benchTargets = []benchTarget{
	{"vtpm", func(b *testing.B) transport.TPM { return newTestTPM(b) }},
	{"reference", func(b *testing.B) transport.TPM { return simTPM{getSim(b)} }},
}

func benchCommand(b *testing.B, setup func(b *testing.B, tp transport.TPM) (cmd []byte, after []byte)) {
	for _, bt := range benchTargets {
		b.Run(bt.name, func(b *testing.B) {
			tp := bt.tpm(b)
			cmd, after := setup(b, tp)
			for b.Loop() {
				rsp, _ := tp.Send(cmd)
				if rcOf(rsp) != rcSuccess {
					b.Fatalf("rc %#x", rcOf(rsp))
				}
				if after != nil {
					tp.Send(withHandle(after, rsp))
				}
			}
		})
	}
}

// withHandle puts the response handle of rsp into a FlushContext command.
func withHandle(flush, rsp []byte) []byte {
	copy(flush[10:14], rsp[10:14])
	return flush
}

func BenchmarkPCRExtend(b *testing.B) {
	benchCommand(b, func(b *testing.B, tp transport.TPM) ([]byte, []byte) {
		return rawCommand(ccPCRExtend, []uint32{16}, 1, nil, u32b(1), u16b(algSHA256), make([]byte, 32)), nil
	})
}

func BenchmarkGetRandom(b *testing.B) {
	benchCommand(b, func(b *testing.B, tp transport.TPM) ([]byte, []byte) {
		return rawCommand(ccGetRandom, nil, 0, nil, u16b(32)), nil
	})
}

func createPrimaryCmd(tmpl tpm2.TPMTPublic) []byte {
	return rawCommand(ccCreatePrimary, []uint32{rhOwner}, 1, nil,
		b2b(make([]byte, 4)), b2b(tpm2.Marshal(tmpl)), b2b(nil), u32b(0))
}

var flushCmd = rawCommand(ccFlushContext, nil, 0, nil, u32b(0))

// BenchmarkCreatePrimaryECCP256 measures CreatePrimary of the ECC SRK
// template followed by FlushContext.
func BenchmarkCreatePrimaryECCP256(b *testing.B) {
	benchCommand(b, func(b *testing.B, tp transport.TPM) ([]byte, []byte) {
		return createPrimaryCmd(tpm2.ECCSRKTemplate), append([]byte(nil), flushCmd...)
	})
}

// BenchmarkCreatePrimaryRSA2048 measures repeated CreatePrimary of the RSA
// SRK template (then FlushContext). The vTPM derives the key once and then
// serves it from its primary cache.
func BenchmarkCreatePrimaryRSA2048(b *testing.B) {
	benchCommand(b, func(b *testing.B, tp transport.TPM) ([]byte, []byte) {
		return createPrimaryCmd(tpm2.RSASRKTemplate), append([]byte(nil), flushCmd...)
	})
}

var akTemplate = tpm2.TPMTPublic{
	Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, Restricted: true, SignEncrypt: true, NoDA: true},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
		CurveID: tpm2.TPMECCNistP256,
	}),
}

// BenchmarkQuoteECCP256 quotes PCRs 0-7 of SHA-256 with an ECC P-256 AK.
func BenchmarkQuoteECCP256(b *testing.B) {
	benchCommand(b, func(b *testing.B, tp transport.TPM) ([]byte, []byte) {
		rsp, err := tp.Send(createPrimaryCmdAK())
		if err != nil || rcOf(rsp) != rcSuccess {
			b.Fatalf("AK: %#x %v", rcOf(rsp), err)
		}
		ak := uint32(rsp[10])<<24 | uint32(rsp[11])<<16 | uint32(rsp[12])<<8 | uint32(rsp[13])
		return rawCommand(ccQuote, []uint32{ak}, 1, nil, b2b([]byte("0123456789abcdef0123456789abcdef")),
			u16b(algNull), u32b(1), u16b(algSHA256), []byte{3, 0xFF, 0, 0}), nil
	})
}

// BenchmarkSealOpen seals and opens a provisioned state: EK, SRK and four
// more persistent keys, and 1 KiB of NV.
func BenchmarkSealOpen(b *testing.B) {
	v := newTestTPM(b)
	provision(b, v, 4, 1024)
	var size int
	for b.Loop() {
		blob, err := v.Seal(testKey)
		if err != nil {
			b.Fatal(err)
		}
		size = len(blob)
		w, err := Open(blob, testKey, OpenConfig{VMID: "test-vm"})
		if err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
	b.ReportMetric(float64(size), "blob-bytes")
}

// BenchmarkIdleInstances creates 10,000 started TPMs and reports the heap
// each one holds.
func BenchmarkIdleInstances(b *testing.B) {
	const n = 10000
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tpms := make([]*TPM, n)
		for i := range tpms {
			v, err := New(Config{})
			if err != nil {
				b.Fatal(err)
			}
			tpms[i] = v
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-bytes/instance")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB/10000-instances")
		runtime.KeepAlive(tpms)
	}
}

func createPrimaryCmdAK() []byte { return createPrimaryCmd(akTemplate) }
