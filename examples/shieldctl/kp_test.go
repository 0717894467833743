package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKPLifecycle drives new, show, grant, revoke and unwrap on files.
func TestKPLifecycle(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	for _, g := range []string{"owner", "hgs1", "hgs2"} {
		if code, _, errOut := runCLI(t, "guardian", "new", "--pub", p(g+".pub"), g, p(g+".key")); code != 0 {
			t.Fatal(errOut)
		}
	}
	mustRun := func(args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		return out
	}
	mustRun("kp", "new", "--owner", p("owner.key"), "--guardian", p("hgs1.pub"), "--policy", "baseline", "--max-offline", "1", p("vm.kp"))
	var j kpJSON
	if err := json.Unmarshal([]byte(mustRun("kp", "show", "--json", p("vm.kp"))), &j); err != nil {
		t.Fatal(err)
	}
	if j.Generation != 0 || j.AuthorizationVersion != 1 || j.Owner.Name != "owner" || len(j.Guardians) != 1 || j.Guardians[0].Name != "hgs1" ||
		j.MinVerdict != "affirming" || len(j.PolicyIDs) != 1 || j.MaxOfflineUnwraps != 1 {
		t.Fatalf("show: %+v", j)
	}
	vtpm := mustRun("kp", "unwrap", "--guardian", p("owner.key"), "--derive", "vtpm-state", p("vm.kp"))
	if len(strings.TrimSpace(vtpm)) != 64 {
		t.Fatalf("derived key %q", vtpm)
	}
	if !strings.Contains(mustRun("kp", "unwrap", "--guardian", p("owner.key"), p("vm.kp")), "MAC verified") {
		t.Fatal("unwrap did not report the MAC check")
	}

	// A fabric guardian cannot grant; the owner can.
	if code, _, errOut := runCLI(t, "kp", "grant", "--owner", p("hgs1.key"), "--guardian", p("hgs2.pub"), p("vm.kp"), p("bad.kp")); code != 1 || !strings.Contains(errOut, "only the owner") {
		t.Fatalf("grant by a guardian: %d %q", code, errOut)
	}
	mustRun("kp", "grant", "--owner", p("owner.key"), "--guardian", p("hgs2.pub"), p("vm.kp"), p("vm2.kp"))
	mustRun("kp", "revoke", "--owner", p("owner.key"), "--guardian", p("hgs1.pub"), p("vm2.kp"), p("vm3.kp"))
	out := mustRun("kp", "show", p("vm3.kp"))
	if !strings.Contains(out, "authorization: 3") || strings.Contains(out, `"hgs1"`) || !strings.Contains(out, `"hgs2"`) {
		t.Fatalf("after grant and revoke:\n%s", out)
	}
	// The same TK throughout: grant and revoke do not re-key.
	if got := mustRun("kp", "unwrap", "--guardian", p("owner.key"), "--derive", "vtpm-state", p("vm3.kp")); got != vtpm {
		t.Fatal("grant or revoke changed TK")
	}
	// hgs1 is gone: a typed, one-line error.
	code, _, errOut := runCLI(t, "kp", "unwrap", "--guardian", p("hgs1.key"), p("vm3.kp"))
	if code != 1 || !strings.Contains(errOut, "not listed") {
		t.Fatalf("revoked guardian: %d %q", code, errOut)
	}

	// One changed byte: refused.
	raw, _ := os.ReadFile(p("vm3.kp"))
	raw[len(raw)/2] ^= 1
	os.WriteFile(p("bad.kp"), raw, 0o644)
	if code, _, _ := runCLI(t, "kp", "show", p("bad.kp")); code != 1 {
		t.Fatalf("tampered key protector: exit %d", code)
	}
}

func TestKPUsage(t *testing.T) {
	for _, args := range [][]string{
		{"kp", "new", "out.kp"},
		{"kp", "new", "--owner", "o.key", "--min-verdict", "any", "out.kp"},
		{"kp", "revoke", "--owner", "o.key", "in", "out"},
		{"kp", "revoke", "--owner", "o.key", "--key-id", "zz", "in", "out"},
		{"kp", "unwrap", "file"},
		{"kp", "show"},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, %q; want 2", args, code, errOut)
		}
	}
}
