# packfleet — two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench bench-peers fuzz soak lock clean

# Every install comes from the lock: the same versions, checked by hash, on every machine and every day.
# `make lock` refreshes it after a change to pyproject.toml (tests/test_lock.py fails until then).
LOCK := requirements.lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project's metadata or the lock changes.
$(STAMP): $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml --extra test --extra postgresql --extra bench --generate-hashes --quiet \
	    --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	    --custom-compile-command "make lock" -o $(LOCK)

demo: $(STAMP)
	$(BIN)/python -m packfleet.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy tests

# Coverage counts the subprocesses too (masters, workers, fork servers, package processes: see
# [tool.coverage.run] in pyproject.toml); pytest-cov combines their data files. The floor sits a few
# points below the measured total, so a change that drops tested code fails the run.
pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadscope --cov --cov-report=term:skip-covered --cov-fail-under=80

test: lint typecheck pytest

# The API fuzz run with a large budget (make test runs it with PACKFLEET_FUZZ_EXAMPLES=10).
fuzz: $(STAMP)
	PACKFLEET_FUZZ_EXAMPLES=200 $(BIN)/pytest -p no:xdist tests/security/test_fuzz.py

bench: $(STAMP)
	$(BIN)/python -m packfleet.bench

# packfleet side by side with Celery + Redis and Dask distributed (their packages are the `bench` extra,
# installed from the lock like everything else; redis-server comes from the system's packages).
bench-peers: $(STAMP)
	$(BIN)/python -m packfleet.bench --scenario peers

# A seeded random mix of every fault (docs/guarantees.md), then the ledger; SOAK_SECONDS shortens it.
SOAK_SECONDS ?= 600
SOAK_SEED ?= 1
soak: $(STAMP)
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SEED=$(SOAK_SEED) $(BIN)/python tests/faults/soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
