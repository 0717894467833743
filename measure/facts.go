package measure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// Fact is one value a verified log shows, with the events it came from, so
// that a verdict built on it can explain itself.
type Fact[T any] struct {
	Value T `json:"value"`
	// Events are the indices of the events the value came from.
	Events []int `json:"events"`
	// Bound reports that the value is vouched for by the quoted registers:
	// it is an event digest, or it was read from event data that hashes
	// to the event's digest in a verified bank. A value that is not bound
	// (a device path, a file name GRUB logged beside a file's digest) is
	// what the host wrote next to a measurement: a hint, never evidence.
	Bound bool `json:"bound"`
}

func fact[T any](x *extractor, v T, ev int, bound bool) *Fact[T] {
	var f *Fact[T]
	if !x.slow {
		// The common kinds come from slabs, a few allocations per log
		// instead of one per fact.
		switch any(f).(type) {
		case *Fact[bool]:
			f = any(slab(&x.boolFacts)).(*Fact[T])
		case *Fact[string]:
			f = any(slab(&x.strFacts)).(*Fact[T])
		case *Fact[Hex]:
			f = any(slab(&x.hexFacts)).(*Fact[T])
		case *Fact[uint64]:
			f = any(slab(&x.uintFacts)).(*Fact[T])
		}
	}
	if f == nil {
		f = new(Fact[T])
	}
	*f = Fact[T]{Value: v, Events: x.evs(ev), Bound: bound}
	return f
}

// slab returns a new element of the slab s, which it refills 8 elements at
// a time. Elements are never reused.
func slab[T any](s *[]T) *T {
	if len(*s) == cap(*s) {
		*s = make([]T, 0, 8)
	}
	*s = (*s)[:len(*s)+1]
	return &(*s)[len(*s)-1]
}

// evs returns a one-element slice holding i, carved from an arena so that
// facts do not allocate one slice each; its capacity is 1, so appending
// to it copies.
func (x *extractor) evs(i int) []int {
	if len(x.arena) == cap(x.arena) {
		x.arena = make([]int, 0, 128)
	}
	x.arena = append(x.arena, i)
	n := len(x.arena)
	return x.arena[n-1 : n : n]
}

// Facts summarizes what a verified boot log shows: firmware, Secure Boot,
// the boot chain, Linux and Windows boot configuration, and the log's
// structural findings. Facts come only from a [VerifiedLog]: from events
// of registers that matched quoted values. A nil pointer or empty list
// means the log does not show the fact (it was not measured, not verified,
// or its data did not match its digest).
//
// Facts are immutable once returned and safe for concurrent use.
type Facts struct {
	// Kind is "pcr" for a TPM log and "ccmr" for a TDX CCEL log.
	Kind string `json:"register_kind"`
	// Registers are the verified registers the facts come from.
	Registers []uint32 `json:"registers"`
	// Alg is the bank whose digests the event data was checked against.
	Alg string `json:"alg"`

	Firmware     FirmwareFacts      `json:"firmware"`
	SecureBoot   SecureBootFacts    `json:"secure_boot"`
	Boot         BootFacts          `json:"boot"`
	Linux        *LinuxFacts        `json:"linux,omitempty"`
	Windows      *WindowsFacts      `json:"windows,omitempty"`
	Confidential *ConfidentialFacts `json:"confidential,omitempty"`
	Findings     []Finding          `json:"findings"`
}

// FirmwareFacts are what the platform firmware measured about itself.
type FirmwareFacts struct {
	// CRTMVersion is the S-CRTM version string, GUID (in text form) or,
	// when the firmware logs neither, "raw:" and the data in hex.
	CRTMVersion *Fact[string] `json:"crtm_version,omitempty"`
	// StartupLocality is the locality of TPM2_Startup (PCR 0's initial
	// value), from a StartupLocality event.
	StartupLocality *Fact[int] `json:"startup_locality,omitempty"`
	// Blobs are the firmware volumes measured (EV_EFI_PLATFORM_FIRMWARE_BLOB(2)).
	Blobs []Fact[FirmwareBlob] `json:"blobs,omitempty"`
	// Actions are the EFI action strings, in log order ("Calling EFI
	// Application from Boot Option", "Exit Boot Services Invocation", ...).
	Actions []Fact[string] `json:"actions,omitempty"`
	// DMAProtectionDisabled: the firmware measured "DMA Protection
	// Disabled" into PCR 7 (the kernel DMA protection, IOMMU, is off).
	DMAProtectionDisabled *Fact[bool] `json:"dma_protection_disabled,omitempty"`
	// BootAttemptsOmitted: the firmware did not measure boot attempts
	// (EV_OMIT_BOOT_DEVICE_EVENTS).
	BootAttemptsOmitted *Fact[bool] `json:"boot_attempts_omitted,omitempty"`
	// ExitBootServices: the firmware measured a successful ExitBootServices.
	ExitBootServices *Fact[bool] `json:"exit_boot_services,omitempty"`
}

