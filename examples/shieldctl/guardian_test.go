package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGuardianNewShow(t *testing.T) {
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "g.key"), filepath.Join(dir, "g.pub")
	code, out, errOut := runCLI(t, "guardian", "new", "--suite", "mlkem768x25519", "--sig", "ed25519", "--pub", pub, "hgs-1", key)
	if code != 0 || !strings.Contains(out, `guardian "hgs-1" key id`) {
		t.Fatalf("new: %d %q %q", code, out, errOut)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file mode: %v %v", fi.Mode(), err)
	}
	// A private key file is never overwritten.
	if code, _, _ := runCLI(t, "guardian", "new", "again", key); code != 1 {
		t.Fatalf("overwrote a key file: exit %d", code)
	}
	for _, f := range []string{key, pub} {
		code, out, errOut := runCLI(t, "guardian", "show", "--json", f)
		if code != 0 {
			t.Fatalf("show %s: %d %q", f, code, errOut)
		}
		var j descriptorJSON
		if err := json.Unmarshal([]byte(out), &j); err != nil {
			t.Fatal(err)
		}
		if j.Name != "hgs-1" || j.Suite != "HPKE-MLKEM768-X25519" || !j.PostQuantum || j.SignatureAlgorithm != "EdDSA" || len(j.KeyID) != 64 {
			t.Fatalf("show %s: %+v", f, j)
		}
		if strings.Contains(out, "private") {
			t.Fatal("show printed private material")
		}
	}
}

func TestGuardianBadInput(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("\xd2\x84not a descriptor"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"guardian", "new", "--suite", "rot13", "x", filepath.Join(dir, "k")}, 2},
		{[]string{"guardian", "new", "--sig", "dsa", "x", filepath.Join(dir, "k")}, 2},
		{[]string{"guardian", "new", "--suite", "rsa", "x", filepath.Join(dir, "k")}, 1}, // RSA keys live in HSMs
		{[]string{"guardian", "new", "only-a-name"}, 2},
		{[]string{"guardian", "show", junk}, 1},
		{[]string{"guardian", "show", filepath.Join(dir, "missing")}, 1},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code != tc.code || strings.Count(errOut, "\n") > 2 || strings.Contains(errOut, "goroutine") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d", tc.args, code, errOut, tc.code)
		}
	}
}
