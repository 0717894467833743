package measure

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// UEFIVariable is a UEFI_VARIABLE_DATA structure (TCG PC Client Platform
// Firmware Profile, section 10.4.4), the data of EV_EFI_VARIABLE_DRIVER_CONFIG,
// EV_EFI_VARIABLE_BOOT(2) and EV_EFI_VARIABLE_AUTHORITY events. Data
// aliases the event data.
type UEFIVariable struct {
	GUID GUID   // VariableName: the vendor GUID
	Name string // UnicodeName
	Data []byte // VariableData
}

// ParseUEFIVariable decodes a UEFI_VARIABLE_DATA structure. The result
// aliases data. Nothing is verified: the caller decides whether data is
// vouched for.
func ParseUEFIVariable(data []byte) (*UEFIVariable, error) {
	v := new(UEFIVariable)
	if err := parseUEFIVariable(data, v); err != nil {
		return nil, err
	}
	return v, nil
}

func parseUEFIVariable(data []byte, v *UEFIVariable) error {
	if len(data) < 32 {
		return fmt.Errorf("measure: UEFI variable: %d bytes, the header needs 32", len(data))
	}
	nameLen := binary.LittleEndian.Uint64(data[16:])
	dataLen := binary.LittleEndian.Uint64(data[24:])
	rest := uint64(len(data) - 32)
	if nameLen > rest/2 {
		return fmt.Errorf("measure: UEFI variable: name of %d characters, %d bytes remain", nameLen, rest)
	}
	rest -= 2 * nameLen
	if dataLen != rest {
		return fmt.Errorf("measure: UEFI variable: data size %d, %d bytes remain", dataLen, rest)
	}
	nb := data[32 : 32+2*nameLen]
	name, ok := commonNames[string(nb)]
	if !ok {
		name, ok = decodeUCS2(nb)
	}
	if !ok {
		return fmt.Errorf("measure: UEFI variable: name is not UTF-16")
	}
	v.Name, v.Data = name, data[32+2*nameLen:]
	copy(v.GUID[:], data)
	return nil
}

func (v *UEFIVariable) decoded() {}

// String describes the variable: "8be4df61-...:SecureBoot (1 byte)".
func (v *UEFIVariable) String() string {
	name := v.Name
	if !isPrintable(name) {
		name = strconv.Quote(name)
	}
	s := fmt.Sprintf("%s %s, %d bytes", v.vendor(), name, len(v.Data))
	switch {
	case v.is(GlobalVariableGUID, "SecureBoot", "SetupMode", "AuditMode", "DeployedMode"):
		if b, err := v.Bool(); err == nil {
			s += fmt.Sprintf(" = %v", b)
		}
	case v.IsSignatureDatabase():
		if lists, err := ParseSignatureLists(v.Data); err == nil {
			certs, hashes := 0, 0
			for _, l := range lists {
				if l.Type == CertX509GUID {
					certs += len(l.Signatures)
				} else {
					hashes += len(l.Signatures)
				}
			}
			s += fmt.Sprintf(": %d certificates, %d hashes", certs, hashes)
		}
	case v.GUID == GlobalVariableGUID && v.Name == "BootOrder":
		if o, err := v.BootOrder(); err == nil {
			parts := make([]string, len(o))
			for i, n := range o {
				parts[i] = fmt.Sprintf("%04X", n)
			}
			s += ": " + strings.Join(parts, ",")
		}
	case v.GUID == GlobalVariableGUID && isBootNumber(v.Name):
		if lo, err := v.LoadOption(); err == nil {
			s += fmt.Sprintf(": %q %s", lo.Description, lo.FilePath)
		}
	case v.GUID == ShimLockGUID && v.Name == "SbatLevel":
		s += fmt.Sprintf(": %q", strings.TrimRight(string(v.Data), "\x00\n"))
	}
	return s
}

func (v *UEFIVariable) vendor() string {
	switch v.GUID {
	case GlobalVariableGUID:
		return "EFI_GLOBAL_VARIABLE"
	case ImageSecurityDatabaseGUID:
		return "EFI_IMAGE_SECURITY_DATABASE"
	case ShimLockGUID:
		return "SHIM_LOCK"
	}
	return v.GUID.String()
}

