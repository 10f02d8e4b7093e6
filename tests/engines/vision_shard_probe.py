"""Launched by test_engines_vision_shard.py (`accelerate launch ... vision_shard_probe.py OUT MODEL_DIR...`, 2
processes, gloo): for each tiny model (float64) and each media case, `sharded_vision_embeds` against the plain
`visual(...)` call on the same inputs, both gradient modes, and the whole model fed the sharded features through
`mm_encoder_outputs`. Every rank logs its collectives and vision-tower calls; rank 0 writes every measured
difference and the ranks' logs to OUT (json) and the test asserts on them."""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from videor1.model.load import load_model
from videor1.model.vision_shard import plan_shards, sharded_vision_embeds, split_per_item

# grids in patches [t, h, w] (h, w multiples of the merge size 2): kinds of media batches
CASES = {
    "video_t3": [[3, 10, 12]],                          # 3 temporal patches over 2 ranks; 5x6 merged: 4 windows
    "video_t1": [[1, 6, 8]],                            # one temporal patch: rank 1 encodes nothing
    "image": [[1, 8, 12]],                              # one image: rank 1 encodes nothing
    "images": [[1, 8, 12], [1, 4, 4], [1, 6, 6]],       # whole images balanced by patch count
    "mixed": [[3, 6, 8], [1, 4, 6], [2, 4, 4]],         # a video, an image, a video in one batch
}
LOG: list[str] = []


def logged(name, fn):
    def call(*args, **kwargs):
        LOG.append(f"{name}{tuple(args[0].shape)}" if args and hasattr(args[0], "shape") else name)
        return fn(*args, **kwargs)
    return call


dist.all_gather_into_tensor = logged("all_gather", dist.all_gather_into_tensor)
dist.reduce_scatter_tensor = logged("reduce_scatter", dist.reduce_scatter_tensor)


def fields(out) -> dict[str, torch.Tensor]:
    found = {"pooler_output": out.pooler_output, "last_hidden_state": out.last_hidden_state}
    for k, f in enumerate(getattr(out, "deepstack_features", None) or []):
        found[f"deepstack_{k}"] = f
    return found


def weights_like(values: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in values.items()}


