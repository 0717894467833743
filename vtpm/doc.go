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
// No response exceeds 4096 bytes. Should a bug still make the engine
// panic, Send recovers and that TPM alone enters failure mode
// ([TPM.Failure]): the other TPMs of the process run on, and the TPM's
// last sealed state stays the good one.
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
// Framing, lifecycle (Startup, Shutdown CLEAR and STATE, SelfTest,
// GetTestResult, GetCapability, GetRandom, StirRandom, ReadClock, GetTime,
// ClockSet, ClockRateAdjust), PCRs (SHA-1, SHA-256, SHA-384 and SHA-512
// banks, PC Client attributes, PCR_Allocate), keys (CreatePrimary with
// seed-derived keys, Create, CreateLoaded, Load, LoadExternal, ReadPublic,
// ObjectChangeAuth, Unseal, Sign, VerifySignature, Quote, Certify,
// CertifyCreation, RSA_Encrypt, RSA_Decrypt, ECDH_KeyGen, ECDH_ZGen,
// FlushContext, ContextSave, ContextLoad, EvictControl), credentials and
// key transport (MakeCredential, ActivateCredential, Duplicate, Import,
// Rewrap), NV (DefineSpace, UndefineSpace, Write, Read, ReadPublic,
// Increment, Extend, SetBits, ChangeAuth, Certify, ReadLock, WriteLock,
// GlobalWriteLock), hierarchies (HierarchyChangeAuth, HierarchyControl,
// SetPrimaryPolicy, Clear; the hierarchies' authPolicies are sealed with
// the state and reported by TPM_CAP_AUTH_POLICIES), symmetric keys
// (EncryptDecrypt, EncryptDecrypt2, HMAC), hash and HMAC sequences
// (Hash, HashSequenceStart, HMAC_Start, SequenceUpdate, SequenceComplete,
// EventSequenceComplete; ContextSave and ContextLoad of a sequence, which
// continues where it was), TestParms, and
// dictionary-attack protection (DictionaryAttackLockReset,
// DictionaryAttackParameters).
//
// Authorization (Part 1, section 19): password sessions; HMAC sessions,
// unsalted or salted with an RSA (OAEP) or ECC (ECDH, KDFe) key, bound or
// unbound, with command and response HMACs, rolling nonces, continueSession
// and dictionary-attack accounting of wrong HMACs; policy sessions and the
// policy commands (PolicyPCR, PolicySecret, PolicySigned, PolicyTicket,
// PolicyAuthValue, PolicyPassword, PolicyCommandCode, PolicyOR,
// PolicyAuthorize, PolicyNV, PolicyAuthorizeNV, PolicyCpHash,
// PolicyNameHash, PolicyLocality, PolicyCounterTimer, PolicyNvWritten,
// PolicyDuplicationSelect, PolicyTemplate, PolicyPhysicalPresence,
// PolicyRestart, PolicyGetDigest), and trial sessions that compute policy
// digests. Policy sessions authorize objects, NV indices, and hierarchies
// whose authPolicy TPM2_SetPrimaryPolicy set. Parameter encryption of the
// first command and response parameter with AES-CFB (128 or 256 bits) or
// XOR, by authorization sessions or by sessions that only encrypt; the size
// of an encrypted parameter is checked against the bytes that follow it (the
// check whose absence was CVE-2023-1017/1018). HMAC and policy sessions can
// be saved and loaded with ContextSave and ContextLoad; a context loads
// once. HMAC sessions audit commands (session audit: the session digest
// extended with cpHash and rpHash, auditExclusive and auditReset), and
// GetSessionAuditDigest attests the digest with the privacy administrator's
// authorization. Sixteen sessions may be loaded at a time (the reference
// implementation holds three). Sessions are volatile: a power cycle loses
// them, and they are not part of the sealed state, so a migrated TPM starts
// without sessions.
//
// Command audit: SetCommandCodeAuditStatus sets, with owner or platform
// authorization, the audited commands and the audit hash algorithm; after
// each successful audited command, with or without sessions, the audit
// digest is extended with its cpHash and rpHash; GetCommandAuditDigest
// attests the digest, the audit counter and a digest of the list, with the
// privacy administrator's authorization, and a signed attestation starts a
// new digest. The list, algorithm, counter and digest are sealed with the
// state; TPM Reset empties the digest, as in the reference implementation.
//
// Not implemented: CMAC, derived objects (CreateLoaded under a derivation
// parent), PCR policies and authValues (TPM_PT_PCR_POLICY and
// TPM_PT_PCR_AUTH list no PCR), the hierarchy commands ChangePPS,
// ChangeEPS, ClearControl and NV_UndefineSpaceSpecial, physical presence
// (PP_Commands), field upgrade, and the other commands not listed above
// (such as TPM2_Commit, TPM2_ECC_Parameters, TPM2_CertifyX509 and the
// attached-component commands); they answer TPM_RC_COMMAND_CODE.
//
// The mssim and swtpm transports, which tpm2-tools and QEMU use, are in
// package vtpm/server.
//
// # Where to start
//
// [New] makes a TPM; go-tpm's tpm2 commands and go-tpm-tools' client run
// against it unchanged:
//
//	v, _ := vtpm.New(vtpm.Config{VMID: "vm-42"})
//	rsp, err := tpm2.GetRandom{BytesRequested: 16}.Execute(v)
package vtpm
