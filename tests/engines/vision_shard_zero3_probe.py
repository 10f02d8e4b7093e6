"""Launched by test_engines_vision_shard.py under DeepSpeed ZeRO-3 (`accelerate launch --config_file
configs/accelerate/zero3.yaml ... vision_shard_zero3_probe.py OUT MODEL_DIR MODE`): the tiny model's vision
tower, partitioned by ZeRO-3 (parameters gathered at every module call, forward and backward), over three media
batches in turn, each one SGD step on mean(w * features). MODE "plain": the plain tower call (one process);
"sharded": `sharded_vision_embeds` (2 processes; in the one-image batch rank 1 encodes nothing and runs the
tower on its zero input). Each process back-propagates the whole loss ("own" backward) times the process count,
since the engine averages the processes' gradients. Rank 0 saves each batch's features and the final vision
weights to OUT (torch.save)."""

from __future__ import annotations

import sys

import torch

from videor1.model.load import load_model
from videor1.model.vision_shard import sharded_vision_embeds
from videor1.train.common import fill_deepspeed_auto
from videor1.train.engine import make_accelerator

CASES = {"video_t3": [[3, 10, 12]], "image": [[1, 8, 12]], "mixed": [[3, 6, 8], [1, 4, 6], [2, 4, 4]]}
LR = 1.0   # on mean(w * features): updates of ~1e-2, far above fp32 rounding of the weights


def features(out) -> list[torch.Tensor]:
    return [out.pooler_output, *(getattr(out, "deepstack_features", None) or [])]


def vision_weights(accelerator, model) -> dict[str, torch.Tensor]:
    """The vision tower's whole weights (gathered: a collective under ZeRO-3; empty on the other ranks)."""
    state = accelerator.get_state_dict(model) or {}
    return {k: v.float().clone() for k, v in state.items() if ".visual." in f".{k}"}


def main() -> None:
    out_path, model_dir, mode = sys.argv[1:4]
    accelerator = make_accelerator()
    model = load_model(model_dir, device=accelerator.device, dtype=torch.float32)
    fill_deepspeed_auto(accelerator, micro_batch=1, accumulation=1, max_grad_norm=0.0, model=model)
    accelerator.state.deepspeed_plugin.deepspeed_config["zero_allow_untested_optimizer"] = True
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    visual = model.module.model.visual
    config = visual.config
    dim = config.in_channels * config.temporal_patch_size * config.patch_size ** 2
    saved: dict = {"initial": vision_weights(accelerator, model)}
    for seed, (case, grid) in enumerate(CASES.items()):
        grid_t = torch.tensor(grid)
        gen = torch.Generator().manual_seed(seed)
        pixels = torch.randn(int(grid_t.prod(-1).sum()), dim, generator=gen)
        if mode == "sharded":
            out = sharded_vision_embeds(visual, pixels, grid_t, grad="own")
        else:
            out = visual(pixels, grid_thw=grid_t, return_dict=True)
        feats = features(out)
        loss = sum((torch.randn(f.shape, generator=gen) * f).mean() for f in feats)
        accelerator.backward(loss * accelerator.num_processes)
        optimizer.step()
        optimizer.zero_grad()
        saved[case] = [f.detach().clone() for f in feats]
    saved["weights"] = vision_weights(accelerator, model)
    if accelerator.is_main_process:
        torch.save(saved, out_path)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
