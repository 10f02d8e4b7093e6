"""The memory model behind perf/gpu_memory.py and perf/long_video_memory.py (projections, not measurements):
Qwen2.5-VL-7B's published shapes, parameter counts on the meta device, the traced activation + logits peak of
the text decoder and lm_head (fake tensors, MemTracker; extrapolated over depth), the vision tower by formula,
and ZeRO's per-GPU model states. How each term is obtained is told in perf/gpu_memory.py's docstring."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from videor1.model.architectures import QWEN25_VL_7B  # Qwen/Qwen2.5-VL-7B-Instruct's config.json (shapes)

GB = 1e9


@dataclass(frozen=True)
class Shapes:
    """One loss pass: `groups` rows of a shared-prefix layout (P prompt tokens + G completions of C tokens), or
    SFT rows of P + C tokens (G = 1); `vision_tokens` merged vision tokens per prompt (patches = 4x)."""

    P: int = 1150          # 1,024 vision tokens (16 frames of 128x28x28 px: 8 temporal x 128 merged) + text
    G: int = 8
    C: int = 768
    groups: int = 1
    vision_tokens: int = 1024
    logits_all: bool = False   # SFT: logits of every position (the trainer asks for all), else the completions'


# ------------------------------------------------------------------------------------- the model
def qwen_config(text: dict, vision: dict):
    from transformers import Qwen2_5_VLConfig

    cfg = Qwen2_5_VLConfig(text_config=dict(text), vision_config=dict(vision),
                           tie_word_embeddings=text.get("tie_word_embeddings", False))
    cfg.text_config._attn_implementation = "sdpa"
    return cfg


def parameter_counts(cfg) -> dict[str, int]:
    """Total / vision parameters and the largest single module's (meta device: no memory)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if "visual" in n)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return {"total": total, "vision": vision, "largest_module": largest}


class ChunkedLogProb(torch.autograd.Function):
    """log p(ids) from logits [N, V] in row chunks: forward keeps the logits (their dtype) and one fp32
    log-sum-exp per row, never an fp32 copy of the logits; backward rebuilds softmax chunk by chunk."""

    @staticmethod
    def forward(ctx, logits, ids, chunk):
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        picked = logits.gather(-1, ids[:, None]).squeeze(-1).float()
        for s in range(0, logits.shape[0], chunk):
            lse[s:s + chunk] = torch.logsumexp(logits[s:s + chunk].float(), dim=-1)
        ctx.save_for_backward(logits, ids, lse)
        ctx.chunk = chunk
        return picked - lse

    @staticmethod
    def backward(ctx, grad):
        logits, ids, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        for s in range(0, logits.shape[0], ctx.chunk):
            g = grad[s:s + ctx.chunk, None]
            part = logits[s:s + ctx.chunk].float()               # the one fp32 chunk: softmax, then its gradient
            part.sub_(lse[s:s + ctx.chunk, None]).exp_().mul_(-g)
            part.scatter_add_(-1, ids[s:s + ctx.chunk, None], g)
            out[s:s + ctx.chunk] = part
        return out, None, None


def chunked_logprobs(logits: torch.Tensor, ids: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """[..., V] logits, [...] ids -> [...] fp32 log-probs without an fp32 copy of the logits kept."""
    flat = ChunkedLogProb.apply(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1), chunk)
    return flat.reshape(ids.shape)


def _loss(logits: torch.Tensor, ids: torch.Tensor, kind: str) -> torch.Tensor:
    from videor1.rl.algorithms import selective_log_softmax
    from videor1.sft.data import token_nll

    if kind == "rl_before":
        return selective_log_softmax(logits, ids).mean()
    if kind == "sft_before":
        labels = torch.cat([torch.full_like(ids[:, :1], -100), ids[:, 1:]], dim=1)
        return token_nll(logits, labels)[0]
    return chunked_logprobs(logits, ids).mean()


def forward_loss(text_model, lm_head, emb, pos, ids, shapes: Shapes, loss: str) -> torch.Tensor:
    """The loss of one pass; its intermediates (logits included) live only as long as autograd keeps them,
    as in the trainers' log-prob functions."""
    h = text_model(inputs_embeds=emb, position_ids=pos, use_cache=False).last_hidden_state
    if shapes.logits_all:
        logits = lm_head(h)
        ids = torch.cat([ids, ids[:, :1].expand(ids.shape[0], logits.shape[1] - ids.shape[1])], dim=1)
    else:
        logits = lm_head(h[:, -shapes.G * shapes.C:]).reshape(shapes.groups * shapes.G, shapes.C, -1)
    return _loss(logits, ids, loss)


