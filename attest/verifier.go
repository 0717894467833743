package attest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
)

// Verification errors beyond those of the quote, the challenge and the
// registry.
var (
	// ErrDenied: the evidence is authentic but the policy contraindicates
	// the host. It is wrapped by a *[DeniedError] that holds the verdict.
	ErrDenied = errors.New("attest: host denied by policy")
	// ErrModeNotAllowed: the evidence uses a mode the verifier was not
	// configured to accept.
	ErrModeNotAllowed = errors.New("attest: attestation mode not allowed")
	// ErrHostKey: the host-key signature does not verify.
	ErrHostKey = errors.New("attest: host key signature does not verify")
	// ErrEKCertificate: the EK certificate does not chain to a trusted
	// manufacturer root, or is not the certificate of the EK.
	ErrEKCertificate = errors.New("attest: EK certificate not trusted")
	// ErrLog: the event log does not match the quoted PCRs (changed after
	// the quote, or from another boot), or the quote leaves registers of
	// the log unverified.
	ErrLog = errors.New("attest: event log does not match the quote")
)

// DeniedError reports a host that the policy contraindicates.
type DeniedError struct {
	Verdict *policy.Verdict
}

func (e *DeniedError) Error() string {
	return "attest: host denied by policy: " + e.Verdict.String()
}

func (e *DeniedError) Unwrap() error { return ErrDenied }

// VerifierConfig configures a [Verifier]. It must not be changed after
// it is passed to [NewVerifier].
type VerifierConfig struct {
	// Challenger issues and checks challenges. Required.
	Challenger *Challenger
	// Registry says which hosts are registered. Required.
	Registry Registry
	// Policy judges the boot. Required.
	Policy *policy.Policy
	// Modes are the attestation modes accepted. If empty, only ModeTPM.
	Modes []Mode
	// EKRoots are the TPM manufacturers' root certificates. If nil, EK
	// certificates are not needed and not checked (the registry's EK
	// allow-list decides); if set, ModeTPM evidence must carry an EK
	// certificate that chains to one of them.
	EKRoots *x509.CertPool
	// EKIntermediates are intermediate CA certificates for EK chains.
	EKIntermediates *x509.CertPool
	// ReplayGuard makes challenges single-use. If nil, a challenge can be
	// answered again within its lifetime.
	ReplayGuard ReplayGuard
	// Quirks are the firmware defects accepted when the log is verified.
	// If zero, none.
	Quirks measure.Quirk
	// InsecureAllowSHA1 accepts SHA-1 quote signatures and SHA-1 PCR
	// banks. If false, they are rejected.
	InsecureAllowSHA1 bool
	// Now returns the current time, for EK certificate validity. If nil,
	// time.Now.
	Now func() time.Time
}

// Verifier checks evidence: the challenge, the quote, the host's identity,
// the event log, and the policy. It keeps no per-host state, so any number
// of replicas sharing the challenge secret can verify. It is safe for
// concurrent use.
type Verifier struct {
	cfg VerifierConfig
}

// NewVerifier checks cfg and returns a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Challenger == nil || cfg.Registry == nil || cfg.Policy == nil {
		return nil, errors.New("attest: verifier needs a challenger, a registry and a policy")
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = []Mode{ModeTPM}
	}
	cfg.Modes = slices.Clone(cfg.Modes)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{cfg: cfg}, nil
}

// NewChallenge returns a challenge for ModeHostKey or ModeAdmin.
func (v *Verifier) NewChallenge() ([]byte, error) { return v.cfg.Challenger.New() }

// NewTPMChallenge is [Challenger.NewTPMChallenge] with the verifier's
// Challenger.
func (v *Verifier) NewTPMChallenge(ekPublic, akPublic []byte) (*TPMChallenge, error) {
	return v.cfg.Challenger.newTPMChallenge(ekPublic, akPublic)
}

