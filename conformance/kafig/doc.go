// Package kafig holds the runnable examples of package
// github.com/kafig-dev/kafig/kafig, run on the wazero backend as part of
// the conformance suite (example_test.go).
//
// It only names what the examples are about, so that each Example function
// is attached to the right identifier (go vet checks that they exist):
// use github.com/kafig-dev/kafig/kafig itself.
package kafig

import "github.com/kafig-dev/kafig/kafig"

// The identifiers the examples document.
type (
	Runtime   = kafig.Runtime
	Instance  = kafig.Instance
	RPCRouter = kafig.RPCRouter
	JsError   = kafig.JsError
)

// The functions the examples document.
var (
	New                         = kafig.New
	WithInterruptCallback       = kafig.WithInterruptCallback
	WithPromiseRejectionHandler = kafig.WithPromiseRejectionHandler
)
