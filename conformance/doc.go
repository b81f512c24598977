// Package conformance is kafig's conformance suite: one set of tests, run
// through the public API on every backend in one table, that every backend
// must pass.
//
// Everything is in the tests; this package only holds the table of
// backends, so that adding a backend is one line (see backends.go, and
// backends_cgo.go for the backends that need cgo).
//
//	go test ./...                  # every case on every backend
//	go test -run 'TestRPC/wazero'  # one area on one backend
//	go test -short ./...           # without the slowest cases
//
// The areas are one Test function each (TestEval, TestErrors, TestAsync,
// TestRPC, TestEvents, TestPrelude, TestBytecode, TestStats,
// TestInterrupt, TestRejection, TestMemory, TestStack, TestContext,
// TestMisuse, TestLeaks, TestHostile), each running a table of named cases
// as subtests TestX/backend/case. TestQuickJS runs QuickJS's own test
// scripts inside the sandbox and natively and requires the same verdict
// per file. The examples in example_test.go use the wazero backend.
package conformance
