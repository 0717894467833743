package measure

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// SIPAType is the type of a Windows measured-boot event (a SIPA event,
// from the Windows SDK's wbcl.h). Windows logs its boot configuration in
// PCRs 12-14 as EV_EVENT_TAG events whose data is a tree of SIPA events:
// each is a type, a size and a payload; containers hold further events.
type SIPAType uint32

// Flags and classes of SIPA types.
const (
	SIPANonMeasured SIPAType = 0x80000000
	SIPAAggregation SIPAType = 0x40000000
	sipaClassMask   SIPAType = 0x000F0000
	sipaContainer   SIPAType = 0x00010000
)

// SIPA event types (wbcl.h).
const (
	SIPATrustBoundary                   SIPAType = 0x40010001
	SIPAELAMAggregation                 SIPAType = 0x40010002
	SIPALoadedModuleAggregation         SIPAType = 0x40010003
	SIPATrustPointAggregation           SIPAType = 0xC0010004
	SIPAKSRAggregation                  SIPAType = 0x40010005
	SIPAKSRSignedMeasurementAggregation SIPAType = 0x40010006

	SIPAInformation       SIPAType = 0x00020001
	SIPABootCounter       SIPAType = 0x00020002
	SIPATransferControl   SIPAType = 0x00020003
	SIPAApplicationReturn SIPAType = 0x00020004
	SIPABitLockerUnlock   SIPAType = 0x00020005
	SIPAEventCounter      SIPAType = 0x00020006
	SIPACounterID         SIPAType = 0x00020007
	SIPAMORBitNotCancel   SIPAType = 0x00020008
	SIPAApplicationSVN    SIPAType = 0x00020009
	SIPASVNChainStatus    SIPAType = 0x0002000A
	SIPAMORBitAPIStatus   SIPAType = 0x0002000B

	SIPAFirmwareFailure SIPAType = 0x00030001
	SIPATPMFailure      SIPAType = 0x80030002
	SIPAInternalFailure SIPAType = 0x00030003
	SIPAKSRFailure      SIPAType = 0x80030004

	SIPABootDebugging      SIPAType = 0x00040001
	SIPABootRevocationList SIPAType = 0x00040002

	SIPAOSKernelDebug               SIPAType = 0x00050001
	SIPACodeIntegrity               SIPAType = 0x00050002
	SIPATestSigning                 SIPAType = 0x00050003
	SIPADataExecutionPrevention     SIPAType = 0x00050004
	SIPASafeMode                    SIPAType = 0x00050005
	SIPAWinPE                       SIPAType = 0x00050006
	SIPAPhysicalAddressExtension    SIPAType = 0x00050007
	SIPAOSDevice                    SIPAType = 0x00050008
	SIPASystemRoot                  SIPAType = 0x00050009
	SIPAHypervisorLaunchType        SIPAType = 0x0005000A
	SIPAHypervisorPath              SIPAType = 0x0005000B
	SIPAHypervisorIOMMUPolicy       SIPAType = 0x0005000C
	SIPAHypervisorDebug             SIPAType = 0x0005000D
	SIPADriverLoadPolicy            SIPAType = 0x0005000E
	SIPASIPolicy                    SIPAType = 0x0005000F
	SIPAHypervisorMMIONXPolicy      SIPAType = 0x00050010
	SIPAHypervisorMSRFilterPolicy   SIPAType = 0x00050011
	SIPAVSMLaunchType               SIPAType = 0x00050012
	SIPAOSRevocationList            SIPAType = 0x00050013
	SIPASMTStatus                   SIPAType = 0x00050014
	SIPAVSMIDKInfo                  SIPAType = 0x00050020
	SIPAFlightSigning               SIPAType = 0x00050021
	SIPAPagefileEncryptionEnabled   SIPAType = 0x00050022
	SIPAVSMIDKSInfo                 SIPAType = 0x00050023
	SIPAHibernationDisabled         SIPAType = 0x00050024
	SIPADumpsDisabled               SIPAType = 0x00050025
	SIPADumpEncryptionEnabled       SIPAType = 0x00050026
	SIPADumpEncryptionKeyDigest     SIPAType = 0x00050027
	SIPALSAISOConfig                SIPAType = 0x00050028
	SIPASBCPInfo                    SIPAType = 0x00050029
	SIPAHypervisorBootDMAProtection SIPAType = 0x00050030
	SIPASIPolicySigner              SIPAType = 0x00050031
	SIPASIPolicyUpdateSigner        SIPAType = 0x00050032
	SIPAVSMSealedSIPolicy           SIPAType = 0x0005003A

	SIPANoAuthority     SIPAType = 0x00060001
	SIPAAuthorityPubKey SIPAType = 0x00060002

	SIPAFilePath                SIPAType = 0x00070001
	SIPAImageSize               SIPAType = 0x00070002
	SIPAHashAlgorithmID         SIPAType = 0x00070003
	SIPAAuthenticodeHash        SIPAType = 0x00070004
	SIPAAuthorityIssuer         SIPAType = 0x00070005
	SIPAAuthoritySerial         SIPAType = 0x00070006
	SIPAImageBase               SIPAType = 0x00070007
	SIPAAuthorityPublisher      SIPAType = 0x00070008
	SIPAAuthoritySHA1Thumbprint SIPAType = 0x00070009
	SIPAImageValidated          SIPAType = 0x0007000A
	SIPAModuleSVN               SIPAType = 0x0007000B
	SIPAModuleHSP               SIPAType = 0x0007000C

	SIPAQuote          SIPAType = 0x80080001
	SIPAQuoteSignature SIPAType = 0x80080002
	SIPAAIKID          SIPAType = 0x80080003
	SIPAAIKPubDigest   SIPAType = 0x80080004

	SIPAELAMKeyname       SIPAType = 0x00090001
	SIPAELAMConfiguration SIPAType = 0x00090002
	SIPAELAMPolicy        SIPAType = 0x00090003
	SIPAELAMMeasured      SIPAType = 0x00090004

	SIPAVBSVSMRequired                SIPAType = 0x000A0001
	SIPAVBSSecureBootRequired         SIPAType = 0x000A0002
	SIPAVBSIOMMURequired              SIPAType = 0x000A0003
	SIPAVBSMMIONXRequired             SIPAType = 0x000A0004
	SIPAVBSMSRFilteringRequired       SIPAType = 0x000A0005
	SIPAVBSMandatoryEnforcement       SIPAType = 0x000A0006
	SIPAVBSHVCIPolicy                 SIPAType = 0x000A0007
	SIPAVBSMicrosoftBootChainRequired SIPAType = 0x000A0008
	SIPAVBSDumpUsesAMEROOT            SIPAType = 0x000A0009
	SIPAKSRSignature                  SIPAType = 0x000B0001
)

