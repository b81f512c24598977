package mmapalloc

import "golang.org/x/sys/unix"

// mapNoReserve keeps the reservation out of the commit charge.
const mapNoReserve = unix.MAP_NORESERVE
