// Package api is the wire protocol between the example guardian service
// (examples/hgs) and the example host agent (examples/host): the paths, the
// request and response bodies, their strict CBOR decoders, and the problem
// documents (RFC 9457) every error is reported with.
//
// Requests and responses of the protocol are deterministic CBOR (RFC 8949,
// section 4.2.1) with small integer keys, sent as application/cbor. The
// decoders here are the only code that reads request bodies: they refuse
// oversized input before parsing, unknown and duplicate keys, indefinite
// lengths, tags and trailing bytes, and never panic (FuzzDecoders).
// Administrative requests are JSON (policy documents) or PEM (host keys),
// for use with curl.
package api

import (
	"crypto/hpke"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/keyprotector"
	"github.com/shieldvm/shieldvm/policy"
)

// Paths of the service.
const (
	// PathGuardian (GET) returns the service's guardian descriptor, the
	// metadata a VM owner puts in a key protector.
	PathGuardian = "/v1/guardian"
	// PathChallenge (POST ChallengeRequest) returns an attest.TPMChallenge.
	PathChallenge = "/v1/challenge"
	// PathAttest (POST attest.Evidence) returns an AttestResponse: a
	// health token.
	PathAttest = "/v1/attest"
	// PathRelease (POST ReleaseRequest) returns a ReleaseResponse: the
	// VM's transport key sealed to the host's release key.
	PathRelease = "/v1/release"
	// PathHealth (GET) answers "ok" while the service runs.
	PathHealth = "/healthz"

	// PathAdminPolicy (GET, PUT application/json) is the attestation
	// policy document (package policy).
	PathAdminPolicy = "/v1/admin/policy"
	// PathAdminHosts (GET) lists the registered hosts as JSON;
	// PathAdminHosts + "/{id}?mode=tpm|host-key" (PUT the EK or host key
	// as a PEM public key; DELETE) registers or removes one.
	PathAdminHosts = "/v1/admin/hosts"
)

// Content types.
const (
	ContentTypeCBOR    = "application/cbor"
	ContentTypeJSON    = "application/json"
	ContentTypePEM     = "application/x-pem-file"
	ContentTypeProblem = "application/problem+json"
)

// Size caps of request bodies. A larger body is refused with 413 before it
// is read further.
const (
	MaxChallengeRequestSize = 8 << 10
	MaxEvidenceSize         = 1 << 20
	MaxReleaseRequestSize   = keyprotector.MaxKeyProtectorSize + attest.MaxTokenSize + 8<<10
	MaxPolicySize           = policy.MaxPolicySize
	MaxHostKeySize          = 16 << 10
	// MaxTPMPublicSize bounds an EK or AK TPMT_PUBLIC in a challenge
	// request (TPM 2.0 Library, Part 2: a TPMT_PUBLIC of an RSA-4096 key
	// with a policy is well under 1 KiB).
	MaxTPMPublicSize = 2 << 10
)

// ChallengeRequest asks for a challenge. With an EK and an AK it is a
// ModeTPM challenge, with a credential made for them; with neither, a plain
// challenge for ModeHostKey.
type ChallengeRequest struct {
	// EKPublic and AKPublic are TPMT_PUBLIC encodings.
	EKPublic []byte `cbor:"1,keyasint,omitempty"`
	AKPublic []byte `cbor:"2,keyasint,omitempty"`
}

// AttestResponse carries a health token.
type AttestResponse struct {
	// Token is a COSE_Sign1 health token (attest.VerifyToken).
	Token []byte `cbor:"1,keyasint"`
	// Expires is the token's expiry, Unix seconds.
	Expires int64 `cbor:"2,keyasint"`
	// Status is the policy's verdict ("affirming" or "warning").
	Status string `cbor:"3,keyasint"`
	// PolicyID is the id of the policy that judged the host.
	PolicyID string `cbor:"4,keyasint"`
	// HostID is the host's registered name.
	HostID string `cbor:"5,keyasint"`
}

