# make setup  : create .venv (idempotent) and install videor1 with everything it needs
# make demo   : setup, then run the whole pipeline on the embedded synthetic default
# make test   : setup, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-quick test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: setup
	$(BIN)/videor1 demo --out runs/demo

demo-quick: setup
	$(BIN)/videor1 demo --quick --out runs/demo-quick

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python perf/media_decode.py

clean:
	rm -rf $(VENV) runs
