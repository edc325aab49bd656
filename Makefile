# The two commands anyone needs: `make run` and `make test` (plus `make token`, `make lint`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_DIR := .dev
DEV_ISSUER := https://dev.local/
DEV_AUDIENCE := https://api.dev.local
SCOPE ?=
PERMISSIONS ?=
TTL ?= 3600
BOUND ?=
METHOD ?= GET
NONCE ?=

.PHONY: help install run token proof test test-unit lint loadtest loadtest-matrix clean
.DEFAULT_GOAL := help

help:
	@echo "make run        serve on a development key on :8000 (PORT=8080 make run for another port)"
	@echo "make token      print a token for that key: SCOPE=\"a b\", PERMISSIONS=\"a b\" (Auth0's RBAC array),"
	@echo "                TTL=seconds (default 3600), BOUND=1 (DPoP-bound to .dev/dpop.pem)"
	@echo "make proof      print a DPoP proof for one request: URL=... TOKEN=... [METHOD=GET] [NONCE=...]"
	@echo "                (the URL exactly as the request is sent: localhost is not 127.0.0.1)"
	@echo "make test       build .venv and run the whole suite"
	@echo "make test-unit  only the unit tests: no server or other program started (tests/integration left out)"
	@echo "make lint       ruff check and format check; lint-imports: the import layers of docs/architecture.md"
	@echo "make loadtest   the benchmark: DURATION, CONNECTIONS, WORKERS, THREADS, ROUNDS,"
	@echo "                HS_TOKENS, RS_TOKENS, ES_TOKENS, MEMORY_TOKENS"
	@echo "make loadtest-matrix  workers x threads by server CPU per request"
	@echo "make image      the container image: IMAGE, IMAGE_BASE, IMAGE_VERSION, IMAGE_SOURCE, IMAGE_BUILD_FLAGS"
	@echo "make install    only build .venv;  make clean  remove .venv, .dev and caches"

# Bootstrap output goes to stderr so `$(make -s token)` captures only the token.
$(BIN)/.installed: requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt >&2
	@touch $@

install: $(BIN)/.installed

# The load test's peers (loadtest/peers): auth0-api-python in .venv, express-oauth2-jwt-bearer from its npm lock file.
# `make loadtest` drives them, and so does `make test` (tests/integration/test_loadtest.py runs the load test for a
# second); each is reinstalled only when its requirements or lock file is newer than its stamp.
EXPRESS_PEER := loadtest/peers/express
PEERS := $(BIN)/.installed-loadtest $(EXPRESS_PEER)/node_modules/.installed

$(BIN)/.installed-loadtest: requirements-loadtest.txt $(BIN)/.installed
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-loadtest.txt >&2
	@touch $@

$(EXPRESS_PEER)/node_modules/.installed: $(EXPRESS_PEER)/package-lock.json
	@command -v npm >/dev/null || { echo "make: the load test's express peer needs Node.js 20 and npm: apt-get install nodejs npm" >&2; exit 1; }
	@npm ci --prefix $(EXPRESS_PEER) --no-audit --no-fund --loglevel=error >&2
	@touch $@

$(DEV_DIR)/jwks.json: | $(BIN)/.installed
	@$(BIN)/python -m service.devtoken init $(DEV_DIR)

run: install $(DEV_DIR)/jwks.json
	@echo "Serving on a development key ($(DEV_DIR)/jwks.json, issuer $(DEV_ISSUER), audience $(DEV_AUDIENCE)): not for production." >&2
	LOG_FORMAT=text JWT_JWKS_FILE=$(DEV_DIR)/jwks.json JWT_ISSUER=$(DEV_ISSUER) JWT_AUDIENCE=$(DEV_AUDIENCE) \
		$(BIN)/gunicorn -c gunicorn.conf.py service.app:app

# BOUND=1: a DPoP-bound token; `make -s proof URL=... TOKEN=...` then prints a proof for one request with it.
token: install $(DEV_DIR)/jwks.json
	@$(BIN)/python -m service.devtoken mint $(DEV_DIR) --issuer $(DEV_ISSUER) --audience $(DEV_AUDIENCE) --scope "$(SCOPE)" \
		--permissions "$(PERMISSIONS)" --ttl "$(TTL)" $(if $(BOUND),--bound)

proof: install $(DEV_DIR)/jwks.json
	@test -n "$(URL)" -a -n "$(TOKEN)" || { echo "usage: make -s proof URL=http://localhost:8000/secured/ping TOKEN=..." >&2; exit 2; }
	@$(BIN)/python -m service.devtoken proof $(DEV_DIR) --url "$(URL)" --token "$(TOKEN)" --method "$(METHOD)" \
		--nonce "$(NONCE)"

test: install $(PEERS)
	$(BIN)/python -m pytest

# Everything but tests/integration (the `integration` marker): in-process tests only, for a quick loop, spread
# over every core by pytest-xdist (the hypothesis-driven attack tests take most of the time).
test-unit: install
	$(BIN)/python -m pytest -m "not integration" -n auto

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# A benchmark, not a test: DURATION, CONNECTIONS, WORKERS, THREADS, ROUNDS (and HS_TOKENS,
# RS_TOKENS, ES_TOKENS, MEMORY_TOKENS) tune it; SCENARIOS=dpop runs only the DPoP rounds (cold ES256 bearer, then
# DPoP on the host-local replay store, then on Redis, in each round). Each main round also drives the two peers.
loadtest: install $(PEERS)
	$(BIN)/python -m loadtest.run

# Workers x threads (2x8, 2x4, 4x2, 4x4) by server CPU per request, p99 and memory per worker; the service and the
# ceiling only, so no peer is installed for it.
loadtest-matrix: install
	$(BIN)/python -m loadtest.matrix

# The container image (Dockerfile) with podman, or docker when there is no podman; see docs/operations.md, "Container image".
# IMAGE names it; IMAGE_BASE, IMAGE_VERSION and IMAGE_SOURCE become build arguments; IMAGE_BUILD_FLAGS go to the build.
CONTAINER_ENGINE ?= $(shell command -v podman || command -v docker)
IMAGE ?= jwt-api
IMAGE_BASE ?=
IMAGE_VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE_SOURCE ?= $(shell git remote get-url origin 2>/dev/null | grep '^https://')
IMAGE_BUILD_FLAGS ?=

.PHONY: image
image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image: neither podman nor docker is installed" >&2; exit 1; }
	$(CONTAINER_ENGINE) build $(IMAGE_BUILD_FLAGS) $(if $(IMAGE_BASE),--build-arg BASE=$(IMAGE_BASE)) \
		--build-arg VERSION=$(IMAGE_VERSION) --build-arg SOURCE=$(IMAGE_SOURCE) --tag $(IMAGE) .

clean:
	rm -rf $(VENV) $(DEV_DIR) .pytest_cache .ruff_cache $(EXPRESS_PEER)/node_modules
