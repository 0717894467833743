//go:build unix

package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shieldvm/shieldvm/examples/hgs/server"
	"github.com/shieldvm/shieldvm/examples/host/agent"
	"github.com/shieldvm/shieldvm/examples/host/bootlog"
	"github.com/shieldvm/shieldvm/keyprotector"
	"github.com/shieldvm/shieldvm/measure"
	"github.com/shieldvm/shieldvm/policy"
	"github.com/shieldvm/shieldvm/vtpm"
)

// BenchmarkHGSLoad drives the example guardian service (examples/hgs) over
// HTTPS on 127.0.0.1 with the host agent's requests: each iteration is one
// host attesting (a challenge, then evidence for a token) and asking for a
// VM's key with the token (a release, re-keyed), by hosts whose TPM is a
// vtpm booted with a real boot log. mode=tpm attests as a default host
// does (the registered EK, the AK proven by credential activation in the
// vtpm); mode=host-key with a registered host key. The count is bounded by -benchtime
// (use an Nx count) and the time by hgsLoadDeadline; the service and the
// clients share the machine.
//
//	cd bench && go test -run '^$' -bench HGSLoad -benchtime 400x
//
// It reports requests/s over all HTTP requests, p50 and p99 latency per
// request kind, errors (the benchmark fails on any), and the goroutines
// before the service started and after it shut down (it fails on a leak).
func BenchmarkHGSLoad(b *testing.B) {
	// dir: the service's default store, a directory whose anti-rollback
	// record is written and fsynced at every release; memory: the same
	// service with its state in memory (the service's own cost).
	for _, hostKey := range []bool{false, true} {
		mode := "mode=tpm"
		if hostKey {
			mode = "mode=host-key"
		}
		b.Run("store=dir/"+mode, func(b *testing.B) {
			s, err := server.OpenDirStore(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			hgsLoad(b, s, hostKey)
		})
		b.Run("store=memory/"+mode, func(b *testing.B) { hgsLoad(b, &server.MemoryStore{}, hostKey) })
	}
}

func hgsLoad(b *testing.B, store server.Store, hostKey bool) {
	const (
		hosts           = 8
		hgsLoadDeadline = 2 * time.Minute
	)
	runtime.GC()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), hgsLoadDeadline)
	defer cancel()

	url, client, shutdown := startHGS(b, store)
	log := bootLog(b)
	admin := &agent.Client{URL: url, HTTP: client, AdminToken: "bench-admin-token-0123456789"}
	if err := admin.SetPolicy(ctx, pcrPolicy(b, log)); err != nil {
		b.Fatal(err)
	}
	guardian, err := admin.Guardian(ctx)
	if err != nil {
		b.Fatal(err)
	}
	pool := make(chan *loadHost, hosts)
	for i := range hosts {
		pool <- newLoadHost(b, ctx, admin, client, url, log, guardian, fmt.Sprintf("host-%d", i), hostKey)
	}

	var (
		mu       sync.Mutex
		attestMs []float64
		relMs    []float64
		errs     int
		firstErr error
	)
	b.SetParallelism(hosts / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		h := <-pool
		defer func() { pool <- h }()
		var la, lr []float64
		var e int
		var fe error
		for pb.Next() {
			if ctx.Err() != nil {
				e++
				fe = ctx.Err()
				continue
			}
			t0 := time.Now()
			_, err := h.ag.Attest(ctx)
			t1 := time.Now()
			if err != nil {
				e, fe = e+1, err
				continue
			}
			rel, err := h.ag.Unlock(ctx, h.kp)
			t2 := time.Now()
			if err != nil {
				e, fe = e+1, err
				continue
			}
			if rel.NextKeyProtector != nil {
				h.kp = rel.NextKeyProtector
			}
			rel.Destroy()
			// Attest is two requests (challenge, evidence).
			la = append(la, float64(t1.Sub(t0).Microseconds())/1000)
			lr = append(lr, float64(t2.Sub(t1).Microseconds())/1000)
		}
		mu.Lock()
		attestMs, relMs, errs = append(attestMs, la...), append(relMs, lr...), errs+e
		if firstErr == nil {
			firstErr = fe
		}
		mu.Unlock()
	})
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()

	close(pool)
	for h := range pool {
		h.close()
	}
	shutdown()
	after := before
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		runtime.GC()
		if after = runtime.NumGoroutine(); after <= before {
			break
		}
	}

	requests := 3 * len(attestMs) // challenge + attest + release
	b.ReportMetric(float64(requests)/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(attestMs, 50), "attest-p50-ms")
	b.ReportMetric(pct(attestMs, 99), "attest-p99-ms")
	b.ReportMetric(pct(relMs, 50), "release-p50-ms")
	b.ReportMetric(pct(relMs, 99), "release-p99-ms")
	// CPU time of the process (service and hosts together) per
	// iteration of three requests: what a busy machine does not distort.
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(max(len(attestMs), 1)), "cpu-ms/iter")
	b.ReportMetric(float64(errs), "errors")
	b.ReportMetric(float64(before), "goroutines-before")
	b.ReportMetric(float64(after), "goroutines-after")
	b.ReportMetric(0, "ns/op")
	if errs > 0 {
		b.Fatalf("%d errors; first: %v", errs, firstErr)
	}
	if after > before {
		buf := make([]byte, 1<<20)
		b.Fatalf("goroutines: %d before, %d after shutdown:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

// cpuTime returns the user and system CPU time of the process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pct returns the p-th percentile (nearest rank) of v, in v's unit.
func pct(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

func startHGS(b *testing.B, store server.Store) (url string, client *http.Client, shutdown func()) {
	b.Helper()
	g, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "bench-hgs"})
	if err != nil {
		b.Fatal(err)
	}
	tk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	secret := make([]byte, 32)
	rand.Read(secret)
	svc, err := server.New(server.Config{
		Store: store, Guardian: g, TokenKey: tk, ChallengeSecret: secret,
		AdminTokenSHA256: sha256.Sum256([]byte("bench-admin-token-0123456789")),
		Logger:           slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	cert, err := server.SelfSigned("127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := svc.HTTPServer("", svc.TLSConfig(cert))
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, MaxIdleConnsPerHost: 64}
	client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return "https://" + ln.Addr().String(), client, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			b.Error(err)
		}
		<-done
		tr.CloseIdleConnections()
	}
}

// bootLog is the demo's real boot log with the SHA-1 bank removed (see
// examples/host/bootlog.KeepBanks; redone here with measure alone).
func bootLog(b *testing.B) []byte {
	b.Helper()
	raw, err := os.ReadFile("../examples/demo/testdata/rhel8-uefi.bin")
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

func pcrPolicy(b *testing.B, log []byte) []byte {
	b.Helper()
	l, err := measure.Parse(log)
	if err != nil {
		b.Fatal(err)
	}
	regs, err := l.Replay()
	if err != nil {
		b.Fatal(err)
	}
	pol := &policy.Policy{Version: policy.Version, ID: "bench", PCRs: map[string]map[string][]policy.Digest{"sha256": {}}}
	for r := range 8 {
		pol.PCRs["sha256"][fmt.Sprint(r)] = []policy.Digest{regs.Bank(measure.SHA256).Value(r)}
	}
	doc, err := pol.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return doc
}

// loadHost is one host: a vtpm extended with the boot log, its agent (in
// TPM or host-key mode), and one VM's key protector.
type loadHost struct {
	tpm *vtpm.TPM
	ag  *agent.Agent
	kp  *keyprotector.KeyProtector
}

func newLoadHost(b *testing.B, ctx context.Context, admin *agent.Client, client *http.Client, url string, log []byte, guardian *keyprotector.Descriptor, id string, hostKey bool) *loadHost {
	b.Helper()
	t, err := vtpm.New(vtpm.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := bootlog.Extend(t, log); err != nil {
		b.Fatal(err)
	}
	var key crypto.Signer // nil: TPM mode
	if hostKey {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
	ag, err := agent.New(ctx, &agent.Client{URL: url, HTTP: client}, t, agent.Config{
		HostKey:  key,
		Banks:    []measure.HashAlg{measure.SHA256, measure.SHA384},
		EventLog: func(context.Context) ([]byte, error) { return log, nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	pemKey, err := ag.IdentityPEM()
	if err != nil {
		b.Fatal(err)
	}
	if err := admin.RegisterHost(ctx, id, ag.Mode(), pemKey); err != nil {
		b.Fatal(err)
	}
	owner, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{Name: "owner-" + id})
	if err != nil {
		b.Fatal(err)
	}
	kp, err := keyprotector.New(ctx, owner, []*keyprotector.Descriptor{guardian}, &keyprotector.Config{})
	if err != nil {
		b.Fatal(err)
	}
	return &loadHost{tpm: t, ag: ag, kp: kp}
}

func (h *loadHost) close() {
	h.ag.Close()
	h.tpm.Close()
}
