// Package server is the example guardian service (HGS) as a net/http
// handler: attestation (challenge, evidence in, health token out) and key
// protection (key protector and token in, transport key sealed to the
// host out), plus admin endpoints for the policy and the host registry.
// examples/hgs serves it over HTTPS; the demo, the integration test and
// the load generator in bench/ run it in process.
//
// The wire protocol is in examples/internal/api. Every error is an RFC 9457
// problem document with a 4xx status for bad input (5xx only for a failure
// of the service's own store), and no input makes a handler panic.
//
// Challenges are stateless (attest.Challenger: time ‖ random ‖ MAC), and
// all other state is in a [Store], so replicas behind a load balancer need
// to share only the challenge secret, the keys and the store.
package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/shieldvm/shieldvm/attest"
	"github.com/shieldvm/shieldvm/examples/internal/api"
	"github.com/shieldvm/shieldvm/keyprotector"
	"github.com/shieldvm/shieldvm/policy"
)

// Config configures a Service. Store, Guardian, TokenKey and
// ChallengeSecret are required; every other zero value is the secure
// default.
type Config struct {
	// Store holds the policy, the host registry and the anti-rollback
	// state. Required.
	Store Store
	// Guardian is the service's guardian: key protectors list its
	// descriptor, and it unwraps their transport keys. Required.
	Guardian keyprotector.Guardian
	// TokenKey signs health tokens (attest.NewTokenIssuer). Required.
	TokenKey crypto.Signer
	// ChallengeSecret keys the challenge MAC: at least 32 random bytes,
	// the same in every replica. Required.
	ChallengeSecret []byte

	// Issuer is the tokens' iss claim. If empty, "shieldvm-hgs".
	Issuer string
	// TokenLifetime is how long a health token is valid. If zero,
	// attest.DefaultTokenLifetime.
	TokenLifetime time.Duration
	// ChallengeLifetime is how long a challenge may be answered. If zero,
	// 5 minutes.
	ChallengeLifetime time.Duration
	// ReplayGuard makes challenges single-use. If nil, a guard in this
	// process's memory: a challenge is single-use per replica. Replicas
	// that must refuse a replay to another replica share a guard.
	ReplayGuard attest.ReplayGuard

	// AdminTokenSHA256 is SHA-256 of the bearer token that authorizes the
	// admin endpoints (compared in constant time). If zero, bearer tokens
	// are refused.
	AdminTokenSHA256 [32]byte
	// AdminClientCAs authorize the admin endpoints by TLS client
	// certificate: a client certificate that chains to one of them (for
	// client authentication) is an administrator. If nil, client
	// certificates are refused. With neither this nor an admin token the
	// admin endpoints answer 401 to everyone.
	AdminClientCAs *x509.CertPool

	// RequestTimeout bounds the work of one request. If zero, 30 seconds.
	RequestTimeout time.Duration
	// Logger receives one line per request and the service's events. If
	// nil, slog.Default().
	Logger *slog.Logger
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
}

// Service is the guardian service. It is safe for concurrent use.
type Service struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	ch       *attest.Challenger
	issuer   *attest.TokenIssuer
	tokenPub crypto.PublicKey
	registry *storeRegistry
	guard    attest.ReplayGuard
	desc     []byte
	// challenger makes ModeTPM challenges. attest exposes
	// NewTPMChallenge only on a Verifier, so this one has a policy that
	// is never used (it judges nothing).
	challenger *attest.Verifier

	mu       sync.Mutex
	verifier *attest.Verifier
	polHash  [32]byte
}

