package attest

import (
	"context"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	sevabi "github.com/google/go-sev-guest/abi"
	sevpb "github.com/google/go-sev-guest/proto/sevsnp"
	sevverify "github.com/google/go-sev-guest/verify"
	sevtrust "github.com/google/go-sev-guest/verify/trust"
	tdxabi "github.com/google/go-tdx-guest/abi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	tdxverify "github.com/google/go-tdx-guest/verify"

	"github.com/shieldvm/shieldvm/measure"
)

// Errors of TEE evidence.
var (
	// ErrTEEReport: the TDX quote or SEV-SNP report does not verify: a bad
	// signature, a certificate chain that does not end at a trusted root,
	// or collateral that does not verify.
	ErrTEEReport = errors.New("attest: TEE report does not verify")
	// ErrReportData: the report data of a TDX quote or SEV-SNP report is
	// not the expected binding (a report made for another challenge or
	// another release key).
	ErrReportData = errors.New("attest: TEE report data does not match")
	// ErrTEEDebug: the trust domain or guest can be debugged by the host,
	// which can then read its memory.
	ErrTEEDebug = errors.New("attest: TEE guest is debuggable")
)

// ReportDataSize is the size of the report data of a TDX quote and of an
// SEV-SNP report.
const ReportDataSize = 64

// ReportData returns the report data a confidential VM asks its TEE to
// sign: SHA-512(challenge ‖ releaseKey), the TEE counterpart of
// [QualifyingData]. A challenge has a fixed size, so the concatenation is
// unambiguous.
func ReportData(challenge, releaseKey []byte) [ReportDataSize]byte {
	h := sha512.New()
	h.Write(challenge)
	h.Write(releaseKey)
	var out [ReportDataSize]byte
	h.Sum(out[:0])
	return out
}

// A Fetcher gets a document of TEE verification by URL: an SEV-SNP VCEK
// certificate or certificate chain from AMD's KDS, TCB information, QE
// identity or a CRL from Intel's PCS. It returns the response's header
// (Intel's collateral carries its issuer chain there) and body. This
// package never opens a network connection itself; a service passes an
// HTTPS fetcher, and tests one that serves recorded responses.
type Fetcher interface {
	Fetch(ctx context.Context, url string) (header map[string][]string, body []byte, err error)
}

// sevGetter adapts a Fetcher to go-sev-guest's getter.
type sevGetter struct {
	ctx context.Context
	f   Fetcher
}

func (g sevGetter) Get(url string) ([]byte, error) { return g.GetContext(g.ctx, url) }

func (g sevGetter) GetContext(ctx context.Context, url string) ([]byte, error) {
	_, b, err := g.f.Fetch(ctx, url)
	return b, err
}

// tdxGetter adapts a Fetcher to go-tdx-guest's getter.
type tdxGetter struct {
	ctx context.Context
	f   Fetcher
}

func (g tdxGetter) Get(url string) (map[string][]string, []byte, error) {
	return g.f.Fetch(g.ctx, url)
}

func (g tdxGetter) GetContext(ctx context.Context, url string) (map[string][]string, []byte, error) {
	return g.f.Fetch(ctx, url)
}

// checkReportData compares report data with the expected binding in
// constant time.
func checkReportData(got, want []byte, skip bool) error {
	if skip {
		return nil
	}
	if len(want) != ReportDataSize {
		return fmt.Errorf("%w: expected report data of %d bytes, want %d", ErrReportData, len(want), ReportDataSize)
	}
	if len(got) != ReportDataSize || subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrReportData
	}
	return nil
}

// SNPEvidence is an AMD SEV-SNP attestation report and the certificates
// that endorse it.
type SNPEvidence struct {
	// Report is the ATTESTATION_REPORT structure (SEV Secure Nested
	// Paging Firmware ABI, table 22), signature included.
	Report []byte `cbor:"1,keyasint"`
	// VCEK is the DER certificate of the chip's versioned endorsement key
	// that signed the report. If empty, it is fetched (SNPOptions.Fetcher).
	VCEK []byte `cbor:"2,keyasint,omitempty"`
}

