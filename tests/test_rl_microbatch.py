"""Loss micro-batches (`loss_micro_batch_size`, videor1.rl.step.loss_parts): the gradient summed over micro-batches
of whole groups, each divided by the whole batch's count, equals the one-pass gradient, for every loss_type,
with and without the shared prefix (tiny Qwen2.5-VL, fp32, 2 videos + 1 image of different lengths).
Also: truncated completions masked out, and clips too short for pair shuffles.

Tolerance (fp32; the micro-batches sum the same terms in another order, with other padding): every
parameter's gradient within 1e-5 x its largest |entry| in every entry; losses within 1e-5 relative.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.records import read_records
from videor1.model.inputs import Sample, pad_token_id, vision_token_ids
from videor1.model.load import load_model
from videor1.rl.algorithms import loss_count, policy_loss
from videor1.rl.step import (Prompts, completion_logps, groups_per_part, load_prompts, loss_parts, shuffle_unit_for,
                             shuffled_samples)

VIDEO = VideoSpec(fps=2.0, min_frames=4, max_frames=4, min_pixels=56 * 56, max_pixels=56 * 56)
IMAGE = ImageSpec(min_pixels=56 * 56, max_pixels=56 * 56)
G, MAX_LEN, GRAD_TOL = 2, 9, 1e-5


@pytest.fixture(scope="module")
def prompts(synth_dir, processor):
    records, _ = read_records(synth_dir / "rl.jsonl", synth_dir)
    chosen = [r for r in records if r.data_type == "video"][:2] + [r for r in records if r.data_type == "image"][:1]
    return load_prompts(chosen, [0, 1, 2], [0, 1, 2], processor, media_root=synth_dir, video=VIDEO, image=IMAGE,
                        max_prompt_length=4096)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype=torch.float32).train()


def _completions(processor, n_rows: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    banned = set(vision_token_ids(processor))
    out = []
    for _ in range(n_rows):
        n = int(torch.randint(1, MAX_LEN + 1, (1,), generator=gen))
        out.append([int(x) for x in torch.randint(0, 1000, (n,), generator=gen) if int(x) not in banned] or [11])
    return out


def _grads(model, prompts, processor, tokens, *, shared: bool, per_part: int, loss_type: str,
           drop: torch.Tensor | None = None) -> tuple[float, dict[str, torch.Tensor], int]:
    """(summed loss, {name: grad}, number of parts) of the micro-batches, each divided by the whole batch's
    count, with old / reference log-probs offset per completion token (clipping and the KL term act)."""
    gen = torch.Generator().manual_seed(7)
    n_rows = len(tokens)
    old_off, ref_off = 0.3 * torch.randn(n_rows, MAX_LEN, generator=gen), 0.2 * torch.randn(n_rows, MAX_LEN,
                                                                                           generator=gen)
    advantages = torch.randn(n_rows, generator=gen)
    pad = pad_token_id(processor)
    parts = loss_parts(prompts.batch, tokens, advantages, G, pad, shared=shared, per_part=per_part, drop=drop)
    normaliser = sum(loss_count(loss_type, p.mask, MAX_LEN) for p in parts)
    model.zero_grad(set_to_none=True)
    total, first = 0.0, 0
    for part in parts:
        n, c = part.ids.shape
        rows = slice(first, first + n)
        first += n
        logp = completion_logps(model, part.inputs, part.ids, 0.7)
        out = policy_loss(logp, logp.detach() + old_off[rows, -c:], part.advantages, part.mask,
                          ref_logp=logp.detach() + ref_off[rows, -c:], beta=0.04, epsilon=0.2, loss_type=loss_type,
                          max_completion_length=MAX_LEN, normaliser=normaliser)
        out.loss.backward()
        total += float(out.loss.detach())
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return total, grads, len(parts)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_micro_batches_give_the_one_pass_gradient(loss_type, shared, model, prompts, processor):
    tokens = _completions(processor, 3 * G, seed=1)
    loss_one, g_one, n_one = _grads(model, prompts, processor, tokens, shared=shared, per_part=3, loss_type=loss_type)
    loss_mb, g_mb, n_mb = _grads(model, prompts, processor, tokens, shared=shared, per_part=1, loss_type=loss_type)
    assert (n_one, n_mb) == (1, 3)
    assert loss_mb == pytest.approx(loss_one, rel=1e-5)
    assert set(g_one) == set(g_mb) and any("visual" in name for name in g_one)
    for name in g_one:
        scale = float(g_one[name].abs().max())
        err = float((g_one[name] - g_mb[name]).abs().max())
        assert err <= GRAD_TOL * max(scale, 1e-12), f"{name}: max |grad diff| {err:.3g} vs max |grad| {scale:.3g}"


def test_groups_per_part_rounds_down_to_whole_groups():
    assert groups_per_part(0, 8, 5) == 5          # off: one pass
    assert groups_per_part(16, 8, 5) == 2 and groups_per_part(20, 8, 5) == 2
    assert groups_per_part(3, 8, 5) == 1          # at least one group


def test_masked_truncated_completions_get_an_empty_mask(prompts, processor):
    """`drop` (mask_truncated_completions) zeroes those completions' masks, in whichever micro-batch they
    fall; they still count as sequences for grpo's normaliser (as TRL)."""
    tokens = _completions(processor, 3 * G, seed=2)
    drop = torch.tensor([True, False, False, True, False, False])
    parts = loss_parts(prompts.batch, tokens, torch.ones(3 * G), G, pad_token_id(processor), shared=True,
                       per_part=2, drop=drop)
    assert [int(row.sum()) == 0 for row in parts[0].mask] == [True, False, False, True]
    assert bool((parts[1].mask.sum(1) > 0).all())
    assert sum(loss_count("grpo", p.mask) for p in parts) == 6.0
    assert sum(loss_count("bnpo", p.mask) for p in parts) == sum(len(t) for t, d in zip(tokens, drop) if not d)


