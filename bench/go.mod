module github.com/kafig-dev/kafig/bench

go 1.25.0

require (
	github.com/dop251/goja v0.0.0-20260917113740-793a2a65c13b // baseline: the pure-Go JavaScript engine
	github.com/kafig-dev/kafig/backend-wasmtime v0.0.0 // engine under test (cgo builds)
	github.com/kafig-dev/kafig/backend-wazero v0.0.0 // engine under test
	github.com/kafig-dev/kafig/kafig v0.0.0 // the API under test
	golang.org/x/sys v0.44.0 // tests: the process's CPU time (clock_gettime)
)

require (
	github.com/bytecodealliance/wasmtime-go/v39 v39.0.1 // indirect
	github.com/dlclark/regexp2/v2 v2.5.2 // indirect
	github.com/go-sourcemap/sourcemap v2.1.3+incompatible // indirect
	github.com/google/pprof v0.0.0-20230207041349-798e818bf904 // indirect
	github.com/kafig-dev/kafig/abi v0.0.0 // indirect
	github.com/kafig-dev/kafig/guest v0.0.0 // indirect
	github.com/tetratelabs/wazero v1.12.0 // indirect
	golang.org/x/sync v0.19.0 // indirect
	golang.org/x/text v0.3.8 // indirect
)

replace (
	github.com/kafig-dev/kafig/abi => ../abi
	github.com/kafig-dev/kafig/backend-wasmtime => ../backend-wasmtime
	github.com/kafig-dev/kafig/backend-wazero => ../backend-wazero
	github.com/kafig-dev/kafig/guest => ../guest
	github.com/kafig-dev/kafig/kafig => ../kafig
)
