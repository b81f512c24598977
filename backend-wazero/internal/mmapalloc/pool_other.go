//go:build !linux

package mmapalloc

const poolable = false

func trim([]byte, uint64, uint64) bool { return false }
func zeroKept([]byte) bool             { return false }
func unmapRange([]byte)                {}
