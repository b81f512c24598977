package wasmtimebackend

// The fake guest of the tests (wabt's wat2wasm).
//go:generate wat2wasm testdata/fake.wat -o testdata/fake.wasm
