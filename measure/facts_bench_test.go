package measure

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime returns the CPU time the process has used. On a loaded machine
// wall-clock ns/op counts the time other processes held the CPU; CPU time
// per op does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration, per int) {
	b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N)/float64(per), "cpu-ns/op")
}

// BenchmarkFacts extracts the facts of every verified log of the corpus
// per iteration. Certificates are not parsed.
func BenchmarkFacts(b *testing.B) {
	var logs []*VerifiedLog
	events := 0
	for _, c := range factsCorpus(b) {
		v, err := c.log.Verify(c.quoted, VerifyOptions{})
		if err != nil {
			continue // the one-event log extends nothing
		}
		logs = append(logs, v)
		events += v.NumEvents()
	}
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		for _, v := range logs {
			if _, err := v.Facts(); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportCPU(b, start, 1)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(logs)), "ns/log")
	b.ReportMetric(float64(events), "events/op")
}

// BenchmarkWindowsFacts extracts the facts of the real Windows Server
// log, verified against its quoted PCRs. The target is 100 µs or less.
func BenchmarkWindowsFacts(b *testing.B) {
	l, q := loadQuote(b, "testdata/quotes/windows_gcp_shielded_vm.json")
	v, err := l.Verify(q, VerifyOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(l.Size))
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		if _, err := v.Facts(); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start, 1)
}

// BenchmarkWindowsVerifyAndFacts is the whole path from quoted PCRs to
// facts for the Windows log: parse, verify, facts.
func BenchmarkWindowsVerifyAndFacts(b *testing.B) {
	l, q := loadQuote(b, "testdata/quotes/windows_gcp_shielded_vm.json")
	raw := l.data
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		l, err := Parse(raw)
		if err != nil {
			b.Fatal(err)
		}
		v, err := l.Verify(q, VerifyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := v.Facts(); err != nil {
			b.Fatal(err)
		}
	}
}
