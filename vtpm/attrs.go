package vtpm

// checkFixedAttrs checks an object's fixedTPM and fixedParent against its
// parent's (Part 1, section 27.2; PublicAttributesValidation in the
// reference implementation): under a fixedTPM parent, or for a primary
// object (parent nil), fixedParent must equal fixedTPM; under a parent
// that can leave the TPM, the object cannot claim fixedTPM. The result is
// qualified as parameter 2, the public template of Create, CreatePrimary
// and CreateLoaded.
func checkFixedAttrs(a uint32, parent *object) uint32 {
	fixedTPM, fixedParent := a&oaFixedTPM != 0, a&oaFixedParent != 0
	if parent == nil || parent.attrs()&oaFixedTPM != 0 {
		if fixedTPM != fixedParent {
			return qualify(rcAttributes, rcP|2*rcN)
		}
	} else if fixedTPM {
		return qualify(rcAttributes, rcP|2*rcN)
	}
	return rcSuccess
}
