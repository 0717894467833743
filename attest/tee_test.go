package attest

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shieldvm/shieldvm/measure"
)

// The TEE test data is real: an SEV-SNP report of a Milan guest and its
// VCEK (from go-sev-guest's tests), a production TDX quote of a Sapphire
// Rapids host with Intel's collateral for it, and a TDX quote of a
// Container-Optimized OS guest with its CCEL event log and nonce (from
// go-tdx-guest's tests). Licenses beside them.

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// snpTime is within the VCEK's validity.
var snpTime = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

func snpEvidence(t testing.TB) (*SNPEvidence, SNPOptions) {
	ev := &SNPEvidence{Report: readTestdata(t, "snp/attestation.bin"), VCEK: readTestdata(t, "snp/vcek.der")}
	// The report data of the recorded report: 01 02 03 04 05, then zeros.
	rd := make([]byte, ReportDataSize)
	copy(rd, []byte{1, 2, 3, 4, 5})
	return ev, SNPOptions{
		ReportData: rd,
		AMDRoots:   map[string][]byte{"Milan": readTestdata(t, "snp/ask_ark_milan.pem")},
		Now:        func() time.Time { return snpTime },
	}
}

// TestSNPDebuggableGuestDenied: the recorded guest was launched with a
// policy that lets the host debug it (policy 0xb0000: bit 19, DEBUG): its
// genuine report is refused unless the caller opts in.
func TestSNPDebuggableGuestDenied(t *testing.T) {
	ev, opts := snpEvidence(t)
	if _, err := VerifySNP(context.Background(), ev, opts); !errors.Is(err, ErrTEEDebug) {
		t.Fatalf("err = %v, want ErrTEEDebug", err)
	}
}

func TestSNPRealReportVerifies(t *testing.T) {
	ev, opts := snpEvidence(t)
	opts.InsecureAllowDebug = true
	v, err := VerifySNP(context.Background(), ev, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Measurement) != 48 || len(v.ChipID) != 64 || !v.Debug || v.Policy != 0xb0000 {
		t.Errorf("claims %+v", v)
	}
}

// TestSNPReportForAnotherChallengeDenied: the report is genuine, but its
// report data is not the binding the verifier expects.
func TestSNPReportForAnotherChallengeDenied(t *testing.T) {
	ev, opts := snpEvidence(t)
	rd := ReportData(make([]byte, ChallengeSize), []byte("release key"))
	opts.ReportData = rd[:]
	if _, err := VerifySNP(context.Background(), ev, opts); !errors.Is(err, ErrReportData) {
		t.Fatalf("err = %v, want ErrReportData", err)
	}
}

// TestSNPTamperedReportDenied: one byte of the measurement changed.
func TestSNPTamperedReportDenied(t *testing.T) {
	ev, opts := snpEvidence(t)
	ev.Report = append([]byte(nil), ev.Report...)
	ev.Report[0x90] ^= 1 // MEASUREMENT starts at 0x90
	if _, err := VerifySNP(context.Background(), ev, opts); !errors.Is(err, ErrTEEReport) {
		t.Fatalf("err = %v, want ErrTEEReport", err)
	}
}

// TestSNPForgedRootChainRejected: the verifier trusts only another
// product line's roots, so the Milan VCEK does not chain to a trusted
// root.
func TestSNPForgedRootChainRejected(t *testing.T) {
	ev, opts := snpEvidence(t)
	opts.AMDRoots = map[string][]byte{"Milan": readTestdata(t, "snp/ask_ark_genoa.pem")}
	if _, err := VerifySNP(context.Background(), ev, opts); !errors.Is(err, ErrTEEReport) {
		t.Fatalf("err = %v, want ErrTEEReport", err)
	}
}

// TestSNPExpiredVCEKRejected: the same chain checked at a time after the
// VCEK expired.
func TestSNPExpiredVCEKRejected(t *testing.T) {
	ev, opts := snpEvidence(t)
	opts.Now = func() time.Time { return time.Date(2060, 1, 1, 0, 0, 0, 0, time.UTC) }
	if _, err := VerifySNP(context.Background(), ev, opts); !errors.Is(err, ErrTEEReport) {
		t.Fatalf("err = %v, want ErrTEEReport", err)
	}
}

// recordedFetcher serves recorded responses; any other URL is an error,
// so a test that would reach the network fails instead.
type recordedFetcher struct {
	responses map[string]recorded
	fetched   []string
}

type recorded struct {
	header map[string][]string
	body   []byte
}

func (f *recordedFetcher) Fetch(_ context.Context, url string) (map[string][]string, []byte, error) {
	f.fetched = append(f.fetched, url)
	r, ok := f.responses[url]
	if !ok {
		return nil, nil, fmt.Errorf("no recorded response for %s", url)
	}
	return r.header, r.body, nil
}

