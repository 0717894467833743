package vtpm

import (
	"syscall"
	"time"
	"unsafe"
)

// policyThreadCPU returns the CPU time of the calling OS thread
// (CLOCK_THREAD_CPUTIME_ID): the time a benchmark really ran, not the time
// it waited for a core on a loaded machine. The reference TPM runs through
// cgo on the calling thread, so its time is counted too. The caller locks
// its OS thread.
func policyThreadCPU() time.Duration {
	var ts syscall.Timespec
	const clockThreadCPUTimeID = 3
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}