// SecureBootFacts are the Secure Boot state and databases (PCR 7).
type SecureBootFacts struct {
	Enabled      *Fact[bool]  `json:"enabled,omitempty"`
	SetupMode    *Fact[bool]  `json:"setup_mode,omitempty"`
	AuditMode    *Fact[bool]  `json:"audit_mode,omitempty"`
	DeployedMode *Fact[bool]  `json:"deployed_mode,omitempty"`
	PK           *SignatureDB `json:"pk,omitempty"`
	KEK          *SignatureDB `json:"kek,omitempty"`
	DB           *SignatureDB `json:"db,omitempty"`
	DBX          *SignatureDB `json:"dbx,omitempty"`
	DBT          *SignatureDB `json:"dbt,omitempty"`
	DBR          *SignatureDB `json:"dbr,omitempty"`
	// Authorities are the EV_EFI_VARIABLE_AUTHORITY events: the database
	// entry that authorized each image, in log order.
	Authorities []Authority `json:"authorities,omitempty"`
	// SbatLevel is shim's SBAT revocation level (PCR 7).
	SbatLevel *Fact[string] `json:"sbat_level,omitempty"`
	// MokList, MokListX and MokListTrusted are the digests of shim's
	// machine-owner key lists as shim measured them into PCR 14.
	MokList        *Fact[Hex] `json:"mok_list,omitempty"`
	MokListX       *Fact[Hex] `json:"mok_list_x,omitempty"`
	MokListTrusted *Fact[Hex] `json:"mok_list_trusted,omitempty"`
}

// SignatureDB is a Secure Boot signature database (PK, KEK, db, dbx, ...)
// as measured. Certificates are kept as DER and parsed only on demand.
type SignatureDB struct {
	Events []int `json:"events"`
	// Digest is the event's digest in the checked bank.
	Digest Hex `json:"digest"`
	// Bound is always true: a database whose data does not match its
	// digest yields no SignatureDB.
	Bound        bool            `json:"bound"`
	Size         int             `json:"size"`
	Certificates []*Certificate  `json:"certificates,omitempty"`
	Hashes       []SignatureHash `json:"hashes,omitempty"`
}

// Contains reports whether the database holds the hash (of any hash type).
func (db *SignatureDB) Contains(hash []byte) bool {
	if db == nil {
		return false
	}
	for _, h := range db.Hashes {
		if bytes.Equal(h.Hash, hash) {
			return true
		}
	}
	return false
}

// Missing returns the hashes the database does not hold: for dbx, the
// revocations a policy requires that the host has not applied. A nil
// database holds nothing.
func (db *SignatureDB) Missing(hashes [][]byte) [][]byte {
	var out [][]byte
	for _, h := range hashes {
		if !db.Contains(h) {
			out = append(out, h)
		}
	}
	return out
}

// ContainsCertificate reports whether the database holds a certificate
// with this DER.
func (db *SignatureDB) ContainsCertificate(der []byte) bool {
	return db != nil && db.certificateIndex(der) >= 0
}

func (db *SignatureDB) certificateIndex(der []byte) int {
	for i, c := range db.Certificates {
		if bytes.Equal(c.DER, der) {
			return i
		}
	}
	return -1
}

// Authority is an EV_EFI_VARIABLE_AUTHORITY event: the signature database
// entry (an EFI_SIGNATURE_DATA) that authorized an image.
type Authority struct {
	Events []int `json:"events"`
	Bound  bool  `json:"bound"`
	// Variable names the database: "db", shim's "Shim" (its built-in
	// vendor certificate), "MokList", ...
	Variable     string `json:"variable"`
	VariableGUID GUID   `json:"variable_guid"`
	Owner        GUID   `json:"owner"`
	// Certificate is the authorizing certificate, or nil for a hash entry.
	Certificate *Certificate `json:"certificate,omitempty"`
	// Hash is the authorizing hash for a hash entry.
	Hash Hex `json:"hash,omitempty"`
	// DBIndex is the index of the certificate in SecureBootFacts.DB's
	// certificates, or -1 when it is not in db.
	DBIndex int `json:"db_index"`
	// Image is the index of the first image load event after the
	// authority, the image it authorized, or -1.
	Image int `json:"image"`
}

// BootFacts describe the boot chain.
type BootFacts struct {
	BootOrder *Fact[[]uint16] `json:"boot_order,omitempty"`
	Entries   []BootEntry     `json:"entries,omitempty"`
	// Applications are the boot applications (EV_EFI_BOOT_SERVICES_APPLICATION),
	// in the order they were loaded.
	Applications []BootImage `json:"applications,omitempty"`
	// Drivers are the UEFI drivers measured (option ROMs and the like).
	Drivers []BootImage `json:"drivers,omitempty"`
	GPT     *Fact[GPT]  `json:"gpt,omitempty"`
}