// Result is the outcome of a successful verification.
type Result struct {
	// Status is the policy's verdict status: Affirming or Warning when
	// Verify returned no error.
	Status policy.Status
	// Verdict explains the status rule by rule.
	Verdict *policy.Verdict
	// PolicyID is the id of the policy applied.
	PolicyID string
	// Host is the registered host.
	Host HostClaims
	// Trust is the trustworthiness vector for the token.
	Trust TrustVector
	// ReleaseKey is the host release key the quote was bound to.
	ReleaseKey []byte
	// Challenge is the challenge the evidence answered.
	Challenge []byte
	// Facts are selected boot facts for the token.
	Facts map[string]string
	// Quote is the verified quote.
	Quote *VerifiedQuote
	// Log is the verified event log.
	Log *measure.VerifiedLog
}

// Verify checks evidence and judges the host:
//
//  1. the challenge is ours and fresh (and unused, with a ReplayGuard);
//  2. the quote's signature verifies with the AK, its qualifying data is
//     QualifyingData(challenge, release key), and the PCR values match
//     its digest ([VerifyQuote]);
//  3. the event log replays to the quoted PCRs, every register it extends
//     is quoted, and only then are its facts read ([measure.Log.Verify]);
//     steps 2 and 3 are [VerifyBoot];
//  4. the identity proof of the mode ties the AK to a registered host:
//     credential activation with the EK (and the EK certificate chain),
//     a host-key signature, or group membership;
//  5. the policy evaluates the verified log and PCRs.
//
// Errors of steps 1-4 wrap ErrChallenge*, ErrSignature, ErrQualifyingData,
// ErrPCRDigest, ErrActivation, ErrHostKey, ErrEKCertificate,
// ErrUnregistered or ErrLog. When the policy contraindicates the host,
// Verify returns the Result and a *[DeniedError] wrapping ErrDenied.
func (v *Verifier) Verify(ctx context.Context, e *Evidence) (*Result, error) {
	if e == nil {
		return nil, fmt.Errorf("%w evidence: nil", ErrMalformed)
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	if !slices.Contains(v.cfg.Modes, e.Mode) {
		return nil, fmt.Errorf("%w: %v", ErrModeNotAllowed, e.Mode)
	}
	// 1. Challenge.
	expires, err := v.cfg.Challenger.Check(e.Challenge)
	if err != nil {
		return nil, err
	}
	// 2. Quote.
	ak, err := ParseAKPublic(e.AKPublic)
	if err != nil {
		return nil, err
	}
	boot, err := VerifyBoot(ak, e.Quote, e.PCRs, e.EventLog, BootOptions{
		Quote: QuoteOptions{
			QualifyingData:    QualifyingData(e.Challenge, e.ReleaseKey),
			InsecureAllowSHA1: v.cfg.InsecureAllowSHA1,
		},
		Quirks: v.cfg.Quirks,
	})
	if err != nil {
		return nil, err
	}
	vq, vlog := boot.Quote, boot.Log
	// 3. Identity.
	id, err := v.identify(e, ak)
	if err != nil {
		return nil, err
	}
	host, err := v.cfg.Registry.Lookup(ctx, id)
	if err != nil {
		if !errors.Is(err, ErrUnregistered) {
			return nil, fmt.Errorf("attest: registry: %w", err)
		}
		return nil, err
	}
	// The challenge is spent only by evidence that got this far, so that
	// garbage cannot burn a host's challenge.
	if v.cfg.ReplayGuard != nil {
		if err := v.cfg.ReplayGuard.Use(ctx, e.Challenge, expires); err != nil {
			return nil, err
		}
	}
	// 5. Policy.
	facts, _ := vlog.Facts() // on error the policy sees no facts and says so
	verdict := v.cfg.Policy.Evaluate(&policy.Input{PCRs: vq.PCRs, Log: vlog, Facts: facts})
	r := &Result{
		Status:     verdict.Status,
		Verdict:    verdict,
		PolicyID:   verdict.PolicyID,
		Host:       HostClaims{ID: host.ID, Group: host.Group, Mode: e.Mode, AKName: ak.Name},
		ReleaseKey: e.ReleaseKey,
		Challenge:  e.Challenge,
		Quote:      vq,
		Log:        vlog,
		Facts:      summarize(facts),
	}
	r.Trust = TrustVector{
		InstanceIdentity: policy.Affirming,
		Hardware:         policy.Affirming,
		Configuration:    verdict.CategoryStatus(policy.CategoryConfiguration),
		Executables:      verdict.CategoryStatus(policy.CategoryExecutables),
	}
	if e.Mode == ModeAdmin {
		// A group claim is not a hardware-rooted identity.
		r.Trust.InstanceIdentity = policy.Warning
	}
	if verdict.Status == policy.Contraindicated || verdict.Status == policy.StatusNone {
		return r, &DeniedError{Verdict: verdict}
	}
	return r, nil
}

// BootOptions are the expectations of [VerifyBoot].
type BootOptions struct {
	// Quote are the expectations of the quote.
	Quote QuoteOptions
	// Quirks are the firmware defects accepted in the log. If zero, none.
	Quirks measure.Quirk
}

// VerifiedBoot is a quote and an event log that verified together.
type VerifiedBoot struct {
	Quote *VerifiedQuote
	Log   *measure.VerifiedLog
}

// VerifyBoot checks a quote with [VerifyQuote], then replays the event
// log against the quoted PCRs only ([measure.Log.Verify]). The log must
// match every quoted register, and every register the log extends must be
// quoted: events of an unquoted register could say anything, so such a
// log is refused with ErrLog rather than partly trusted. Events logged
// after the quote (a log read later, which grew) are not in the verified
// view.
//
// VerifyBoot is the part of [Verifier.Verify] that needs no challenge and
// no registry: use it for stored evidence with the qualifying data it
// was made with. It is safe for concurrent use.
func VerifyBoot(ak *AKPublic, q Quote, pcrs measure.QuotedValues, eventLog []byte, opts BootOptions) (*VerifiedBoot, error) {
	vq, err := VerifyQuote(ak, q, pcrs, opts.Quote)
	if err != nil {
		return nil, err
	}
	vlog, err := verifyLog(eventLog, vq.PCRs, opts.Quirks)
	if err != nil {
		return nil, err
	}
	return &VerifiedBoot{Quote: vq, Log: vlog}, nil
}

func verifyLog(data []byte, pcrs measure.QuotedValues, quirks measure.Quirk) (*measure.VerifiedLog, error) {
	l, err := measure.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLog, err)
	}
	vlog, err := l.Verify(pcrs, measure.VerifyOptions{Quirks: quirks})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLog, err)
	}
	if err := checkCovered(vlog); err != nil {
		return nil, err
	}
	return vlog, nil
}

