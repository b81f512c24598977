//go:build cgo

package wasmtimebackend

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
)

// The on-disk cache of compiled modules.
//
// A file holds one serialized wasmtime module:
//
//	magic (8) | sha256 of the wasm (32) | sha256 of the payload (32) | payload
//
// and is named kafig-<sha256 of the wasm>-<settings hash>.cwasm, where the
// settings hash covers the wasmtime-go version, GOOS/GOARCH and the engine
// settings. Only such files, directly under the cache dir, are read; both
// hashes are checked before the payload goes to NewModuleDeserialize.
// Anything that fails the checks is ignored and overwritten. Wasmtime itself
// also refuses artifacts from another version or configuration, in which case
// the module is compiled again.

var diskMagic = [8]byte{'K', 'A', 'F', 'I', 'G', 'W', 'T', 1}

const diskHeader = 8 + 32 + 32

// wasmtimeGoVersion is the wasmtime-go this package is built and tested with;
// the version from the build info, when there is one, takes precedence.
const wasmtimeGoVersion = "v39.0.1"

func wasmtimeVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/bytecodealliance/wasmtime-go/v39" {
				if m.Replace != nil {
					return m.Path + "@" + m.Version + "=>" + m.Replace.Path + "@" + m.Replace.Version
				}
				return m.Path + "@" + m.Version
			}
		}
	}
	return "github.com/bytecodealliance/wasmtime-go/v39@" + wasmtimeGoVersion
}

// settingsKey identifies everything besides the wasm bytes that the compiled
// code depends on. The max wasm stack is not part of it: it is a runtime
// setting, and wasmtime loads an artifact compiled under another one (it
// refuses one compiled with another epoch interruption setting).
func settingsKey(o options) string {
	s := fmt.Sprintf("kafig-wasmtime/2 %s %s/%s backstop=%t epochs=%t",
		wasmtimeVersion(), runtime.GOOS, runtime.GOARCH, o.backstop, o.epochs)
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

func cachePath(dir string, wasmSum [32]byte, settings string) string {
	return filepath.Join(dir, "kafig-"+hex.EncodeToString(wasmSum[:])+"-"+settings+".cwasm")
}

// prepareCacheDir creates dir if needed and refuses a dir other users can
// write to.
func prepareCacheDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kafig: cache dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("kafig: cache dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("kafig: cache dir %s is not a directory", dir)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("kafig: cache dir %s is writable by other users (mode %v); compiled code loaded from it would be trusted", dir, fi.Mode().Perm())
	}
	return nil
}

// readCache returns the verified payload of the cache file, or nil.
func readCache(path string, wasmSum [32]byte) []byte {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < diskHeader {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) < diskHeader {
		return nil
	}
	if !bytes.Equal(b[:8], diskMagic[:]) || !bytes.Equal(b[8:40], wasmSum[:]) {
		return nil
	}
	payload := b[diskHeader:]
	sum := sha256.Sum256(payload)
	if !bytes.Equal(b[40:72], sum[:]) {
		return nil
	}
	return payload
}

// writeCache writes the file atomically (a temporary file renamed into
// place), readable and writable by the owner only.
func writeCache(path string, wasmSum [32]byte, payload []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".kafig-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	sum := sha256.Sum256(payload)
	var werr error
	write := func(b []byte) {
		if werr == nil {
			_, werr = f.Write(b)
		}
	}
	write(diskMagic[:])
	write(wasmSum[:])
	write(sum[:])
	write(payload)
	if werr == nil {
		werr = f.Chmod(0o600)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return errors.Join(errors.New("kafig: writing the module cache"), werr)
	}
	return nil
}