// BootEntry is a measured Boot#### variable.
type BootEntry struct {
	Number      uint16     `json:"number"`
	Description string     `json:"description"`
	Path        DevicePath `json:"path"`
	Attributes  uint32     `json:"attributes"`
	Events      []int      `json:"events"`
	// Bound: the load option (description, path, attributes) hashes to
	// the digest. NumberBound: the variable's name (Boot####) does too;
	// EDK2 measures only the load option.
	Bound       bool `json:"bound"`
	NumberBound bool `json:"number_bound"`
}

// BootImage is an image the firmware loaded. Its digest is the PE
// Authenticode digest and is bound; its path is a hint.
type BootImage struct {
	Event    int            `json:"event"`
	Register uint32         `json:"register"`
	Type     string         `json:"type"`
	Digests  map[string]Hex `json:"digests"`
	Path     DevicePath     `json:"path"`
	// Authority is the index in SecureBootFacts.Authorities of the
	// authority logged for it, or -1.
	Authority int `json:"authority"`
}

// ConfidentialFacts are the confidential-computing hints a log carries.
type ConfidentialFacts struct {
	// Technology is what Google Compute Engine's firmware says the VM
	// runs on: "none", "amd-sev", "amd-sev-es", "intel-tdx", "amd-sev-snp".
	Technology *Fact[string] `json:"technology,omitempty"`
	// TDX reports that the log itself is an Intel TDX CCEL log, whose
	// registers are RTMRs.
	TDX bool `json:"tdx_ccel,omitempty"`
}

// ErrNotVerified is returned by [VerifiedLog.Facts] on a nil log.
var ErrNotVerified = errors.New("measure: facts need a verified log")

// Facts decodes the verified events and summarizes them. It decodes
// lazily what it needs, checks event data against the digest of the
// strongest verified bank wherever the specification makes the data the
// thing hashed, and records a [Finding] (and takes no fact) when it does
// not match. Certificates are not parsed.
func (v *VerifiedLog) Facts() (*Facts, error) {
	return v.facts(false)
}

// facts is Facts. With slow, it takes none of the shortcuts that only
// make it faster: it reads the events from v.Events instead of building
// each in turn from the log's records, sizes no list in advance, decodes
// without an arena and remembers no digest. Tests check that the two
// agree on every log.
func (v *VerifiedLog) facts(slow bool) (*Facts, error) {
	if v == nil || v.log == nil || v.report == nil {
		return nil, ErrNotVerified
	}
	allowed := map[HashAlg]bool{}
	for _, r := range v.report.Results {
		if r.Status == Matched {
			allowed[r.Alg] = true
		}
	}
	x := &extractor{kind: v.log.Kind, f: &Facts{Kind: v.log.Kind.String()}, log: v.log, idx: v.idx, slow: slow}
	if slow {
		x.events = v.Events()
	}
	// ev is where each event is built in turn; it stays on the stack, so
	// that building it takes no write barrier while the GC runs.
	var ev Event
	if n := x.numEvents(); n > 0 {
		x.alg = strongestAlg(x.eventAt(n-1, &ev).digests, allowed)
		if x.alg == 0 {
			x.alg = strongestAlg(x.eventAt(0, &ev).digests, allowed)
		}
	}
	x.f.Alg = x.alg.String()
	if x.alg == 0 {
		x.f.Alg = ""
	}
	if nr := bits.OnesCount32(v.verified); nr > 0 {
		x.f.Registers = make([]uint32, 0, nr)
		for r := range uint32(32) {
			if v.Verified(r) {
				x.f.Registers = append(x.f.Registers, r)
			}
		}
	}
	if v.log.Kind == CCMR {
		x.f.Confidential = &ConfidentialFacts{TDX: true}
	}
	for i := range x.sep {
		x.sep[i] = -1
	}
	x.presize()
	for i := range x.numEvents() {
		x.event(x.eventAt(i, &ev))
	}
	x.finish()
	return x.f, nil
}

// numEvents is the number of verified events.
func (x *extractor) numEvents() int {
	if x.events != nil {
		return len(x.events)
	}
	return len(x.idx)
}

