package seal

import (
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newSealer(t *testing.T, key string, guest string) *Sealer {
	t.Helper()
	s, err := New([]byte(key), sha256.Sum256([]byte(guest)))
	require.NoError(t, err)
	return s
}

func TestRoundTrip(t *testing.T) {
	s := newSealer(t, "0123456789abcdef", "guest")
	bc := []byte("some bytecode")
	sealed := s.Seal(bc)
	assert.Len(t, sealed, len(bc)+Overhead)
	got, err := s.Open(sealed)
	require.NoError(t, err)
	assert.Equal(t, bc, got)
}

func TestTamperEveryByte(t *testing.T) {
	s := newSealer(t, "0123456789abcdef", "guest")
	sealed := s.Seal([]byte("bytecode under test"))
	for i := range sealed {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			b := append([]byte(nil), sealed...)
			b[i] ^= flip
			_, err := s.Open(b)
			assert.Error(t, err, "byte %d ^ %#x", i, flip)
		}
	}
}

func TestTruncationAndExtension(t *testing.T) {
	s := newSealer(t, "0123456789abcdef", "guest")
	sealed := s.Seal([]byte("bytecode"))
	for n := 0; n < len(sealed); n++ {
		_, err := s.Open(sealed[:n])
		assert.Error(t, err, "length %d", n)
	}
	_, err := s.Open(append(append([]byte(nil), sealed...), 0))
	assert.Error(t, err)
}

func TestForeign(t *testing.T) {
	a := newSealer(t, "0123456789abcdef", "guest")
	sealed := a.Seal([]byte("bytecode"))
	_, err := newSealer(t, "fedcba9876543210", "guest").Open(sealed)
	assert.ErrorIs(t, err, ErrMAC, "another key")
	_, err = newSealer(t, "0123456789abcdef", "another guest build").Open(sealed)
	assert.ErrorIs(t, err, ErrMAC, "another guest")
	_, err = newSealer(t, "0123456789abcdef", "guest").Open(sealed)
	assert.NoError(t, err, "same key and guest")
}

func TestRandomAndEmpty(t *testing.T) {
	s := newSealer(t, "0123456789abcdef", "guest")
	for _, n := range []int{0, 1, HeaderSize, Overhead, Overhead + 1, 1000} {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		_, err := s.Open(b)
		assert.Error(t, err, n)
	}
	_, err := s.Open(nil)
	assert.ErrorIs(t, err, ErrTooShort)
	_, err = s.Open(s.Seal(nil))
	assert.ErrorIs(t, err, ErrEmpty)
}

func TestShortKey(t *testing.T) {
	_, err := New([]byte("short"), [32]byte{})
	assert.Error(t, err)
}

func TestConcurrent(t *testing.T) {
	s := newSealer(t, "0123456789abcdef", "guest")
	done := make(chan struct{})
	for i := 0; i < 8; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := 0; j < 200; j++ {
				_, err := s.Open(s.Seal([]byte{byte(j), 1, 2}))
				assert.NoError(t, err)
			}
		}()
	}
	for i := 0; i < 8; i++ {
		<-done
	}
}

func FuzzOpen(f *testing.F) {
	s, _ := New([]byte("0123456789abcdef"), [32]byte{})
	f.Add(s.Seal([]byte("x")))
	f.Fuzz(func(t *testing.T, b []byte) {
		if out, err := s.Open(b); err == nil {
			// Only a valid seal opens: re-sealing gives the input back.
			assert.Equal(t, b, s.Seal(out))
		}
	})
}
