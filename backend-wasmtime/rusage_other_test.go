//go:build cgo && !linux

package wasmtimebackend

import "time"

func threadUsage() (time.Duration, int64, bool) { return 0, 0, false }
