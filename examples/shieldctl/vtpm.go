package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/shieldvm/shieldvm/vtpm"
	"github.com/shieldvm/shieldvm/vtpm/server"
)

const vtpmSummary = "virtual TPMs: serve one to QEMU (swtpm protocol) and tpm2-tools (mssim)"

func init() {
	register("vtpm", vtpmSummary, "serve", verb{
		usage: "[--swtpm-ctrl PATH] [--swtpm-data PATH] [--mssim HOST:PORT] [--state FILE [--key-file FILE]] [--migration-key-file FILE] [--vm-id ID] [--terminate] [--no-resource-manager] [--verbose]",
		help: "serve a vTPM: to QEMU on the swtpm control socket PATH (-tpmdev emulator), to tpm2-tools and go-tpm " +
			"on the mssim ports PORT and PORT+1; its state is sealed to FILE under the 32-byte key in --key-file " +
			"(hex or raw) after every change that must persist. Without --key-file a key is generated beside the state " +
			"(FILE.key) with a warning. --migration-key-file enables QEMU migration (state blobs sealed under that key). " +
			"--terminate exits when QEMU disconnects",
		run: vtpmServe,
	})
}

func vtpmServe(ctx context.Context, e *env, args []string) error {
	fs := newFlags("vtpm serve")
	ctrlPath := fs.String("swtpm-ctrl", "", "")
	dataPath := fs.String("swtpm-data", "", "")
	mssimAddr := fs.String("mssim", "", "")
	statePath := fs.String("state", "", "")
	keyFile := fs.String("key-file", "", "")
	migKeyFile := fs.String("migration-key-file", "", "")
	vmid := fs.String("vm-id", "", "")
	terminate := fs.Bool("terminate", false, "")
	noRM := fs.Bool("no-resource-manager", false, "")
	verbose := fs.Bool("verbose", false, "")
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	if *ctrlPath == "" && *mssimAddr == "" && *dataPath == "" {
		return usageErrorf("nothing to serve: give --swtpm-ctrl, --swtpm-data or --mssim")
	}
	if *keyFile != "" && *statePath == "" {
		return usageErrorf("--key-file needs --state")
	}
	if *terminate && *ctrlPath == "" {
		return usageErrorf("--terminate needs --swtpm-ctrl")
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg := &server.Config{
		VMID:              *vmid,
		NoResourceManager: *noRM,
		Terminate:         *terminate,
		Logger:            slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level})),
	}
	if *migKeyFile != "" {
		k, err := readKeyFile(*migKeyFile)
		if err != nil {
			return err
		}
		cfg.MigrationKey = k
	}

	var tpm *vtpm.TPM
	var st *stateFile
	if *statePath == "" {
		fmt.Fprintln(e.stderr, "warning: no --state: the vTPM lives in memory and is lost at exit")
		t, err := vtpm.New(vtpm.Config{VMID: *vmid, DeferStartup: true})
		if err != nil {
			return err
		}
		tpm = t
	} else {
		var err error
		st, err = openStateFile(e, *statePath, *keyFile)
		if err != nil {
			return err
		}
		defer clear(st.key[:])
		if tpm, err = st.load(*vmid); err != nil {
			return err
		}
		cfg.Persist = func(_ context.Context, t *vtpm.TPM) error {
			blob, err := t.Seal(&st.key)
			if err != nil {
				return err
			}
			return st.write(blob)
		}
	}
	in := server.New(tpm, cfg)
	defer in.Close()
	if st != nil && st.fresh {
		// Write the new TPM's seeds at once, so that its EK survives a
		// crash before the first command.
		if err := st.save(in); err != nil {
			return err
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)

	if *ctrlPath != "" || *dataPath != "" {
		var ctrlLn, dataLn net.Listener
		var err error
		if *ctrlPath != "" {
			if ctrlLn, err = listenUnix(*ctrlPath); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "swtpm control channel: %s\n", *ctrlPath)
		} else if err := in.PowerOn(ctx); err != nil {
			// Without a control channel nothing else powers the TPM on.
			return err
		}
		if *dataPath != "" {
			if dataLn, err = listenUnix(*dataPath); err != nil {
				if ctrlLn != nil {
					ctrlLn.Close()
				}
				return err
			}
			fmt.Fprintf(e.stdout, "swtpm data channel: %s\n", *dataPath)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- in.ServeSwtpm(ctx, ctrlLn, dataLn)
		}()
	}
	if *mssimAddr != "" {
		tl, pl, err := listenMSSIM(*mssimAddr)
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		fmt.Fprintf(e.stdout, "mssim: TPM %s, platform %s\n", tl.Addr(), pl.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- in.ServeMSSIM(ctx, tl, pl)
		}()
	}

	err := <-errs
	cancel()
	wg.Wait()
	switch {
	case err == nil:
		fmt.Fprintln(e.stdout, "control client disconnected; exiting")
		err = nil
	case errors.Is(err, server.ErrStopped):
		fmt.Fprintln(e.stdout, "stopped by the client; exiting")
		err = nil
	case errors.Is(err, context.Canceled):
		err = nil
	}
	if st != nil {
		if serr := st.save(in); serr != nil {
			return errors.Join(err, serr)
		}
	}
	return err
}

