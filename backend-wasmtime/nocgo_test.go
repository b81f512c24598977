//go:build !cgo

package wasmtimebackend

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kafig-dev/kafig/kafig/backend"
)

func TestNoCgo(t *testing.T) {
	b := New(WithCacheDir(t.TempDir()))
	assert.Equal(t, "wasmtime", b.Name())
	assert.Equal(t, uint32(DefaultJSStackLimit), b.(backend.StackAdvisor).JSStackLimit())
	m, err := b.Compile(context.Background(), []byte("\x00asm\x01\x00\x00\x00"))
	assert.Nil(t, m)
	assert.EqualError(t, err, "kafig: the wasmtime backend needs cgo (CGO_ENABLED=1)")
}
