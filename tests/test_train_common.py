"""The pieces SFT and RL share (videor1.train): resume resolution, records, parameter groups, vision
freezing, precision, the final save, and both trainers using them the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import Qwen2_5_VLForConditionalGeneration

from videor1.config import ConfigError, config_from_dict
from videor1.model.load import load_model, load_processor
from videor1.rl.config import RLConfig
from videor1.sft.config import SFTConfig
from videor1.train.checkpoint import STATE_FILE, resolve_resume, save_final
from videor1.train.common import freeze_vision, is_vision, load_records, media_root, mixed_precision, param_groups
from videor1.train.metrics import SKIPPED_FILE, read_metrics, trim_skip_log


def _fake_checkpoint(out: Path, step: int) -> Path:
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    torch.save({"step": step}, ckpt / STATE_FILE)
    (ckpt / "config.json").write_text("{}", encoding="utf-8")
    return ckpt


def test_resolve_resume_bool_path_and_none(tmp_path):
    out = tmp_path / "run"
    assert resolve_resume(False, out) is None  # fresh, nothing there
    assert resolve_resume(True, out) is None  # resume=true without a checkpoint starts at step 0
    _fake_checkpoint(out, 2)
    newest = _fake_checkpoint(out, 10)
    (out / "checkpoint-12.tmp").mkdir()  # a half-written one is never picked
    assert resolve_resume(True, out) == newest
    with pytest.raises(ConfigError, match="resume=true"):  # a fresh run never mixes with an old one
        resolve_resume(False, out)
    other = _fake_checkpoint(tmp_path / "elsewhere", 4)
    assert resolve_resume(str(other), out) == other  # an explicit path wins over output_dir's newest
    assert resolve_resume(other, tmp_path / "new") == other
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        resolve_resume(str(tmp_path / "elsewhere"), out)


def test_mixed_precision_and_media_root():
    assert mixed_precision(True) == "bf16" and mixed_precision(False) == "no"
    assert mixed_precision("auto") in ("bf16", "no")
    assert media_root("/data/x/train.jsonl", None) == "/data/x"
    assert media_root("/data/x/train.jsonl", "/media") == "/media"


def test_load_records_logs_rejects_and_names_the_key(synth_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^train_data: .*nowhere\.jsonl"):
        load_records(tmp_path / "nowhere.jsonl", None, out, write_log=True)
    assert not out.exists()
    rows = [json.loads(x) for x in (synth_dir / "cot.jsonl").read_text().splitlines()][:4]
    data = tmp_path / "cot.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows + [{"problem_id": "broken"}]))
    out.mkdir()
    (out / SKIPPED_FILE).write_text('{"id": "stale", "reason": "old run"}\n')
    first = rows[0]["problem_id"]
    records, n_bad = load_records(data, synth_dir, out, write_log=True,
                                  reject=lambda r: "rejected" if r.problem_id == first else None)
    assert [r.problem_id for r in records] == [r["problem_id"] for r in rows[1:]] and n_bad == 2
    logged = [json.loads(x) for x in (out / SKIPPED_FILE).read_text().splitlines()]
    assert {x["id"] for x in logged} == {"#4", first} or {x["id"] for x in logged} == {"broken", first}
    assert all(x["step"] == 0 for x in logged)  # the stale skip log of an old run is gone
    with pytest.raises(ConfigError, match="max_skipped_fraction 0.1"):
        load_records(data, synth_dir, out, write_log=False, max_bad_fraction=0.1,
                     reject=lambda r: "rejected" if r.problem_id == first else None)


def test_trim_skip_log_drops_lines_past_the_step(tmp_path):
    lines = ['{"id": "a", "reason": "r", "step": 0}', '{"id": "b", "reason": "r", "step": 3}',
             '{"id": "c", "reason": "r"}', '{"id": "d", "reason": "r", "step": 5}', '{"id": "torn", "rea']
    (tmp_path / SKIPPED_FILE).write_text("\n".join(lines) + "\n")
    trim_skip_log(tmp_path, 3)
    assert [json.loads(x)["id"] for x in (tmp_path / SKIPPED_FILE).read_text().splitlines()] == ["a", "b", "c"]


def test_param_groups_and_vision_freezing_on_the_tiny_model(tiny_model_dir):
    model = load_model(tiny_model_dir, device="cpu", dtype=torch.float32)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["params"] and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["params"] and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable)
    freeze_vision(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and frozen == {n for n, _ in model.named_parameters() if is_vision(n)}
    assert frozen == {"model.visual." + n for n, _ in model.model.visual.named_parameters()}
    kept = {id(p) for g in param_groups(model, 0.1) for p in g["params"]}
    assert kept == {id(p) for p in model.parameters() if p.requires_grad}


def test_save_final_is_atomic_and_loads_back(tiny_model_dir, tmp_path):
    accelerator = Accelerator(cpu=True)
    model = load_model(tiny_model_dir, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    processor = load_processor(tiny_model_dir)
    final = tmp_path / "final"
    final.mkdir()
    (final / "stale.txt").write_text("from an older run")
    (tmp_path / "final.tmp").mkdir()  # left by a kill during an earlier save
    assert save_final(model, processor, accelerator, final) == final
    assert not (tmp_path / "final.tmp").exists() and not (final / "stale.txt").exists()
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(final)
    want = model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())
    load_processor(final)


# ------------------------------------------------------------------------------------- both trainers
def _rl_config(tiny_model_dir, synth_dir, out, **extra) -> RLConfig:
    base = dict(model=str(tiny_model_dir), train_data=str(synth_dir / "rl.jsonl"), media_root=str(synth_dir),
                output_dir=str(out), algorithm="grpo", num_generations=2, prompts_per_step=1,
                max_completion_length=4, beta=0.0, learning_rate=1e-2, top_p=1.0, rewards=["accuracy", "format"],
                save_steps=2, report_to=(), progress=False, seed=3, num_threads=1, max_steps=3,
                video={"min_frames": 4, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136},
                image={"min_pixels": 3136, "max_pixels": 3136})
    base.update(extra)
    return config_from_dict(RLConfig, base)


def test_missing_train_data_is_the_same_config_error_in_both_trainers(tiny_model_dir, tmp_path, monkeypatch):
    import videor1.rl.trainer as rl
    import videor1.sft.trainer as sft

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the records were checked")

    monkeypatch.setattr(rl, "load_model", no_model)
    monkeypatch.setattr(sft, "load_model", no_model)
    missing = tmp_path / "missing.jsonl"
    errors = []
    for run in (lambda: rl.train(_rl_config(tiny_model_dir, tmp_path, tmp_path / "rl", train_data=str(missing))),
                lambda: sft.train_sft(SFTConfig(model=str(tiny_model_dir), train_data=str(missing),
                                                output_dir=str(tmp_path / "sft"), report_to=()))):
        with pytest.raises(ConfigError) as info:
            run()
        errors.append(str(info.value))
    assert errors[0] == errors[1] and errors[0].startswith("train_data: ") and str(missing) in errors[0]
    assert "\n" not in errors[0]


def test_rl_resumes_from_an_explicit_checkpoint_path(tiny_model_dir, synth_dir, tmp_path):
    from videor1.rl.trainer import train

    full = train(_rl_config(tiny_model_dir, synth_dir, tmp_path / "full"))
    ckpt = tmp_path / "full" / "checkpoint-2"
    assert ckpt.is_dir()
    with pytest.raises(ConfigError, match="not a checkpoint"):
        train(_rl_config(tiny_model_dir, synth_dir, tmp_path / "bad", resume=str(tmp_path / "full")))
    branch = train(_rl_config(tiny_model_dir, synth_dir, tmp_path / "branch", resume=str(ckpt)))
    want = read_metrics(tmp_path / "full" / "metrics.jsonl")
    got = read_metrics(tmp_path / "branch" / "metrics.jsonl")
    assert [m["step"] for m in got] == [3]
    for key in ("loss", "reward", "lr", "grad_norm", "completion_length"):
        assert got[0][key] == want[-1][key], key
    wa, wb = load_file(str(full / "model.safetensors")), load_file(str(branch / "model.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    shutil.rmtree(tmp_path / "full")  # the branch does not depend on the run it started from
    assert Qwen2_5_VLForConditionalGeneration.from_pretrained(branch) is not None
