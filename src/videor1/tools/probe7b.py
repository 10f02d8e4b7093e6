"""A random-init Qwen2.5-VL of the 7B's architecture on one device: how fast it generates, how much memory
generation and one forward/backward take (`scripts/gpu_smoke.py --only probe7b` on a GPU).

One prompt of `frames` frames at 224 x 448 px (128 * 28 * 28 pixels, the recipe's budget), `rows` sampled
completions of exactly `new_tokens` tokens, then one forward/backward with gradient checkpointing over the
prompt and one completion. The architecture can be scaled (`config`) so the same code runs on a CPU in tests.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from videor1.model.architectures import qwen25_vl_7b_config

_BEFORE, _AFTER = [151644, 872, 198], [3838, 374, 30, 151645, 198, 151644, 77091, 198]  # Qwen2 chat ids


def _peak_gib(device: torch.device) -> float:
    """The peak allocated since the last `_sync`, GiB (NaN off CUDA)."""
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def _sync(device: torch.device, *, reset: bool = False) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        if reset:
            torch.cuda.reset_peak_memory_stats()


def prompt_ids(cfg: Any, n_video: int) -> list[int]:
    """A chat prompt around one video of `n_video` merged tokens, in `cfg`'s vocabulary."""
    vocab = cfg.text_config.vocab_size
    return ([t % vocab for t in _BEFORE] + [cfg.vision_start_token_id] + [cfg.video_token_id] * n_video
            + [cfg.vision_end_token_id] + [t % vocab for t in _AFTER])


def probe(device: str = "cuda", *, frames: int = 16, rows: int = 8, new_tokens: int = 768, config: Any = None,
          attn: str = "sdpa", dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    """Time and peak memory (GiB; NaN off CUDA) of generation and of one forward/backward (see the module doc)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from videor1.train.common import enable_gradient_checkpointing

    dev = torch.device(device)
    cfg = config if config is not None else qwen25_vl_7b_config()
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    with dev:
        net = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype, attn_implementation=attn)
    patch = cfg.vision_config.patch_size
    t, h, w = frames // 2, 224 // patch, 448 // patch
    merge = cfg.vision_config.spatial_merge_size ** 2
    n_video = t * h * w // merge
    pixel_values = torch.randn(t * h * w, 3 * 2 * patch * patch, device=dev, dtype=dtype)
    grid = torch.tensor([[t, h, w]], device=dev)
    input_ids = torch.tensor([prompt_ids(cfg, n_video)], device=dev)
    _sync(dev, reset=True)
    net.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = net.generate(input_ids=input_ids.repeat(rows, 1), attention_mask=torch.ones_like(input_ids).repeat(rows, 1),
                           pixel_values_videos=pixel_values.repeat(rows, 1), video_grid_thw=grid.repeat(rows, 1),
                           second_per_grid_ts=torch.tensor([1.0] * rows, device=dev), do_sample=True,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0,
                           synced_gpus=False)
    _sync(dev)
    gen_s = time.perf_counter() - t0
    new = (out.shape[1] - input_ids.shape[1]) * rows
    gen_peak = _peak_gib(dev)
    _sync(dev, reset=True)
    net.train()
    enable_gradient_checkpointing(net)
    full = torch.cat([input_ids, out[:1, input_ids.shape[1]:]], dim=1)
    t0 = time.perf_counter()
    loss = net(input_ids=full, attention_mask=torch.ones_like(full), pixel_values_videos=pixel_values,
               video_grid_thw=grid, second_per_grid_ts=torch.tensor([1.0], device=dev), labels=full).loss
    loss.backward()
    _sync(dev)
    fb_s = time.perf_counter() - t0
    result = {"params_b": sum(p.numel() for p in net.parameters()) / 1e9, "attn": attn, "rows": rows,
              "new_tokens": new // rows, "video_tokens": n_video, "generate_s": gen_s, "tokens_per_s": new / gen_s,
              "generate_peak_gib": gen_peak, "train_tokens": full.shape[1], "fwd_bwd_s": fb_s,
              "fwd_bwd_peak_gib": _peak_gib(dev), "loss": float(loss.detach())}
    del net, out
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return result
