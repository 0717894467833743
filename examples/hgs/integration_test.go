package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/examples/host/agent"
	"github.com/shieldvm/shieldvm/examples/host/bootlog"
	"github.com/shieldvm/shieldvm/examples/internal/api"
	"github.com/shieldvm/shieldvm/keyprotector"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
	"github.com/shieldvm/shieldvm/vtpm"
)

var updateSeeds = flag.Bool("update-seeds", false, "write the request bodies of the flow to ../internal/api/testdata as fuzz seeds")

const adminToken = "integration-test-admin-token-0123456789"

// hgsProc is the service started by run, as `hgs` would be, on 127.0.0.1.
type hgsProc struct {
	url      string
	client   *http.Client // trusts the service's self-signed certificate
	adminTLS *http.Client // also presents an admin client certificate
	cancel   context.CancelFunc
	done     chan int
	logs     *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testCA makes a CA and a client certificate it issued.
func testCA(t *testing.T) (caPEM []byte, client tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "admin CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "admin"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

func startHGS(t *testing.T) *hgsProc {
	t.Helper()
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	caPEM, clientCert := testCA(t)
	caFile := filepath.Join(dir, "admin-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &hgsProc{cancel: cancel, done: make(chan int, 1), logs: &syncBuffer{}}
	type ready struct {
		url  string
		cert *x509.Certificate
	}
	rc := make(chan ready, 1)
	go func() {
		p.done <- run(ctx, []string{
			"-addr", "127.0.0.1:0", "-dir", filepath.Join(dir, "state"),
			"-admin-token-file", tokFile, "-admin-ca", caFile, "-json-logs",
		}, p.logs, func(url string, cert *x509.Certificate) { rc <- ready{url, cert} })
	}()
	select {
	case r := <-rc:
		p.url = r.url
		roots := x509.NewCertPool()
		roots.AddCert(r.cert)
		p.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		p.adminTLS = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}}}}
	case code := <-p.done:
		t.Fatalf("hgs exited with %d:\n%s", code, p.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("hgs did not start")
	}
	t.Cleanup(func() {
		p.cancel()
		<-p.done
		p.client.CloseIdleConnections()
		p.adminTLS.CloseIdleConnections()
	})
	return p
}

func (p *hgsProc) api(admin bool) *agent.Client {
	c := &agent.Client{URL: p.url, HTTP: p.client}
	if admin {
		c.AdminToken = adminToken
	}
	return c
}

// recorder keeps the request bodies of the flow, for fuzz seeds.
type recorder struct {
	mu     sync.Mutex
	bodies map[string][][]byte
	next   http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Method == http.MethodPost {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		r.mu.Lock()
		r.bodies[req.URL.Path] = append(r.bodies[req.URL.Path], b)
		r.mu.Unlock()
	}
	return r.next.RoundTrip(req)
}