// readKeyFile reads a 32-byte key, as 64 hex digits (what `kp unwrap
// --derive` prints) or as 32 raw bytes.
func readKeyFile(name string) (*[32]byte, error) {
	b, err := readFile(name)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	var k [32]byte
	switch s := strings.TrimSpace(string(b)); {
	case len(s) == 64:
		n, err := hex.Decode(k[:], []byte(s))
		if err != nil || n != 32 {
			return nil, fmt.Errorf("%s: not a 32-byte key in hex", name)
		}
	case len(b) == 32:
		copy(k[:], b)
	default:
		return nil, fmt.Errorf("%s: a key file holds 32 bytes, raw or as 64 hex digits", name)
	}
	return &k, nil
}

// stateFile is the sealed state on disk and its key.
type stateFile struct {
	path  string
	key   [32]byte
	fresh bool // no state existed: a new TPM was made
	mu    sync.Mutex
}

func openStateFile(e *env, path, keyFile string) (*stateFile, error) {
	st := &stateFile{path: path}
	if keyFile == "" {
		keyFile = path + ".key"
		if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
			var k [32]byte
			rand.Read(k[:])
			h := []byte(hex.EncodeToString(k[:]) + "\n")
			clear(k[:])
			if err := writeNew(keyFile, h, 0o600); err != nil {
				return nil, err
			}
			clear(h)
			fmt.Fprintf(e.stderr, "warning: no --key-file: generated %s beside the state; anyone who can read both can open the vTPM. Use a key derived from the VM's transport key (kp unwrap --derive vtpm-state)\n", keyFile)
		} else if err != nil {
			return nil, err
		}
	}
	k, err := readKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	st.key = *k
	clear(k[:])
	return st, nil
}

// load opens the sealed state, or manufactures a new TPM if there is none.
func (st *stateFile) load(vmid string) (*vtpm.TPM, error) {
	blob, err := readFile(st.path)
	if errors.Is(err, fs.ErrNotExist) {
		st.fresh = true
		return vtpm.New(vtpm.Config{VMID: vmid, DeferStartup: true})
	}
	if err != nil {
		return nil, err
	}
	t, err := vtpm.Open(blob, &st.key, vtpm.OpenConfig{VMID: vmid})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", st.path, err)
	}
	return t, nil
}

func (st *stateFile) save(in *server.Instance) error {
	blob, err := in.Seal(&st.key)
	if err != nil {
		if errors.Is(err, server.ErrClosed) {
			return nil
		}
		return err
	}
	return st.write(blob)
}

// write replaces the state file atomically: a temporary file in the same
// directory is written and synced, renamed over the state, and the
// directory is synced, so that a crash leaves the old state or the new
// one, never a mix.
func (st *stateFile) write(blob []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	dir := filepath.Dir(st.path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(st.path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(blob); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, st.path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// listenUnix listens on a unix socket readable only by its owner,
// replacing a stale socket (never another kind of file).
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		os.Remove(path)
	}
	old := syscall.Umask(0o077)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	return ln, err
}

// listenMSSIM listens on HOST:PORT for TPM commands and HOST:PORT+1 for
// platform signals. With port 0, it picks a free pair.
func listenMSSIM(addr string) (net.Listener, net.Listener, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, usageErrorf("--mssim: %v", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65534 {
		return nil, nil, usageErrorf("--mssim: port must be 0..65534")
	}
	for try := 0; try < 20; try++ {
		tl, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, nil, err
		}
		p := tl.Addr().(*net.TCPAddr).Port
		if p == 65535 {
			tl.Close()
			continue
		}
		pl, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p+1)))
		if err == nil {
			return tl, pl, nil
		}
		tl.Close()
		if port != 0 {
			return nil, nil, err
		}
	}
	return nil, nil, errors.New("--mssim: no free pair of ports")
}
