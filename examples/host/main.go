// Command host is an example host agent (package examples/host/agent): it
// attests the host's TPM to a guardian service (examples/hgs), asks for a
// VM's transport key and opens the VM's vTPM state with it.
//
//	host identity -state DIR [-tpm auto|vtpm|PATH] [-eventlog FILE]
//	host unlock   -hgs URL -ca CERT -kp FILE -vtpm-state FILE -vm ID [...]
//	host new-vm   -hgs URL -ca CERT -owner FILE -kp FILE -vtpm-state FILE -vm ID
//	host baseline -eventlog FILE [-id ID]
//
// The host's TPM is /dev/tpmrm0 when present (-tpm auto), or a vtpm for
// local runs whose state lives in -state (host-tpm.sealed, host-tpm.key):
// a vtpm has no firmware, so each run "boots" it by extending its PCRs with
// the events of -eventlog (a real log, such as
// examples/demo/testdata/rhel8-uefi.bin, without its SHA-1 bank).
//
// identity prints what the administrator registers (PUT
// /v1/admin/hosts/{id}?mode=...). unlock attests, gets the key, opens the
// vTPM state, reports it, and writes back the re-keyed key protector and
// the state sealed under the next key, as a host does when a VM stops.
// new-vm is the VM owner's side, for local runs: it makes the owner's
// guardian (if -owner does not exist), a key protector for the owner and
// the service's guardian, and a new vTPM sealed under its key. baseline
// prints a policy document (package policy) that allows the SHA-256 values
// of PCRs 0-7 a known-good boot log replays to, for PUT /v1/admin/policy.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/shieldvm/shieldvm/examples/host/agent"
	"github.com/shieldvm/shieldvm/examples/host/bootlog"
	"github.com/shieldvm/shieldvm/keyprotector"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
	"github.com/shieldvm/shieldvm/vtpm"
)

const usage = `usage:
  host identity -state DIR [-tpm auto|vtpm|PATH] [-eventlog FILE] [-mode tpm|host-key]
  host unlock   -hgs URL -ca CERT -kp FILE -vtpm-state FILE -vm ID [-state DIR] [-tpm ...] [-eventlog FILE] [-mode ...]
  host new-vm   -hgs URL -ca CERT -owner FILE -kp FILE -vtpm-state FILE -vm ID
  host baseline -eventlog FILE [-id ID]`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "identity":
		err = identity(ctx, args[1:], stdout, stderr)
	case "unlock":
		err = unlock(ctx, args[1:], stdout, stderr)
	case "new-vm":
		err = newVM(ctx, args[1:], stdout, stderr)
	case "baseline":
		err = baseline(args[1:], stdout, stderr)
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp):
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "host: %v\n%s\n", err, usage)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "host: %v\n", err)
		return 1
	}
}

// hostFlags are the flags of the host's TPM and identity.
type hostFlags struct {
	state, tpm, eventlog, mode string
}

func (h *hostFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.state, "state", "host-state", "directory of the host's key and, with a vtpm, its TPM state")
	fs.StringVar(&h.tpm, "tpm", "auto", "the host's TPM: auto (/dev/tpmrm0 if present, else a vtpm), vtpm, or a device path")
	fs.StringVar(&h.eventlog, "eventlog", "", "boot event log (default: the kernel's, for a device; required for a vtpm)")
	fs.StringVar(&h.mode, "mode", "", "attestation mode: tpm (the EK registered, credential activation) or host-key")
}

// host is the host's TPM, ready for an agent.
type host struct {
	tpm     transport.TPM
	cfg     agent.Config
	closeFn func() error
}

func (h *host) close() error { return h.closeFn() }

func openHost(f *hostFlags) (*host, error) {
	if err := os.MkdirAll(f.state, 0o700); err != nil {
		return nil, err
	}
	dev := f.tpm
	if dev == "auto" {
		dev = "vtpm"
		if _, err := os.Stat("/dev/tpmrm0"); err == nil {
			dev = "/dev/tpmrm0"
		}
	}
	h := &host{}
	mode := f.mode
	if dev == "vtpm" {
		if f.eventlog == "" {
			return nil, fmt.Errorf("%w: a vtpm has no firmware to measure a boot: give -eventlog (for example examples/demo/testdata/rhel8-uefi.bin)", errUsage)
		}
		log, err := os.ReadFile(f.eventlog)
		if err != nil {
			return nil, err
		}
		banks, log, err := withoutSHA1(log)
		if err != nil {
			return nil, err
		}
		t, save, err := openVTPM(f.state)
		if err != nil {
			return nil, err
		}
		// Boot: reset the PCRs and extend them as firmware would.
		if err := t.PowerCycle(); err != nil {
			return nil, err
		}
		if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(t); err != nil {
			return nil, err
		}
		if err := bootlog.Extend(t, log); err != nil {
			return nil, err
		}
		h.tpm = t
		h.cfg.Banks = banks
		h.cfg.EventLog = func(context.Context) ([]byte, error) { return log, nil }
		h.closeFn = func() error { err := save(); t.Close(); return err }
	} else {
		t, err := linuxtpm.Open(dev)
		if err != nil {
			return nil, err
		}
		h.tpm, h.closeFn = t, t.Close
		if f.eventlog != "" {
			path := f.eventlog
			h.cfg.EventLog = func(context.Context) ([]byte, error) { return os.ReadFile(path) }
		}
	}
	switch mode {
	case "", "tpm":
	case "host-key":
		k, err := hostKey(filepath.Join(f.state, "host-key.pem"))
		if err != nil {
			h.close()
			return nil, err
		}
		h.cfg.HostKey = k
	default:
		h.close()
		return nil, fmt.Errorf("%w: -mode must be tpm or host-key", errUsage)
	}
	return h, nil
}

