package attest

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/shieldvm/shieldvm/measure"
)

// Mode is how a host proves who it is (the three HGS attestation modes).
type Mode uint8

const (
	// ModeTPM: the host's TPM endorsement key is registered (or chains to
	// a manufacturer root the service trusts), and a credential activation
	// proves that the AK lives in the same TPM as the EK.
	ModeTPM Mode = 1
	// ModeHostKey: the host signs the challenge and its AK with a
	// registered host key.
	ModeHostKey Mode = 2
	// ModeAdmin: the host names itself, and the registry vouches that the
	// name belongs to a registered group (HGS's admin-trusted mode). The
	// name is not proven cryptographically: the registry must authenticate
	// the caller itself (for example by the TLS peer in ctx).
	ModeAdmin Mode = 3
)

// String returns "tpm", "host-key" or "admin".
func (m Mode) String() string {
	switch m {
	case ModeTPM:
		return "tpm"
	case ModeHostKey:
		return "host-key"
	case ModeAdmin:
		return "admin"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode is the inverse of [Mode.String].
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{ModeTPM, ModeHostKey, ModeAdmin} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("attest: unknown mode %q", s)
}

// EvidenceVersion is the version of the evidence encoding.
const EvidenceVersion = 1

// MaxEvidenceSize bounds the encoded evidence [ParseEvidence] accepts.
const MaxEvidenceSize = 8 << 20

// Evidence is what a host sends to the verifier: a TPM quote, the PCR
// values it covers, the boot event log, the AK, and the identity proof of
// its mode. It is encoded as deterministic CBOR (RFC 8949, section 4.2.1)
// with small integer keys.
//
// Everything in Evidence comes from the host and is untrusted until
// [Verifier.Verify] has checked it.
type Evidence struct {
	Version uint `cbor:"0,keyasint"`
	Mode    Mode `cbor:"1,keyasint"`
	// Challenge is the verifier's challenge the quote answers.
	Challenge []byte `cbor:"2,keyasint"`
	// ReleaseKey is the host's key-release public key, which the token
	// will be bound to. Its encoding is the key protector's business.
	ReleaseKey []byte `cbor:"3,keyasint"`
	// AKPublic is the AK's TPMT_PUBLIC.
	AKPublic []byte `cbor:"4,keyasint"`
	// Quote is a TPM2_Quote with qualifying data
	// QualifyingData(Challenge, ReleaseKey).
	Quote Quote `cbor:"5,keyasint"`
	// PCRs are the values of the quoted PCRs, by bank.
	PCRs measure.QuotedValues `cbor:"6,keyasint"`
	// EventLog is the TCG boot event log.
	EventLog []byte `cbor:"7,keyasint"`

	// TPM is the identity proof of ModeTPM.
	TPM *TPMProof `cbor:"8,keyasint,omitempty"`
	// HostKey is the identity proof of ModeHostKey.
	HostKey *HostKeyProof `cbor:"9,keyasint,omitempty"`
	// Admin is the identity claim of ModeAdmin.
	Admin *AdminClaim `cbor:"10,keyasint,omitempty"`
}

// TPMProof ties the AK to a registered endorsement key.
type TPMProof struct {
	// EKPublic is the EK's TPMT_PUBLIC.
	EKPublic []byte `cbor:"1,keyasint"`
	// EKCertificate is the EK certificate (DER), if the TPM has one. It
	// is required when the verifier is given manufacturer roots.
	EKCertificate []byte `cbor:"2,keyasint,omitempty"`
	// ActivationSecret is what TPM2_ActivateCredential recovered from the
	// credential the verifier made for this challenge, EK and AK.
	ActivationSecret []byte `cbor:"3,keyasint"`
}

// HostKeyProof is a signature by a registered host key over
// [HostKeyMessage] of the challenge, AK name and release key.
type HostKeyProof struct {
	// PublicKey is the host key, PKIX DER.
	PublicKey []byte `cbor:"1,keyasint"`
	// Signature is an ECDSA (ASN.1), Ed25519 or RSA-PSS signature, with
	// SHA-256 for ECDSA and RSA.
	Signature []byte `cbor:"2,keyasint"`
}

// AdminClaim names the host for admin-trusted attestation.
type AdminClaim struct {
	HostID string `cbor:"1,keyasint"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if decMode, err = (cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   16,
		MaxArrayElements:  4096,
		MaxMapPairs:       4096,
	}).DecMode(); err != nil {
		panic(err)
	}
}

// ErrMalformed is wrapped by every decoding error of evidence and tokens.
var ErrMalformed = errors.New("attest: malformed")

// Marshal encodes the evidence.
func (e *Evidence) Marshal() ([]byte, error) {
	if e.Version == 0 {
		c := *e
		c.Version = EvidenceVersion
		e = &c
	}
	b, err := encMode.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("attest: encoding evidence: %v", err)
	}
	return b, nil
}

// ParseEvidence decodes evidence strictly: unknown keys, duplicate keys,
// indefinite lengths and tags are errors, as are an unknown version or
// mode, and a proof that does not match the mode. It checks the form only;
// nothing in the result is verified.
func ParseEvidence(data []byte) (*Evidence, error) {
	if len(data) > MaxEvidenceSize {
		return nil, fmt.Errorf("%w evidence: %d bytes, more than %d", ErrMalformed, len(data), MaxEvidenceSize)
	}
	var e Evidence
	if err := decMode.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("%w evidence: %v", ErrMalformed, err)
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	return &e, nil
}

func (e *Evidence) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w evidence: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	if e.Version != EvidenceVersion {
		return bad("version %d, want %d", e.Version, EvidenceVersion)
	}
	proofs := 0
	for _, p := range []bool{e.TPM != nil, e.HostKey != nil, e.Admin != nil} {
		if p {
			proofs++
		}
	}
	if proofs > 1 {
		return bad("%d identity proofs, want one", proofs)
	}
	switch {
	case e.Mode == ModeTPM && e.TPM == nil,
		e.Mode == ModeHostKey && e.HostKey == nil,
		e.Mode == ModeAdmin && e.Admin == nil:
		return bad("mode %v without its identity proof", e.Mode)
	case e.Mode < ModeTPM || e.Mode > ModeAdmin:
		return bad("unknown mode %d", e.Mode)
	}
	if len(e.Challenge) != ChallengeSize {
		return bad("challenge of %d bytes", len(e.Challenge))
	}
	if len(e.Quote.Attest) == 0 || len(e.Quote.Signature) == 0 || len(e.AKPublic) == 0 {
		return bad("no quote or no AK")
	}
	for alg, regs := range e.PCRs {
		if !alg.Known() {
			return bad("PCR bank %v", alg)
		}
		for r, v := range regs {
			if r >= 24 || len(v) != alg.Size() {
				return bad("%v PCR %d of %d bytes", alg, r, len(v))
			}
		}
	}
	return nil
}
