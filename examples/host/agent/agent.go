// Package agent is the host side of the example guardian service: a
// client of its HTTPS API (examples/internal/api) and the host agent that
// attests the host's TPM, asks for a VM's transport key, and opens the VM's
// vTPM state with it. examples/host is its command line; the demo, the
// integration test and the load generator in bench/ use it in process.
package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/examples/internal/api"
	"github.com/shieldvm/shieldvm/keyprotector"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/vtpm"
)

// Error is a problem the service reported (an RFC 9457 document).
type Error struct {
	api.Problem
}

func (e *Error) Error() string {
	s := fmt.Sprintf("hgs: %d %s (%s)", e.Status, e.Title, e.Code)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Code returns the problem code of err if it is an *Error, or "".
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// maxResponse bounds what the client reads from the service.
const maxResponse = 4 << 20

// Client talks to a guardian service. It is safe for concurrent use.
type Client struct {
	// URL is the service's base URL ("https://hgs.example:8443").
	URL string
	// HTTP is the client to use. If nil, http.DefaultClient.
	HTTP *http.Client
	// AdminToken is the bearer token for the admin endpoints, if any.
	AdminToken string
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// Do sends one request and returns the body of a 2xx answer, or an *Error.
func (c *Client) Do(ctx context.Context, method, path, contentType string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.AdminToken != "" && strings.HasPrefix(path, "/v1/admin/") {
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("hgs: reading the answer to %s %s: %w", method, path, err)
	}
	if len(b) > maxResponse {
		return nil, fmt.Errorf("hgs: the answer to %s %s is over %d bytes", method, path, maxResponse)
	}
	if resp.StatusCode/100 == 2 {
		return b, nil
	}
	e := &Error{}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != api.ContentTypeProblem || json.Unmarshal(b, &e.Problem) != nil {
		e.Problem = api.Problem{Title: http.StatusText(resp.StatusCode), Code: "http_error"}
	}
	e.Status = resp.StatusCode
	return nil, e
}

func (c *Client) postCBOR(ctx context.Context, path string, v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = api.Marshal(v); err != nil {
			return nil, err
		}
	}
	return c.Do(ctx, http.MethodPost, path, api.ContentTypeCBOR, b)
}

// Guardian returns the service's guardian descriptor.
func (c *Client) Guardian(ctx context.Context) (*keyprotector.Descriptor, error) {
	b, err := c.Do(ctx, http.MethodGet, api.PathGuardian, "", nil)
	if err != nil {
		return nil, err
	}
	return keyprotector.ParseDescriptor(b)
}

// Challenge asks for a ModeTPM challenge for the EK and AK.
func (c *Client) Challenge(ctx context.Context, ekPublic, akPublic []byte) (*attest.TPMChallenge, error) {
	b, err := c.postCBOR(ctx, api.PathChallenge, &api.ChallengeRequest{EKPublic: ekPublic, AKPublic: akPublic})
	if err != nil {
		return nil, err
	}
	return api.DecodeTPMChallenge(b)
}

// Attest sends evidence and returns the health token.
func (c *Client) Attest(ctx context.Context, ev *attest.Evidence) (*api.AttestResponse, error) {
	b, err := ev.Marshal()
	if err != nil {
		return nil, err
	}
	rb, err := c.postCBOR(ctx, api.PathAttest, b)
	if err != nil {
		return nil, err
	}
	return api.DecodeAttestResponse(rb)
}

// Release asks for the transport key of a key protector.
func (c *Client) Release(ctx context.Context, req *api.ReleaseRequest) ([]byte, error) {
	b, err := c.postCBOR(ctx, api.PathRelease, req)
	if err != nil {
		return nil, err
	}
	r, err := api.DecodeReleaseResponse(b)
	if err != nil {
		return nil, err
	}
	return r.Response, nil
}

// SetPolicy replaces the service's attestation policy (admin).
func (c *Client) SetPolicy(ctx context.Context, doc []byte) error {
	_, err := c.Do(ctx, http.MethodPut, api.PathAdminPolicy, api.ContentTypeJSON, doc)
	return err
}

// RegisterHost registers a host by its EK (ModeTPM) or host key
// (ModeHostKey), a PEM "PUBLIC KEY" (admin).
func (c *Client) RegisterHost(ctx context.Context, id string, mode attest.Mode, keyPEM []byte) error {
	_, err := c.Do(ctx, http.MethodPut, api.PathAdminHosts+"/"+url.PathEscape(id)+"?mode="+mode.String(), api.ContentTypePEM, keyPEM)
	return err
}

// RemoveHost unregisters a host (admin).
func (c *Client) RemoveHost(ctx context.Context, id string) error {
	_, err := c.Do(ctx, http.MethodDelete, api.PathAdminHosts+"/"+url.PathEscape(id), "", nil)
	return err
}

// Config configures an Agent.
type Config struct {
	// EventLog returns the host's boot event log. If nil, it is read from
	// attest.DefaultEventLogPath.
	EventLog func(ctx context.Context) ([]byte, error)
	// Banks are the PCR banks to quote. If nil, SHA-256.
	Banks []measure.HashAlg
	// HostKey, if set, makes the agent attest in host-key mode
	// (attest.ModeHostKey): it signs the challenge and the AK with this
	// registered key. If nil, TPM mode: the TPM's EK is the identity, and
	// credential activation proves the AK lives in the same TPM.
	HostKey crypto.Signer
	// Suite is the suite of the host's release key. If zero, SuiteX25519.
	// Use SuiteMLKEM768X25519 for post-quantum key protectors.
	Suite keyprotector.Suite
	// Now returns the current time, to reuse a token until shortly before
	// it expires. If nil, time.Now.
	Now func() time.Time
	// Trace, if set, is told each protocol step (for the demo's
	// narrative).
	Trace func(step string)
}

// Agent is a host's agent: it holds an attestation key in the host's TPM
// and a release key in memory, keeps the current health token, and opens
// VMs' key protectors. It is safe for concurrent use.
type Agent struct {
	client  *Client
	att     *attest.Attester
	release hpke.PrivateKey
	relPub  []byte
	cfg     Config

	mu        sync.Mutex
	token     []byte
	challenge []byte
	expires   time.Time
}

// New makes the agent's attestation key in tpm and a fresh release key.
// The release key lives in this process only: a token is useful to this
// agent alone.
func New(ctx context.Context, client *Client, tpm transport.TPM, cfg Config) (*Agent, error) {
	att, err := attest.NewAttester(ctx, tpm, attest.AttesterConfig{EventLog: cfg.EventLog, Banks: cfg.Banks})
	if err != nil {
		return nil, err
	}
	suite := cfg.Suite
	if suite == 0 {
		suite = keyprotector.SuiteX25519
	}
	rk, err := suite.GenerateHostKey()
	if err != nil {
		att.Close()
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Agent{client: client, att: att, release: rk, relPub: api.MarshalReleaseKey(rk.PublicKey()), cfg: cfg}, nil
}

// Close flushes the agent's keys from the TPM.
func (a *Agent) Close() error { return a.att.Close() }

// ReleaseKey returns the encoded release public key tokens are bound to.
func (a *Agent) ReleaseKey() []byte { return bytes.Clone(a.relPub) }

// Mode returns the attestation mode the agent uses.
func (a *Agent) Mode() attest.Mode {
	if a.cfg.HostKey != nil {
		return attest.ModeHostKey
	}
	return attest.ModeTPM
}

// IdentityPEM returns what an administrator registers for this host, as a
// PEM "PUBLIC KEY": the host key in host-key mode, the TPM's EK otherwise.
func (a *Agent) IdentityPEM() ([]byte, error) {
	if a.cfg.HostKey != nil {
		der, err := x509.MarshalPKIXPublicKey(a.cfg.HostKey.Public())
		if err != nil {
			return nil, fmt.Errorf("agent: host key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
	}
	return EKPEM(a.att.EKPublic())
}

// EKPEM converts a TPMT_PUBLIC to a PEM "PUBLIC KEY".
func EKPEM(tpmtPublic []byte) ([]byte, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](tpmtPublic)
	if err != nil {
		return nil, fmt.Errorf("agent: EK: %w", err)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("agent: EK: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("agent: EK: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func (a *Agent) trace(format string, args ...any) {
	if a.cfg.Trace != nil {
		a.cfg.Trace(fmt.Sprintf(format, args...))
	}
}

// Attest runs the attestation protocol: a challenge for the host's EK and
// AK, credential activation and a quote in the TPM, the evidence to the
// service, and keeps the health token it returns.
func (a *Agent) Attest(ctx context.Context) (*api.AttestResponse, error) {
	var (
		ch  *attest.TPMChallenge
		ev  *attest.Evidence
		err error
	)
	if a.cfg.HostKey == nil {
		if ch, err = a.client.Challenge(ctx, a.att.EKPublic(), a.att.AKPublic()); err != nil {
			return nil, err
		}
		if ev, err = a.att.AttestTPM(ctx, ch, a.relPub, nil); err != nil {
			return nil, err
		}
		a.trace("host sends its identity (TPM EK, credential activated) and evidence: a quote over the challenge and its release key, and its boot log (%d bytes)", len(ev.EventLog))
	} else {
		if ch, err = a.client.Challenge(ctx, nil, nil); err != nil {
			return nil, err
		}
		if ev, err = a.att.Attest(ctx, ch.Challenge, a.relPub); err != nil {
			return nil, err
		}
		ak, err := attest.ParseAKPublic(ev.AKPublic)
		if err != nil {
			return nil, err
		}
		ev.Mode = attest.ModeHostKey
		if ev.HostKey, err = attest.SignHostKeyProof(a.cfg.HostKey, ch.Challenge, ak.Name, a.relPub); err != nil {
			return nil, err
		}
		a.trace("host sends its identity (host key signature) and evidence: a TPM quote over the challenge and its release key, and its boot log (%d bytes)", len(ev.EventLog))
	}
	resp, err := a.client.Attest(ctx, ev)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.token, a.challenge, a.expires = resp.Token, ch.Challenge, time.Unix(resp.Expires, 0)
	a.mu.Unlock()
	a.trace("guardian service returns a health token: host %s, %s under policy %s, valid until %s",
		resp.HostID, resp.Status, resp.PolicyID, time.Unix(resp.Expires, 0).UTC().Format(time.RFC3339))
	return resp, nil
}

// Token returns the current health token and the challenge it answered,
// or nil if there is none or it expires within a minute.
func (a *Agent) Token() (token, challenge []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token == nil || a.cfg.Now().Add(time.Minute).After(a.expires) {
		return nil, nil
	}
	return a.token, a.challenge
}

// Forget drops the current health token.
func (a *Agent) Forget() {
	a.mu.Lock()
	a.token, a.challenge = nil, nil
	a.mu.Unlock()
}

// Unlock gets a VM's transport key: it asks the service with the current
// token (or none), attests when the service does not know the host (or the
// token expired) and asks again, then opens the sealed key with the
// release key. The caller destroys the result.
func (a *Agent) Unlock(ctx context.Context, kp *keyprotector.KeyProtector) (*keyprotector.Released, error) {
	token, challenge := a.Token()
	a.trace("host asks for the key of VM %v (key protector generation %d)%s", kp.ID(), kp.Generation(), map[bool]string{true: " with no health token", false: " with its health token"}[token == nil])
	resp, err := a.client.Release(ctx, &api.ReleaseRequest{KeyProtector: kp.Marshal(), Token: token, ReleaseKey: a.relPub})
	if c := Code(err); c == api.CodeAttestationRequired || c == api.CodeTokenExpired {
		a.trace("guardian service answers: %v", err)
		if _, err := a.Attest(ctx); err != nil {
			return nil, err
		}
		token, challenge = a.Token()
		a.trace("host asks again, with the health token")
		resp, err = a.client.Release(ctx, &api.ReleaseRequest{KeyProtector: kp.Marshal(), Token: token, ReleaseKey: a.relPub})
	}
	if err != nil {
		return nil, err
	}
	rel, err := keyprotector.Open(resp, kp, a.release, &keyprotector.Binding{TokenHash: sha256.Sum256(token), Nonce: challenge})
	if err != nil {
		return nil, err
	}
	a.trace("the transport key arrives sealed to the host's release key; only this process can open it")
	return rel, nil
}

// StartVM opens a VM's sealed vTPM state with the key derived from the
// released transport key. minGeneration is the last state generation the
// host saw (0 if none): an older state is refused.
func StartVM(rel *keyprotector.Released, sealed []byte, vmID string, minGeneration uint64) (*vtpm.TPM, error) {
	k := rel.Key.Derive(keyprotector.LabelVTPMState)
	defer clear(k[:])
	return vtpm.Open(sealed, &k, vtpm.OpenConfig{VMID: vmID, MinGeneration: minGeneration})
}

// StopVM seals a VM's vTPM state for storage: under the next transport key
// when the service re-keyed (the host then stores the next key protector
// in place of the old one), under the current one otherwise.
func StopVM(rel *keyprotector.Released, t *vtpm.TPM) (sealed []byte, kp *keyprotector.KeyProtector, err error) {
	tk := rel.Key
	if rel.Next != nil {
		tk, kp = rel.Next, rel.NextKeyProtector
	}
	k := tk.Derive(keyprotector.LabelVTPMState)
	defer clear(k[:])
	sealed, err = t.Seal(&k)
	return sealed, kp, err
}
