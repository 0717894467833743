package bench

import (
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-eventlog/extract"
	"github.com/google/go-eventlog/tcg"

	"github.com/shieldvm/shieldvm/measure"
)

// factsLog is one log of the corpus prepared for extraction: our verified
// log, and go-eventlog's replayed events of the same bank.
type factsLog struct {
	name     string
	verified *measure.VerifiedLog
	events   []tcg.Event
	hash     crypto.Hash
	ccel     bool
	opts     extract.Opts
	peerOK   bool
}

// peerExtract runs go-eventlog's extraction (extract.FirmwareLogState) on
// events it replayed against verified registers.
func (f *factsLog) peerExtract() error {
	cfg := extract.TPMRegisterConfig
	if f.ccel {
		cfg = extract.RTMRRegisterConfig
	}
	_, err := extract.FirmwareLogState(f.events, f.hash, cfg, f.opts)
	return err
}

func (f *factsLog) ours() error {
	_, err := f.verified.Facts()
	return err
}

// loadFactsCorpus verifies every log and replays it with go-eventlog in its
// first bank, outside any timing.
func loadFactsCorpus(b *testing.B) []*factsLog {
	b.Helper()
	var out []*factsLog
	for _, c := range loadCorpus(b) {
		l, err := c.parse()
		if err != nil {
			b.Fatal(err)
		}
		v, err := l.Verify(c.quoted, measure.VerifyOptions{})
		if err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
		f := &factsLog{name: c.name, verified: v, ccel: c.ccel}
		mrs := c.elMRs[0]
		f.hash = c.attBanks[0][0].DigestAlg
		f.events, err = tcg.ParseAndReplay(c.data, mrs, tcg.ParseOpts{AllowPadding: true})
		if err == nil {
			// GRUB extraction where the log has GRUB events, plain
			// firmware extraction otherwise, with the peer's leniency
			// options: the most the peer offers.
			lenient := extract.Opts{AllowEmptySBVar: true, AllowEFIAppBeforeCallingEvent: true}
			grub := lenient
			grub.Loader = extract.GRUB
			for _, opts := range []extract.Opts{grub, lenient} {
				f.opts = opts
				if f.peerExtract() == nil {
					f.peerOK = true
					break
				}
			}
		}
		out = append(out, f)
	}
	return out
}

// BenchmarkFactsExtract extracts facts from every verified log of the
// corpus with shieldvm (VerifiedLog.Facts, certificates not parsed) and
// with go-eventlog (extract.FirmwareLogState, which parses every
// certificate), interleaved log by log in one process.
// x-go-eventlog-extract is the peer's time over ours on the logs the peer
// extracts without an error; peer-fails is the number it cannot extract.
func BenchmarkFactsExtract(b *testing.B) {
	corpus := loadFactsCorpus(b)
	fails := 0
	for _, f := range corpus {
		if err := f.ours(); err != nil {
			b.Fatalf("%s: %v", f.name, err)
		}
		if !f.peerOK {
			fails++
			b.Logf("go-eventlog extraction fails on %s: %v", f.name, f.peerExtract())
		}
	}
	// Each call is timed in thread CPU time (the goroutine is locked to
	// its thread), which a loaded machine does not inflate; wall-clock
	// ratios are reported beside it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cOurs, cOursPeer, cPeer, wOursPeer, wPeer time.Duration
	b.ResetTimer()
	for b.Loop() {
		for _, f := range corpus {
			t0, c0 := time.Now(), factsThreadCPU()
			_ = f.ours()
			c1, t1 := factsThreadCPU(), time.Now()
			cOurs += c1 - c0
			if f.peerOK {
				_ = f.peerExtract()
				c2, t2 := factsThreadCPU(), time.Now()
				cPeer += c2 - c1
				wPeer += t2.Sub(t1)
				cOursPeer += c1 - c0
				wOursPeer += t1.Sub(t0)
			}
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(cPeer)/float64(cOursPeer), "x-go-eventlog-extract")
	b.ReportMetric(float64(wPeer)/float64(wOursPeer), "x-go-eventlog-extract-wall")
	b.ReportMetric(float64(fails), "peer-fails")
	b.ReportMetric(float64(cOurs.Nanoseconds())/n, "ours-cpu-ns/corpus")
	b.ReportMetric(float64(len(corpus)), "logs")
}

// BenchmarkWindowsFacts is the real Windows Server log's facts, verified
// against its quoted SHA-1 PCRs (go-eventlog has no Windows extraction).
// The target is 100 µs or less.
func BenchmarkWindowsFacts(b *testing.B) {
	j, err := os.ReadFile(filepath.Join("..", "measure", "testdata", "quotes", "windows_gcp_shielded_vm.json"))
	if err != nil {
		b.Fatal(err)
	}
	var q struct {
		Log struct {
			PCRs []struct {
				Index  uint32
				Digest []byte
			}
			Raw []byte
		}
	}
	if err := json.Unmarshal(j, &q); err != nil {
		b.Fatal(err)
	}
	quoted := measure.QuotedValues{measure.SHA1: {}}
	for _, p := range q.Log.PCRs {
		quoted[measure.SHA1][p.Index] = p.Digest
	}
	l, err := measure.Parse(q.Log.Raw)
	if err != nil {
		b.Fatal(err)
	}
	v, err := l.Verify(quoted, measure.VerifyOptions{})
	if err != nil {
		b.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	c0 := factsThreadCPU()
	for b.Loop() {
		if _, err := v.Facts(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((factsThreadCPU()-c0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/facts")
}

// BenchmarkFactsPerLog is BenchmarkFactsExtract log by log, to show
// where the corpus-wide ratio comes from.
func BenchmarkFactsPerLog(b *testing.B) {
	for _, f := range loadFactsCorpus(b) {
		if !f.peerOK {
			continue
		}
		b.Run(filepath.Base(f.name), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var cOurs, cPeer time.Duration
			for b.Loop() {
				c0 := factsThreadCPU()
				_ = f.ours()
				c1 := factsThreadCPU()
				_ = f.peerExtract()
				c2 := factsThreadCPU()
				cOurs += c1 - c0
				cPeer += c2 - c1
			}
			n := float64(b.N)
			b.ReportMetric(float64(cPeer)/float64(cOurs), "x-go-eventlog-extract")
			b.ReportMetric(float64(cOurs.Nanoseconds())/n, "ours-cpu-ns")
			b.ReportMetric(float64(cPeer.Nanoseconds())/n, "peer-cpu-ns")
		})
	}
}
