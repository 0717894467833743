package bench

import (
	"crypto"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	attestation "github.com/google/go-attestation/attest"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"

	"github.com/shieldvm/shieldvm/measure"
)

// corpusLog is one real log with the register values a truthful TPM would
// quote for it, in the form each implementation takes.
type corpusLog struct {
	name   string
	data   []byte
	ccel   bool
	events int
	quoted measure.QuotedValues
	// go-attestation: one Verify call per bank.
	attBanks [][]attestation.PCR
	// go-eventlog: the registers of every bank.
	elMRs [][]register.MR
}

var hashOf = map[measure.HashAlg]crypto.Hash{
	measure.SHA1: crypto.SHA1, measure.SHA256: crypto.SHA256,
	measure.SHA384: crypto.SHA384, measure.SHA512: crypto.SHA512,
}

func loadCorpus(tb testing.TB) []*corpusLog {
	tb.Helper()
	var out []*corpusLog
	for _, dir := range []string{"eventlogs", "ccel"} {
		files, _ := filepath.Glob(filepath.Join("..", "measure", "testdata", dir, "*.bin"))
		for _, f := range files {
			if strings.HasSuffix(f, ".table.bin") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				tb.Fatal(err)
			}
			c := &corpusLog{name: filepath.Join(dir, filepath.Base(f)), data: data, ccel: dir == "ccel"}
			l, err := c.parse()
			if err != nil {
				tb.Fatalf("%s: %v", c.name, err)
			}
			c.events = len(l.UnverifiedEvents())
			regs, err := l.Replay()
			if err != nil {
				tb.Fatalf("%s: %v", c.name, err)
			}
			c.quoted = measure.QuotedValues{}
			for _, b := range regs.Banks {
				c.quoted[b.Alg] = map[uint32][]byte{}
				var att []attestation.PCR
				var mrs []register.MR
				for _, r := range b.ExtendedRegisters() {
					v := slices.Clone(b.Value(r))
					c.quoted[b.Alg][uint32(r)] = v
					att = append(att, attestation.PCR{Index: r, Digest: v, DigestAlg: hashOf[b.Alg]})
					if c.ccel {
						mrs = append(mrs, register.RTMR{Index: r - 1, Digest: v})
					} else {
						mrs = append(mrs, register.PCR{Index: r, Digest: v, DigestAlg: hashOf[b.Alg]})
					}
				}
				if len(att) > 0 {
					c.attBanks = append(c.attBanks, att)
					c.elMRs = append(c.elMRs, mrs)
				}
			}
			if len(c.attBanks) > 0 { // a log that extends nothing has nothing to replay
				out = append(out, c)
			}
		}
	}
	if len(out) < 14 {
		tb.Fatalf("corpus has %d logs", len(out))
	}
	return out
}

func (c *corpusLog) parse() (*measure.Log, error) {
	if c.ccel {
		return measure.ParseCCEL(c.data)
	}
	return measure.Parse(c.data)
}

// ours parses the log and verifies every bank against the quoted values.
func (c *corpusLog) ours() error {
	l, err := c.parse()
	if err != nil {
		return err
	}
	_, err = l.Verify(c.quoted, measure.VerifyOptions{})
	return err
}

// goAttestation parses with go-attestation and verifies each bank.
func (c *corpusLog) goAttestation() error {
	el, err := attestation.ParseEventLog(c.data)
	if err != nil {
		return err
	}
	for _, pcrs := range c.attBanks {
		if _, err := el.Verify(pcrs); err != nil {
			return err
		}
	}
	return nil
}

