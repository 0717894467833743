package measure

import (
	"bytes"
	"fmt"
)

// Bank holds the values of the registers of one digest algorithm after a
// replay.
type Bank struct {
	Alg      HashAlg
	kind     RegisterKind
	extended uint32 // bit r set: the log extends register r
	values   [24][MaxDigestSize]byte
}

// Value returns the replayed value of register r (its initial value when the
// log does not extend it), or nil when r does not exist.
func (b *Bank) Value(r int) []byte {
	if r < 0 || r >= b.kind.NumRegisters() {
		return nil
	}
	return b.values[r][:b.Alg.Size()]
}

// Extended reports whether the log extends register r in this bank.
func (b *Bank) Extended(r int) bool {
	return r >= 0 && r < 32 && b.extended&(1<<r) != 0
}

// ExtendedRegisters returns the registers the log extends, in order.
func (b *Bank) ExtendedRegisters() []int {
	var out []int
	for r := range b.kind.NumRegisters() {
		if b.Extended(r) {
			out = append(out, r)
		}
	}
	return out
}

// Registers is the result of a replay: one [Bank] per digest algorithm of
// the log that this package can compute.
type Registers struct {
	Kind  RegisterKind
	Banks []Bank
	// Unreplayable lists the algorithms the log declares that this package
	// cannot compute; their banks are absent from Banks.
	Unreplayable []HashAlg
}

// Bank returns the bank of an algorithm, or nil.
func (r *Registers) Bank(alg HashAlg) *Bank {
	for i := range r.Banks {
		if r.Banks[i].Alg == alg {
			return &r.Banks[i]
		}
	}
	return nil
}

// ReplayError is a log whose events cannot be replayed: an event names a
// register that does not exist, or a startup-locality event comes too late.
type ReplayError struct {
	Event  int
	Offset int
	Msg    string
}

func (e *ReplayError) Error() string {
	return fmt.Sprintf("measure: replay: event %d at offset %d: %s", e.Event, e.Offset, e.Msg)
}

// Quirk names a known firmware defect that a verifier may accept. Quirks
// are never applied silently: [Log.Verify] uses one only when the caller
// allows it in [VerifyOptions.Quirks] and the log needs it to match, and the
// result lists the quirks that were needed.
type Quirk uint32

const (
	// QuirkUnloggedExitBootServices: the firmware extended PCR 5 with the
	// two EV_EFI_ACTION events of ExitBootServices ("Exit Boot Services
	// Invocation" and "Exit Boot Services Returned with Success", PC Client
	// Platform Firmware Profile, section 10.4.4) but did not log them. The
	// quirk replays them after the last PCR 5 event, in every bank, and
	// applies only to logs that do not already hold them.
	QuirkUnloggedExitBootServices Quirk = 1 << iota
)

var quirkNames = []struct {
	q    Quirk
	name string
}{
	{QuirkUnloggedExitBootServices, "unlogged-exit-boot-services"},
}

// String returns the quirk names, comma-separated.
func (q Quirk) String() string {
	var b []byte
	for _, n := range quirkNames {
		if q&n.q != 0 {
			if len(b) > 0 {
				b = append(b, ',')
			}
			b = append(b, n.name...)
			q &^= n.q
		}
	}
	if q != 0 {
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "quirk(0x%x)", uint32(q))
	}
	return string(b)
}

// ParseQuirk returns the quirk with the given name.
func ParseQuirk(name string) (Quirk, error) {
	for _, n := range quirkNames {
		if n.name == name {
			return n.q, nil
		}
	}
	return 0, fmt.Errorf("measure: unknown quirk %q", name)
}

var (
	ebsInvocation = []byte("Exit Boot Services Invocation")
	ebsReturned   = []byte("Exit Boot Services Returned with Success")
	startupLoc    = []byte("StartupLocality\x00")
)

// Replay replays every bank of the log in one pass with the PC Client
// semantics (Platform Firmware Profile, sections 3.3.2 and 10.4.5.3):
// EV_NO_ACTION events are not extended; a StartupLocality event sets PCR
// 0's initial value to the locality; an EV_EFI_HCRTM_EVENT starts PCR 0 at
// locality 4; PCRs 17-22 start at all ones. CC measurement registers all
// start at zero.
//
// Replay checks nothing against a TPM: its values are what the log claims.
// Use [Log.Verify] to compare them with quoted values.
func (l *Log) Replay() (*Registers, error) {
	var rp replayer
	if err := rp.init(l, 0, nil); err != nil {
		return nil, err
	}
	for i := range l.recs {
		rp.step(i)
	}
	return rp.registers(), nil
}

// replayer replays a log event by event, so that verification can look at
// the registers after every event.
type replayer struct {
	log   *Log
	banks []Bank
	// bankOf maps the index of a digest in an event (logged order, the
	// same for every event of a crypto-agile log) to its bank, or -1.
	bankOf       [MaxBanks]int8
	unreplayable []HashAlg
	// ebsAfter is the index of the event after which the unlogged
	// ExitBootServices events are replayed, or -1.
	ebsAfter int
	ebs      [MaxBanks][2][MaxDigestSize]byte
}