// eventAt returns the k-th verified event. Without an events slice, it
// builds the event from the log's record into ev, with its digests in
// x.digs, which the next call overwrites: nothing may keep the pointer, or
// the event's digests slice, across events.
func (x *extractor) eventAt(k int, ev *Event) *Event {
	if x.events != nil {
		return &x.events[k]
	}
	l := x.log
	i := x.idx[k]
	r := &l.recs[i]
	end := r.dataOff + r.dataLen
	n := int(r.digN)
	if n > len(x.digs) {
		n = len(x.digs) // never: the parser caps the banks at MaxBanks
	}
	for j := range n {
		d := l.digs[int(r.digStart)+j]
		x.digs[j] = Digest{Alg: d.alg, Value: l.digestValue(d)}
	}
	*ev = Event{Index: int(i), Offset: int(r.offset), Register: r.register, Type: r.typ,
		Data: l.data[r.dataOff:end:end], digests: x.digs[:n:n]}
	return ev
}

// eventIndex returns the log index of the k-th verified event.
func (x *extractor) eventIndex(k int) int {
	if x.events != nil {
		return x.events[k].Index
	}
	return int(x.idx[k])
}

// eventHeader returns the register, type and data of the k-th verified
// event, without building it.
func (x *extractor) eventHeader(k int) (uint32, EventType, []byte) {
	if x.events != nil {
		ev := &x.events[k]
		return ev.Register, ev.Type, ev.Data
	}
	r := &x.log.recs[x.idx[k]]
	end := r.dataOff + r.dataLen
	return r.register, r.typ, x.log.data[r.dataOff:end:end]
}

type extractor struct {
	kind RegisterKind
	alg  HashAlg
	f    *Facts
	sep  [24]int // event index of each register's separator, or -1
	// reachedLoader: the log shows the boot reached the OS loader.
	reachedLoader bool
	extended      [24]bool
	pendingAuth   []int // authorities waiting for their image
	sbVars        int   // Secure Boot configuration variables seen
	arena         []int
	arena2        decodeArena
	win           *windowsExtractor
	// The verified events: events when the caller built them, else the
	// log's records at idx, built one at a time with their digests in digs.
	events []Event
	log    *Log
	idx    []uint32
	digs   [MaxBanks]Digest
	// modules bounds the number of Windows loaded-module aggregations.
	modules int
	// slow: take no shortcut (see VerifiedLog.facts).
	slow bool
	// Slabs of facts (see fact).
	boolFacts []Fact[bool]
	strFacts  []Fact[string]
	hexFacts  []Fact[Hex]
	uintFacts []Fact[uint64]
	// cmds and files bound the number of GRUB commands and files.
	cmds, files int
}

// presize counts, in one pass over the event headers, how many values of
// each kind the events can yield at most, and allocates the lists that
// decoding and the facts append to once, at that size. Lists left empty
// are set back to nil by finish.
func (x *extractor) presize() {
	if x.slow {
		return
	}
	var strs, actions, cmds, files, apps, drivers, blobs, auths, boots, modules int
	for k := range x.numEvents() {
		reg, typ, data := x.eventHeader(k)
		switch typ {
		case EV_NO_ACTION, EV_EFI_VARIABLE_DRIVER_CONFIG, EV_SEPARATOR, EV_EFI_GPT_EVENT, EV_EFI_GPT_EVENT2,
			EV_EFI_HANDOFF_TABLES, EV_EFI_HANDOFF_TABLES2, EV_S_CRTM_VERSION, EV_COMPACT_HASH, EV_NONHOST_INFO:
			// Neither text nor an item of a list.
		case EV_EFI_VARIABLE_AUTHORITY:
			auths++
		case EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2:
			boots++
		case EV_EFI_BOOT_SERVICES_APPLICATION:
			apps++
		case EV_EFI_BOOT_SERVICES_DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER:
			drivers++
		case EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_PLATFORM_FIRMWARE_BLOB2:
			blobs++
		case EV_EVENT_TAG:
			if x.kind == PCR && reg >= 12 && reg <= 14 {
				// Check the tree here, once, and count its modules.
				if n, err := checkCountSIPA(data, SIPALoadedModuleAggregation, 0, false); err == nil {
					modules += n
					x.arena2.markSIPAChecked(x.eventIndex(k), x.log.NumEvents())
				}
				break
			}
			if len(data) <= maxArenaString {
				strs += len(data)
			}
		default:
			// EV_IPL, actions, post codes, tags and unknown types may
			// decode as text.
			if len(data) <= maxArenaString {
				strs += len(data)
			}
			switch typ {
			case EV_EFI_ACTION, EV_ACTION:
				actions++
			case EV_IPL:
				s, f := x.grubRegisters(reg)
				if s {
					cmds++
				}
				if f {
					files++
				}
			}
		}
	}
	x.arena2.strs = makeCap(x.arena2.strs, min(strs, 1<<16))
	x.arena = makeCap(x.arena, x.numEvents()+8)
	f := x.f
	f.Firmware.Actions = makeCap(f.Firmware.Actions, actions)
	f.Firmware.Blobs = makeCap(f.Firmware.Blobs, blobs)
	f.SecureBoot.Authorities = makeCap(f.SecureBoot.Authorities, auths)
	f.Boot.Entries = makeCap(f.Boot.Entries, boots)
	f.Boot.Applications = makeCap(f.Boot.Applications, apps)
	f.Boot.Drivers = makeCap(f.Boot.Drivers, drivers)
	x.cmds, x.files, x.modules = cmds, files, modules
}

