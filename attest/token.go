package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/veraison/go-cose"

	"github.com/shieldvm/shieldvm/policy"
)

// TokenProfile is the eat_profile of shieldvm health tokens.
const TokenProfile = "tag:shieldvm.dev,2025:health-token/v1"

// DefaultTokenLifetime is how long a health token is valid unless the
// issuer says otherwise: HGS issues a health certificate about every 8
// hours.
const DefaultTokenLifetime = 8 * time.Hour

// MaxTokenSize bounds the tokens [VerifyToken] accepts.
const MaxTokenSize = 64 << 10

// Token errors.
var (
	// ErrTokenSignature: the token was not signed by the given key (a
	// forged token, or one from another guardian service).
	ErrTokenSignature = errors.New("attest: token signature does not verify")
	// ErrTokenExpired: the token's lifetime is over, or it was issued in
	// the future.
	ErrTokenExpired = errors.New("attest: token expired")
	// ErrTokenReleaseKey: the token is bound to another host release key.
	ErrTokenReleaseKey = errors.New("attest: token is bound to another release key")
	// ErrTokenStatus: the token does not affirm the host.
	ErrTokenStatus = errors.New("attest: token does not affirm the host")
	// ErrNotHealthy: Issue was asked for a token for a host whose result
	// is contraindicated (or was never appraised).
	ErrNotHealthy = errors.New("attest: host is not healthy")
)

// TrustVector is the AR4SI trustworthiness vector (draft-ietf-rats-ar4si,
// section 2.3): one tier per claim, StatusNone where nothing was appraised.
type TrustVector struct {
	InstanceIdentity policy.Status `cbor:"instance-identity,omitempty" json:"instance-identity,omitempty"`
	Configuration    policy.Status `cbor:"configuration,omitempty" json:"configuration,omitempty"`
	Executables      policy.Status `cbor:"executables,omitempty" json:"executables,omitempty"`
	Hardware         policy.Status `cbor:"hardware,omitempty" json:"hardware,omitempty"`
}

// HostClaims identify the host in a token.
type HostClaims struct {
	// ID is the host's registered identity.
	ID string `cbor:"1,keyasint" json:"id"`
	// Mode is the attestation mode that established it.
	Mode Mode `cbor:"2,keyasint" json:"mode"`
	// Group is the registered group, for the admin-trusted mode.
	Group string `cbor:"3,keyasint,omitempty" json:"group,omitempty"`
	// AKName is the TPM Name of the AK that signed the quote.
	AKName []byte `cbor:"4,keyasint,omitempty" json:"ak_name,omitempty"`
}

// Confirmation is the cnf claim (RFC 8747): the key the token is bound to.
type Confirmation struct {
	// ReleaseKey is the host's key-release public key.
	ReleaseKey []byte `cbor:"1,keyasint" json:"release_key"`
}

// Claims are the claims of a health token: CWT claims (RFC 8392) with
// integer keys, the EAT nonce and profile, and EAR's appraisal claims
// (draft-fv-rats-ear) with text keys.
type Claims struct {
	Issuer   string       `cbor:"1,keyasint" json:"iss"`
	Expiry   int64        `cbor:"4,keyasint" json:"exp"`
	IssuedAt int64        `cbor:"6,keyasint" json:"iat"`
	Cnf      Confirmation `cbor:"8,keyasint" json:"cnf"`
	Nonce    []byte       `cbor:"10,keyasint,omitempty" json:"eat_nonce,omitempty"`
	Profile  string       `cbor:"265,keyasint" json:"eat_profile"`

	Status   policy.Status `cbor:"ear.status" json:"ear.status"`
	Trust    TrustVector   `cbor:"ear.trustworthiness-vector" json:"ear.trustworthiness-vector"`
	PolicyID string        `cbor:"ear.appraisal-policy-id" json:"ear.appraisal-policy-id"`

	Host HostClaims `cbor:"shieldvm.host" json:"shieldvm.host"`
	// Facts are selected facts of the boot, as the verifier summarised
	// them ("secure_boot": "enabled").
	Facts map[string]string `cbor:"shieldvm.facts,omitempty" json:"shieldvm.facts,omitempty"`
}

// IssuerConfig tunes a [TokenIssuer]. The zero value is usable.
type IssuerConfig struct {
	// Name is the iss claim. If empty, "shieldvm".
	Name string
	// Lifetime is how long tokens are valid. If zero, [DefaultTokenLifetime].
	Lifetime time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
}

// A TokenIssuer signs health tokens. It is safe for concurrent use if its
// key is.
type TokenIssuer struct {
	signer cose.Signer
	cfg    IssuerConfig
}

// NewTokenIssuer returns an issuer that signs with key: ECDSA P-256 (ES256)
// or P-384 (ES384), Ed25519 (EdDSA), or RSA of 2048 bits or more (PS256).
// The key may live in an HSM.
func NewTokenIssuer(key crypto.Signer, cfg IssuerConfig) (*TokenIssuer, error) {
	alg, err := coseAlg(key.Public())
	if err != nil {
		return nil, err
	}
	s, err := cose.NewSigner(alg, key)
	if err != nil {
		return nil, fmt.Errorf("attest: %v", err)
	}
	if cfg.Name == "" {
		cfg.Name = "shieldvm"
	}
	if cfg.Lifetime < 0 {
		return nil, errors.New("attest: negative token lifetime")
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultTokenLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &TokenIssuer{signer: s, cfg: cfg}, nil
}

func coseAlg(pub crypto.PublicKey) (cose.Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return cose.AlgorithmES256, nil
		case elliptic.P384():
			return cose.AlgorithmES384, nil
		}
	case ed25519.PublicKey:
		return cose.AlgorithmEdDSA, nil
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return cose.AlgorithmPS256, nil
		}
	}
	return 0, fmt.Errorf("attest: token key %T is not ECDSA P-256/P-384, Ed25519 or RSA-2048+", pub)
}

