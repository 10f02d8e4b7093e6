"""SFT under sequence parallelism with what the SP step tests leave out: LoRA adapters (peft inside DeepSpeed) and
a resume. 2 processes, ZeRO-2 (LoRA is refused under ZeRO-3), SP 2, LoRA (dropout 0): the same losses and
gradient norms as one process without SP (relative 1e-4); resumed from checkpoint-2, step 3 is bit-identical to
the uninterrupted run's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engines_common import engine_of, launch, metrics_of
from test_engines_sp import sft_overrides

LORA = ["lora=true", "lora_dropout=0", "lora_rank=4"]


def _sft(config: str, processes: int, sp: int, model: Path, tmp: Path, out: Path, *extra: str) -> list[dict]:
    launch(config, "sft", [*sft_overrides(model, tmp, out, sp, steps=3, save_steps=1), *LORA, *extra], tmp,
           num_processes=processes)
    return metrics_of(out)


def test_sp_lora_sft_equals_one_process_and_resumes(sp_data, tiny_model_dir):
    tmp, _ = sp_data
    one = _sft("multi_gpu", 1, 1, tiny_model_dir, tmp, tmp / "lora-1")
    full = _sft("zero2", 2, 2, tiny_model_dir, tmp, tmp / "lora-sp")
    assert engine_of(tmp / "lora-sp")["sequence_parallel_size"] == 2 and len(one) == len(full) == 3
    for a, b in zip(one, full):
        for key in ("loss", "grad_norm", "target_tokens"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (key, a[key], b[key])
    cut = tmp / "lora-sp-resumed"
    cut.mkdir()
    shutil.copytree(tmp / "lora-sp" / "checkpoint-2", cut / "checkpoint-2")
    resumed = _sft("zero2", 2, 2, tiny_model_dir, tmp, cut, "resume=true")
    assert [m["step"] for m in resumed] == [3]
    assert (resumed[0]["loss"], resumed[0]["grad_norm"]) == (full[2]["loss"], full[2]["grad_norm"])