// goEventlog runs go-eventlog's parse-and-replay for each bank.
func (c *corpusLog) goEventlog() error {
	for _, mrs := range c.elMRs {
		if _, err := tcg.ParseAndReplay(c.data, mrs, tcg.ParseOpts{AllowPadding: true}); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkParseReplay parses and replays (verifies) every bank of every
// real log with shieldvm, go-attestation and go-eventlog in one process,
// the sides taking turns over the corpus. x-go-attestation and
// x-go-eventlog are the peer's time over ours on the logs that peer
// handles, in thread CPU time (the -wall metrics in wall-clock time);
// MB/s and allocs/event are ours over the whole corpus.
func BenchmarkParseReplay(b *testing.B) {
	corpus := loadCorpus(b)
	var total, events int
	var attOK, elOK []bool
	for _, c := range corpus {
		if err := c.ours(); err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
		total += len(c.data)
		events += c.events
		attOK = append(attOK, c.goAttestation() == nil)
		elOK = append(elOK, c.goEventlog() == nil)
	}
	for i, c := range corpus {
		if !attOK[i] {
			b.Logf("go-attestation fails on %s", c.name)
		}
		if !elOK[i] {
			b.Logf("go-eventlog fails on %s", c.name)
		}
	}
	allocs := testing.AllocsPerRun(20, func() {
		for _, c := range corpus {
			_ = c.ours()
		}
	})

	// The sides take turns over the whole corpus, and each turn starts
	// from a collected heap (runtime.GC, untimed), so that no side pays
	// for the collection of another's garbage; a side pays for the
	// collections its own allocations start within its turn. Peers
	// allocate far more than we do, so the garbage a peer leaves at the
	// end of its turn, collected untimed, is in the peer's favour.
	//
	// The ratios are in CPU time of the benchmark's thread (the goroutine
	// is locked to it), which a loaded machine does not distort; the
	// wall-clock ratios are reported beside them. CPU time leaves out the
	// background collector on other threads, again in the peers' favour.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cOurs, cOursAtt, cOursEL, cAtt, cEL time.Duration
	var wOurs, wOursAtt, wOursEL, wAtt, wEL time.Duration
	cDur := make([]time.Duration, len(corpus))
	wDur := make([]time.Duration, len(corpus))
	turn := func() {
		b.StopTimer()
		runtime.GC()
		b.StartTimer()
	}
	b.SetBytes(int64(total))
	b.ResetTimer()
	for b.Loop() {
		turn()
		for i, c := range corpus {
			t0, c0 := time.Now(), factsThreadCPU()
			_ = c.ours()
			cDur[i], wDur[i] = factsThreadCPU()-c0, time.Since(t0)
			cOurs += cDur[i]
			wOurs += wDur[i]
		}
		turn()
		for i, c := range corpus {
			if attOK[i] {
				t0, c0 := time.Now(), factsThreadCPU()
				_ = c.goAttestation()
				cAtt += factsThreadCPU() - c0
				wAtt += time.Since(t0)
				cOursAtt += cDur[i]
				wOursAtt += wDur[i]
			}
		}
		turn()
		for i, c := range corpus {
			if elOK[i] {
				t0, c0 := time.Now(), factsThreadCPU()
				_ = c.goEventlog()
				cEL += factsThreadCPU() - c0
				wEL += time.Since(t0)
				cOursEL += cDur[i]
				wOursEL += wDur[i]
			}
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(cAtt)/float64(cOursAtt), "x-go-attestation")
	b.ReportMetric(float64(cEL)/float64(cOursEL), "x-go-eventlog")
	b.ReportMetric(float64(wAtt)/float64(wOursAtt), "x-go-attestation-wall")
	b.ReportMetric(float64(wEL)/float64(wOursEL), "x-go-eventlog-wall")
	b.ReportMetric(float64(total)*n/cOurs.Seconds()/1e6, "ours-MB/s")
	b.ReportMetric(float64(total)*n/wOurs.Seconds()/1e6, "ours-MB/s-wall")
	b.ReportMetric(allocs/float64(events), "allocs/event")
	b.ReportMetric(float64(cOurs.Nanoseconds())/n, "ours-ns/corpus")
}

// BenchmarkOursParseReplay is our side alone, for profiles.
func BenchmarkOursParseReplay(b *testing.B) {
	corpus := loadCorpus(b)
	total := 0
	for _, c := range corpus {
		total += len(c.data)
	}
	b.SetBytes(int64(total))
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range corpus {
			if err := c.ours(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