// makeCap returns s with room for n more elements, or s itself when n is 0.
func makeCap[T any](s []T, n int) []T {
	if n == 0 {
		return s
	}
	return make([]T, 0, n)
}

// nilIfEmpty returns nil for an empty list, so that a list presize
// allocated reads the same as one never appended to.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

func (x *extractor) finding(k FindingKind, ev *Event, format string, a ...any) {
	x.f.Findings = append(x.f.Findings, Finding{Kind: k, Register: ev.Register, Events: x.evs(ev.Index), Message: fmt.Sprintf(format, a...)})
}

func (x *extractor) linux() *LinuxFacts {
	if x.f.Linux == nil {
		x.f.Linux = &LinuxFacts{Commands: makeCap[Fact[string]](nil, x.cmds), Files: makeCap[LinuxFile](nil, x.files)}
	}
	return x.f.Linux
}

func (x *extractor) event(ev *Event) {
	r := ev.Register
	if r < 24 && ev.Type != EV_NO_ACTION {
		x.extended[r] = true
	}
	// Structure: separators and what may follow them.
	if ev.Type == EV_SEPARATOR && r < 24 {
		if x.sep[r] >= 0 {
			x.f.Findings = append(x.f.Findings, Finding{Kind: FindingDuplicateSeparator, Register: r,
				Events: []int{x.sep[r], ev.Index}, Message: "a second separator in the same register"})
		} else {
			x.sep[r] = ev.Index
		}
		if firmwareRegister(x.kind, r) {
			x.reachedLoader = true
		}
	} else if r < 24 && x.sep[r] >= 0 && firmwareRegister(x.kind, r) && ev.Type != EV_NO_ACTION &&
		!allowedAfterSeparator(x.kind, r, ev.Type) {
		x.finding(FindingEventAfterSeparator, ev, "%v after the separator (event %d)", ev.Type, x.sep[r])
	}
	if ev.Type == EV_EFI_BOOT_SERVICES_APPLICATION {
		x.reachedLoader = true
	}
	// Windows keeps measuring into PCRs 12-14 after boot (resume,
	// BitLocker); the boot configuration is what precedes the separator.
	if x.kind == PCR && r >= 12 && r <= 14 && x.sep[r] >= 0 && ev.Type != EV_SEPARATOR {
		return
	}
	switch ev.Type {
	case EV_NO_ACTION:
		if x.kind == PCR && r == 0 && bytes.HasPrefix(ev.Data, startupLoc) && len(ev.Data) == len(startupLoc)+1 {
			// Verified: it set PCR 0's initial value, which matched.
			x.f.Firmware.StartupLocality = fact(x, int(ev.Data[len(startupLoc)]), ev.Index, true)
		}
		return
	}
	a := &x.arena2
	if x.slow {
		a = nil
	}
	d := decodeEventData(ev, x.kind, x.alg, false, a)
	if d.Binding == BindingMismatched {
		msg := ""
		if d.Err != nil {
			msg = fmt.Sprintf(" (and it does not decode: %v)", d.Err)
		}
		x.finding(FindingDataMismatch, ev, "%v data does not hash to its %v digest%s; nothing is taken from it", ev.Type, x.alg, msg)
		return
	}
	if d.Err != nil {
		x.finding(FindingDecodeError, ev, "%v", d.Err)
	}
	bound := d.Binding == BindingMatched || d.Binding == BindingVariableData
	switch data := d.Data.(type) {
	case *Separator:
		if data.Error {
			x.finding(FindingErrorSeparator, ev, "the firmware signalled an error")
		}
	case *UEFIVariable:
		x.variable(ev, data, d.Binding)
	case *ImageLoad:
		x.image(ev, data)
	case *GPT:
		if x.f.Boot.GPT == nil {
			x.f.Boot.GPT = fact(x, *data, ev.Index, bound)
		} else {
			x.f.Boot.GPT.Events = append(x.f.Boot.GPT.Events, ev.Index)
		}
	case *FirmwareBlob:
		if ev.Type != EV_POST_CODE {
			x.f.Firmware.Blobs = append(x.f.Firmware.Blobs, Fact[FirmwareBlob]{Value: *data, Events: x.evs(ev.Index)})
		}
	case *CRTMVersion:
		v := data.Version
		switch {
		case data.GUID != nil:
			v = data.GUID.String()
		case data.Raw != nil:
			v = "raw:" + Hex(data.Raw).String()
		}
		x.f.Firmware.CRTMVersion = fact(x, v, ev.Index, bound)
	case *NonHostInfo:
		if x.f.Confidential == nil {
			x.f.Confidential = &ConfidentialFacts{}
		}
		x.f.Confidential.Technology = fact(x, gceTechnology(data.Technology), ev.Index, bound)
	case *Text:
		x.text(ev, data, bound)
	case *TaggedEvent:
		x.tag(ev, data)
	case *SIPAEvents:
		if x.win == nil {
			x.win = &windowsExtractor{x: x, w: &WindowsFacts{Modules: makeCap[WindowsModule](nil, x.modules)}}
			x.f.Windows = x.win.w
		}
		x.win.event(ev, data.raw)
	}
}

