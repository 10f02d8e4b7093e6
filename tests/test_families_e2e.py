"""SFT, RL (GRPO and T-GRPO), evaluation, inference, annotation and the demo on the Qwen3-VL and Qwen2-VL
tiny models, and SFT (full and LoRA), T-GRPO and evaluation on the Qwen3.5 dense and MoE ones (Qwen2.5-VL's
runs are the rest of the suite). Few steps, small media: each proves the path runs and the video reaches the
model, not that it learns. Qwen3.5's T-GRPO runs with `shared_prefix` where the family allows it
(`videor1.model.families.shares_prefix_exactly`: a hybrid family needs a tested route for its linear-attention layers)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from videor1.cli import app
from videor1.config import config_from_dict
from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.records import load_records
from videor1.evaluate.config import EvalConfig
from videor1.evaluate.runner import read_predictions, run_eval
from videor1.model.families import shares_prefix_exactly
from videor1.rewards import register
from videor1.rl.config import RLConfig
from videor1.rl.trainer import train as train_rl
from videor1.sft.config import SFTConfig
from videor1.sft.trainer import train_sft
from videor1.tools.annotate import annotate
from videor1.tools.demo import QUICK, run_demo
from videor1.train.metrics import read_metrics

pytestmark = pytest.mark.slow
OTHER_FAMILIES = ["qwen3_vl", "qwen2_vl"]
QWEN3_5 = ["qwen3_5", "qwen3_5_moe"]
SMALL = dict(video={"min_frames": 4, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136},
             image={"min_pixels": 3136, "max_pixels": 3136})


@register("families_test_variety", overwrite=True)
def variety_reward(completions, **columns):
    """Differs between random completions, so even an untrained model gets non-zero advantages."""
    return [len(set(c)) / (1.0 + len(c)) for c in completions]


def _visual(path: Path) -> dict:
    return {k: v for k, v in load_file(str(path / "model.safetensors")).items() if "visual" in k.split(".")}


def _records(synth_dir: Path, out: Path, name: str, pick, n: int) -> Path:
    rows = [json.loads(line) for line in (synth_dir / name).read_text().splitlines()]
    rows = [r for r in rows if pick(r)][:n]
    path = out / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("name", OTHER_FAMILIES + QWEN3_5)
def test_sft_trains_the_vision_tower(name, family_model_dirs, synth_dir, tmp_path):
    model = family_model_dirs[name]
    data = _records(synth_dir, tmp_path, "cot.jsonl", lambda r: True, 8)
    cfg = SFTConfig(model=str(model), train_data=str(data), media_root=str(synth_dir), output_dir=str(tmp_path / "sft"),
                    video=VideoSpec(max_frames=4, max_pixels=56 * 56), image=ImageSpec(max_pixels=56 * 56),
                    learning_rate=5e-3, lr_scheduler="constant", per_device_batch_size=2, max_steps=2,
                    report_to=(), save_steps=1000)
    final = train_sft(cfg)
    rows = read_metrics(tmp_path / "sft" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    before, after = _visual(model), _visual(final)
    assert sum(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before) >= len(before) // 2
    assert json.loads((final / "config.json").read_text())["model_type"] == name


def test_sft_lora_on_the_moe_model_adapts_and_merges_its_experts(family_model_dirs, synth_dir, tmp_path):
    """LoRA on Qwen3.5 MoE with dropout 0: the merged final weights moved in the routed experts' 3-D weights,
    the Gated DeltaNet and attention projections; the vision tower is untouched."""
    model = family_model_dirs["qwen3_5_moe"]
    data = _records(synth_dir, tmp_path, "cot.jsonl", lambda r: True, 4)
    cfg = SFTConfig(model=str(model), train_data=str(data), media_root=str(synth_dir), output_dir=str(tmp_path / "sft"),
                    video=VideoSpec(max_frames=4, max_pixels=56 * 56), image=ImageSpec(max_pixels=56 * 56),
                    learning_rate=5e-2, lr_scheduler="constant", per_device_batch_size=2, max_steps=1,
                    report_to=(), save_steps=1000, lora=True, lora_rank=4, lora_dropout=0.0)
    final = train_sft(cfg)
    before, after = load_file(str(model / "model.safetensors")), load_file(str(final / "model.safetensors"))
    assert set(before) == set(after)
    moved = {k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())}
    # saved as transformers writes the checkpoint layout: one gate / up / down projection per routed expert
    for part in (r"mlp\.experts\.\d+\.gate_proj", r"mlp\.experts\.\d+\.down_proj", r"linear_attn\.in_proj_qkv",
                 r"linear_attn\.in_proj_b", r"self_attn\.q_proj", r"shared_expert\.up_proj"):
        assert any(re.search(part, k) for k in moved), part
    assert not any("visual" in k.split(".") for k in moved)


@pytest.mark.parametrize("name,algorithm", [(n, a) for n in OTHER_FAMILIES for a in ("grpo", "tgrpo")]
                         + [(n, "tgrpo") for n in QWEN3_5])
def test_rl_step_trains_the_vision_tower(name, algorithm, family_model_dirs, synth_dir, tmp_path):
    model = family_model_dirs[name]
    data = _records(synth_dir, tmp_path, "rl.jsonl", lambda r: r["problem_type"] == "multiple choice", 6)
    cfg = config_from_dict(RLConfig, dict(
        model=str(model), train_data=str(data), media_root=str(synth_dir), output_dir=str(tmp_path / "rl"),
        algorithm=algorithm, num_generations=2, num_shuffled_generations=1, prompts_per_step=2,
        max_completion_length=6, beta=0.04, learning_rate=1e-2, lr_scheduler="constant", top_p=1.0,
        rewards=["families_test_variety", "accuracy"], save_steps=0, report_to=(), progress=False,
        max_steps=1, seed=1, num_threads=1, shared_prefix=shares_prefix_exactly(model), **SMALL))
    final = train_rl(cfg)
    row = read_metrics(tmp_path / "rl" / "metrics.jsonl")[0]
    assert row["step"] == 1 and np.isfinite(row["loss"])
    if algorithm == "tgrpo":
        assert "shuffled_accuracy" in row
    before, after = _visual(model), _visual(final)
    assert sum(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before) >= len(before) // 2


@pytest.mark.parametrize("name", OTHER_FAMILIES + QWEN3_5)
def test_eval_with_shuffled_frames(name, family_model_dirs, synth_dir, tmp_path):
    cfg = EvalConfig(model=family_model_dirs[name], bench="videor1", data=synth_dir / "test.jsonl",
                     media_root=synth_dir, out=tmp_path / "eval", batch_size=4, limit=4, shuffle_frames=True,
                     video=VideoSpec(fps=2.0, max_frames=4, max_pixels=8 * 28 * 28),
                     image=ImageSpec(max_pixels=8 * 28 * 28), max_new_tokens=6, decoding="greedy", seed=0,
                     engine="hf")
    summary = run_eval(cfg, echo=lambda *_: None)
    rows = read_predictions(tmp_path / "eval" / "predictions.jsonl")
    assert len(rows) == 8 and not any(r["error"] for r in rows)
    assert "temporal_reliance" in summary


@pytest.mark.parametrize("name", OTHER_FAMILIES)
def test_infer_and_annotate(name, family_model_dirs, synth_dir, bikes_mp4, tmp_path):
    model = family_model_dirs[name]
    res = CliRunner().invoke(app, [
        "infer", "--model", str(model), "--video", str(bikes_mp4), "--question", "Which way do the bikes go?",
        "--type", "multiple choice", "--options", "left", "--options", "right", "--frames", "4",
        "--max-pixels", str(8 * 28 * 28), "--max-new-tokens", "6", "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert obj["frames"] == 4 and 1 <= obj["n_tokens"] <= 6
    out = tmp_path / "cot.jsonl"
    summary = annotate(model=model, data=synth_dir / "rl.jsonl", media_root=synth_dir, out=out, samples=2,
                       threshold=0, require_format=False, batch_size=2, limit=3, max_new_tokens=6, seed=0,
                       video=VideoSpec(max_frames=4, max_pixels=3136), image=ImageSpec(max_pixels=3136),
                       echo=lambda s: None)
    assert summary["this_run"]["accepted"] == 3 and len(load_records(out)) == 3


def test_demo_runs_on_qwen3_vl(tmp_path):
    from dataclasses import replace

    settings = replace(QUICK, n_train=16, n_cot=16, n_test=8, sft_steps=2, sft_batch=4, rl_steps=1, rl_prompts=2,
                       rl_generations=2, rl_max_tokens=6, eval_max_tokens=6, eval_batch=8)
    report = run_demo(tmp_path / "demo", settings=settings, family="qwen3_vl", echo=lambda *_: None)
    assert report.is_file()
    saved = json.loads((tmp_path / "demo" / "demo_settings.json").read_text())
    assert saved["family"] == "qwen3_vl"
    base = tmp_path / "demo" / "models" / "base"
    assert json.loads((base / "config.json").read_text())["model_type"] == "qwen3_vl"
