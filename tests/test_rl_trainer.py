"""GRPO / T-GRPO training end to end on the CPU: the tiny model, real mp4 / png media, real updates."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from videor1.config import config_from_dict
from videor1.rewards import register
from videor1.rl.config import RLConfig
from videor1.rl.metrics import CURVE_KEYS
from videor1.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]


@register("rl_test_variety", overwrite=True)
def variety_reward(completions, **columns):
    """Differs between random completions, so even an untrained model gets non-zero advantages."""
    return [len(set(c)) / (1.0 + len(c)) for c in completions]


@register("rl_test_video_variety", overwrite=True)
def video_variety_reward(completions, data_type, **columns):
    """`variety_reward` on video prompts, 0 on image prompts: image groups have equal rewards (no advantage)."""
    return [len(set(c)) / (1.0 + len(c)) if kind == "video" else 0.0 for c, kind in zip(completions, data_type)]


@register("rl_test_constant", overwrite=True)
def constant_reward(completions, **columns):
    return [1.0] * len(completions)


def _config(tiny_model_dir, data, media_root, out, **extra) -> RLConfig:
    base = dict(model=str(tiny_model_dir), train_data=str(data), media_root=str(media_root), output_dir=str(out),
                algorithm="tgrpo", num_generations=2, num_shuffled_generations=1, prompts_per_step=2,
                max_completion_length=6, beta=0.0, learning_rate=1e-2, lr_scheduler="constant", top_p=1.0,
                rewards=["rl_test_variety", "accuracy"], save_steps=0, report_to=(), progress=False,
                video={"min_frames": 4, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136},
                image={"min_pixels": 3136, "max_pixels": 3136}, seed=1, num_threads=1)
    base.update(extra)
    return config_from_dict(RLConfig, base)


def _subset(synth_dir: Path, out: Path, pick) -> tuple[Path, list[dict]]:
    """A records file of the synthetic records `pick` selects, with their media copied under `out`."""
    rows = [json.loads(line) for line in (synth_dir / "rl.jsonl").read_text().splitlines()]
    rows = [r for r in rows if pick(r)]
    for r in rows:
        (out / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synth_dir / r["path"], out / r["path"])
    return out / "rl.jsonl", rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _visual(path: Path) -> dict:
    return {k: v for k, v in load_file(str(path / "model.safetensors")).items() if "visual" in k}


def test_tgrpo_step_trains_the_vision_tower_and_shuffles_frames(tiny_model_dir, synth_dir, tmp_path, monkeypatch):
    import videor1.rl.trainer as trainer

    seen = []
    real_build = trainer.build_rollout_engine

    def spying_engine(cfg, policy, processor, main):
        engine, sync = real_build(cfg, policy, processor, main)
        generate = engine.generate

        def record(samples, params):
            seen.append((list(samples), params.n))
            return generate(samples, params)

        engine.generate = record
        return engine, sync

    monkeypatch.setattr(trainer, "build_rollout_engine", spying_engine)
    data, _ = _subset(synth_dir, tmp_path, lambda r: r["problem_type"] == "multiple choice")
    _write(data, [json.loads(x) for x in (synth_dir / "rl.jsonl").read_text().splitlines()
                  if json.loads(x)["problem_type"] == "multiple choice"])
    cfg = _config(tiny_model_dir, data, tmp_path, tmp_path / "run", max_steps=1, beta=0.04)
    final = trainer.train(cfg)

    before, after = _visual(tiny_model_dir), _visual(final)
    changed = [k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())]
    assert len(changed) >= len(before) // 2, f"only {len(changed)} of {len(before)} vision tensors changed"
    row = read_metrics(tmp_path / "run" / "metrics.jsonl")[0]
    assert row["step"] == 1 and np.isfinite(row["loss"]) and row["kl"] >= 0.0
    assert {"shuffled_accuracy", "ordered_accuracy", "temporal_bonus_rate", "temporal_advantage_shift",
            "reward_rl_test_variety"} <= set(row)
    assert row["temporal_advantage_shift"] >= 0.0
    assert (tmp_path / "run" / "curves.png").is_file()

    # one generate call: 2 prompts x (G / n) + shuffled videos x (G~ / n), n = gcd(2, 1) = 1
    assert len(seen) == 1
    samples, n = seen[0]
    assert n == 1
    ordered = samples[:2]
    assert samples[2:4] == ordered
    for shuffled in samples[4:]:
        owner = next(s for s in ordered if s.record.problem_id == shuffled.record.problem_id)
        a, b = owner.media.frames, shuffled.media.frames
        assert not np.array_equal(a, b)
        assert sorted(map(bytes, a)) == sorted(map(bytes, b))


def test_bad_samples_are_logged_counted_and_not_replaced(tiny_model_dir, synth_dir, tmp_path, monkeypatch):
    import videor1.rl.trainer as trainer

    data, rows = _subset(synth_dir, tmp_path, lambda r: r["problem_type"] == "multiple choice")
    good = [r for r in rows if r["data_type"] == "video"][:3] + [r for r in rows if r["data_type"] == "image"][:1]
    (tmp_path / "media" / "broken.mp4").write_bytes(b"\x00\x01 definitely not an mp4" * 20)
    corrupt = dict(good[0], problem_id="corrupt", path="media/broken.mp4")
    missing = dict(good[0], problem_id="missing", path="media/nowhere.mp4")
    too_long = dict(good[3], problem_id="too-long", problem="why " * 1500)
    _write(data, good + [corrupt, missing, too_long])
    loads = []
    real_load = trainer.load_model
    monkeypatch.setattr(trainer, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    cfg = _config(tiny_model_dir, data, tmp_path, tmp_path / "run", algorithm="grpo", prompts_per_step=3,
                  max_steps=2, max_prompt_length=1000, gradient_checkpointing=True)
    trainer.train(cfg)

    assert len(loads) == 1  # beta == 0: no reference model is loaded
    skipped = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert {s["id"] for s in skipped} == {"corrupt", "missing", "too-long"}
    assert "max_prompt_length" in next(s["reason"] for s in skipped if s["id"] == "too-long")
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    # 6 loadable records, 3 a step: one epoch in 2 steps; 2 skipped at run time, none replaced
    assert sum(m["prompts"] for m in metrics) == 4
    assert sum(m["samples_skipped"] for m in metrics) == 2 and metrics[-1]["samples_skipped_total"] == 2


def test_resume_after_a_kill_logs_the_same_losses(tiny_model_dir, synth_dir, tmp_path, killed_after):
    import videor1.rl.trainer as trainer

    data, _ = _subset(synth_dir, tmp_path, lambda r: True)
    _write(data, [json.loads(x) for x in (synth_dir / "rl.jsonl").read_text().splitlines()])
    common = dict(max_steps=4, save_steps=2, num_iterations=2, lr_scheduler="cosine", warmup_ratio=0.25)
    trainer.train(_config(tiny_model_dir, data, tmp_path, tmp_path / "full", **common))

    with killed_after(3):
        trainer.train(_config(tiny_model_dir, data, tmp_path, tmp_path / "cut", **common))
    assert (tmp_path / "cut" / "checkpoint-2").is_dir() and not (tmp_path / "cut" / "checkpoint-4").exists()
    trainer.train(_config(tiny_model_dir, data, tmp_path, tmp_path / "cut", resume=True, **common))

    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    cut = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [m["step"] for m in cut] == [1, 2, 3, 4]
    for key in ("loss", "reward", "completion_length", "clip_fraction", "lr", "grad_norm"):
        assert [m[key] for m in cut] == [m[key] for m in full], key
    assert len({m["loss"] for m in full}) > 1
    w_full = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    w_cut = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert all(np.array_equal(w_full[k].numpy(), w_cut[k].numpy()) for k in w_full)


def test_dynamic_sampling_trains_on_informative_groups_only(tiny_model_dir, synth_dir, tmp_path, monkeypatch):
    import videor1.rl.trainer as trainer

    data, rows = _subset(synth_dir, tmp_path, lambda r: True)
    videos = [r for r in rows if r["data_type"] == "video"][:3]
    images = [r for r in rows if r["data_type"] == "image"][:3]
    _write(data, [videos[0], images[0], images[1], videos[1], images[2], videos[2]])
    seen = []
    real_loss = trainer.policy_loss
    monkeypatch.setattr(trainer, "policy_loss", lambda logp, old, adv, mask, **k: seen.append(adv.clone())
                        or real_loss(logp, old, adv, mask, **k))
    cfg = _config(tiny_model_dir, data, tmp_path, tmp_path / "run", algorithm="grpo", num_generations=3,
                  prompts_per_step=3, max_steps=2, rewards=["rl_test_video_variety"], dynamic_sampling=True)
    trainer.train(cfg)

    # 6 prompts in 2 steps of 3, in a seeded order: the loss sees G = 3 rows per video prompt, none per image
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    kept = [round(m["kept_group_rate"] * 3) for m in metrics]
    assert sum(kept) == 3 and [len(a) for a in seen] == [3 * k for k in kept if k]
    assert all(a.abs().sum() > 0 for a in seen) and all(m["prompts"] == 3 for m in metrics)
    assert "kept_group_rate" in CURVE_KEYS


def test_dynamic_sampling_without_an_informative_group_leaves_the_weights(tiny_model_dir, synth_dir, tmp_path):
    from videor1.rl.trainer import train

    data, rows = _subset(synth_dir, tmp_path, lambda r: True)
    _write(data, rows)
    # a constant reward: every group is uninformative. Without the filter, AdamW's weight decay moves every
    # weight even with a zero gradient; with it, no update is made at all
    kw = dict(algorithm="grpo", max_steps=2, rewards=["rl_test_constant"], weight_decay=0.1)
    with warnings.catch_warnings(record=True) as seen:   # the schedule advances without an update, knowingly
        warnings.simplefilter("always")
        kept = train(_config(tiny_model_dir, data, tmp_path, tmp_path / "ds", dynamic_sampling=True, **kw))
    assert not [w for w in seen if "lr_scheduler.step()" in str(w.message)]
    moved = train(_config(tiny_model_dir, data, tmp_path, tmp_path / "all", **kw))
    before, after, other = (load_file(str(p / "model.safetensors")) for p in (tiny_model_dir, kept, moved))
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
    assert not all(np.array_equal(before[k].numpy(), other[k].numpy()) for k in before)
    metrics = read_metrics(tmp_path / "ds" / "metrics.jsonl")
    assert [m["kept_group_rate"] for m in metrics] == [0.0, 0.0] and all(m["loss"] == 0.0 for m in metrics)


@pytest.mark.slow
def test_cli_demo_config_runs_three_steps(tiny_model_dir, synth_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "videor1"), "train", "--config", str(REPO / "configs/rl_demo_cpu.yaml"),
           f"model={tiny_model_dir}", f"train_data={synth_dir / 'rl.jsonl'}", f"media_root={synth_dir}",
           f"output_dir={out}", "max_steps=3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert (out / "final" / "model.safetensors").is_file() and (out / "config.yaml").is_file()


def test_loss_micro_batches_log_the_one_pass_metrics(tiny_model_dir, synth_dir, tmp_path):
    """loss_micro_batch_size 2 = one group of G = 2 per forward/backward: the same loss, KL, clip fraction and
    gradient norm as one pass (fp32; the sums run in another order), and final weights within 3% of the largest
    weight change (AdamW's g / (|g| + eps) magnifies rounding in tiny gradient entries; measured 2%)."""
    from videor1.rl.trainer import train

    data, rows = _subset(synth_dir, tmp_path, lambda r: True)
    _write(data, rows)
    kw = dict(max_steps=2, beta=0.04, num_iterations=2, loss_type="grpo")
    finals = {size: train(_config(tiny_model_dir, data, tmp_path, tmp_path / f"mb{size}", loss_micro_batch_size=size,
                                  **kw)) for size in (0, 2)}
    one, micro = (read_metrics(tmp_path / f"mb{size}" / "metrics.jsonl") for size in (0, 2))
    for a, b in zip(one, micro):
        for key in ("loss", "kl", "clip_fraction", "grad_norm", "reward", "truncated_ratio"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    assert one[-1]["grad_norm"] > 0
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    w0, w1 = (load_file(str(finals[size] / "model.safetensors")) for size in (0, 2))
    moved = max(float(np.abs(w0[k].numpy() - before[k].numpy()).max()) for k in w0)
    diff = max(float(np.abs(w0[k].numpy() - w1[k].numpy()).max()) for k in w0)
    print(f"max |w_micro - w_one| = {diff:.3g}, largest weight change {moved:.3g}")
    assert diff <= 0.03 * moved


def test_truncated_completions_are_counted_and_masked(tiny_model_dir, synth_dir, tmp_path):
    """2 new tokens: the random tiny model never ends that early, so every completion is truncated
    (truncated_ratio 1); with mask_truncated_completions (beta 0) nothing is left to learn from."""
    from videor1.rl.trainer import train

    data, rows = _subset(synth_dir, tmp_path, lambda r: True)
    _write(data, rows)
    kw = dict(algorithm="grpo", max_steps=1, max_completion_length=2)
    train(_config(tiny_model_dir, data, tmp_path, tmp_path / "kept", **kw))
    train(_config(tiny_model_dir, data, tmp_path, tmp_path / "masked", mask_truncated_completions=True, **kw))
    kept, masked = (read_metrics(tmp_path / name / "metrics.jsonl")[0] for name in ("kept", "masked"))
    assert kept["truncated_ratio"] == masked["truncated_ratio"] == 1.0
    assert kept["grad_norm"] > 0 and masked["grad_norm"] == 0.0 and masked["loss"] == 0.0
