package measure

import (
	"bytes"
	"fmt"
	"strings"
	"unsafe"
)

// Decoded is the typed content of an event's data. Its concrete type
// depends on the event type: [*UEFIVariable], [*ImageLoad], [*GPT],
// [*FirmwareBlob], [*HandoffTables], [*CRTMVersion], [*Separator],
// [*Text], [*TaggedEvent], [*SIPAEvents], [*NoAction], [*NonHostInfo] or
// [*Raw]. Decoded values alias the log's bytes.
type Decoded interface {
	// String describes the data in one line.
	String() string
	decoded()
}

// Binding says whether an event's data is vouched for by the event's
// digest, and so by the register that digest was extended into.
type Binding int

const (
	// BindingNone: the digest is of something else (an image, a file, the
	// firmware's tables); the data only describes it and is not vouched
	// for by any register.
	BindingNone Binding = iota
	// BindingMatched: the data, or the part of it that the specification
	// says is hashed, hashes to the digest.
	BindingMatched
	// BindingMismatched: the specification says the digest is of the data,
	// and it is not: the data was changed after it was measured, or the
	// firmware measured something else than it logged.
	BindingMismatched
	// BindingVariableData: only the VariableData of a UEFI variable hashes
	// to the digest, as EDK2 measures boot variables and as older firmware
	// measures the Secure Boot variables: the value is bound, the
	// variable's name and GUID are not.
	BindingVariableData
)

// String returns "none", "matched" or "mismatched".
func (b Binding) String() string {
	switch b {
	case BindingMatched:
		return "matched"
	case BindingMismatched:
		return "mismatched"
	case BindingVariableData:
		return "variable-data"
	}
	return "none"
}

// MarshalText encodes the binding's name.
func (b Binding) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// DecodedEvent is an event with its decoded data.
type DecodedEvent struct {
	Event *Event
	// Data is the decoded data; a [*Raw] when the data does not decode.
	Data Decoded
	// Err is why the data did not decode as its type says, or nil.
	Err error
	// Binding says whether Data is vouched for by the event's digest in
	// the bank that was checked.
	Binding Binding
	// Alg is the bank whose digest the data was checked against.
	Alg HashAlg
}

// DecodeUnverified decodes the data of an event of an unverified [Log]
// and checks it against the event's strongest digest. Nothing in the
// result is vouched for by a TPM: use it to display a log, and
// [VerifiedLog.Facts] for anything a decision rests on.
func DecodeUnverified(ev *Event) DecodedEvent {
	return decodeEvent(ev, PCR, strongestAlg(ev.digests, nil))
}

// DescribeUnverified returns a one-line description of an unverified
// event's data, with a warning when the data does not match its digest.
func DescribeUnverified(ev *Event) string {
	d := DecodeUnverified(ev)
	s := d.Data.String()
	if d.Err != nil {
		s += fmt.Sprintf(" [does not decode: %v]", d.Err)
	}
	if d.Binding == BindingMismatched {
		s += fmt.Sprintf(" [DATA DOES NOT MATCH ITS %v DIGEST]", d.Alg)
	}
	return s
}

// algPreference orders the banks in which event data is checked: SHA-256
// first (collision resistant, and fast where the CPU has SHA extensions),
// then the larger SHA-2 digests, SM3, and SHA-1 only when a log has
// nothing else.
var algPreference = []HashAlg{SHA256, SHA384, SHA512, SM3_256, SHA1}

// strongestAlg returns the preferred known algorithm among the digests,
// limited to allowed when it is not nil.
func strongestAlg(ds []Digest, allowed map[HashAlg]bool) HashAlg {
	for _, a := range algPreference {
		if allowed != nil && !allowed[a] {
			continue
		}
		for _, d := range ds {
			if d.Alg == a {
				return a
			}
		}
	}
	return 0
}

// matches reports whether content hashes to the event's digest in bank alg.
func matches(ev *Event, alg HashAlg, content []byte) bool {
	want, ok := ev.Digest(alg)
	if !ok || !alg.Known() {
		return false
	}
	got, _ := alg.Sum(content)
	return bytes.Equal(got[:alg.Size()], want)
}

// decodeEvent decodes an event's data according to its type, and checks
// its binding to the digest of bank alg (0: no bank to check).
func decodeEvent(ev *Event, kind RegisterKind, alg HashAlg) DecodedEvent {
	return decodeEventTree(ev, kind, alg, true, nil)
}

