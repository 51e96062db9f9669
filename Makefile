# uapk-proxy: everything CI and a newcomer need goes through these targets.
GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The MinIO the archive's integration tests run against (Object Lock in
# COMPLIANCE mode is only proven by a real server refusing). It builds from
# the module proxy; the first build takes minutes, then Go's cache makes it
# a no-op.
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
# The SMTP server the notifier's tests deliver to (internal/mailpittest):
# mail is only shown to arrive, with its headers intact, by a real server.
MAILPIT_VERSION := v1.33.1

.PHONY: all build test vet demo demo-ui bench bench-run keys clean minio mailpit clients fuzz screenshots faults

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
# UAPK_REQUIRE_MINIO makes the MinIO tests fail rather than skip.
test: vet minio mailpit clients
	UAPK_REQUIRE_MINIO=1 $(GO) test -race -count=1 -timeout 20m ./...
	cd sdk/python && PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s tests
	$(MAKE) faults
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...
	$(MAKE) fuzz

# The fault-injection suite (internal/faults, README "Reliability"): real
# serve processes under load, killed with -9, on a full tmpfs, on a frozen
# ext4, with MinIO killed and stopped, the ERP failing, held approvals across
# SIGTERM and kill -9, PostgreSQL killed; after each, every acknowledged
# request is in the chain, everything the ERP saw was allowed first, the
# chain verifies and nothing was forwarded twice. A few minutes by default;
# FAULTS_RUNS=10 make faults before a release multiplies the kill -9 rounds
# and the requests. The per-scenario figures end up in $(FAULTS_SUMMARY).
# Scenarios the kernel refuses (not root, no tmpfs, no loop device) are
# skipped, saying why in the summary.
FAULTS_RUNS    ?= 1
FAULTS_SUMMARY ?= $(BIN)/faults-summary.txt
faults: build minio
	@rm -f $(FAULTS_SUMMARY)
	@rc=0; UAPK_FAULTS=1 UAPK_REQUIRE_MINIO=1 FAULTS_RUNS=$(FAULTS_RUNS) FAULTS_SUMMARY=$(FAULTS_SUMMARY) \
	  FAULTS_PROXY_BIN=$(BIN)/uapk-proxy $(GO) test -count=1 -timeout 30m -run '^TestFaults$$' ./internal/faults/ || rc=$$?; \
	  cat $(FAULTS_SUMMARY) 2>/dev/null; exit $$rc

# The properties the gate rests on, fuzzed for a bounded count each (the
# committed corpora already run in every go test): the gate's view of a
# target, a body's amount and a decision is never weaker than a server's.
# FUZZTIME=2m (or 1000000x) make fuzz for a longer run before a release; a
# count, not a time, by default: a time limit that ends while an input is
# being minimised is reported by go test as a failure.
FUZZTIME ?= 200000x
FUZZ_TARGETS := gate:FuzzAmbiguousTarget rules:FuzzAmountAgainstEncodingJSON rules:FuzzDecide \
	rules:FuzzCheckID approvals:FuzzApply approvals:FuzzOverrideCovers internal/identity:FuzzVerify \
	ledger:FuzzJournalRead verifier:FuzzFastMatchesSlow evidence:FuzzParseRecordFast
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
	  log=$$(mktemp); \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg/ >$$log 2>&1 || { cat $$log; rm -f $$log; exit 1; }; \
	  rm -f $$log; \
	done

# Node's fetch needs undici's ProxyAgent for the forward door's client tests.
clients:
	@test -d internal/cli/testdata/clients/node_modules || \
	  npm ci --prefix internal/cli/testdata/clients --no-audit --no-fund --loglevel=error

# The desk's pictures in docs/img: the browser test walks the seed's story in
# headless Chromium and saves the queue and an approval page at phone and
# desktop widths.
screenshots:
	UAPK_SCREENSHOTS=$(CURDIR)/docs/img $(GO) test -run TestDeskSeedScenarioInTheBrowser -count=1 ./internal/cli/

# bin/minio for the archive tests (internal/miniotest starts and stops it).
minio:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/minio/minio@$(MINIO_VERSION)