// checkCovered refuses a verified log that extends a register no quoted
// bank covers.
func checkCovered(vlog *measure.VerifiedLog) error {
	rep := vlog.Report()
	// Events after rep.Prefix came after the quote (the log grew): they
	// are absent from the verified view, so nothing is decided on them.
	// A register is covered when some bank of it was quoted and matched;
	// a log with several banks is verified through the one the quote
	// chose.
	var covered uint32
	for _, r := range rep.Results {
		if r.Status == measure.Matched && r.Register < 32 {
			covered |= 1 << r.Register
		}
	}
	var notQuoted []string
	for _, r := range rep.Results {
		if r.Status == measure.NotQuoted && (r.Register >= 32 || covered&(1<<r.Register) == 0) {
			notQuoted = append(notQuoted, fmt.Sprintf("%v[%d]", r.Alg, r.Register))
		}
	}
	if len(notQuoted) > 0 {
		return fmt.Errorf("%w: the log extends registers the quote does not cover: %v", ErrLog, notQuoted)
	}
	return nil
}

// identify checks the identity proof of the evidence's mode.
func (v *Verifier) identify(e *Evidence, ak *AKPublic) (*Identity, error) {
	switch e.Mode {
	case ModeTPM:
		ek, err := parseEKPublic(e.TPM.EKPublic)
		if err != nil {
			return nil, err
		}
		if err := v.cfg.Challenger.checkActivation(e.Challenge, ek, ak.Name, e.TPM.ActivationSecret); err != nil {
			return nil, err
		}
		id := &Identity{Mode: ModeTPM, EK: ek.pub.Key}
		if v.cfg.EKRoots != nil {
			cert, err := v.checkEKCertificate(e.TPM.EKCertificate, ek.pub.Key)
			if err != nil {
				return nil, err
			}
			id.EKCertificate = cert
		}
		return id, nil
	case ModeHostKey:
		pub, err := x509.ParsePKIXPublicKey(e.HostKey.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%w: host key: %v", ErrHostKey, err)
		}
		if err := verifyHostKey(pub, HostKeyMessage(e.Challenge, ak.Name, e.ReleaseKey), e.HostKey.Signature); err != nil {
			return nil, err
		}
		return &Identity{Mode: ModeHostKey, HostKey: pub}, nil
	case ModeAdmin:
		return &Identity{Mode: ModeAdmin, HostID: e.Admin.HostID}, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrModeNotAllowed, e.Mode)
}