// SNPOptions are the expectations of [VerifySNP]. The zero value is strict
// and uses no network, but it needs ReportData.
type SNPOptions struct {
	// ReportData is the exact report data the report must carry: for
	// shieldvm evidence, [ReportData] of the challenge and release key.
	ReportData []byte
	// InsecureSkipReportData skips the comparison, so that a replayed
	// report verifies. Only for inspecting stored reports.
	InsecureSkipReportData bool
	// AMDRoots are the trusted ARK and ASK of each product line, as AMD's
	// KDS serves them (…/vcek/v1/Milan/cert_chain: PEM, ASK then ARK),
	// keyed by product line ("Milan", "Genoa", "Turin"). If nil, the AMD
	// roots built into go-sev-guest.
	AMDRoots map[string][]byte
	// Fetcher fetches the VCEK when the evidence lacks it. If nil, no
	// certificate is fetched and the evidence must carry the VCEK.
	Fetcher Fetcher
	// Now is the time at which certificates must be valid. If nil,
	// time.Now.
	Now func() time.Time
	// InsecureAllowDebug accepts a guest whose policy lets the host debug
	// it (read and write its memory). If false, such a report is refused
	// with ErrTEEDebug.
	InsecureAllowDebug bool
}

// VerifiedSNP is an SEV-SNP report whose signature, certificate chain and
// report data verified.
type VerifiedSNP struct {
	// Measurement is the launch digest of the guest (48 bytes).
	Measurement []byte
	// HostData is the data the host provided at launch (32 bytes).
	HostData []byte
	// ReportData is the report data the guest asked to be signed.
	ReportData []byte
	// Policy is the guest policy; bit 19 allows debugging.
	Policy uint64
	// Debug is true if the guest policy allows debugging.
	Debug bool
	// VMPL is the privilege level that requested the report.
	VMPL uint32
	// ChipID identifies the processor (64 bytes).
	ChipID []byte
	// ReportedTCB and CurrentTCB are the TCB versions (bootloader, TEE,
	// SNP firmware and microcode SVNs, packed as AMD's TCB_VERSION).
	ReportedTCB, CurrentTCB uint64
	// Version is the report's format version.
	Version uint32
}

// snpPolicyDebug is the DEBUG bit of the SEV-SNP guest policy (SEV-SNP
// Firmware ABI, section 4.3).
const snpPolicyDebug = 1 << 19

// VerifySNP verifies an SEV-SNP attestation report: the VCEK chains to
// the AMD root of the report's product line (ARK → ASK → VCEK, with the
// VCEK's TCB and chip extensions matching the report), the report's
// ECDSA P-384 signature verifies with the VCEK, its report data is
// opts.ReportData, and the guest is not debuggable. Verification uses the
// network only through opts.Fetcher. It is safe for concurrent use.
func VerifySNP(ctx context.Context, ev *SNPEvidence, opts SNPOptions) (*VerifiedSNP, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w SNP evidence: nil", ErrMalformed)
	}
	report, err := parseSNPReport(ev.Report)
	if err != nil {
		return nil, fmt.Errorf("%w SEV-SNP report: %v", ErrMalformed, err)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	so := &sevverify.Options{Now: now(), DisableCertFetching: opts.Fetcher == nil}
	if opts.Fetcher != nil {
		so.Getter = sevGetter{ctx: ctx, f: opts.Fetcher}
	}
	if opts.AMDRoots != nil {
		so.TrustedRoots = map[string][]*sevtrust.AMDRootCerts{}
		for line, pem := range opts.AMDRoots {
			r := sevtrust.AMDRootCertsProduct(line)
			if err := r.FromKDSCertBytes(pem); err != nil {
				return nil, fmt.Errorf("attest: AMD roots of %s: %v", line, err)
			}
			so.TrustedRoots[line] = append(so.TrustedRoots[line], r)
		}
	}
	att := &sevpb.Attestation{Report: report, CertificateChain: &sevpb.CertificateChain{VcekCert: ev.VCEK}}
	if err := sevverify.SnpAttestationContext(ctx, att, so); err != nil {
		return nil, fmt.Errorf("%w: SEV-SNP: %v", ErrTEEReport, err)
	}
	if err := checkReportData(report.GetReportData(), opts.ReportData, opts.InsecureSkipReportData); err != nil {
		return nil, err
	}
	v := &VerifiedSNP{
		Measurement: slices.Clone(report.GetMeasurement()),
		HostData:    slices.Clone(report.GetHostData()),
		ReportData:  slices.Clone(report.GetReportData()),
		Policy:      report.GetPolicy(),
		Debug:       report.GetPolicy()&snpPolicyDebug != 0,
		VMPL:        report.GetVmpl(),
		ChipID:      slices.Clone(report.GetChipId()),
		ReportedTCB: report.GetReportedTcb(),
		CurrentTCB:  report.GetCurrentTcb(),
		Version:     report.GetVersion(),
	}
	if v.Debug && !opts.InsecureAllowDebug {
		return nil, fmt.Errorf("%w: SEV-SNP guest policy %#x allows debugging", ErrTEEDebug, v.Policy)
	}
	return v, nil
}

