module github.com/kafig-dev/kafig/kafig

go 1.25

require github.com/kafig-dev/kafig/abi v0.0.0 // the ABI contract

replace github.com/kafig-dev/kafig/abi => ../abi