var sipaNames = map[SIPAType]string{
	SIPATrustBoundary: "TrustBoundary", SIPAELAMAggregation: "ELAMAggregation",
	SIPALoadedModuleAggregation: "LoadedModuleAggregation", SIPATrustPointAggregation: "TrustPointAggregation",
	SIPAKSRAggregation: "KSRAggregation", SIPAKSRSignedMeasurementAggregation: "KSRSignedMeasurementAggregation",
	SIPAInformation: "Information", SIPABootCounter: "BootCounter", SIPATransferControl: "TransferControl",
	SIPAApplicationReturn: "ApplicationReturn", SIPABitLockerUnlock: "BitLockerUnlock",
	SIPAEventCounter: "EventCounter", SIPACounterID: "CounterID", SIPAMORBitNotCancel: "MORBitNotCancelable",
	SIPAApplicationSVN: "ApplicationSVN", SIPASVNChainStatus: "SVNChainStatus", SIPAMORBitAPIStatus: "MORBitAPIStatus",
	SIPAFirmwareFailure: "FirmwareFailure", SIPATPMFailure: "TPMFailure", SIPAInternalFailure: "InternalFailure",
	SIPAKSRFailure: "KSRFailure", SIPABootDebugging: "BootDebugging", SIPABootRevocationList: "BootRevocationList",
	SIPAOSKernelDebug: "OSKernelDebug", SIPACodeIntegrity: "CodeIntegrity", SIPATestSigning: "TestSigning",
	SIPADataExecutionPrevention: "DataExecutionPrevention", SIPASafeMode: "SafeMode", SIPAWinPE: "WinPE",
	SIPAPhysicalAddressExtension: "PhysicalAddressExtension", SIPAOSDevice: "OSDevice", SIPASystemRoot: "SystemRoot",
	SIPAHypervisorLaunchType: "HypervisorLaunchType", SIPAHypervisorPath: "HypervisorPath",
	SIPAHypervisorIOMMUPolicy: "HypervisorIOMMUPolicy", SIPAHypervisorDebug: "HypervisorDebug",
	SIPADriverLoadPolicy: "DriverLoadPolicy", SIPASIPolicy: "SIPolicy", SIPAHypervisorMMIONXPolicy: "HypervisorMMIONXPolicy",
	SIPAHypervisorMSRFilterPolicy: "HypervisorMSRFilterPolicy", SIPAVSMLaunchType: "VSMLaunchType",
	SIPAOSRevocationList: "OSRevocationList", SIPAVSMIDKInfo: "VSMIDKInfo",
	SIPAFlightSigning: "FlightSigning", SIPAPagefileEncryptionEnabled: "PagefileEncryptionEnabled",
	SIPAVSMIDKSInfo: "VSMIDKSInfo", SIPAHibernationDisabled: "HibernationDisabled", SIPADumpsDisabled: "DumpsDisabled",
	SIPADumpEncryptionEnabled: "DumpEncryptionEnabled", SIPADumpEncryptionKeyDigest: "DumpEncryptionKeyDigest",
	SIPALSAISOConfig: "LSAISOConfig", SIPASMTStatus: "SMTStatus", SIPASBCPInfo: "SBCPInfo",
	SIPAHypervisorBootDMAProtection: "HypervisorBootDMAProtection", SIPASIPolicySigner: "SIPolicySigner",
	SIPASIPolicyUpdateSigner: "SIPolicyUpdateSigner", SIPAVSMSealedSIPolicy: "VSMSealedSIPolicy",
	SIPAModuleHSP: "ModuleHSP", SIPAVBSDumpUsesAMEROOT: "VBSDumpUsesAMEROOT", SIPANoAuthority: "NoAuthority", SIPAAuthorityPubKey: "AuthorityPubKey",
	SIPAFilePath: "FilePath", SIPAImageSize: "ImageSize", SIPAHashAlgorithmID: "HashAlgorithmID",
	SIPAAuthenticodeHash: "AuthenticodeHash", SIPAAuthorityIssuer: "AuthorityIssuer", SIPAAuthoritySerial: "AuthoritySerial",
	SIPAImageBase: "ImageBase", SIPAAuthorityPublisher: "AuthorityPublisher",
	SIPAAuthoritySHA1Thumbprint: "AuthoritySHA1Thumbprint", SIPAImageValidated: "ImageValidated",
	SIPAModuleSVN: "ModuleSVN", SIPAQuote: "Quote", SIPAQuoteSignature: "QuoteSignature", SIPAAIKID: "AIKID",
	SIPAAIKPubDigest: "AIKPubDigest", SIPAELAMKeyname: "ELAMKeyname", SIPAELAMConfiguration: "ELAMConfiguration",
	SIPAELAMPolicy: "ELAMPolicy", SIPAELAMMeasured: "ELAMMeasured", SIPAVBSVSMRequired: "VBSVSMRequired",
	SIPAVBSSecureBootRequired: "VBSSecureBootRequired", SIPAVBSIOMMURequired: "VBSIOMMURequired",
	SIPAVBSMMIONXRequired: "VBSMMIONXRequired", SIPAVBSMSRFilteringRequired: "VBSMSRFilteringRequired",
	SIPAVBSMandatoryEnforcement: "VBSMandatoryEnforcement", SIPAVBSHVCIPolicy: "VBSHVCIPolicy",
	SIPAVBSMicrosoftBootChainRequired: "VBSMicrosoftBootChainRequired",
	SIPAKSRSignature:                  "KSRSignature",
}

