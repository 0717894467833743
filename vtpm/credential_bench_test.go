package vtpm

import (
	"crypto/rand"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// The credential benchmarks feed the same kind of pre-marshalled command
// to our vTPM and to the reference TPM (go-tpm-tools/simulator) in this
// process. Each TPM gets its own keys and blobs; the commands change no
// state, so one command is sent again and again. The reference
// sub-benchmark reports vtpm-speedup, its time per command divided by
// ours:
//
//	go test -run '^$' -bench 'ActivateCredential|Import' -benchmem ./vtpm/

// benchPair runs setup's command on our vTPM, then on the reference TPM,
// and reports the ratio of their times per command. Both TPMs run on the
// benchmark's own OS thread (the reference through cgo), so besides wall
// time the benchmark reports the thread's CPU time per command, which
// other processes on a shared machine do not inflate; the ratio is taken
// on CPU time.
func benchPair(b *testing.B, setup func(b *testing.B, tp transport.TPM) []byte) {
	var vtpmCPU float64
	for _, bt := range benchTargets {
		b.Run(bt.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tp := bt.tpm(b)
			cmd := setup(b, tp)
			start := threadCPU()
			for b.Loop() {
				rsp, _ := tp.Send(cmd)
				if rcOf(rsp) != rcSuccess {
					b.Fatalf("rc %#x", rcOf(rsp))
				}
			}
			cpu := float64(threadCPU()-start) / float64(b.N)
			b.ReportMetric(cpu/1e3, "cpu-µs/op")
			b.ReportMetric(1e9/cpu, "cmds/cpu-s")
			if bt.name == "vtpm" {
				vtpmCPU = cpu
			} else if vtpmCPU > 0 {
				b.ReportMetric(cpu/vtpmCPU, "vtpm-speedup")
			}
		})
	}
}

// threadCPU returns the CPU time of the calling OS thread in nanoseconds
// (getrusage(RUSAGE_THREAD)).
func threadCPU() time.Duration {
	const rusageThread = 1
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// activateSetup creates a storage key and an AK on tp and returns an
// ActivateCredential command for a credential made for them in software.
func activateSetup(tmpl tpm2.TPMTPublic) func(b *testing.B, tp transport.TPM) []byte {
	return func(b *testing.B, tp transport.TPM) []byte {
		srk := createSRK(b, tp, tmpl)
		ak, _ := createChild(b, tp, srk, eccSigningTemplate, nil)
		pub, _ := srk.pub.Contents()
		encap, err := tpm2.ImportEncapsulationKey(pub)
		if err != nil {
			b.Fatal(err)
		}
		id, enc, err := tpm2.CreateCredential(rand.Reader, encap, ak.name.Buffer, make([]byte, 32))
		if err != nil {
			b.Fatal(err)
		}
		return rawCommand(ccActivateCredential, []uint32{uint32(ak.handle), uint32(srk.handle)}, 2, nil, b2b(id), b2b(enc))
	}
}

// importSetup creates a storage key on tp and returns an Import command
// for a software ECDSA key wrapped for it.
func importSetup(tmpl tpm2.TPMTPublic) func(b *testing.B, tp transport.TPM) []byte {
	return func(b *testing.B, tp transport.TPM) []byte {
		srk := createSRK(b, tp, tmpl)
		_, pub, sens := softwareECCKey(b)
		name, _ := tpm2.ObjectName(&pub)
		sp, _ := srk.pub.Contents()
		encap, err := tpm2.ImportEncapsulationKey(sp)
		if err != nil {
			b.Fatal(err)
		}
		dup, seed, err := tpm2.CreateDuplicate(rand.Reader, encap, name.Buffer, tpm2.Marshal(sens))
		if err != nil {
			b.Fatal(err)
		}
		return rawCommand(ccImport, []uint32{uint32(srk.handle)}, 1, nil,
			b2b(nil), b2b(tpm2.Marshal(pub)), b2b(dup), b2b(seed), u16b(algNull))
	}
}

func BenchmarkActivateCredential(b *testing.B) {
	b.Run("ECC-P256", func(b *testing.B) { benchPair(b, activateSetup(tpm2.ECCSRKTemplate)) })
	b.Run("RSA-2048", func(b *testing.B) { benchPair(b, activateSetup(tpm2.RSASRKTemplate)) })
}

func BenchmarkImport(b *testing.B) {
	b.Run("ECC-P256", func(b *testing.B) { benchPair(b, importSetup(tpm2.ECCSRKTemplate)) })
	b.Run("RSA-2048", func(b *testing.B) { benchPair(b, importSetup(tpm2.RSASRKTemplate)) })
}
