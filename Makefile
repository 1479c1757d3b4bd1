# The front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO          ?= go
VERSION     ?= v0.1.0
PLUGIN      := vault-plugin-database-postgres
LDFLAGS     := -X github.com/pgvault/vault-plugin-database-postgres.Version=$(VERSION)

# Vault for the end-to-end tests and the demo: VAULT_BIN, else a vault on
# PATH, else Vault $(VAULT_VERSION) built once from the Go module proxy into
# .cache/vault (about 14 minutes cold).
VAULT_VERSION := 1.21.0
VAULT_CACHED  := $(CURDIR)/.cache/vault/vault-$(VAULT_VERSION)
VAULT_BIN     ?= $(or $(shell command -v vault 2>/dev/null),$(VAULT_CACHED))
export VAULT_BIN

TEST_TIMEOUT ?= 60m

# The PostgreSQL majors `make test-matrix` runs the package tests on, and
# those it also runs the end-to-end tests on (empty: none). Their server
# binaries come from npm (scripts/pgdist) into .cache/pg, once.
PG_MAJORS  ?= 14 15 16 17 18
MATRIX_E2E ?= 17

.PHONY: help build test test-matrix test-short bench fuzz demo dev fmt lint vault clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

build: ## Build the plugin into bin/ (version $(VERSION))
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/$(PLUGIN) ./cmd/$(PLUGIN)
	@echo "bin/$(PLUGIN) $$(./bin/$(PLUGIN) -version) sha256 $$(sha256sum bin/$(PLUGIN) | cut -d' ' -f1)"

vault: $(VAULT_BIN) ## Build Vault $(VAULT_VERSION) for tests and the demo (once)

$(VAULT_CACHED):
	@echo "building Vault $(VAULT_VERSION) from the Go module proxy into .cache/vault (once; about 14 minutes cold)"
	@mkdir -p $(dir $@)
	cd tools/vault && $(GO) build -trimpath -ldflags "-s -w" -o $@.tmp github.com/hashicorp/vault
	mv $@.tmp $@

# A short fuzz run of statement rendering is part of `make test`.
TEST_FUZZTIME ?= 20s

test: vault ## Run every test (unit, PostgreSQL, end-to-end through Vault) with -race, and a short fuzz
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(GO) test -run '^$$' -fuzz FuzzRenderedValuesStayInTheirQuotes -fuzztime $(TEST_FUZZTIME) -parallel 2 .

test-matrix: $(if $(strip $(MATRIX_E2E)),vault) ## Package tests on PostgreSQL $(PG_MAJORS), end-to-end on $(MATRIX_E2E)
	GO=$(GO) MATRIX_E2E="$(MATRIX_E2E)" scripts/test-matrix $(PG_MAJORS)

test-short: ## Run only the tests that need neither PostgreSQL nor Vault
	$(GO) test -race -short -count=1 ./...

# BENCH_SCALE multiplies the request counts (default 1: a few minutes on 2 cores).
bench: vault ## Benchmarks against the built-in plugin and raw SQL; writes BENCHMARKS.md and benchmarks.svg
	$(GO) run ./internal/bench

FUZZTIME ?= 60s
fuzz: ## Fuzz statement escaping against a real PostgreSQL for FUZZTIME (default 60s)
	$(GO) test -run '^$$' -fuzz FuzzRenderedValuesStayInTheirQuotes -fuzztime $(FUZZTIME) -parallel 1 .

demo: vault ## The whole job on a fresh machine: Vault + PostgreSQL, issue, use, renew, revoke, rotate
	$(GO) run ./internal/demo -version $(VERSION)

dev: vault ## A sandbox (Vault + PostgreSQL + plugin) that stays up until Ctrl-C
	$(GO) run ./internal/demo -dev -version $(VERSION)

fmt: ## Format the code
	gofmt -w $$(git ls-files '*.go')

lint: ## gofmt check, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run make fmt"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

clean: ## Remove build output (keeps the cached Vault)
	rm -rf bin/
