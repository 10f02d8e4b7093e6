"""One-step off-policy rollouts (`async_rollouts`): the importance-sampling math by hand, the engines'
behaviour log-probs, and T-GRPO training through a real `videor1 serve-rollouts` process on the tiny model
(staleness, kill + resume)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rollout_server import start_server
from safetensors.torch import load_file

from videor1.config import ConfigError, config_from_dict
from videor1.data.media import VideoSpec, load_video
from videor1.generation.engines import HFEngine, SamplingParams
from videor1.model.inputs import Sample, encode
from videor1.rewards import register
from videor1.rl.algorithms import clamped_ratio, policy_loss, truncated_is_weights
from videor1.rl.config import RLConfig
from videor1.rl.step import completion_logps, loss_inputs
from videor1.train.metrics import read_metrics

QUESTION = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]


@register("async_test_variety", overwrite=True)
def variety(completions, **columns):
    """Differs between random completions, so the tiny model gets non-zero advantages."""
    return [len(set(c)) / (1.0 + len(c)) for c in completions]


# ------------------------------------------------------------------------------------- the math by hand
def test_truncated_is_weights_by_hand():
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
    behaviour = torch.tensor([[-1.5, -1.0, -0.5, float("nan")]])
    w = truncated_is_weights(old, behaviour, cap=1.5)
    # exp(0.5) = 1.6487 -> capped at 1.5; exp(-1) = 0.3679; exp(0) = 1; unknown behaviour -> 1
    assert torch.allclose(w.ratio, torch.tensor([[math.exp(0.5), math.exp(-1.0), 1.0, 1.0]]))
    assert torch.allclose(w.weights, torch.tensor([[1.5, math.exp(-1.0), 1.0, 1.0]]))
    assert w.truncated.tolist() == [[True, False, False, False]]
    # a token whose behaviour log-prob is absurdly low: the log ratio is clamped at 20, never inf
    far = truncated_is_weights(torch.tensor([[0.0]]), torch.tensor([[-1e4]]), cap=1e12)
    assert far.ratio.item() == pytest.approx(math.exp(20.0), rel=1e-6) and math.isfinite(far.weights.item())
    assert clamped_ratio(torch.tensor([-1e4])).item() == pytest.approx(math.exp(-20.0), rel=1e-6)


def test_policy_loss_weights_the_policy_gradient_by_the_behaviour_logprobs():
    """One sequence of two tokens, A = 1, logp = old (first pass: ratio 1, nothing clipped): the grpo loss is
    -(w1 + w2) / 2 with w = min(exp(old - behaviour), cap); without behaviour log-probs it is -1."""
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = logp.detach().clone()
    behaviour = torch.tensor([[-1.2, -1.0]])
    adv, mask = torch.tensor([1.0]), torch.ones(1, 2)
    plain = policy_loss(logp, old, adv, mask)
    assert plain.loss.item() == pytest.approx(-1.0) and plain.is_ratio_mean is None
    out = policy_loss(logp, old, adv, mask, behaviour_logp=behaviour, is_cap=1.1)
    w1, w2 = min(math.exp(0.2), 1.1), min(math.exp(-1.0), 1.1)   # 1.1 (truncated from 1.2214), 0.3679
    assert out.loss.item() == pytest.approx(-(w1 + w2) / 2, rel=1e-6)
    assert out.is_ratio_mean.item() == pytest.approx((math.exp(0.2) + math.exp(-1.0)) / 2, rel=1e-6)
    assert out.is_ratio_max.item() == pytest.approx(math.exp(0.2), rel=1e-6)
    assert out.is_truncated_fraction.item() == pytest.approx(0.5)
    out.loss.backward()   # the weights are detached: d loss / d logp_i = -w_i / 2 at ratio 1
    assert torch.allclose(logp.grad, torch.tensor([[-w1 / 2, -w2 / 2]]), rtol=1e-6)


def test_async_rollouts_needs_the_server_and_a_positive_cap(tiny_model_dir, tmp_path):
    base = dict(model=str(tiny_model_dir), train_data="x.jsonl", output_dir=str(tmp_path), async_rollouts=True)
    with pytest.raises(ConfigError, match="async_rollouts needs rollout_engine 'remote'"):
        config_from_dict(RLConfig, base)
    with pytest.raises(ConfigError, match="async_is_cap must be > 0"):
        config_from_dict(RLConfig, {**base, "rollout_engine": "remote", "remote": {"weights_dir": "w"},
                                    "async_is_cap": 0})


def test_async_rollouts_refuses_log_probs_of_another_distribution():
    """vLLM's raw log-probs are the behaviour policy's only at temperature 1; a server that reports none is
    refused too (the correction would silently weigh every token 1)."""
    from videor1.generation.vllm_engine import VLLMEngine
    from videor1.rl.async_rollouts import check_behaviour_logprobs

    check_behaviour_logprobs(HFEngine.behaviour_logprobs, 0.7)
    check_behaviour_logprobs(VLLMEngine.behaviour_logprobs, 1.0)
    with pytest.raises(ValueError, match="at temperature 0.7: .* train at temperature 1 or serve with --engine hf"):
        check_behaviour_logprobs(VLLMEngine.behaviour_logprobs, 0.7)
    with pytest.raises(ValueError, match="reports behaviour_logprobs None"):
        check_behaviour_logprobs(None, 1.0)


# ------------------------------------------------------------------------------ engine log-probs
@pytest.mark.parametrize("batched", [False, True])
def test_hf_behaviour_logprobs_are_the_sampling_distribution(model, processor, bikes_mp4, batched):
    """The HF engine's per-token log-probs are log_softmax(logits / temperature) with the vision tokens
    suppressed, before top-p (computed here from one forward over prompt + completion), on both sampling
    routes (generate's own sampler, the server's per-row sampler); the trainer's log-probs (full vocabulary)
    differ from them only by the suppressed tokens' small mass."""
    clip = load_video(bikes_mp4, VideoSpec(max_frames=4, min_pixels=28 * 28, max_pixels=56 * 56 * 2))
    samples = [Sample(None, clip, QUESTION), Sample(None, clip.permuted([2, 0, 3, 1]), QUESTION)]
    engine = HFEngine(model, processor)
    params = SamplingParams(n=2, max_new_tokens=8, temperature=0.7, top_p=0.9, seed=3)
    groups = engine.generate_many([(samples, params)])[0] if batched else engine.generate(samples, params)
    completions = [c for g in groups for c in g]
    assert all(c.logprobs is not None and len(c.logprobs) == len(c.token_ids) for c in completions)
    inputs, ids, _ = loss_inputs(encode(processor, samples, padding_side="left"),
                                 [c.token_ids for c in completions], 2, int(processor.tokenizer.pad_token_id))
    width = ids.shape[1]
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[:, -width - 1:-1].float() / 0.7
        trainer = completion_logps(model, inputs, ids, 0.7)
    logits[..., engine.suppress_ids] = float("-inf")
    sampling = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    for row, c in enumerate(completions):
        cols = slice(width - len(c.token_ids), width)
        assert np.allclose(c.logprobs, sampling[row, cols].numpy(), atol=1e-4), (c.logprobs, sampling[row, cols])
        gap = np.asarray(c.logprobs) - trainer[row, cols].numpy()
        assert (gap > 0).all() and (gap < 2e-2).all(), gap   # log 1 / (1 - mass of the vision tokens)