func (x *extractor) text(ev *Event, t *Text, bound bool) {
	switch ev.Type {
	case EV_EFI_ACTION, EV_ACTION:
		x.f.Firmware.Actions = append(x.f.Firmware.Actions, Fact[string]{Value: t.Value, Events: x.evs(ev.Index), Bound: bound})
		switch t.Value {
		case "DMA Protection Disabled":
			x.f.Firmware.DMAProtectionDisabled = fact(x, true, ev.Index, bound)
		case "Exit Boot Services Returned with Success":
			x.f.Firmware.ExitBootServices = fact(x, true, ev.Index, bound)
		}
	case EV_OMIT_BOOT_DEVICE_EVENTS:
		x.f.Firmware.BootAttemptsOmitted = fact(x, true, ev.Index, bound)
	case EV_IPL:
		x.ipl(ev, t, bound)
	case EV_EVENT_TAG:
		// A Linux stub tag logged without its header.
		switch t.Value {
		case "LOADED_IMAGE::LoadOptions":
			x.tag(ev, &TaggedEvent{ID: TagLinuxLoadOptions})
		case "Linux initrd":
			x.tag(ev, &TaggedEvent{ID: TagLinuxInitrd})
		}
	}
}

func (x *extractor) variable(ev *Event, v *UEFIVariable, binding Binding) {
	bound := binding == BindingMatched || binding == BindingVariableData
	switch ev.Type {
	case EV_EFI_VARIABLE_AUTHORITY:
		if v.GUID == ShimLockGUID && v.Name == "SbatLevel" {
			x.f.SecureBoot.SbatLevel = fact(x, strings.TrimRight(string(v.Data), "\x00"), ev.Index, bound)
			return
		}
		x.authority(ev, v, bound)
		return
	case EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2:
		if v.GUID == GlobalVariableGUID && v.Name == "BootOrder" {
			if o, err := v.BootOrder(); err == nil {
				x.f.Boot.BootOrder = fact(x, o, ev.Index, bound)
			} else {
				x.finding(FindingDecodeError, ev, "%v", err)
			}
			return
		}
		if v.GUID == GlobalVariableGUID && isBootNumber(v.Name) {
			n64, _ := strconv.ParseUint(v.Name[4:], 16, 16)
			n := uint16(n64)
			var lo LoadOption
			a := &x.arena2
			if x.slow {
				a = nil
			}
			if err := parseLoadOption(v.Data, &lo, a); err != nil {
				x.finding(FindingDecodeError, ev, "%v", err)
				return
			}
			x.f.Boot.Entries = append(x.f.Boot.Entries, BootEntry{Number: n, Description: lo.Description, Path: lo.FilePath,
				Attributes: lo.Attributes, Events: x.evs(ev.Index), Bound: bound, NumberBound: binding == BindingMatched})
		}
		return
	}
	sb := &x.f.SecureBoot
	var bp **Fact[bool]
	var dbp **SignatureDB
	switch {
	case v.is(GlobalVariableGUID, "SecureBoot"):
		bp = &sb.Enabled
	case v.is(GlobalVariableGUID, "SetupMode"):
		bp = &sb.SetupMode
	case v.is(GlobalVariableGUID, "AuditMode"):
		bp = &sb.AuditMode
	case v.is(GlobalVariableGUID, "DeployedMode"):
		bp = &sb.DeployedMode
	case v.is(GlobalVariableGUID, "PK"):
		dbp = &sb.PK
	case v.is(GlobalVariableGUID, "KEK"):
		dbp = &sb.KEK
	case v.is(ImageSecurityDatabaseGUID, "db"):
		dbp = &sb.DB
	case v.is(ImageSecurityDatabaseGUID, "dbx"):
		dbp = &sb.DBX
	case v.is(ImageSecurityDatabaseGUID, "dbt"):
		dbp = &sb.DBT
	case v.is(ImageSecurityDatabaseGUID, "dbr"):
		dbp = &sb.DBR
	default:
		return
	}
	if !bound {
		// Only reached when there is no verified bank to check against.
		return
	}
	if binding == BindingVariableData {
		// Only the value is bound: the name is vouched for only by the
		// event's position, in the order the profile prescribes.
		k := x.sbVars
		x.sbVars++
		if k >= len(secureBootOrder) || secureBootOrder[k] != v.Name {
			x.finding(FindingDataMismatch, ev, "%s: only its value hashes to the digest, and its position does not vouch for its name; nothing is taken from it", v.Name)
			return
		}
	} else {
		x.sbVars++
	}
	if bp != nil {
		b, err := v.Bool()
		if err != nil {
			x.finding(FindingDecodeError, ev, "%v", err)
			return
		}
		if *bp == nil {
			*bp = fact(x, b, ev.Index, true)
			return
		}
		(*bp).Events = append((*bp).Events, ev.Index)
		if (*bp).Value != b {
			x.f.Findings = append(x.f.Findings, Finding{Kind: FindingConflictingValues, Register: ev.Register,
				Events: (*bp).Events, Message: fmt.Sprintf("%s measured as both %v and %v; the first is kept", v.Name, (*bp).Value, b)})
		}
		return
	}
	db, err := x.signatureDB(ev, v.Data)
	if err != nil {
		x.finding(FindingDecodeError, ev, "%s: %v", v.Name, err)
		return
	}
	if *dbp != nil {
		x.f.Findings = append(x.f.Findings, Finding{Kind: FindingConflictingValues, Register: ev.Register,
			Events: append((*dbp).Events, ev.Index), Message: fmt.Sprintf("%s measured twice; the first is kept", v.Name)})
		return
	}
	*dbp = db
}

