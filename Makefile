# kafig: one workspace, one module per top-level folder.
#
#   make test          every module's tests (the README's test command)
#   make test-race     the same under the race detector
#   make lint          gofmt, go vet, staticcheck, go mod tidy check, a CGO_ENABLED=0 build
#   make guest         rebuild guest/kafig.wasm from pinned inputs (needs root for apt)
#   make guest-check   rebuild in a scratch copy elsewhere and compare byte for byte
#   make bench         the benchmark table (bench/RESULTS.md)
#   make example       run the CLI on an example script with the embedded guest

SHELL := /bin/bash
MODULES := abi kafig guest backend-wazero backend-wasmtime conformance bench cmd/kafig
# only the modules that exist (go.work lists the same set)
MODS = $(foreach m,$(MODULES),$(if $(wildcard $(m)/go.mod),$(m)))
STATICCHECK_VERSION := v0.8.2
GOTEST_FLAGS ?=

.PHONY: test test-race lint guest guest-check bench bench-smoke example tools

test:
	@set -e; for m in $(MODS); do echo "== go test ./$$m/..."; (cd $$m && go test -timeout 30m $(GOTEST_FLAGS) ./...); done

test-race:
	@set -e; for m in $(MODS); do echo "== go test -race ./$$m/..."; (cd $$m && go test -race -timeout 30m $(GOTEST_FLAGS) ./...); done

tools:
	@command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: tools
	@out=$$(gofmt -l $(MODS)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@set -e; for m in $(MODS); do echo "== vet+staticcheck $$m"; (cd $$m && go vet ./... && PATH=$$PATH:$$(go env GOPATH)/bin staticcheck ./...); done
	@set -e; for m in $(MODS); do (cd $$m && GOWORK=off go mod tidy -diff) || { echo "go mod tidy changes $$m"; exit 1; }; done
	@set -e; for m in $(MODS); do echo "== CGO_ENABLED=0 go build ./$$m/..."; (cd $$m && CGO_ENABLED=0 go build ./... && CGO_ENABLED=0 go vet ./... >/dev/null); done
	@go run ./abi/cmd/abigen | cmp - guest/src/kafig_abi.h || { echo "guest/src/kafig_abi.h is stale: go run ./abi/cmd/abigen > guest/src/kafig_abi.h"; exit 1; }

guest:
	guest/build.sh

guest-check:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	mkdir -p $$tmp/elsewhere; \
	mkdir -p $$tmp/elsewhere/guest; tar -C guest --exclude=node_modules --exclude=build -cf - . | tar -C $$tmp/elsewhere/guest -xf -; \
	$$tmp/elsewhere/guest/build.sh $$tmp/out; \
	if cmp guest/kafig.wasm $$tmp/out/kafig.wasm; then echo "guest-check: rebuild is byte-identical ($$(cut -d' ' -f1 guest/kafig.wasm.sha256))"; \
	else echo "guest-check: guest/kafig.wasm differs from a fresh build: run make guest and commit"; exit 1; fi

bench-smoke:
	cd bench && go test ./... -run=NONE -bench=. -benchtime=1x

bench:
	cd bench && go run ./cmd/report

example:
	go run ./cmd/kafig examples/hello.js
