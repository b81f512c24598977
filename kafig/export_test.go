package kafig

import "github.com/kafig-dev/kafig/kafig/backend"

// NewFakeBackend gives the external tests (package kafig_test) the fake.
func NewFakeBackend() backend.Backend { return newFake() }
