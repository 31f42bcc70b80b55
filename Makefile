# printgate: see README.md. `make demo` runs a gateway with a simulated printer; `make test`
# runs every test (end-to-end tests need root and the Debian tools that .ci/run installs).
GO      ?= go
BIN     := bin/printgate
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/printgate/printgate/cmd/printgate/cli.Version=$(VERSION)
PKGS    := ./...

.PHONY: build test demo bench lint fuzz dist image image-test clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/printgate

demo: build
	./$(BIN) demo

test:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) test -race -count=1 -timeout 25m $(PKGS)

lint:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 $(PKGS)

clean:
	rm -rf bin dist out