// Issue signs a token for a verified result. It refuses results that are
// not Affirming or Warning. The token is a tagged COSE_Sign1 (RFC 9052)
// whose payload is the deterministic CBOR encoding of [Claims].
func (i *TokenIssuer) Issue(r *Result) ([]byte, error) {
	if r == nil || (r.Status != policy.Affirming && r.Status != policy.Warning) {
		return nil, ErrNotHealthy
	}
	now := i.cfg.Now()
	c := Claims{
		Issuer:   i.cfg.Name,
		IssuedAt: now.Unix(),
		Expiry:   now.Add(i.cfg.Lifetime).Unix(),
		Cnf:      Confirmation{ReleaseKey: r.ReleaseKey},
		Nonce:    r.Challenge,
		Profile:  TokenProfile,
		Status:   r.Status,
		Trust:    r.Trust,
		PolicyID: r.PolicyID,
		Host:     r.Host,
		Facts:    r.Facts,
	}
	return i.sign(&c)
}

func (i *TokenIssuer) sign(c *Claims) ([]byte, error) {
	payload, err := encMode.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("attest: encoding claims: %v", err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(i.signer.Algorithm())
	msg.Headers.Protected[cose.HeaderLabelContentType] = "application/eat+cwt"
	msg.Payload = payload
	if err := msg.Sign(rand.Reader, nil, i.signer); err != nil {
		return nil, fmt.Errorf("attest: signing token: %v", err)
	}
	return msg.MarshalCBOR()
}

// TokenOptions are the expectations of [VerifyToken]. The zero value is
// strict.
type TokenOptions struct {
	// Issuer is the expected iss claim. If empty, the issuer name is not
	// checked (the key already says who signed).
	Issuer string
	// ReleaseKey is the host release key the token must be bound to. If
	// nil, the binding is not checked here and the caller must use
	// [Token.ReleaseKey] as the only key it releases to.
	ReleaseKey []byte
	// AcceptWarning accepts tokens whose status is Warning. If false, only
	// Affirming tokens verify.
	AcceptWarning bool
	// ClockSkew is how far in the future iat may lie. If zero, one minute.
	ClockSkew time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
}

// Token is a verified health token.
type Token struct {
	Claims
	hash [32]byte
}

// ReleaseKey returns the host release public key the token is bound to.
func (t *Token) ReleaseKey() []byte { return t.Cnf.ReleaseKey }

// Hash returns SHA-256 of the token's encoding, a binding context for a
// key release made on the strength of this token.
func (t *Token) Hash() [32]byte { return t.hash }

// VerifyToken checks a health token: its COSE_Sign1 signature with key
// (the issuer's public key), its profile, its lifetime, its status and, if
// opts says so, its release key. It is safe for concurrent use.
func VerifyToken(token []byte, key crypto.PublicKey, opts TokenOptions) (*Token, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w token: %d bytes", ErrMalformed, len(token))
	}
	alg, err := coseAlg(key)
	if err != nil {
		return nil, err
	}
	v, err := cose.NewVerifier(alg, key)
	if err != nil {
		return nil, fmt.Errorf("attest: %v", err)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(token); err != nil {
		return nil, fmt.Errorf("%w token: %v", ErrMalformed, err)
	}
	if err := msg.Verify(nil, v); err != nil {
		return nil, ErrTokenSignature
	}
	var t Token
	if err := decMode.Unmarshal(msg.Payload, &t.Claims); err != nil {
		return nil, fmt.Errorf("%w token claims: %v", ErrMalformed, err)
	}
	if t.Profile != TokenProfile {
		return nil, fmt.Errorf("%w token: profile %q", ErrMalformed, t.Profile)
	}
	if opts.Issuer != "" && t.Issuer != opts.Issuer {
		return nil, fmt.Errorf("%w: issuer %q, want %q", ErrTokenSignature, t.Issuer, opts.Issuer)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	skew := opts.ClockSkew
	if skew <= 0 {
		skew = time.Minute
	}
	n := now()
	if n.Unix() >= t.Expiry {
		return nil, fmt.Errorf("%w at %s", ErrTokenExpired, time.Unix(t.Expiry, 0).UTC().Format(time.RFC3339))
	}
	if t.IssuedAt > n.Add(skew).Unix() || t.IssuedAt > t.Expiry {
		return nil, fmt.Errorf("%w: issued in the future", ErrTokenExpired)
	}
	switch {
	case t.Status == policy.Affirming:
	case t.Status == policy.Warning && opts.AcceptWarning:
	default:
		return nil, fmt.Errorf("%w: status %v", ErrTokenStatus, t.Status)
	}
	if len(t.Cnf.ReleaseKey) == 0 {
		return nil, fmt.Errorf("%w token: no release key", ErrMalformed)
	}
	if opts.ReleaseKey != nil && subtle.ConstantTimeCompare(opts.ReleaseKey, t.Cnf.ReleaseKey) != 1 {
		return nil, ErrTokenReleaseKey
	}
	t.hash = sha256.Sum256(token)
	return &t, nil
}
