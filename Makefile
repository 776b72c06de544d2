# One entry point for every check; CI runs `make check` exactly as developers do.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps bytecode lint test smoke check demo bench docs clean
PACKAGES := exporter correlator hub pages simulator
PYTEST_WORKERS ?= 3
# pytest-xdist workers: 3 on CI's 2 cores, as a third of a worker's time is waits (daemons starting, Prometheus
# evaluating simulated time), which the third fills (on 2 cores: 11m42s against 14m11s with 2; a fourth did not
# help: 577.5 s against 562.2 s with 3, bench/README.md forty-seventh round). A file, or the
# tests sharing one stack, run whole on one worker (tests/conftest.py run_group). PYTEST_WORKERS=0 runs the suite
# in one process.

# Debian's python3 makes a venv only with python3-venv (ensurepip), which a base install lacks.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "installing Debian package python3-venv (for $(PYTHON) -m venv)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends python3-venv >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# An editable install runs the checkout's sources; where PYTHONDONTWRITEBYTECODE=1 (CI images, containers)
# every process would compile them again (~60 ms per `watchtower` start). Compiled here, as pip does for
# an installed package; a source edited later is compiled in memory until the next run of this step.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q $(PACKAGES) >/dev/null

# promtool/amtool and the real servers come from Debian's packages (tests start them on loopback); curl runs
# docs/api.md's documented command against a real listener;
# docker-compose checks docker/docker-compose.yml (`config`, no Docker daemon needed). Installing the packages
# enables their services on 0.0.0.0 without auth: the ones installed here are disabled again (an existing
# Prometheus or Alertmanager of the machine is left as it was).
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null || ! command -v chromedriver >/dev/null \
	    || ! command -v docker-compose >/dev/null || ! command -v curl >/dev/null; then \
	  echo "installing Debian packages prometheus prometheus-alertmanager chromium chromium-driver docker-compose curl"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  fresh=""; for unit in prometheus prometheus-alertmanager; do \
	    dpkg -s $$unit >/dev/null 2>&1 || fresh="$$fresh $$unit"; done; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends prometheus prometheus-alertmanager chromium chromium-driver docker-compose curl \
	    >/dev/null; \
	  if [ -n "$$fresh" ] && [ -d /run/systemd/system ]; then \
	    echo "disabling the services just installed:$$fresh (tests start their own on loopback)"; \
	    $$SUDO systemctl disable --now $$fresh >/dev/null 2>&1 || true; \
	  fi; \
	fi

setup: $(STAMP) bytecode system-deps

lint: $(STAMP)
	$(BIN)/ruff check .

test: setup
	$(BIN)/pytest -q -n $(PYTEST_WORKERS)

smoke: $(STAMP) bytecode
	$(BIN)/pytest -q -m "not integration"

check: setup lint
	promtool check rules rules/recording.yaml rules/alerts/*.yaml
	amtool check-config alertmanager/alertmanager.yml
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --durations=15

DEMO_ARGS ?=
demo: $(STAMP) bytecode
	$(BIN)/watchtower demo $(DEMO_ARGS)

bench: $(STAMP) bytecode
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_correlator.py --events 1000000

# docs/metrics.md and docs/config.md are generated from the metric table and the Config model.
docs: $(STAMP)
	$(BIN)/python -m exporter.docgen

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
