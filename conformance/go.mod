module github.com/kafig-dev/kafig/conformance

go 1.25.0

require (
	github.com/kafig-dev/kafig/abi v0.0.0 // tests: abi.ExchangeDataSize (sizes around the exchange area), abi.InterruptInterval, abi.PageSize
	github.com/kafig-dev/kafig/backend-wasmtime v0.0.0 // package conformance: the wasmtime backend of the table (cgo builds only)
	github.com/kafig-dev/kafig/backend-wazero v0.0.0 // package conformance: the wazero backend of the table
	github.com/kafig-dev/kafig/kafig v0.0.0 // package conformance: backend.Backend; tests and examples: the API under test
	github.com/stretchr/testify v1.12.1 // tests: assertions
	github.com/tetratelabs/wazero v1.12.0 // package conformance: one compilation cache for the wazero runtimes of the suite
	go.uber.org/goleak v1.3.0 // tests and examples: no goroutine outlives them
)

require (
	github.com/bytecodealliance/wasmtime-go/v39 v39.0.1 // indirect
	github.com/kafig-dev/kafig/guest v0.0.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sync v0.19.0 // indirect
	golang.org/x/sys v0.44.0 // indirect
)

replace (
	github.com/kafig-dev/kafig/abi => ../abi
	github.com/kafig-dev/kafig/backend-wasmtime => ../backend-wasmtime
	github.com/kafig-dev/kafig/backend-wazero => ../backend-wazero
	github.com/kafig-dev/kafig/guest => ../guest
	github.com/kafig-dev/kafig/kafig => ../kafig
)
