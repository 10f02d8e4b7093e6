"""SFT under DeepSpeed ZeRO-2 / ZeRO-3 and FSDP2, 2 processes on gloo, gradient accumulation 2, a micro-batch
whose samples are all skipped on one process, mixed images and videos in one micro-batch; LoRA under ZeRO-2;
`should_stop` (a model forward) under ZeRO-3.

Each run asserts the engine that ran (engine.yaml), the processes' agreement (rank-summed counts), moved
weights, a bit-identical resume from checkpoint-2 and a final/ that loads equal to the run's own checkpoint
of the optimizer's weights where DeepSpeed keeps one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engines_common import copy_media, engine_of, launch, metrics_of
from videor1.sft.data import DataPlan

SEED = 3
MB, ACC, WORLD, STEPS = 2, 2, 2, 3


def arrange(slots: dict[tuple[int, int, int], list[dict]], filler: list[dict]) -> list[dict]:
    """Rows whose seeded SFT order puts slots[(step, micro, rank)] there; other places get `filler` records."""
    n = MB * ACC * WORLD * STEPS
    order = DataPlan(n, SEED, MB, ACC, WORLD, 0).epoch_order(0)
    wanted: list[dict | None] = [None] * n
    for (k, i, r), recs in slots.items():
        for j, rec in enumerate(recs):
            wanted[k * MB * ACC * WORLD + (i * WORLD + r) * MB + j] = rec
    fill = iter(filler)
    rows: list[dict | None] = [None] * n
    for p, rec in enumerate(wanted):
        rows[order[p]] = rec if rec is not None else next(fill)
    return [dict(r, problem_id=f"{r['problem_id']}-{i}") for i, r in enumerate(rows)]


def _data(tmp: Path, synth_dir: Path) -> Path:
    rows = [json.loads(x) for x in (synth_dir / "cot.jsonl").read_text().splitlines()]
    images = [r for r in rows if r["data_type"] == "image"]
    videos = [r for r in rows if r["data_type"] == "video"]
    copy_media(rows, synth_dir, tmp)
    (tmp / "media" / "bad.mp4").write_bytes(b"garbage" * 50)
    bad = dict(videos[0], path="media/bad.mp4")
    slots = {(0, 0, 0): [images[0], videos[0]],   # two media kinds in one micro-batch on rank 0 ...
             (0, 0, 1): [videos[1], videos[2]],   # ... one on rank 1
             (0, 1, 1): [bad, bad],               # rank 1's second micro-batch: every sample skipped
             (1, 0, 0): [bad, bad],
             (1, 1, 0): [images[1], videos[3]]}
    data = tmp / "cot.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in arrange(slots, videos[4:] + images[2:])))
    return data


def _overrides(model: Path, data: Path, tmp: Path, out: Path, *extra: str) -> list[str]:
    return [f"model={model}", f"train_data={data}", f"media_root={tmp}", f"output_dir={out}",
            f"per_device_batch_size={MB}", f"gradient_accumulation_steps={ACC}", f"max_steps={STEPS}",
            "learning_rate=1e-3", "lr_scheduler=constant", "warmup_ratio=0", "save_steps=2", "report_to=[]",
            "progress=false", "video.min_frames=4", "video.max_frames=4", "video.min_pixels=3136",
            "video.max_pixels=3136", "image.min_pixels=3136", "image.max_pixels=3136", "num_threads=1",
            f"seed={SEED}", "max_skipped_fraction=0.5", "bf16=false", *extra]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


ENGINES = {"zero2": ("DeepSpeedZeroOptimizer", "tensor"), "zero3": ("DeepSpeedZeroOptimizer_Stage3", "zero3"),
           "fsdp2": ("AdamW", "dtensor")}


@pytest.mark.parametrize("config", ["zero2", "zero3", "fsdp2"])
def test_sft_accumulation_with_a_skipped_micro_batch_resumes(config, tiny_model_dir, synth_dir, tmp_path):
    data = _data(tmp_path, synth_dir)
    out = tmp_path / "run"
    proc = launch(config, "sft", _overrides(tiny_model_dir, data, tmp_path, out), tmp_path)
    engine = engine_of(out)
    assert f"engine {config} (2 process(es)" in proc.stdout
    assert engine["engine"] == config and engine["num_processes"] == 2
    assert (engine["optimizer"], engine["parameters"]) == ENGINES[config]
    metrics = metrics_of(out)
    assert [m["step"] for m in metrics] == [1, 2, 3] and all(m["engine"] == config for m in metrics)
    assert [m["samples_skipped"] for m in metrics] == [2, 2, 0]          # summed over both processes
    assert [m["samples"] for m in metrics] == [6, 6, 8]
    assert all(m["loss"] > 0 for m in metrics)
    before, after = _weights(tiny_model_dir), _weights(out / "final")
    assert set(after) == set(before)     # the published key names (a fresh model's save_pretrained)
    assert set(_weights(out / "checkpoint-2")) == set(before)
    assert any(not torch.equal(before[k], after[k]) for k in before)

    again = tmp_path / "again"
    again.mkdir()
    shutil.copytree(out / "checkpoint-2", again / "checkpoint-2")
    launch(config, "sft", _overrides(tiny_model_dir, data, tmp_path, again, "resume=true"), tmp_path)
    last, resumed_last = metrics_of(out)[-1], metrics_of(again)[-1]
    assert {k: v for k, v in resumed_last.items() if k != "step_time_s"} == \
        {k: v for k, v in last.items() if k != "step_time_s"}
    resumed = _weights(again / "final")
    assert all(torch.equal(after[k], resumed[k]) for k in after)

    if config.startswith("zero"):   # checkpoint-2's model files equal DeepSpeed's fp32 master weights
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        from videor1.model.load import load_model

        master = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoint-2" / "accelerator_state"))
        loaded = load_model(out / "checkpoint-2", device="cpu", dtype=torch.float32).state_dict()
        for name, value in master.items():
            assert torch.equal(loaded[name], value), name


def test_lora_sft_under_zero2(tiny_model_dir, synth_dir, tmp_path):
    data = _data(tmp_path, synth_dir)
    out = tmp_path / "run"
    launch("zero2", "sft", _overrides(tiny_model_dir, data, tmp_path, out, "lora=true", "lora_rank=4",
                                      "lora_alpha=8", "learning_rate=1e-2"), tmp_path)
    assert engine_of(out)["optimizer"] == "DeepSpeedZeroOptimizer"
    assert [m["step"] for m in metrics_of(out)] == [1, 2, 3]
    before, after = _weights(tiny_model_dir), _weights(out / "final")   # merged: a plain HF directory
    assert set(after) == set(before)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all("visual" not in k for k in moved)


def test_demo_stop_check_evaluates_on_one_process_under_zero3(tiny_model_dir, synth_dir, tmp_path):
    """The demo's cold-start check (`videor1.tools.demo.cold_start_check`: greedy generation over a validation
    set) runs its evaluation on the main process only, inside the trainer's parameter gather (its forwards
    local, not ZeRO-3 collectives), and the main process's answer stops both processes after step 2."""
    data = _data(tmp_path, synth_dir)
    val = tmp_path / "val.jsonl"
    val.write_text("".join(line + "\n" for line in (synth_dir / "test.jsonl").read_text().splitlines()[:4]))
    copy_media([json.loads(x) for x in val.read_text().splitlines()], synth_dir, tmp_path)
    out = tmp_path / "run"
    proc = launch("zero3", "sft-demo-stop", [str(val), *_overrides(tiny_model_dir, data, tmp_path, out)], tmp_path)
    assert [m["step"] for m in metrics_of(out)] == [1, 2]     # stopped after step 2
    # both processes print to one pipe: their lines may interleave, so match the records, not whole lines
    checks = sorted(re.findall(r"STOP-CHECK rank=(\d) step=(\d) answer=(True|False)", proc.stdout))
    assert checks == [("0", "1", "False"), ("0", "2", "True"), ("1", "1", "False"), ("1", "2", "False")]
    logged = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [2]             # one evaluation, by one process
    assert (out / "final" / "model.safetensors").is_file()
