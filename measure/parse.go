package measure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
)

// Hard limits of the parser. Input beyond them is an error, never an
// allocation: every size field is checked against the bytes that remain
// before anything is sliced.
const (
	// MaxEvents is the largest number of events a log may hold.
	MaxEvents = 1 << 20
	// MaxEventDataSize is the largest event data, in bytes.
	MaxEventDataSize = 16 << 20
	// MaxBanks is the largest number of digest algorithms a Spec ID event
	// may declare, and so of digests one event may carry.
	MaxBanks = 16
)

// Errors a [ParseError] wraps; callers branch on them with errors.Is.
var (
	// ErrTruncated means the log ends inside an event.
	ErrTruncated = errors.New("measure: log truncated")
	// ErrMalformed means a field holds a value the format forbids.
	ErrMalformed = errors.New("measure: malformed log")
	// ErrLimit means the log exceeds one of the documented hard limits.
	ErrLimit = errors.New("measure: log exceeds a limit")
	// ErrEmpty means the input holds no event.
	ErrEmpty = errors.New("measure: empty log")
)

// ParseError is an error in the bytes of a log: it names the event (its
// 0-based index) and the byte offset at which the problem was found.
type ParseError struct {
	Event  int    // index of the event being parsed
	Offset int    // byte offset of the field in error
	Msg    string // what was wrong
	Err    error  // ErrTruncated, ErrMalformed or ErrLimit
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("measure: event %d at offset %d: %s", e.Event, e.Offset, e.Msg)
}

func (e *ParseError) Unwrap() error { return e.Err }

// Format is the encoding of a log.
type Format int

const (
	// FormatSHA1Legacy: TCG_PCClientPCREvent records with one SHA-1 digest
	// each, as TPM 2.0 firmware writes for the TCG 1.2 log format and as
	// BIOS-era TPM 1.2 machines write without a Spec ID event.
	FormatSHA1Legacy Format = iota + 1
	// FormatCryptoAgile: a Spec ID Event03 followed by TCG_PCR_EVENT2
	// records carrying one digest per declared algorithm (TCG PC Client
	// Platform Firmware Profile, section 10.2). Intel TDX CCEL logs use it.
	FormatCryptoAgile
	// FormatTPM12: a SHA-1 log that opens with a "Spec ID Event00" event,
	// which the TCG EFI Platform Specification defines for TPM 1.2 hosts.
	FormatTPM12
)

