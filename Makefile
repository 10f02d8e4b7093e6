# make setup     : create .venv (idempotent) and install videor1 with everything it needs
# make demo      : setup, then run the whole pipeline on the embedded synthetic default
# make test      : setup, then run the whole test suite (what CI runs, via .ci/run; a few minutes)
# make test-fast : setup, then the suite without the end-to-end tests marked `slow` (under ~90 s on 2 cores)
# make check-resolve : pip dry runs: do `.[vllm]` and `.[deepspeed]` resolve? (metadata only, ~3 min, needs PyPI)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-quick test test-fast bench check-resolve clean

setup: $(STAMP)

# pyproject.toml declares compatible ranges; constraints.txt pins the exact tested set.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(STAMP)

demo: setup
	$(BIN)/videor1 demo --out runs/demo

demo-quick: setup
	$(BIN)/videor1 demo --quick --out runs/demo-quick

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

check-resolve: setup
	PIP="$(BIN)/python -m pip" scripts/check_resolve.sh

bench: setup
	$(BIN)/python perf/media_decode.py

clean:
	rm -rf $(VENV) runs