// TDXEvidence is an Intel TDX quote and the trust domain's event log.
type TDXEvidence struct {
	// Quote is a TDX quote (version 4) with its PCK certificate chain in
	// the certification data.
	Quote []byte `cbor:"1,keyasint"`
	// EventLog is the confidential-computing event log (the CCEL ACPI
	// table's buffer) whose events extend RTMR0-3. If empty, the RTMRs
	// are verified but not explained.
	EventLog []byte `cbor:"2,keyasint"`
}

// TDXOptions are the expectations of [VerifyTDX]. The zero value is
// strict and uses no network, but it needs ReportData.
type TDXOptions struct {
	// ReportData is the exact report data the quote must carry: for
	// shieldvm evidence, [ReportData] of the challenge and release key.
	ReportData []byte
	// InsecureSkipReportData skips the comparison. Only for inspecting
	// stored quotes.
	InsecureSkipReportData bool
	// Roots are the trusted Intel SGX root certificates of PCK chains. If
	// nil, Intel's root built into go-tdx-guest.
	Roots *x509.CertPool
	// Fetcher fetches Intel's collateral (TCB info, QE identity and
	// CRLs), which are then verified and applied: the TCB status of the
	// platform, the QE's identity, revocation. If nil, none is fetched:
	// the PCK chain, the QE report and the quote's signatures are checked,
	// but not the platform's TCB level nor revocation.
	Fetcher Fetcher
	// Now is the time at which certificates and collateral must be valid.
	// If nil, time.Now.
	Now func() time.Time
	// Quirks are the firmware defects accepted in the event log.
	Quirks measure.Quirk
	// InsecureAllowDebug accepts a debuggable trust domain
	// (TDATTRIBUTES.DEBUG). If false, it is refused with ErrTEEDebug.
	InsecureAllowDebug bool
}

// VerifiedTDX is a TDX quote whose signatures, PCK chain and report data
// verified, and the event log that replays to its RTMRs.
type VerifiedTDX struct {
	// MRTD is the measurement of the trust domain's initial contents
	// (the firmware), 48 bytes.
	MRTD []byte
	// RTMRs are the runtime measurement registers 0-3, 48 bytes each.
	RTMRs [4][]byte
	// Registers are the RTMRs as the CC registers of the event log:
	// SHA-384 registers 1-4 (register 0 is MRTD, which no event extends).
	Registers measure.QuotedValues
	// MRSEAM is the measurement of the TDX module.
	MRSEAM []byte
	// TDAttributes are the TD's attributes; bit 0 is DEBUG.
	TDAttributes uint64
	// Debug is true if the trust domain is debuggable.
	Debug bool
	// XFAM are the extended features the TD may use.
	XFAM uint64
	// TEETCBSVN is the TDX module's security version numbers.
	TEETCBSVN []byte
	// MRConfigID, MROwner and MROwnerConfig are the TD's
	// software-defined identities.
	MRConfigID, MROwner, MROwnerConfig []byte
	// ReportData is the report data the TD asked to be signed.
	ReportData []byte
	// Log is the verified event log, or nil if the evidence has none.
	Log *measure.VerifiedLog
}