// New checks cfg and returns the service.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("hgs: Config.Store is required")
	case cfg.Guardian == nil:
		return nil, errors.New("hgs: Config.Guardian is required")
	case cfg.TokenKey == nil:
		return nil, errors.New("hgs: Config.TokenKey is required")
	case len(cfg.ChallengeSecret) < 32:
		return nil, errors.New("hgs: Config.ChallengeSecret must hold at least 32 bytes")
	}
	s := &Service{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.cfg.Issuer == "" {
		s.cfg.Issuer = "shieldvm-hgs"
	}
	if s.cfg.RequestTimeout <= 0 {
		s.cfg.RequestTimeout = 30 * time.Second
	}
	var err error
	s.ch, err = attest.NewChallenger(cfg.ChallengeSecret, attest.ChallengeConfig{Lifetime: cfg.ChallengeLifetime, Now: s.now})
	if err != nil {
		return nil, fmt.Errorf("hgs: %w", err)
	}
	s.issuer, err = attest.NewTokenIssuer(cfg.TokenKey, attest.IssuerConfig{Name: s.cfg.Issuer, Lifetime: cfg.TokenLifetime, Now: s.now})
	if err != nil {
		return nil, fmt.Errorf("hgs: %w", err)
	}
	s.tokenPub = cfg.TokenKey.Public()
	s.registry = &storeRegistry{store: cfg.Store}
	s.guard = cfg.ReplayGuard
	if s.guard == nil {
		s.guard = &attest.MemoryReplayGuard{Now: s.now}
	}
	d := cfg.Guardian.Descriptor()
	if err := d.ValidAt(s.now()); err != nil {
		return nil, fmt.Errorf("hgs: the service's guardian: %w", err)
	}
	s.desc = d.Marshal()
	unused := &policy.Policy{Version: policy.Version, ID: "challenges-only",
		PCRs: map[string]map[string][]policy.Digest{"sha256": {"0": {make(policy.Digest, 32)}}}}
	if err := unused.Check(); err != nil {
		return nil, err
	}
	s.challenger, err = attest.NewVerifier(attest.VerifierConfig{Challenger: s.ch, Registry: s.registry, Policy: unused})
	if err != nil {
		return nil, fmt.Errorf("hgs: %w", err)
	}
	return s, nil
}

// TokenPublicKey returns the key that verifies the service's health tokens.
func (s *Service) TokenPublicKey() crypto.PublicKey { return s.tokenPub }

// Issuer returns the tokens' issuer name.
func (s *Service) Issuer() string { return s.cfg.Issuer }

// Handler returns the service's HTTP handler.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET "+api.PathGuardian, s.guardian)
	mux.HandleFunc("POST "+api.PathChallenge, s.challenge)
	mux.HandleFunc("POST "+api.PathAttest, s.attest)
	mux.HandleFunc("POST "+api.PathRelease, s.release)
	mux.HandleFunc("GET "+api.PathAdminPolicy, s.admin(s.getPolicy))
	mux.HandleFunc("PUT "+api.PathAdminPolicy, s.admin(s.putPolicy))
	mux.HandleFunc("GET "+api.PathAdminHosts, s.admin(s.listHosts))
	mux.HandleFunc("PUT "+api.PathAdminHosts+"/{id}", s.admin(s.putHost))
	mux.HandleFunc("DELETE "+api.PathAdminHosts+"/{id}", s.admin(s.deleteHost))
	return s.middleware(muxProblems(mux))
}

// muxProblems turns the mux's plain-text 404 and 405 answers into problem
// documents.
func muxProblems(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&problemWriter{ResponseWriter: w, r: r}, r)
	})
}

// problemWriter rewrites the mux's own error answers.
type problemWriter struct {
	http.ResponseWriter
	r       *http.Request
	dropped bool
}

