//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package mmapalloc

// mapNoReserve: PROT_NONE mappings are not charged on these systems.
const mapNoReserve = 0
