package measure

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"
)

// QuotedValues are register values that a root of trust vouched for: the
// PCRs of a TPM quote whose signature the caller checked, or the RTMRs of a
// TDX report. They are keyed by bank, then by register index. Only the
// registers present are compared.
type QuotedValues map[HashAlg]map[uint32][]byte

// VerifyOptions tune [Log.Verify]. The zero value is strict: no quirk is
// accepted.
type VerifyOptions struct {
	// Quirks are the known firmware defects the caller accepts. If zero,
	// none: a log that needs one does not verify.
	Quirks Quirk
}

// Status is the outcome of the comparison of one register.
type Status int

const (
	// Matched: the replay of the log's events equals the quoted value.
	Matched Status = iota + 1
	// Mismatched: the log extends the register and its replay differs
	// from the quoted value.
	Mismatched
	// Absent: the log has no event for the register, so it neither
	// explains nor contradicts the quoted value; nothing about the register
	// is verified. [RegisterResult.Initial] tells whether the quoted value
	// is the register's initial value (nothing was measured at all).
	Absent
	// NotQuoted: the log extends the register in this bank but no quoted
	// value was given for it; its events are not verified.
	NotQuoted
	// BankNotInLog: a quoted bank that the log does not carry (or that this
	// package cannot compute); nothing in the log can be checked against it.
	BankNotInLog
)