func (p *problemWriter) WriteHeader(code int) {
	if (code == http.StatusMethodNotAllowed || code == http.StatusNotFound) && p.Header().Get("Content-Type") == "text/plain; charset=utf-8" {
		p.dropped = true
		pr := &api.Problem{Title: http.StatusText(code), Status: code, Code: api.CodeNotFound, Detail: "no such endpoint: " + p.r.URL.Path}
		if code == http.StatusMethodNotAllowed {
			pr.Code = api.CodeMethod
			pr.Detail = fmt.Sprintf("%s is not allowed on %s (allowed: %s)", p.r.Method, p.r.URL.Path, p.Header().Get("Allow"))
		}
		p.Header().Del("X-Content-Type-Options")
		info(p.r).code = pr.Code
		writeProblem(p.ResponseWriter, pr)
		return
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *problemWriter) Write(b []byte) (int, error) {
	if p.dropped {
		return len(b), nil
	}
	return p.ResponseWriter.Write(b)
}

type ctxKey struct{}

// reqInfo collects what the request log line reports.
type reqInfo struct {
	status int
	code   string
	host   string
}

type statusWriter struct {
	http.ResponseWriter
	info *reqInfo
}

func (w *statusWriter) WriteHeader(code int) {
	if w.info.status == 0 {
		w.info.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.info.status == 0 {
		w.info.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// middleware logs each request, bounds its time, and turns a panic (a bug;
// no input should cause one) into a 500 without taking the process down.
func (s *Service) middleware(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		info := &reqInfo{}
		ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), ctxKey{}, info), s.cfg.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w, info: info}
		sw.Header().Set("Cache-Control", "no-store")
		sw.Header().Set("X-Content-Type-Options", "nosniff")
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("hgs: panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if info.status == 0 {
					s.fail(sw, r, http.StatusInternalServerError, api.CodeInternal, "internal error", nil)
				}
			}
			attrs := []any{"method", r.Method, "path", r.URL.Path, "status", info.status, "remote", r.RemoteAddr, "duration", s.now().Sub(start)}
			if info.code != "" {
				attrs = append(attrs, "code", info.code)
			}
			if info.host != "" {
				attrs = append(attrs, "host", info.host)
			}
			level := slog.LevelInfo
			if info.status >= 500 {
				level = slog.LevelError
			}
			s.log.Log(r.Context(), level, "request", attrs...)
		}()
		h.ServeHTTP(sw, r)
	})
}

func info(r *http.Request) *reqInfo {
	if i, ok := r.Context().Value(ctxKey{}).(*reqInfo); ok {
		return i
	}
	return &reqInfo{}
}

func writeProblem(w http.ResponseWriter, p *api.Problem) {
	b, err := json.Marshal(p)
	if err != nil {
		b = []byte(`{"title":"Internal Server Error","status":500,"code":"internal"}`)
		p.Status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", api.ContentTypeProblem)
	w.WriteHeader(p.Status)
	w.Write(append(b, '\n'))
}

// fail answers with a problem document. detail must hold no secret.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, status int, code, detail string, verdict *policy.Verdict) {
	info(r).code = code
	writeProblem(w, &api.Problem{Title: http.StatusText(status), Status: status, Code: code, Detail: detail, Verdict: verdict})
}

// internal answers 500 for a failure of the service itself, logging the
// cause and telling the client nothing about it.
func (s *Service) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("hgs: internal error", "path", r.URL.Path, "err", err)
	s.fail(w, r, http.StatusInternalServerError, api.CodeInternal, "internal error", nil)
}

// body checks the content type and reads at most limit bytes.
func (s *Service) body(w http.ResponseWriter, r *http.Request, contentType string, limit int64) ([]byte, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != contentType {
		s.fail(w, r, http.StatusUnsupportedMediaType, api.CodeContentType,
			fmt.Sprintf("content type %q, want %s", r.Header.Get("Content-Type"), contentType), nil)
		return nil, false
	}
	if r.ContentLength > limit {
		s.fail(w, r, http.StatusRequestEntityTooLarge, api.CodeTooLarge, fmt.Sprintf("body of %d bytes, limit %d", r.ContentLength, limit), nil)
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, r, http.StatusRequestEntityTooLarge, api.CodeTooLarge, fmt.Sprintf("body over the limit of %d bytes", limit), nil)
		} else {
			s.fail(w, r, http.StatusBadRequest, api.CodeBadRequest, "reading the body failed", nil)
		}
		return nil, false
	}
	return b, true
}

