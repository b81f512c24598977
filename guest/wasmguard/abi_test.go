package wasmguard

import (
	"testing"

	"github.com/kafig-dev/kafig/abi"
)

// The tool cannot import abi (build.sh runs it from a copy of guest/ alone),
// so the name is written twice; this test keeps the two equal.
func TestStopGlobalIsTheABIs(t *testing.T) {
	if DefaultStopGlobal != abi.StopGlobal {
		t.Fatalf("wasmguard.DefaultStopGlobal = %q, abi.StopGlobal = %q", DefaultStopGlobal, abi.StopGlobal)
	}
}

func TestYieldIsTheABIs(t *testing.T) {
	if YieldArg != abi.YieldOpcodes || DefaultYieldEvery != abi.YieldEvery {
		t.Fatalf("wasmguard yields with %#x every %d, abi says %#x every %d", YieldArg, DefaultYieldEvery, abi.YieldOpcodes, abi.YieldEvery)
	}
}
