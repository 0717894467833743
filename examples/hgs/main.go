// Command hgs is an example guardian service: attestation and key
// protection over HTTPS (package examples/hgs/server).
//
//	go run ./examples/hgs -dir hgs-state -addr 127.0.0.1:8443
//
// On first start it creates, in -dir (mode 0700): the fabric guardian's
// keys (guardian.key), the token-signing key (token-key.pem), the challenge
// secret (challenge.key), a self-signed TLS certificate unless -tls-cert is
// given (tls-cert.pem, tls-key.pem), and an admin bearer token unless
// -admin-token-file or -admin-ca is given (admin-token). Replicas behind a
// load balancer share these files and the state (policy.json, hosts/,
// kp/): challenges are stateless.
//
// Endpoints (examples/internal/api): GET /v1/guardian, POST /v1/challenge,
// POST /v1/attest, POST /v1/release, GET /healthz, and the admin endpoints
// /v1/admin/policy and /v1/admin/hosts/{id} (bearer token or client
// certificate). Logs are slog lines on standard error. SIGINT or SIGTERM
// shut it down gracefully.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shieldvm/shieldvm/examples/hgs/server"
	"github.com/shieldvm/shieldvm/keyprotector"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	os.Exit(code)
}

type options struct {
	addr, dir       string
	tlsCert, tlsKey string
	hostnames       string
	adminTokenFile  string
	adminCA         string
	guardianName    string
	tokenLifetime   time.Duration
	shutdownTimeout time.Duration
	jsonLogs        bool
	postQuantum     bool
}

// started is told the service's URL and TLS certificate once it listens
// (for tests).
type started func(url string, cert *x509.Certificate)

