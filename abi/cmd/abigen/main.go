// Command abigen writes the C header of the kafig ABI from package abi, so
// the guest and the host share one definition. Run from the repository root:
//
//	go run ./abi/cmd/abigen > guest/src/kafig_abi.h
package main

import (
	"os"

	"github.com/kafig-dev/kafig/abi"
)

func main() {
	os.Stdout.WriteString(abi.CHeader())
}
