// Package keyprotector keeps a shielded VM's transport key TK where only its
// guardians and one attested host can reach it.
//
// TK (32 random bytes) exists in two forms only: wrapped to each guardian of
// a [KeyProtector] (the VM owner and the fabric's guardian services), or
// sealed by [Release] to the release key of one host that a guardian service
// attested. Keys for each use (the vTPM state key, migration, shielding
// data) are derived from it with [TransportKey.Derive].
//
// # Threat model
//
// The host administrator holds the VM files, the key protector and the
// network, and is not trusted with TK. The owner's signed authorization
// fixes the guardian list and the release rules; the key protector is
// signed by the owner or by the listed guardian that re-keyed it, and MACed
// under a key derived from TK; each wrapping is bound (HPKE info) to the key
// protector id, generation and guardian key. So the host administrator can
// neither add a guardian, nor strip one, nor splice a wrapping from another
// VM, nor make a guardian re-wrap a TK of the administrator's choosing. An
// optional [RollbackStore] refuses key protectors older than one already
// seen. A key protector is all post-quantum ([SuiteMLKEM768X25519]) or all
// classical. Guardians are trusted with TK; a revoked guardian keeps what it
// already unwrapped until the next re-key. See docs/keyprotector.md for the
// wire format and the full argument.
//
// # Where to start
//
// [GenerateGuardian] (or [NewTPMGuardian], or [NewGuardian] for keys in an
// HSM) makes guardians; [New] makes a key protector; a guardian service calls
// [Release] with the host facts taken from a verified health token; the host
// calls [Open]. [NewShieldingData] protects provisioning secrets and the
// list of trusted template disks for the same guardians.
//
// Nothing in this package talks to a network. Values are immutable and safe
// for concurrent use unless documented otherwise.
package keyprotector
