# Roster — make help lists the targets.
GO        ?= go
PKGS      ?= ./...
STATICCHECK_VERSION ?= v0.8.2
FUZZTIME  ?= 30s

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Built, then run, rather than go run: go run exits 1 when interrupted, so Ctrl-C
# ended every make run with "make: *** [run] Error 1" after a clean stop.
.PHONY: run
run: build ## Run Roster: all services on an embedded NATS at 127.0.0.1:4222, data in ./data
	bin/roster serve

.PHONY: build
build: ## Build bin/roster
	$(GO) build -o bin/roster ./cmd/roster

.PHONY: test
# -vet=off: the vet prerequisite has just run every analyzer over the same packages
# and their tests; go test's own pass (a subset of them) checked it all again.
test: vet fmt-check ## Vet, check formatting, and run every test with the race detector
	$(GO) test -race -vet=off -timeout 10m $(PKGS)

.PHONY: vet
vet: ## go vet
	$(GO) vet $(PKGS)

.PHONY: fmt-check
fmt-check: ## Fail if gofmt would change a file
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: lint
lint: vet ## go vet and staticcheck
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

.PHONY: integration
integration: ## Long-running multi-process and cluster tests (integration/); never cached: they build and run the roster binary, which the test cache does not track
	$(GO) test -race -count=1 -tags integration -timeout 30m -v ./integration/...

.PHONY: bench
bench: ## Benchmarks: every operation beside its floor measured in the same run, embedded and on a 3-node cluster, into bench/report.md
	@mkdir -p bench
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./pkg/... ./services/... | tee bench/results.txt
	$(GO) test -tags benchreport -count=1 -run TestBenchReport -timeout 30m ./integration/ -args -report $(CURDIR)/bench/report.md
	@echo "report: bench/report.md"

.PHONY: bench-etcd
bench-etcd: ## Roster's locks beside etcd's concurrency.Mutex on this machine (a module of its own: etcd never becomes Roster's dependency)
	cd bench/etcd && $(GO) run . -n 2000

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each
	@for target in $$($(GO) test -list 'Fuzz.*' ./pkg/... ./services/... 2>/dev/null | grep '^Fuzz'); do \
		pkg=$$(grep -rl "func $$target(" --include='*_test.go' pkg services | head -1 | xargs dirname); \
		echo "== $$target ($$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

.PHONY: generate
generate: ## Regenerate generated files (schemas/errors.json)
	$(GO) test ./schemas -run TestErrorRegistryIsGenerated -update

.PHONY: check-generated
check-generated: ## Fail if generated files are stale
	$(GO) test ./schemas -run TestErrorRegistryIsGenerated

.PHONY: clean
clean: ## Remove build output and the default data directory
	rm -rf bin data