// oidSAN is the subjectAltName extension, which EK certificates mark
// critical and fill with TPM manufacturer attributes Go does not parse.
var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

func (v *Verifier) checkEKCertificate(der []byte, ek crypto.PublicKey) (*x509.Certificate, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: no EK certificate", ErrEKCertificate)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKCertificate, err)
	}
	// The TPM manufacturer SAN (TCG EK Credential Profile, section 3.2.9)
	// is the only unhandled critical extension we accept.
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions, func(o asn1.ObjectIdentifier) bool {
		return o.Equal(oidSAN)
	})
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:         v.cfg.EKRoots,
		Intermediates: v.cfg.EKIntermediates,
		CurrentTime:   v.cfg.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKCertificate, err)
	}
	a, ok1 := KeyDigest(cert.PublicKey)
	b, ok2 := KeyDigest(ek)
	if !ok1 || !ok2 || a != b {
		return nil, fmt.Errorf("%w: the certificate is for another key", ErrEKCertificate)
	}
	return cert, nil
}

// summarize picks the facts a token carries: bound facts that a relying
// party may want to log, never event data in bulk.
func summarize(f *measure.Facts) map[string]string {
	if f == nil {
		return nil
	}
	out := map[string]string{}
	onOff := func(key string, x *measure.Fact[bool]) {
		if x != nil && x.Bound {
			out[key] = strconv.FormatBool(x.Value)
		}
	}
	onOff("secure_boot", f.SecureBoot.Enabled)
	if c := f.Firmware.CRTMVersion; c != nil && c.Bound && c.Value != "" {
		out["firmware_version"] = c.Value
	}
	if w := f.Windows; w != nil {
		onOff("windows.boot_debugging", w.BootDebugging)
		onOff("windows.full_boot", w.FullBoot)
		onOff("windows.code_integrity", w.CodeIntegrity)
		out["windows.si_policies"] = strconv.Itoa(len(w.SIPolicies))
	}
	if l := f.Linux; l != nil {
		if c := l.CommandLine; c != nil && c.Bound {
			out["linux.cmdline"] = c.Value
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// verifyHostKey checks a host-key signature over a SHA-256 digest.
func verifyHostKey(pub crypto.PublicKey, digest, sig []byte) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if ecdsa.VerifyASN1(k, digest, sig) {
			return nil
		}
	case ed25519.PublicKey:
		if ed25519.Verify(k, digest, sig) {
			return nil
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("%w: %d-bit RSA host key", ErrWeakAlgorithm, k.N.BitLen())
		}
		if rsa.VerifyPSS(k, crypto.SHA256, digest, sig, nil) == nil {
			return nil
		}
	default:
		return fmt.Errorf("%w: key type %T", ErrHostKey, pub)
	}
	return ErrHostKey
}

// SignHostKeyProof makes the ModeHostKey proof with a host key: ECDSA,
// Ed25519 or RSA (PSS).
func SignHostKeyProof(key crypto.Signer, challenge, akName, releaseKey []byte) (*HostKeyProof, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("attest: host key: %v", err)
	}
	digest := HostKeyMessage(challenge, akName, releaseKey)
	var opts crypto.SignerOpts = crypto.SHA256
	switch key.Public().(type) {
	case ed25519.PublicKey:
		opts = crypto.Hash(0)
	case *rsa.PublicKey:
		opts = &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}
	}
	sig, err := key.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("attest: host key signature: %v", err)
	}
	return &HostKeyProof{PublicKey: der, Signature: sig}, nil
}
