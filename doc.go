// Package shieldvm is the root of an embeddable implementation of the
// shielding protocol of shielded virtual machines: a VM whose virtual TPM
// state and secrets open only on a host that a guardian service has attested
// to be healthy, in the spirit of the Host Guardian Service of Windows Server
// 2016.
//
// This package holds no code; it documents the module. Hypervisor vendors
// import the packages below to build their own guardian service (attestation
// and key protection) and their own host components (the host agent and one
// vTPM per VM).
//
// # The protocol
//
//	VM owner                 Guardian service (HGS)                   Host
//	owner guardian keys      fabric guardian keys, policy,            host TPM, boot event log,
//	                         host registry, token-signing key         host key-release key
//	keyprotector.New: a random transport key TK, wrapped to every guardian,
//	the guardian list signed by the owner; the key protector travels with the VM.
//	1. challenge   <-------------------------------------------------- "I need a key"
//	2. evidence    <-- quote(nonce ‖ H(host release public key)), PCRs, event log, identity proof
//	   attest.Verifier: quote signature, nonce, PCR digest, measure replay of the
//	   log, policy.Evaluate on the facts, host identity (EK, host key or group)
//	3. health token --------------------------------------------------> signed, short-lived,
//	                                                                       bound to the release key
//	4. key protector + token <------------------------------------------
//	   keyprotector: token valid? guardian listed? unwrap TK, seal it to the host key
//	5. sealed TK ------------------------------------------------------> the host opens TK,
//	                                                                       derives the vTPM state key,
//	                                                                       vtpm.Open(state): the VM boots
//
// # Threat model
//
// The host administrator is not trusted with tenant secrets. A VM's transport
// key exists only wrapped to its guardians or sealed to one attested host's
// release key, so:
//   - VM files copied off the host do not open: the vTPM state is sealed under
//     a key derived from TK;
//   - a host booted with a debugger, unsigned code or a foreign code-integrity
//     policy is denied by the policy, which judges what the boot measured;
//   - a host that is not registered (EK, host key or group) gets no token;
//   - a key protector whose guardian list was changed by anyone but the owner
//     fails its signature check.
//
// # Packages
//
//   - [github.com/shieldvm/shieldvm/measure]: TCG event logs: parse every real
//     format (SHA-1 legacy, crypto-agile, Intel TDX CCEL), replay them into
//     register banks and verify them against quoted values.
//   - policy: attestation policies, explainable verdicts, baselines.
//   - attest: evidence, the host-side attester, the verifier, health tokens.
//   - keyprotector: guardians, key protectors, release of a VM's transport key
//     to an attested host only.
//   - vtpm: a TPM 2.0 in pure Go, many per process, state sealed under a key;
//     vtpm/server serves it to tpm2-tools (mssim) and QEMU (swtpm socket).
//
// Arrows point one way: measure ← policy ← attest; keyprotector and vtpm stand
// alone; only the programs under examples/ compose everything.
//
// # Where to start
//
// Run the whole flow in one process (a guardian service, a VM owner, a host
// whose vtpm replays a real boot, and every attack of the threat table):
//
//	go run ./examples/demo
//
// Or the command-line tool on a real boot log:
//
//	go run ./examples/shieldctl log replay measure/testdata/eventlogs/ubuntu-2104-no-secure-boot.bin
package shieldvm
