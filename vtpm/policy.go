package vtpm

// policyState is the policy-specific state of a policy or trial session
// (Part 1, section 19.7): the running policyDigest and the deferred checks
// that the policy commands record for the command the session authorizes.
type policyState struct {
	digest []byte // policyDigest, the size of the session's hash

	// authValueNeeded (PolicyAuthValue) makes the session an HMAC
	// session for the authorized entity: its command HMAC is checked with
	// checkHMAC and its response carries an HMAC.
	authValueNeeded bool
	// passwordNeeded (PolicyPassword) makes the session's hmac field a
	// password, compared with the entity's authValue.
	passwordNeeded bool
}

// authorizePolicy checks a policy session used for authorization (Part 1,
// section 19.7.1). Policy evaluation is not implemented yet.
func (t *TPM) authorizePolicy(c *call, i int, q uint32) uint32 {
	return rcAuthUnavailable
}
