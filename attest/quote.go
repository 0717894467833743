package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/shieldvm/shieldvm/measure"
)

// Errors of quote verification. Each is wrapped by the error that reports
// the detail, so callers branch with errors.Is.
var (
	// ErrSignature: the quote's signature does not verify with the AK.
	ErrSignature = errors.New("attest: quote signature does not verify")
	// ErrQualifyingData: the quote's extra data is not the expected
	// qualifying data (a replayed quote, or one made for another challenge
	// or another release key).
	ErrQualifyingData = errors.New("attest: quote qualifying data does not match")
	// ErrPCRDigest: the PCR values given with the quote are not the values
	// the TPM quoted.
	ErrPCRDigest = errors.New("attest: PCR values do not match the quoted digest")
	// ErrWeakAlgorithm: SHA-1, a short RSA key or another algorithm below
	// the floor, and the caller did not opt in.
	ErrWeakAlgorithm = errors.New("attest: algorithm below the security floor")
	// ErrNotAnAK: the key is not a restricted signing key of a TPM, so
	// what it signs is not a TPM's statement.
	ErrNotAnAK = errors.New("attest: key is not a restricted, fixedTPM signing key")
)

// AKPublic is a parsed attestation key: the public area of a TPM key that
// is restricted to signing data the TPM itself produced.
type AKPublic struct {
	// Key is an *rsa.PublicKey or an *ecdsa.PublicKey.
	Key crypto.PublicKey
	// Name is the key's TPM Name (nameAlg ‖ H(TPMT_PUBLIC)), what a
	// credential activation binds and what the TPM signs as the signer.
	Name []byte
	// Public is the TPMT_PUBLIC encoding.
	Public []byte
	pub    *publicArea
}

// ParseAKPublic decodes a TPMT_PUBLIC or TPM2B_PUBLIC and checks that it
// is an attestation key: restricted, sign, fixedTPM, fixedParent and
// sensitiveDataOrigin, not decrypt (TPM 2.0 Library, Part 2, section
// 8.3.3.1). A key without these attributes could sign a forged TPMS_ATTEST.
func ParseAKPublic(b []byte) (*AKPublic, error) {
	p, err := parsePublic(b)
	if err != nil {
		return nil, err
	}
	const want = attrRestricted | attrSign | attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin
	if p.Attributes&want != want || p.Attributes&attrDecrypt != 0 {
		return nil, fmt.Errorf("%w (attributes %#08x)", ErrNotAnAK, p.Attributes)
	}
	return &AKPublic{Key: p.Key, Name: p.name(), Public: slices.Clone(p.Raw), pub: p}, nil
}

// Quote is the output of TPM2_Quote: the TPMS_ATTEST the TPM produced and
// its TPMT_SIGNATURE by the AK.
type Quote struct {
	Attest    []byte `cbor:"1,keyasint"`
	Signature []byte `cbor:"2,keyasint"`
}

// QuoteOptions are the expectations of [VerifyQuote]. The zero value is
// strict.
type QuoteOptions struct {
	// QualifyingData is the exact extra data the quote must carry: the
	// value the verifier asked the TPM to sign (for shieldvm evidence,
	// [QualifyingData] of the challenge and release key). If nil, the
	// quote must carry none; a caller that cannot know it opts out with
	// InsecureSkipQualifyingData.
	QualifyingData []byte
	// InsecureSkipQualifyingData skips the comparison of the extra data,
	// so a replayed quote verifies. Only for inspecting stored quotes
	// (as `shieldctl attest verify --no-nonce` does), never for a decision.
	InsecureSkipQualifyingData bool
	// InsecureAllowSHA1 accepts signatures with SHA-1 and quotes of the
	// SHA-1 bank (older TPM 2.0 firmware, Windows' default). If false,
	// they are rejected with ErrWeakAlgorithm.
	InsecureAllowSHA1 bool
}

// VerifiedQuote is a quote whose signature, qualifying data and PCR digest
// verified. Only its PCR values are vouched for by the TPM.
type VerifiedQuote struct {
	// PCRs holds the quoted values of exactly the selected registers.
	PCRs measure.QuotedValues
	// Selection is the quote's PCR selection, bank by bank.
	Selection []PCRSelection
	// ExtraData is the qualifying data the TPM signed.
	ExtraData []byte
	// Clock, ResetCount, RestartCount, Safe and FirmwareVersion are the
	// TPM's clock and firmware at the time of the quote.
	Clock        uint64
	ResetCount   uint32
	RestartCount uint32
	Safe         bool
	// FirmwareVersion is the TPM vendor's firmware version.
	FirmwareVersion uint64
	// SignatureHash is the hash of the signature scheme.
	SignatureHash crypto.Hash
}

// minRSABits is the smallest RSA AK accepted.
const minRSABits = 2048