// TestSNPVCEKFetched: without the VCEK in the evidence, the verifier
// fetches it from AMD's KDS through the injected fetcher, at the URL of the
// report's chip and TCB.
func TestSNPVCEKFetched(t *testing.T) {
	ev, opts := snpEvidence(t)
	vcek := ev.VCEK
	ev.VCEK = nil
	if _, err := VerifySNP(context.Background(), ev, opts); !errors.Is(err, ErrTEEReport) {
		t.Fatalf("without a VCEK or a fetcher: err = %v, want ErrTEEReport", err)
	}
	const kds = "https://kdsintf.amd.com/vcek/v1/Milan/"
	f := &recordedFetcher{responses: map[string]recorded{
		kds + "cert_chain": {body: readTestdata(t, "snp/ask_ark_milan.pem")},
		kds + "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68": {body: vcek},
	}}
	opts.Fetcher = f
	opts.InsecureAllowDebug = true
	if _, err := VerifySNP(context.Background(), ev, opts); err != nil {
		t.Fatalf("err = %v (fetched %v)", err, f.fetched)
	}
}

// tdxTime is within the validity of the SPR quote's PCK chain and of the
// recorded collateral.
var tdxTime = time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)

// intelCollateral serves Intel's recorded PCS responses for the SPR quote.
func intelCollateral(t testing.TB) *recordedFetcher {
	var chains map[string]map[string][]string
	if err := json.Unmarshal(readTestdata(t, "tdx/issuer_chains.json"), &chains); err != nil {
		t.Fatal(err)
	}
	canon := func(h map[string][]string) map[string][]string {
		out := map[string][]string{}
		for k, v := range h {
			out[textproto.CanonicalMIMEHeaderKey(k)] = v
		}
		return out
	}
	const pcs = "https://api.trustedservices.intel.com/"
	return &recordedFetcher{responses: map[string]recorded{
		pcs + "tdx/certification/v4/qe/identity":                            {canon(chains["qeidentity"]), readTestdata(t, "tdx/sample_qeIdentity_response")},
		pcs + "tdx/certification/v4/tcb?fmspc=50806f000000":                 {canon(chains["tcbinfo"]), readTestdata(t, "tdx/sample_tcbInfo_response")},
		pcs + "sgx/certification/v4/pckcrl?ca=platform&encoding=der":        {canon(chains["pckcrl"]), readTestdata(t, "tdx/pckcrl")},
		"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der": {nil, readTestdata(t, "tdx/rootcrl.der")},
	}}
}

// TestTDXRealQuoteVerifies: the production SPR quote and its PCK chain,
// with no collateral. (This quote comes without an event log: its RTMRs
// are verified but not explained.)
func TestTDXRealQuoteVerifies(t *testing.T) {
	ev := &TDXEvidence{Quote: readTestdata(t, "tdx/tdx_prod_quote_SPR_E4.dat")}
	v, err := VerifyTDX(context.Background(), ev, TDXOptions{InsecureSkipReportData: true, Now: func() time.Time { return tdxTime }})
	if err != nil {
		t.Fatal(err)
	}
	if v.Log != nil || len(v.Registers[measure.SHA384]) != 4 || len(v.MRSEAM) != 48 {
		t.Errorf("claims %+v", v)
	}
}

// TestTDXOutdatedTCBRejected: with Intel's collateral, fetched through
// the injected fetcher and verified (TCB info, QE identity, both CRLs),
// the same quote is refused: the recorded TCB info requires higher SVNs
// than the quote's TDX module has.
func TestTDXOutdatedTCBRejected(t *testing.T) {
	f := intelCollateral(t)
	ev := &TDXEvidence{Quote: readTestdata(t, "tdx/tdx_prod_quote_SPR_E4.dat")}
	_, err := VerifyTDX(context.Background(), ev, TDXOptions{InsecureSkipReportData: true, Fetcher: f, Now: func() time.Time { return tdxTime }})
	if !errors.Is(err, ErrTEEReport) || !strings.Contains(err.Error(), "TCB") {
		t.Fatalf("err = %v, want ErrTEEReport on the TCB level", err)
	}
	if len(f.fetched) != 4 {
		t.Errorf("fetched %v, want the four collateral documents", f.fetched)
	}
}

// cosEvidence is the COS TDX guest: its quote and CCEL log.
func cosEvidence(t testing.TB) (*TDXEvidence, TDXOptions) {
	return &TDXEvidence{Quote: readTestdata(t, "tdx/cos-113-tdx-quote.dat"), EventLog: readTestdata(t, "tdx/ccel_data.bin")},
		TDXOptions{ReportData: readTestdata(t, "tdx/nonce.dat"), Now: func() time.Time { return cosTime }}
}

