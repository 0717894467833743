package attest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// ErrActivation: the host did not recover the credential made for its EK
// and AK, so the AK is not shown to live in the TPM of that EK.
var ErrActivation = errors.New("attest: credential activation failed")

// Credential is the input of TPM2_ActivateCredential (TPM 2.0 Library,
// Part 1, section 24): the contents of a TPM2B_ID_OBJECT and of a
// TPM2B_ENCRYPTED_SECRET, made by TPM2_MakeCredential's algorithm.
type Credential struct {
	IDObject        []byte `cbor:"1,keyasint" json:"id_object"`
	EncryptedSecret []byte `cbor:"2,keyasint" json:"encrypted_secret"`
}

// TPMChallenge is a challenge for ModeTPM, with the credential the host
// activates to prove its AK and EK share a TPM.
type TPMChallenge struct {
	Challenge  []byte     `cbor:"1,keyasint" json:"challenge"`
	Credential Credential `cbor:"2,keyasint" json:"credential"`
}

// ekPublic is a parsed endorsement key.
type ekPublic struct {
	pub  *publicArea
	name []byte
}

// parseEKPublic decodes an EK's TPMT_PUBLIC and checks that it is a
// storage key that never leaves its TPM: restricted, decrypt, fixedTPM,
// not sign (TCG EK Credential Profile, section 2.1.5).
func parseEKPublic(b []byte) (*ekPublic, error) {
	p, err := parsePublic(b)
	if err != nil {
		return nil, fmt.Errorf("attest: EK: %w", err)
	}
	const want = attrRestricted | attrDecrypt | attrFixedTPM | attrFixedParent
	if p.Attributes&want != want || p.Attributes&attrSign != 0 {
		return nil, fmt.Errorf("attest: EK attributes %#08x are not those of an endorsement key", p.Attributes)
	}
	return &ekPublic{pub: p, name: p.name()}, nil
}

// NewTPMChallenge returns a challenge for ModeTPM and the credential, bound
// to it, that the host must activate with its EK to show that the AK lives
// in the same TPM. ekPublic and akPublic are TPMT_PUBLIC encodings. The
// credential's secret is derived from the challenge and the two names
// under the Challenger's key, so the Challenger keeps no state: any
// [Verifier] whose Challenger shares its secret checks the activation.
// A service that issues challenges on one path and verifies evidence on
// another needs only a Challenger on the first.
func (c *Challenger) NewTPMChallenge(ekPublic, akPublic []byte) (*TPMChallenge, error) {
	return c.newTPMChallenge(ekPublic, akPublic)
}

// newTPMChallenge makes a challenge and the credential bound to it: the
// secret is derived from the challenge and the names of the EK and AK, so
// the verifier keeps no state (see [Challenger]).
func (c *Challenger) newTPMChallenge(ekPub, akPub []byte) (*TPMChallenge, error) {
	ek, err := parseEKPublic(ekPub)
	if err != nil {
		return nil, err
	}
	ak, err := ParseAKPublic(akPub)
	if err != nil {
		return nil, err
	}
	ch, err := c.New()
	if err != nil {
		return nil, err
	}
	secret := c.activationSecret(ch, ek.name, ak.Name)
	defer clear(secret[:])
	cred, err := makeCredential(ek.pub.Raw, ak.Name, secret[:])
	if err != nil {
		return nil, err
	}
	return &TPMChallenge{Challenge: ch, Credential: *cred}, nil
}

// makeCredential is TPM2_MakeCredential in software (Part 1, section
// 24.4): the secret is encrypted for the EK and bound to the AK's name.
func makeCredential(ekTPMTPublic, akName, secret []byte) (cred *Credential, err error) {
	defer func() {
		// go-tpm's reflective decoder is not hardened against hostile
		// input; the EK was already checked by parseEKPublic, but a
		// decoder panic must never take the service down.
		if r := recover(); r != nil {
			cred, err = nil, fmt.Errorf("attest: EK public area: %v", r)
		}
	}()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekTPMTPublic)
	if err != nil {
		return nil, fmt.Errorf("attest: EK public area: %v", err)
	}
	key, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		return nil, fmt.Errorf("attest: EK: %v", err)
	}
	id, enc, err := tpm2.CreateCredential(rand.Reader, key, akName, secret)
	if err != nil {
		return nil, fmt.Errorf("attest: making credential: %v", err)
	}
	return &Credential{IDObject: id, EncryptedSecret: enc}, nil
}

// checkActivation compares the secret the host recovered with the one the
// challenge implies, in constant time.
func (c *Challenger) checkActivation(challenge []byte, ek *ekPublic, akName, got []byte) error {
	want := c.activationSecret(challenge, ek.name, akName)
	defer clear(want[:])
	if len(got) != len(want) || subtle.ConstantTimeCompare(got, want[:]) != 1 {
		return ErrActivation
	}
	return nil
}

// HostKeyMessage is what a host key signs in ModeHostKey: SHA-256 over a
// label, the challenge, the AK's name and the release key, each with its
// length. The signature binds the AK, and so the quote, to the host key.
func HostKeyMessage(challenge, akName, releaseKey []byte) []byte {
	h := sha256.New()
	h.Write([]byte("shieldvm host-key proof v1\x00"))
	for _, b := range [][]byte{challenge, akName, releaseKey} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return h.Sum(nil)
}
