package measure

import (
	"fmt"
	"slices"
)

// WindowsFacts are the Windows boot configuration, from the SIPA events
// Windows boot manager, winload and the kernel measure into PCRs 12-14
// before their separators. Boolean settings that weaken the host (a
// debugger, test signing) are true if any event says so; settings that
// strengthen it (code integrity, DEP, the VBS requirements, disabled
// dumps) are false if any event says so. Every value names its events.
type WindowsFacts struct {
	BootDebugging *Fact[bool] `json:"boot_debugging,omitempty"`
	KernelDebug   *Fact[bool] `json:"kernel_debug,omitempty"`
	TestSigning   *Fact[bool] `json:"test_signing,omitempty"`
	FlightSigning *Fact[bool] `json:"flight_signing,omitempty"`
	CodeIntegrity *Fact[bool] `json:"code_integrity,omitempty"`
	DEP           *Fact[bool] `json:"dep,omitempty"`
	SafeMode      *Fact[bool] `json:"safe_mode,omitempty"`
	WinPE         *Fact[bool] `json:"winpe,omitempty"`

	HypervisorLaunchType      *Fact[uint64] `json:"hypervisor_launch_type,omitempty"`
	HypervisorPath            *Fact[string] `json:"hypervisor_path,omitempty"`
	HypervisorDebug           *Fact[bool]   `json:"hypervisor_debug,omitempty"`
	HypervisorIOMMUPolicy     *Fact[uint64] `json:"hypervisor_iommu_policy,omitempty"`
	HypervisorMMIONXPolicy    *Fact[uint64] `json:"hypervisor_mmio_nx_policy,omitempty"`
	HypervisorMSRFilterPolicy *Fact[uint64] `json:"hypervisor_msr_filter_policy,omitempty"`
	VSMLaunchType             *Fact[uint64] `json:"vsm_launch_type,omitempty"`
	// HypervisorBootDMAProtection: boot DMA protection (the IOMMU during
	// boot) is on.
	HypervisorBootDMAProtection *Fact[bool] `json:"hypervisor_boot_dma_protection,omitempty"`
	// SMTStatus is the simultaneous multithreading status the loader measured.
	SMTStatus *Fact[uint64] `json:"smt_status,omitempty"`
	// SecureBootCustomPolicy is the active Secure Boot Custom Policy.
	SecureBootCustomPolicy *Fact[SBCPInfo] `json:"secure_boot_custom_policy,omitempty"`
	VBS                    VBSFacts        `json:"vbs"`

	// SIPolicies are the code-integrity (SI) policies, with their digests.
	SIPolicies         []Fact[SIPolicy]      `json:"si_policies,omitempty"`
	DriverLoadPolicy   *Fact[uint64]         `json:"driver_load_policy,omitempty"`
	BootRevocationList *Fact[RevocationList] `json:"boot_revocation_list,omitempty"`
	OSRevocationList   *Fact[RevocationList] `json:"os_revocation_list,omitempty"`
	// VSMIdentityKey and VSMSigningKey are the public keys of VSM's
	// identity decryption key (IDK) and identity signing key (IDKS).
	VSMIdentityKey *Fact[VSMIdentityKey] `json:"vsm_identity_key,omitempty"`
	VSMSigningKey  *Fact[VSMIdentityKey] `json:"vsm_signing_key,omitempty"`
	LSAISOConfig   *Fact[uint64]         `json:"lsaiso_config,omitempty"`

	// BitLockerUnlocks are the FVEB_UNLOCK_FLAG_* values of each unlock.
	BitLockerUnlocks []Fact[uint64] `json:"bitlocker_unlocks,omitempty"`
	BootCounter      *Fact[uint64]  `json:"boot_counter,omitempty"`
	// TransferControl is the last boot application's transfer-control
	// value; FullBoot is true when boot manager launched winload (a full
	// boot, 1) rather than winresume (a resume from hibernation).
	TransferControl *Fact[uint64]  `json:"transfer_control,omitempty"`
	FullBoot        *Fact[bool]    `json:"full_boot,omitempty"`
	ApplicationSVNs []Fact[uint64] `json:"application_svns,omitempty"`

	HibernationDisabled       *Fact[bool] `json:"hibernation_disabled,omitempty"`
	DumpsDisabled             *Fact[bool] `json:"dumps_disabled,omitempty"`
	DumpEncryptionEnabled     *Fact[bool] `json:"dump_encryption_enabled,omitempty"`
	DumpEncryptionKeyDigest   *Fact[Hex]  `json:"dump_encryption_key_digest,omitempty"`
	PagefileEncryptionEnabled *Fact[bool] `json:"pagefile_encryption_enabled,omitempty"`

	SystemRoot *Fact[string] `json:"system_root,omitempty"`
	OSDevice   *Fact[uint64] `json:"os_device,omitempty"`

	ELAM    []ELAMDriver    `json:"elam,omitempty"`
	Modules []WindowsModule `json:"modules,omitempty"`
	// Authorities are the public keys (DER SubjectPublicKeyInfo) of the
	// authorities that signed the boot applications (PCR 14).
	Authorities []Fact[Hex] `json:"authorities,omitempty"`
	// Other lists the SIPA event types this package does not interpret,
	// with their events.
	Other []Fact[SIPAType] `json:"other,omitempty"`
}

