package bench

import (
	"syscall"
	"time"
	"unsafe"
)

// factsThreadCPU returns the CPU time of the calling OS thread
// (CLOCK_THREAD_CPUTIME_ID): the time the code really ran, not the time it
// waited for a core on a loaded machine. The caller locks its OS thread.
func factsThreadCPU() time.Duration {
	var ts syscall.Timespec
	const clockThreadCPUTimeID = 3
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}
