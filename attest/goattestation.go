package attest

import (
	"encoding/json"
	"fmt"

	"github.com/shieldvm/shieldvm/measure"
)

// goAttestationParams is the JSON encoding of go-attestation's
// PlatformParameters (attest.PlatformParameters, v0.4-v0.6).
type goAttestationParams struct {
	AK struct {
		Public []byte
	}
	Quote struct {
		Nonce     []byte
		Alg       int
		Quote     []byte
		Signature []byte
	}
	Quotes []struct {
		Quote     []byte
		Signature []byte
	}
	Log struct {
		PCRs []struct {
			Index     uint32
			Digest    []byte
			DigestAlg int // Go's crypto.Hash
		}
		Raw []byte
	}
}

// ImportGoAttestation converts go-attestation's JSON-encoded platform
// parameters (the AK, a quote, the PCR values and the event log) into
// evidence with no mode, challenge or identity proof: what [VerifyBoot]
// needs. The quote's extra data is whatever the host was asked to sign;
// the caller must know it (go-attestation leaves Nonce empty when none was
// used).
func ImportGoAttestation(data []byte) (*Evidence, error) {
	if len(data) > MaxEvidenceSize {
		return nil, fmt.Errorf("%w go-attestation parameters: %d bytes", ErrMalformed, len(data))
	}
	var p goAttestationParams
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%w go-attestation parameters: %v", ErrMalformed, err)
	}
	e := &Evidence{
		Version:  EvidenceVersion,
		AKPublic: p.AK.Public,
		Quote:    Quote{Attest: p.Quote.Quote, Signature: p.Quote.Signature},
		PCRs:     measure.QuotedValues{},
		EventLog: p.Log.Raw,
	}
	if len(e.Quote.Attest) == 0 && len(p.Quotes) > 0 {
		e.Quote = Quote{Attest: p.Quotes[0].Quote, Signature: p.Quotes[0].Signature}
	}
	for _, pcr := range p.Log.PCRs {
		var alg measure.HashAlg
		switch pcr.DigestAlg {
		case 3: // crypto.SHA1
			alg = measure.SHA1
		case 5: // crypto.SHA256
			alg = measure.SHA256
		case 6: // crypto.SHA384
			alg = measure.SHA384
		default:
			return nil, fmt.Errorf("%w go-attestation parameters: PCR digest algorithm %d", ErrMalformed, pcr.DigestAlg)
		}
		if pcr.Index >= 24 || len(pcr.Digest) != alg.Size() {
			return nil, fmt.Errorf("%w go-attestation parameters: %v PCR %d of %d bytes", ErrMalformed, alg, pcr.Index, len(pcr.Digest))
		}
		if e.PCRs[alg] == nil {
			e.PCRs[alg] = map[uint32][]byte{}
		}
		if _, dup := e.PCRs[alg][pcr.Index]; dup {
			return nil, fmt.Errorf("%w go-attestation parameters: %v PCR %d twice", ErrMalformed, alg, pcr.Index)
		}
		e.PCRs[alg][pcr.Index] = pcr.Digest
	}
	if len(e.AKPublic) == 0 || len(e.Quote.Attest) == 0 {
		return nil, fmt.Errorf("%w go-attestation parameters: no AK or no quote", ErrMalformed)
	}
	return e, nil
}