// withoutSHA1 drops the SHA-1 bank of a crypto-agile log (nothing is
// quoted or trusted in SHA-1) and returns the banks left.
func withoutSHA1(log []byte) ([]measure.HashAlg, []byte, error) {
	l, err := measure.Parse(log)
	if err != nil {
		return nil, nil, err
	}
	if l.SpecID == nil {
		return nil, nil, errors.New("a SHA-1-only log cannot boot a host that quotes SHA-256")
	}
	var banks []measure.HashAlg
	for _, b := range l.SpecID.Banks {
		if b.Alg != measure.SHA1 && b.Alg.Known() {
			banks = append(banks, b.Alg)
		}
	}
	if !slices.Contains(banks, measure.SHA256) {
		return nil, nil, errors.New("the log has no SHA-256 bank")
	}
	out, err := bootlog.KeepBanks(log, banks...)
	return banks, out, err
}

// openVTPM opens the host's vtpm from the state directory, or makes it.
func openVTPM(dir string) (*vtpm.TPM, func() error, error) {
	var key [32]byte
	kb, err := readOrCreate(filepath.Join(dir, "host-tpm.key"), func() ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return nil, nil, err
	}
	if len(kb) != 32 {
		return nil, nil, errors.New("host-tpm.key is not 32 bytes")
	}
	copy(key[:], kb)
	clear(kb)
	statePath := filepath.Join(dir, "host-tpm.sealed")
	var t *vtpm.TPM
	sealed, err := os.ReadFile(statePath)
	switch {
	case err == nil:
		t, err = vtpm.Open(sealed, &key, vtpm.OpenConfig{})
	case errors.Is(err, fs.ErrNotExist):
		t, err = vtpm.New(vtpm.Config{})
	}
	if err != nil {
		return nil, nil, err
	}
	save := func() error {
		defer clear(key[:])
		b, err := t.Seal(&key)
		if err != nil {
			return err
		}
		return writeFile(statePath, b, 0o600)
	}
	return t, save, nil
}

func readOrCreate(path string, make func() ([]byte, error)) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	if b, err = make(); err != nil {
		return nil, err
	}
	return b, writeFile(path, b, 0o600)
}

// writeFile writes atomically: a temporary file renamed into place.
func writeFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func hostKey(path string) (crypto.Signer, error) {
	b, err := readOrCreate(path, func() ([]byte, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	})
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s is not PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", path)
	}
	return s, nil
}

func identity(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("identity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var hf hostFlags
	hf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	h, err := openHost(&hf)
	if err != nil {
		return err
	}
	ag, err := agent.New(ctx, &agent.Client{}, h.tpm, h.cfg)
	if err != nil {
		h.close()
		return err
	}
	p, err := ag.IdentityPEM()
	ag.Close()
	if cerr := h.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "register this key with mode=%s\n", ag.Mode())
	_, err = stdout.Write(p)
	return err
}

// client returns a client of the service that trusts the CA file.
func client(url, ca string) (*agent.Client, error) {
	if url == "" || ca == "" {
		return nil, fmt.Errorf("%w: -hgs and -ca are required", errUsage)
	}
	b, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", ca)
	}
	return &agent.Client{URL: url, HTTP: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}},
	}}, nil
}

