//go:build interop

package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

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

// toolStep is one tpm2-tools run of TestInteropTPM2Tools.
type toolStep struct {
	name string
	deps []string // steps that must have passed
	args []string // "@hex:FILE" is replaced by the hex of FILE
	// failRC, if not zero, is the response code the tool must fail on
	// (the last failing command); the step passes only then.
	failRC uint32
	// check, if not nil, checks the files the tool wrote.
	check func(dir string) error
}

// TestInteropTPM2Tools runs tpm2-tools 5 against a served TPM through -T
// mssim: the list of issue 8 (startup, getrandom, pcrread, pcrextend,
// createprimary, create and load, a seal to a PCR policy whose unseal works
// before and fails after a PCR extend, quote and checkquote, nvdefine,
// nvwrite and nvread, makecredential and activatecredential) and a few
// more. A tool that fails because the engine lacks a feature is skipped
// with that feature, named from the command the TPM refused and its
// response code; any other failure fails. With -record, the streams of
// the tools that passed are written to testdata/ as fuzz seeds.
func TestInteropTPM2Tools(t *testing.T) {
	need(t, "tpm2_startup")
	tl, pl := listenPair(t)
	tr, pr := &recorder{Listener: tl}, &recorder{Listener: pl}
	in := New(newTPM(t, ""), nil)
	trace := &tpmTrace{}
	in.trace = trace.hook
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.ServeMSSIM(ctx, tr, pr) }()
	defer func() { cancel(); <-done; in.Close() }()

	dir := t.TempDir()
	port := tl.Addr().(*net.TCPAddr).Port
	env := append(os.Environ(), "TPM2TOOLS_TCTI=mssim:host=127.0.0.1,port="+strconv.Itoa(port))
	secret := []byte("0123456789abcdef")
	if err := os.WriteFile(filepath.Join(dir, "secret"), secret, 0o600); err != nil {
		t.Fatal(err)
	}
	fileIs := func(name string, want []byte) func(string) error {
		return func(dir string) error {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return err
			}
			if !bytes.Equal(b, want) {
				return fmt.Errorf("%s holds %q, want %q", name, b, want)
			}
			return nil
		}
	}
	pcrDigest := strings.Repeat("ab", 32)
	steps := []toolStep{
		{name: "tpm2_startup", args: []string{"tpm2_startup", "-c"}},
		{name: "tpm2_getrandom", args: []string{"tpm2_getrandom", "--hex", "16"}},
		{name: "tpm2_pcrread", args: []string{"tpm2_pcrread", "sha1:0,7+sha256:0,7,16"}},
		{name: "tpm2_pcrextend", args: []string{"tpm2_pcrextend", "16:sha256=" + pcrDigest}},
		{name: "tpm2_pcrreset", args: []string{"tpm2_pcrreset", "16"}},
		{name: "tpm2_getcap", args: []string{"tpm2_getcap", "properties-fixed"}},
		{name: "tpm2_readclock", args: []string{"tpm2_readclock"}},
		{name: "tpm2_selftest", args: []string{"tpm2_selftest", "--fulltest"}},
		{name: "tpm2_testparms", args: []string{"tpm2_testparms", "ecc256"}},
		{name: "tpm2_hash", args: []string{"tpm2_hash", "-g", "sha256", "-o", "hash.out", "secret"}},
		{name: "tpm2_pcrevent", args: []string{"tpm2_pcrevent", "16", "secret"}},

		{name: "tpm2_createprimary", args: []string{"tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", "primary.ctx"}},
		{name: "tpm2_create", deps: []string{"tpm2_createprimary"}, args: []string{"tpm2_create", "-C", "primary.ctx",
			"-G", "ecc256:ecdsa-sha256:null", "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
			"-u", "ak.pub", "-r", "ak.priv"}},
		{name: "tpm2_load", deps: []string{"tpm2_create"}, args: []string{"tpm2_load", "-C", "primary.ctx",
			"-u", "ak.pub", "-r", "ak.priv", "-c", "ak.ctx"}},
		{name: "tpm2_quote", deps: []string{"tpm2_load"}, args: []string{"tpm2_quote", "-c", "ak.ctx",
			"-l", "sha256:0,16", "-q", "abcdef", "-m", "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs", "-g", "sha256"}},
		{name: "tpm2_readpublic", deps: []string{"tpm2_load"}, args: []string{"tpm2_readpublic", "-c", "ak.ctx",
			"-f", "pem", "-o", "ak.pem"}},
		{name: "tpm2_checkquote", deps: []string{"tpm2_quote", "tpm2_readpublic"}, args: []string{"tpm2_checkquote",
			"-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig", "-f", "quote.pcrs", "-g", "sha256", "-q", "abcdef"}},

		{name: "tpm2_nvdefine", args: []string{"tpm2_nvdefine", "0x1500016", "-C", "o", "-s", "16",
			"-a", "ownerread|ownerwrite"}},
		{name: "tpm2_nvwrite", deps: []string{"tpm2_nvdefine"}, args: []string{"tpm2_nvwrite", "0x1500016",
			"-C", "o", "-i", "secret"}},
		{name: "tpm2_nvread", deps: []string{"tpm2_nvwrite"}, args: []string{"tpm2_nvread", "0x1500016", "-C", "o",
			"-s", "16", "-o", "nv.out"}, check: fileIs("nv.out", secret)},

		// A secret sealed to PCR 16: it unseals, then PCR 16 changes, and
		// it must not unseal any more.
		{name: "tpm2_createpolicy", args: []string{"tpm2_createpolicy", "--policy-pcr", "-l", "sha256:16",
			"-L", "pcr.policy"}},
		{name: "tpm2_create_sealed", deps: []string{"tpm2_createprimary", "tpm2_createpolicy"}, args: []string{
			"tpm2_create", "-C", "primary.ctx", "-L", "pcr.policy", "-i", "secret", "-u", "seal.pub", "-r", "seal.priv",
			"-a", "fixedtpm|fixedparent"}},
		{name: "tpm2_load_sealed", deps: []string{"tpm2_create_sealed"}, args: []string{"tpm2_load",
			"-C", "primary.ctx", "-u", "seal.pub", "-r", "seal.priv", "-c", "seal.ctx"}},
		{name: "tpm2_unseal", deps: []string{"tpm2_load_sealed"}, args: []string{"tpm2_unseal", "-c", "seal.ctx",
			"-p", "pcr:sha256:16", "-o", "unsealed.out"}, check: fileIs("unsealed.out", secret)},
		{name: "tpm2_pcrextend_after_seal", deps: []string{"tpm2_unseal"}, args: []string{"tpm2_pcrextend",
			"16:sha256=" + pcrDigest}},
		{name: "tpm2_unseal_after_extend", deps: []string{"tpm2_pcrextend_after_seal"}, failRC: rcPolicyFailSession1,
			args: []string{"tpm2_unseal", "-c", "seal.ctx", "-p", "pcr:sha256:16", "-o", "unsealed2.out"}},

		// A credential made by our TPM for an AK under an EK, activated.
		{name: "tpm2_createek", args: []string{"tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"}},
		{name: "tpm2_createak", deps: []string{"tpm2_createek"}, args: []string{"tpm2_createak", "-C", "ek.ctx",
			"-c", "ak2.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u", "ak2.pub", "-n", "ak2.name"}},
		{name: "tpm2_makecredential", deps: []string{"tpm2_createak"}, args: []string{"tpm2_makecredential",
			"-u", "ek.pub", "-s", "secret", "-n", "@hex:ak2.name", "-o", "cred.out"}},
		{name: "tpm2_startauthsession", args: []string{"tpm2_startauthsession", "--policy-session",
			"-S", "session.ctx"}},
		{name: "tpm2_policysecret", deps: []string{"tpm2_startauthsession"}, args: []string{"tpm2_policysecret",
			"-S", "session.ctx", "-c", "e"}},
		{name: "tpm2_activatecredential", deps: []string{"tpm2_makecredential", "tpm2_policysecret"}, args: []string{
			"tpm2_activatecredential", "-c", "ak2.ctx", "-C", "ek.ctx", "-i", "cred.out", "-o", "actcred.out",
			"-P", "session:session.ctx"}, check: fileIs("actcred.out", secret)},
		{name: "tpm2_flushcontext", deps: []string{"tpm2_startauthsession"}, args: []string{"tpm2_flushcontext",
			"session.ctx"}},

		{name: "tpm2_shutdown", args: []string{"tpm2_shutdown", "-c"}},
	}

	ok := map[string]bool{}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			for _, d := range s.deps {
				if !ok[d] {
					t.Skipf("needs %s, which did not pass", d)
				}
			}
			args := make([]string, len(s.args))
			for i, a := range s.args {
				if f, found := strings.CutPrefix(a, "@hex:"); found {
					b, err := os.ReadFile(filepath.Join(dir, f))
					if err != nil {
						t.Fatal(err)
					}
					a = hex.EncodeToString(b)
				}
				args[i] = a
			}
			trace.take()
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir, cmd.Env = dir, env
			out, err := cmd.CombinedOutput()
			cmds := trace.take()
			tpmStream, platStream := tr.take(), pr.take()
			failed := lastFailure(cmds)
			switch {
			case s.failRC != 0 && err != nil && failed != nil && failed.rc == s.failRC:
				t.Logf("%s failed as it must: TPM2_%s answered %#x: %v", args[0], ccName(failed.cc), failed.rc,
					tpm2.TPMRC(failed.rc))
			case err != nil:
				if f := missingFeature(failed); f != "" {
					t.Skipf("engine lacks %s", f)
				}
				if failed != nil {
					t.Fatalf("%s: %v; the TPM refused TPM2_%s with %#x (%v)\ncommand: %x\n%s", strings.Join(args, " "),
						err, ccName(failed.cc), failed.rc, tpm2.TPMRC(failed.rc), failed.cmd, out)
				}
				t.Fatalf("%s: %v (no TPM command failed)\n%s", strings.Join(args, " "), err, out)
			case s.failRC != 0:
				t.Fatalf("%s succeeded; it must fail with %#x\n%s", strings.Join(args, " "), s.failRC, out)
			}
			if s.check != nil {
				if err := s.check(dir); err != nil {
					t.Fatal(err)
				}
			}
			ok[s.name] = true
			save(t, "mssim-tpm-"+s.name, tpmStream)
			save(t, "mssim-platform-"+s.name, platStream)
			if l := firstLines(bytes.TrimSpace(out), 3); l != "" && s.failRC == 0 {
				t.Logf("%s", l)
			}
		})
	}
}