// String returns the wbcl.h name without its SIPAEVENT_ prefix, in
// camel case ("OSKernelDebug"), or "SIPA(0xNNNNNNNN)".
func (t SIPAType) String() string {
	if s, ok := sipaNames[t]; ok {
		return s
	}
	return fmt.Sprintf("SIPA(0x%08X)", uint32(t))
}

// MarshalText encodes the type name.
func (t SIPAType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// IsContainer reports whether events of this type hold further events.
func (t SIPAType) IsContainer() bool { return t&sipaClassMask == sipaContainer }

// SIPAEvent is one Windows measured-boot event. Data aliases the log; for a
// container, Children holds its decoded events.
type SIPAEvent struct {
	Type     SIPAType
	Data     []byte
	Children []SIPAEvent
}

// SIPAEvents is the decoded data of a Windows EV_EVENT_TAG event.
type SIPAEvents struct {
	Events []SIPAEvent
	raw    []byte
}

func (s *SIPAEvents) decoded() {}

// String describes the tree in one line.
func (s *SIPAEvents) String() string {
	var b strings.Builder
	evs := s.Events
	if evs == nil && s.raw != nil {
		evs, _ = ParseSIPA(s.raw)
	}
	writeSIPA(&b, evs)
	return b.String()
}

func writeSIPA(b *strings.Builder, evs []SIPAEvent) {
	for i, e := range evs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.Type.String())
		if e.Type.IsContainer() {
			b.WriteString("{")
			writeSIPA(b, e.Children)
			b.WriteString("}")
			continue
		}
		if v := e.Describe(); v != "" {
			b.WriteString("=")
			b.WriteString(v)
		}
	}
}

