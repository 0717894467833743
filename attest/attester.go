package attest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/shieldvm/shieldvm/measure"
)

// AKAlgorithm is the key type of the attestation key an [Attester] makes.
type AKAlgorithm int

const (
	// AKECCP256 is an ECDSA P-256 key signing with SHA-256.
	AKECCP256 AKAlgorithm = iota
	// AKRSA2048 is an RSA-2048 key signing RSASSA-PKCS1-v1_5 with SHA-256.
	AKRSA2048
)

// DefaultEventLogPath is where Linux exposes the firmware's TCG event log.
const DefaultEventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// AttesterConfig configures an [Attester]. The zero value is usable on a
// Linux host with a TPM.
type AttesterConfig struct {
	// AK is the AK's algorithm. If zero, ECDSA P-256.
	AK AKAlgorithm
	// AKHandle is a persistent handle (0x81xxxxxx) that holds the AK. If
	// zero, the AK is a primary key of the endorsement hierarchy, derived
	// again from the same template each time, so it is the same key
	// across restarts without being stored.
	AKHandle tpm2.TPMHandle
	// PCRs are the registers to quote. If nil, PCRs 0-15 (the static root
	// of trust: firmware, boot loader, OS loader, OS).
	PCRs []uint
	// Banks are the PCR banks to quote. If nil, SHA-256.
	Banks []measure.HashAlg
	// EventLog returns the boot event log. If nil, it is read from
	// [DefaultEventLogPath].
	EventLog func(ctx context.Context) ([]byte, error)
}

// An Attester is the host side of attestation: it holds an AK in the
// host's TPM, activates the verifier's credentials with the EK, quotes the
// PCRs and collects the event log. It works over any go-tpm transport: a
// device (/dev/tpmrm0), the reference simulator, a software vTPM.
//
// An Attester is safe for concurrent use; it sends one command sequence to
// the TPM at a time. Close flushes the keys it loaded.
type Attester struct {
	mu    sync.Mutex
	tpm   transport.TPM
	cfg   AttesterConfig
	ak    tpm2.NamedHandle
	akPub []byte // TPMT_PUBLIC
	akTr  bool   // ak is transient and must be flushed
	ek    tpm2.NamedHandle
	ekPub []byte
}

// akTemplate returns the AK template: a restricted signing key, fixed to
// the TPM, whose private part the TPM generated (TPM 2.0 Library, Part 2,
// section 8.3.3.1), usable with a password only for the user role.
func akTemplate(alg AKAlgorithm) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	}
	switch alg {
	case AKECCP256:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				CurveID: tpm2.TPMECCNistP256,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	case AKRSA2048:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("attest: unknown AK algorithm %d", alg)
}

// NewAttester makes (or loads) the AK and the RSA-2048 EK (TCG EK
// Credential Profile template L-1) in the TPM.
func NewAttester(ctx context.Context, tpm transport.TPM, cfg AttesterConfig) (*Attester, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.PCRs == nil {
		for i := range uint(16) {
			cfg.PCRs = append(cfg.PCRs, i)
		}
	}
	for _, p := range cfg.PCRs {
		if p >= 24 {
			return nil, fmt.Errorf("attest: PCR %d does not exist", p)
		}
	}
	if cfg.Banks == nil {
		cfg.Banks = []measure.HashAlg{measure.SHA256}
	}
	a := &Attester{tpm: tpm, cfg: cfg}
	ek, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: creating the EK: %w", err)
	}
	a.ek = tpm2.NamedHandle{Handle: ek.ObjectHandle, Name: ek.Name}
	a.ekPub = bytes.Clone(ek.OutPublic.Bytes())
	if cfg.AKHandle != 0 {
		rp, err := tpm2.ReadPublic{ObjectHandle: cfg.AKHandle}.Execute(tpm)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("attest: reading the AK at %#x: %w", uint32(cfg.AKHandle), err)
		}
		a.ak = tpm2.NamedHandle{Handle: cfg.AKHandle, Name: rp.Name}
		a.akPub = bytes.Clone(rp.OutPublic.Bytes())
	} else {
		tmpl, err := akTemplate(cfg.AK)
		if err != nil {
			a.Close()
			return nil, err
		}
		ak, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.TPMRHEndorsement,
			InPublic:      tpm2.New2B(tmpl),
		}.Execute(tpm)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("attest: creating the AK: %w", err)
		}
		a.ak = tpm2.NamedHandle{Handle: ak.ObjectHandle, Name: ak.Name}
		a.akPub = bytes.Clone(ak.OutPublic.Bytes())
		a.akTr = true
	}
	if _, err := ParseAKPublic(a.akPub); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Close flushes the EK and a transient AK from the TPM. It does not close