func goodLog(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../demo/testdata/rhel8-uefi.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, err = bootlog.KeepBanks(b, measure.SHA256, measure.SHA384)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testHost is a host: a vtpm booted with a log, and its agent in host-key
// mode (TestIntegrationTPMMode covers TPM mode).
type testHost struct {
	tpm *vtpm.TPM
	key crypto.Signer
	ag  *agent.Agent
}

func newHost(t *testing.T, c *agent.Client, log []byte) *testHost {
	t.Helper()
	tpm, err := vtpm.New(vtpm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	h := &testHost{tpm: tpm}
	h.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h.boot(t, c, log)
	return h
}

// boot resets the TPM, extends it with log and makes a fresh agent.
func (h *testHost) boot(t *testing.T, c *agent.Client, log []byte) {
	t.Helper()
	if h.ag != nil {
		h.ag.Close()
	}
	if err := h.tpm.PowerCycle(); err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(h.tpm); err != nil {
		t.Fatal(err)
	}
	if err := bootlog.Extend(h.tpm, log); err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(context.Background(), c, h.tpm, agent.Config{
		HostKey:  h.key,
		Banks:    []measure.HashAlg{measure.SHA256, measure.SHA384},
		EventLog: func(context.Context) ([]byte, error) { return log, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.ag = ag
	t.Cleanup(func() { ag.Close() })
}

func (h *testHost) register(t *testing.T, admin *agent.Client, id string) {
	t.Helper()
	pemKey, err := h.ag.IdentityPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.RegisterHost(context.Background(), id, h.ag.Mode(), pemKey); err != nil {
		t.Fatal(err)
	}
}

func pcrPolicy(t testing.TB, log []byte) []byte {
	t.Helper()
	l, err := measure.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	regs, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	pol := &policy.Policy{Version: policy.Version, ID: "integration", PCRs: map[string]map[string][]policy.Digest{"sha256": {}}}
	for r := range 8 {
		pol.PCRs["sha256"][fmt.Sprint(r)] = []policy.Digest{regs.Bank(measure.SHA256).Value(r)}
	}
	b, err := pol.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newVM is the owner's side: a key protector for the guardians and a
// sealed vTPM.
func newVM(t *testing.T, guardians ...*keyprotector.Descriptor) (*keyprotector.KeyProtector, []byte) {
	t.Helper()
	ctx := context.Background()
	owner, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "owner"})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := keyprotector.New(ctx, owner, guardians, &keyprotector.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := kp.Unwrap(ctx, owner, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Destroy()
	v, err := vtpm.New(vtpm.Config{VMID: "vm-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	k := tk.Derive(keyprotector.LabelVTPMState)
	state, err := v.Seal(&k)
	if err != nil {
		t.Fatal(err)
	}
	return kp, state
}

func wantCode(t *testing.T, err error, code string, status int) {
	t.Helper()
	var e *agent.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want a %d %s problem", err, status, code)
	}
	if e.Code != code || e.Status != status {
		t.Fatalf("got %d %s (%s), want %d %s", e.Status, e.Code, e.Detail, status, code)
	}
}

// TestIntegration runs hgs on 127.0.0.1 over real HTTPS and the host
// flows against it, the attacks included.
func TestIntegration(t *testing.T) {
	ctx := context.Background()
	p := startHGS(t)
	rec := &recorder{bodies: map[string][][]byte{}, next: p.client.Transport}
	hostHTTP := &http.Client{Timeout: 30 * time.Second, Transport: rec}
	hostAPI := &agent.Client{URL: p.url, HTTP: hostHTTP}
	admin := p.api(true)
	log := goodLog(t)

	desc, err := hostAPI.Guardian(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("AdminWithoutCredentialsRefused", func(t *testing.T) {
		_, err := p.api(false).Do(ctx, http.MethodGet, api.PathAdminHosts, "", nil)
		wantCode(t, err, api.CodeUnauthorized, 401)
		wrong := &agent.Client{URL: p.url, HTTP: p.client, AdminToken: adminToken + "x"}
		_, err = wrong.Do(ctx, http.MethodGet, api.PathAdminHosts, "", nil)
		wantCode(t, err, api.CodeUnauthorized, 401)
		err = p.api(false).SetPolicy(ctx, pcrPolicy(t, log))
		wantCode(t, err, api.CodeUnauthorized, 401)
	})
	t.Run("AdminByClientCertificate", func(t *testing.T) {
		c := &agent.Client{URL: p.url, HTTP: p.adminTLS}
		if _, err := c.Do(ctx, http.MethodGet, api.PathAdminHosts, "", nil); err != nil {
			t.Fatal(err)
		}
	})

	host := newHost(t, hostAPI, log)
	t.Run("NoPolicyYet", func(t *testing.T) {
		kp, _ := newVM(t, desc)
		_, err := host.ag.Unlock(ctx, kp)
		wantCode(t, err, api.CodeNoPolicy, 503)
	})
	if err := admin.SetPolicy(ctx, pcrPolicy(t, log)); err != nil {
		t.Fatal(err)
	}
	t.Run("UnregisteredHostDenied", func(t *testing.T) {
		kp, _ := newVM(t, desc)
		_, err := host.ag.Unlock(ctx, kp)
		wantCode(t, err, api.CodeUnregistered, 403)
	})
	host.register(t, admin, "host-1")

	kp, state := newVM(t, desc)
	var token []byte
	t.Run("HealthyHostStartsVM", func(t *testing.T) {
		var gen uint64
		for i := range 3 {
			rel, err := host.ag.Unlock(ctx, kp)
			if err != nil {
				t.Fatalf("start %d: %v", i, err)
			}
			vm, err := agent.StartVM(rel, state, "vm-1", gen)
			if err != nil {
				t.Fatalf("start %d: %v", i, err)
			}
			var next *keyprotector.KeyProtector
			state, next, err = agent.StopVM(rel, vm)
			gen = vm.Generation()
			vm.Close()
			rel.Destroy()
			if err != nil || next == nil || next.Generation() != kp.Generation()+1 {
				t.Fatalf("start %d: stop: %v", i, err)
			}
			kp = next
		}
		token, _ = host.ag.Token()
	})
	if token == nil {
		t.Fatal("no token")
	}

	t.Run("TokenForAnotherHostRefused", func(t *testing.T) {
		other, _ := keyprotector.SuiteX25519.GenerateHostKey()
		_, err := hostAPI.Release(ctx, &api.ReleaseRequest{KeyProtector: kp.Marshal(), Token: token, ReleaseKey: api.MarshalReleaseKey(other.PublicKey())})
		wantCode(t, err, api.CodeTokenOtherHost, 403)
	})
	t.Run("ForgedTokenRefused", func(t *testing.T) {
		bad := bytes.Clone(token)
		bad[len(bad)-1] ^= 1
		_, err := hostAPI.Release(ctx, &api.ReleaseRequest{KeyProtector: kp.Marshal(), Token: bad, ReleaseKey: host.ag.ReleaseKey()})
		wantCode(t, err, api.CodeTokenInvalid, 401)
	})
	t.Run("KeyProtectorForAnotherGuardianRefused", func(t *testing.T) {
		g, _ := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "another-hgs"})
		other, _ := newVM(t, g.Descriptor())
		_, err := hostAPI.Release(ctx, &api.ReleaseRequest{KeyProtector: other.Marshal(), Token: token, ReleaseKey: host.ag.ReleaseKey()})
		wantCode(t, err, api.CodeNotListed, 403)
	})
	t.Run("TamperedKeyProtectorRefused", func(t *testing.T) {
		for _, at := range []int{10, len(kp.Marshal()) / 2, len(kp.Marshal()) - 5} {
			bad := kp.Marshal()
			bad[at] ^= 0x40
			_, err := hostAPI.Release(ctx, &api.ReleaseRequest{KeyProtector: bad, Token: token, ReleaseKey: host.ag.ReleaseKey()})
			wantCode(t, err, api.CodeKeyProtector, 400)
		}
	})
	t.Run("RolledBackKeyProtectorRefused", func(t *testing.T) {
		// kp is at generation 3 and the service saw generation 2; once
		// the host starts with 3, 2 is a rollback.
		rel, err := host.ag.Unlock(ctx, kp)
		if err != nil {
			t.Fatal(err)
		}
		prev := kp
		kp = rel.NextKeyProtector
		rel.Destroy()
		if _, err := host.ag.Unlock(ctx, kp); err != nil {
			t.Fatal(err)
		}
		_, err = host.ag.Unlock(ctx, prev)
		wantCode(t, err, api.CodeRollback, 409)
	})
	t.Run("StolenFilesOpenNowhereElse", func(t *testing.T) {
		// Another process, even with the same TPM and host key, has
		// another release key: the token is useless to it.
		thief, err := agent.New(ctx, hostAPI, host.tpm, agent.Config{HostKey: host.key})
		if err != nil {
			t.Fatal(err)
		}
		defer thief.Close()
		_, err = hostAPI.Release(ctx, &api.ReleaseRequest{KeyProtector: kp.Marshal(), Token: token, ReleaseKey: thief.ReleaseKey()})
		wantCode(t, err, api.CodeTokenOtherHost, 403)
	})
	t.Run("RemovedHostDenied", func(t *testing.T) {
		h2 := newHost(t, hostAPI, log)
		h2.register(t, admin, "host-2")
		if err := admin.RemoveHost(ctx, "host-2"); err != nil {
			t.Fatal(err)
		}
		_, err := h2.ag.Attest(ctx)
		wantCode(t, err, api.CodeUnregistered, 403)
		err = admin.RemoveHost(ctx, "host-2")
		wantCode(t, err, api.CodeNotFound, 404)
	})
	t.Run("HostKeyNotAcceptedAsEK", func(t *testing.T) {
		// A key registered in host-key mode is not an EK, and an EK is
		// not a host key: register host-3's key as an EK and it is
		// unknown in host-key mode.
		h3 := newHost(t, hostAPI, log)
		pemKey, _ := h3.ag.IdentityPEM()
		if err := admin.RegisterHost(ctx, "host-3", attest.ModeTPM, pemKey); err != nil {
			t.Fatal(err)
		}
		_, err := h3.ag.Attest(ctx)
		wantCode(t, err, api.CodeUnregistered, 403)
	})
	t.Run("DebugModeHostDenied", func(t *testing.T) {
		dbg, err := bootlog.WithDebugMode(log)
		if err != nil {
			t.Fatal(err)
		}
		host.boot(t, hostAPI, dbg)
		_, err = host.ag.Unlock(ctx, kp)
		wantCode(t, err, api.CodeDenied, 403)
		var e *agent.Error
		errors.As(err, &e)
		if e.Verdict == nil || len(e.Verdict.Failed()) != 1 || e.Verdict.Failed()[0].Rule != "pcr.sha256[7]" {
			t.Fatalf("verdict %+v", e.Verdict)
		}
	})
	t.Run("HostsListed", func(t *testing.T) {
		b, err := admin.Do(ctx, http.MethodGet, api.PathAdminHosts, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var hosts []api.HostRecord
		if err := json.Unmarshal(b, &hosts); err != nil {
			t.Fatal(err)
		}
		if len(hosts) != 2 || hosts[0].ID != "host-1" || hosts[0].Mode != "host-key" || hosts[1].ID != "host-3" || hosts[1].Mode != "tpm" {
			t.Fatalf("hosts %+v", hosts)
		}
	})
	badInput(t, p)
	if *updateSeeds {
		writeSeeds(t, rec)
	}
	// The logs name hosts and outcomes, never a key or token.
	logs := p.logs.String()
	for _, s := range []string{`"path":"/v1/release"`, `"code":"token_other_host"`, `"host":"host-1"`} {
		if !strings.Contains(logs, s) {
			t.Errorf("logs lack %s", s)
		}
	}
}

// badInput: every endpoint answers bad input with a 4xx problem document.
func badInput(t *testing.T, p *hgsProc) {
	huge := bytes.Repeat([]byte{0x41}, api.MaxReleaseRequestSize+1)
	notCBOR := []byte{0xbf, 0xff, 0x00, 0x1c}
	cases := []struct {
		name, method, path, ctype string
		body                      []byte
		admin                     bool
		status                    int
		code                      string
	}{
		{"ChallengeOversized", "POST", api.PathChallenge, api.ContentTypeCBOR, huge[:api.MaxChallengeRequestSize+1], false, 413, api.CodeTooLarge},
		{"ChallengeMalformedCBOR", "POST", api.PathChallenge, api.ContentTypeCBOR, notCBOR, false, 400, api.CodeMalformed},
		{"ChallengeUnknownField", "POST", api.PathChallenge, api.ContentTypeCBOR, []byte{0xa1, 0x09, 0x40}, false, 400, api.CodeMalformed},
		{"ChallengeWrongContentType", "POST", api.PathChallenge, "application/json", []byte(`{}`), false, 415, api.CodeContentType},
		{"ChallengeGarbageTPMPublic", "POST", api.PathChallenge, api.ContentTypeCBOR, mustCBOR(t, &api.ChallengeRequest{EKPublic: []byte{1, 2}, AKPublic: []byte{3}}), false, 400, api.CodeMalformed},
		{"ChallengeWrongMethod", "GET", api.PathChallenge, "", nil, false, 405, api.CodeMethod},
		{"AttestOversized", "POST", api.PathAttest, api.ContentTypeCBOR, huge[:api.MaxEvidenceSize+1], false, 413, api.CodeTooLarge},
		{"AttestMalformedCBOR", "POST", api.PathAttest, api.ContentTypeCBOR, notCBOR, false, 400, api.CodeMalformed},
		{"AttestNoContentType", "POST", api.PathAttest, "", []byte{0xa0}, false, 415, api.CodeContentType},
		{"AttestEmpty", "POST", api.PathAttest, api.ContentTypeCBOR, nil, false, 400, api.CodeMalformed},
		{"ReleaseOversized", "POST", api.PathRelease, api.ContentTypeCBOR, huge, false, 413, api.CodeTooLarge},
		{"ReleaseMalformedCBOR", "POST", api.PathRelease, api.ContentTypeCBOR, notCBOR, false, 400, api.CodeMalformed},
		{"ReleaseWrongContentType", "POST", api.PathRelease, "text/plain", []byte("kp"), false, 415, api.CodeContentType},
		{"ReleaseBadReleaseKey", "POST", api.PathRelease, api.ContentTypeCBOR, mustCBOR(t, &api.ReleaseRequest{KeyProtector: []byte{1}, ReleaseKey: []byte{0, 0x20, 1}}), false, 400, api.CodeMalformed},
		{"ReleaseGarbageToken", "POST", api.PathRelease, api.ContentTypeCBOR, mustCBOR(t, &api.ReleaseRequest{KeyProtector: []byte{1}, Token: []byte{2}, ReleaseKey: api.MarshalReleaseKey(mustHostKey(t))}), false, 401, api.CodeTokenInvalid},
		{"ReleaseNoToken", "POST", api.PathRelease, api.ContentTypeCBOR, mustCBOR(t, &api.ReleaseRequest{KeyProtector: []byte{1}, ReleaseKey: api.MarshalReleaseKey(mustHostKey(t))}), false, 401, api.CodeAttestationRequired},
		{"GuardianWrongMethod", "POST", api.PathGuardian, api.ContentTypeCBOR, nil, false, 405, api.CodeMethod},
		{"UnknownPath", "GET", "/v1/nothing", "", nil, false, 404, api.CodeNotFound},
		{"PolicyOversized", "PUT", api.PathAdminPolicy, api.ContentTypeJSON, bytes.Repeat([]byte(" "), api.MaxPolicySize+1), true, 413, api.CodeTooLarge},
		{"PolicyMalformed", "PUT", api.PathAdminPolicy, api.ContentTypeJSON, []byte(`{"version":1,"id":"x","nonsense":true}`), true, 400, api.CodeMalformed},
		{"PolicyWrongContentType", "PUT", api.PathAdminPolicy, api.ContentTypeCBOR, []byte{0xa0}, true, 415, api.CodeContentType},
		{"HostNotPEM", "PUT", api.PathAdminHosts + "/h", api.ContentTypePEM, []byte("not pem"), true, 400, api.CodeMalformed},
		{"HostBadID", "PUT", api.PathAdminHosts + "/-bad", api.ContentTypePEM, []byte("x"), true, 400, api.CodeBadRequest},
		{"HostBadMode", "PUT", api.PathAdminHosts + "/h?mode=admin", api.ContentTypePEM, []byte("x"), true, 400, api.CodeBadRequest},
		{"HostOversized", "PUT", api.PathAdminHosts + "/h", api.ContentTypePEM, huge[:api.MaxHostKeySize+1], true, 413, api.CodeTooLarge},
	}
	for _, c := range cases {
		t.Run("BadInput/"+c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, p.url+c.path, bytes.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			if c.admin {
				req.Header.Set("Authorization", "Bearer "+adminToken)
			}
			resp, err := p.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var pr api.Problem
			if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
				t.Fatalf("status %d, body not a problem document: %v", resp.StatusCode, err)
			}
			if resp.StatusCode != c.status || pr.Code != c.code || pr.Status != c.status || pr.Title == "" {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, pr, c.status, c.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != api.ContentTypeProblem {
				t.Errorf("content type %q", ct)
			}
		})
	}
}

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	b, err := api.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustHostKey(t *testing.T) hpke.PublicKey {
	t.Helper()
	k, err := keyprotector.SuiteX25519.GenerateHostKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func writeSeeds(t *testing.T, rec *recorder) {
	dir := "../internal/api/testdata"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{api.PathChallenge: "challenge", api.PathAttest: "evidence", api.PathRelease: "release"}
	for path, bodies := range rec.bodies {
		for i, b := range bodies {
			if i >= 2 {
				break
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.cbor", names[path], i)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestGracefulShutdown: cancelling the context stops hgs with status 0.
func TestGracefulShutdown(t *testing.T) {
	p := startHGS(t)
	if _, err := p.api(false).Do(context.Background(), http.MethodGet, api.PathHealth, "", nil); err != nil {
		t.Fatal(err)
	}
	p.cancel()
	select {
	case code := <-p.done:
		p.done <- code
		if code != 0 {
			t.Fatalf("exit status %d:\n%s", code, p.logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("hgs did not shut down")
	}
	if !strings.Contains(p.logs.String(), "shutting down") {
		t.Errorf("logs: %s", p.logs.String())
	}
}

// TestIntegrationTPMMode runs the TPM-mode flow (EK registered, credential
// activation through a PolicySecret session) against hgs over HTTPS, with
// the reference TPM simulator and with a vtpm as the host's TPM.
func TestIntegrationTPMMode(t *testing.T) {
	t.Run("reference", func(t *testing.T) {
		sim, err := simulator.Get()
		if err != nil {
			t.Skipf("no TPM simulator: %v", err)
		}
		defer sim.Close()
		integrationTPMMode(t, transport.FromReadWriter(sim))
	})
	t.Run("vtpm", func(t *testing.T) {
		v, err := vtpm.New(vtpm.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		integrationTPMMode(t, v)
	})
}

func integrationTPMMode(t *testing.T, tpm transport.TPM) {
	ctx := context.Background()
	p := startHGS(t)
	hostAPI, admin := p.api(false), p.api(true)
	log, err := bootlog.KeepBanks(goodLog(t), measure.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := bootlog.Extend(tpm, log); err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(ctx, hostAPI, tpm, agent.Config{EventLog: func(context.Context) ([]byte, error) { return log, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	if ag.Mode() != attest.ModeTPM {
		t.Fatalf("mode %v", ag.Mode())
	}
	if err := admin.SetPolicy(ctx, pcrPolicy(t, log)); err != nil {
		t.Fatal(err)
	}
	desc, err := hostAPI.Guardian(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kp, state := newVM(t, desc)
	_, err = ag.Unlock(ctx, kp)
	wantCode(t, err, api.CodeUnregistered, 403)

	ek, err := ag.IdentityPEM()
	if err != nil {
		t.Fatal(err)
	}
	// The EK registered as a host key is not accepted as an EK.
	if err := admin.RegisterHost(ctx, "tpm-host", attest.ModeHostKey, ek); err != nil {
		t.Fatal(err)
	}
	_, err = ag.Unlock(ctx, kp)
	wantCode(t, err, api.CodeUnregistered, 403)
	if err := admin.RemoveHost(ctx, "tpm-host"); err != nil {
		t.Fatal(err)
	}
	if err := admin.RegisterHost(ctx, "tpm-host", attest.ModeTPM, ek); err != nil {
		t.Fatal(err)
	}
	rel, err := ag.Unlock(ctx, kp)
	if err != nil {
		t.Fatal(err)
	}
	defer rel.Destroy()
	vm, err := agent.StartVM(rel, state, "vm-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	vm.Close()
}
