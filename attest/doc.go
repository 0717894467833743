// Package attest is the attestation half of a guardian service (the role of
// the Host Guardian Service's attestation service) and of its hosts: the
// evidence a host presents, the host-side [Attester] that makes it with a
// TPM, the [Verifier] that judges it, and the health tokens it issues.
//
// # The protocol
//
//	guardian service                               host
//	Verifier.NewTPMChallenge(EK, AK) ───────────► challenge + credential
//	                                               Attester.AttestTPM:
//	                                                 TPM2_ActivateCredential (EK)
//	                                                 TPM2_Quote(AK, SHA-256(challenge ‖ release key))
//	                                                 PCR values, TCG event log
//	Verifier.Verify ◄───────────────────────────── Evidence (deterministic CBOR)
//	  challenge MAC and age (stateless: any replica verifies)
//	  quote signature, qualifying data, PCR digest   (VerifyQuote)
//	  log replay against the quoted PCRs only        (VerifyBoot, package measure)
//	  identity: activation + EK allow-list / EK certificate chain,
//	            host-key signature, or group membership (Registry)
//	  policy.Evaluate on the verified facts
//	TokenIssuer.Issue ───────────────────────────► COSE_Sign1 health token,
//	                                               bound (cnf) to the release key
//	key protection side: VerifyToken, then release to Token.ReleaseKey()
//
// # Modes
//
// [ModeTPM] binds the AK to a registered endorsement key through credential
// activation (TPM 2.0 Library, Part 1, section 24): the verifier encrypts a
// secret to the EK for the AK's name; only the TPM that holds both can
// recover it. The secret is derived from the challenge, so the verifier
// keeps no state between the two messages. [ModeHostKey] binds the AK to a
// registered host key by a signature. [ModeAdmin] trusts the registry's
// word that the host belongs to a group.
//
// # What is trusted
//
// Everything in [Evidence] is untrusted until verified. Facts are read only
// from a [measure.VerifiedLog] of registers the signed quote covers; a log
// that extends a register the quote does not cover is refused. SHA-1
// signatures and banks are refused unless the caller opts in
// (InsecureAllowSHA1), as the real Windows evidence in testdata needs.
// Without a [ReplayGuard], a challenge can be answered more than once within
// its lifetime; the token is bound to the release key, so a replay helps
// only the holder of that key.
//
// Verifiers, token issuers and the functions of this package are safe for
// concurrent use. An [Attester] serializes its TPM commands.
package attest