func unlock(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("unlock", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var hf hostFlags
	hf.register(fs)
	url := fs.String("hgs", "", "guardian service URL")
	ca := fs.String("ca", "", "CA certificate (PEM) of the service's TLS certificate")
	kpPath := fs.String("kp", "", "the VM's key protector; replaced by the re-keyed one")
	statePath := fs.String("vtpm-state", "", "the VM's sealed vTPM state; replaced by the state sealed under the next key")
	vmID := fs.String("vm", "", "the VM's id (bound into its vTPM state)")
	verbose := fs.Bool("v", false, "narrate the protocol steps")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kpPath == "" || *statePath == "" || *vmID == "" {
		return fmt.Errorf("%w: -kp, -vtpm-state and -vm are required", errUsage)
	}
	c, err := client(*url, *ca)
	if err != nil {
		return err
	}
	kpb, err := os.ReadFile(*kpPath)
	if err != nil {
		return err
	}
	kp, err := keyprotector.Parse(kpb)
	if err != nil {
		return err
	}
	sealed, err := os.ReadFile(*statePath)
	if err != nil {
		return err
	}
	h, err := openHost(&hf)
	if err != nil {
		return err
	}
	defer h.close()
	if *verbose {
		h.cfg.Trace = func(s string) { fmt.Fprintln(stderr, s) }
	}
	ag, err := agent.New(ctx, c, h.tpm, h.cfg)
	if err != nil {
		return err
	}
	defer ag.Close()
	rel, err := ag.Unlock(ctx, kp)
	if err != nil {
		return err
	}
	defer rel.Destroy()
	vm, err := agent.StartVM(rel, sealed, *vmID, 0)
	if err != nil {
		return err
	}
	defer vm.Close()
	fmt.Fprintf(stdout, "VM %s: vTPM state generation %d opened (key protector %v generation %d)\n", *vmID, vm.Generation(), kp.ID(), kp.Generation())
	// The VM would run here. When it stops, its state is sealed under
	// the next key and both files are replaced.
	state, next, err := agent.StopVM(rel, vm)
	if err != nil {
		return err
	}
	if err := writeFile(*statePath, state, 0o600); err != nil {
		return err
	}
	if next != nil {
		if err := writeFile(*kpPath, next.Marshal(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "VM %s: state sealed under the next key (generation %d); key protector re-keyed to generation %d\n", *vmID, vm.Generation(), next.Generation())
	}
	return nil
}

func newVM(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("new-vm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("hgs", "", "guardian service URL")
	ca := fs.String("ca", "", "CA certificate (PEM) of the service's TLS certificate")
	ownerPath := fs.String("owner", "owner.key", "the owner's guardian (made if absent; a secret)")
	kpPath := fs.String("kp", "", "where to write the key protector")
	statePath := fs.String("vtpm-state", "", "where to write the sealed vTPM state")
	vmID := fs.String("vm", "", "the VM's id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kpPath == "" || *statePath == "" || *vmID == "" {
		return fmt.Errorf("%w: -kp, -vtpm-state and -vm are required", errUsage)
	}
	c, err := client(*url, *ca)
	if err != nil {
		return err
	}
	desc, err := c.Guardian(ctx)
	if err != nil {
		return err
	}
	ob, err := readOrCreate(*ownerPath, func() ([]byte, error) {
		g, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "vm-owner", Suite: desc.Suite()})
		if err != nil {
			return nil, err
		}
		return g.MarshalPrivate()
	})
	if err != nil {
		return err
	}
	owner, err := keyprotector.ParseGuardian(ob)
	if err != nil {
		return err
	}
	kp, err := keyprotector.New(ctx, owner, []*keyprotector.Descriptor{desc}, &keyprotector.Config{})
	if err != nil {
		return err
	}
	tk, err := kp.Unwrap(ctx, owner, nil)
	if err != nil {
		return err
	}
	defer tk.Destroy()
	t, err := vtpm.New(vtpm.Config{VMID: *vmID})
	if err != nil {
		return err
	}
	defer t.Close()
	k := tk.Derive(keyprotector.LabelVTPMState)
	defer clear(k[:])
	state, err := t.Seal(&k)
	if err != nil {
		return err
	}
	if err := writeFile(*kpPath, kp.Marshal(), 0o644); err != nil {
		return err
	}
	if err := writeFile(*statePath, state, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "VM %s: key protector %v for the owner and guardian %q; vTPM sealed under its key\n", *vmID, kp.ID(), desc.Name())
	return nil
}

func baseline(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("eventlog", "", "boot event log of a known-good host")
	id := fs.String("id", "baseline", "the policy's id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return fmt.Errorf("%w: -eventlog is required", errUsage)
	}
	raw, err := os.ReadFile(*path)
	if err != nil {
		return err
	}
	l, err := measure.Parse(raw)
	if err != nil {
		return err
	}
	regs, err := l.Replay()
	if err != nil {
		return err
	}
	bank := regs.Bank(measure.SHA256)
	if bank == nil {
		return errors.New("the log has no SHA-256 bank")
	}
	pol := &policy.Policy{
		Version:     policy.Version,
		ID:          *id,
		Description: "SHA-256 PCRs 0-7 of the boot in " + filepath.Base(*path),
		PCRs:        map[string]map[string][]policy.Digest{"sha256": {}},
	}
	for r := range 8 {
		pol.PCRs["sha256"][fmt.Sprint(r)] = []policy.Digest{bank.Value(r)}
	}
	if err := pol.Check(); err != nil {
		return err
	}
	b, err := pol.Marshal()
	if err != nil {
		return err
	}
	_, err = stdout.Write(append(b, '\n'))
	return err
}
