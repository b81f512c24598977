module github.com/kafig-dev/kafig/guest

go 1.25.0

require (
	github.com/kafig-dev/kafig/abi v0.0.0 // tests: the ABI the guest must honour
	github.com/stretchr/testify v1.11.1 // tests
	github.com/tetratelabs/wazero v1.12.0 // tests: run the guest
)

require (
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	golang.org/x/sys v0.44.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

replace github.com/kafig-dev/kafig/abi => ../abi
