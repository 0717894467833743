//go:build !linux

package vtpm

import "time"

var policyProcessStart = time.Now()

// policyThreadCPU falls back to wall time where thread CPU time is not
// available.
func policyThreadCPU() time.Duration { return time.Since(policyProcessStart) }
