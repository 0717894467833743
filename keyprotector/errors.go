package keyprotector

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on them with [errors.Is]. No error returned
// by this package contains key material.
var (
	// ErrMalformed means an encoding did not parse: bad CBOR, a missing or
	// unknown field, a value out of range, or an encoding that is not the
	// deterministic one.
	ErrMalformed = errors.New("keyprotector: malformed encoding")
	// ErrSignature means a COSE_Sign1 signature did not verify, or was made
	// by a key that may not sign that object.
	ErrSignature = errors.New("keyprotector: bad signature")
	// ErrMAC means the key protector's MAC, keyed from the transport key,
	// did not match: the body was changed by someone who does not hold TK.
	ErrMAC = errors.New("keyprotector: key protector MAC mismatch")
	// ErrUnwrap means a wrapped key did not open with the key offered: the
	// stanza was made for another key protector, generation or key.
	ErrUnwrap = errors.New("keyprotector: wrapped key did not open")
	// ErrMixedSuites means post-quantum and classical suites were mixed in
	// one key protector, or a release was asked to a host key of the other
	// kind.
	ErrMixedSuites = errors.New("keyprotector: post-quantum and classical suites mixed")
	// ErrNotOwner means an operation that only the owner may perform
	// (Grant, Revoke) was attempted by another guardian.
	ErrNotOwner = errors.New("keyprotector: only the owner may do this")
	// ErrRollback is wrapped by [*RollbackError].
	ErrRollback = errors.New("keyprotector: rollback")
	// ErrOwnerChanged means an anti-rollback store saw this key protector
	// id with another owner: someone re-signed it with their own key.
	ErrOwnerChanged = errors.New("keyprotector: key protector owner changed")
	// ErrDenied is wrapped by [*DeniedError].
	ErrDenied = errors.New("keyprotector: release denied")
	// ErrNotListed is wrapped by [*NotListedError].
	ErrNotListed = errors.New("keyprotector: guardian not listed")
	// ErrValidity means a guardian descriptor is outside its validity period.
	ErrValidity = errors.New("keyprotector: guardian descriptor not valid at this time")
	// ErrUnsupported means a suite or signature algorithm is not one this
	// package implements.
	ErrUnsupported = errors.New("keyprotector: unsupported algorithm")
	// ErrTemplateNotTrusted means a template disk is not in the shielding
	// data's volume signature catalog.
	ErrTemplateNotTrusted = errors.New("keyprotector: template disk not trusted by the owner")
)

// NotListedError reports that a guardian is not in a key protector's
// owner-signed guardian list.
type NotListedError struct {
	KeyID KeyID // the key id of the guardian that was refused
}

func (e *NotListedError) Error() string {
	return fmt.Sprintf("keyprotector: guardian %s is not listed in the key protector", e.KeyID)
}

// Unwrap returns [ErrNotListed].
func (e *NotListedError) Unwrap() error { return ErrNotListed }

// RollbackError reports that an anti-rollback store has already seen a newer
// state of a key protector than the one presented.
type RollbackError struct {
	ID                ID
	Presented, Latest State
}

func (e *RollbackError) Error() string {
	return fmt.Sprintf("keyprotector: rollback of key protector %s: presented generation %d authorization %d, already saw generation %d authorization %d",
		e.ID, e.Presented.Generation, e.Presented.AuthorizationVersion, e.Latest.Generation, e.Latest.AuthorizationVersion)
}

// Unwrap returns [ErrRollback].
func (e *RollbackError) Unwrap() error { return ErrRollback }

// DeniedError reports that a key protector's release rules refused a host.
type DeniedError struct {
	Reason string // a fixed, non-secret explanation
}

func (e *DeniedError) Error() string { return "keyprotector: release denied: " + e.Reason }

// Unwrap returns [ErrDenied].
func (e *DeniedError) Unwrap() error { return ErrDenied }

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

func shortHex(b []byte) string {
	if len(b) > 8 {
		b = b[:8]
	}
	return hex.EncodeToString(b)
}