// the transport.
func (a *Attester) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	if a.ek.Handle != 0 {
		if _, err := (tpm2.FlushContext{FlushHandle: a.ek.Handle}).Execute(a.tpm); err != nil {
			errs = append(errs, err)
		}
		a.ek.Handle = 0
	}
	if a.akTr && a.ak.Handle != 0 {
		if _, err := (tpm2.FlushContext{FlushHandle: a.ak.Handle}).Execute(a.tpm); err != nil {
			errs = append(errs, err)
		}
		a.ak.Handle = 0
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("attest: flushing keys: %w", err)
	}
	return nil
}

// AKPublic returns the AK's TPMT_PUBLIC.
func (a *Attester) AKPublic() []byte { return bytes.Clone(a.akPub) }

// EKPublic returns the EK's TPMT_PUBLIC.
func (a *Attester) EKPublic() []byte { return bytes.Clone(a.ekPub) }

// Activate runs TPM2_ActivateCredential: the TPM decrypts the credential
// with the EK only if it was made for the name of the AK it holds. The EK
// is authorized with TPM2_PolicySecret(TPM_RH_ENDORSEMENT), the EK
// template's policy.
func (a *Attester) Activate(ctx context.Context, c Credential) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ek.Handle == 0 {
		return nil, errors.New("attest: attester is closed")
	}
	ekAuth := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(t transport.TPM, h tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{
			AuthHandle:    tpm2.TPMRHEndorsement,
			PolicySession: h,
			NonceTPM:      nonce,
		}.Execute(t)
		return err
	})
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: a.ak.Handle, Name: a.ak.Name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: a.ek.Handle, Name: a.ek.Name, Auth: ekAuth},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: c.IDObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: c.EncryptedSecret},
	}.Execute(a.tpm)
	if err != nil {
		return nil, fmt.Errorf("attest: TPM2_ActivateCredential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

// Attest quotes the configured PCRs with qualifying data
// QualifyingData(challenge, releaseKey), reads their values and collects
// the event log. The evidence it returns has no mode or identity proof
// yet; [Attester.AttestTPM] adds the TPM proof, and a caller of the other
// modes adds its own.
func (a *Attester) Attest(ctx context.Context, challenge, releaseKey []byte) (*Evidence, error) {
	if len(challenge) != ChallengeSize {
		return nil, fmt.Errorf("attest: challenge of %d bytes", len(challenge))
	}
	readLog := a.cfg.EventLog
	if readLog == nil {
		readLog = func(context.Context) ([]byte, error) { return os.ReadFile(DefaultEventLogPath) }
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ak.Handle == 0 {
		return nil, errors.New("attest: attester is closed")
	}
	sel := tpm2.TPMLPCRSelection{}
	for _, b := range a.cfg.Banks {
		sel.PCRSelections = append(sel.PCRSelections, tpm2.TPMSPCRSelection{
			Hash:      tpm2.TPMIAlgHash(b),
			PCRSelect: tpm2.PCClientCompatible.PCRs(a.cfg.PCRs...),
		})
	}
	qd := QualifyingData(challenge, releaseKey)
	ak, err := ParseAKPublic(a.akPub)
	if err != nil {
		return nil, err
	}
	// The PCRs may be extended between the quote and the read; try again
	// when the values read do not match the quoted digest.
	var lastErr error
	for range 3 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: a.ak.Handle, Name: a.ak.Name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: qd},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      sel,
		}.Execute(a.tpm)
		if err != nil {
			return nil, fmt.Errorf("attest: TPM2_Quote: %w", err)
		}
		pcrs, err := a.readPCRs()
		if err != nil {
			return nil, err
		}
		// Read the log after the quote: events logged since are after the
		// quoted prefix, which the verifier handles; a log read before
		// could lack events the quote covers.
		log, err := readLog(ctx)
		if err != nil {
			return nil, fmt.Errorf("attest: reading the event log: %w", err)
		}
		e := &Evidence{
			Version:    EvidenceVersion,
			Challenge:  bytes.Clone(challenge),
			ReleaseKey: bytes.Clone(releaseKey),
			AKPublic:   bytes.Clone(a.akPub),
			Quote:      Quote{Attest: bytes.Clone(q.Quoted.Bytes()), Signature: tpm2.Marshal(q.Signature)},
			PCRs:       pcrs,
			EventLog:   log,
		}
		if _, lastErr = VerifyQuote(ak, e.Quote, pcrs, QuoteOptions{QualifyingData: qd, InsecureAllowSHA1: true}); lastErr == nil {
			return e, nil
		}
	}
	return nil, fmt.Errorf("attest: the PCRs kept changing during the quote: %w", lastErr)
}

