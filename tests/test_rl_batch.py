"""videor1.rl.step on real synthetic records and the tiny model's processor (no training)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.records import read_records
from videor1.rl.step import (
    generate_rollouts,
    load_prompts,
    prompt_indices,
    score_rollouts,
    shuffle_permutation,
    shuffled_samples,
)
from videor1.rl.config import RLConfig
from videor1.generation.engines import Completion, SamplingParams

VIDEO = VideoSpec(fps=2.0, min_frames=4, max_frames=4, min_pixels=56 * 56, max_pixels=56 * 56)
IMAGE = ImageSpec(min_pixels=56 * 56, max_pixels=56 * 56)


@pytest.fixture(scope="module")
def mixed(synth_dir, processor):
    """Prompts of two multiple-choice videos and one multiple-choice image (in that order)."""
    records, _ = read_records(synth_dir / "rl.jsonl", synth_dir)
    mc = [r for r in records if r.problem_type == "multiple choice"]
    chosen = [r for r in mc if r.data_type == "video"][:2] + [r for r in mc if r.data_type == "image"][:1]
    return load_prompts(chosen, [0, 1, 2], [10, 11, 12], processor, media_root=synth_dir, video=VIDEO,
                        image=IMAGE, max_prompt_length=4096)


def _answer(record, correct: bool) -> str:
    gold = record.solution.removeprefix("<answer>").removesuffix("</answer>")
    letter = gold if correct else ("B" if gold == "A" else "A")
    return f"<think>hmm</think><answer>{letter}</answer>"


def _completions(record, pattern):
    return [Completion(text=_answer(record, ok), token_ids=[1] * (3 + i)) for i, ok in enumerate(pattern)]


def test_prompt_order_is_a_seeded_permutation_per_epoch():
    first = prompt_indices(5, seed=3, position=0, count=5)
    assert sorted(first) == [0, 1, 2, 3, 4]
    assert prompt_indices(5, seed=3, position=2, count=6) == first[2:] + prompt_indices(5, 3, 5, 3)
    assert prompt_indices(5, seed=3, position=0, count=5) == first
    assert prompt_indices(5, seed=4, position=0, count=5) != first or prompt_indices(5, 5, 0, 5) != first


def test_per_group_rewards_bonus_and_advantages_mixed_batch(mixed):
    cfg = RLConfig(model="m", train_data="d", output_dir="o", algorithm="tgrpo", num_generations=4,
                   rewards=("accuracy", "format"), alpha=0.3, mu=0.8)
    recs = [s.record for s in mixed.samples]
    assert [r.data_type for r in recs] == ["video", "video", "image"]
    ordered = [_completions(recs[0], [1, 1, 1, 0]), _completions(recs[1], [1, 0, 0, 0]),
               _completions(recs[2], [1, 1, 1, 1])]
    shuffled, owners = shuffled_samples(mixed, seed=0, step=1, unit="frame")
    assert owners == [0, 1]  # the image gets no shuffled copy
    shuffled_out = [_completions(recs[0], [0, 0]), _completions(recs[1], [1, 1])]
    s = score_rollouts(cfg, mixed.samples, ordered, shuffled_out, owners)
    # group 0: p = 0.75 > 0.8 * 0 -> +0.3 on its correct completions; group 1: p = 0.25 < 0.8 * 1 -> none
    assert s.temporal.applied.tolist() == [True, False]
    assert s.rewards.tolist() == pytest.approx([2.3, 2.3, 2.3, 1.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # group 0: mean 1.975, unbiased std 0.65; group 1: mean 1.25, std 0.5; group 2: all equal -> 0
    a0, a1 = 0.325 / (0.65 + 1e-4), 0.75 / (0.5 + 1e-4)
    assert s.advantages.tolist() == pytest.approx(
        [a0, a0, a0, -0.975 / (0.65 + 1e-4), a1, -a1 / 3, -a1 / 3, -a1 / 3, 0, 0, 0, 0], rel=1e-5)
    assert s.shuffled_accuracy.tolist() == [0, 0, 1, 1]
    assert s.per_reward["format"].tolist() == [1.0] * 12


def test_advantage_mode_and_the_advantage_shift(mixed):
    recs = [s.record for s in mixed.samples]
    ordered = [_completions(recs[0], [1, 1, 1, 0]), _completions(recs[1], [1, 0, 0, 0]),
               _completions(recs[2], [1, 1, 1, 1])]
    shuffled, owners = shuffled_samples(mixed, seed=0, step=1, unit="frame")
    shuffled_out = [_completions(recs[0], [0, 0]), _completions(recs[1], [1, 1])]
    scored = {}
    for mode in ("reward", "advantage"):
        cfg = RLConfig(model="m", train_data="d", output_dir="o", algorithm="tgrpo", num_generations=4,
                       rewards=("accuracy", "format"), alpha=0.3, mu=0.8, temporal_bonus_mode=mode)
        scored[mode] = score_rollouts(cfg, mixed.samples, ordered, shuffled_out, owners)
    # reward mode: group 0 is 0/1 with equal format, so the bonus is an affine map: shift of order eps
    assert 0 < float(scored["reward"].advantage_shift) < 1e-3
    # advantage mode: group 0 without the bonus [2, 2, 2, 1] -> mean 1.75, std 0.5; the bonus [.3, .3, .3, 0]
    # centred adds [+0.075, +0.075, +0.075, -0.225]; group 1 (no bonus) and the image group are GRPO's
    s = scored["advantage"]
    a0, a1 = 0.25 / (0.5 + 1e-4), 0.75 / (0.5 + 1e-4)
    assert s.advantages.tolist() == pytest.approx(
        [a0 + 0.075, a0 + 0.075, a0 + 0.075, -3 * a0 - 0.225, a1, -a1 / 3, -a1 / 3, -a1 / 3, 0, 0, 0, 0],
        rel=1e-5)
    assert s.rewards.tolist() == scored["reward"].rewards.tolist()  # the same rewards are logged either way
    # mean |shift| over the 8 video completions: (3 * 0.075 + 0.225 + 0) / 8
    assert float(s.advantage_shift) == pytest.approx(0.45 / 8, rel=1e-5)


def test_grpo_scoring_has_no_bonus_and_length_bonus_is_per_group(mixed):
    cfg = RLConfig(model="m", train_data="d", output_dir="o", algorithm="grpo", num_generations=2,
                   rewards=("accuracy",), length_bonus=True, length_omega=0.5, length_min=3, length_max=3)
    recs = [s.record for s in mixed.samples]
    ordered = [_completions(recs[0], [1, 1]), _completions(recs[1], [1, 0]), _completions(recs[2], [0, 0])]
    s = score_rollouts(cfg, mixed.samples, ordered, [], [])
    assert s.temporal is None and float(s.advantage_shift) == 0.0
    # lengths are 3, 4 in every group; only group 0 has two correct -> its 3-token one gets +0.5
    assert s.length.tolist() == [0.5, 0, 0, 0, 0, 0]
    assert s.rewards.tolist() == [1.5, 1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("unit", ["frame", "pair"])
def test_shuffles_are_fresh_non_identity_and_keep_pairs(unit):
    perms = {tuple(shuffle_permutation(8, unit, np.random.default_rng(s))) for s in range(40)}
    assert tuple(range(8)) not in perms and len(perms) > 5
    if unit == "pair":
        assert all(p[k] % 2 == 0 and p[k + 1] == p[k] + 1 for p in perms for k in range(0, 8, 2))
    assert shuffle_permutation(4, "pair", np.random.default_rng(0)) == [2, 3, 0, 1]  # the only other order


def test_shuffled_rollouts_see_permuted_pixels(mixed, processor):
    """The pixel tensors of a pair-shuffled clip are the ordered clip's temporal patches, permuted."""
    from videor1.model.inputs import encode

    shuffled, owners = shuffled_samples(mixed, seed=0, step=7, unit="pair")
    ordered = encode(processor, [mixed.samples[owners[0]]])
    moved = encode(processor, [shuffled[0]])
    t, h, w = ordered["video_grid_thw"][0].tolist()
    assert t == 2
    po = ordered["pixel_values_videos"].reshape(t, h * w, -1)
    ps = moved["pixel_values_videos"].reshape(t, h * w, -1)
    assert not torch.equal(po, ps)
    assert torch.equal(ps, po.flip(0))  # 2 pairs: the only non-identity pair order swaps them
    assert torch.equal(moved["second_per_grid_ts"], ordered["second_per_grid_ts"])
    frame_shuffled, _ = shuffled_samples(mixed, seed=0, step=7, unit="frame")
    clip, orig = frame_shuffled[0].media, mixed.samples[owners[0]].media
    assert not np.array_equal(clip.frames, orig.frames)
    assert sorted(map(bytes, clip.frames)) == sorted(map(bytes, orig.frames))
    again, _ = shuffled_samples(mixed, seed=0, step=8, unit="frame")
    steps_differ = [not np.array_equal(a.media.frames, b.media.frames) for a, b in zip(again, frame_shuffled)]
    assert any(steps_differ)  # a fresh permutation each step