def loss_of(values: dict[str, torch.Tensor], w: dict[str, torch.Tensor], part: tuple[int, int] | None = None):
    """sum(w * value) over every field, or over rows part[0] of part[1] equal row chunks (a rank's share)."""
    total = 0
    for k, v in values.items():
        rows = v.shape[0]
        lo, hi = (0, rows) if part is None else (rows * part[0] // part[1], rows * (part[0] + 1) // part[1])
        total = total + (w[k][lo:hi] * v[lo:hi]).sum()
    return total


def grads(model) -> dict[str, torch.Tensor]:
    found = {}
    for name, p in model.named_parameters():
        found[name] = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        p.grad = None
    return found


def summed(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for v in values.values():
        dist.all_reduce(v)
    return values


def rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    scale = max(float(v.abs().max()) for v in b.values()) or 1.0
    return max(float((a[k] - b[k]).abs().max()) for k in b) / scale


def tower_case(model, grid: list[list[int]], seed: int) -> dict[str, float]:
    visual = model.model.visual
    rank, world = dist.get_rank(), dist.get_world_size()
    grid_t = torch.tensor(grid)
    dim = visual.config.in_channels * visual.config.temporal_patch_size * visual.config.patch_size ** 2
    pixels = torch.randn(int(grid_t.prod(-1).sum()), dim, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    ref_out = visual(pixels, grid_thw=grid_t, return_dict=True)
    ref = fields(ref_out)
    w = weights_like(ref, seed + 1)
    loss_of(ref, w).backward()
    ref_grads = grads(model)
    result = {"same_class": float(type(ref_out) is type(sharded_vision_embeds(visual, pixels, grid_t)))}
    grads(model)
    # "own": every rank back-propagates the whole loss; "sum": each rank its chunk of rows (not aligned with the
    # ranks' vision shares); the wrong pairings must differ: "own" with chunks loses the other ranks' share
    # where the shares and chunks differ, "sum" with the whole loss on every rank doubles the gradient
    for mode, part in (("own", None), ("sum", (rank, world)), ("own", (rank, world)), ("sum", None)):
        out = fields(sharded_vision_embeds(visual, pixels, grid_t, grad=mode))
        key = f"{mode}_{'whole' if part is None else 'chunk'}"
        result[f"embeds_{key}"] = rel(out, ref)
        loss_of(out, w, part).backward()
        result[f"grads_{key}"] = rel(summed(grads(model)), ref_grads)
    result["rows"] = list(plan_shards(grid, world, visual.spatial_merge_size ** 2).rows)
    return result


def model_case(model, grid: list[list[int]], seed: int) -> dict[str, float]:
    """The whole model on a video prompt: logits and gradients with the sharded features passed in."""
    visual, cfg = model.model.visual, model.config
    grid_t = torch.tensor(grid)
    merge = visual.spatial_merge_size ** 2
    dim = visual.config.in_channels * visual.config.temporal_patch_size * visual.config.patch_size ** 2
    pixels = torch.randn(int(grid_t.prod(-1).sum()), dim, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    # a vision run per video (Qwen2.5-VL) or per temporal patch (Qwen3-VL), as the processors lay them out
    runs = [(t, h * w // merge) for t, h, w in grid]
    if cfg.model_type == "qwen3_vl":
        runs = [(1, n) for t, n in runs for _ in range(t)]
    ids = [5, 6, 7]
    for t, n in runs:
        ids += [cfg.vision_start_token_id] + [cfg.video_token_id] * t * n + [cfg.vision_end_token_id, 8, 9]
    input_ids = torch.tensor([ids])
    types = (input_ids == cfg.video_token_id).long() * 2   # mm_token_type_ids: 2 marks video tokens
    w = torch.randn(1, len(ids), cfg.text_config.vocab_size, generator=torch.Generator().manual_seed(seed + 2),
                    dtype=torch.float64)
    ref = model(input_ids=input_ids, pixel_values_videos=pixels, video_grid_thw=grid_t, mm_token_type_ids=types).logits
    (w * ref).sum().backward()
    ref_grads = grads(model)
    feats = split_per_item(sharded_vision_embeds(visual, pixels, grid_t, grad="own", with_last_hidden_state=False),
                           grid_t, merge)
    logits = model(input_ids=input_ids, video_grid_thw=grid_t, mm_token_type_ids=types,
                   mm_encoder_outputs={"video": feats}).logits
    (w * logits).sum().backward()
    got = grads(model)
    vision = {k: v for k, v in got.items() if ".visual." in f".{k}"}
    got.update(summed(vision))   # the vision tower's gradient is shared out; the LLM's is computed whole on each
    return {"logits": float((logits - ref).abs().max() / ref.abs().max()), "grads": rel(got, ref_grads)}


def main() -> None:
    out_path, model_dirs = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo", timeout=timedelta(seconds=int(os.environ.get("VIDEOR1_DIST_TIMEOUT_S", "60"))))
    torch.manual_seed(0)
    results = {}
    for model_dir in model_dirs:
        model = load_model(model_dir, device="cpu", dtype=torch.float64)
        model.model.visual.register_forward_hook(lambda module, args, output: LOG.append("visual"))
        family = model.config.model_type
        for seed, (case, grid) in enumerate(CASES.items()):
            LOG.append(f"{family}:{case}")
            results[f"{family}:{case}"] = tower_case(model, grid, seed)
        LOG.append(f"{family}:model")
        results[f"{family}:model"] = model_case(model, [[3, 6, 8], [2, 4, 4]], 10)
    logs = [None] * dist.get_world_size()
    dist.all_gather_object(logs, LOG)
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump({"results": results, "logs": logs}, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