// readPCRs reads the configured PCRs of every configured bank. A TPM
// returns at most 8 digests per TPM2_PCR_Read; it is called until every
// register was returned.
func (a *Attester) readPCRs() (measure.QuotedValues, error) {
	out := measure.QuotedValues{}
	for _, b := range a.cfg.Banks {
		regs := map[uint32][]byte{}
		want := append([]uint(nil), a.cfg.PCRs...)
		for len(want) > 0 {
			rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
				Hash: tpm2.TPMIAlgHash(b), PCRSelect: tpm2.PCClientCompatible.PCRs(want...),
			}}}}.Execute(a.tpm)
			if err != nil {
				return nil, fmt.Errorf("attest: TPM2_PCR_Read: %w", err)
			}
			var got []uint
			for _, s := range rsp.PCRSelectionOut.PCRSelections {
				if s.Hash != tpm2.TPMIAlgHash(b) {
					continue
				}
				for i, x := range s.PCRSelect {
					for bit := range 8 {
						if x&(1<<bit) != 0 {
							got = append(got, uint(8*i+bit))
						}
					}
				}
			}
			if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
				return nil, fmt.Errorf("attest: TPM2_PCR_Read of the %v bank returned %d registers and %d values", b, len(got), len(rsp.PCRValues.Digests))
			}
			for i, r := range got {
				regs[uint32(r)] = bytes.Clone(rsp.PCRValues.Digests[i].Buffer)
			}
			rest := want[:0]
			for _, r := range want {
				if _, ok := regs[uint32(r)]; !ok {
					rest = append(rest, r)
				}
			}
			want = rest
		}
		out[b] = regs
	}
	return out, nil
}

// AttestTPM answers a ModeTPM challenge: it activates the credential and
// quotes, and returns evidence with the TPM identity proof. ekCert is the
// EK certificate (DER), or nil.
func (a *Attester) AttestTPM(ctx context.Context, ch *TPMChallenge, releaseKey, ekCert []byte) (*Evidence, error) {
	secret, err := a.Activate(ctx, ch.Credential)
	if err != nil {
		return nil, err
	}
	e, err := a.Attest(ctx, ch.Challenge, releaseKey)
	if err != nil {
		return nil, err
	}
	e.Mode = ModeTPM
	e.TPM = &TPMProof{EKPublic: a.EKPublic(), EKCertificate: ekCert, ActivationSecret: secret}
	return e, nil
}
