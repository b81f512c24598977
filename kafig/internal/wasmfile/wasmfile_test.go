package wasmfile

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMemory(t *testing.T) {
	for name, tc := range map[string]struct {
		wasm          string
		min, max      uint32
		hasMax, valid bool
	}{
		"defined":           {"\x00asm\x01\x00\x00\x00\x05\x03\x01\x00\x02", 2, 0, false, true},
		"defined with max":  {"\x00asm\x01\x00\x00\x00\x05\x05\x01\x01\x11\x80\x01", 17, 128, true, true},
		"imported":          {"\x00asm\x01\x00\x00\x00\x02\x0c\x01\x03env\x03mem\x02\x00\x03", 3, 0, false, true},
		"func import first": {"\x00asm\x01\x00\x00\x00\x02\x14\x02\x03env\x01f\x00\x00\x03env\x03mem\x02\x00\x04", 4, 0, false, true},
		"empty":             {"", 0, 0, false, false},
		"bad magic":         {"\x00asx\x01\x00\x00\x00", 0, 0, false, false},
		"no memory":         {"\x00asm\x01\x00\x00\x00", 0, 0, false, false},
		"truncated":         {"\x00asm\x01\x00\x00\x00\x05\x09\x01", 0, 0, false, false},
		"bad leb":           {"\x00asm\x01\x00\x00\x00\x05\x06\x01\x00\xff\xff\xff\xff", 0, 0, false, false},
		"memory64":          {"\x00asm\x01\x00\x00\x00\x05\x03\x01\x04\x02", 0, 0, false, false},
	} {
		t.Run(name, func(t *testing.T) {
			mn, mx, hm, err := Memory([]byte(tc.wasm))
			if !tc.valid {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.min, mn)
			assert.Equal(t, tc.max, mx)
			assert.Equal(t, tc.hasMax, hm)
		})
	}
}

func TestGuest(t *testing.T) {
	b, err := os.ReadFile("../../../guest/kafig.wasm")
	if err != nil || len(b) == 0 {
		t.Skip("no guest/kafig.wasm")
	}
	mn, mx, hm, err := Memory(b)
	require.NoError(t, err)
	t.Logf("guest memory: min %d pages, max %d (declared %v)", mn, mx, hm)
	assert.NotZero(t, mn)
}

func FuzzMemory(f *testing.F) {
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x05\x03\x01\x00\x02"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _, _, _ = Memory(b) })
}