func (v *UEFIVariable) is(g GUID, names ...string) bool {
	if v.GUID != g {
		return false
	}
	for _, n := range names {
		if v.Name == n {
			return true
		}
	}
	return false
}

// IsSignatureDatabase reports whether the variable holds EFI_SIGNATURE_LISTs:
// PK, KEK, db, dbx, dbt, dbr, MokList, MokListX or MokListTrusted... except
// that shim measures MokListTrusted as a single byte.
func (v *UEFIVariable) IsSignatureDatabase() bool {
	return v.is(GlobalVariableGUID, "PK", "KEK") ||
		v.is(ImageSecurityDatabaseGUID, "db", "dbx", "dbt", "dbr") ||
		v.is(ShimLockGUID, "MokList", "MokListX")
}

// Bool decodes a one-byte boolean variable (SecureBoot, SetupMode,
// AuditMode, DeployedMode, MokListTrusted). A zero-length variable, which
// some firmware measures when the variable does not exist, is false.
func (v *UEFIVariable) Bool() (bool, error) {
	switch len(v.Data) {
	case 0:
		return false, nil
	case 1:
		if v.Data[0] > 1 {
			return false, fmt.Errorf("measure: %s: boolean value %d", v.Name, v.Data[0])
		}
		return v.Data[0] == 1, nil
	}
	return false, fmt.Errorf("measure: %s: a boolean has 1 byte, not %d", v.Name, len(v.Data))
}

// BootOrder decodes the BootOrder variable: a list of UINT16 option numbers.
func (v *UEFIVariable) BootOrder() ([]uint16, error) {
	if len(v.Data)%2 != 0 {
		return nil, fmt.Errorf("measure: BootOrder: odd size %d", len(v.Data))
	}
	out := make([]uint16, len(v.Data)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(v.Data[2*i:])
	}
	return out, nil
}

// LoadOption decodes a Boot#### variable (EFI_LOAD_OPTION, UEFI 2.10
// section 3.1.3).
func (v *UEFIVariable) LoadOption() (*LoadOption, error) {
	return ParseLoadOption(v.Data)
}

// LoadOption is an EFI_LOAD_OPTION. Its byte fields alias the event data.
type LoadOption struct {
	Attributes   uint32
	Description  string
	FilePath     DevicePath
	OptionalData []byte
}

// Load option attributes.
const (
	LoadOptionActive         = 0x00000001
	LoadOptionForceReconnect = 0x00000002
	LoadOptionHidden         = 0x00000008
	LoadOptionCategoryApp    = 0x00000100
)

// ParseLoadOption decodes an EFI_LOAD_OPTION.
func ParseLoadOption(b []byte) (*LoadOption, error) {
	lo := new(LoadOption)
	if err := parseLoadOption(b, lo, nil); err != nil {
		return nil, err
	}
	return lo, nil
}

// parseLoadOption is ParseLoadOption into lo, with the description carved
// from the arena a when it is not nil.
func parseLoadOption(b []byte, lo *LoadOption, a *decodeArena) error {
	if len(b) < 6 {
		return fmt.Errorf("measure: load option: %d bytes, the header needs 6", len(b))
	}
	*lo = LoadOption{Attributes: binary.LittleEndian.Uint32(b)}
	pathLen := int(binary.LittleEndian.Uint16(b[4:]))
	rest := b[6:]
	end := -1
	for i := 0; i+1 < len(rest); i += 2 {
		if rest[i] == 0 && rest[i+1] == 0 {
			end = i
			break
		}
	}
	if end < 0 {
		return fmt.Errorf("measure: load option: description is not terminated")
	}
	desc, ok := decodeUCS2In(rest[:end], a)
	if !ok {
		return fmt.Errorf("measure: load option: description is not UTF-16")
	}
	lo.Description = desc
	rest = rest[end+2:]
	if pathLen > len(rest) {
		return fmt.Errorf("measure: load option: device path of %d bytes, %d remain", pathLen, len(rest))
	}
	lo.FilePath = DevicePath(rest[:pathLen:pathLen])
	lo.OptionalData = rest[pathLen:]
	return nil
}

