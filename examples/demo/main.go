// Command demo runs the whole shielding flow in one process, with nothing
// to set up:
//
//	go run ./examples/demo
//
// A guardian service (examples/hgs/server) listens on 127.0.0.1 over HTTPS.
// A VM owner makes a key protector for a VM with the owner's and the
// fabric's guardians, and seals the VM's vTPM under its transport key. A
// host whose TPM (a vtpm) was extended with the events of a real boot log
// (testdata/rhel8-uefi.bin, a GCE Shielded VM with Secure Boot) attests,
// gets a health token, gets the transport key, opens the vTPM state and
// starts the VM; the guest seals a disk key in its vTPM and unseals it
// after the state was sealed and opened again. Then each attack of the
// threat table is tried and must fail.
//
// The demo prints a short narrative and a table, and exits 0 only if every
// step behaved as expected.
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/examples/hgs/server"
	"github.com/shieldvm/shieldvm/examples/host/agent"
	"github.com/shieldvm/shieldvm/examples/host/bootlog"
	"github.com/shieldvm/shieldvm/examples/internal/api"
	"github.com/shieldvm/shieldvm/keyprotector"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
	"github.com/shieldvm/shieldvm/vtpm"
)

// bootLog is the TCG event log of a real boot: a GCE Shielded VM running
// RHEL 8 with Secure Boot on (from go-eventlog's test data, Apache-2.0; see
// testdata/LICENSE-go-eventlog).
//
//go:embed testdata/rhel8-uefi.bin
var bootLog []byte

const vmID = "vm-finance-01"

func main() {
	mode := flag.String("mode", "tpm", "how hosts prove their identity: tpm (the EK registered, credential activation) or host-key (a registered host key)")
	flag.Parse()
	m, err := attest.ParseMode(*mode)
	if err != nil || (m != attest.ModeTPM && m != attest.ModeHostKey) {
		fmt.Fprintln(os.Stderr, "demo: -mode must be host-key or tpm")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Stdout, m)
	stop()
	os.Exit(code)
}

// demo holds the parts of the run and the table of outcomes.
type demo struct {
	mode   attest.Mode
	w      io.Writer
	rows   []row
	client *http.Client
	url    string
}

type row struct {
	step, want, got string
	ok              bool
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.w, format+"\n", args...) }

// expect records a step that must succeed.
func (d *demo) expect(step string, err error) bool {
	r := row{step: step, want: "works", got: "works", ok: err == nil}
	if err != nil {
		r.got = short(err)
		d.say("   !! %s: %v", step, err)
	}
	d.rows = append(d.rows, r)
	return err == nil
}

// refuse records an attack that must fail with the given outcome; match
// says whether err is that outcome.
func (d *demo) refuse(step, want string, err error, match bool) {
	r := row{step: step, want: "refused: " + want, ok: err != nil && match}
	switch {
	case err == nil:
		r.got = "SUCCEEDED"
		d.say("   !! %s: the attack succeeded", step)
	case match:
		r.got = "refused: " + want
		if agent.Code(err) != "" {
			r.got = "refused: " + short(err)
		}
		d.say("   -> refused: %v", err)
	default:
		r.got = "refused: " + short(err)
		d.say("   !! %s: refused, but not as expected: %v", step, err)
	}
	d.rows = append(d.rows, r)
}

// short is the first clause of an error, for the table.
func short(err error) string {
	if c := agent.Code(err); c != "" {
		var e *agent.Error
		errors.As(err, &e)
		return fmt.Sprintf("%d %s", e.Status, c)
	}
	s := err.Error()
	if i := strings.Index(s, ": "); i > 0 && len(s) > 60 {
		if j := strings.Index(s[i+2:], ": "); j > 0 {
			s = s[:i+2+j]
		}
	}
	return s
}