// maxSIPADepth bounds the nesting of SIPA containers.
const maxSIPADepth = 8

// ParseSIPA decodes a sequence of SIPA events, descending into containers.
// The result aliases b.
func ParseSIPA(b []byte) ([]SIPAEvent, error) {
	return parseSIPA(b, 0, 0)
}

func parseSIPA(b []byte, depth, base int) ([]SIPAEvent, error) {
	if depth > maxSIPADepth {
		return nil, fmt.Errorf("measure: SIPA: containers nested deeper than %d", maxSIPADepth)
	}
	// Count first, so that the slice is allocated once.
	n := 0
	for off := 0; off < len(b); n++ {
		if len(b)-off < 8 {
			return nil, fmt.Errorf("measure: SIPA: event at %d: %d bytes, the header needs 8", base+off, len(b)-off)
		}
		size := binary.LittleEndian.Uint32(b[off+4:])
		if uint64(size) > uint64(len(b)-off-8) {
			return nil, fmt.Errorf("measure: SIPA: event at %d: size %d, %d bytes remain", base+off, size, len(b)-off-8)
		}
		off += 8 + int(size)
	}
	out := make([]SIPAEvent, 0, n)
	for off := 0; off < len(b); {
		t := SIPAType(binary.LittleEndian.Uint32(b[off:]))
		size := int(binary.LittleEndian.Uint32(b[off+4:]))
		e := SIPAEvent{Type: t, Data: b[off+8 : off+8+size : off+8+size]}
		if t.IsContainer() {
			c, err := parseSIPA(e.Data, depth+1, base+off+8)
			if err != nil {
				return nil, err
			}
			e.Children = c
		}
		out = append(out, e)
		off += 8 + size
	}
	return out, nil
}

