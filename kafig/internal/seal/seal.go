// Package seal authenticates the bytecode that kafig.Runtime.Compile returns.
//
// QuickJS's bytecode reader trusts its input, so bytecode must never reach the
// guest unless this process (or one holding the same key) produced it. A
// sealed blob is
//
//	magic "KFBC" | format version (1 byte) | 3 zero bytes | bytecode | MAC (32 bytes)
//
// where MAC = HMAC-SHA256(key, sha256(guest wasm) || header || bytecode). The
// guest hash binds the bytecode to the exact guest build that wrote it:
// bytecode is not portable between QuickJS builds.
package seal

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
	"sync"
)

const (
	// Version is the format version written after the magic.
	Version = 1
	// HeaderSize is the size of the fixed header before the bytecode.
	HeaderSize = 8
	// MACSize is the size of the trailing MAC.
	MACSize = sha256.Size
	// Overhead is what sealing adds to the bytecode.
	Overhead = HeaderSize + MACSize
	// MinKeyLen is the shortest key Sealer accepts.
	MinKeyLen = 16
)

var header = [HeaderSize]byte{'K', 'F', 'B', 'C', Version, 0, 0, 0}

// Errors Open returns. Package kafig wraps them with ErrBadBytecode.
var (
	ErrTooShort = errors.New("too short to be sealed bytecode")
	ErrHeader   = errors.New("not sealed kafig bytecode (bad header)")
	ErrMAC      = errors.New("seal does not verify (tampered, or from another runtime key or guest build)")
	ErrEmpty    = errors.New("empty bytecode")
)

// Sealer seals and opens bytecode with one key for one guest build.
//
// A Sealer is safe for concurrent use.
type Sealer struct {
	key       []byte
	guestHash [sha256.Size]byte
	macs      sync.Pool // of hash.Hash
}

// New returns a Sealer. key must be at least MinKeyLen bytes; it is copied.
func New(key []byte, guestHash [sha256.Size]byte) (*Sealer, error) {
	if len(key) < MinKeyLen {
		return nil, errors.New("key shorter than 16 bytes")
	}
	s := &Sealer{key: append([]byte(nil), key...), guestHash: guestHash}
	s.macs.New = func() any { return hmac.New(sha256.New, s.key) }
	return s, nil
}

func (s *Sealer) mac(dst, body []byte) []byte {
	m := s.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(s.guestHash[:])
	m.Write(header[:])
	m.Write(body)
	dst = m.Sum(dst)
	s.macs.Put(m)
	return dst
}

// Seal returns header | bytecode | MAC in a new slice.
func (s *Sealer) Seal(bytecode []byte) []byte {
	out := make([]byte, 0, len(bytecode)+Overhead)
	out = append(out, header[:]...)
	out = append(out, bytecode...)
	return s.mac(out, bytecode)
}

// Open verifies a sealed blob in constant time (for a given length) and
// returns the bytecode inside it, which aliases sealed.
func (s *Sealer) Open(sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, ErrTooShort
	}
	body := sealed[HeaderSize : len(sealed)-MACSize]
	var buf [MACSize]byte
	want := s.mac(buf[:0], body)
	// Check the MAC before anything else so that the time taken does not
	// depend on which part of a forgery is wrong.
	macOK := hmac.Equal(want, sealed[len(sealed)-MACSize:])
	hdrOK := hmac.Equal(header[:], sealed[:HeaderSize])
	switch {
	case !hdrOK:
		return nil, ErrHeader
	case !macOK:
		return nil, ErrMAC
	case len(body) == 0:
		return nil, ErrEmpty
	}
	return body, nil
}