// cosTime is within the validity of the COS quote's PCK chain.
var cosTime = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// TestTDXRealQuoteAndCCELVerify: the COS guest's quote verifies, and its
// CCEL log replays to the quoted RTMR0-2; facts come from the verified
// log.
func TestTDXRealQuoteAndCCELVerify(t *testing.T) {
	ev, opts := cosEvidence(t)
	v, err := VerifyTDX(context.Background(), ev, opts)
	if err != nil {
		t.Fatal(err)
	}
	if v.Debug || len(v.MRTD) != 48 {
		t.Errorf("claims %+v", v)
	}
	for _, r := range []uint32{1, 2, 3} {
		if !v.Log.Verified(r) {
			t.Errorf("RTMR%d (register %d) not verified", r-1, r)
		}
	}
	f, err := v.Log.Facts()
	if err != nil {
		t.Fatal(err)
	}
	if f.Linux == nil || f.Linux.CommandLine == nil {
		t.Errorf("no kernel command line in the facts of the verified CCEL log")
	}
}

// TestTDXLogChangedAfterQuoteDenied: one digest of the CCEL log changed.
func TestTDXLogChangedAfterQuoteDenied(t *testing.T) {
	ev, opts := cosEvidence(t)
	l, err := measure.ParseCCEL(ev.EventLog)
	if err != nil {
		t.Fatal(err)
	}
	evs := l.UnverifiedEvents()
	d, _ := evs[len(evs)-1].Digest(measure.SHA384)
	log := append([]byte(nil), ev.EventLog...)
	i := indexOf(log, d)
	if i < 0 {
		t.Fatal("digest not found")
	}
	log[i] ^= 1
	ev.EventLog = log
	if _, err := VerifyTDX(context.Background(), ev, opts); !errors.Is(err, ErrLog) {
		t.Fatalf("err = %v, want ErrLog", err)
	}
}

// TestTDXQuoteForAnotherChallengeDenied: the genuine quote with a report
// data that is not the expected binding.
func TestTDXQuoteForAnotherChallengeDenied(t *testing.T) {
	ev, opts := cosEvidence(t)
	rd := ReportData(make([]byte, ChallengeSize), []byte("release key"))
	opts.ReportData = rd[:]
	if _, err := VerifyTDX(context.Background(), ev, opts); !errors.Is(err, ErrReportData) {
		t.Fatalf("err = %v, want ErrReportData", err)
	}
}

// TestTDXTamperedQuoteDenied: one byte of the TD quote body (in MRTD)
// changed.
func TestTDXTamperedQuoteDenied(t *testing.T) {
	ev, opts := cosEvidence(t)
	ev.Quote = append([]byte(nil), ev.Quote...)
	ev.Quote[48+136] ^= 1 // header (48) + TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES, TDATTRIBUTES, XFAM (136): MRTD
	if _, err := VerifyTDX(context.Background(), ev, opts); !errors.Is(err, ErrTEEReport) {
		t.Fatalf("err = %v, want ErrTEEReport", err)
	}
}

// TestTDXForgedRootChainRejected: the verifier trusts another root than
// Intel's.
func TestTDXForgedRootChainRejected(t *testing.T) {
	ev, opts := cosEvidence(t)
	block, _ := pem.Decode(readTestdata(t, "snp/ask_ark_milan.pem"))
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	opts.Roots = x509.NewCertPool()
	opts.Roots.AddCert(c)
	if _, err := VerifyTDX(context.Background(), ev, opts); !errors.Is(err, ErrTEEReport) {
		t.Fatalf("err = %v, want ErrTEEReport", err)
	}
}

// teeErr reports whether err is one of the documented errors of TEE
// verification.
func teeErr(err error) bool {
	for _, e := range []error{ErrMalformed, ErrTEEReport, ErrReportData, ErrTEEDebug, ErrLog} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// FuzzVerifySNP feeds reports to VerifySNP with the real VCEK and roots:
// it must return one of its documented errors, never panic.
func FuzzVerifySNP(f *testing.F) {
	ev, opts := snpEvidence(f)
	f.Add(ev.Report)
	f.Add(ev.Report[:100])
	f.Fuzz(func(t *testing.T, report []byte) {
		_, err := VerifySNP(context.Background(), &SNPEvidence{Report: report, VCEK: ev.VCEK}, opts)
		if err != nil && !teeErr(err) {
			t.Fatalf("undocumented error %v", err)
		}
	})
}

// FuzzVerifyTDX feeds quotes and CCEL logs to VerifyTDX: one of its
// documented errors, never a panic.
func FuzzVerifyTDX(f *testing.F) {
	ev, opts := cosEvidence(f)
	f.Add(ev.Quote, ev.EventLog)
	f.Add(readTestdata(f, "tdx/tdx_prod_quote_SPR_E4.dat"), []byte(nil))
	f.Fuzz(func(t *testing.T, quote, log []byte) {
		_, err := VerifyTDX(context.Background(), &TDXEvidence{Quote: quote, EventLog: log}, opts)
		if err != nil && !teeErr(err) {
			t.Fatalf("undocumented error %v", err)
		}
	})
}
