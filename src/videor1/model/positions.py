"""The one M-RoPE: the 3D (temporal, height, width) positions of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL / Qwen3.5 prompt, by
Qwen's original rule, and the hook that makes every transformers forward and `generate` of ours use them.

The rule (Qwen's code as first released in transformers 4.x, and vLLM 0.32's `get_mrope_input_positions`),
for the real (unpadded) tokens of one row, split into runs of text and of vision tokens:

* a text run starts at ``s`` = (the largest position so far) + 1, or 0 at the start, and counts up by one
  on all three axes;
* a vision run of grid (t, h, w) after merging starts at ``s`` too and gives its token (i, j, k), in
  row-major order, the positions (s + floor(i * f), s + j, s + k). The time factor f is
  ``second_per_grid_t * tokens_per_second`` for a Qwen2.5-VL video (absolute time), 1 for a Qwen2-VL video
  and for every image (t = 1). Qwen3-VL and Qwen3.5 write time as text: each temporal patch of a video is its
  own run of grid (1, h, w), separated by its timestamp tokens.

f is computed as vLLM does: the (float32) ``second_per_grid_t`` read as a Python float times
``tokens_per_second``, and ``i * f`` in float64 before truncation. For a fractional value this can be one
below the exact product (2 / 2.4 fps at 2 tokens/s gives f = 1.6666666269..., so i = 3 gives 4, not 5);
rollouts sampled by vLLM and every HF forward of ours then still use the same integers.

What transformers 5.17-5.23 do instead (`get_rope_index` of `modeling_qwen2_vl.py` / `modeling_qwen2_5_vl.py`):
the text after a vision run starts at ``s + max(h, w)``, ignoring how far the run's temporal positions
reach. Both rules agree when the spatial extent covers the temporal one (an image; a short or wide clip);
they differ when ``floor((t - 1) * f) >= max(h, w)``: for Qwen2.5-VL a 4:3 clip at 16 frames or most clips
at 32 / 64 frames, for Qwen2-VL any clip with more temporal than spatial patches. Then the text after the
video sits at positions the released checkpoints were never trained with, and a vLLM rollout is scored by
HF under positions other than those it was sampled with. Qwen3-VL's runs have t = 1, where both rules
coincide (tested).

`install_mrope(model)` replaces `get_rope_index` on each of the model's multimodal backbones (the module
whose `compute_3d_position_ids` and generation's `_prepare_position_ids_for_generation` call it, in every
transformers release of our range) with `rope_index` below, so forward passes (loss, reference, SFT) and
`generate` (rollouts, evaluation, inference, annotation) all take these positions. The position delta it
returns is relative to each row's real length, the convention of transformers 5.x's decoding step.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from videor1.model.families import family_of_model_type

TEXT, IMAGE, VIDEO = 0, 1, 2   # mm_token_type_ids values (transformers' processors)
_INSTALLED = "_videor1_mrope"  # attribute marking a backbone whose get_rope_index is ours


@dataclass(frozen=True)
class MropeRule:
    """What a family's positions depend on.

    spatial_merge: merge size of the vision tower (2); tokens_per_second: Qwen2.5-VL's temporal scale
    (None: temporal positions count grid steps, Qwen2-VL); frame_runs: each temporal patch of a video is
    its own run (Qwen3-VL's timestamps)."""

    spatial_merge: int
    tokens_per_second: float | None = None
    frame_runs: bool = False


def rule_of(config: Any) -> MropeRule:
    """The `MropeRule` of a model config (top-level Qwen*-VL config or its `model_type`-bearing backbone): the
    kind its family declares (`MROPE` of `videor1.model.families`). ValueError for an unknown model type."""
    model_type = getattr(config, "model_type", None)
    vision = getattr(config, "vision_config", None)
    merge = int(getattr(vision, "spatial_merge_size", 2))
    kind = family_of_model_type(str(model_type)).MROPE
    if kind == "time_scaled":
        return MropeRule(merge, tokens_per_second=float(getattr(vision, "tokens_per_second", 2)))
    if kind == "grid_steps":
        return MropeRule(merge)
    if kind == "frame_runs":
        return MropeRule(merge, frame_runs=True)
    raise ValueError(f"no M-RoPE rule {kind!r} (model_type {model_type!r})")


def _runs(token_types: np.ndarray) -> list[tuple[int, int, int]]:
    """(kind, start, end) of each maximal run of equal token types."""
    if token_types.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(token_types)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [token_types.size]])
    return [(int(token_types[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def _vision_grids(kind: int, image_grids: Sequence[Sequence[int]], video_grids: Sequence[Sequence[int]],
                  seconds: Sequence[float], rule: MropeRule) -> list[tuple[tuple[int, int, int], float]]:
    """The (t, h, w) grid before merging and the time factor of every vision run of `kind`, in order."""
    if kind == IMAGE:
        return [((1, int(g[1]), int(g[2])), 1.0) for g in image_grids]
    out = []
    for n, g in enumerate(video_grids):
        t, h, w = (int(x) for x in g)
        if rule.frame_runs:
            out.extend([((1, h, w), 1.0)] * t)
            continue
        factor = 1.0
        if rule.tokens_per_second is not None:
            factor = (float(seconds[n]) if n < len(seconds) else 1.0) * rule.tokens_per_second
        out.append(((t, h, w), factor))
    return out


def row_positions(token_types: Sequence[int], image_grids: Sequence[Sequence[int]] = (),
                  video_grids: Sequence[Sequence[int]] = (), seconds: Sequence[float] = (), *,
                  rule: MropeRule) -> np.ndarray:
    """Positions [3, n] (int64) of one row's real tokens, given their mm_token_type_ids, the row's image and
    video grids (as the processor gives them, before merging) and each video's `second_per_grid_t`.

    Raises ValueError when a vision run's length does not match its grid, or grids and runs disagree in
    number."""
    types_ = np.asarray(token_types, dtype=np.int64)
    pending = {IMAGE: _vision_grids(IMAGE, image_grids, video_grids, seconds, rule),
               VIDEO: _vision_grids(VIDEO, image_grids, video_grids, seconds, rule)}
    parts: list[np.ndarray] = []
    start = 0
    for kind, lo, hi in _runs(types_):
        if kind == TEXT:
            parts.append(np.broadcast_to(np.arange(hi - lo), (3, hi - lo)) + start)
        else:
            start, block = _vision_run(kind, hi - lo, pending, start, rule)
            parts.append(block)
            continue
        start = int(parts[-1].max()) + 1
    for kind, left in pending.items():
        if left:
            raise ValueError(f"{len(left)} {'image' if kind == IMAGE else 'video'} grid(s) have no tokens in the row")
    return np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), dtype=np.int64)


def _vision_run(kind: int, length: int, pending: dict, start: int, rule: MropeRule) -> tuple[int, np.ndarray]:
    """Positions of a run of `length` vision tokens (one or, for Qwen3-VL frames, several grids): the start
    of what follows and the block [3, length]."""
    blocks, used = [], 0
    while used < length:
        if not pending[kind]:
            raise ValueError(f"vision run of {length} tokens has no grid left to match it")
        (t, h, w), factor = pending[kind].pop(0)
        gh, gw = h // rule.spatial_merge, w // rule.spatial_merge
        grid = np.indices((t, gh, gw)).reshape(3, -1).astype(np.int64)
        if factor != 1.0:
            grid[0] = (grid[0] * factor).astype(np.int64)
        blocks.append(grid + start)
        start = int(blocks[-1].max()) + 1
        used += t * gh * gw
    if used != length:
        raise ValueError(f"vision run of {length} tokens does not match its grids ({used} tokens)")
    return start, np.concatenate(blocks, axis=1)


def rope_index(rule: MropeRule, input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor | None,
               image_grid_thw: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None,
               second_per_grid_ts: torch.Tensor | None = None,
               attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions [3, B, L] of a batch (0 on padding) and each row's delta [B, 1] = max position + 1 - its
    real length, with the signature and results transformers' `get_rope_index` returns. Images and videos
    are consumed in row order (row 0's first, as the processor lays them out)."""
    if mm_token_type_ids is None:
        raise ValueError("M-RoPE needs mm_token_type_ids (the processor returns them beside input_ids)")
    b, length = input_ids.shape
    mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    types_ = mm_token_type_ids.detach().cpu().numpy()
    mask_np = mask.detach().cpu().numpy()
    images = image_grid_thw.tolist() if image_grid_thw is not None else []
    videos = video_grid_thw.tolist() if video_grid_thw is not None else []
    seconds = [float(x) for x in torch.as_tensor(second_per_grid_ts).reshape(-1).tolist()] \
        if second_per_grid_ts is not None else []
    out = np.zeros((3, b, length), dtype=np.int64)
    deltas = []
    n_img = n_vid = 0
    for row in range(b):
        row_types = types_[row][mask_np[row]]
        k_img, k_vid = _count_media(row_types, videos[n_vid:], rule)
        pos = row_positions(row_types, images[n_img:n_img + k_img], videos[n_vid:n_vid + k_vid],
                            seconds[n_vid:n_vid + k_vid], rule=rule)
        n_img, n_vid = n_img + k_img, n_vid + k_vid
        out[:, row, mask_np[row]] = pos
        deltas.append((int(pos.max()) + 1 if pos.size else 0) - int(row_types.size))
    positions = torch.from_numpy(out).to(device=input_ids.device, dtype=input_ids.dtype)
    return positions, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def _count_media(row_types: np.ndarray, videos_left: list, rule: MropeRule) -> tuple[int, int]:
    """How many images and videos a row holds (one per vision run; Qwen3-VL: a video's frames are t runs)."""
    runs = _runs(row_types)
    n_images = sum(1 for kind, _, _ in runs if kind == IMAGE)
    video_runs = sum(1 for kind, _, _ in runs if kind == VIDEO)
    if not rule.frame_runs:
        return n_images, video_runs
    n_videos = 0
    while video_runs > 0 and n_videos < len(videos_left):
        video_runs -= int(videos_left[n_videos][0])
        n_videos += 1
    return n_images, n_videos


# -------------------------------------------------------------------------------------- the hook
def _backbones(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's modules whose class computes M-RoPE positions (`get_rope_index`)."""
    return [m for m in model.modules() if callable(getattr(type(m), "get_rope_index", None))]


def install_mrope(model: torch.nn.Module) -> torch.nn.Module:
    """Make every forward and `generate` of `model` (a Qwen*-VL model, possibly wrapped by peft, DeepSpeed
    or FSDP) use `rope_index` (Qwen's original rule) instead of its transformers `get_rope_index`.
    Idempotent; returns `model`. ValueError when the model has no M-RoPE backbone (a transformers release
    that renamed it must fail here, not train under other positions)."""
    backbones = _backbones(model)
    if not backbones:
        raise ValueError(f"{type(model).__name__} has no get_rope_index: not a Qwen*-VL model, or a "
                         "transformers release this project does not support")
    for module in backbones:
        if getattr(module, _INSTALLED, False):
            continue
        rule = rule_of(module.config)

        def get_rope_index(self, input_ids, mm_token_type_ids=None, image_grid_thw=None, video_grid_thw=None,
                           second_per_grid_ts=None, attention_mask=None, _rule=rule, **kwargs):
            return rope_index(_rule, input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw,
                              second_per_grid_ts, attention_mask)

        module.get_rope_index = types.MethodType(get_rope_index, module)
        setattr(module, _INSTALLED, True)
    return model


def mrope_installed(model: torch.nn.Module) -> bool:
    """Whether every M-RoPE backbone of `model` uses `rope_index`."""
    backbones = _backbones(model)
    return bool(backbones) and all(getattr(m, _INSTALLED, False) for m in backbones)


def rule_of_model(model: torch.nn.Module) -> MropeRule:
    """The `MropeRule` of a model whose M-RoPE backbones all use `rope_index` (possibly wrapped by peft,
    DeepSpeed or FSDP). ValueError when `install_mrope` was not applied: positions computed outside the
    model would then differ from those of its own forward."""
    backbones = _backbones(model)
    if not backbones or not all(getattr(m, _INSTALLED, False) for m in backbones):
        raise ValueError(f"{type(model).__name__}: the project's M-RoPE is not installed (load it with "
                         "videor1.model.load.load_model or call install_mrope)")
    return rule_of(backbones[0].config)


def text_after(positions: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
    """Positions [3, B, length] of `length` text tokens following the real tokens of each row, by the rule
    above (a text run starts at the largest position so far + 1 and counts up on all three axes).

    positions: [3, B, L] as `rope_index` gives them; mask: [B, L] bool, the real tokens those positions
    belong to (each row needs at least one)."""
    if not bool(mask.any(dim=1).all()):
        raise ValueError("text_after: every row needs at least one real token")
    fill = torch.iinfo(positions.dtype).min
    start = positions.masked_fill(~mask.bool().unsqueeze(0), fill).amax(dim=(0, 2)) + 1   # [B]
    steps = torch.arange(length, device=positions.device, dtype=positions.dtype)
    return (start[:, None] + steps[None, :]).unsqueeze(0).expand(3, -1, -1)
