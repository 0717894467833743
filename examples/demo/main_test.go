package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/shieldvm/shieldvm/attest"
)

// TestDemo runs the demo as `go run ./examples/demo` does: every step must
// behave as expected, every attack must be refused.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), &out, attest.ModeHostKey); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, out.String())
	}
	for _, s := range []string{"attestation_required", "affirming", "host booted with a debugger", "All 21 steps behaved as expected"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
}
