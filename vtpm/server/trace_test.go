package server

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// traced is one command an instance executed, and its response code.
type traced struct {
	cc, rc uint32
	cmd    []byte
}

// tpmTrace keeps the commands an instance executed (Instance.trace).
type tpmTrace struct {
	mu   sync.Mutex
	cmds []traced
}

func (tr *tpmTrace) hook(cmd, rsp []byte) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.cmds = append(tr.cmds, traced{cc: binary.BigEndian.Uint32(cmd[6:]), rc: rc(rsp), cmd: append([]byte(nil), cmd...)})
}

func (tr *tpmTrace) take() []traced {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := tr.cmds
	tr.cmds = nil
	return out
}

// lastFailure returns the last command that failed with an error (not a
// warning such as TPM_RC_RETRY), or nil.
func lastFailure(cmds []traced) *traced {
	for i := len(cmds) - 1; i >= 0; i-- {
		if r := cmds[i].rc; r != 0 && r&0x980 != 0x900 {
			return &cmds[i]
		}
	}
	return nil
}

// Response codes the tests look for.
const (
	rcCommandCodeTPM     = 0x143 // TPM_RC_COMMAND_CODE
	rcAuthUnavailableTPM = 0x12F // TPM_RC_AUTH_UNAVAILABLE
	rcPolicyFailSession1 = 0x99D // TPM_RC_POLICY_FAIL + TPM_RC_S + TPM_RC_1
)

// missingFeature names the engine feature whose absence made a command
// fail, from the command and its response code, or returns "" when the
// failure is not one of a missing feature (then it is a bug).
func missingFeature(f *traced) string {
	switch {
	case f == nil:
		return ""
	case f.rc == rcCommandCodeTPM:
		return fmt.Sprintf("TPM2_%s (TPM_RC_COMMAND_CODE)", ccName(f.cc))
	case f.rc == rcAuthUnavailableTPM:
		return fmt.Sprintf("HMAC authorization, used by TPM2_%s (TPM_RC_AUTH_UNAVAILABLE)", ccName(f.cc))
	case f.cc == 0x176:
		return startAuthSessionFeature(f)
	case f.cc == 0x162 && f.rc == 0x18B && len(f.cmd) >= 14 && (f.cmd[10] == 2 || f.cmd[10] == 3):
		return fmt.Sprintf("TPM2_ContextSave of sessions (TPM_RC_HANDLE on session handle %#x)", binary.BigEndian.Uint32(f.cmd[10:]))
	}
	return ""
}

// startAuthSessionFeature describes the session a refused
// TPM2_StartAuthSession asked for, and the part of it the response code
// refused.
func startAuthSessionFeature(f *traced) string {
	c := f.cmd
	if len(c) < 18 || binary.BigEndian.Uint16(c) != 0x8001 {
		return ""
	}
	tpmKey, bind := binary.BigEndian.Uint32(c[10:]), binary.BigEndian.Uint32(c[14:])
	p := c[18:]
	skip := func() bool { // a TPM2B
		if len(p) < 2 {
			return false
		}
		n := int(binary.BigEndian.Uint16(p))
		if len(p) < 2+n {
			return false
		}
		p = p[2+n:]
		return true
	}
	if !skip() || !skip() || len(p) < 3 {
		return ""
	}
	typ := map[byte]string{0: "HMAC", 1: "policy", 3: "trial"}[p[0]]
	sym := map[uint16]string{0x10: "no", 0x06: "AES-CFB", 0x0A: "XOR"}[binary.BigEndian.Uint16(p[1:])]
	desc := fmt.Sprintf("%s session, %s, %s, %s parameter encryption", typ,
		map[bool]string{true: "salted", false: "unsalted"}[tpmKey != 0x40000007],
		map[bool]string{true: "bound", false: "unbound"}[bind != 0x40000007], sym)
	part := "the session"
	switch {
	case f.rc&0x40 != 0: // a parameter
		part = map[uint32]string{1: "nonceCaller", 2: "the salt", 3: "the session type", 4: "the parameter encryption",
			5: "the session hash"}[f.rc>>8&0xF]
	case f.rc&0x80 != 0 && f.rc&0x800 == 0: // a handle
		part = map[uint32]string{1: "salting (tpmKey)", 2: "binding (bind)"}[f.rc>>8&0x7]
	}
	return fmt.Sprintf("TPM2_StartAuthSession of a %s: %s refused (rc %#x: %v)", desc, part, f.rc, tpm2.TPMRC(f.rc))
}

