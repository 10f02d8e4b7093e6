"""T-GRPO under DeepSpeed ZeRO-2 / ZeRO-3, 2 processes on gloo, mixed images and videos on each process.

Each run asserts the engine that really ran (engine.yaml: distributed type and optimizer class, so a fallback
to DDP fails), that the processes agree (one metrics log, rank-summed counts), that weights moved, that a resume
from checkpoint-2 continues bit-identically (ZeRO-3; the loss in micro-batches of one group), and that final/
loads with from_pretrained equal to the optimizer's own fp32 weights (DeepSpeed's checkpoint, via zero_to_fp32).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engines_common import copy_media, engine_of, launch, metrics_of
from videor1.rl.step import prompt_indices

SEED = 5
PPS = 2          # prompts per process and step
STEPS = 3


def arrange(per_step: list[tuple[list[dict], list[dict]]], seed: int) -> list[dict]:
    """Rows of a records file whose seeded order gives, at step s, rank 0 the records per_step[s][0] and rank 1
    per_step[s][1] (all steps inside the first epoch)."""
    wanted = [r for r0, r1 in per_step for r in (*r0, *r1)]
    order = prompt_indices(len(wanted), seed, 0, len(wanted))
    rows: list[dict | None] = [None] * len(wanted)
    for slot, record in zip(order, wanted):
        rows[slot] = record
    return [dict(r, problem_id=f"{r['problem_id']}-{i}") for i, r in enumerate(rows)]


def _kinds(synth_dir: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(x) for x in (synth_dir / "rl.jsonl").read_text().splitlines()]
    videos = [r for r in rows if r["data_type"] == "video"]
    images = [r for r in rows if r["data_type"] == "image"]
    return images, videos


def _data(tmp: Path, synth_dir: Path, *, with_bad: bool) -> Path:
    images, videos = _kinds(synth_dir)
    copy_media(images + videos, synth_dir, tmp)
    (tmp / "media" / "bad.mp4").write_bytes(b"garbage" * 50)
    bad = dict(videos[0], problem_id="bad", path="media/bad.mp4")
    i, v = images, videos
    steps = [([i[0], v[0]], [v[1], v[2]]),                        # rank 0 two media kinds, rank 1 one
             ([v[3], i[1]], [bad, bad] if with_bad else [v[4], v[5]]),   # ZeRO-3: rank 1 without a prompt
             ([v[6], v[7]], [i[2], v[8]])]
    data = tmp / "rl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in arrange(steps, SEED)))
    return data


def _overrides(model: Path, data: Path, tmp: Path, out: Path) -> list[str]:
    return [f"model={model}", f"train_data={data}", f"media_root={tmp}", f"output_dir={out}",
            "algorithm=tgrpo", "num_generations=2", "num_shuffled_generations=1", f"prompts_per_step={PPS}",
            f"max_steps={STEPS}", "max_completion_length=6", "beta=0.04", "learning_rate=1e-2",
            "lr_scheduler=constant", "top_p=1.0", "rewards=[engine_test_variety]", "save_steps=2",
            "report_to=[]", "progress=false", "video.min_frames=4", "video.max_frames=4",
            "video.min_pixels=3136", "video.max_pixels=3136", "image.min_pixels=3136", "image.max_pixels=3136",
            "num_threads=1", f"seed={SEED}", "max_skipped_fraction=0.5",
            # one group per loss pass: 2 passes per process; a process without a prompt runs its dummy and a
            # zero-weighted filler (ZeRO-3 needs the same forwards and backwards on every process)
            "loss_micro_batch_size=2"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_rl_mixed_media_resume(stage, tiny_model_dir, synth_dir, tmp_path):
    data = _data(tmp_path, synth_dir, with_bad=stage == 3)
    out = tmp_path / "run"
    proc = launch(f"zero{stage}", "rl", _overrides(tiny_model_dir, data, tmp_path, out), tmp_path)
    assert f"engine zero{stage} (2 process(es), DEEPSPEED" in proc.stdout
    engine = engine_of(out)
    assert engine["engine"] == f"zero{stage}" and engine["num_processes"] == 2
    assert engine["optimizer"] == ("DeepSpeedZeroOptimizer_Stage3" if stage == 3 else "DeepSpeedZeroOptimizer")
    assert engine["parameters"] == ("zero3" if stage == 3 else "tensor")
    metrics = metrics_of(out)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["engine"] == f"zero{stage}" and m["num_processes"] == 2 for m in metrics)
    assert [m["prompts"] for m in metrics] == ([4, 2, 4] if stage == 3 else [4, 4, 4])   # rank-summed
    assert all(np.isfinite(m["loss"]) for m in metrics)
    assert (out / "checkpoint-2" / "accelerator_state").is_dir()
    assert "optimizer" not in torch.load(out / "checkpoint-2" / "trainer_state.pt", weights_only=True)

    before, after = _weights(tiny_model_dir), _weights(out / "final")
    assert set(after) == set(before)     # the published key names (a fresh model's save_pretrained), ZeRO-3 too
    assert any(not torch.equal(before[k], after[k]) for k in before)

    if stage == 3:   # resume from checkpoint-2 in a fresh directory: step 3 and the final weights bit-identical
        again = tmp_path / "again"   # (ZeRO-2's resume runs in the SFT engine test; one launch less here)
        again.mkdir()
        shutil.copytree(out / "checkpoint-2", again / "checkpoint-2")
        launch(f"zero{stage}", "rl", _overrides(tiny_model_dir, data, tmp_path, again) + ["resume=true"], tmp_path)
        assert metrics_of(again)[-1] == metrics_of(out)[-1] | {"step_time": metrics_of(again)[-1]["step_time"]}
        resumed = _weights(again / "final")
        assert all(torch.equal(after[k], resumed[k]) for k in after)

    # final/ through from_pretrained equals the optimizer's fp32 weights (checkpoint-2 + one more step is not
    # on disk, so compare checkpoint-2's model files with its DeepSpeed state)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from videor1.model.load import load_model

    ckpt = out / "checkpoint-2"
    master = get_fp32_state_dict_from_zero_checkpoint(str(ckpt / "accelerator_state"))
    loaded = load_model(ckpt, device="cpu", dtype=torch.float32).state_dict()
    for name, value in master.items():
        assert torch.equal(loaded[name], value), name


def test_fsdp2_rl_hf_rollouts_mixed_media_and_a_process_without_a_prompt(tiny_model_dir, synth_dir, tmp_path):
    """T-GRPO under FSDP2 with HF rollouts: mixed media across the processes (step 1: rank 0 an image and a
    video, rank 1 two videos) and, at step 2, a process whose prompts are both unusable (a dummy batch while the
    other generates and trains); the parameters are DTensors, weights move, final/ has the published names."""
    data = _data(tmp_path, synth_dir, with_bad=True)
    out = tmp_path / "run"
    proc = launch("fsdp2", "rl", _overrides(tiny_model_dir, data, tmp_path, out) + ["save_steps=0"], tmp_path)
    assert "engine fsdp2 (2 process(es), FSDP" in proc.stdout
    engine = engine_of(out)
    assert (engine["engine"], engine["num_processes"], engine["parameters"]) == ("fsdp2", 2, "dtensor")
    metrics = metrics_of(out)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [m["prompts"] for m in metrics] == [4, 2, 4]          # rank 1 had no usable prompt at step 2
    assert all(np.isfinite(m["loss"]) and m["engine"] == "fsdp2" for m in metrics)
    before, after = _weights(tiny_model_dir), _weights(out / "final")
    assert set(after) == set(before)
    assert any(not torch.equal(before[k], after[k]) for k in before)