// ReleaseRequest asks for the transport key of a VM.
type ReleaseRequest struct {
	// KeyProtector is the VM's encoded key protector.
	KeyProtector []byte `cbor:"1,keyasint"`
	// Token is the host's health token. Without one, the service answers
	// 401 with CodeAttestationRequired: it does not know the host yet.
	Token []byte `cbor:"2,keyasint,omitempty"`
	// ReleaseKey is the host's release public key (MarshalReleaseKey).
	// It must be the key the token is bound to: a token of another host
	// is refused with CodeTokenOtherHost. (The release is sealed to the
	// token's key in any case; the check makes a misuse visible.)
	ReleaseKey []byte `cbor:"3,keyasint"`
}

// ReleaseResponse carries a keyprotector.Release response: TK (and TK'
// with the re-keyed key protector) sealed to the release key.
type ReleaseResponse struct {
	Response []byte `cbor:"1,keyasint"`
}

// HostRecord is a registered host, as the admin API lists it.
type HostRecord struct {
	ID string `json:"id"`
	// Mode is "tpm" (the key is the TPM's EK) or "host-key".
	Mode string `json:"mode"`
	// KeySHA256 is SHA-256 of the key's PKIX encoding, hex.
	KeySHA256 string `json:"key_sha256"`
}

// Problem is an RFC 9457 problem document: every error response is one,
// as application/problem+json.
type Problem struct {
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Code says what went wrong, for programs (one of the Code constants).
	Code string `json:"code"`
	// Verdict explains a policy denial rule by rule.
	Verdict *policy.Verdict `json:"verdict,omitempty"`
}

// Problem codes.
const (
	CodeBadRequest          = "bad_request"
	CodeTooLarge            = "too_large"
	CodeContentType         = "unsupported_content_type"
	CodeMalformed           = "malformed"
	CodeNotFound            = "not_found"
	CodeMethod              = "method_not_allowed"
	CodeUnauthorized        = "unauthorized"
	CodeAttestationRequired = "attestation_required"
	CodeChallenge           = "challenge_rejected"
	CodeEvidence            = "evidence_rejected"
	CodeUnregistered        = "unregistered"
	CodeDenied              = "denied"
	CodeTokenInvalid        = "token_invalid"
	CodeTokenExpired        = "token_expired"
	CodeTokenOtherHost      = "token_other_host"
	CodeKeyProtector        = "key_protector_invalid"
	CodeNotListed           = "guardian_not_listed"
	CodeRollback            = "rollback"
	CodeReleaseDenied       = "release_denied"
	CodeNoPolicy            = "no_policy"
	CodeInternal            = "internal"
)

// ErrMalformed is wrapped by every error of the decoders.
var ErrMalformed = errors.New("api: malformed request")

var (
	decMode cbor.DecMode
	encMode cbor.EncMode
)