func (x *extractor) authority(ev *Event, v *UEFIVariable, bound bool) {
	a := Authority{Events: x.evs(ev.Index), Bound: bound, Variable: v.Name, VariableGUID: v.GUID, DBIndex: -1, Image: -1}
	// The data is one EFI_SIGNATURE_DATA: an owner GUID and a certificate
	// or hash. Shim's "Shim" and "SbatLevel" authorities carry the raw
	// certificate or text without an owner.
	data := v.Data
	if !isDER(data) && len(data) >= 16 {
		copy(a.Owner[:], data)
		data = data[16:]
	}
	if isDER(data) {
		a.Certificate = &Certificate{Owner: a.Owner, DER: data}
		if x.f.SecureBoot.DB != nil && v.GUID == ImageSecurityDatabaseGUID && v.Name == "db" {
			a.DBIndex = x.f.SecureBoot.DB.certificateIndex(data)
		}
	} else {
		a.Hash = data
	}
	x.f.SecureBoot.Authorities = append(x.f.SecureBoot.Authorities, a)
	x.pendingAuth = append(x.pendingAuth, len(x.f.SecureBoot.Authorities)-1)
}

func (x *extractor) image(ev *Event, im *ImageLoad) {
	bi := BootImage{Event: ev.Index, Register: ev.Register, Type: ev.Type.String(), Path: im.DevicePath, Authority: -1,
		Digests: make(map[string]Hex, len(ev.digests))}
	for _, d := range ev.digests {
		if d.Alg.Known() {
			bi.Digests[d.Alg.String()] = d.Value
		}
	}
	if len(x.pendingAuth) > 0 {
		ai := x.pendingAuth[len(x.pendingAuth)-1]
		bi.Authority = ai
		for _, p := range x.pendingAuth {
			x.f.SecureBoot.Authorities[p].Image = ev.Index
		}
		x.pendingAuth = x.pendingAuth[:0]
	}
	if ev.Type == EV_EFI_BOOT_SERVICES_APPLICATION {
		x.f.Boot.Applications = append(x.f.Boot.Applications, bi)
	} else {
		x.f.Boot.Drivers = append(x.f.Boot.Drivers, bi)
	}
}

func (x *extractor) finish() {
	f := x.f
	f.Firmware.Actions = nilIfEmpty(f.Firmware.Actions)
	f.Firmware.Blobs = nilIfEmpty(f.Firmware.Blobs)
	f.SecureBoot.Authorities = nilIfEmpty(f.SecureBoot.Authorities)
	f.Boot.Entries = nilIfEmpty(f.Boot.Entries)
	f.Boot.Applications = nilIfEmpty(f.Boot.Applications)
	f.Boot.Drivers = nilIfEmpty(f.Boot.Drivers)
	if f.Linux != nil {
		f.Linux.Commands = nilIfEmpty(f.Linux.Commands)
		f.Linux.Files = nilIfEmpty(f.Linux.Files)
	}
	if f.Windows != nil {
		f.Windows.Modules = nilIfEmpty(f.Windows.Modules)
	}
	if !x.reachedLoader {
		return
	}
	for r := range uint32(24) {
		if !firmwareRegister(x.kind, r) || !x.extended[r] || x.sep[r] >= 0 {
			continue
		}
		x.f.Findings = append(x.f.Findings, Finding{Kind: FindingMissingSeparator, Register: r, Events: []int{},
			Message: "the register has events but no separator"})
	}
	if x.f.Linux != nil {
		x.f.Linux.finish()
	}
}

