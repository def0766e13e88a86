# attnrec: the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-bootstrap.lock requirements.lock | sha1sum | cut -c1-12)

.PHONY: demo demo-loop test test-loop lint venv check-java clean-demo spark-archive

venv: $(STAMP)

# The Spark driver's class archive (datatools/spark_archive.py): every job's JVM maps it and starts seconds sooner.
# Recorded on a small synthetic day (a minute or two); again when the lock changes (a new pyspark, a new classpath).
ARCHIVE := $(VENV)/share/attnrec/spark-classes.jsa
spark-archive: $(ARCHIVE)
$(ARCHIVE): $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/attnrec spark-archive --output $@

# Every file is hash-checked (scripts/lock.py writes the hashes). First pip itself and the CPU build of torch
# (torch==X+cpu: its local label keeps pip from choosing PyPI's multi-GB CUDA build), without dependencies; then the
# lock, whose torch==X the CPU build satisfies; then pip check: the lock is complete and consistent.
$(STAMP): requirements-bootstrap.lock requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-bootstrap.lock || { \
	  echo "error: could not install requirements-bootstrap.lock (pip, and torch's CPU build $$(grep -o '^torch==[^ ]*' requirements-bootstrap.lock)); where no local wheel provides it, run: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make $(MAKECMDGOALS)"; exit 1; }
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip check
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
test: venv check-java lint spark-archive
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# `make test` runs the closed loop (tests/test_loop.py) at a small size (one history day, two loop days); this runs the
# same test on the full-size loop of `make demo-loop` (LOOP_SIZE=full: three loop days, 15-25 min on 2 cores)
test-loop: venv check-java
	PATH="$(CURDIR)/$(BIN):$$PATH" LOOP_SIZE=full $(BIN)/python -m pytest tests/test_loop.py

clean-demo:
	rm -rf data .airflow .mlflow .loop