func isBootNumber(name string) bool {
	if len(name) != 8 || !strings.HasPrefix(name, "Boot") {
		return false
	}
	for _, c := range name[4:] {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// ImageLoad is a UEFI_IMAGE_LOAD_EVENT (PC Client Platform Firmware
// Profile, section 10.4.3): the data of EV_EFI_BOOT_SERVICES_APPLICATION,
// EV_EFI_BOOT_SERVICES_DRIVER and EV_EFI_RUNTIME_SERVICES_DRIVER events.
// The event digest is the Authenticode digest of the image; these fields
// describe where it was loaded from and are not covered by the digest.
type ImageLoad struct {
	LocationInMemory uint64
	LengthInMemory   uint64
	LinkTimeAddress  uint64
	DevicePath       DevicePath // aliases the event data
}

// ParseImageLoad decodes a UEFI_IMAGE_LOAD_EVENT.
func ParseImageLoad(b []byte) (*ImageLoad, error) {
	im := new(ImageLoad)
	if err := parseImageLoad(b, im); err != nil {
		return nil, err
	}
	return im, nil
}

func parseImageLoad(b []byte, im *ImageLoad) error {
	if len(b) < 32 {
		return fmt.Errorf("measure: image load event: %d bytes, the header needs 32", len(b))
	}
	n := binary.LittleEndian.Uint64(b[24:])
	if n > uint64(len(b)-32) {
		return fmt.Errorf("measure: image load event: device path of %d bytes, %d remain", n, len(b)-32)
	}
	*im = ImageLoad{
		LocationInMemory: binary.LittleEndian.Uint64(b),
		LengthInMemory:   binary.LittleEndian.Uint64(b[8:]),
		LinkTimeAddress:  binary.LittleEndian.Uint64(b[16:]),
		DevicePath:       DevicePath(b[32 : 32+n : 32+n]),
	}
	return nil
}

func (im *ImageLoad) decoded() {}

// String describes the image: its device path in UEFI text form.
func (im *ImageLoad) String() string {
	return fmt.Sprintf("image at 0x%x (%d bytes) from %s", im.LocationInMemory, im.LengthInMemory, im.DevicePath)
}

// GPT is a UEFI_GPT_DATA structure (PC Client Platform Firmware Profile,
// section 10.4.5): the GPT header and the partition entries that are in use.
type GPT struct {
	DiskGUID   GUID           `json:"disk_guid"`
	Partitions []GPTPartition `json:"partitions"`
}

// GPTPartition is one partition entry of a [GPT].
type GPTPartition struct {
	Type       GUID   `json:"type"`
	Unique     GUID   `json:"unique"`
	FirstLBA   uint64 `json:"first_lba"`
	LastLBA    uint64 `json:"last_lba"`
	Attributes uint64 `json:"attributes"`
	Name       string `json:"name"`
}

// ParseGPT decodes a UEFI_GPT_DATA structure.
func ParseGPT(b []byte) (*GPT, error) {
	const hdr = 92
	if len(b) < hdr+8 {
		return nil, fmt.Errorf("measure: GPT event: %d bytes, the header needs %d", len(b), hdr+8)
	}
	if string(b[:8]) != "EFI PART" {
		return nil, fmt.Errorf("measure: GPT event: signature %q, want \"EFI PART\"", b[:8])
	}
	entrySize := binary.LittleEndian.Uint32(b[84:])
	n := binary.LittleEndian.Uint64(b[hdr:])
	if entrySize < 128 || entrySize > 4096 {
		return nil, fmt.Errorf("measure: GPT event: partition entry size %d", entrySize)
	}
	rest := uint64(len(b) - hdr - 8)
	if n > rest/uint64(entrySize) || n*uint64(entrySize) != rest {
		return nil, fmt.Errorf("measure: GPT event: %d partitions of %d bytes, %d bytes remain", n, entrySize, rest)
	}
	g := &GPT{Partitions: make([]GPTPartition, n)}
	copy(g.DiskGUID[:], b[56:72])
	for i := range g.Partitions {
		e := b[hdr+8+i*int(entrySize):]
		p := &g.Partitions[i]
		copy(p.Type[:], e[0:16])
		copy(p.Unique[:], e[16:32])
		p.FirstLBA = binary.LittleEndian.Uint64(e[32:])
		p.LastLBA = binary.LittleEndian.Uint64(e[40:])
		p.Attributes = binary.LittleEndian.Uint64(e[48:])
		name, ok := decodeUCS2(e[56:128])
		if !ok {
			return nil, fmt.Errorf("measure: GPT event: partition %d: name is not UTF-16", i)
		}
		p.Name = name
	}
	return g, nil
}

func (g *GPT) decoded() {}

// String describes the disk and its partitions.
func (g *GPT) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "disk %s, %d partitions", g.DiskGUID, len(g.Partitions))
	for i, p := range g.Partitions {
		sep := ": "
		if i > 0 {
			sep = ", "
		}
		fmt.Fprintf(&b, "%s%q", sep, p.Name)
	}
	return b.String()
}

