package vtpm

import (
	"bytes"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// Benchmarks of the bulk commands against the reference TPM in the same
// process:
//
//	go test -run '^$' -bench 'Sequence1MiB|EncryptDecrypt2' -benchtime 2s ./vtpm/
//
// Each has a vtpm and a reference sub-benchmark (wall time), and a "ratio"
// sub-benchmark that runs both in turn on one OS thread and reports how
// many times faster the vTPM is in that thread's CPU time (reference /
// vtpm), which other load on the machine does not skew.

// benchBoth runs op on the vTPM and the reference TPM as sub-benchmarks.
// op does one iteration against tp; setup prepares tp.
func benchBoth(b *testing.B, bytesPerOp int64, setup func(testing.TB, transport.TPM), op func(testing.TB, transport.TPM)) {
	for _, bt := range benchTargets {
		b.Run(bt.name, func(b *testing.B) {
			tp := bt.tpm(b)
			setup(b, tp)
			b.SetBytes(bytesPerOp)
			for b.Loop() {
				op(b, tp)
			}
		})
	}
	b.Run("ratio", func(b *testing.B) {
		// Both TPMs run in turn on one locked OS thread, timed in that
		// thread's CPU time, so that the ratio holds on a busy machine.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		v := newTestTPM(b)
		ref := simTPM{getSim(b)}
		setup(b, v)
		setup(b, ref)
		var tv, tr time.Duration
		for b.Loop() {
			s := admThreadCPU()
			op(b, v)
			m := admThreadCPU()
			op(b, ref)
			tr += admThreadCPU() - m
			tv += m - s
		}
		b.ReportMetric(float64(tr)/float64(tv), "x-faster")
		b.ReportMetric(float64(tv.Nanoseconds())/float64(b.N), "vtpm-cpu-ns/op")
		b.ReportMetric(float64(tr.Nanoseconds())/float64(b.N), "ref-cpu-ns/op")
	})
}

// admThreadCPU returns the CPU time of the calling OS thread
// (getrusage(RUSAGE_THREAD), Linux).
func admThreadCPU() time.Duration {
	const rusageThread = 1
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSequence1MiB hashes 1 MiB with SHA-256 through a hash
// sequence: HashSequenceStart, 1024 SequenceUpdate of 1 KiB, and
// SequenceComplete with a ticket.
func BenchmarkSequence1MiB(b *testing.B) {
	chunk := bytes.Repeat([]byte{0xA5}, 1024)
	h := uint32(transientFirst)
	update := seqUpdate(h, nil, chunk)
	complete := seqComplete(h, nil, nil, rhOwner)
	start := hashSeqStart(nil, algSHA256)
	benchBoth(b, 1<<20, func(testing.TB, transport.TPM) {}, func(tb testing.TB, tp transport.TPM) {
		if rsp, _ := tp.Send(start); rcOf(rsp) != rcSuccess || admBE32(rsp[10:]) != h {
			tb.Fatalf("HashSequenceStart: %x", rsp)
		}
		for i := 0; i < 1024; i++ {
			if rsp, _ := tp.Send(update); rcOf(rsp) != rcSuccess {
				tb.Fatalf("SequenceUpdate: rc %#x", rcOf(rsp))
			}
		}
		if rsp, _ := tp.Send(complete); rcOf(rsp) != rcSuccess {
			tb.Fatalf("SequenceComplete: rc %#x", rcOf(rsp))
		}
	})
}

// BenchmarkEncryptDecrypt2 encrypts 1 KiB (the largest input) with
// AES-128-CFB.
func BenchmarkEncryptDecrypt2(b *testing.B) {
	key := bytes.Repeat([]byte{7}, 16)
	cmd := encryptDecrypt2(transientFirst, bytes.Repeat([]byte{1}, 1024), false, algCFB, make([]byte, 16))
	benchBoth(b, 1024, func(tb testing.TB, tp transport.TPM) {
		if h := admBE32(admMust(tb, tp, rcSuccess, symKeyCmd(key, algNull, symAttrs))); h != transientFirst {
			tb.Fatalf("key handle %#x", h)
		}
	}, func(tb testing.TB, tp transport.TPM) {
		if rsp, _ := tp.Send(cmd); rcOf(rsp) != rcSuccess {
			tb.Fatalf("EncryptDecrypt2: rc %#x", rcOf(rsp))
		}
	})
}
