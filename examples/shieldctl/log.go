package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/shieldvm/shieldvm/measure"
)

const logSummary = "TCG event logs: replay, verify against PCR values, list events"

func init() {
	register("log", logSummary, "replay", verb{
		usage: "[--json] [--ccel] FILE",
		help:  "replay the log into its register banks (only the registers it extends)",
		run:   logReplay,
	})
	register("log", logSummary, "verify", verb{
		usage: "--pcrs PCRS.json [--quirk NAME]... [--ccel] FILE",
		help:  "compare the replay with PCR values; exit 0 only if every register the log extends and PCRS.json lists matches",
		run:   logVerify,
	})
	register("log", logSummary, "events", verb{
		usage: "[--ccel] FILE",
		help:  "list the events (unverified: for display only)",
		run:   logEvents,
	})
}

// maxFileSize bounds every file shieldctl reads.
const maxFileSize = 64 << 20

// readFile reads a whole file of at most maxFileSize bytes.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxFileSize)
	}
	return b, nil
}

// newFlags returns a flag set that reports errors to the caller, not to
// os.Stderr, and never exits.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseArgs parses flags that may stand before or after the positional
// arguments, and checks the number of positional arguments.
func parseArgs(fs *flag.FlagSet, args []string, npos int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageErrorf("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != npos {
		return nil, usageErrorf("want %d argument(s), got %d", npos, len(pos))
	}
	return pos, nil
}