func (s *Service) reply(w http.ResponseWriter, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

func (s *Service) replyCBOR(w http.ResponseWriter, r *http.Request, v any) {
	b, err := api.Marshal(v)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.reply(w, api.ContentTypeCBOR, b)
}

func (s *Service) guardian(w http.ResponseWriter, r *http.Request) {
	s.reply(w, api.ContentTypeCBOR, s.desc)
}

// currentVerifier returns a verifier for the stored policy, parsed again
// only when the document changed (another replica may have changed it).
func (s *Service) currentVerifier(ctx context.Context) (*attest.Verifier, error) {
	doc, err := s.cfg.Store.Policy(ctx)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(doc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.verifier != nil && h == s.polHash {
		return s.verifier, nil
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		return nil, fmt.Errorf("hgs: the stored policy: %w", err)
	}
	v, err := attest.NewVerifier(attest.VerifierConfig{
		Challenger:  s.ch,
		Registry:    s.registry,
		Policy:      pol,
		Modes:       []attest.Mode{attest.ModeTPM, attest.ModeHostKey},
		ReplayGuard: s.guard,
		Now:         s.now,
	})
	if err != nil {
		return nil, err
	}
	s.verifier, s.polHash = v, h
	return v, nil
}

func (s *Service) challenge(w http.ResponseWriter, r *http.Request) {
	b, ok := s.body(w, r, api.ContentTypeCBOR, api.MaxChallengeRequestSize)
	if !ok {
		return
	}
	req, err := api.DecodeChallengeRequest(b)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, err.Error(), nil)
		return
	}
	if req.EKPublic == nil {
		// ModeHostKey: a plain challenge.
		c, err := s.challenger.NewChallenge()
		if err != nil {
			s.internal(w, r, err)
			return
		}
		s.replyCBOR(w, r, &attest.TPMChallenge{Challenge: c})
		return
	}
	ch, err := s.challenger.NewTPMChallenge(req.EKPublic, req.AKPublic)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, err.Error(), nil)
		return
	}
	s.replyCBOR(w, r, ch)
}

// storeError marks errors of the store, which are the service's failures
// and not the client's.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

func (s *Service) attest(w http.ResponseWriter, r *http.Request) {
	b, ok := s.body(w, r, api.ContentTypeCBOR, api.MaxEvidenceSize)
	if !ok {
		return
	}
	ev, err := attest.ParseEvidence(b)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, err.Error(), nil)
		return
	}
	if ev.Mode != attest.ModeTPM && ev.Mode != attest.ModeHostKey {
		s.fail(w, r, http.StatusBadRequest, api.CodeEvidence, fmt.Sprintf("attestation mode %v is not accepted; this service accepts tpm and host-key", ev.Mode), nil)
		return
	}
	if _, err := api.ParseReleaseKey(ev.ReleaseKey); err != nil {
		s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, "evidence: "+err.Error(), nil)
		return
	}
	v, err := s.currentVerifier(r.Context())
	if errors.Is(err, ErrNotFound) {
		s.fail(w, r, http.StatusServiceUnavailable, api.CodeNoPolicy, "no attestation policy is configured", nil)
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	res, err := v.Verify(r.Context(), ev)
	if res != nil {
		info(r).host = res.Host.ID
	}
	if err != nil {
		var se *storeError
		var de *attest.DeniedError
		switch {
		case errors.As(err, &se):
			s.internal(w, r, err)
		case errors.As(err, &de):
			s.fail(w, r, http.StatusForbidden, api.CodeDenied, err.Error(), de.Verdict)
		case errors.Is(err, attest.ErrUnregistered):
			s.fail(w, r, http.StatusForbidden, api.CodeUnregistered, err.Error(), nil)
		case errors.Is(err, attest.ErrChallengeInvalid), errors.Is(err, attest.ErrChallengeExpired), errors.Is(err, attest.ErrChallengeReplayed):
			s.fail(w, r, http.StatusForbidden, api.CodeChallenge, err.Error(), nil)
		case errors.Is(err, attest.ErrMalformed):
			s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, err.Error(), nil)
		default:
			// Everything else Verify reports is evidence that did
			// not verify: a signature, a PCR digest, the log, the
			// credential activation, a weak algorithm.
			s.fail(w, r, http.StatusForbidden, api.CodeEvidence, err.Error(), nil)
		}
		return
	}
	tok, err := s.issuer.Issue(res)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	vt, err := attest.VerifyToken(tok, s.tokenPub, attest.TokenOptions{AcceptWarning: true, Now: s.now})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.log.Info("hgs: host attested", "host", res.Host.ID, "status", res.Status.String(), "policy", res.PolicyID)
	s.replyCBOR(w, r, &api.AttestResponse{Token: tok, Expires: vt.Expiry, Status: res.Status.String(), PolicyID: res.PolicyID, HostID: res.Host.ID})
}

