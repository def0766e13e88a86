# attnrec: the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.lock | cut -c1-12)

.PHONY: demo demo-loop test lint venv check-java clean-demo

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first, by exact pin, so no resolver step can reach for a multi-GB CUDA build on CPU machines
	$(BIN)/python -m pip install --quiet "$$(grep -E '^torch==' requirements.lock)"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-* && touch $@

check-java:
	@command -v java >/dev/null || { echo "error: Java 17 is required by Spark and 'java' is not on PATH; install it (Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless) and re-run"; exit 1; }

demo: venv check-java
	@bash scripts/demo.sh

# The loop on synthetic users: two models in a thompson A/B test, the users' answers simulated, KPIs, promotion.
# Works in a fresh .loop/ (removed first); prints the daily table, saves .loop/loop.png (README "Experiments: the loop").
demo-loop: venv check-java
	@bash scripts/demo_loop.sh

# The architecture and the style, checked before any test runs: the import-linter contracts of pyproject.toml
# (layers: CLI and DAGs -> stages -> gates -> core), then ruff's lint rules and its formatter. PYTHONPATH: the
# contracts are checked on this checkout's code, whatever checkout the venv's editable install points at.
lint: venv
	PYTHONPATH="$(CURDIR)" $(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the venv's bin first on PATH: spark-submit finds its SPARK_HOME through the venv's python
test: venv check-java lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

clean-demo:
	rm -rf data .airflow .mlflow .loop