// checkSIPA validates a SIPA tree without building it.
func checkSIPA(b []byte, depth int) error {
	if depth > maxSIPADepth {
		return fmt.Errorf("measure: SIPA: containers nested deeper than %d", maxSIPADepth)
	}
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			return fmt.Errorf("measure: SIPA: event at %d: %d bytes, the header needs 8", off, len(b)-off)
		}
		t := SIPAType(binary.LittleEndian.Uint32(b[off:]))
		size := binary.LittleEndian.Uint32(b[off+4:])
		if uint64(size) > uint64(len(b)-off-8) {
			return fmt.Errorf("measure: SIPA: event at %d: size %d, %d bytes remain", off, size, len(b)-off-8)
		}
		if t.IsContainer() {
			if err := checkSIPA(b[off+8:off+8+int(size)], depth+1); err != nil {
				return err
			}
		}
		off += 8 + int(size)
	}
	return nil
}

// checkCountSIPA is checkSIPA that also counts the events of type t, as
// countSIPA does (not those inside an event of type t), in the same pass.
func checkCountSIPA(b []byte, t SIPAType, depth int, inT bool) (int, error) {
	if depth > maxSIPADepth {
		return 0, fmt.Errorf("measure: SIPA: containers nested deeper than %d", maxSIPADepth)
	}
	n := 0
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			return 0, fmt.Errorf("measure: SIPA: event at %d: %d bytes, the header needs 8", off, len(b)-off)
		}
		typ := SIPAType(binary.LittleEndian.Uint32(b[off:]))
		size := binary.LittleEndian.Uint32(b[off+4:])
		if uint64(size) > uint64(len(b)-off-8) {
			return 0, fmt.Errorf("measure: SIPA: event at %d: size %d, %d bytes remain", off, size, len(b)-off-8)
		}
		if typ == t && !inT {
			n++
		}
		if typ.IsContainer() {
			c, err := checkCountSIPA(b[off+8:off+8+int(size)], t, depth+1, inT || typ == t)
			if err != nil {
				return 0, err
			}
			n += c
		}
		off += 8 + int(size)
	}
	return n, nil
}

// sipaIter iterates over one level of a tree that checkSIPA accepted,
// without allocating. Events' Children are not filled in.
type sipaIter struct {
	b   []byte
	off int
}

func (it *sipaIter) next() (SIPAEvent, bool) {
	t, d, ok := it.nextRaw()
	return SIPAEvent{Type: t, Data: d}, ok
}

// nextRaw is next without building a SIPAEvent.
func (it *sipaIter) nextRaw() (SIPAType, []byte, bool) {
	b, off := it.b, it.off
	if off+8 > len(b) {
		return 0, nil, false
	}
	size := int(binary.LittleEndian.Uint32(b[off+4:]))
	if size > len(b)-off-8 {
		return 0, nil, false
	}
	it.off = off + 8 + size
	return SIPAType(binary.LittleEndian.Uint32(b[off:])), b[off+8 : off+8+size : off+8+size], true
}

// countSIPA counts the events of type t in a SIPA tree, as a capacity
// hint: it stops at malformed bytes and at the nesting limit.
func countSIPA(b []byte, t SIPAType, depth int) int {
	if depth > maxSIPADepth {
		return 0
	}
	n := 0
	it := sipaIter{b: b}
	for typ, d, ok := it.nextRaw(); ok; typ, d, ok = it.nextRaw() {
		if typ == t {
			n++
		}
		if typ.IsContainer() && typ != t {
			n += countSIPA(d, t, depth+1)
		}
	}
	return n
}

// Uint decodes the payload as a little-endian unsigned integer of 1, 2, 4
// or 8 bytes.
func (e *SIPAEvent) Uint() (uint64, error) {
	switch len(e.Data) {
	case 1:
		return uint64(e.Data[0]), nil
	case 2:
		return uint64(binary.LittleEndian.Uint16(e.Data)), nil
	case 4:
		return uint64(binary.LittleEndian.Uint32(e.Data)), nil
	case 8:
		return binary.LittleEndian.Uint64(e.Data), nil
	}
	return 0, fmt.Errorf("measure: SIPA %v: a %d-byte payload is not an integer", e.Type, len(e.Data))
}

// Bool decodes a boolean payload (one byte, or an integer) as non-zero.
func (e *SIPAEvent) Bool() (bool, error) {
	v, err := e.Uint()
	return v != 0, err
}