# ------------------------------------------------------------------------------ short clips, pair shuffles
def test_shuffle_unit_rule_for_short_clips():
    assert [shuffle_unit_for(n, "pair") for n in (1, 2, 3, 4, 5, 6)] == [None, "frame", "frame", "pair", "frame",
                                                                        "pair"]
    assert [shuffle_unit_for(n, "frame") for n in (1, 2, 3)] == [None, "frame", "frame"]


def test_a_short_clip_under_pair_shuffles_is_frame_shuffled_with_a_warning(prompts, caplog):
    clip = next(s.media for s in prompts.samples if getattr(s.media, "frames", None) is not None)
    two = Sample(record=prompts.samples[0].record, media=replace(clip, frames=clip.frames[:2]), messages=[])
    one = Sample(record=prompts.samples[1].record, media=replace(clip, frames=clip.frames[:1]), messages=[])
    short = Prompts([two, one, prompts.samples[0]], [5, 6, 7], None, [])
    with caplog.at_level(logging.WARNING, logger="videor1.rl.step"):
        out, owners = shuffled_samples(short, seed=0, step=3, unit="pair")
    assert owners == [0, 2]                                 # the 1-frame clip gets no shuffled rollouts
    assert np.array_equal(out[0].media.frames, two.media.frames[[1, 0]])
    assert len(out[1].media.frames) == 4
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "2 frame(s)" in warned[0] and "shuffled by frame instead of by pair" in warned[0]
    assert "not shuffled" in warned[1] and repr(prompts.samples[1].record.problem_id) in warned[1]


@pytest.mark.parametrize("shared", [True, False])
def test_the_loss_forward_keeps_no_float32_logits(shared, model, prompts, processor):
    """The policy forward under bf16 autocast, as the trainer runs it: autograd keeps the bf16 logits and no
    float32 tensor over the vocabulary (before issue 35: a float32 copy of every completion row's logits)."""
    vocab = model.get_output_embeddings().weight.shape[0]
    tokens = _completions(processor, 3 * G, seed=4)
    part = loss_parts(prompts.batch, tokens, torch.ones(3 * G), G, pad_token_id(processor), shared=shared,
                      per_part=3)[0]
    saved: list[tuple[torch.dtype, tuple[int, ...]]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append((t.dtype, tuple(t.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        logp = completion_logps(model, part.inputs, part.ids, 0.7)
    over_vocab = [(dtype, shape) for dtype, shape in saved if shape and shape[-1] == vocab]
    assert logp.dtype == torch.float32 and over_vocab
    assert all(dtype == torch.bfloat16 for dtype, _ in over_vocab), over_vocab
