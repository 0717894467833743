package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/shieldvm/shieldvm/attest"
)

// TestDemo runs the demo as `go run ./examples/demo` does (TPM mode: the
// vtpm's EK registered, credential activation), and in host-key mode:
// every step must behave as expected, every attack must be refused.
func TestDemo(t *testing.T) {
	for _, m := range []attest.Mode{attest.ModeTPM, attest.ModeHostKey} {
		t.Run(m.String(), func(t *testing.T) {
			var out bytes.Buffer
			if code := run(context.Background(), &out, m); code != 0 {
				t.Fatalf("exit status %d:\n%s", code, out.String())
			}
			for _, s := range []string{"attestation_required", "affirming", "host booted with a debugger", "All 21 steps behaved as expected"} {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out.String())
				}
			}
		})
	}
}