// secureBootOrder is the order in which firmware measures the Secure Boot
// configuration (PC Client Platform Firmware Profile, section 3.3.4.8).
var secureBootOrder = []string{"SecureBoot", "PK", "KEK", "db", "dbx", "dbt", "dbr"}

// isDER reports whether b is exactly one DER SEQUENCE.
func isDER(b []byte) bool {
	if len(b) < 2 || b[0] != 0x30 {
		return false
	}
	n := int(b[1])
	hdr := 2
	if n&0x80 != 0 {
		k := n & 0x7F
		if k == 0 || k > 3 || len(b) < 2+k {
			return false
		}
		n = 0
		for _, c := range b[2 : 2+k] {
			n = n<<8 | int(c)
		}
		hdr += k
	}
	return hdr+n == len(b)
}

// signatureDB builds a SignatureDB from EFI_SIGNATURE_LISTs in two passes
// over the bytes (count, then fill), without the intermediate lists of
// ParseSignatureLists.
func (x *extractor) signatureDB(ev *Event, b []byte) (*SignatureDB, error) {
	nCerts, nHashes := 0, 0
	walk := func(fill *SignatureDB, certs []Certificate) error {
		for off := 0; off < len(b); {
			rest := b[off:]
			if len(rest) < 28 {
				return fmt.Errorf("measure: signature list at %d: %d bytes, the header needs 28", off, len(rest))
			}
			var typ GUID
			copy(typ[:], rest)
			listSize := binary.LittleEndian.Uint32(rest[16:])
			hdrSize := binary.LittleEndian.Uint32(rest[20:])
			sigSize := binary.LittleEndian.Uint32(rest[24:])
			if listSize < 28 || uint64(listSize) > uint64(len(rest)) {
				return fmt.Errorf("measure: signature list at %d: size %d, %d bytes remain", off, listSize, len(rest))
			}
			body := uint64(listSize) - 28
			if uint64(hdrSize) > body {
				return fmt.Errorf("measure: signature list at %d: header size %d exceeds the list", off, hdrSize)
			}
			body -= uint64(hdrSize)
			if sigSize < 16 || body%uint64(sigSize) != 0 {
				return fmt.Errorf("measure: signature list at %d: %d bytes of signatures of size %d", off, body, sigSize)
			}
			if size, ok := fixedSignatureSize[typ]; ok && int(sigSize) != 16+size {
				return fmt.Errorf("measure: signature list at %d: %s signatures of %d bytes, want %d", off, certTypeNames[typ], sigSize-16, size)
			}
			n := int(body / uint64(sigSize))
			off += int(listSize)
			if fill == nil {
				// The counting pass reads only the list headers.
				if typ == CertX509GUID {
					nCerts += n
				} else {
					nHashes += n
				}
				if nCerts+nHashes > MaxSignatures {
					return fmt.Errorf("measure: signature lists hold more than %d signatures", MaxSignatures)
				}
				continue
			}
			sigs := rest[28+int(hdrSize) : listSize]
			if typ == CertX509GUID {
				for p := 0; p < len(sigs); p += int(sigSize) {
					s := sigs[p : p+int(sigSize) : p+int(sigSize)]
					c := &certs[len(fill.Certificates)]
					copy(c.Owner[:], s)
					c.DER = s[16:]
					fill.Certificates = append(fill.Certificates, c)
				}
				continue
			}
			name := certTypeNames[typ]
			if name == "" {
				name = typ.String()
			}
			for p := 0; p < len(sigs); p += int(sigSize) {
				s := sigs[p : p+int(sigSize) : p+int(sigSize)]
				fill.Hashes = append(fill.Hashes, SignatureHash{Type: name, Hash: s[16:]})
				copy(fill.Hashes[len(fill.Hashes)-1].Owner[:], s)
			}
		}
		return nil
	}
	if err := walk(nil, nil); err != nil {
		return nil, err
	}
	dig, _ := ev.Digest(x.alg)
	db := &SignatureDB{Events: x.evs(ev.Index), Digest: dig, Bound: true, Size: len(b)}
	var certs []Certificate
	if nCerts > 0 {
		certs = make([]Certificate, nCerts)
		db.Certificates = make([]*Certificate, 0, nCerts)
	}
	if nHashes > 0 {
		db.Hashes = make([]SignatureHash, 0, nHashes)
	}
	if err := walk(db, certs); err != nil {
		return nil, err
	}
	return db, nil
}
