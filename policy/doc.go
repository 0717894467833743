// Package policy judges verified attestation evidence: a versioned policy
// document, decoded strictly from JSON, whose rules (the Host Guardian
// Service's attestation policies, UEFI and Linux boot rules, raw PCR
// allow-lists) evaluate the facts of a verified boot into an explainable
// [Verdict]: every rule passes or fails with a reason and the events it
// relied on, and the overall status is affirming, warning or
// contraindicated, as in EAR.
//
// Evaluation is a pure, deterministic function with no I/O and no clock.
// It takes only verified input ([Input]): PCR values whose quote signature
// was checked and a [measure.VerifiedLog].
package policy
