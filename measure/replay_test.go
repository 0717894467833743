package measure

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// replayedJSON is the layout of the testdata/*.replayed.json files.
type replayedJSON struct {
	Banks     map[string]map[string]string `json:"banks"`
	Events    int                          `json:"events"`
	Format    string                       `json:"format"`
	Padded    bool                         `json:"padded"`
	TPMQuoted map[string]map[string]string `json:"tpm_quoted"`
}

// corpus lists every real log of testdata with its expected replay.
type corpusLog struct {
	name string // relative to testdata
	ccel bool
	data []byte
	want replayedJSON
}

func loadCorpus(t testing.TB) []corpusLog {
	t.Helper()
	var out []corpusLog
	for _, dir := range []string{"eventlogs", "ccel"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.bin"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			jf := strings.TrimSuffix(f, ".bin") + ".replayed.json"
			j, err := os.ReadFile(jf)
			if err != nil {
				continue // no reference replay: the ACPI table, the dupe-separator log
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			c := corpusLog{name: filepath.Join(dir, filepath.Base(f)), ccel: dir == "ccel", data: data}
			if err := json.Unmarshal(j, &c.want); err != nil {
				t.Fatalf("%s: %v", jf, err)
			}
			out = append(out, c)
		}
	}
	if len(out) < 15 {
		t.Fatalf("found %d logs in testdata, want the whole corpus", len(out))
	}
	return out
}

func parseCorpus(t testing.TB, c corpusLog) *Log {
	t.Helper()
	var l *Log
	var err error
	if c.ccel {
		l, err = ParseCCEL(c.data)
	} else {
		l, err = Parse(c.data)
	}
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	return l
}

// TestReplayCorpus replays every real log and compares every bank and
// register with the reference replay.
func TestReplayCorpus(t *testing.T) {
	for _, c := range loadCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			l := parseCorpus(t, c)
			if got := len(l.UnverifiedEvents()); got != c.want.Events {
				t.Errorf("events = %d, want %d", got, c.want.Events)
			}
			if l.Format.String() != c.want.Format {
				t.Errorf("format = %v, want %s", l.Format, c.want.Format)
			}
			if l.Padded != c.want.Padded {
				t.Errorf("padded = %v, want %v", l.Padded, c.want.Padded)
			}
			regs, err := l.Replay()
			if err != nil {
				t.Fatal(err)
			}
			if len(regs.Banks) != len(c.want.Banks) {
				t.Errorf("%d banks, want %d", len(regs.Banks), len(c.want.Banks))
			}
			for algName, want := range c.want.Banks {
				alg, err := ParseHashAlg(algName)
				if err != nil {
					t.Fatal(err)
				}
				b := regs.Bank(alg)
				if b == nil {
					t.Fatalf("bank %s missing", algName)
				}
				if got := len(b.ExtendedRegisters()); got != len(want) {
					t.Errorf("%s: %d registers extended, want %d", algName, got, len(want))
				}
				for rs, hexWant := range want {
					r, _ := strconv.Atoi(rs)
					if !b.Extended(r) {
						t.Errorf("%s[%d] not extended", algName, r)
					}
					if got := hex.EncodeToString(b.Value(r)); got != hexWant {
						t.Errorf("%s[%d] = %s, want %s", algName, r, got, hexWant)
					}
				}
			}
		})
	}
}