class _Recorder:
    """A stand-in engine that records what it was asked to generate."""

    def __init__(self):
        self.calls = []

    def generate(self, samples, params):
        self.calls.append((list(samples), params))
        return [[Completion(text=f"{i}-{k}", token_ids=[i, k]) for k in range(params.n)]
                for i in range(len(samples))]


def test_one_generate_call_for_ordered_and_shuffled(mixed):
    shuffled, _ = shuffled_samples(mixed, seed=0, step=1, unit="frame")
    engine = _Recorder()
    ordered, shuf = generate_rollouts(engine, mixed.samples, shuffled, SamplingParams(), 4, 2)
    assert len(engine.calls) == 1
    call, params = engine.calls[0]
    assert params.n == 2 and len(call) == 3 * 2 + 2
    assert call[:3] == mixed.samples and call[3:6] == mixed.samples and call[6:] == shuffled
    assert [len(g) for g in ordered] == [4, 4, 4] and [len(g) for g in shuf] == [2, 2]
    assert [c.text for c in ordered[1]] == ["1-0", "1-1", "4-0", "4-1"]
    assert [c.text for c in shuf[1]] == ["7-0", "7-1"]


def test_too_long_and_undecodable_samples_are_skipped(synth_dir, processor, tmp_path):
    from videor1.data.records import Record

    records, _ = read_records(synth_dir / "rl.jsonl", synth_dir)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    bad = Record(problem_id="bad-video", problem="?", data_type="video", problem_type="numerical", options=(),
                 solution="<answer>1</answer>", path="broken.mp4")
    image_path = next(r.path for r in records if r.data_type == "image")
    long = Record(problem_id="long", problem="why " * 3000, data_type="image", problem_type="numerical",
                  options=(), solution="<answer>1</answer>", path=image_path)
    long_ok = Record(problem_id="ok", problem="why", data_type="image", problem_type="numerical", options=(),
                     solution="<answer>1</answer>", path=image_path)
    (tmp_path / image_path).parent.mkdir(parents=True)
    shutil.copy(synth_dir / image_path, tmp_path / image_path)
    p = load_prompts([bad, long, long_ok], [0, 1, 2], [0, 1, 2], processor, media_root=tmp_path, video=VIDEO,
                     image=IMAGE, max_prompt_length=1000)
    reasons = dict(p.skipped)
    assert [s.record.problem_id for s in p.samples] == ["ok"] and p.positions == [2], reasons
    assert set(reasons) == {"bad-video", "long"}
    assert "MediaError" in reasons["bad-video"] and "max_prompt_length 1000" in reasons["long"]
    assert p.batch["input_ids"].shape[0] == 1 and int(p.batch["attention_mask"].sum()) <= 1000