func run(ctx context.Context, w io.Writer, mode attest.Mode) int {
	d := &demo{w: w, mode: mode}
	start := time.Now()
	if err := d.flow(ctx); err != nil {
		d.say("\ndemo stopped: %v", err)
		d.rows = append(d.rows, row{step: "demo ran to the end", want: "works", got: short(err)})
	}
	d.say("")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "STEP\tEXPECTED\tOBSERVED\t\n")
	failed := 0
	for _, r := range d.rows {
		mark := "ok"
		if !r.ok {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.step, r.want, r.got, mark)
	}
	tw.Flush()
	if failed > 0 {
		d.say("\n%d of %d steps did not behave as expected.", failed, len(d.rows))
		return 1
	}
	d.say("\nAll %d steps behaved as expected (%.1f s).", len(d.rows), time.Since(start).Seconds())
	return 0
}

// hostKey returns a host key for host-key mode, or nil in TPM mode.
func (d *demo) hostKey() (crypto.Signer, error) {
	if d.mode == attest.ModeTPM {
		return nil, nil
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// startHGS runs the guardian service on 127.0.0.1 over HTTPS, with its
// state in a temporary directory.
func (d *demo) startHGS(ctx context.Context, dir string) (admin *agent.Client, shutdown func(), err error) {
	store, err := server.OpenDirStore(dir)
	if err != nil {
		return nil, nil, err
	}
	fabric, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "fabric-hgs"})
	if err != nil {
		return nil, nil, err
	}
	tokenKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	adminToken := make([]byte, 16)
	rand.Read(adminToken)
	svc, err := server.New(server.Config{
		Store:            store,
		Guardian:         fabric,
		TokenKey:         tokenKey,
		ChallengeSecret:  secret,
		AdminTokenSHA256: sha256.Sum256([]byte(hex.EncodeToString(adminToken))),
		Logger:           slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, nil, err
	}
	cert, err := server.SelfSigned("127.0.0.1")
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	srv := svc.HTTPServer("", svc.TLSConfig(cert))
	go srv.ServeTLS(ln, "", "")
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	d.client = &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}},
		Timeout:   30 * time.Second,
	}
	d.url = "https://" + ln.Addr().String()
	shutdown = func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(c)
		d.client.CloseIdleConnections()
	}
	return &agent.Client{URL: d.url, HTTP: d.client, AdminToken: hex.EncodeToString(adminToken)}, shutdown, nil
}

// baseline is the policy an administrator learns from a known-good host:
// the SHA-256 values of PCRs 0-7 (firmware, its configuration, Secure Boot
// state and databases, the boot manager) that the log replays to.
func baseline(log []byte) ([]byte, error) {
	l, err := measure.Parse(log)
	if err != nil {
		return nil, err
	}
	regs, err := l.Replay()
	if err != nil {
		return nil, err
	}
	b := regs.Bank(measure.SHA256)
	pol := &policy.Policy{
		Version:     policy.Version,
		ID:          "fabric-baseline-1",
		Description: "PCRs 0-7 of a known-good host (GCE Shielded VM, RHEL 8, Secure Boot on)",
		// What the measured boot must show, judged event by event, and the
		// exact PCR values of the known-good host.
		HGS:  &policy.HGSRules{SecureBootEnabled: policy.Enforce, UefiDebugDisabled: policy.Enforce},
		PCRs: map[string]map[string][]policy.Digest{"sha256": {}},
	}
	for r := range 8 {
		pol.PCRs["sha256"][fmt.Sprint(r)] = []policy.Digest{b.Value(r)}
	}
	if err := pol.Check(); err != nil {
		return nil, err
	}
	return pol.Marshal()
}

