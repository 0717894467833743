// Package vtpm is a TPM 2.0 implemented in Go: one [TPM] value per VM,
// thousands per process, whose whole state can be sealed into bytes that
// open only under the VM's state key.
//
// # Threat model
//
// The guest owns the TPM's command interface: every byte that reaches
// [TPM.Send] is hostile. The command parser is bounded and never panics
// (FuzzSend); malformed commands get the response codes the reference
// implementation gives, with their handle, session and parameter numbers.
// No response exceeds 4096 bytes.
//
// The host administrator owns the storage: the sealed state (see
// [TPM.Seal], [Open] and docs/vtpm-state.md) is encrypted and authenticated
// with AES-256-GCM, bound to the VM's ID and to a generation counter, so a
// state cannot be read, changed, moved to another VM or (when the caller
// tracks generations) rolled back.
//
// Secrets (seeds, proofs, authValues, private keys) are zeroed when a TPM is
// closed and when objects are flushed, as far as Go allows: the runtime may
// have copied them.
//
// # What is implemented
//
// Framing, password authorization, lifecycle (Startup, Shutdown CLEAR and
// STATE, SelfTest, GetTestResult, GetCapability, GetRandom, StirRandom,
// ReadClock), PCRs (SHA-1, SHA-256, SHA-384 and SHA-512 banks, PC Client
// attributes), keys (CreatePrimary with seed-derived keys, Create, Load,
// LoadExternal, ReadPublic, Unseal, Sign, VerifySignature, Quote, Certify,
// FlushContext, ContextSave, ContextLoad, EvictControl), NV (DefineSpace,
// UndefineSpace, Write, Read, ReadPublic, Increment, Extend) and
// HierarchyChangeAuth, Clear, Hash, TestParms, and dictionary-attack
// protection (DictionaryAttackLockReset, DictionaryAttackParameters).
// Policy sessions can be
// started and flushed (go-tpm-tools starts one for each EK) but not yet used
// for authorization; HMAC sessions, parameter encryption and the mssim and
// swtpm transports come next.
//
// # Where to start
//
// [New] makes a TPM; go-tpm's tpm2 commands and go-tpm-tools' client run
// against it unchanged:
//
//	v, _ := vtpm.New(vtpm.Config{VMID: "vm-42"})
//	rsp, err := tpm2.GetRandom{BytesRequested: 16}.Execute(v)
package vtpm
