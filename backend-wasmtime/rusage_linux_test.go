//go:build cgo && linux

package wasmtimebackend

import (
	"syscall"
	"time"
)

// threadUsage returns the CPU time (user + system) and minor page faults of
// the calling thread (lock the goroutine to it first).
func threadUsage() (time.Duration, int64, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0, 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Minflt, true
}