func verdictOf(st policy.Status) keyprotector.Verdict {
	switch st {
	case policy.Affirming:
		return keyprotector.VerdictAffirming
	case policy.Warning:
		return keyprotector.VerdictWarning
	case policy.Contraindicated:
		return keyprotector.VerdictContraindicated
	}
	return keyprotector.VerdictNone
}

func (s *Service) release(w http.ResponseWriter, r *http.Request) {
	b, ok := s.body(w, r, api.ContentTypeCBOR, api.MaxReleaseRequestSize)
	if !ok {
		return
	}
	req, err := api.DecodeReleaseRequest(b)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, err.Error(), nil)
		return
	}
	if len(req.Token) == 0 {
		w.Header().Set("WWW-Authenticate", `HealthToken realm="shieldvm"`)
		s.fail(w, r, http.StatusUnauthorized, api.CodeAttestationRequired,
			"this guardian service does not know the host: attest at "+api.PathAttest+" and present the health token", nil)
		return
	}
	// The token's status is checked against the owner's rules by
	// Release; accept a warning here and let the key protector decide.
	tok, err := attest.VerifyToken(req.Token, s.tokenPub, attest.TokenOptions{
		Issuer: s.cfg.Issuer, ReleaseKey: req.ReleaseKey, AcceptWarning: true, Now: s.now,
	})
	if err != nil {
		switch {
		case errors.Is(err, attest.ErrTokenReleaseKey):
			s.fail(w, r, http.StatusForbidden, api.CodeTokenOtherHost, "the health token was issued to another host (it is bound to another release key)", nil)
		case errors.Is(err, attest.ErrTokenExpired):
			w.Header().Set("WWW-Authenticate", `HealthToken realm="shieldvm", error="expired"`)
			s.fail(w, r, http.StatusUnauthorized, api.CodeTokenExpired, err.Error(), nil)
		case errors.Is(err, attest.ErrTokenStatus):
			s.fail(w, r, http.StatusForbidden, api.CodeReleaseDenied, err.Error(), nil)
		default:
			w.Header().Set("WWW-Authenticate", `HealthToken realm="shieldvm", error="invalid"`)
			s.fail(w, r, http.StatusUnauthorized, api.CodeTokenInvalid, "health token: "+err.Error(), nil)
		}
		return
	}
	info(r).host = tok.Host.ID
	hostKey, err := api.ParseReleaseKey(tok.ReleaseKey())
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, "token release key: "+err.Error(), nil)
		return
	}
	kp, err := keyprotector.Parse(req.KeyProtector)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, api.CodeKeyProtector, err.Error(), nil)
		return
	}
	if err := kp.Listed(s.cfg.Guardian.Descriptor().KeyID()); err != nil {
		s.fail(w, r, http.StatusForbidden, api.CodeNotListed, "this guardian service is not one of the key protector's guardians", nil)
		return
	}
	host := &keyprotector.Host{
		ReleaseKey: hostKey,
		Binding:    keyprotector.Binding{TokenHash: tok.Hash(), Nonce: tok.Nonce},
		Verdict:    verdictOf(tok.Status),
		PolicyID:   tok.PolicyID,
	}
	resp, err := keyprotector.Release(r.Context(), kp, s.cfg.Guardian, host, &keyprotector.ReleaseConfig{Store: &rollbackStore{s.cfg.Store}, Now: s.now})
	if err != nil {
		var se *storeError
		switch {
		case errors.As(err, &se):
			s.internal(w, r, err)
		case errors.Is(err, keyprotector.ErrRollback), errors.Is(err, keyprotector.ErrOwnerChanged):
			s.fail(w, r, http.StatusConflict, api.CodeRollback, err.Error(), nil)
		case errors.Is(err, keyprotector.ErrDenied):
			s.fail(w, r, http.StatusForbidden, api.CodeReleaseDenied, err.Error(), nil)
		case errors.Is(err, keyprotector.ErrMixedSuites):
			s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, err.Error(), nil)
		case errors.Is(err, keyprotector.ErrMAC), errors.Is(err, keyprotector.ErrUnwrap), errors.Is(err, keyprotector.ErrMalformed), errors.Is(err, keyprotector.ErrSignature):
			s.fail(w, r, http.StatusBadRequest, api.CodeKeyProtector, err.Error(), nil)
		default:
			s.internal(w, r, err)
		}
		return
	}
	s.log.Info("hgs: key released", "host", tok.Host.ID, "kp", kp.ID().String(), "generation", kp.Generation())
	s.replyCBOR(w, r, &api.ReleaseResponse{Response: resp})
}

