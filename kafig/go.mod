module github.com/kafig-dev/kafig/kafig

go 1.25.0

require (
	github.com/kafig-dev/kafig/abi v0.0.0 // the ABI contract
	github.com/kafig-dev/kafig/guest v0.0.0 // the embedded guest module
	github.com/stretchr/testify v1.12.1 // tests
	go.uber.org/goleak v1.3.0 // tests: no goroutine outlives a test
	golang.org/x/sync v0.19.0 // the async RPC pool (errgroup.SetLimit)
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect; tests (testify)

replace (
	github.com/kafig-dev/kafig/abi => ../abi
	github.com/kafig-dev/kafig/guest => ../guest
)