// VBSFacts are the virtualization-based security requirements.
type VBSFacts struct {
	VSMRequired                *Fact[bool]   `json:"vsm_required,omitempty"`
	SecureBootRequired         *Fact[bool]   `json:"secure_boot_required,omitempty"`
	IOMMURequired              *Fact[bool]   `json:"iommu_required,omitempty"`
	MMIONXRequired             *Fact[bool]   `json:"mmio_nx_required,omitempty"`
	MSRFilteringRequired       *Fact[bool]   `json:"msr_filtering_required,omitempty"`
	MandatoryEnforcement       *Fact[bool]   `json:"mandatory_enforcement,omitempty"`
	MicrosoftBootChainRequired *Fact[bool]   `json:"microsoft_boot_chain_required,omitempty"`
	HVCIPolicy                 *Fact[uint64] `json:"hvci_policy,omitempty"`
}

// ELAMDriver is an early-launch anti-malware driver's measured settings.
type ELAMDriver struct {
	Name          string `json:"name"`
	Measured      Hex    `json:"measured,omitempty"`
	Configuration Hex    `json:"configuration,omitempty"`
	Policy        Hex    `json:"policy,omitempty"`
	Events        []int  `json:"events"`
}

// WindowsModule is a loaded-module aggregation: one image Windows loaded,
// with its Authenticode hash and signer.
type WindowsModule struct {
	// Event is the index of the event the module's aggregation is in.
	Event            int    `json:"event"`
	Path             UTF16  `json:"path,omitempty"`
	HashAlgorithm    uint32 `json:"hash_algorithm,omitempty"` // a Windows ALG_ID (0x800c: SHA-256)
	Validated        bool   `json:"validated"`
	AuthenticodeHash Hex    `json:"authenticode_hash,omitempty"`
	ImageSize        uint64 `json:"image_size,omitempty"`
	Issuer           UTF16  `json:"issuer,omitempty"`
	Publisher        UTF16  `json:"publisher,omitempty"`
	Serial           Hex    `json:"serial,omitempty"`
	Thumbprint       Hex    `json:"sha1_thumbprint,omitempty"`
	SVN              uint64 `json:"svn,omitempty"`
}

type windowsExtractor struct {
	x *extractor
	w *WindowsFacts
}

// event summarizes the SIPA tree of one event, which checkSIPA accepted.
// The extractor sized w.Modules for every event of the log.
func (we *windowsExtractor) event(ev *Event, data []byte) {
	we.walk(ev, data)
}

// walk summarizes one level of a SIPA tree.
func (we *windowsExtractor) walk(ev *Event, data []byte) {
	it := sipaIter{b: data}
	for e, ok := it.next(); ok; e, ok = it.next() {
		we.one(ev, &e)
	}
}

