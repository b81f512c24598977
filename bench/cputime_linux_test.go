//go:build linux

package bench

import (
	"time"

	"golang.org/x/sys/unix"
)

// processCPU returns the CPU time this process has used (all threads).
func processCPU() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}

// minorFaults returns the process's minor page faults so far, or -1.
func minorFaults() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return ru.Minflt
}
