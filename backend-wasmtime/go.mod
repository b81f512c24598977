module github.com/kafig-dev/kafig/backend-wasmtime

// go 1.25.0, not 1.25: the guest module (a test dependency) declares go 1.25.0.
go 1.25.0

require (
	github.com/bytecodealliance/wasmtime-go/v39 v39.0.1 // package wasmtimebackend: the engine (cgo; prebuilt static library)
	github.com/kafig-dev/kafig/abi v0.0.0 // package wasmtimebackend: import/export names and signatures of the guest
	github.com/kafig-dev/kafig/guest v0.0.0 // package wasmtimebackend: the stop guard (guest/wasmguard); tests: the real guest
	github.com/kafig-dev/kafig/kafig v0.0.0 // package wasmtimebackend: the backend interface it implements
	github.com/stretchr/testify v1.12.1 // tests
	go.uber.org/goleak v1.3.0 // tests: no goroutine left behind
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect

replace (
	github.com/kafig-dev/kafig/abi => ../abi
	github.com/kafig-dev/kafig/guest => ../guest
	github.com/kafig-dev/kafig/kafig => ../kafig
)
