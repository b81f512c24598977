module github.com/kafig-dev/kafig/backend-wazero

// go 1.25.0, not 1.25: wazero v1.12.0 declares go 1.25.0.
go 1.25.0

require (
	github.com/kafig-dev/kafig/abi v0.0.0 // package wazerobackend: import/export names and signatures of the guest
	github.com/kafig-dev/kafig/guest v0.0.0 // package wazerobackend: the stop guard (guest/wasmguard); tests: the real guest (guest.WASM)
	github.com/kafig-dev/kafig/kafig v0.0.0 // package wazerobackend: the backend interface it implements
	github.com/stretchr/testify v1.12.1 // tests
	github.com/tetratelabs/wazero v1.12.0 // package wazerobackend: the WebAssembly engine
	go.uber.org/goleak v1.3.0 // tests: no goroutine left behind
	golang.org/x/sys v0.44.0 // internal/mmapalloc: mmap, mprotect, munmap (wazero requires it too)
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect

replace (
	github.com/kafig-dev/kafig/abi => ../abi
	github.com/kafig-dev/kafig/guest => ../guest
	github.com/kafig-dev/kafig/kafig => ../kafig
)