func (we *windowsExtractor) bad(ev *Event, e *SIPAEvent, err error) {
	we.badType(ev, e.Type, err)
}

func (we *windowsExtractor) badType(ev *Event, t SIPAType, err error) {
	we.x.finding(FindingDecodeError, ev, "SIPA %v: %v", t, err)
}

// latch records a boolean; weak is the value that wins a conflict.
func (we *windowsExtractor) latch(p **Fact[bool], ev *Event, e *SIPAEvent, weak bool) {
	b, err := e.Bool()
	if err != nil {
		we.bad(ev, e, err)
		return
	}
	if *p == nil {
		*p = fact(we.x, b, ev.Index, true)
		return
	}
	f := *p
	if !slices.Contains(f.Events, ev.Index) {
		f.Events = append(f.Events, ev.Index)
	}
	if b == weak {
		f.Value = weak
	}
}

func (we *windowsExtractor) number(p **Fact[uint64], ev *Event, e *SIPAEvent) {
	v, err := e.Uint()
	if err != nil {
		we.bad(ev, e, err)
		return
	}
	if *p == nil {
		*p = fact(we.x, v, ev.Index, true)
		return
	}
	f := *p
	if !slices.Contains(f.Events, ev.Index) {
		f.Events = append(f.Events, ev.Index)
	}
	if f.Value != v {
		we.x.f.Findings = append(we.x.f.Findings, Finding{Kind: FindingConflictingValues, Register: ev.Register,
			Events: slices.Clone(f.Events), Message: fmt.Sprintf("SIPA %v measured as both %d and %d; the first is kept", e.Type, f.Value, v)})
	}
}

func (we *windowsExtractor) text(p **Fact[string], ev *Event, e *SIPAEvent) {
	s, err := e.Text()
	if err != nil {
		we.bad(ev, e, err)
		return
	}
	if *p == nil {
		*p = fact(we.x, s, ev.Index, true)
	} else if !slices.Contains((*p).Events, ev.Index) {
		(*p).Events = append((*p).Events, ev.Index)
	}
}