// ccName names a command code.
func ccName(cc uint32) string {
	if n, ok := ccNames[cc]; ok {
		return n
	}
	return fmt.Sprintf("%#x", cc)
}

var ccNames = map[uint32]string{
	0x11F: "NV_UndefineSpaceSpecial", 0x120: "EvictControl", 0x121: "HierarchyControl", 0x122: "NV_UndefineSpace",
	0x126: "Clear", 0x127: "ClearControl", 0x128: "ClockSet", 0x129: "HierarchyChangeAuth", 0x12A: "NV_DefineSpace",
	0x12B: "PCR_Allocate", 0x12C: "PCR_SetAuthPolicy", 0x12E: "SetPrimaryPolicy", 0x130: "ClockRateAdjust",
	0x131: "CreatePrimary", 0x132: "NV_GlobalWriteLock", 0x133: "GetCommandAuditDigest", 0x134: "NV_Increment",
	0x135: "NV_SetBits", 0x136: "NV_Extend", 0x137: "NV_Write", 0x138: "NV_WriteLock",
	0x139: "DictionaryAttackLockReset", 0x13A: "DictionaryAttackParameters", 0x13B: "NV_ChangeAuth",
	0x13C: "PCR_Event", 0x13D: "PCR_Reset", 0x13E: "SequenceComplete", 0x143: "SelfTest", 0x144: "Startup",
	0x145: "Shutdown", 0x146: "StirRandom", 0x147: "ActivateCredential", 0x148: "Certify", 0x149: "PolicyNV",
	0x14A: "CertifyCreation", 0x14B: "Duplicate", 0x14C: "GetTime", 0x14D: "GetSessionAuditDigest", 0x14E: "NV_Read",
	0x14F: "NV_ReadLock", 0x150: "ObjectChangeAuth", 0x151: "PolicySecret", 0x152: "Rewrap", 0x153: "Create",
	0x154: "ECDH_ZGen", 0x155: "HMAC", 0x156: "Import", 0x157: "Load", 0x158: "Quote", 0x159: "RSA_Decrypt",
	0x15B: "HMAC_Start", 0x15C: "SequenceUpdate", 0x15D: "Sign", 0x15E: "Unseal", 0x160: "PolicySigned",
	0x161: "ContextLoad", 0x162: "ContextSave", 0x163: "ECDH_KeyGen", 0x164: "EncryptDecrypt", 0x165: "FlushContext",
	0x167: "LoadExternal", 0x168: "MakeCredential", 0x169: "NV_ReadPublic", 0x16A: "PolicyAuthorize",
	0x16B: "PolicyAuthValue", 0x16C: "PolicyCommandCode", 0x16D: "PolicyCounterTimer", 0x16E: "PolicyCpHash",
	0x16F: "PolicyLocality", 0x170: "PolicyNameHash", 0x171: "PolicyOR", 0x172: "PolicyTicket", 0x173: "ReadPublic",
	0x174: "RSA_Encrypt", 0x176: "StartAuthSession", 0x177: "VerifySignature", 0x178: "ECC_Parameters",
	0x17A: "GetCapability", 0x17B: "GetRandom", 0x17C: "GetTestResult", 0x17D: "Hash", 0x17E: "PCR_Read",
	0x17F: "PolicyPCR", 0x180: "PolicyRestart", 0x181: "ReadClock", 0x182: "PCR_Extend", 0x184: "NV_Certify",
	0x185: "EventSequenceComplete", 0x186: "HashSequenceStart", 0x188: "PolicyDuplicationSelect",
	0x189: "PolicyGetDigest", 0x18A: "TestParms", 0x18B: "Commit", 0x18C: "PolicyPassword", 0x18F: "PolicyNvWritten",
	0x190: "PolicyTemplate", 0x191: "CreateLoaded", 0x192: "PolicyAuthorizeNV", 0x193: "EncryptDecrypt2",
}
