//go:build !linux

package bench

import "time"

var factsStart = time.Now()

// factsThreadCPU falls back to wall-clock time where thread CPU time is
// not available.
func factsThreadCPU() time.Duration { return time.Since(factsStart) }
