# gpuwarden — two commands on a fresh Debian/Ubuntu machine:
#   make demo   set everything up and run the main job (PORT=8080 by default)
#   make test   set everything up and run the whole test suite
# `make bench` runs the benchmarks, `make test-pods` the pod bootstrap on a fresh Debian
# (root; .ci/run runs it after `make test`); neither is part of `make test`.

PYTHON ?= python3
PORT   ?= 8080
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

WEB_DIST := src/gpuwarden/web/dist/index.html
WEB_DEPS := web/node_modules/.installed
WEB_SOURCES := $(shell find web/src web/scripts -type f 2>/dev/null) web/index.html \
               web/vite.config.ts web/tsconfig.json web/openapi.json web/package.json

.PHONY: demo test test-pods lint web web-test bench system-deps clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "gpuwarden needs Python >= 3.11"'
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed: install it with: $(SUDO) apt-get install -y python3-venv"; exit 1; }
	@echo "installing gpuwarden and its test dependencies into $(VENV) (a minute or two the first time)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# What the tests and the demo run for real: Slurm + munge (Debian's slurm-wlm), slurmdbd on
# MariaDB (Slurm accounting: sacct), Prometheus (promtool), VictoriaMetrics and vmalert (the
# victoriametrics export and store) and Chromium (the UI's end-to-end tests); systemd-analyze checks deploy/systemd. The local cluster starts its own private
# mariadbd and slurmdbd, so the system services these packages enable are stopped again.
system-deps:
	@missing=""; \
	command -v slurmctld >/dev/null || missing="$$missing slurm-wlm"; \
	command -v munged >/dev/null || missing="$$missing munge"; \
	command -v slurmdbd >/dev/null || missing="$$missing slurmdbd"; \
	command -v mariadbd >/dev/null || missing="$$missing mariadb-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v victoria-metrics >/dev/null || missing="$$missing victoria-metrics"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; then \
	    echo "installing$$missing (apt)"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	    case "$$missing" in *mariadb-server*) \
	      $(SUDO) systemctl disable --now mariadb >/dev/null 2>&1 || true;; esac; \
	    case "$$missing" in *slurmdbd*) \
	      $(SUDO) systemctl disable --now slurmdbd >/dev/null 2>&1 || true;; esac; \
	    case "$$missing" in *victoria-metrics*) \
	      $(SUDO) systemctl disable --now victoria-metrics >/dev/null 2>&1 || true;; esac; \
	  else \
	    echo "missing$$missing and this user cannot apt-get: those tests will be skipped."; \
	  fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

# The web UI (React + TypeScript + Vite), built into the Python package.
$(WEB_DEPS): web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: apt-get install -y nodejs npm"; exit 1; }
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(WEB_DIST): $(WEB_DEPS) $(WEB_SOURCES)
	cd web && npm run build
	@touch $@

web: $(WEB_DIST)

web-test: $(WEB_DEPS)
	cd web && npm test

# two workers, each test file whole on one of them (its module fixtures, its order)
test: $(STAMP) system-deps lint web web-test
	$(VENV)/bin/pytest -n 2 --dist loadfile

# The pod bootstrap on a fresh Debian (tests/pods): debootstrap'd pods in namespaces, root
# only; the base root filesystem is cached in /var/cache/gpuwarden-test-pods.
test-pods: $(STAMP) system-deps web
	@command -v debootstrap >/dev/null || { \
	  echo "installing debootstrap (apt)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq debootstrap >/dev/null; }
	GPUWARDEN_TEST_PODS=1 $(VENV)/bin/pytest -p no:cacheprovider tests/pods

demo: $(STAMP) system-deps web
	$(VENV)/bin/gpuwarden demo --port $(PORT)

bench: $(STAMP) system-deps web
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