// VerifyTDX verifies a TDX quote and the trust domain's event log: the
// PCK certificate chain ends at a trusted Intel root, the QE report is
// signed by the PCK key and binds the attestation key, the quote is
// signed by the attestation key (and, with a Fetcher, the TCB info, QE
// identity and CRLs verify and apply), the report data is
// opts.ReportData, the TD is not debuggable, and the CCEL log replays to
// the quoted RTMRs ([measure.ParseCCEL], [measure.Log.Verify]): every
// register the log extends is an RTMR the quote carries. It is safe for
// concurrent use.
func VerifyTDX(ctx context.Context, ev *TDXEvidence, opts TDXOptions) (*VerifiedTDX, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w TDX evidence: nil", ErrMalformed)
	}
	q, err := parseTDXQuote(ev.Quote)
	if err != nil {
		return nil, fmt.Errorf("%w TDX quote: %v", ErrMalformed, err)
	}
	quote, ok := q.(*tdxpb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("%w TDX quote: %T is not a version 4 quote", ErrMalformed, q)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	t := now()
	// go-tdx-guest keeps per-call state in its options: one per call.
	to := &tdxverify.Options{
		TrustedRoots: opts.Roots,
		Now:          &tdxverify.TimeSet{PckCertChain: t, TcbInfo: t, QeIdentity: t, PckCrl: t, RootCaCrl: t},
	}
	if opts.Fetcher != nil {
		to.GetCollateral = true
		to.CheckRevocations = true
		to.Getter = tdxGetter{ctx: ctx, f: opts.Fetcher}
	}
	if err := tdxverify.TdxQuoteContext(ctx, quote, to); err != nil {
		return nil, fmt.Errorf("%w: TDX: %v", ErrTEEReport, err)
	}
	body := quote.GetTdQuoteBody()
	if err := checkReportData(body.GetReportData(), opts.ReportData, opts.InsecureSkipReportData); err != nil {
		return nil, err
	}
	v := &VerifiedTDX{
		MRTD:          slices.Clone(body.GetMrTd()),
		MRSEAM:        slices.Clone(body.GetMrSeam()),
		TEETCBSVN:     slices.Clone(body.GetTeeTcbSvn()),
		MRConfigID:    slices.Clone(body.GetMrConfigId()),
		MROwner:       slices.Clone(body.GetMrOwner()),
		MROwnerConfig: slices.Clone(body.GetMrOwnerConfig()),
		ReportData:    slices.Clone(body.GetReportData()),
		Registers:     measure.QuotedValues{measure.SHA384: {}},
	}
	if a := body.GetTdAttributes(); len(a) == 8 {
		v.TDAttributes = binary.LittleEndian.Uint64(a)
	}
	if x := body.GetXfam(); len(x) == 8 {
		v.XFAM = binary.LittleEndian.Uint64(x)
	}
	v.Debug = v.TDAttributes&1 != 0
	rtmrs := body.GetRtmrs()
	if len(rtmrs) != 4 {
		return nil, fmt.Errorf("%w TDX quote: %d RTMRs", ErrMalformed, len(rtmrs))
	}
	for i, r := range rtmrs {
		if len(r) != measure.SHA384.Size() {
			return nil, fmt.Errorf("%w TDX quote: RTMR%d of %d bytes", ErrMalformed, i, len(r))
		}
		v.RTMRs[i] = slices.Clone(r)
		v.Registers[measure.SHA384][uint32(i+1)] = v.RTMRs[i]
	}
	if v.Debug && !opts.InsecureAllowDebug {
		return nil, fmt.Errorf("%w: TD attributes %#x have DEBUG set", ErrTEEDebug, v.TDAttributes)
	}
	if len(ev.EventLog) == 0 {
		// No log: the RTMRs are the quote's word, with nothing to explain
		// them; rules on facts will fail for want of a log.
		return v, nil
	}
	l, err := measure.ParseCCEL(ev.EventLog)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLog, err)
	}
	vlog, err := l.Verify(v.Registers, measure.VerifyOptions{Quirks: opts.Quirks})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLog, err)
	}
	if err := checkCovered(vlog); err != nil {
		return nil, err
	}
	v.Log = vlog
	return v, nil
}

// parseTDXQuote is go-tdx-guest's quote decoder, which panics on some
// malformed quotes (a QE authentication data size beyond the buffer, found
// by FuzzVerifyTDX): the panic is turned into an error, since input must
// never take a verifier down.
func parseTDXQuote(b []byte) (q any, err error) {
	defer func() {
		if r := recover(); r != nil {
			q, err = nil, fmt.Errorf("decoder panic: %v", r)
		}
	}()
	return tdxabi.QuoteToProto(b)
}

// parseSNPReport is go-sev-guest's report decoder, guarded the same way.
func parseSNPReport(b []byte) (r *sevpb.Report, err error) {
	defer func() {
		if x := recover(); x != nil {
			r, err = nil, fmt.Errorf("decoder panic: %v", x)
		}
	}()
	return sevabi.ReportToProto(b)
}