// bootHost boots a host TPM with a log: reset (as at power-on), then every
// measured event extended, as the firmware would have.
func bootHost(t *vtpm.TPM, log []byte) error {
	if err := t.PowerCycle(); err != nil {
		return err
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(t); err != nil {
		return err
	}
	return bootlog.Extend(t, log)
}

func (d *demo) newAgent(ctx context.Context, tpm transport.TPM, hostKey crypto.Signer, log []byte, trace bool) (*agent.Agent, error) {
	cfg := agent.Config{
		HostKey:  hostKey,
		Banks:    []measure.HashAlg{measure.SHA256, measure.SHA384},
		EventLog: func(context.Context) ([]byte, error) { return log, nil },
	}
	if trace {
		cfg.Trace = func(s string) { d.say("   %s", s) }
	}
	return agent.New(ctx, &agent.Client{URL: d.url, HTTP: d.client}, tpm, cfg)
}

func (d *demo) flow(ctx context.Context) error {
	// The host's TPM has the SHA-256 and SHA-384 banks: the log as its
	// firmware writes it has no SHA-1 digests (nothing is quoted or
	// trusted in SHA-1).
	goodLog, err := bootlog.KeepBanks(bootLog, measure.SHA256, measure.SHA384)
	if err != nil {
		return err
	}
	debugLog, err := bootlog.WithDebugMode(goodLog)
	if err != nil {
		return err
	}
	parsed, err := measure.Parse(goodLog)
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "shieldvm-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	admin, shutdown, err := d.startHGS(ctx, dir)
	if err != nil {
		return err
	}
	defer shutdown()

	d.say("1. The fabric's guardian service (HGS) listens at %s (TLS 1.3, state in a directory).", d.url)
	fabricDesc, err := admin.Guardian(ctx)
	if !d.expect("owner fetches the guardian descriptor", err) {
		return err
	}

	d.say("2. The VM owner makes a key protector for %s: a fresh transport key TK wrapped to", vmID)
	d.say("   the owner and to guardian %q, and seals the VM's new vTPM under a key derived from TK.", fabricDesc.Name())
	owner, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "vm-owner"})
	if err != nil {
		return err
	}
	kp0, err := keyprotector.New(ctx, owner, []*keyprotector.Descriptor{fabricDesc}, &keyprotector.Config{})
	if err != nil {
		return err
	}
	state0, err := provisionVTPM(ctx, kp0, owner)
	if !d.expect("owner creates the key protector and the sealed vTPM", err) {
		return err
	}
	d.say("   The VM files are the key protector (%d bytes) and the sealed vTPM state (%d bytes); neither holds a key in clear.", len(kp0.Marshal()), len(state0))

	d.say("3. The host boots: its TPM is extended with the %d events of a real boot log.", parsed.NumEvents())
	hostTPM, err := vtpm.New(vtpm.Config{})
	if err != nil {
		return err
	}
	defer hostTPM.Close()
	if err := bootHost(hostTPM, goodLog); err != nil {
		return err
	}
	hostKey, err := d.hostKey()
	if err != nil {
		return err
	}
	host, err := d.newAgent(ctx, hostTPM, hostKey, goodLog, true)
	if err != nil {
		return err
	}
	idPEM, err := host.IdentityPEM()
	if err != nil {
		return err
	}
	pol, err := baseline(goodLog)
	if err != nil {
		return err
	}
	err = errors.Join(admin.RegisterHost(ctx, "host-1", host.Mode(), idPEM), admin.SetPolicy(ctx, pol))
	if !d.expect("admin registers host-1 and sets the policy", err) {
		return err
	}
	d.say("   The administrator registers the host (%s mode: %s) and a policy learned from a",
		host.Mode(), map[bool]string{true: "its TPM's EK", false: "its host key"}[host.Mode() == attest.ModeTPM])
	d.say("   known-good boot (SHA-256 PCRs 0-7).")

	d.say("4. The VM starts on host-1:")
	rel, err := host.Unlock(ctx, kp0)
	if !d.expect("healthy, registered host gets the VM's key", err) {
		return err
	}
	vm, err := agent.StartVM(rel, state0, vmID, 0)
	if !d.expect("host opens the vTPM state and starts the VM", err) {
		return err
	}
	diskKey := make([]byte, 32)
	rand.Read(diskKey)
	blob, err := guestSeal(vm, diskKey)
	if !d.expect("guest seals its disk key in its vTPM", err) {
		return err
	}
	d.say("   The guest seals a disk-encryption key in its vTPM. The VM stops: the host seals the vTPM state")
	d.say("   under TK' (the service re-keyed the key protector) and stores the new key protector.")
	state1, kp1, err := agent.StopVM(rel, vm)
	gen1 := vm.Generation()
	vm.Close()
	rel.Destroy()
	if !d.expect("host seals the vTPM state under the next key", err) {
		return err
	}

	d.say("5. The VM starts again:")
	rel, err = host.Unlock(ctx, kp1)
	if !d.expect("host gets the re-keyed key with its token", err) {
		return err
	}
	vm, err = agent.StartVM(rel, state1, vmID, gen1)
	if !d.expect("host opens the re-sealed vTPM state", err) {
		return err
	}
	got, err := guestUnseal(vm, blob)
	if err == nil && !hmac.Equal(got, diskKey) {
		err = errors.New("the unsealed disk key differs")
	}
	if !d.expect("guest unseals the same disk key", err) {
		return err
	}
	d.say("   The guest unseals its disk key: the vTPM survived the seal/open cycle.")
	state2, kp2, err := agent.StopVM(rel, vm)
	gen2 := vm.Generation()
	vm.Close()
	rel.Destroy()
	if !d.expect("VM stops; state sealed again", err) {
		return err
	}
	token, _ := host.Token()

	d.say("\nThe attacks of the threat table:")

	d.say("a. The VM's files are copied off the host and opened elsewhere.")
	var guess [32]byte
	rand.Read(guess[:])
	_, err = vtpm.Open(state2, &guess, vtpm.OpenConfig{VMID: vmID})
	d.refuse("stolen vTPM state opened with a guessed key", "vtpm.ErrBadState", err, errors.Is(err, vtpm.ErrBadState))
	thief, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "thief"})
	if err != nil {
		return err
	}
	_, err = kp2.Unwrap(ctx, thief, nil)
	d.refuse("stolen key protector unwrapped by another guardian", "ErrNotListed", err, errors.Is(err, keyprotector.ErrNotListed))
	thiefKey, err := keyprotector.SuiteX25519.GenerateHostKey()
	if err != nil {
		return err
	}
	_, err = (&agent.Client{URL: d.url, HTTP: d.client}).Release(ctx, &api.ReleaseRequest{KeyProtector: kp2.Marshal(), Token: token, ReleaseKey: api.MarshalReleaseKey(thiefKey.PublicKey())})
	d.refuse("stolen files + host-1's token, from another machine", api.CodeTokenOtherHost, err, agent.Code(err) == api.CodeTokenOtherHost)

	d.say("b. The key protector is tampered with (one byte changed) and sent with host-1's valid token.")
	bad := kp2.Marshal()
	bad[len(bad)/2] ^= 0x01
	_, err = (&agent.Client{URL: d.url, HTTP: d.client}).Release(ctx, &api.ReleaseRequest{KeyProtector: bad, Token: token, ReleaseKey: host.ReleaseKey()})
	d.refuse("tampered key protector", api.CodeKeyProtector, err, agent.Code(err) == api.CodeKeyProtector)

	d.say("c. The VM is rolled back to a backup taken before its last start.")
	_, err = host.Unlock(ctx, kp0)
	d.refuse("old key protector (generation 0) replayed", api.CodeRollback, err, agent.Code(err) == api.CodeRollback)
	rel, err = host.Unlock(ctx, kp2)
	if !d.expect("current key protector still opens", err) {
		return err
	}
	_, err = agent.StartVM(rel, state1, vmID, gen2)
	want := "vtpm.ErrRollback"
	if errors.Is(err, vtpm.ErrBadState) {
		want = "vtpm.ErrBadState"
	}
	d.refuse("old vTPM state with the current key", want, err, errors.Is(err, vtpm.ErrRollback) || errors.Is(err, vtpm.ErrBadState))
	vm, err = agent.StartVM(rel, state2, vmID, gen2)
	if !d.expect("current vTPM state still opens", err) {
		return err
	}
	vm.Close()
	rel.Destroy()

	d.say("d. A host that is not registered (same boot, another TPM and key) asks for the key.")
	otherTPM, err := vtpm.New(vtpm.Config{})
	if err != nil {
		return err
	}
	defer otherTPM.Close()
	if err := bootHost(otherTPM, goodLog); err != nil {
		return err
	}
	otherKey, err := d.hostKey()
	if err != nil {
		return err
	}
	other, err := d.newAgent(ctx, otherTPM, otherKey, goodLog, false)
	if err != nil {
		return err
	}
	_, err = other.Unlock(ctx, kp2)
	other.Close()
	d.refuse("unregistered host", api.CodeUnregistered, err, agent.Code(err) == api.CodeUnregistered)

	d.say("e. host-1 reboots with firmware in debug mode (\"%s\" measured into PCR 7).", bootlog.DebugModeAction)
	host.Close()
	if err := bootHost(hostTPM, debugLog); err != nil {
		return err
	}
	dbg, err := d.newAgent(ctx, hostTPM, hostKey, debugLog, false)
	if err != nil {
		return err
	}
	defer dbg.Close()
	_, err = dbg.Unlock(ctx, kp2)
	var pe *agent.Error
	if errors.As(err, &pe) && pe.Verdict != nil {
		for _, f := range pe.Verdict.Failed() {
			d.say("   policy rule %s failed: %s", f.Rule, f.Reason)
		}
	}
	d.refuse("host booted with a debugger", api.CodeDenied, err, agent.Code(err) == api.CodeDenied)
	return nil
}

