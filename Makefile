# printgate: see README.md. `make demo` runs a gateway with a simulated printer; `make test`
# runs every test (end-to-end tests need root and the Debian tools that .ci/run installs).
GO      ?= go
BIN     := bin/printgate
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/printgate/printgate/cmd/printgate/cli.Version=$(VERSION)
PKGS    := ./...
# `make install` puts bin/printgate in $(DESTDIR)$(PREFIX)/bin.
PREFIX  ?= /usr/local
DESTDIR ?=

.PHONY: build install test demo bench lint fuzz dist deb image image-test clean cross

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/printgate

install: build
	install -d '$(DESTDIR)$(PREFIX)/bin'
	install -m 0755 $(BIN) '$(DESTDIR)$(PREFIX)/bin/printgate'

demo: build
	./$(BIN) demo

test: lint cross
	$(GO) test -race -count=1 -timeout 25m $(PKGS) </dev/null
	cd deploy && $(GO) test -race -count=1 -timeout 25m ./... </dev/null

# Both modules tidy, then vet and gofmt over every Go file of the tree (a git checkout or an
# unpacked source tarball alike); none of it reads standard input.
lint:
	$(GO) mod tidy -diff
	cd deploy && $(GO) mod tidy -diff
	$(GO) vet $(PKGS)
	cd deploy && $(GO) vet ./...
	@files=$$(gofmt -l . </dev/null) || exit 1; \
	  test -z "$$files" || { echo "gofmt needed:"; echo "$$files"; exit 1; }

# Benchmarks print ratios against a baseline measured in the same run: the stock wireguard-go
# netstack example (tunnel upload), Debian's wireguard-go client (printgate connect's forward),
# and Debian's printcore (G-code streaming). The harnesses
# that need root and Debian tools skip with a reason otherwise. docs/PERFORMANCE.md has results.
BENCH_RUNS ?= 3
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 40m ./tunnel/... ./netstack/... ./enroll/... ./printerd/... ./mesh/...
	PRINTGATE_BENCH=1 PRINTGATE_BENCH_RUNS=$(BENCH_RUNS) $(GO) test -count=1 -v -timeout 40m ./bench/throughput/

# Every fuzz target, FUZZTIME each (the seed corpora also run in `make test`).
FUZZTIME ?= 20s
# A run that ends "context deadline exceeded" with no failing input written is the fuzzing
# engine's own race at the end of -fuzztime (golang/go#51484), not a finding: that target runs
# again, up to three times. A written failing input, or any other failure, stops the sweep.
fuzz:
	@set -e; out=$$(mktemp); trap 'rm -f $$out' EXIT; \
	for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    for try in 1 2 3; do \
	      echo "== $$pkg $$f"; \
	      if $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >$$out 2>&1; then cat $$out; break; fi; \
	      cat $$out; \
	      if grep -q 'Failing input written to' $$out || ! grep -q 'context deadline exceeded' $$out || [ $$try = 3 ]; then exit 1; fi; \
	      echo "== $$f: context deadline exceeded, no failing input (golang/go#51484): again"; \
	    done; \
	  done; \
	done

# Release binaries for linux/amd64, arm64, arm (GOARM=6 and 7) in dist/; `deb` adds the .debs.
dist:
	deploy/dist.sh $(VERSION)

# The whole binary must build where `printgate connect` runs (laptops): Windows and macOS.
# `make test` runs this first, so CI cross-compiles every run; `make dist` ships the binaries.
CROSS := windows/amd64 darwin/arm64 darwin/amd64
cross:
	@set -e; for p in $(CROSS); do \
	  echo "cross $$p"; CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -o /dev/null ./cmd/printgate; \
	done

deb:
	deploy/dist.sh --deb $(VERSION)

# The Raspberry Pi image (track B: Debian arm64, built here) in out/image; needs root and the
# packages deploy/image/host-setup.sh installs. The base root filesystem is cached in
# ~/.cache/printgate-image (cold: about 5-13 minutes; warm: seconds).
image:
	VERSION=$(VERSION) deploy/image/build.sh

# The appliance tests: the .deb installed into the arm64 root filesystem under qemu-user, then
# the image booted under qemu-system-aarch64 with its admin QR decoded and used through the tunnel.
image-test: image
	cd deploy && $(GO) test -count=1 -v -run 'TestDebInArm64Rootfs' ./image/
	deploy/image/boottest.sh out/image

clean:
	rm -rf bin dist out
