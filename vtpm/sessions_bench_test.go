package vtpm

import (
	"bytes"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Session benchmarks: go-tpm clients against the vTPM and the reference
// TPM in the same process, client-side work (HMACs, salts, decryption)
// included, as a guest sees it:
//
//	go test -run '^$' -bench 'Session' -benchmem ./vtpm/
//
// "one-shot" sessions are started for one command (StartAuthSession, then
// the command, which flushes the session); "reused" sessions are started
// once and used for every command. Both TPMs run on the benchmark's OS
// thread (the reference through cgo), so besides wall time the benchmarks
// report thread CPU time, which other processes on a shared machine do
// not inflate: cpu-µs/op for the whole round trip, tpm-cpu-µs/op for the
// time spent in the TPM's Send alone (the go-tpm client, with its
// reflection-based marshalling, takes most of the rest). The reference
// sub-benchmarks report the ratios reference/vtpm of both
// (vtpm-speedup and tpm-speedup).

// timedTPM adds up the thread CPU time spent in Send.
type timedTPM struct {
	tpm transport.TPM
	cpu time.Duration
}

func (t *timedTPM) Send(cmd []byte) ([]byte, error) {
	start := sessThreadCPU()
	rsp, err := t.tpm.Send(cmd)
	t.cpu += sessThreadCPU() - start
	return rsp, err
}

// sessThreadCPU is the calling thread's CPU time with nanosecond
// resolution (clock_gettime(CLOCK_THREAD_CPUTIME_ID)).
func sessThreadCPU() time.Duration {
	const clockThreadCPUTime = 3
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}

// sessionBench runs op on each TPM after setup, and reports thread CPU
// times and their ratios.
func sessionBench(b *testing.B, unit string, setup func(b *testing.B, tp transport.TPM) func(tp transport.TPM)) {
	var vtpmTotal, vtpmTPM float64
	for _, bt := range benchTargets {
		b.Run(bt.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tp := &timedTPM{tpm: bt.tpm(b)}
			op := setup(b, tp)
			tp.cpu = 0
			start := sessThreadCPU()
			for b.Loop() {
				op(tp)
			}
			total := float64(sessThreadCPU()-start) / float64(b.N)
			inTPM := float64(tp.cpu) / float64(b.N)
			b.ReportMetric(total/1e3, "cpu-µs/op")
			b.ReportMetric(inTPM/1e3, "tpm-cpu-µs/op")
			b.ReportMetric(1e9/total, unit+"/cpu-s")
			if bt.name == "vtpm" {
				vtpmTotal, vtpmTPM = total, inTPM
			} else if vtpmTotal > 0 {
				b.ReportMetric(total/vtpmTotal, "vtpm-speedup")
				b.ReportMetric(inTPM/vtpmTPM, "tpm-speedup")
			}
		})
	}
}

// BenchmarkSessionUnseal unseals a sealed object through an HMAC session.
func BenchmarkSessionUnseal(b *testing.B) {
	for _, mode := range []string{"one-shot", "reused"} {
		b.Run(mode, func(b *testing.B) {
			sessionBench(b, "unseals", func(b *testing.B, tp transport.TPM) func(transport.TPM) {
				f := newSessionFixture(b, tp, false, true)
				s := tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(f.sealedAuth))
				if mode == "reused" {
					var closeSession func() error
					var err error
					s, closeSession, err = tpm2.HMACSession(tp, tpm2.TPMAlgSHA256, 16, tpm2.Auth(f.sealedAuth))
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { closeSession() })
				}
				return func(tp transport.TPM) {
					got, err := f.unseal(tp, s)
					if err != nil || string(got) != "the disk key" {
						b.Fatalf("Unseal = %q, %v", got, err)
					}
				}
			})
		})
	}
}

// BenchmarkSessionSaltedNVRead reads 64 bytes of an NV index through an
// HMAC session salted with the ECC storage key, with AES-128-CFB response
// encryption.
func BenchmarkSessionSaltedNVRead(b *testing.B) {
	for _, mode := range []string{"one-shot", "reused"} {
		b.Run(mode, func(b *testing.B) {
			sessionBench(b, "reads", func(b *testing.B, tp transport.TPM) func(transport.TPM) {
				f := newSessionFixture(b, tp, false, true)
				nv, data := benchNVIndex(b, tp)
				opts := []tpm2.AuthOption{tpm2.Auth([]byte("nv")), tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(b)), tpm2.AESEncryption(128, tpm2.EncryptOut)}
				s := tpm2.HMAC(tpm2.TPMAlgSHA256, 16, opts...)
				if mode == "reused" {
					var closeSession func() error
					var err error
					s, closeSession, err = tpm2.HMACSession(tp, tpm2.TPMAlgSHA256, 16, opts...)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { closeSession() })
				}
				return func(tp transport.TPM) {
					rsp, err := tpm2.NVRead{AuthHandle: tpm2.AuthHandle{Handle: nv.Handle, Name: nv.Name, Auth: s}, NVIndex: nv, Size: 64}.Execute(tp)
					if err != nil || !bytes.Equal(rsp.Data.Buffer, data) {
						b.Fatalf("NV_Read: %v", err)
					}
				}
			})
		})
	}
}

// benchNVIndex defines and writes a 64-byte NV index with authValue "nv".
func benchNVIndex(b *testing.B, tp transport.TPM) (tpm2.NamedHandle, []byte) {
	const idx = tpm2.TPMHandle(0x01500070)
	_, err := tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)},
		Auth:       tpm2.TPM2BAuth{Buffer: []byte("nv")},
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{AuthWrite: true, AuthRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
			DataSize:   64,
		}),
	}.Execute(tp)
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("secret!!"), 8)
	pub, _ := tpm2.NVReadPublic{NVIndex: idx}.Execute(tp)
	nv := tpm2.NamedHandle{Handle: idx, Name: pub.NVName}
	if _, err := (tpm2.NVWrite{AuthHandle: tpm2.AuthHandle{Handle: idx, Name: pub.NVName, Auth: pwAuth([]byte("nv"))}, NVIndex: nv, Data: tpm2.TPM2BMaxNVBuffer{Buffer: data}}).Execute(tp); err != nil {
		b.Fatal(err)
	}
	pub, _ = tpm2.NVReadPublic{NVIndex: idx}.Execute(tp)
	return tpm2.NamedHandle{Handle: idx, Name: pub.NVName}, data
}