func run(ctx context.Context, args []string, stderr io.Writer, ready started) int {
	fs := flag.NewFlagSet("hgs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8443", "address to listen on")
	fs.StringVar(&o.dir, "dir", "hgs-state", "directory of the keys and the state")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate chain (PEM); if empty, a self-signed one in -dir")
	fs.StringVar(&o.tlsKey, "tls-key", "", "TLS private key (PEM), with -tls-cert")
	fs.StringVar(&o.hostnames, "hostnames", "localhost,127.0.0.1", "names of the self-signed certificate, comma-separated")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the admin bearer token; if empty and no -admin-ca, one is made in -dir/admin-token")
	fs.StringVar(&o.adminCA, "admin-ca", "", "CA certificates (PEM) of admin client certificates (mutual TLS)")
	fs.StringVar(&o.guardianName, "guardian-name", "fabric-hgs", "name of the guardian made on first start")
	fs.BoolVar(&o.postQuantum, "post-quantum", false, "make the guardian with the ML-KEM-768+X25519 suite on first start")
	fs.DurationVar(&o.tokenLifetime, "token-lifetime", 0, "health token lifetime (0: 8h)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long to wait for requests in flight at shutdown")
	fs.BoolVar(&o.jsonLogs, "json-logs", false, "log JSON lines instead of text")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 || (o.tlsCert == "") != (o.tlsKey == "") {
		fmt.Fprintln(stderr, "hgs: usage: hgs [flags]; -tls-cert and -tls-key go together")
		return 2
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if o.jsonLogs {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)
	if err := serve(ctx, &o, log, ready); err != nil {
		log.Error("hgs: " + strings.TrimPrefix(err.Error(), "hgs: "))
		return 1
	}
	return 0
}

func serve(ctx context.Context, o *options, log *slog.Logger, ready started) error {
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return err
	}
	store, err := server.OpenDirStore(o.dir)
	if err != nil {
		return err
	}
	guardian, err := loadGuardian(o, log)
	if err != nil {
		return err
	}
	tokenKey, err := loadTokenKey(filepath.Join(o.dir, "token-key.pem"), log)
	if err != nil {
		return err
	}
	secret, err := loadOrCreate(filepath.Join(o.dir, "challenge.key"), log, func() ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return err
	}
	if len(secret) < 32 {
		return errors.New("hgs: challenge.key holds less than 32 bytes")
	}
	cfg := server.Config{
		Store:           store,
		Guardian:        guardian,
		TokenKey:        tokenKey,
		ChallengeSecret: secret,
		TokenLifetime:   o.tokenLifetime,
		Logger:          log,
	}
	if o.adminCA != "" {
		b, err := os.ReadFile(o.adminCA)
		if err != nil {
			return err
		}
		cfg.AdminClientCAs = x509.NewCertPool()
		if !cfg.AdminClientCAs.AppendCertsFromPEM(b) {
			return fmt.Errorf("hgs: %s holds no PEM certificate", o.adminCA)
		}
	}
	if o.adminTokenFile != "" || o.adminCA == "" {
		path := o.adminTokenFile
		if path == "" {
			path = filepath.Join(o.dir, "admin-token")
		}
		tok, err := loadOrCreate(path, log, func() ([]byte, error) {
			b := make([]byte, 24)
			if _, err := rand.Read(b); err != nil {
				return nil, err
			}
			return []byte(hex.EncodeToString(b) + "\n"), nil
		})
		if err != nil {
			return err
		}
		t := strings.TrimSpace(string(tok))
		if len(t) < 16 {
			return fmt.Errorf("hgs: the admin token in %s is shorter than 16 characters", path)
		}
		cfg.AdminTokenSHA256 = sha256.Sum256([]byte(t))
	}
	svc, err := server.New(cfg)
	if err != nil {
		return err
	}
	var cert tls.Certificate
	if o.tlsCert != "" {
		cert, err = tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
	} else {
		cert, err = selfSigned(o, log)
	}
	if err != nil {
		return fmt.Errorf("hgs: TLS certificate: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := svc.HTTPServer(o.addr, svc.TLSConfig(cert))
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	url := "https://" + ln.Addr().String()
	log.Info("hgs: listening", "url", url, "guardian", guardian.Descriptor().Name(), "key_id", guardian.Descriptor().KeyID().String(), "dir", o.dir)
	if ready != nil {
		ready(url, cert.Leaf)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("hgs: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("hgs: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// loadOrCreate reads a secret file, or makes it (mode 0600) on first start.
func loadOrCreate(path string, log *slog.Logger, make func() ([]byte, error)) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	b, err = make()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	log.Info("hgs: created", "file", path)
	return b, nil
}

func loadGuardian(o *options, log *slog.Logger) (*keyprotector.KeyGuardian, error) {
	b, err := loadOrCreate(filepath.Join(o.dir, "guardian.key"), log, func() ([]byte, error) {
		cfg := &keyprotector.GuardianConfig{Name: o.guardianName}
		if o.postQuantum {
			cfg.Suite = keyprotector.SuiteMLKEM768X25519
		}
		g, err := keyprotector.GenerateGuardian(cfg)
		if err != nil {
			return nil, err
		}
		return g.MarshalPrivate()
	})
	if err != nil {
		return nil, err
	}
	return keyprotector.ParseGuardian(b)
}

func loadTokenKey(path string, log *slog.Logger) (crypto.Signer, error) {
	b, err := loadOrCreate(path, log, func() ([]byte, error) {
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
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("hgs: %s is not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("hgs: %s: %v", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("hgs: %s: not a signing key", path)
	}
	return s, nil
}

// selfSigned loads the self-signed certificate from -dir, or makes it.
func selfSigned(o *options, log *slog.Logger) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(o.dir, "tls-cert.pem"), filepath.Join(o.dir, "tls-key.pem")
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		return c, nil
	}
	c, err := server.SelfSigned(strings.Split(o.hostnames, ",")...)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	log.Info("hgs: created a self-signed TLS certificate; give it to hosts with -ca", "file", certPath, "names", o.hostnames)
	return c, nil
}