// decodeArena holds what decoding one event after another can share: the
// digests of short contents, the bytes of strings, and one value of each
// decoded type that every event reuses, so that the decoded value is
// valid only until the next event is decoded. Facts, its only user, keeps
// strings, slices of the log and copies, never the decoded value. A nil
// arena allocates normally.
type decodeArena struct {
	// varDataFirst[k]: the last variable of kind k (varKind) bound through
	// its VariableData only.
	varDataFirst [2]bool
	sums         [8]sumEntry // digests of short contents logs repeat (separators, EFI actions)
	nsums        int
	strs         []byte // backing bytes of strings; never written once used
	sipa         SIPAEvents
	// sipaOK has bit i set when event i's SIPA tree was checked already
	// (by the first pass of Facts, over the same bytes).
	sipaOK []uint64
	txt    Text
	vari   UEFIVariable
	image  ImageLoad
	sep    Separator
}

type sumEntry struct {
	alg  HashAlg
	n    int
	data [48]byte
	sum  [MaxDigestSize]byte
}

// matches is the package's matches, remembering the digests of the first
// few short contents: separators and EFI actions repeat in every log.
func (a *decodeArena) matches(ev *Event, alg HashAlg, content []byte) bool {
	if a == nil || len(content) > len(sumEntry{}.data) {
		return matches(ev, alg, content)
	}
	want, ok := ev.Digest(alg)
	if !ok || !alg.Known() {
		return false
	}
	for i := range a.nsums {
		e := &a.sums[i]
		if e.alg == alg && e.n == len(content) && bytes.Equal(e.data[:e.n], content) {
			return bytes.Equal(e.sum[:alg.Size()], want)
		}
	}
	sum, _ := alg.Sum(content)
	if a.nsums < len(a.sums) {
		e := &a.sums[a.nsums]
		a.nsums++
		*e = sumEntry{alg: alg, n: len(content), sum: sum}
		copy(e.data[:], content)
	}
	return bytes.Equal(sum[:alg.Size()], want)
}

// maxArenaString is the longest string decodeArena.string copies into its
// buffer; longer ones are allocated alone.
const maxArenaString = 4096

// string returns a copy of b as a string, carved from one buffer that is
// never written again once a string points into it.
func (a *decodeArena) string(b []byte) string {
	if len(b) == 0 || len(b) > maxArenaString {
		return string(b)
	}
	if cap(a.strs)-len(a.strs) < len(b) {
		a.grow(len(b))
	}
	start := len(a.strs)
	a.strs = append(a.strs, b...)
	return unsafe.String(&a.strs[start], len(b))
}

// sipaChecked reports whether the SIPA tree of event i was checked.
func (a *decodeArena) sipaChecked(i int) bool {
	return i >= 0 && i/64 < len(a.sipaOK) && a.sipaOK[i/64]&(1<<(i%64)) != 0
}

// markSIPAChecked records that the SIPA tree of event i was checked.
func (a *decodeArena) markSIPAChecked(i, numEvents int) {
	if a.sipaOK == nil {
		a.sipaOK = make([]uint64, (numEvents+63)/64)
	}
	if i >= 0 && i/64 < len(a.sipaOK) {
		a.sipaOK[i/64] |= 1 << (i % 64)
	}
}

// grow replaces the string buffer by a new one with room for n bytes; the
// strings already carved keep the old one.
func (a *decodeArena) grow(n int) {
	a.strs = make([]byte, 0, max(n, min(max(1024, 2*cap(a.strs)), 16384)))
}

func (a *decodeArena) text(v string, utf16 bool) *Text {
	if a == nil {
		return &Text{Value: v, UTF16: utf16}
	}
	a.txt = Text{Value: v, UTF16: utf16}
	return &a.txt
}

// decodeEventTree is decodeEvent; with tree false, a SIPA tree is checked
// but not built (facts walk it in place).
func decodeEventTree(ev *Event, kind RegisterKind, alg HashAlg, tree bool, a *decodeArena) DecodedEvent {
	out := decodeEventData(ev, kind, alg, tree, a)
	out.Event = ev
	return out
}