func (we *windowsExtractor) one(ev *Event, e *SIPAEvent) {
	w := we.w
	switch e.Type {
	case SIPATrustBoundary, SIPAKSRAggregation, SIPAKSRSignedMeasurementAggregation, SIPATrustPointAggregation:
		we.walk(ev, e.Data)
	case SIPALoadedModuleAggregation:
		we.module(ev, e)
	case SIPAELAMAggregation:
		we.elam(ev, e)
	case SIPABootDebugging:
		we.latch(&w.BootDebugging, ev, e, true)
	case SIPAOSKernelDebug:
		we.latch(&w.KernelDebug, ev, e, true)
	case SIPATestSigning:
		we.latch(&w.TestSigning, ev, e, true)
	case SIPAFlightSigning:
		we.latch(&w.FlightSigning, ev, e, true)
	case SIPASafeMode:
		we.latch(&w.SafeMode, ev, e, true)
	case SIPAWinPE:
		we.latch(&w.WinPE, ev, e, true)
	case SIPAHypervisorDebug:
		we.latch(&w.HypervisorDebug, ev, e, true)
	case SIPACodeIntegrity:
		we.latch(&w.CodeIntegrity, ev, e, false)
	case SIPADataExecutionPrevention:
		we.latch(&w.DEP, ev, e, false)
	case SIPAHibernationDisabled:
		we.latch(&w.HibernationDisabled, ev, e, false)
	case SIPADumpsDisabled:
		we.latch(&w.DumpsDisabled, ev, e, false)
	case SIPADumpEncryptionEnabled:
		we.latch(&w.DumpEncryptionEnabled, ev, e, false)
	case SIPAPagefileEncryptionEnabled:
		we.latch(&w.PagefileEncryptionEnabled, ev, e, false)
	case SIPAVBSVSMRequired:
		we.latch(&w.VBS.VSMRequired, ev, e, false)
	case SIPAVBSSecureBootRequired:
		we.latch(&w.VBS.SecureBootRequired, ev, e, false)
	case SIPAVBSIOMMURequired:
		we.latch(&w.VBS.IOMMURequired, ev, e, false)
	case SIPAVBSMMIONXRequired:
		we.latch(&w.VBS.MMIONXRequired, ev, e, false)
	case SIPAVBSMSRFilteringRequired:
		we.latch(&w.VBS.MSRFilteringRequired, ev, e, false)
	case SIPAVBSMandatoryEnforcement:
		we.latch(&w.VBS.MandatoryEnforcement, ev, e, false)
	case SIPAVBSMicrosoftBootChainRequired:
		we.latch(&w.VBS.MicrosoftBootChainRequired, ev, e, false)
	case SIPAHypervisorBootDMAProtection:
		we.latch(&w.HypervisorBootDMAProtection, ev, e, false)
	case SIPASMTStatus:
		we.number(&w.SMTStatus, ev, e)
	case SIPASBCPInfo:
		p, err := ParseSBCPInfo(e.Data)
		if err != nil {
			we.bad(ev, e, err)
			return
		}
		if w.SecureBootCustomPolicy == nil {
			w.SecureBootCustomPolicy = fact(we.x, *p, ev.Index, true)
		} else if !slices.Contains(w.SecureBootCustomPolicy.Events, ev.Index) {
			w.SecureBootCustomPolicy.Events = append(w.SecureBootCustomPolicy.Events, ev.Index)
		}
	case SIPAVBSHVCIPolicy:
		we.number(&w.VBS.HVCIPolicy, ev, e)
	case SIPAHypervisorLaunchType:
		we.number(&w.HypervisorLaunchType, ev, e)
	case SIPAHypervisorIOMMUPolicy:
		we.number(&w.HypervisorIOMMUPolicy, ev, e)
	case SIPAHypervisorMMIONXPolicy:
		we.number(&w.HypervisorMMIONXPolicy, ev, e)
	case SIPAHypervisorMSRFilterPolicy:
		we.number(&w.HypervisorMSRFilterPolicy, ev, e)
	case SIPAVSMLaunchType:
		we.number(&w.VSMLaunchType, ev, e)
	case SIPADriverLoadPolicy:
		we.number(&w.DriverLoadPolicy, ev, e)
	case SIPALSAISOConfig:
		we.number(&w.LSAISOConfig, ev, e)
	case SIPABootCounter:
		we.number(&w.BootCounter, ev, e)
	case SIPAOSDevice:
		we.number(&w.OSDevice, ev, e)
	case SIPAHypervisorPath:
		we.text(&w.HypervisorPath, ev, e)
	case SIPASystemRoot:
		we.text(&w.SystemRoot, ev, e)
	case SIPATransferControl:
		v, err := e.Uint()
		if err != nil {
			we.bad(ev, e, err)
			return
		}
		// The last transfer of control is the one that counts.
		w.TransferControl = fact(we.x, v, ev.Index, true)
		w.FullBoot = fact(we.x, v == 1, ev.Index, true)
	case SIPABitLockerUnlock:
		v, err := e.Uint()
		if err != nil {
			we.bad(ev, e, err)
			return
		}
		w.BitLockerUnlocks = append(w.BitLockerUnlocks, Fact[uint64]{Value: v, Events: we.x.evs(ev.Index), Bound: true})
	case SIPAApplicationSVN:
		v, err := e.Uint()
		if err != nil {
			we.bad(ev, e, err)
			return
		}
		w.ApplicationSVNs = append(w.ApplicationSVNs, Fact[uint64]{Value: v, Events: we.x.evs(ev.Index), Bound: true})
	case SIPASIPolicy:
		p, err := ParseSIPolicy(e.Data)
		if err != nil {
			we.bad(ev, e, err)
			return
		}
		w.SIPolicies = append(w.SIPolicies, Fact[SIPolicy]{Value: *p, Events: we.x.evs(ev.Index), Bound: true})
	case SIPABootRevocationList, SIPAOSRevocationList:
		rl, err := ParseRevocationList(e.Data)
		if err != nil {
			we.bad(ev, e, err)
			return
		}
		if e.Type == SIPABootRevocationList {
			w.BootRevocationList = fact(we.x, *rl, ev.Index, true)
		} else {
			w.OSRevocationList = fact(we.x, *rl, ev.Index, true)
		}
	case SIPAVSMIDKInfo, SIPAVSMIDKSInfo:
		k, err := ParseVSMIdentityKey(e.Data)
		if err != nil {
			we.bad(ev, e, err)
			return
		}
		if e.Type == SIPAVSMIDKInfo {
			w.VSMIdentityKey = fact(we.x, *k, ev.Index, true)
		} else {
			w.VSMSigningKey = fact(we.x, *k, ev.Index, true)
		}
	case SIPADumpEncryptionKeyDigest:
		w.DumpEncryptionKeyDigest = fact(we.x, Hex(e.Data), ev.Index, true)
	case SIPAAuthorityPubKey:
		w.Authorities = append(w.Authorities, Fact[Hex]{Value: e.Data, Events: we.x.evs(ev.Index), Bound: true})
	case SIPAInformation, SIPAEventCounter, SIPACounterID, SIPAApplicationReturn, SIPAMORBitNotCancel,
		SIPAMORBitAPIStatus, SIPASVNChainStatus, SIPANoAuthority, SIPAPhysicalAddressExtension:
		// Informational; kept in the decoded events, not summarized.
	default:
		for i := range w.Other {
			if w.Other[i].Value == e.Type {
				if !slices.Contains(w.Other[i].Events, ev.Index) {
					w.Other[i].Events = append(w.Other[i].Events, ev.Index)
				}
				return
			}
		}
		w.Other = append(w.Other, Fact[SIPAType]{Value: e.Type, Events: we.x.evs(ev.Index), Bound: true})
	}
}