// FirmwareBlob is a UEFI_PLATFORM_FIRMWARE_BLOB or, with a description,
// UEFI_PLATFORM_FIRMWARE_BLOB2 (PC Client Platform Firmware Profile,
// section 10.4.7). It is also a form of EV_POST_CODE data.
type FirmwareBlob struct {
	Description string `json:"description,omitempty"` // BLOB2 only
	Base        uint64 `json:"base"`
	Length      uint64 `json:"length"`
}

func (f *FirmwareBlob) decoded() {}

// String describes the blob.
func (f *FirmwareBlob) String() string {
	s := fmt.Sprintf("firmware blob at 0x%x, %d bytes", f.Base, f.Length)
	if f.Description != "" {
		s = fmt.Sprintf("%q: %s", f.Description, s)
	}
	return s
}

func parseFirmwareBlob(b []byte) (*FirmwareBlob, error) {
	if len(b) != 16 {
		return nil, fmt.Errorf("measure: firmware blob: %d bytes, want 16", len(b))
	}
	return &FirmwareBlob{Base: binary.LittleEndian.Uint64(b), Length: binary.LittleEndian.Uint64(b[8:])}, nil
}

func parseFirmwareBlob2(b []byte) (*FirmwareBlob, error) {
	if len(b) < 1 || len(b) != 1+int(b[0])+16 {
		return nil, fmt.Errorf("measure: firmware blob2: %d bytes do not fit its description size", len(b))
	}
	n := int(b[0])
	f, _ := parseFirmwareBlob(b[1+n:])
	f.Description = strings.TrimRight(string(b[1:1+n]), "\x00")
	return f, nil
}

// HandoffTables is a UEFI_HANDOFF_TABLE_POINTERS or, with a description,
// UEFI_HANDOFF_TABLE_POINTERS2 structure (section 10.4.8): the EFI
// configuration tables measured, such as SMBIOS or ACPI.
type HandoffTables struct {
	Description string
	Tables      []ConfigurationTable
}

// ConfigurationTable is an EFI_CONFIGURATION_TABLE entry.
type ConfigurationTable struct {
	VendorGUID GUID   `json:"vendor_guid"`
	Address    uint64 `json:"address"`
}

func (h *HandoffTables) decoded() {}

// String lists the tables.
func (h *HandoffTables) String() string {
	var b strings.Builder
	if h.Description != "" {
		fmt.Fprintf(&b, "%q: ", h.Description)
	}
	fmt.Fprintf(&b, "%d tables", len(h.Tables))
	for _, t := range h.Tables {
		fmt.Fprintf(&b, " %s@0x%x", t.VendorGUID, t.Address)
	}
	return b.String()
}

