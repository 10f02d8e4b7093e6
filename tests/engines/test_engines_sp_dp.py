"""Sequence parallelism beside data parallelism: 4 processes, ZeRO-2, SP 2 (two SP groups, each one
data-parallel rank with its own prompts) against 2 processes without SP (the same two data-parallel ranks):
a 2-step T-GRPO run then a 2-step SFT run (each data-parallel rank a video + image micro-batch) log the same
rewards, losses, gradient norms and token counts."""

from __future__ import annotations

import json

import pytest

from engines_common import copy_media, engine_of
from test_engines_sp import _runs


def test_sp2_dp2_equals_dp2(sp_data, tiny_model_dir, synth_dir):
    tmp, data = sp_data
    rows = [json.loads(x) for x in (synth_dir / "cot.jsonl").read_text().splitlines()]
    videos = [r for r in rows if r["data_type"] == "video"][:2]
    images = [r for r in rows if r["data_type"] == "image"][:2]
    cot = [videos[0], images[0], videos[1], images[1]]
    copy_media(cot, synth_dir, tmp)
    (tmp / "cot4.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cot))
    rl_dp, sft_dp = _runs("multi_gpu", 2, 1, tiny_model_dir, data, tmp, cot="cot4.jsonl")
    rl_sp, sft_sp = _runs("zero2", 4, 2, tiny_model_dir, data, tmp, cot="cot4.jsonl")
    assert len(rl_dp) == len(rl_sp) == len(sft_dp) == len(sft_sp) == 2
    for run in ("rl", "sft"):   # engine.yaml states the world and the SP size; the metrics the data-parallel ranks
        assert {k: engine_of(tmp / f"{run}-zero2-4")[k] for k in ("num_processes", "sequence_parallel_size")} == \
            {"num_processes": 4, "sequence_parallel_size": 2}
        assert engine_of(tmp / f"{run}-multi_gpu-2")["sequence_parallel_size"] == 1
    for a, b in zip(rl_dp, rl_sp):
        assert a["num_processes"] == b["num_processes"] == 2   # data-parallel ranks
        for key in ("reward", "loss", "kl", "grad_norm", "completion_length", "prompts"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), ("rl", key, a[key], b[key])
    for a, b in zip(sft_dp, sft_sp):
        for key in ("loss", "grad_norm", "target_tokens", "tokens", "samples"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), ("sft", key, a[key], b[key])