# bin/mailpit for the notifier's tests (internal/mailpittest starts and stops
# it); installed again only when missing or of another version than pinned.
mailpit:
	@mkdir -p $(BIN)
	@test "$$($(GO) version -m $(BIN)/mailpit 2>/dev/null | awk '$$1 == "mod" && $$2 == "github.com/axllent/mailpit" { print $$3 }')" = "$(MAILPIT_VERSION)" || \
	  { echo "installing mailpit $(MAILPIT_VERSION)"; GOBIN=$(BIN) $(GO) install github.com/axllent/mailpit@$(MAILPIT_VERSION); }

# Approver keys for the example principals file (examples/principals.yaml).
keys: build
	@mkdir -p examples/keys
	@for who in cfo controller finance-manager; do \
	  [ -f examples/keys/$$who.key ] || $(BIN)/uapk-proxy keygen --out examples/keys/$$who >/dev/null; \
	done

demo: build keys
	./examples/demo.sh

# demo-ui keeps a proxy running with the seed's $1.2M entry waiting, to
# enroll passkeys and approve in a browser at http://localhost:8090/ui/.
demo-ui: build keys
	./examples/demo-ui.sh

# BenchmarkAppendWithArchive runs appends with the archiver off, writing to
# DATA/archive and uploading to MinIO, in one run; it needs seconds, not 2000x.
# BenchmarkArchiveSegment is the archiver's own cost per 1000-record segment.
# BenchmarkVerifyDataDir (goal >= 500,000 records/s), BenchmarkExport1M
# (goal < 10 s, < 200 MB heap) and BenchmarkVerifyBundle1M (goal < 5 s)
# each print their figure beside its floor measured in the same run (read
# and SHA-256 the same records; for the export also DEFLATE them; for the
# bundle inflate records.jsonl once) and the ratio of the two.
# BenchmarkSidecarDoor (no ledger), BenchmarkSidecarDoorDurable (a real
# ledger in a temp dir), BenchmarkDurableFloor and BenchmarkPlainFasthttp,
# in one process each, split a request's CPU between the door and gate,
# the durable write and the rest of the ledger.
# Every goal's figure is printed as it is measured (a FIGURE line) and
# gathered into one table at the end, from bin/bench.txt; the durable
# floors (uapk-bench's floor.go) are printed under the goals they bound,
# each saying whether the floor itself reaches its goal.
bench: build minio
	@bash -o pipefail -c '$(MAKE) --no-print-directory bench-run 2>&1 | tee $(BIN)/bench.txt'
	@echo; echo "== performance goals ($$(date -u +%F), $$(nproc) cores)"; $(BIN)/uapk-bench -mode table $(BIN)/bench.txt

bench-run:
	$(GO) test -run '^$$' -bench . -skip ScanShapes -benchtime 2000x ./rules/ ./ledger/
	$(GO) test -run '^$$' -bench ScanShapes -benchtime 10x ./rules/
	$(GO) test -run '^$$' -bench 'AppendWithArchive|ArchiveSegment' -benchtime 3s ./archive/
	$(GO) test -run '^$$' -bench 'ForwardDoor|PlainGoproxy' -benchtime 3s ./proxy/
	$(GO) test -run '^$$' -bench 'SidecarDoor|PlainFasthttp|DurableFloor' -benchtime 20000x -count 3 ./proxy/
	$(GO) test -run '^$$' -bench Queue10k -benchtime 10x ./internal/desk/
	$(GO) test -run '^$$' -bench VerifyDataDir -benchtime 1x -timeout 30m ./verifier/
	$(GO) test -run '^$$' -bench 'Export1M|VerifyBundle1M' -benchtime 1x -timeout 30m ./evidence/ -args -evidence.verify=false
	$(GO) build -o $(BIN)/uapk-bench ./cmd/uapk-bench
	$(BIN)/uapk-bench -proxy $(BIN)/uapk-proxy -duration 3s -conns 32 -rounds 3
	$(BIN)/uapk-bench -mode forward -proxy $(BIN)/uapk-proxy -duration 3s -conns 32 -rounds 3
	$(BIN)/uapk-bench -mode held -proxy $(BIN)/uapk-proxy -held 10000 -dwell 3s
	$(BIN)/uapk-bench -mode fleet -proxy $(BIN)/uapk-proxy

clean:
	rm -rf $(BIN) ./data