func parseHandoffTables(b []byte, withDesc bool) (*HandoffTables, error) {
	h := &HandoffTables{}
	if withDesc {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return nil, fmt.Errorf("measure: handoff tables: description does not fit")
		}
		n := int(b[0])
		h.Description = strings.TrimRight(string(b[1:1+n]), "\x00")
		b = b[1+n:]
	}
	if len(b) < 8 {
		return nil, fmt.Errorf("measure: handoff tables: %d bytes, the count needs 8", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n != uint64(len(b)-8)/24 || (len(b)-8)%24 != 0 {
		return nil, fmt.Errorf("measure: handoff tables: %d tables in %d bytes", n, len(b)-8)
	}
	h.Tables = make([]ConfigurationTable, n)
	for i := range h.Tables {
		e := b[8+24*i:]
		copy(h.Tables[i].VendorGUID[:], e)
		h.Tables[i].Address = binary.LittleEndian.Uint64(e[16:])
	}
	return h, nil
}

// CRTMVersion is the data of EV_S_CRTM_VERSION: a UCS-2 string or a GUID
// (PC Client Platform Firmware Profile, section 10.4.1). Firmware that
// writes neither is kept raw.
type CRTMVersion struct {
	Version string // the UCS-2 string, when it is one
	GUID    *GUID  // the GUID, when it is one
	Raw     []byte // the data, when it is neither
}

func (c *CRTMVersion) decoded() {}

// String returns the version.
func (c *CRTMVersion) String() string {
	switch {
	case c.GUID != nil:
		return "S-CRTM version " + c.GUID.String()
	case c.Raw != nil:
		s, _ := printableASCII(prefixUntilNUL(c.Raw))
		return fmt.Sprintf("S-CRTM version (%d bytes, not UCS-2) %q", len(c.Raw), s)
	}
	return fmt.Sprintf("S-CRTM version %q", c.Version)
}

func prefixUntilNUL(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

func parseCRTMVersion(b []byte) *CRTMVersion {
	if len(b) >= 2 && len(b)%2 == 0 {
		end := len(b)
		for i := 0; i+1 < len(b); i += 2 {
			if b[i] == 0 && b[i+1] == 0 {
				end = i
				break
			}
		}
		if end < len(b) && allZero(b[end:]) {
			if s, ok := decodeUCS2(b[:end]); ok && isPrintable(s) {
				return &CRTMVersion{Version: s}
			}
		}
	}
	if len(b) == 16 {
		var g GUID
		copy(g[:], b)
		return &CRTMVersion{GUID: &g}
	}
	return &CRTMVersion{Raw: b}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func isPrintable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7F || r == 0xFFFD {
			return false
		}
	}
	return true
}

// Separator is the data of an EV_SEPARATOR event (PC Client Platform
// Firmware Profile, section 10.4.1): 0x00000000 in normal operation,
// 0x00000001 when firmware signals an error, or "WBCL" for the separators
// Windows writes in PCRs 12-14.
type Separator struct {
	Value uint32
	Error bool // the error value 0x00000001
	WBCL  bool
}

func (s *Separator) decoded() {}

// String describes the separator.
func (s *Separator) String() string {
	switch {
	case s.WBCL:
		return "separator \"WBCL\""
	case s.Error:
		return "separator: ERROR (0x00000001)"
	}
	return fmt.Sprintf("separator 0x%08x", s.Value)
}

func parseSeparator(b []byte, s *Separator) error {
	if len(b) != 4 {
		return fmt.Errorf("measure: separator: %d bytes, want 4", len(b))
	}
	v := binary.LittleEndian.Uint32(b)
	switch {
	case string(b) == "WBCL":
		*s = Separator{Value: v, WBCL: true}
	case v == 0 || v == 0xFFFFFFFF:
		*s = Separator{Value: v}
	case v == 1:
		*s = Separator{Value: v, Error: true}
	default:
		return fmt.Errorf("measure: separator value 0x%08x is neither normal nor error", v)
	}
	return nil
}

// Text is event data that is a string: EV_EFI_ACTION, EV_ACTION,
// EV_OMIT_BOOT_DEVICE_EVENTS, EV_POST_CODE, the strings GRUB, shim and
// systemd-stub log with EV_IPL, and the like.
type Text struct {
	Value string
	UTF16 bool // the data was UTF-16
}

func (t *Text) decoded() {}

// String returns the quoted text.
func (t *Text) String() string { return fmt.Sprintf("%q", t.Value) }

// Raw is event data this package does not decode, or that is opaque by
// definition (EV_COMPACT_HASH, EV_S_CRTM_CONTENTS blobs).
type Raw struct {
	Data []byte
}

func (r *Raw) decoded() {}

// String describes the data's size and first bytes.
func (r *Raw) String() string {
	if s, ok := printableASCII(r.Data); ok {
		return fmt.Sprintf("%q", s)
	}
	n := min(len(r.Data), 16)
	s := fmt.Sprintf("%d bytes %x", len(r.Data), r.Data[:n])
	if n < len(r.Data) {
		s += "..."
	}
	return s
}

// TaggedEvent is a TCG_PCClientTaggedEvent, the data of EV_EVENT_TAG. The
// Linux kernel tags its initrd (0x8F3B22EC) and load options (0x8F3B22ED)
// measurements in PCR 9; Windows logs its boot configuration as SIPA
// events, for which see [SIPAEvents].
type TaggedEvent struct {
	ID   uint32
	Data []byte
}

// Tagged event IDs the Linux EFI stub writes in PCR 9.
const (
	TagLinuxInitrd      uint32 = 0x8F3B22EC
	TagLinuxLoadOptions uint32 = 0x8F3B22ED
)

func (t *TaggedEvent) decoded() {}

// String describes the tag.
func (t *TaggedEvent) String() string {
	if s, ok := printableASCII(t.Data); ok {
		return fmt.Sprintf("tag 0x%08X %q", t.ID, s)
	}
	return fmt.Sprintf("tag 0x%08X, %d bytes", t.ID, len(t.Data))
}

func parseTaggedEvent(b []byte) (*TaggedEvent, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("measure: tagged event: %d bytes, the header needs 8", len(b))
	}
	n := binary.LittleEndian.Uint32(b[4:])
	if uint64(n) != uint64(len(b)-8) {
		return nil, fmt.Errorf("measure: tagged event: size %d, %d bytes remain", n, len(b)-8)
	}
	return &TaggedEvent{ID: binary.LittleEndian.Uint32(b), Data: b[8:]}, nil
}

