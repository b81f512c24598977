package mmapalloc

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const poolable = true

// trim returns the pages of buf between keep and size to the system and
// makes them inaccessible again, as in a fresh reservation.
func trim(buf []byte, keep, size uint64) bool {
	if size <= keep {
		return true
	}
	tail := buf[keep:size]
	return unix.Madvise(tail, unix.MADV_DONTNEED) == nil && unix.Mprotect(tail, unix.PROT_NONE) == nil
}

func pageSize() int { return unix.Getpagesize() }

// zeroKept zeroes b (page-aligned, committed) without touching the pages
// that are not resident: resident pages are cleared in place (no fault, no
// new page), the others are dropped with MADV_DONTNEED, which also drops
// any swapped-out copy, so that they read as zero when next touched. Pages
// i with skip[i] set are left as they are (the instantiation overwrites
// them whole).
func zeroKept(b []byte, skip []bool) bool {
	if len(b) == 0 {
		return true
	}
	ps := unix.Getpagesize()
	if len(b)%ps != 0 {
		return false
	}
	vec := make([]byte, len(b)/ps)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return false
	}
	// 0: zero in place, 1: drop, 2: leave.
	class := func(i int) int {
		switch {
		case i < len(skip) && skip[i]:
			return 2
		case vec[i]&1 != 0:
			return 0
		}
		return 1
	}
	for i := 0; i < len(vec); {
		j := i
		c := class(i)
		for j < len(vec) && class(j) == c {
			j++
		}
		run := b[i*ps : j*ps]
		switch c {
		case 0:
			clear(run)
		case 1:
			if unix.Madvise(run, unix.MADV_DONTNEED) != nil {
				return false
			}
		}
		i = j
	}
	return true
}

func unmapRange(buf []byte) { _ = unix.Munmap(buf) }
