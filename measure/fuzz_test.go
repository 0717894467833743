package measure

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// seedLogs returns every real log of testdata, the Windows WBCL included.
func seedLogs(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, pat := range []string{"testdata/eventlogs/*.bin", "testdata/ccel/*.bin"} {
		files, _ := filepath.Glob(pat)
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			// Keep 64 bytes of an ACPI buffer's filler: enough to exercise
			// the padding path without making every mutation 256 KiB.
			if l, err := Parse(b); err == nil && l.Padded {
				b = b[:min(len(b), l.Size+64)]
			}
			seeds = append(seeds, b)
		}
	}
	j, err := os.ReadFile("testdata/quotes/windows_gcp_shielded_vm.json")
	if err != nil {
		f.Fatal(err)
	}
	var wq windowsQuote
	if err := json.Unmarshal(j, &wq); err != nil {
		f.Fatal(err)
	}
	return append(seeds, wq.Log.Raw)
}

// FuzzParse feeds arbitrary bytes to the parser, the replay and the
// verifier. None may panic; a parse error must be a *ParseError that wraps
// one of the documented sentinels; a parsed log must only alias its input,
// and verifying it against its own replay must succeed.
func FuzzParse(f *testing.F) {
	for _, s := range seedLogs(f) {
		f.Add(s, false)
		f.Add(s[:len(s)/2], false)
		f.Add(s, true)
	}
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, ccel bool) {
		var l *Log
		var err error
		if ccel {
			l, err = ParseCCEL(data)
		} else {
			l, err = Parse(data)
		}
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrLimit) && !errors.Is(err, ErrEmpty) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			if pe.Offset < 0 || pe.Offset > len(data) {
				t.Fatalf("error offset %d outside the input of %d bytes", pe.Offset, len(data))
			}
			return
		}
		if l.Size > len(data) {
			t.Fatalf("log size %d > input %d", l.Size, len(data))
		}
		for i, ev := range l.UnverifiedEvents() {
			if ev.Index != i || ev.Offset < 0 || ev.Offset+len(ev.Data) > l.Size {
				t.Fatalf("event %d: index %d, offset %d, %d data bytes, log size %d", i, ev.Index, ev.Offset, len(ev.Data), l.Size)
			}
			for _, d := range ev.Digests() {
				if len(d.Value) == 0 || len(d.Value) > MaxDigestSize {
					t.Fatalf("event %d: %v digest of %d bytes", i, d.Alg, len(d.Value))
				}
			}
		}
		regs, err := l.Replay()
		if err != nil {
			var re *ReplayError
			if !errors.As(err, &re) {
				t.Fatalf("replay error %v is not a *ReplayError", err)
			}
			return
		}
		q := QuotedValues{}
		for _, b := range regs.Banks {
			q[b.Alg] = map[uint32][]byte{}
			for _, r := range b.ExtendedRegisters() {
				q[b.Alg][uint32(r)] = b.Value(r)
			}
		}
		v, err := l.Verify(q, VerifyOptions{Quirks: QuirkUnloggedExitBootServices})
		if errors.Is(err, ErrNothingVerified) {
			return
		}
		if err != nil {
			t.Fatalf("a log does not verify against its own replay: %v", err)
		}
		if v.Report().Prefix != len(l.UnverifiedEvents()) {
			t.Fatalf("prefix %d of %d against its own replay", v.Report().Prefix, len(l.UnverifiedEvents()))
		}
	})
}
