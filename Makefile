# uapk-proxy: everything CI and a newcomer need goes through these targets.
GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test vet demo bench keys clean

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/uapk-proxy ./cmd/uapk-proxy
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/erp-mock ./examples/erp-mock

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed on:"; gofmt -l .; exit 1; }

# The whole suite: unit, fuzz seed corpora, end-to-end through real sockets,
# the independent Python chain verifier. -race everywhere.
test: vet
	$(GO) test -race -count=1 -timeout 20m ./...

# Approver keys for the example principals file (examples/principals.yaml).
keys: build
	@mkdir -p examples/keys
	@for who in cfo controller finance-manager; do \
	  [ -f examples/keys/$$who.key ] || $(BIN)/uapk-proxy keygen --out examples/keys/$$who >/dev/null; \
	done

demo: build keys
	./examples/demo.sh

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./rules/ ./ledger/
	$(GO) build -o $(BIN)/uapk-bench ./cmd/uapk-bench
	$(BIN)/uapk-bench -proxy $(BIN)/uapk-proxy -duration 5s -conns 32

clean:
	rm -rf $(BIN) ./data
