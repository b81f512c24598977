module github.com/kafig-dev/kafig/cmd/kafig

go 1.25.0

require (
	github.com/chzyer/readline v1.5.1 // REPL: line editing and history
	github.com/creack/pty v1.1.24 // tests: the REPL under a pseudo-terminal
	github.com/evanw/esbuild v0.28.2 // bundling of TypeScript and ES module scripts
	github.com/kafig-dev/kafig/backend-wasmtime v0.0.0 // -backend wasmtime
	github.com/kafig-dev/kafig/backend-wazero v0.0.0 // -backend wazero (the default)
	github.com/kafig-dev/kafig/kafig v0.0.0 // the sandbox
	go.uber.org/goleak v1.3.0 // tests: no goroutine left behind
	golang.org/x/term v0.43.0 // is stdin (or stdout) a terminal: REPL or JSON mode, colours
)

require (
	github.com/bytecodealliance/wasmtime-go/v39 v39.0.1 // indirect
	github.com/kafig-dev/kafig/abi v0.0.0 // indirect
	github.com/kafig-dev/kafig/guest v0.0.0 // indirect
	github.com/tetratelabs/wazero v1.12.0 // indirect
	golang.org/x/sync v0.19.0 // indirect
	golang.org/x/sys v0.44.0 // indirect
)

replace (
	github.com/kafig-dev/kafig/abi => ../../abi
	github.com/kafig-dev/kafig/backend-wasmtime => ../../backend-wasmtime
	github.com/kafig-dev/kafig/backend-wazero => ../../backend-wazero
	github.com/kafig-dev/kafig/guest => ../../guest
	github.com/kafig-dev/kafig/kafig => ../../kafig
)