# ------------------------------------------------------------------------- through a real server
@pytest.fixture
def server(tiny_model_dir, tmp_path):
    """`videor1 serve-rollouts --engine hf` on the tiny model, in its own process."""
    started = start_server(tiny_model_dir, tmp_path)
    yield started
    started.stop()


def _config(tiny_model_dir, synth_dir, out, server, **extra) -> RLConfig:
    base = dict(model=str(tiny_model_dir), train_data=str(synth_dir / "rl.jsonl"), media_root=str(synth_dir),
                output_dir=str(out), algorithm="tgrpo", num_generations=2, num_shuffled_generations=1,
                prompts_per_step=2, max_completion_length=6, beta=0.0, learning_rate=1e-2, top_p=1.0,
                lr_scheduler="constant", rewards=["async_test_variety", "accuracy"],
                save_steps=0, report_to=(), progress=False,
                video={"min_frames": 4, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136},
                image={"min_pixels": 3136, "max_pixels": 3136}, seed=1, num_threads=1,
                rollout_engine="remote", remote={"url": server.url, "token_file": str(server.token_file)})
    base.update(extra)
    return config_from_dict(RLConfig, base)


@pytest.mark.slow
def test_async_staleness_and_kill_resume_through_a_real_server(tiny_model_dir, synth_dir, tmp_path, server,
                                                               killed_after):
    """Async T-GRPO through `serve-rollouts`: staleness 0 at step 1 and exactly 1 after; the IS statistics
    are logged; a run killed after step 3 and resumed from checkpoint-2 logs the same metrics and ends with
    the same weights (step 3 trains on the rollouts stored with the checkpoint)."""
    import videor1.rl.trainer as trainer

    common = dict(max_steps=4, save_steps=2, num_iterations=2, async_rollouts=True)
    # a checkpoint at every step (2 kept) here: the in-flight files of the deleted ones go with them
    trainer.train(_config(tiny_model_dir, synth_dir, tmp_path / "full", server, **{**common, "save_steps": 1}))
    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert [m["rollout_staleness"] for m in full] == [0.0, 1.0, 1.0, 1.0]
    assert all(m["is_ratio_max"] >= m["is_ratio_mean"] > 0 and 0 <= m["is_truncated_fraction"] <= 1 for m in full)
    # step 1 is on-policy: the ratio is 1 but for the vision tokens' mass the engine suppresses (and fp rounding)
    assert full[0]["is_ratio_mean"] == pytest.approx(1.0, abs=1e-2)
    assert len({m["loss"] for m in full}) > 1
    assert sorted(p.name for p in (tmp_path / "full").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert [p.name for p in (tmp_path / "full" / "async_rollouts").iterdir()] == ["step-4-rank-0.json"]

    with killed_after(3):
        trainer.train(_config(tiny_model_dir, synth_dir, tmp_path / "cut", server, **common))
    assert (tmp_path / "cut" / "checkpoint-2").is_dir() and not (tmp_path / "cut" / "checkpoint-4").exists()
    trainer.train(_config(tiny_model_dir, synth_dir, tmp_path / "cut", server, resume=True, **common))
    cut = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [m["step"] for m in cut] == [1, 2, 3, 4]
    for key in ("loss", "reward", "completion_length", "clip_fraction", "lr", "grad_norm", "rollout_staleness",
                "is_ratio_mean", "is_ratio_max", "is_truncated_fraction"):
        assert [m[key] for m in cut] == [m[key] for m in full], key
    w_full = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    w_cut = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert all(np.array_equal(w_full[k].numpy(), w_cut[k].numpy()) for k in w_full)


RUNNER = '''import json, sys
from videor1.rewards import register


@register("async_test_variety", overwrite=True)
def variety(completions, **columns):
    return [len(set(c)) / (1.0 + len(c)) for c in completions]


from videor1.config import config_from_dict
from videor1.rl.config import RLConfig
from videor1.rl.trainer import train

train(config_from_dict(RLConfig, json.loads(sys.argv[1])))
'''


def _tree_before_async(tmp: Path) -> Path | None:
    """The source tree of the commit before the one that added async_rollouts (None outside a git checkout)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        added = subprocess.run(["git", "-C", str(repo), "log", "--diff-filter=A", "--format=%H", "--",
                                "src/videor1/rl/async_rollouts.py"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    commits = added.stdout.split()
    if not commits:
        return None
    archive = subprocess.run(["git", "-C", str(repo), "archive", f"{commits[-1]}^", "src"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    return tmp / "src"


def _run_tree(src: Path, tiny_model_dir: Path, synth_dir: Path, out: Path) -> list[dict]:
    """`serve-rollouts` and a 3-step T-GRPO run through it, both on the source tree `src`; its metrics."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    weights = out.parent / f"{out.name}-shm"
    server = start_server(tiny_model_dir, out.parent, "--weights-dir", str(weights), env=env,
                          command=[sys.executable, "-m", "videor1.cli"])
    try:
        cfg = dict(model=str(tiny_model_dir), train_data=str(synth_dir / "rl.jsonl"), media_root=str(synth_dir),
                   output_dir=str(out), algorithm="tgrpo", num_generations=2, num_shuffled_generations=1,
                   prompts_per_step=2, max_completion_length=6, beta=0.04, learning_rate=1e-2, top_p=0.9,
                   lr_scheduler="constant", rewards=["async_test_variety", "accuracy"], save_steps=0,
                   report_to=[], progress=False, max_steps=3, num_iterations=2, seed=1, num_threads=1,
                   video={"min_frames": 4, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136},
                   image={"min_pixels": 3136, "max_pixels": 3136}, rollout_engine="remote",
                   remote={"url": server.url, "weights_dir": str(weights), "token_file": str(server.token_file)})
        subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cfg)], env=env, check=True, timeout=900)
    finally:
        server.stop()
    return [{k: v for k, v in row.items() if "time" not in k} for row in read_metrics(out / "metrics.jsonl")]


@pytest.mark.slow
def test_sync_metrics_equal_the_tree_before_async_rollouts(tiny_model_dir, synth_dir, tmp_path):
    """async_rollouts: false (the default) logs exactly the metrics of the source tree before the feature was
    added (its commit's parent, from git), server and trainer each of their own tree: T-GRPO through a real
    server, 3 steps, 2 optimisation passes (ratios != 1), KL on. Every key but the timings; none added.
    Retire this test (or move the base commit) when a later change of the sync path's metrics is intended."""
    old = _tree_before_async(tmp_path)
    if old is None:
        pytest.skip("not a git checkout with the commit that added async_rollouts")
    before = _run_tree(old, tiny_model_dir, synth_dir, tmp_path / "before")
    now = _run_tree(Path(__file__).resolve().parents[1] / "src", tiny_model_dir, synth_dir, tmp_path / "now")
    assert [r["step"] for r in now] == [1, 2, 3] and len({r["loss"] for r in now}) > 1
    assert now == before