// String returns the status in lower case ("matched").
func (s Status) String() string {
	switch s {
	case Matched:
		return "matched"
	case Mismatched:
		return "mismatched"
	case Absent:
		return "absent"
	case NotQuoted:
		return "not-quoted"
	case BankNotInLog:
		return "bank-not-in-log"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// RegisterResult is the comparison of one register of one bank.
type RegisterResult struct {
	Alg      HashAlg
	Register uint32
	Status   Status
	Replayed []byte // the replay of the verified prefix; nil for BankNotInLog
	Quoted   []byte // nil for NotQuoted
	Events   int    // the events of the prefix that extend the register
	Initial  bool   // for Absent: the quoted value is the initial value
}

// Report is the outcome of [Log.Verify], register by register.
type Report struct {
	// Results lists every quoted register and every register the log
	// extends in a quoted bank, sorted by bank, then register.
	Results []RegisterResult
	// UnquotedBanks lists the banks of the log for which no value was
	// quoted. They are not replayed, and nothing in them is verified.
	UnquotedBanks []HashAlg
	// Prefix is the number of events the quoted values cover. A log read
	// after the quote may have grown: events from Prefix on came after the
	// quote and are not verified.
	Prefix int
	// Events is the number of events in the log.
	Events int
	// Quirks lists the quirks the log needed to match.
	Quirks Quirk
}

// Mismatches returns the results whose status is [Mismatched].
func (r *Report) Mismatches() []RegisterResult {
	var out []RegisterResult
	for _, x := range r.Results {
		if x.Status == Mismatched {
			out = append(out, x)
		}
	}
	return out
}

// ErrMismatch is wrapped by the [MismatchError] of [Log.Verify].
var ErrMismatch = errors.New("measure: log does not match the quoted values")

// MismatchError reports the registers whose replay differs from the quoted
// values.
type MismatchError struct {
	Report *Report
}

func (e *MismatchError) Error() string {
	var regs []string
	for _, m := range e.Report.Mismatches() {
		regs = append(regs, fmt.Sprintf("%v[%d]", m.Alg, m.Register))
	}
	return fmt.Sprintf("measure: log does not match the quoted values of %s", strings.Join(regs, ", "))
}

func (e *MismatchError) Unwrap() error { return ErrMismatch }

// ErrNothingVerified is returned by [Log.Verify] when no quoted register
// could be compared with the log: no bank in common, or no register given.
var ErrNothingVerified = errors.New("measure: no quoted register can be compared with the log")

// VerifiedLog is a log whose events were checked against quoted values. It
// holds only the events of registers that matched in every quoted bank the
// log carries, and that come before the end of the quoted prefix; all other
// events are absent from it. It is a different type from [Log] so that a
// decision cannot be taken on unverified events by accident.
//
// A VerifiedLog is immutable and safe for concurrent use. Its events alias
// the bytes given to [Parse].
type VerifiedLog struct {
	log      *Log
	report   *Report
	idx      []uint32 // indices of the verified events
	verified uint32   // bit r: register r verified

	once   sync.Once
	events []Event
}

// Events returns the verified events in log order. The slice is built on
// the first call and shared: do not modify it.
func (v *VerifiedLog) Events() []Event {
	v.once.Do(func() {
		all := v.log.UnverifiedEvents()
		v.events = make([]Event, len(v.idx))
		for i, x := range v.idx {
			v.events[i] = all[x]
		}
	})
	return v.events
}

// NumEvents returns the number of verified events.
func (v *VerifiedLog) NumEvents() int { return len(v.idx) }

// Report returns the register-by-register comparison.
func (v *VerifiedLog) Report() *Report { return v.report }

// Format is the encoding of the underlying log.
func (v *VerifiedLog) Format() Format { return v.log.Format }

// Kind is the register kind of the underlying log.
func (v *VerifiedLog) Kind() RegisterKind { return v.log.Kind }

// Verified reports whether the events of register r were verified.
func (v *VerifiedLog) Verified(r uint32) bool { return r < 32 && v.verified&(1<<r) != 0 }

// Verify compares the log with quoted register values and returns the
// verified view of the log.
//
// Every register of every quoted bank that the log carries is compared.
// When the whole log does not match, Verify looks for the longest prefix of
// the log that matches every quoted register, since a log read after the
// quote may have grown; the events after it are reported, never verified.
// A quirk allowed in opts is tried only when the log does not match without
// it, and the report lists it when it was needed.
//
// When a register does not match, Verify returns a *[MismatchError] and
// also a VerifiedLog that holds only the registers that did match, so that
// the caller can report on them; nothing unverified is ever in it.
func (l *Log) Verify(quoted QuotedValues, opts VerifyOptions) (*VerifiedLog, error) {
	v, err := l.verify(quoted, 0)
	if err == nil || !errors.Is(err, ErrMismatch) {
		return v, err
	}
	// Try each allowed quirk that applies, alone. One quirk exists today;
	// when there are more, combinations are tried in order of bits.
	for _, n := range quirkNames {
		if opts.Quirks&n.q == 0 {
			continue
		}
		if qv, qerr := l.verify(quoted, n.q); qerr == nil {
			return qv, nil
		}
	}
	return v, err
}

// check is one quoted register that the log's banks can be compared with.
type check struct {
	bank  int // index into replayer.banks
	reg   uint32
	value []byte
	ok    bool
}

func (l *Log) verify(quoted QuotedValues, quirks Quirk) (*VerifiedLog, error) {
	var rp replayer
	if err := rp.init(l, quirks, quoted); err != nil {
		return nil, err
	}
	nregs := uint32(l.Kind.NumRegisters())
	// Registers the log never extends cannot be checked against it: they
	// are reported Absent and take no part in the prefix search.
	everExtended := l.extended
	if rp.ebsAfter >= 0 {
		everExtended |= 1 << 5
	}
	// The checks, grouped by register: those of register r are
	// checks[start[r]:start[r+1]].
	total := 0
	for _, regs := range quoted {
		total += len(regs)
	}
	checks := make([]check, 0, total)
	var start [25]int
	for r := range nregs {
		start[r] = len(checks)
		for bi := range rp.banks {
			alg := rp.banks[bi].Alg
			val, ok := quoted[alg][r]
			if !ok || everExtended&(1<<r) == 0 {
				continue
			}
			checks = append(checks, check{bank: bi, reg: r, value: val})
		}
	}
	start[nregs] = len(checks)
	for alg, regs := range quoted {
		for r, val := range regs {
			if r >= nregs {
				return nil, fmt.Errorf("measure: quoted %v register %d does not exist", alg, r)
			}
			if alg.Known() && len(val) != alg.Size() {
				return nil, fmt.Errorf("measure: quoted %v register %d has %d bytes, want %d", alg, r, len(val), alg.Size())
			}
		}
	}
	if len(checks) == 0 {
		return nil, ErrNothingVerified
	}
	// One pass: after each event, recompare only the register it extended
	// and remember the last point at which every check held.
	bad := 0
	for i := range checks {
		c := &checks[i]
		c.ok = bytes.Equal(rp.banks[c.bank].Value(int(c.reg)), c.value)
		if !c.ok {
			bad++
		}
	}
	prefix := -1
	if bad == 0 {
		prefix = 0
	}
	recheck := func(r uint32) {
		for ci := start[r]; ci < start[r+1]; ci++ {
			c := &checks[ci]
			ok := bytes.Equal(rp.banks[c.bank].Value(int(r)), c.value)
			if ok != c.ok {
				if ok {
					bad--
				} else {
					bad++
				}
				c.ok = ok
			}
		}
	}
	for i := range l.recs {
		if rp.step(i) != 0 {
			recheck(l.recs[i].register)
			if i == rp.ebsAfter {
				recheck(5)
			}
		}
		if bad == 0 {
			prefix = i + 1
		}
	}
	if prefix < 0 || prefix == len(l.recs) {
		return l.verifiedView(quoted, quirks, len(l.recs), &rp)
	}
	// Replay again up to the prefix, for the register values there.
	var rp2 replayer
	if err := rp2.init(l, quirks, quoted); err != nil {
		return nil, err
	}
	for i := range prefix {
		rp2.step(i)
	}
	return l.verifiedView(quoted, quirks, prefix, &rp2)
}

// verifiedView builds the report and the verified log from the registers
// replayed over events[:prefix].
func (l *Log) verifiedView(quoted QuotedValues, quirks Quirk, prefix int, rp *replayer) (*VerifiedLog, error) {
	rep := &Report{Prefix: prefix, Events: len(l.recs)}
	for _, b := range l.Banks {
		if b.Alg.Known() && len(quoted[b.Alg]) == 0 {
			rep.UnquotedBanks = append(rep.UnquotedBanks, b.Alg)
		}
	}
	var counts [MaxBanks][24]int
	var extended [MaxBanks]uint32
	for i := range prefix {
		ev := &l.recs[i]
		if ev.typ == EV_NO_ACTION {
			continue
		}
		for _, d := range l.digs[ev.digStart : ev.digStart+ev.digN] {
			for bi := range rp.banks {
				if rp.banks[bi].Alg == d.alg {
					counts[bi][ev.register]++
					extended[bi] |= 1 << ev.register
				}
			}
		}
	}
	if rp.ebsAfter >= 0 && rp.ebsAfter < prefix {
		for bi := range rp.banks {
			counts[bi][5] += 2
			extended[bi] |= 1 << 5
		}
	}
	matched, mismatched := uint32(0), uint32(0)
	nres := 0
	for bi := range rp.banks {
		mask := extended[bi]
		for r := range quoted[rp.banks[bi].Alg] {
			mask |= 1 << r
		}
		nres += bits.OnesCount32(mask)
	}
	for alg, regs := range quoted {
		if !slices.ContainsFunc(rp.banks, func(b Bank) bool { return b.Alg == alg }) {
			nres += len(regs)
		}
	}
	rep.Results = make([]RegisterResult, 0, nres)
	buf := make([]byte, 0, nres*MaxDigestSize) // every replayed value
	for bi := range rp.banks {
		b := &rp.banks[bi]
		q := quoted[b.Alg]
		for r := range uint32(l.Kind.NumRegisters()) {
			val, isQuoted := q[r]
			ext := extended[bi]&(1<<r) != 0
			if !isQuoted && !ext {
				continue
			}
			off := len(buf)
			buf = append(buf, b.Value(int(r))...)
			res := RegisterResult{Alg: b.Alg, Register: r, Replayed: buf[off:len(buf):len(buf)], Quoted: val, Events: counts[bi][r]}
			switch {
			case !isQuoted:
				res.Status = NotQuoted
			case !ext:
				res.Status = Absent
				res.Initial = bytes.Equal(res.Replayed, val)
			case bytes.Equal(res.Replayed, val):
				res.Status = Matched
				matched |= 1 << r
			default:
				res.Status = Mismatched
				mismatched |= 1 << r
			}
			rep.Results = append(rep.Results, res)
		}
	}
	for alg, regs := range quoted {
		if slices.ContainsFunc(rp.banks, func(b Bank) bool { return b.Alg == alg }) {
			continue
		}
		for r, val := range regs {
			rep.Results = append(rep.Results, RegisterResult{Alg: alg, Register: r, Status: BankNotInLog, Quoted: val})
		}
	}
	slices.SortFunc(rep.Results, func(a, b RegisterResult) int {
		return cmp.Or(cmp.Compare(a.Alg, b.Alg), cmp.Compare(a.Register, b.Register))
	})
	verified := matched &^ mismatched
	if verified&(1<<5) != 0 && rp.ebsAfter >= 0 && rp.ebsAfter < prefix {
		rep.Quirks = quirks
	}
	v := &VerifiedLog{log: l, report: rep, verified: verified}
	v.idx = make([]uint32, 0, prefix)
	for i := range prefix {
		ev := &l.recs[i]
		if ev.register >= 32 || verified&(1<<ev.register) == 0 {
			continue
		}
		// Events that were not extended are not vouched for by any value,
		// except a StartupLocality event, which set PCR 0's initial value.
		if ev.typ == EV_NO_ACTION && !(l.Kind == PCR && ev.register == 0 && bytes.HasPrefix(l.data[ev.dataOff:ev.dataOff+ev.dataLen], startupLoc)) {
			continue
		}
		v.idx = append(v.idx, uint32(i))
	}
	if mismatched != 0 {
		return v, &MismatchError{Report: rep}
	}
	return v, nil
}