// Text decodes a UTF-16 string payload (file paths, authority names).
func (e *SIPAEvent) Text() (string, error) {
	s, ok := decodeUCS2(e.Data)
	if !ok {
		return "", fmt.Errorf("measure: SIPA %v: payload is not UTF-16", e.Type)
	}
	return s, nil
}

// Describe returns the payload in a readable form: a number, a string, a
// digest in hex or a size.
func (e *SIPAEvent) Describe() string {
	switch e.Type {
	case SIPAFilePath, SIPAAuthorityIssuer, SIPAAuthorityPublisher, SIPASystemRoot, SIPAHypervisorPath, SIPAELAMKeyname:
		if s, err := e.Text(); err == nil {
			return fmt.Sprintf("%q", s)
		}
	case SIPAAuthenticodeHash, SIPAAuthoritySerial, SIPAAuthoritySHA1Thumbprint, SIPADumpEncryptionKeyDigest, SIPAAIKPubDigest:
		return fmt.Sprintf("%x", e.Data)
	case SIPASIPolicy:
		if p, err := ParseSIPolicy(e.Data); err == nil {
			return fmt.Sprintf("%q v%d %v:%x", p.Name, p.Version, p.HashAlg, p.Digest)
		}
	}
	if v, err := e.Uint(); err == nil {
		return fmt.Sprintf("%d", v)
	}
	return fmt.Sprintf("(%d bytes)", len(e.Data))
}

// SIPolicy is the payload of a SIPA SIPolicy event
// (SIPAEVENT_SI_POLICY_PAYLOAD): a code-integrity policy's name, version
// and digest.
type SIPolicy struct {
	Name    string  `json:"name"`
	Version uint64  `json:"version"`
	HashAlg HashAlg `json:"-"`
	Alg     string  `json:"hash_alg"` // HashAlg's name
	Digest  Hex     `json:"digest"`
}

// ParseSIPolicy decodes a SIPAEVENT_SI_POLICY_PAYLOAD.
func ParseSIPolicy(b []byte) (*SIPolicy, error) {
	if len(b) < 16 {
		return nil, fmt.Errorf("measure: SI policy: %d bytes, the header needs 16", len(b))
	}
	nameLen := int(binary.LittleEndian.Uint16(b[8:]))
	digLen := binary.LittleEndian.Uint32(b[12:])
	if uint64(nameLen)+uint64(digLen) != uint64(len(b)-16) {
		return nil, fmt.Errorf("measure: SI policy: name %d and digest %d bytes, %d remain", nameLen, digLen, len(b)-16)
	}
	name, ok := decodeUCS2(b[16 : 16+nameLen])
	if !ok {
		return nil, fmt.Errorf("measure: SI policy: name is not UTF-16")
	}
	return &SIPolicy{
		Name:    name,
		Version: binary.LittleEndian.Uint64(b),
		HashAlg: HashAlg(binary.LittleEndian.Uint16(b[10:])),
		Alg:     HashAlg(binary.LittleEndian.Uint16(b[10:])).String(),
		Digest:  Hex(b[16+nameLen:]),
	}, nil
}

// RevocationList is the payload of the SIPA BootRevocationList and
// OSRevocationList events (SIPAEVENT_REVOCATION_LIST_PAYLOAD).
type RevocationList struct {
	CreationTime int64   `json:"creation_time"` // a Windows FILETIME
	HashAlg      HashAlg `json:"-"`
	Alg          string  `json:"hash_alg"` // HashAlg's name
	Digest       Hex     `json:"digest"`
}