// NoAction is an EV_NO_ACTION event: not extended into any register. Its
// data starts with a signature ("Spec ID Event03", "StartupLocality",
// "SP800-155 Event", "NvIndexInstance", ...).
type NoAction struct {
	Signature string
	Locality  int // StartupLocality only; -1 otherwise
	Data      []byte
}

func (n *NoAction) decoded() {}

// String describes the event.
func (n *NoAction) String() string {
	if n.Locality >= 0 {
		return fmt.Sprintf("StartupLocality %d", n.Locality)
	}
	if n.Signature != "" {
		return fmt.Sprintf("%q, %d bytes", n.Signature, len(n.Data))
	}
	return fmt.Sprintf("no action, %d bytes", len(n.Data))
}

func parseNoAction(b []byte) *NoAction {
	n := &NoAction{Locality: -1, Data: b}
	sig := prefixUntilNUL(b[:min(len(b), 16)])
	if s, ok := printableASCII(sig); ok {
		n.Signature = s
	}
	if n.Signature == "StartupLocality" && len(b) == 17 {
		n.Locality = int(b[16])
	}
	return n
}

// NonHostInfo is the EV_NONHOST_INFO event Google Compute Engine's
// firmware writes: "GCE NonHostInfo" followed by the confidential-computing
// technology of the VM.
type NonHostInfo struct {
	Signature  string
	Technology uint8 // 0 none, 1 AMD SEV, 2 AMD SEV-ES, 3 Intel TDX, 4 AMD SEV-SNP
}

func (n *NonHostInfo) decoded() {}

// String describes the event.
func (n *NonHostInfo) String() string {
	return fmt.Sprintf("%q: confidential computing %s", n.Signature, gceTechnology(n.Technology))
}

func gceTechnology(t uint8) string {
	switch t {
	case 0:
		return "none"
	case 1:
		return "amd-sev"
	case 2:
		return "amd-sev-es"
	case 3:
		return "intel-tdx"
	case 4:
		return "amd-sev-snp"
	}
	return fmt.Sprintf("unknown(%d)", t)
}
