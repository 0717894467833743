package measure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"unsafe"

	"pgregory.net/rapid"
)

// TestIsPrintableASCIIMatchesBytes: the word-at-a-time check agrees with
// the byte-by-byte one for every byte value at every position of a word
// and of the tail, and on any input.
func TestIsPrintableASCIIMatchesBytes(t *testing.T) {
	for n := 1; n <= 17; n++ {
		for pos := range n {
			for c := range 256 {
				b := bytes.Repeat([]byte{'a'}, n)
				b[pos] = byte(c)
				if got, want := isPrintableASCII(b), printableBytes(b); got != want {
					t.Fatalf("%q: isPrintableASCII = %v, want %v", b, got, want)
				}
			}
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		b := rapid.SliceOfN(rapid.SampledFrom([]byte{0, 0x09, 0x0A, 0x0D, 0x1F, 0x20, 'x', 0x7E, 0x7F, 0x80, 0xFF}), 0, 40).Draw(t, "b")
		if got, want := isPrintableASCII(b), printableBytes(b); got != want {
			t.Fatalf("%q: isPrintableASCII = %v, want %v", b, got, want)
		}
	})
}

// TestFactsFastPathsAgree: the facts of every log of the corpus, built
// with every shortcut (events built one at a time from the records, lists
// sized in advance, the decode arena, remembered digests), equal those
// built without any, value for value and in JSON.
func TestFactsFastPathsAgree(t *testing.T) {
	for _, c := range factsCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			v, err := c.log.Verify(c.quoted, VerifyOptions{})
			if err != nil {
				t.Skip(err) // a log that extends nothing
			}
			checkFastPathsAgree(t, v)
		})
	}
}

func checkFastPathsAgree(t testing.TB, v *VerifiedLog) {
	t.Helper()
	fast, err := v.facts(false)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := v.facts(true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fast, slow) {
		jf, _ := json.MarshalIndent(fast, "", " ")
		js, _ := json.MarshalIndent(slow, "", " ")
		if bytes.Equal(jf, js) {
			t.Fatalf("facts differ in Go values only (nil and empty lists?):\nfast %+v\nslow %+v", fast, slow)
		}
		t.Fatalf("facts differ:\nfast %s\nslow %s", jf, js)
	}
}

// checkCountSIPAAgrees: the one-pass check and count of a SIPA tree that
// Facts runs before decoding accepts exactly the trees checkSIPA accepts,
// and counts the loaded modules countSIPA counts.
func checkCountSIPAAgrees(t interface {
	Helper()
	Fatalf(string, ...any)
}, data []byte) {
	t.Helper()
	n, err := checkCountSIPA(data, SIPALoadedModuleAggregation, 0, false)
	if cerr := checkSIPA(data, 0); (err == nil) != (cerr == nil) {
		t.Fatalf("checkCountSIPA: %v, checkSIPA: %v", err, cerr)
	}
	if want := countSIPA(data, SIPALoadedModuleAggregation, 0); err == nil && n != want {
		t.Fatalf("checkCountSIPA counts %d modules, countSIPA %d", n, want)
	}
}

// TestCheckCountSIPA: on every SIPA tree of the corpus, and on every
// truncation of it, checkCountSIPA agrees with checkSIPA and countSIPA.
func TestCheckCountSIPA(t *testing.T) {
	trees := corpusEventData(t, EV_EVENT_TAG)
	if len(trees) == 0 {
		t.Fatal("no SIPA tree in the corpus")
	}
	modules := 0
	for _, d := range trees {
		if n, err := checkCountSIPA(d, SIPALoadedModuleAggregation, 0, false); err == nil {
			modules += n
		}
		for i := 0; i <= len(d); i += 1 + len(d)/200 {
			checkCountSIPAAgrees(t, d[:i])
		}
	}
	if modules == 0 {
		t.Fatal("the corpus's SIPA trees hold no loaded module")
	}
	rapid.Check(t, func(t *rapid.T) {
		data := encodeSIPA(sipaTree(t, 0))
		if cut := rapid.IntRange(0, len(data)).Draw(t, "cut"); cut < len(data) && rapid.Bool().Draw(t, "truncate") {
			data = data[:cut]
		}
		checkCountSIPAAgrees(t, data)
	})
}

// TestCommonStringsFound: the length and first-byte filters in front of
// the common-strings lookup let every common string through, so that each
// decodes to the shared string, with or without trailing NULs.
func TestCommonStringsFound(t *testing.T) {
	for s := range commonStrings {
		for _, b := range [][]byte{[]byte(s), append([]byte(s), 0, 0)} {
			got, ok := printableASCIIIn(b, nil)
			if !ok || got != s || unsafe.StringData(got) != unsafe.StringData(commonStrings[s]) {
				t.Errorf("printableASCIIIn(%q) = %q, %v, not the shared string", b, got, ok)
			}
		}
	}
}

// TestFactsConcurrent: Facts is safe for concurrent use: goroutines that
// take the facts of the same verified logs at once (run with -race) get
// equal facts, and equal to those of a single call.
func TestFactsConcurrent(t *testing.T) {
	var logs []*VerifiedLog
	var want []*Facts
	for _, c := range factsCorpus(t) {
		v, err := c.log.Verify(c.quoted, VerifyOptions{})
		if err != nil {
			continue
		}
		f, err := v.Facts()
		if err != nil {
			t.Fatal(err)
		}
		logs, want = append(logs, v), append(want, f)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4*len(logs))
	for range 4 {
		wg.Go(func() {
			for i, v := range logs {
				f, err := v.Facts()
				if err != nil || !reflect.DeepEqual(f, want[i]) {
					errs <- fmt.Sprintf("log %d: concurrent facts differ (%v)", i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