// ParseRevocationList decodes a SIPAEVENT_REVOCATION_LIST_PAYLOAD.
func ParseRevocationList(b []byte) (*RevocationList, error) {
	if len(b) < 14 {
		return nil, fmt.Errorf("measure: revocation list: %d bytes, the header needs 14", len(b))
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if uint64(n) != uint64(len(b)-14) {
		return nil, fmt.Errorf("measure: revocation list: digest of %d bytes, %d remain", n, len(b)-14)
	}
	return &RevocationList{
		CreationTime: int64(binary.LittleEndian.Uint64(b)),
		HashAlg:      HashAlg(binary.LittleEndian.Uint16(b[12:])),
		Alg:          HashAlg(binary.LittleEndian.Uint16(b[12:])).String(),
		Digest:       Hex(b[14:]),
	}, nil
}

// VSMIdentityKey is the payload of the SIPA VSMIDKInfo and VSMIDKSInfo
// events (SIPAEVENT_VSM_IDK_INFO_PAYLOAD): the public half of the key that
// VSM (the secure kernel) uses to decrypt (IDK) or sign (IDKS) on behalf of
// the host, which a guardian service binds its answers to.
type VSMIdentityKey struct {
	KeyAlgID     uint32 `json:"key_alg_id"` // 1: RSA
	KeyBitLength uint32 `json:"key_bits"`
	Exponent     Hex    `json:"exponent"` // big-endian
	Modulus      Hex    `json:"modulus"`  // big-endian
}

// ParseVSMIdentityKey decodes a SIPAEVENT_VSM_IDK_INFO_PAYLOAD with an RSA key.
func ParseVSMIdentityKey(b []byte) (*VSMIdentityKey, error) {
	if len(b) < 16 {
		return nil, fmt.Errorf("measure: VSM identity key: %d bytes, the header needs 16", len(b))
	}
	k := &VSMIdentityKey{KeyAlgID: binary.LittleEndian.Uint32(b), KeyBitLength: binary.LittleEndian.Uint32(b[4:])}
	if k.KeyAlgID != 1 {
		return nil, fmt.Errorf("measure: VSM identity key: algorithm %d is not RSA", k.KeyAlgID)
	}
	expLen := binary.LittleEndian.Uint32(b[8:])
	modLen := binary.LittleEndian.Uint32(b[12:])
	if uint64(expLen)+uint64(modLen) != uint64(len(b)-16) {
		return nil, fmt.Errorf("measure: VSM identity key: exponent %d and modulus %d bytes, %d remain", expLen, modLen, len(b)-16)
	}
	k.Exponent = Hex(b[16 : 16+expLen])
	k.Modulus = Hex(b[16+expLen:])
	return k, nil
}

// SBCPInfo is the payload of the SIPA SBCPInfo event
// (SIPAEVENT_SBCP_INFO_PAYLOAD_V1): the digest of the active Secure Boot
// Custom Policy.
type SBCPInfo struct {
	PayloadVersion uint32  `json:"payload_version"`
	HashAlg        HashAlg `json:"-"`
	Alg            string  `json:"hash_alg"` // HashAlg's name
	Digest         Hex     `json:"digest"`
	Options        uint32  `json:"options"`
	SignersCount   uint32  `json:"signers_count"`
}

// ParseSBCPInfo decodes a SIPAEVENT_SBCP_INFO_PAYLOAD_V1.
func ParseSBCPInfo(b []byte) (*SBCPInfo, error) {
	if len(b) < 20 {
		return nil, fmt.Errorf("measure: SBCP info: %d bytes, the header needs 20", len(b))
	}
	off := binary.LittleEndian.Uint32(b[4:])
	n := binary.LittleEndian.Uint16(b[10:])
	if off < 20 || uint64(off)+uint64(n) > uint64(len(b)) {
		return nil, fmt.Errorf("measure: SBCP info: digest of %d bytes at %d, %d bytes in all", n, off, len(b))
	}
	return &SBCPInfo{
		PayloadVersion: binary.LittleEndian.Uint32(b),
		HashAlg:        HashAlg(binary.LittleEndian.Uint16(b[8:])),
		Alg:            HashAlg(binary.LittleEndian.Uint16(b[8:])).String(),
		Digest:         Hex(b[off : off+uint32(n)]),
		Options:        binary.LittleEndian.Uint32(b[12:]),
		SignersCount:   binary.LittleEndian.Uint32(b[16:]),
	}, nil
}
