package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/shieldvm/shieldvm/keyprotector"
)

const guardianSummary = "guardian keys and descriptors: make, show"

func init() {
	register("guardian", guardianSummary, "new", verb{
		usage: "[--suite x25519|p256|mlkem768x25519] [--sig es256|ed25519] [--validity DURATION] [--pub FILE] NAME KEYFILE",
		help:  "make a guardian with in-memory keys; write its private key file (mode 0600, never overwritten) and, with --pub, its public descriptor",
		run:   guardianNew,
	})
	register("guardian", guardianSummary, "show", verb{
		usage: "[--json] FILE",
		help:  "show a guardian descriptor or private key file (public parts only), after checking its self-signature",
		run:   guardianShow,
	})
}

func parseSigAlg(s string) (keyprotector.SignatureAlgorithm, error) {
	switch strings.ToLower(s) {
	case "es256", "ecdsa", "p256":
		return keyprotector.SignatureES256, nil
	case "ed25519", "eddsa":
		return keyprotector.SignatureEdDSA, nil
	}
	return 0, usageErrorf("unknown signature algorithm %q (es256, ed25519)", s)
}

// writeNew writes a file that must not exist yet.
func writeNew(name string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func guardianNew(_ context.Context, e *env, args []string) error {
	fs := newFlags("guardian new")
	suiteName := fs.String("suite", "x25519", "")
	sigName := fs.String("sig", "es256", "")
	validity := fs.Duration("validity", keyprotector.DefaultValidity, "")
	pubFile := fs.String("pub", "", "")
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	suite, err := keyprotector.ParseSuite(*suiteName)
	if err != nil {
		return usageErrorf("%v", err)
	}
	alg, err := parseSigAlg(*sigName)
	if err != nil {
		return err
	}
	if *validity <= 0 {
		return usageErrorf("--validity must be positive")
	}
	now := time.Now()
	g, err := keyprotector.GenerateGuardian(&keyprotector.GuardianConfig{
		Name: pos[0], Suite: suite, SignatureAlgorithm: alg,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(*validity),
	})
	if err != nil {
		return err
	}
	priv, err := g.MarshalPrivate()
	if err != nil {
		return err
	}
	if err := writeNew(pos[1], priv, 0o600); err != nil {
		return err
	}
	clear(priv)
	if *pubFile != "" {
		if err := os.WriteFile(*pubFile, g.Descriptor().Marshal(), 0o644); err != nil {
			return err
		}
	}
	d := g.Descriptor()
	fmt.Fprintf(e.stdout, "guardian %q key id %s (%v, %v)\n", d.Name(), d.KeyID(), d.Suite(), d.SignatureAlgorithm())
	return nil
}

// readDescriptor reads a descriptor file, or the descriptor inside a
// private key file.
func readDescriptor(name string) (*keyprotector.Descriptor, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	d, err := keyprotector.ParseDescriptor(data)
	if err == nil {
		return d, nil
	}
	g, err2 := keyprotector.ParseGuardian(data)
	if err2 != nil {
		return nil, fmt.Errorf("%s: not a guardian descriptor (%v) nor a private key file", name, err)
	}
	return g.Descriptor(), nil
}

func readGuardian(name string) (*keyprotector.KeyGuardian, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	g, err := keyprotector.ParseGuardian(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return g, nil
}

type descriptorJSON struct {
	Name               string    `json:"name"`
	KeyID              string    `json:"key_id"`
	Suite              string    `json:"suite"`
	PostQuantum        bool      `json:"post_quantum"`
	SignatureAlgorithm string    `json:"signature_algorithm"`
	NotBefore          time.Time `json:"not_before"`
	NotAfter           time.Time `json:"not_after"`
}

func describe(d *keyprotector.Descriptor) descriptorJSON {
	return descriptorJSON{
		Name: d.Name(), KeyID: d.KeyID().String(), Suite: d.Suite().String(), PostQuantum: d.Suite().PostQuantum(),
		SignatureAlgorithm: d.SignatureAlgorithm().String(), NotBefore: d.NotBefore(), NotAfter: d.NotAfter(),
	}
}

func guardianShow(_ context.Context, e *env, args []string) error {
	fs := newFlags("guardian show")
	asJSON := fs.Bool("json", false, "")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	d, err := readDescriptor(pos[0])
	if err != nil {
		return err
	}
	j := describe(d)
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(j)
	}
	fmt.Fprintf(e.stdout, "name:      %s\nkey id:    %s\nsuite:     %s\nsignature: %s\nvalid:     %s to %s\n",
		j.Name, j.KeyID, j.Suite, j.SignatureAlgorithm, j.NotBefore.Format(time.RFC3339), j.NotAfter.Format(time.RFC3339))
	if d.ValidAt(time.Now()) != nil {
		fmt.Fprintln(e.stdout, "warning:   not valid now")
	}
	return nil
}