func init() {
	var err error
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes a request or response as deterministic CBOR.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

func decode(data []byte, limit int, v any, what string) error {
	if len(data) > limit {
		return fmt.Errorf("%w: %s of %d bytes, limit %d", ErrMalformed, what, len(data), limit)
	}
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	return nil
}

// DecodeChallengeRequest decodes a ChallengeRequest strictly.
func DecodeChallengeRequest(data []byte) (*ChallengeRequest, error) {
	var r ChallengeRequest
	if err := decode(data, MaxChallengeRequestSize, &r, "challenge request"); err != nil {
		return nil, err
	}
	if (len(r.EKPublic) == 0) != (len(r.AKPublic) == 0) {
		return nil, fmt.Errorf("%w: challenge request: give both the EK and the AK public areas, or neither", ErrMalformed)
	}
	if len(r.EKPublic) == 0 {
		r.EKPublic, r.AKPublic = nil, nil
	}
	if len(r.EKPublic) > MaxTPMPublicSize || len(r.AKPublic) > MaxTPMPublicSize {
		return nil, fmt.Errorf("%w: challenge request: public area over %d bytes", ErrMalformed, MaxTPMPublicSize)
	}
	return &r, nil
}

// DecodeReleaseRequest decodes a ReleaseRequest strictly. A missing token
// is not an error here: the service answers it with 401.
func DecodeReleaseRequest(data []byte) (*ReleaseRequest, error) {
	var r ReleaseRequest
	if err := decode(data, MaxReleaseRequestSize, &r, "release request"); err != nil {
		return nil, err
	}
	switch {
	case len(r.KeyProtector) == 0:
		return nil, fmt.Errorf("%w: release request: no key protector", ErrMalformed)
	case len(r.KeyProtector) > keyprotector.MaxKeyProtectorSize:
		return nil, fmt.Errorf("%w: release request: key protector over %d bytes", ErrMalformed, keyprotector.MaxKeyProtectorSize)
	case len(r.Token) > attest.MaxTokenSize:
		return nil, fmt.Errorf("%w: release request: token over %d bytes", ErrMalformed, attest.MaxTokenSize)
	case len(r.ReleaseKey) == 0:
		return nil, fmt.Errorf("%w: release request: no release key", ErrMalformed)
	}
	if _, err := ParseReleaseKey(r.ReleaseKey); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeAttestResponse decodes an AttestResponse (the host side).
func DecodeAttestResponse(data []byte) (*AttestResponse, error) {
	var r AttestResponse
	if err := decode(data, attest.MaxTokenSize+4<<10, &r, "attest response"); err != nil {
		return nil, err
	}
	if len(r.Token) == 0 {
		return nil, fmt.Errorf("%w: attest response: no token", ErrMalformed)
	}
	return &r, nil
}

// DecodeReleaseResponse decodes a ReleaseResponse (the host side).
func DecodeReleaseResponse(data []byte) (*ReleaseResponse, error) {
	var r ReleaseResponse
	if err := decode(data, 2*keyprotector.MaxKeyProtectorSize, &r, "release response"); err != nil {
		return nil, err
	}
	if len(r.Response) == 0 {
		return nil, fmt.Errorf("%w: release response: empty", ErrMalformed)
	}
	return &r, nil
}

// DecodeTPMChallenge decodes the challenge the service sent (the host
// side).
func DecodeTPMChallenge(data []byte) (*attest.TPMChallenge, error) {
	var c attest.TPMChallenge
	if err := decode(data, 16<<10, &c, "challenge"); err != nil {
		return nil, err
	}
	if len(c.Challenge) != attest.ChallengeSize {
		return nil, fmt.Errorf("%w: challenge of %d bytes", ErrMalformed, len(c.Challenge))
	}
	return &c, nil
}

// The suites a host release key may have (keyprotector.Suite values are
// their HPKE KEM identifiers).
var releaseSuites = []keyprotector.Suite{keyprotector.SuiteX25519, keyprotector.SuiteP256, keyprotector.SuiteMLKEM768X25519}

// MarshalReleaseKey encodes a host release public key for evidence and
// tokens: its HPKE KEM identifier (2 bytes, big-endian) ‖ its
// SerializePublicKey encoding (RFC 9180, section 4).
func MarshalReleaseKey(k hpke.PublicKey) []byte {
	return append(binary.BigEndian.AppendUint16(nil, k.KEM().ID()), k.Bytes()...)
}

// ParseReleaseKey decodes MarshalReleaseKey's encoding, for the suites a
// key protector can be released to.
func ParseReleaseKey(b []byte) (hpke.PublicKey, error) {
	if len(b) < 3 || len(b) > 4<<10 {
		return nil, fmt.Errorf("%w: release key of %d bytes", ErrMalformed, len(b))
	}
	id := binary.BigEndian.Uint16(b)
	ok := false
	for _, s := range releaseSuites {
		ok = ok || uint16(s) == id
	}
	if !ok {
		return nil, fmt.Errorf("%w: release key suite %#04x", ErrMalformed, id)
	}
	kem, err := hpke.NewKEM(id)
	if err != nil {
		return nil, fmt.Errorf("%w: release key: %v", ErrMalformed, err)
	}
	k, err := kem.NewPublicKey(b[2:])
	if err != nil {
		return nil, fmt.Errorf("%w: release key: %v", ErrMalformed, err)
	}
	return k, nil
}
