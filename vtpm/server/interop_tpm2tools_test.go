//go:build interop

package server

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

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