// String returns "sha1-legacy", "crypto-agile" or "tpm12".
func (f Format) String() string {
	switch f {
	case FormatSHA1Legacy:
		return "sha1-legacy"
	case FormatCryptoAgile:
		return "crypto-agile"
	case FormatTPM12:
		return "tpm12"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// RegisterKind says what the register index of an event means, and so how
// registers start and which indices exist.
type RegisterKind int

const (
	// PCR: TPM platform configuration registers 0-23, with the PC Client
	// initial values (PCRs 17-22 start at all ones, PCR 0 at the startup
	// locality).
	PCR RegisterKind = iota
	// CCMR: confidential-computing measurement registers of an Intel TDX
	// CCEL log: index 0 is MRTD, 1-4 are RTMR0-3; all start at zero.
	CCMR
)

// String returns "pcr" or "ccmr".
func (k RegisterKind) String() string {
	if k == CCMR {
		return "ccmr"
	}
	return "pcr"
}

// NumRegisters returns how many registers of this kind exist.
func (k RegisterKind) NumRegisters() int {
	if k == CCMR {
		return 5
	}
	return 24
}

// BankSpec is one digest algorithm a log declares, with its digest size.
type BankSpec struct {
	Alg  HashAlg
	Size int
}

// SpecID is the content of a Spec ID event (TCG_EfiSpecIDEvent, PC Client
// Platform Firmware Profile, section 10.4.5.1).
type SpecID struct {
	Signature     string // "Spec ID Event03", "Spec ID Event00", ...
	PlatformClass uint32
	VersionMajor  uint8
	VersionMinor  uint8
	Errata        uint8
	UintnSize     uint8
	Banks         []BankSpec // crypto-agile logs only
	VendorInfo    []byte
}

// Digest is one digest of an event. Value aliases the log's bytes.
type Digest struct {
	Alg   HashAlg
	Value []byte
}

// Event is one record of a log. Its fields alias the bytes given to [Parse]:
// nothing is copied, so the caller must not change those bytes while the
// event is in use.
//
// An event of a [Log] is unverified: its type, data and digests are what
// the host wrote. Only events of a [VerifiedLog] had their registers checked
// against values a TPM signed, and even then only the digests of the
// verified banks are vouched for; data is vouched for only when it hashes
// to that digest, which the typed decoders check.
type Event struct {
	Index    int       // 0-based position in the log, the Spec ID event included
	Offset   int       // byte offset of the event's first byte
	Register uint32    // PCR or CC measurement register index, as logged
	Type     EventType // as logged
	Data     []byte    // the event data, aliasing the log
	digests  []Digest
}

// Digests returns the event's digests, one per bank, in logged order. The
// slice is shared: do not modify it.
func (e *Event) Digests() []Digest { return e.digests }

// Digest returns the event's digest in the given bank.
func (e *Event) Digest(alg HashAlg) ([]byte, bool) {
	for _, d := range e.digests {
		if d.Alg == alg {
			return d.Value, true
		}
	}
	return nil, false
}

// Log is a parsed, unverified event log. It aliases the bytes given to
// [Parse]. A Log is immutable and safe for concurrent use.
type Log struct {
	// Format is the encoding of the log.
	Format Format
	// Kind says what the register indices mean.
	Kind RegisterKind
	// SpecID is the content of the log's Spec ID event, or nil for a SHA-1
	// log that has none.
	SpecID *SpecID
	// Banks are the digest algorithms of the log: those the Spec ID event
	// declares, or SHA-1 alone. Firmware logs every bank in every event.
	Banks []BankSpec
	// Padded reports that the log ended with filler bytes (0xFF or 0x00),
	// as logs copied out of a fixed-size ACPI buffer do.
	Padded bool
	// Size is the number of bytes the events take, padding excluded.
	Size int

	data     []byte
	recs     []record    // one per event, pointer-free
	digs     []digestRec // every event's digests, in order
	extended uint32      // bit r: some event extends register r (every bank)

	once   sync.Once
	events []Event // built from recs on first use
}

// record is the parser's view of an event: offsets into the log, no
// pointers, so that parsing and replay cost no garbage-collector work.
type record struct {
	offset   uint32
	register uint32
	typ      EventType
	dataOff  uint32
	dataLen  uint32
	digStart uint32 // index of the first digest in Log.digs
	digN     uint32
}

// digestRec locates one digest in the log.
type digestRec struct {
	alg  HashAlg
	size uint16
	off  uint32
}

func (l *Log) digestValue(d digestRec) []byte {
	end := d.off + uint32(d.size)
	return l.data[d.off:end:end]
}

// NumEvents returns the number of events, the Spec ID event included.
func (l *Log) NumEvents() int { return len(l.recs) }

// UnverifiedEvents returns every event of the log, the Spec ID event
// included. Nothing in them has been checked against a TPM: use them for
// display, and [Log.Verify] for anything a decision rests on. The slice is
// built on the first call and shared: do not modify it.
func (l *Log) UnverifiedEvents() []Event {
	l.once.Do(l.buildEvents)
	return l.events
}

func (l *Log) buildEvents() {
	digests := make([]Digest, len(l.digs))
	for i, d := range l.digs {
		digests[i] = Digest{Alg: d.alg, Value: l.digestValue(d)}
	}
	events := make([]Event, len(l.recs))
	for i, r := range l.recs {
		end := r.dataOff + r.dataLen
		ds := r.digStart + r.digN
		events[i] = Event{
			Index:    i,
			Offset:   int(r.offset),
			Register: r.register,
			Type:     r.typ,
			Data:     l.data[r.dataOff:end:end],
			digests:  digests[r.digStart:ds:ds],
		}
	}
	l.events = events
}

// ParseOptions tune [Parse]. The zero value parses a TPM event log.
type ParseOptions struct {
	// Kind says what register indices mean. If zero, they are TPM PCRs.
	Kind RegisterKind
}

// Parse parses a TCG event log as firmware hands it to the OS (for example
// /sys/kernel/security/tpm0/binary_bios_measurements): a SHA-1 legacy log
// or a crypto-agile log. Trailing 0xFF or 0x00 filler after the last event
// ends the log. The returned log aliases data.
func Parse(data []byte) (*Log, error) {
	return ParseWithOptions(data, ParseOptions{})
}

// ParseCCEL parses an Intel TDX confidential-computing event log (the
// contents of the buffer the ACPI CCEL table points to): a crypto-agile log
// whose registers are MRTD and RTMR0-3, usually padded with 0xFF to the size
// of the ACPI buffer.
func ParseCCEL(data []byte) (*Log, error) {
	l, err := ParseWithOptions(data, ParseOptions{Kind: CCMR})
	if err != nil {
		return nil, err
	}
	if l.Format != FormatCryptoAgile {
		return nil, &ParseError{Event: 0, Offset: 0, Msg: "a CCEL log must be crypto-agile", Err: ErrMalformed}
	}
	return l, nil
}

// ParseWithOptions is [Parse] with options.
func ParseWithOptions(data []byte, opts ParseOptions) (*Log, error) {
	if len(data) > math.MaxUint32 {
		return nil, &ParseError{Msg: "log larger than 4 GiB", Err: ErrLimit}
	}
	if len(data) == 0 || isFiller(data) {
		return nil, &ParseError{Msg: "no event in the log", Err: ErrEmpty}
	}
	l := &Log{Kind: opts.Kind, data: data, Format: FormatSHA1Legacy, Banks: sha1Banks}
	p := parser{data: data, l: l}
	// The first event is always in the SHA-1 format.
	first, firstDig, err := p.sha1Event(0)
	if err != nil {
		return nil, err
	}
	// The Spec ID event is not extended, so its register does not matter:
	// TDX firmware logs it with register 1 (RTMR0), PC firmware with PCR 0.
	if first.typ == EV_NO_ACTION {
		spec, err := parseSpecID(int(first.offset), data[first.dataOff:first.dataOff+first.dataLen])
		if err != nil {
			return nil, err
		}
		if spec != nil {
			l.SpecID = spec
			switch {
			case spec.Signature == "Spec ID Event03":
				l.Format = FormatCryptoAgile
				l.Banks = spec.Banks
			case spec.Signature == "Spec ID Event00" && spec.VersionMajor == 1 && spec.VersionMinor == 2:
				l.Format = FormatTPM12
			}
		}
	}
	// Size the slices from a quick walk of the event headers, so that they
	// are allocated once; the walk checks nothing, the parse below does.
	n := countEvents(data, p.off, l)
	l.recs = append(make([]record, 0, n+1), first)
	l.digs = append(make([]digestRec, 0, (n+1)*len(l.Banks)), firstDig)
	for p.off < len(data) {
		if p.atFiller() {
			l.Padded = true
			break
		}
		idx := len(l.recs)
		if idx >= MaxEvents {
			return nil, p.errorf(idx, p.off, ErrLimit, "more than %d events", MaxEvents)
		}
		if l.Format == FormatCryptoAgile {
			err = p.agileEvent(idx)
		} else {
			var rec record
			var dig digestRec
			rec, dig, err = p.sha1Event(idx)
			rec.digStart = uint32(len(l.digs))
			l.recs = append(l.recs, rec)
			l.digs = append(l.digs, dig)
		}
		if err != nil {
			return nil, err
		}
	}
	// Event 0 counts too: in a SHA-1 log it is an ordinary event.
	for _, r := range l.recs {
		if r.typ != EV_NO_ACTION && r.register < 32 {
			l.extended |= 1 << r.register
		}
	}
	l.Size = p.off
	l.data = data[:p.off:p.off]
	return l, nil
}

var sha1Banks = []BankSpec{{Alg: SHA1, Size: 20}}

// countEvents walks the event headers from off and returns how many
// events fit in data, at most MaxEvents. It is a capacity hint only.
func countEvents(data []byte, off int, l *Log) int {
	n := 0
	fixed := 0 // bytes of the digest list of a crypto-agile event
	for _, b := range l.Banks {
		fixed += 2 + b.Size
	}
	for n < MaxEvents {
		rest := data[off:]
		var size int
		if l.Format == FormatCryptoAgile {
			if len(rest) < 12+fixed+4 {
				break
			}
			size = 12 + fixed + 4 + int(binary.LittleEndian.Uint32(rest[12+fixed:]))
		} else {
			if len(rest) < 32 {
				break
			}
			size = 32 + int(binary.LittleEndian.Uint32(rest[28:]))
		}
		if size > len(rest) || size <= 0 {
			break
		}
		off += size
		n++
	}
	return n
}

type parser struct {
	data []byte
	off  int
	l    *Log
}

// atFiller reports whether the rest of the input is 0xFF or 0x00 filler.
// It reads past the first 8 bytes only when they are filler already.
func (p *parser) atFiller() bool {
	rest := p.data[p.off:]
	head := rest[:min(8, len(rest))]
	if !isFiller(head) {
		return false
	}
	return isFiller(rest)
}

// isFiller reports whether b is non-empty and all 0xFF or all 0x00.
func isFiller(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	var block *[4096]byte
	switch b[0] {
	case 0xFF:
		block = &ffBlock
	case 0x00:
		block = &zeroBlock
	default:
		return false
	}
	for len(b) > 0 {
		n := min(len(b), len(block))
		if !bytes.Equal(b[:n], block[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

var zeroBlock, ffBlock = [4096]byte{}, func() (b [4096]byte) {
	for i := range b {
		b[i] = 0xFF
	}
	return b
}()

func (p *parser) errorf(idx, off int, err error, format string, a ...any) *ParseError {
	return &ParseError{Event: idx, Offset: off, Msg: fmt.Sprintf(format, a...), Err: err}
}

// sha1Event parses a TCG_PCClientPCREvent: register, type, a SHA-1
// digest, data size, data. The caller sets digStart and appends.
func (p *parser) sha1Event(idx int) (record, digestRec, error) {
	start := p.off
	rest := p.data[start:]
	if len(rest) < 32 {
		return record{}, digestRec{}, p.errorf(idx, start, ErrTruncated, "event header needs 32 bytes, %d remain", len(rest))
	}
	size := binary.LittleEndian.Uint32(rest[28:])
	if size > MaxEventDataSize {
		return record{}, digestRec{}, p.errorf(idx, start+28, ErrLimit, "event data size %d exceeds %d", size, MaxEventDataSize)
	}
	if uint64(size) > uint64(len(rest)-32) {
		return record{}, digestRec{}, p.errorf(idx, start+28, ErrTruncated, "event data size %d, %d bytes remain", size, len(rest)-32)
	}
	p.off = start + 32 + int(size)
	return record{
		offset:   uint32(start),
		register: binary.LittleEndian.Uint32(rest),
		typ:      EventType(binary.LittleEndian.Uint32(rest[4:])),
		dataOff:  uint32(start + 32),
		dataLen:  size,
		digN:     1,
	}, digestRec{alg: SHA1, size: 20, off: uint32(start + 8)}, nil
}

// agileEvent parses a TCG_PCR_EVENT2 (register, type, a digest list with
// one digest per declared bank, data size, data) and appends it.
func (p *parser) agileEvent(idx int) error {
	start := p.off
	rest := p.data[start:]
	if len(rest) < 12 {
		return p.errorf(idx, start, ErrTruncated, "event header needs 12 bytes, %d remain", len(rest))
	}
	l := p.l
	banks := l.Banks
	// Firmware logs one digest per declared bank. An event with fewer is
	// accepted (the banks it lacks will not match a quote); one with more
	// necessarily repeats an algorithm.
	count := binary.LittleEndian.Uint32(rest[8:])
	if count > uint32(len(banks)) {
		return p.errorf(idx, start+8, ErrMalformed, "event carries %d digests, the Spec ID event declares %d banks", count, len(banks))
	}
	pos := 12
	first := len(l.digs)
	var seen uint32 // bit i: banks[i] seen in this event
	for i := range int(count) {
		if len(rest)-pos < 2 {
			l.digs = l.digs[:first]
			return p.errorf(idx, start+pos, ErrTruncated, "digest %d: algorithm needs 2 bytes", i)
		}
		alg := HashAlg(binary.LittleEndian.Uint16(rest[pos:]))
		bi := -1
		if banks[i].Alg == alg { // the usual case: logged in declared order
			bi = i
		} else {
			for j, b := range banks {
				if b.Alg == alg {
					bi = j
					break
				}
			}
		}
		if bi < 0 {
			l.digs = l.digs[:first]
			return p.errorf(idx, start+pos, ErrMalformed, "digest %d: algorithm %v is not declared by the Spec ID event", i, alg)
		}
		if seen&(1<<bi) != 0 {
			l.digs = l.digs[:first]
			return p.errorf(idx, start+pos, ErrMalformed, "digest %d: algorithm %v appears twice", i, alg)
		}
		seen |= 1 << bi
		size := banks[bi].Size
		pos += 2
		if len(rest)-pos < size {
			l.digs = l.digs[:first]
			return p.errorf(idx, start+pos, ErrTruncated, "digest %d: %v needs %d bytes, %d remain", i, alg, size, len(rest)-pos)
		}
		l.digs = append(l.digs, digestRec{alg: alg, size: uint16(size), off: uint32(start + pos)})
		pos += size
	}
	if len(rest)-pos < 4 {
		l.digs = l.digs[:first]
		return p.errorf(idx, start+pos, ErrTruncated, "event data size needs 4 bytes")
	}
	size := binary.LittleEndian.Uint32(rest[pos:])
	if size > MaxEventDataSize {
		l.digs = l.digs[:first]
		return p.errorf(idx, start+pos, ErrLimit, "event data size %d exceeds %d", size, MaxEventDataSize)
	}
	if uint64(size) > uint64(len(rest)-pos-4) {
		l.digs = l.digs[:first]
		return p.errorf(idx, start+pos, ErrTruncated, "event data size %d, %d bytes remain", size, len(rest)-pos-4)
	}
	pos += 4
	l.recs = append(l.recs, record{
		offset:   uint32(start),
		register: binary.LittleEndian.Uint32(rest),
		typ:      EventType(binary.LittleEndian.Uint32(rest[4:])),
		dataOff:  uint32(start + pos),
		dataLen:  size,
		digStart: uint32(first),
		digN:     count,
	})
	p.off = start + pos + int(size)
	return nil
}

// parseSpecID decodes a Spec ID event. It returns nil, nil for an
// EV_NO_ACTION event that is not one.
func parseSpecID(offset int, d []byte) (*SpecID, error) {
	if len(d) < 16 || !bytes.HasPrefix(d, []byte("Spec ID Event0")) {
		return nil, nil
	}
	bad := func(off int, err error, format string, a ...any) error {
		return &ParseError{Event: 0, Offset: offset + 32 + off, Msg: "Spec ID event: " + fmt.Sprintf(format, a...), Err: err}
	}
	s := &SpecID{Signature: string(bytes.TrimRight(d[:16], "\x00"))}
	if s.Signature != "Spec ID Event03" {
		// TCG_EfiSpecIdEventStruct of the TPM 1.2 EFI specification:
		// signature, platform class, minor, major, errata, uintn size.
		if len(d) < 24 {
			return nil, bad(16, ErrTruncated, "needs 24 bytes, has %d", len(d))
		}
		s.PlatformClass = binary.LittleEndian.Uint32(d[16:])
		s.VersionMinor, s.VersionMajor, s.Errata, s.UintnSize = d[20], d[21], d[22], d[23]
		if len(d) > 24 {
			n := int(d[24])
			if len(d)-25 >= n {
				s.VendorInfo = d[25 : 25+n]
			}
		}
		return s, nil
	}
	if len(d) < 28 {
		return nil, bad(16, ErrTruncated, "needs 28 bytes, has %d", len(d))
	}
	s.PlatformClass = binary.LittleEndian.Uint32(d[16:])
	s.VersionMinor, s.VersionMajor, s.Errata, s.UintnSize = d[20], d[21], d[22], d[23]
	n := binary.LittleEndian.Uint32(d[24:])
	if n == 0 {
		return nil, bad(24, ErrMalformed, "declares no digest algorithm")
	}
	if n > MaxBanks {
		return nil, bad(24, ErrLimit, "declares %d digest algorithms, at most %d allowed", n, MaxBanks)
	}
	pos := 28
	if uint64(len(d)-pos) < 4*uint64(n) {
		return nil, bad(pos, ErrTruncated, "%d algorithms need %d bytes", n, 4*n)
	}
	s.Banks = make([]BankSpec, 0, n)
	for i := range int(n) {
		alg := HashAlg(binary.LittleEndian.Uint16(d[pos:]))
		size := int(binary.LittleEndian.Uint16(d[pos+2:]))
		switch {
		case size == 0 || size > MaxDigestSize:
			return nil, bad(pos+2, ErrMalformed, "algorithm %d (%v): digest size %d", i, alg, size)
		case alg.Known() && alg.Size() != size:
			return nil, bad(pos+2, ErrMalformed, "algorithm %v: digest size %d, must be %d", alg, size, alg.Size())
		}
		for _, b := range s.Banks {
			if b.Alg == alg {
				return nil, bad(pos, ErrMalformed, "algorithm %v declared twice", alg)
			}
		}
		s.Banks = append(s.Banks, BankSpec{Alg: alg, Size: size})
		pos += 4
	}
	if pos < len(d) {
		vn := int(d[pos])
		pos++
		if len(d)-pos < vn {
			return nil, bad(pos-1, ErrTruncated, "vendor info size %d, %d bytes remain", vn, len(d)-pos)
		}
		s.VendorInfo = d[pos : pos+vn]
	}
	return s, nil
}
