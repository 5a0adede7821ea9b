# packfleet — two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project's metadata changes.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

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

bench: $(STAMP)
	$(BIN)/python -m packfleet.bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