// provisionVTPM is the owner's side: TK from the new key protector, a new
// vTPM for the VM, its state sealed under the key derived from TK.
func provisionVTPM(ctx context.Context, kp *keyprotector.KeyProtector, owner keyprotector.Guardian) ([]byte, error) {
	tk, err := kp.Unwrap(ctx, owner, nil)
	if err != nil {
		return nil, err
	}
	defer tk.Destroy()
	t, err := vtpm.New(vtpm.Config{VMID: vmID})
	if err != nil {
		return nil, err
	}
	defer t.Close()
	k := tk.Derive(keyprotector.LabelVTPMState)
	defer clear(k[:])
	return t.Seal(&k)
}

// sealedObject is what the guest keeps on its disk: a sealed data object
// under its vTPM's storage root key.
type sealedObject struct {
	public  tpm2.TPM2BPublic
	private tpm2.TPM2BPrivate
}

func srk(t transport.TPM) (*tpm2.CreatePrimaryResponse, error) {
	return tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t)
}

// guestSeal is the guest sealing a secret in its vTPM (TPM2_Create of a
// keyed-hash data object under the SRK).
func guestSeal(t transport.TPM, secret []byte) (*sealedObject, error) {
	p, err := srk(t)
	if err != nil {
		return nil, err
	}
	defer tpm2.FlushContext{FlushHandle: p.ObjectHandle}.Execute(t)
	c, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: p.ObjectHandle, Name: p.Name, Auth: tpm2.PasswordAuth(nil)},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM: true, FixedParent: true, UserWithAuth: true, NoDA: true,
			},
		}),
	}.Execute(t)
	if err != nil {
		return nil, err
	}
	return &sealedObject{public: c.OutPublic, private: c.OutPrivate}, nil
}

// guestUnseal loads the sealed object under the SRK (the same key: the
// vTPM's seeds are part of its sealed state) and unseals it.
func guestUnseal(t transport.TPM, o *sealedObject) ([]byte, error) {
	p, err := srk(t)
	if err != nil {
		return nil, err
	}
	defer tpm2.FlushContext{FlushHandle: p.ObjectHandle}.Execute(t)
	l, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: p.ObjectHandle, Name: p.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    o.private,
		InPublic:     o.public,
	}.Execute(t)
	if err != nil {
		return nil, err
	}
	defer tpm2.FlushContext{FlushHandle: l.ObjectHandle}.Execute(t)
	u, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: l.ObjectHandle, Name: l.Name, Auth: tpm2.PasswordAuth(nil)}}.Execute(t)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(u.OutData.Buffer), nil
}
