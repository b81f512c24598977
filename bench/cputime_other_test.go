//go:build !linux

package bench

import "time"

// processCPU is not measured off Linux.
func processCPU() (time.Duration, bool) { return 0, false }

// minorFaults is not measured off Linux.
func minorFaults() int64 { return -1 }
