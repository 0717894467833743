//go:build !linux

package keyprotector

import "time"

var processStart = time.Now()

// threadCPU falls back to wall time where thread CPU time is not available.
func threadCPU() time.Duration { return time.Since(processStart) }