def trace_peak(text_model, lm_head, shapes: Shapes, loss: str, *, dtype: torch.dtype, free_grads: bool,
               device: str = "cpu") -> dict[str, float]:
    """Peak bytes (by MemTracker category) of one forward + backward of `text_model` + `lm_head` over
    `shapes`; parameters must have been created outside (they are not counted). Inside a FakeTensorMode when
    the model's parameters are fake; for real tensors it allocates for real."""
    from torch.distributed._tools.mem_tracker import MemTracker

    hidden = text_model.config.hidden_size
    rows = shapes.groups
    length = shapes.P + shapes.G * shapes.C
    handles = []
    if free_grads:   # ZeRO: a gradient leaves the GPU once reduce-scattered
        handles = [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
                   for p in [*text_model.parameters(), *lm_head.parameters()]]
    emb = torch.randn(rows, length, hidden, dtype=dtype, device=device)
    pos = torch.arange(length, device=device).expand(3, rows, length)
    ids = torch.randint(0, lm_head.out_features, (rows * shapes.G, shapes.C), device=device)
    tracker = MemTracker()
    with tracker:
        forward_loss(text_model, lm_head, emb, pos, ids, shapes, loss).backward()
    for handle in handles:
        handle.remove()
    snap = next(iter(tracker.get_tracker_snapshot("peak").values()))
    out = {str(getattr(k, "value", k)): float(v) for k, v in snap.items()}
    return {"peak": out["Total"] - out.get("Parameter", 0.0) - out.get("Buffer", 0.0), **out}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_text_model(cfg, dtype: torch.dtype):
    """The text decoder + lm_head of `cfg`, gradient checkpointing on, train mode."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

    with _default_dtype(dtype):
        model = Qwen2_5_VLTextModel(cfg.text_config)
        head = torch.nn.Linear(cfg.text_config.hidden_size, cfg.text_config.vocab_size, bias=False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model, head


def trace_7b(cfg, cases: dict[str, tuple[Shapes, str]], depths: tuple[int, ...]) -> dict[str, float]:
    """Traced activation + logits peak (GB) of each case on the 7B text decoder (fake tensors, bf16).

    `depths` (None: the real 28 layers): trace at these decoder depths of the real widths and extrapolate
    linearly to 28 layers (with checkpointing every layer adds one saved layer input; the rest, logits and one
    layer's recompute, does not grow with depth). Two depths give the line; a third checks it."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    layers = cfg.text_config.num_hidden_layers
    depths = depths or (layers,)
    traced: dict[str, dict[int, float]] = {name: {} for name in cases}
    for depth in depths:
        text = replace_layers(cfg, depth)
        with FakeTensorMode():
            model, head = build_text_model(text, torch.bfloat16)
            for name, (shapes, loss) in cases.items():
                traced[name][depth] = trace_peak(model, head, shapes, loss, dtype=torch.bfloat16,
                                                 free_grads=True)["peak"] / GB
    out = {}
    for name, by_depth in traced.items():
        points = sorted(by_depth.items())
        (d0, p0), (d1, p1) = points[0], points[min(1, len(points) - 1)]
        slope = (p1 - p0) / (d1 - d0) if d1 != d0 else 0.0
        out[name] = p0 + slope * (layers - d0)
        check = [f"{d}: {p:.2f} traced, {p0 + slope * (d - d0):.2f} on the line" for d, p in points[2:]]
        print(f"  {name}: {out[name]:.2f} GB at {layers} layers (traced at {', '.join(str(d) for d in sorted(by_depth))}"
              f" layers{'; ' + '; '.join(check) if check else ''})", flush=True)
    return out


def replace_layers(cfg, depth: int):
    """`cfg` with `depth` decoder layers (a copy)."""
    import copy

    cfg = copy.deepcopy(cfg)
    cfg.text_config.num_hidden_layers = depth
    if getattr(cfg.text_config, "layer_types", None):
        cfg.text_config.layer_types = cfg.text_config.layer_types[:depth]
    return cfg


def vision_gb(shapes: Shapes, vision: dict, checkpointing: bool = True) -> float:
    """Vision tower activations kept for backward (bf16): checkpointed block inputs + one block's recompute
    (qkv, attention out, MLP gate/up/act/down, two norms), per prompt of the pass."""
    patches = 4 * shapes.vision_tokens
    d, inter = vision["hidden_size"], vision["intermediate_size"]
    per_block_input = patches * d * 2
    block = patches * (3 * d + d + 4 * inter + 2 * d + d) * 2
    saved = vision["depth"] * per_block_input if checkpointing else vision["depth"] * block
    return shapes.groups * (saved + block) / GB


# --------------------------------------------------------------------------------- model states
def zero3_states_gb(total: int, gpus: int) -> float:
    return 16 * total / gpus / GB


def zero2_states_gb(total: int, gpus: int) -> float:
    return (2 * total + 14 * total / gpus) / GB


def zero3_live_gb(counts: dict[str, int], hidden: int) -> float:
    """Parameters ZeRO-3 holds gathered at once: the largest module + one prefetch bucket (bf16)."""
    return 2 * (counts["largest_module"] + 0.9 * hidden * hidden) / GB