// decodeEventData is decodeEventTree without the event in the result, so
// that the caller's event need not outlive the call.
func decodeEventData(ev *Event, kind RegisterKind, alg HashAlg, tree bool, a *decodeArena) DecodedEvent {
	out := DecodedEvent{Alg: alg}
	d := ev.Data
	var err error
	// rule: how the digest relates to the data.
	const (
		ruleNone     = iota // the digest is of something else
		ruleData            // the digest must be of the data
		ruleOptional        // the digest may be of the data
	)
	rule := ruleNone
	var alt []byte     // another accepted hashed content
	var varData []byte // a variable's VariableData
	switch ev.Type {
	case EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2, EV_EFI_VARIABLE_AUTHORITY:
		var v *UEFIVariable
		if a != nil {
			v = &a.vari
		} else {
			v = new(UEFIVariable)
		}
		err = parseUEFIVariable(d, v)
		if err == nil {
			out.Data = v
			// EDK2 hashes only the VariableData of boot variables, and
			// older firmware that of every variable; the profile says the
			// whole structure.
			varData = v.Data
		}
		rule = ruleData
	case EV_EFI_BOOT_SERVICES_APPLICATION, EV_EFI_BOOT_SERVICES_DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER:
		var im *ImageLoad
		if a != nil {
			im = &a.image
		} else {
			im = new(ImageLoad)
		}
		err = parseImageLoad(d, im)
		if err == nil {
			out.Data = im
		}
	case EV_EFI_GPT_EVENT, EV_EFI_GPT_EVENT2:
		var g *GPT
		g, err = ParseGPT(d)
		if err == nil {
			out.Data = g
		}
		rule = ruleData
	case EV_EFI_PLATFORM_FIRMWARE_BLOB:
		var f *FirmwareBlob
		f, err = parseFirmwareBlob(d)
		if err == nil {
			out.Data = f
		}
	case EV_EFI_PLATFORM_FIRMWARE_BLOB2:
		var f *FirmwareBlob
		f, err = parseFirmwareBlob2(d)
		if err == nil {
			out.Data = f
		}
	case EV_EFI_HANDOFF_TABLES, EV_EFI_HANDOFF_TABLES2:
		var h *HandoffTables
		h, err = parseHandoffTables(d, ev.Type == EV_EFI_HANDOFF_TABLES2)
		if err == nil {
			out.Data = h
		}
	case EV_S_CRTM_VERSION:
		out.Data = parseCRTMVersion(d)
		rule = ruleOptional
	case EV_SEPARATOR:
		var s *Separator
		if a != nil {
			s = &a.sep
		} else {
			s = new(Separator)
		}
		if err = parseSeparator(d, s); err == nil {
			out.Data = s
		}
		rule = ruleData
	case EV_EFI_ACTION, EV_ACTION, EV_OMIT_BOOT_DEVICE_EVENTS:
		if s, ok := printableASCIIIn(d, a); ok {
			out.Data = a.text(s, false)
		} else {
			err = fmt.Errorf("measure: %v: data is not ASCII text", ev.Type)
		}
		rule = ruleData
	case EV_COMPACT_HASH:
		out.Data = &Raw{Data: d}
		rule = ruleData
	case EV_POST_CODE, EV_POST_CODE2:
		// A string ("ACPI DATA", "Embedded UEFI Driver", ...), a firmware
		// blob or a firmware blob2, of any length.
		if s, ok := printableASCIIIn(d, a); ok {
			out.Data = a.text(s, false)
		} else if f, ferr := parseFirmwareBlob(d); ferr == nil {
			out.Data = f
		} else if f, ferr := parseFirmwareBlob2(d); ferr == nil {
			out.Data = f
		}
	case EV_EVENT_TAG:
		if kind == PCR && ev.Register >= 12 && ev.Register <= 14 {
			if tree {
				var evs []SIPAEvent
				evs, err = ParseSIPA(d)
				if err == nil {
					out.Data = &SIPAEvents{Events: evs, raw: d}
				}
			} else if a != nil && a.sipaChecked(ev.Index) {
				a.sipa = SIPAEvents{raw: d}
				out.Data = &a.sipa
			} else if err = checkSIPA(d, 0); err == nil {
				out.Data = &SIPAEvents{raw: d}
			}
			rule = ruleData
		} else {
			var t *TaggedEvent
			t, err = parseTaggedEvent(d)
			if err == nil {
				out.Data = t
			} else if s, ok := printableASCIIIn(d, a); ok {
				// Some CC firmware logs the Linux stub's tag without its
				// header: only the description.
				out.Data, err = a.text(s, false), nil
			}
		}
	case EV_NO_ACTION:
		out.Data = parseNoAction(d)
	case EV_NONHOST_INFO:
		if bytes.HasPrefix(d, []byte("GCE NonHostInfo\x00")) && len(d) >= 17 {
			out.Data = &NonHostInfo{Signature: "GCE NonHostInfo", Technology: d[16]}
		}
		rule = ruleOptional
	case EV_IPL:
		t, first, second := decodeIPL(d, a)
		if t != nil {
			out.Data = t
		}
		if first != nil || second != nil {
			rule, d, alt = ruleData, first, second
			if d == nil {
				d, alt = alt, nil
			}
		} else if t != nil && t.UTF16 {
			rule = ruleOptional
		}
	default:
		if s, ok := printableASCIIIn(d, a); ok {
			out.Data = a.text(s, false)
		}
	}
	if out.Data == nil {
		out.Data = &Raw{Data: ev.Data}
	}
	out.Err = err
	if alg == 0 || rule == ruleNone || ev.Type == EV_NO_ACTION {
		return out
	}
	cached := ev.Type == EV_SEPARATOR || ev.Type == EV_EFI_ACTION
	// A firmware that hashed only the VariableData of the last variable of
	// this kind likely did so for this one: try that first. The two
	// contents differ (the whole structure is longer), so at most one of
	// them hashes to the digest and the order changes no outcome, only how
	// many hashes it takes.
	vk := varKind(ev.Type)
	if varData != nil && a != nil && a.varDataFirst[vk] {
		if matches(ev, alg, varData) {
			out.Binding = BindingVariableData
			return out
		}
		if matches(ev, alg, d) {
			out.Binding = BindingMatched
			a.varDataFirst[vk] = false
		} else {
			out.Binding = BindingMismatched
		}
		return out
	}
	switch {
	case cached && a.matches(ev, alg, d):
		out.Binding = BindingMatched
	case !cached && (matches(ev, alg, d) || (alt != nil && matches(ev, alg, alt))):
		out.Binding = BindingMatched
	case varData != nil && matches(ev, alg, varData):
		out.Binding = BindingVariableData
		if a != nil {
			a.varDataFirst[vk] = true
		}
	case rule == ruleData:
		out.Binding = BindingMismatched
	}
	return out
}