// storeRegistry is the attest.Registry of the store's EK allow-list.
type storeRegistry struct{ store Store }

func (g *storeRegistry) Lookup(ctx context.Context, id *attest.Identity) (*attest.Host, error) {
	d, ok := id.KeyDigest()
	if !ok {
		return nil, fmt.Errorf("%w: mode %v is not registered here", attest.ErrUnregistered, id.Mode)
	}
	h, err := g.store.Host(ctx, d)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %v key sha256:%s…", attest.ErrUnregistered, id.Mode, hex.EncodeToString(d[:8]))
	}
	if err != nil {
		return nil, &storeError{err}
	}
	if h.Mode != id.Mode {
		// A host key must not pass for an EK (its holder could
		// activate a credential in software), nor an EK for a host key.
		return nil, fmt.Errorf("%w: the key is registered for mode %v, not %v", attest.ErrUnregistered, h.Mode, id.Mode)
	}
	return &attest.Host{ID: h.ID}, nil
}

// rollbackStore marks the store's own failures.
type rollbackStore struct{ store Store }

func (s *rollbackStore) Advance(ctx context.Context, id keyprotector.ID, st keyprotector.State) error {
	err := s.store.Advance(ctx, id, st)
	if err != nil && !errors.Is(err, keyprotector.ErrRollback) && !errors.Is(err, keyprotector.ErrOwnerChanged) {
		return &storeError{err}
	}
	return err
}