func (we *windowsExtractor) module(ev *Event, agg *SIPAEvent) {
	we.w.Modules = append(we.w.Modules, WindowsModule{})
	m := &we.w.Modules[len(we.w.Modules)-1]
	m.Event = ev.Index
	it := sipaIter{b: agg.Data}
	for t, d, ok := it.nextRaw(); ok; t, d, ok = it.nextRaw() {
		var err error
		e := SIPAEvent{Type: t, Data: d}
		switch t {
		case SIPAFilePath:
			m.Path = e.Data
		case SIPAImageSize:
			m.ImageSize, err = e.Uint()
		case SIPAHashAlgorithmID:
			var v uint64
			v, err = e.Uint()
			m.HashAlgorithm = uint32(v)
		case SIPAAuthenticodeHash:
			m.AuthenticodeHash = e.Data
		case SIPAAuthorityIssuer:
			m.Issuer = e.Data
		case SIPAAuthorityPublisher:
			m.Publisher = e.Data
		case SIPAAuthoritySerial:
			m.Serial = e.Data
		case SIPAAuthoritySHA1Thumbprint:
			m.Thumbprint = e.Data
		case SIPAImageValidated:
			m.Validated, err = e.Bool()
		case SIPAModuleSVN:
			m.SVN, err = e.Uint()
		}
		if err != nil {
			we.badType(ev, e.Type, err)
		}
	}
}

func (we *windowsExtractor) elam(ev *Event, agg *SIPAEvent) {
	d := ELAMDriver{Events: we.x.evs(ev.Index)}
	it := sipaIter{b: agg.Data}
	for e, ok := it.next(); ok; e, ok = it.next() {
		switch e.Type {
		case SIPAELAMKeyname:
			s, err := e.Text()
			if err != nil {
				we.badType(ev, e.Type, err)
			}
			d.Name = s
		case SIPAELAMMeasured:
			d.Measured = e.Data
		case SIPAELAMConfiguration:
			d.Configuration = e.Data
		case SIPAELAMPolicy:
			d.Policy = e.Data
		case SIPAELAMAggregation:
			we.elam(ev, &e)
		}
	}
	if d.Name != "" || d.Measured != nil {
		we.w.ELAM = append(we.w.ELAM, d)
	}
}
