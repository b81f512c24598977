module github.com/kafig-dev/kafig/abi

go 1.25