// init prepares a replay of l. With only non-nil, it replays only the
// banks that only has values for: verification does not hash the banks it
// will not compare.
func (rp *replayer) init(l *Log, quirks Quirk, only QuotedValues) error {
	rp.log = l
	rp.banks = make([]Bank, 0, len(l.Banks))
	for i, b := range l.Banks {
		rp.bankOf[i] = -1
		if !b.Alg.Known() {
			rp.unreplayable = append(rp.unreplayable, b.Alg)
			continue
		}
		if only != nil && len(only[b.Alg]) == 0 {
			continue
		}
		rp.bankOf[i] = int8(len(rp.banks))
		rp.banks = append(rp.banks, Bank{Alg: b.Alg, kind: l.Kind})
	}
	if l.Kind == PCR {
		for bi := range rp.banks {
			for r := 17; r <= 22; r++ {
				v := &rp.banks[bi].values[r]
				for j := range v {
					v[j] = 0xFF
				}
			}
		}
	}
	n := uint32(l.Kind.NumRegisters())
	pcr0Extended := false
	locality := -1
	for i := range l.recs {
		ev := &l.recs[i]
		data := l.data[ev.dataOff : ev.dataOff+ev.dataLen]
		if ev.typ == EV_NO_ACTION {
			if l.Kind == PCR && ev.register == 0 && bytes.HasPrefix(data, startupLoc) {
				switch {
				case len(data) != len(startupLoc)+1:
					return &ReplayError{Event: i, Offset: int(ev.offset), Msg: fmt.Sprintf("StartupLocality event has %d bytes, want %d", len(data), len(startupLoc)+1)}
				case pcr0Extended:
					return &ReplayError{Event: i, Offset: int(ev.offset), Msg: "StartupLocality event after PCR 0 was extended"}
				case locality >= 0:
					return &ReplayError{Event: i, Offset: int(ev.offset), Msg: "second StartupLocality event"}
				}
				locality = int(data[len(startupLoc)])
			}
			continue
		}
		if ev.register >= n {
			return &ReplayError{Event: i, Offset: int(ev.offset), Msg: fmt.Sprintf("%s %d does not exist", l.Kind, ev.register)}
		}
		if l.Kind == PCR && ev.register == 0 {
			if ev.typ == EV_EFI_HCRTM_EVENT {
				if pcr0Extended {
					return &ReplayError{Event: i, Offset: int(ev.offset), Msg: "EV_EFI_HCRTM_EVENT after PCR 0 was extended"}
				}
				if locality < 0 {
					locality = 4
				}
			}
			pcr0Extended = true
		}
	}
	if locality > 0 {
		for bi := range rp.banks {
			b := &rp.banks[bi]
			b.values[0][b.Alg.Size()-1] = byte(locality)
		}
	}
	rp.ebsAfter = -1
	if quirks&QuirkUnloggedExitBootServices != 0 && l.Kind == PCR {
		rp.ebsAfter = ebsPosition(l)
		if rp.ebsAfter >= 0 {
			for bi := range rp.banks {
				alg := rp.banks[bi].Alg
				rp.ebs[bi][0], _ = alg.Sum(ebsInvocation)
				rp.ebs[bi][1], _ = alg.Sum(ebsReturned)
			}
		}
	}
	return nil
}

// ebsPosition returns the index of the last PCR 5 event, after which the
// unlogged ExitBootServices events belong, or -1 when the log already logs
// them or has no PCR 5 event.
func ebsPosition(l *Log) int {
	last := -1
	for i := range l.recs {
		ev := &l.recs[i]
		if ev.register != 5 || ev.typ == EV_NO_ACTION {
			continue
		}
		data := l.data[ev.dataOff : ev.dataOff+ev.dataLen]
		if ev.typ == EV_EFI_ACTION && (bytes.Equal(data, ebsInvocation) || bytes.Equal(data, ebsReturned)) {
			return -1
		}
		last = i
	}
	return last
}

// step replays event i. It returns the bit of the register it extended, or
// 0 when it extended nothing.
func (rp *replayer) step(i int) uint32 {
	l := rp.log
	ev := &l.recs[i]
	if ev.typ == EV_NO_ACTION {
		return 0
	}
	r := ev.register // checked against the register count in init
	for di, d := range l.digs[ev.digStart : ev.digStart+ev.digN] {
		bi := rp.bankOf[di]
		if d.alg != l.Banks[di].Alg {
			// Digests in another order than declared: look the bank up.
			bi = -1
			for j, b := range rp.banks {
				if b.Alg == d.alg {
					bi = int8(j)
				}
			}
		}
		if bi < 0 {
			continue
		}
		b := &rp.banks[bi]
		size := b.Alg.Size()
		extend(b.Alg, b.values[r][:size], l.data[d.off:d.off+uint32(size)])
		b.extended |= 1 << r
	}
	if i == rp.ebsAfter {
		for bi := range rp.banks {
			b := &rp.banks[bi]
			size := b.Alg.Size()
			extend(b.Alg, b.values[5][:size], rp.ebs[bi][0][:size])
			extend(b.Alg, b.values[5][:size], rp.ebs[bi][1][:size])
		}
	}
	return 1 << r
}

func (rp *replayer) registers() *Registers {
	return &Registers{Kind: rp.log.Kind, Banks: rp.banks, Unreplayable: rp.unreplayable}
}