// readLog reads and parses a log file.
func readLog(name string, ccel bool) (*measure.Log, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	var l *measure.Log
	if ccel {
		l, err = measure.ParseCCEL(data)
	} else {
		l, err = measure.Parse(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

// replayJSON is the --json output of log replay.
type replayJSON struct {
	Format       string                       `json:"format"`
	Events       int                          `json:"events"`
	Padded       bool                         `json:"padded"`
	Banks        map[string]map[string]string `json:"banks"`
	Unreplayable []string                     `json:"unreplayable,omitempty"`
}

func logReplay(_ context.Context, e *env, args []string) error {
	fs := newFlags("log replay")
	asJSON := fs.Bool("json", false, "print JSON")
	ccel := fs.Bool("ccel", false, "the file is an Intel TDX CCEL log")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	l, err := readLog(pos[0], *ccel)
	if err != nil {
		return err
	}
	regs, err := l.Replay()
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	out := replayJSON{Format: l.Format.String(), Events: len(l.UnverifiedEvents()), Padded: l.Padded, Banks: map[string]map[string]string{}}
	for _, a := range regs.Unreplayable {
		out.Unreplayable = append(out.Unreplayable, a.String())
	}
	for _, b := range regs.Banks {
		m := map[string]string{}
		for _, r := range b.ExtendedRegisters() {
			m[strconv.Itoa(r)] = hex.EncodeToString(b.Value(r))
		}
		out.Banks[b.Alg.String()] = m
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(e.stdout, "format %s, %d events", out.Format, out.Events)
	if l.Padded {
		fmt.Fprint(e.stdout, ", padded")
	}
	fmt.Fprintln(e.stdout)
	for _, b := range regs.Banks {
		for _, r := range b.ExtendedRegisters() {
			fmt.Fprintf(e.stdout, "%-7s %s %2d  %x\n", b.Alg, regName(l.Kind), r, b.Value(r))
		}
	}
	for _, a := range out.Unreplayable {
		fmt.Fprintf(e.stdout, "%s: not replayed (unknown algorithm)\n", a)
	}
	return nil
}

func regName(k measure.RegisterKind) string {
	if k == measure.CCMR {
		return "MR "
	}
	return "PCR"
}

// quirkFlags collects repeated --quirk NAME flags.
type quirkFlags measure.Quirk

func (q *quirkFlags) String() string { return measure.Quirk(*q).String() }
func (q *quirkFlags) Set(s string) error {
	x, err := measure.ParseQuirk(s)
	if err != nil {
		return err
	}
	*q |= quirkFlags(x)
	return nil
}

// readPCRs reads a PCRS.json file: {"sha256": {"0": "<hex>", ...}, ...},
// any subset of banks and registers.
func readPCRs(name string) (measure.QuotedValues, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	var raw map[string]map[string]string
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	q := measure.QuotedValues{}
	for bank, regs := range raw {
		alg, err := measure.ParseHashAlg(strings.ToLower(bank))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		q[alg] = map[uint32][]byte{}
		for rs, hx := range regs {
			r, err := strconv.ParseUint(rs, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: register %q is not a decimal number", name, bank, rs)
			}
			v, err := hex.DecodeString(strings.TrimPrefix(strings.ToLower(hx), "0x"))
			if err != nil {
				return nil, fmt.Errorf("%s: %s[%s]: %v", name, bank, rs, err)
			}
			if len(v) != alg.Size() {
				return nil, fmt.Errorf("%s: %s[%s]: %d bytes, want %d", name, bank, rs, len(v), alg.Size())
			}
			q[alg][uint32(r)] = v
		}
	}
	return q, nil
}

func logVerify(_ context.Context, e *env, args []string) error {
	fs := newFlags("log verify")
	pcrsFile := fs.String("pcrs", "", "PCR values (JSON)")
	ccel := fs.Bool("ccel", false, "the file is an Intel TDX CCEL log")
	var quirks quirkFlags
	fs.Var(&quirks, "quirk", "accept a named firmware quirk (repeatable): unlogged-exit-boot-services")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *pcrsFile == "" {
		return usageErrorf("--pcrs is required")
	}
	quoted, err := readPCRs(*pcrsFile)
	if err != nil {
		return err
	}
	l, err := readLog(pos[0], *ccel)
	if err != nil {
		return err
	}
	v, err := l.Verify(quoted, measure.VerifyOptions{Quirks: measure.Quirk(quirks)})
	if v == nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	rep := v.Report()
	for _, r := range rep.Results {
		switch r.Status {
		case measure.Matched:
			fmt.Fprintf(e.stdout, "%-7s %s %2d  matched     %x (%d events)\n", r.Alg, regName(l.Kind), r.Register, r.Replayed, r.Events)
		case measure.Mismatched:
			fmt.Fprintf(e.stdout, "%-7s %s %2d  MISMATCHED  log %x, quoted %x (%d events)\n", r.Alg, regName(l.Kind), r.Register, r.Replayed, r.Quoted, r.Events)
		case measure.Absent:
			fmt.Fprintf(e.stdout, "%-7s %s %2d  absent      not in the log, quoted %x\n", r.Alg, regName(l.Kind), r.Register, r.Quoted)
		case measure.NotQuoted:
			fmt.Fprintf(e.stdout, "%-7s %s %2d  not quoted  log %x (%d events, unverified)\n", r.Alg, regName(l.Kind), r.Register, r.Replayed, r.Events)
		case measure.BankNotInLog:
			fmt.Fprintf(e.stdout, "%-7s %s %2d  bank not in the log\n", r.Alg, regName(l.Kind), r.Register)
		}
	}
	for _, a := range rep.UnquotedBanks {
		fmt.Fprintf(e.stdout, "%-7s bank not quoted: not replayed, nothing in it verified\n", a)
	}
	if rep.Prefix < rep.Events {
		fmt.Fprintf(e.stdout, "the quoted values cover events 0-%d; events %d-%d came after the quote and are not verified\n", rep.Prefix-1, rep.Prefix, rep.Events-1)
	}
	if rep.Quirks != 0 {
		fmt.Fprintf(e.stdout, "quirks needed: %v\n", rep.Quirks)
	}
	if err != nil {
		fmt.Fprintf(e.stdout, "FAIL: %d register(s) do not match\n", len(rep.Mismatches()))
		return errCheckFailed
	}
	fmt.Fprintf(e.stdout, "OK: %d events verified\n", len(v.Events()))
	return nil
}

func logEvents(_ context.Context, e *env, args []string) error {
	fs := newFlags("log events")
	ccel := fs.Bool("ccel", false, "the file is an Intel TDX CCEL log")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	l, err := readLog(pos[0], *ccel)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "# %s log, %d events, banks %s (UNVERIFIED: what the host wrote)\n", l.Format, len(l.UnverifiedEvents()), bankNames(l.Banks))
	for _, ev := range l.UnverifiedEvents() {
		fmt.Fprintf(e.stdout, "%4d @%-6d %s %2d  %-32s", ev.Index, ev.Offset, regName(l.Kind), ev.Register, ev.Type)
		for _, d := range ev.Digests() {
			fmt.Fprintf(e.stdout, " %s:%x", d.Alg, d.Value[:min(8, len(d.Value))])
		}
		fmt.Fprintf(e.stdout, "  %s\n", describeData(ev))
	}
	return nil
}

func bankNames(banks []measure.BankSpec) string {
	var s []string
	for _, b := range banks {
		s = append(s, b.Alg.String())
	}
	return strings.Join(s, ",")
}

// describeUnverified, when set (by logfacts.go), gives a typed description
// of an event's data for display.
var describeUnverified func(ev *measure.Event) string

// describeData shows event data as text when it is printable, as hex
// otherwise, shortened to one line.
func describeData(ev measure.Event) string {
	if describeUnverified != nil {
		if s := describeUnverified(&ev); s != "" {
			return s
		}
	}
	d := ev.Data
	if len(d) == 0 {
		return "(no data)"
	}
	if s, ok := printable(d); ok {
		return strconv.Quote(s)
	}
	const max = 32
	if len(d) > max {
		return fmt.Sprintf("%d bytes %x…", len(d), d[:max])
	}
	return fmt.Sprintf("%d bytes %x", len(d), d)
}

// printable returns d as a string when it is printable ASCII or UTF-16LE
// text (a trailing NUL allowed).
func printable(d []byte) (string, bool) {
	t := strings.TrimRight(string(d), "\x00")
	if t != "" && utf8.ValidString(t) && !strings.ContainsFunc(t, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return t, true
	}
	if len(d)%2 == 0 && len(d) >= 4 {
		var rs []rune
		for i := 0; i+1 < len(d); i += 2 {
			if d[i+1] != 0 || (d[i] < 0x20 && d[i] != 0) || d[i] >= 0x7f {
				return "", false
			}
			if d[i] != 0 {
				rs = append(rs, rune(d[i]))
			}
		}
		if len(rs) > 0 {
			return string(rs), true
		}
	}
	return "", false
}
