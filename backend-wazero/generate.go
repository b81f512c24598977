package wazerobackend

// The fake guests the tests use are committed both as text and as binaries.
//go:generate sh testdata/gen.sh