// varKind sorts variable events by how firmware measures them: boot
// variables (EDK2 hashes their VariableData only) and the others.
func varKind(t EventType) int {
	if t == EV_EFI_VARIABLE_BOOT || t == EV_EFI_VARIABLE_BOOT2 {
		return 1
	}
	return 0
}

// grubPrefixes are the descriptions GRUB prepends to the strings it
// measures into PCR 8: upstream GRUB hashes the text after "grub_cmd: "
// or "kernel_cmdline: " without its NUL; Red Hat's GRUB hashes the text
// after "grub_cmd " or "grub_kernel_cmdline " with its NUL.
var grubPrefixes = []struct {
	prefix  string
	withNUL bool
	cmdline bool // the kernel command line, not a command
}{
	{"grub_cmd: ", false, false},
	{"kernel_cmdline: ", false, true},
	{"grub_cmd ", true, false},
	{"grub_kernel_cmdline ", true, true},
}

// decodeIPL decodes EV_IPL data as a string (ASCII or UTF-16). For GRUB's
// strings it also returns the bytes GRUB hashed, in both forms GRUB uses;
// they alias d.
func decodeIPL(d []byte, a *decodeArena) (*Text, []byte, []byte) {
	if s, ok := printableASCIIIn(d, a); ok {
		t := a.text(s, false)
		for _, p := range grubPrefixes {
			if strings.HasPrefix(s, p.prefix) {
				body := d[len(p.prefix):len(s):len(s)]
				var withNUL []byte
				if len(d) > len(s) {
					withNUL = d[len(p.prefix) : len(s)+1 : len(s)+1]
				}
				if p.withNUL {
					return t, withNUL, body
				}
				return t, body, withNUL
			}
		}
		return t, nil, nil
	}
	// systemd-stub and systemd-boot log UTF-16 strings; some add a
	// stray NUL byte.
	u := d
	if len(u)%2 == 1 && u[len(u)-1] == 0 {
		u = u[:len(u)-1]
	}
	if len(u) >= 2 && u[1] == 0 {
		if s, ok := decodeUCS2In(u, a); ok && isPrintable(s) && s != "" {
			return a.text(s, true), nil, nil
		}
	}
	return nil, nil, nil
}