// admin authorizes an admin request: a TLS client certificate that chains
// to AdminClientCAs, or the bearer token.
func (s *Service) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.adminAuthorized(r) {
			h(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="shieldvm-admin"`)
		s.fail(w, r, http.StatusUnauthorized, api.CodeUnauthorized, "admin endpoints need a bearer token or an admin client certificate", nil)
	}
}

func (s *Service) adminAuthorized(r *http.Request) bool {
	if s.cfg.AdminClientCAs != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		opts := x509.VerifyOptions{
			Roots:         s.cfg.AdminClientCAs,
			Intermediates: x509.NewCertPool(),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			CurrentTime:   s.now(),
		}
		for _, c := range r.TLS.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := r.TLS.PeerCertificates[0].Verify(opts); err == nil {
			return true
		}
	}
	var zero [32]byte
	if s.cfg.AdminTokenSHA256 == zero {
		return false
	}
	const prefix = "Bearer "
	a := r.Header.Get("Authorization")
	if len(a) <= len(prefix) || a[:len(prefix)] != prefix {
		return false
	}
	got := sha256.Sum256([]byte(a[len(prefix):]))
	return subtle.ConstantTimeCompare(got[:], s.cfg.AdminTokenSHA256[:]) == 1
}

func (s *Service) getPolicy(w http.ResponseWriter, r *http.Request) {
	doc, err := s.cfg.Store.Policy(r.Context())
	if errors.Is(err, ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, api.CodeNoPolicy, "no attestation policy is configured", nil)
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.reply(w, api.ContentTypeJSON, doc)
}

func (s *Service) putPolicy(w http.ResponseWriter, r *http.Request) {
	b, ok := s.body(w, r, api.ContentTypeJSON, api.MaxPolicySize)
	if !ok {
		return
	}
	pol, err := policy.Parse(b)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, err.Error(), nil)
		return
	}
	doc, err := pol.Marshal()
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if err := s.cfg.Store.SetPolicy(r.Context(), doc); err != nil {
		s.internal(w, r, err)
		return
	}
	s.log.Info("hgs: policy set", "policy", pol.ID)
	s.reply(w, api.ContentTypeJSON, doc)
}

func (s *Service) listHosts(w http.ResponseWriter, r *http.Request) {
	hosts, err := s.cfg.Store.Hosts(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := []api.HostRecord{}
	for _, h := range hosts {
		d := h.KeyDigest()
		out = append(out, api.HostRecord{ID: h.ID, Mode: h.Mode.String(), KeySHA256: hex.EncodeToString(d[:])})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.reply(w, api.ContentTypeJSON, append(b, '\n'))
}

func (s *Service) putHost(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !ValidHostID(id) {
		s.fail(w, r, http.StatusBadRequest, api.CodeBadRequest, "a host id is 1-64 letters, digits, '.', '-' or '_'", nil)
		return
	}
	mode := attest.ModeTPM
	if m := r.URL.Query().Get("mode"); m != "" {
		var err error
		mode, err = attest.ParseMode(m)
		if err != nil || (mode != attest.ModeTPM && mode != attest.ModeHostKey) {
			s.fail(w, r, http.StatusBadRequest, api.CodeBadRequest, "mode must be tpm or host-key", nil)
			return
		}
	}
	b, ok := s.body(w, r, api.ContentTypePEM, api.MaxHostKeySize)
	if !ok {
		return
	}
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, `the body must be one PEM "PUBLIC KEY" block: the host's EK or host key`, nil)
		return
	}
	if _, err := x509.ParsePKIXPublicKey(blk.Bytes); err != nil {
		s.fail(w, r, http.StatusBadRequest, api.CodeMalformed, "key: "+err.Error(), nil)
		return
	}
	h := &Host{ID: id, Mode: mode, Key: blk.Bytes}
	if err := s.cfg.Store.PutHost(r.Context(), h); err != nil {
		if errors.Is(err, ErrConflict) {
			s.fail(w, r, http.StatusConflict, api.CodeBadRequest, err.Error(), nil)
			return
		}
		s.internal(w, r, err)
		return
	}
	d := h.KeyDigest()
	s.log.Info("hgs: host registered", "host", id, "mode", mode.String())
	b, _ = json.Marshal(api.HostRecord{ID: id, Mode: mode.String(), KeySHA256: hex.EncodeToString(d[:])})
	s.reply(w, api.ContentTypeJSON, append(b, '\n'))
}

func (s *Service) deleteHost(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := s.cfg.Store.DeleteHost(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no host %q", id), nil)
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.log.Info("hgs: host removed", "host", id)
	w.WriteHeader(http.StatusNoContent)
}

// slogErrorLog routes net/http's own messages (TLS handshake errors) to
// the service's logger.
func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelWarn)
}