// VerifyQuote checks a TPM quote against the AK that signed it and the PCR
// values that came with it:
//
//   - the TPMT_SIGNATURE over the TPMS_ATTEST verifies with ak;
//   - the TPMS_ATTEST is a quote (TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE);
//   - its extra data is opts.QualifyingData (compared in constant time);
//   - the digest of the given values of the selected PCRs, in selection
//     order, is the quoted pcrDigest (TPM 2.0 Library, Part 3, section
//     18.4: the PCRs are hashed with the hash of the signing scheme).
//
// pcrs must hold a value for every selected register; values of registers
// outside the selection are not vouched for and are left out of the result.
// VerifyQuote is safe for concurrent use.
func VerifyQuote(ak *AKPublic, q Quote, pcrs measure.QuotedValues, opts QuoteOptions) (*VerifiedQuote, error) {
	if ak == nil || ak.Key == nil {
		return nil, errors.New("attest: no attestation key")
	}
	sig, err := parseSignature(q.Signature)
	if err != nil {
		return nil, err
	}
	if err := checkSignature(ak.Key, q.Attest, sig, opts.InsecureAllowSHA1); err != nil {
		return nil, err
	}
	// The signature is good: the bytes are the TPM's. Decode them.
	a, err := parseAttest(q.Attest)
	if err != nil {
		return nil, err
	}
	if a.Type != tpmSTAttestQuote {
		return nil, fmt.Errorf("attest: TPMS_ATTEST type %#x is not a quote", a.Type)
	}
	if !opts.InsecureSkipQualifyingData {
		if len(a.ExtraData) != len(opts.QualifyingData) || subtle.ConstantTimeCompare(a.ExtraData, opts.QualifyingData) != 1 {
			return nil, ErrQualifyingData
		}
	}
	vq := &VerifiedQuote{
		PCRs:            measure.QuotedValues{},
		Selection:       a.Selection,
		ExtraData:       a.ExtraData,
		Clock:           a.Clock,
		ResetCount:      a.ResetCount,
		RestartCount:    a.RestartCount,
		Safe:            a.Safe,
		FirmwareVersion: a.FirmwareVersion,
		SignatureHash:   sig.Hash,
	}
	h := sig.Hash.New()
	for _, s := range a.Selection {
		if s.PCRs == 0 {
			continue
		}
		if s.Alg == measure.SHA1 && !opts.InsecureAllowSHA1 {
			return nil, fmt.Errorf("%w: quote of the SHA-1 bank", ErrWeakAlgorithm)
		}
		size := s.Alg.Size()
		if size == 0 {
			return nil, fmt.Errorf("attest: quote of bank %v, which this package cannot check", s.Alg)
		}
		bank := pcrs[s.Alg]
		out := make(map[uint32][]byte, 24)
		for r := range uint32(32) {
			if !s.Has(r) {
				continue
			}
			v, ok := bank[r]
			if !ok {
				return nil, fmt.Errorf("%w: no value given for quoted %v PCR %d", ErrPCRDigest, s.Alg, r)
			}
			if len(v) != size {
				return nil, fmt.Errorf("%w: %v PCR %d has %d bytes", ErrPCRDigest, s.Alg, r, len(v))
			}
			h.Write(v)
			out[r] = v
		}
		vq.PCRs[s.Alg] = out
	}
	if len(vq.PCRs) == 0 {
		return nil, errors.New("attest: the quote selects no PCR")
	}
	if subtle.ConstantTimeCompare(h.Sum(nil), a.PCRDigest) != 1 {
		return nil, ErrPCRDigest
	}
	return vq, nil
}

// checkSignature verifies a TPMT_SIGNATURE over msg.
func checkSignature(key crypto.PublicKey, msg []byte, sig *signature, allowSHA1 bool) error {
	if sig.Hash == crypto.SHA1 && !allowSHA1 {
		return fmt.Errorf("%w: SHA-1 signature", ErrWeakAlgorithm)
	}
	h := sig.Hash.New()
	h.Write(msg)
	digest := h.Sum(nil)
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("%w: %d-bit RSA key", ErrWeakAlgorithm, k.N.BitLen())
		}
		switch sig.Alg {
		case algRSASSA:
			if rsa.VerifyPKCS1v15(k, sig.Hash, digest, sig.RSA) != nil {
				return ErrSignature
			}
		case algRSAPSS:
			// A TPM uses the largest salt the key allows (Part 1, B.7);
			// accept any length, as the spec lets a verifier do.
			if rsa.VerifyPSS(k, sig.Hash, digest, sig.RSA, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) != nil {
				return ErrSignature
			}
		default:
			return fmt.Errorf("%w: %#x signature by an RSA key", ErrSignature, sig.Alg)
		}
	case *ecdsa.PublicKey:
		if sig.Alg != algECDSA {
			return fmt.Errorf("%w: %#x signature by an ECC key", ErrSignature, sig.Alg)
		}
		if len(sig.R) == 0 || len(sig.S) == 0 {
			return ErrSignature
		}
		r := new(big.Int).SetBytes(sig.R)
		s := new(big.Int).SetBytes(sig.S)
		if !ecdsa.Verify(k, digest, r, s) {
			return ErrSignature
		}
	default:
		return fmt.Errorf("attest: key type %T is not supported", key)
	}
	return nil
}
