"""Per-token log-probs of chosen tokens from logits, without a float32 copy of the logits kept for backward.

log p(token) = z[token] / T - logsumexp(z / T), computed in float32 whatever the logits' dtype. Done the
obvious way (`logits.float()`, then log_softmax or logsumexp and gather) autograd keeps the float32 copy
for the backward: twice the bytes of bf16 logits, on top of the bf16 logits themselves. `token_logprobs`
is an autograd Function of its own: its forward works through the logits in chunks of positions (one
float32 chunk alive at a time) and keeps only the logits it was given (no copy: they are the caller's
tensor), the token ids and the float32 logsumexp of each position ([B, L], a V-th of the logits); its
backward recomputes each chunk's softmax from those logits and writes the gradient in the logits' dtype:

    d log p(t) / d z_v = (1[v == t] - softmax(z / T)_v) / T.

`perf/logprob_memory.py` measures what each way keeps for backward (saved-tensor bytes) at a stated shape.
Used by the RL loss (`videor1.rl.step.completion_logps`, `videor1.rl.shared_prefix`) and the SFT loss
(`videor1.sft.data.token_nll`).
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 24  # logits per float32 chunk (64 MiB): ~110 positions at Qwen2.5-VL's 152,064 tokens


def chunk_positions(vocab: int, chunk_elements: int = CHUNK_ELEMENTS) -> int:
    """Positions per chunk so that a float32 chunk holds at most `chunk_elements` values (at least one)."""
    return max(1, chunk_elements // max(vocab, 1))


def _chunks(length: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, length)) for s in range(0, length, step)]


def _scaled(chunk: torch.Tensor, temperature: float) -> torch.Tensor:
    """A float32 copy of `chunk` / temperature (always a copy: the caller works on it in place)."""
    z = chunk.to(torch.float32, copy=True)
    return z.div_(temperature) if temperature != 1.0 else z


class _TokenLogProbs(torch.autograd.Function):
    """logits [B, L, V] (any float dtype, any strides), ids [B, L] -> log-probs [B, L] float32."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ids: torch.Tensor, temperature: float, step: int) -> torch.Tensor:
        b, length, _ = logits.shape
        out = torch.empty((b, length), dtype=torch.float32, device=logits.device)
        lse = torch.empty((b, length), dtype=torch.float32, device=logits.device)
        for row in range(b):
            for s, e in _chunks(length, step):
                z = _scaled(logits[row, s:e], temperature)      # a fresh float32 chunk
                lse[row, s:e] = torch.logsumexp(z, dim=-1)
                out[row, s:e] = z.gather(-1, ids[row, s:e, None]).squeeze(-1) - lse[row, s:e]
        ctx.save_for_backward(logits, ids, lse)
        ctx.temperature, ctx.step = temperature, step
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        logits, ids, lse = ctx.saved_tensors
        temperature, step = ctx.temperature, ctx.step
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad_out = grad_out.float()
        for row in range(logits.shape[0]):
            for s, e in _chunks(logits.shape[1], step):
                g_out = grad_out[row, s:e, None]                                   # [n, 1]
                soft = _scaled(logits[row, s:e], temperature).sub_(lse[row, s:e, None]).exp_()
                g = soft.mul_(-g_out).scatter_add_(-1, ids[row, s:e, None], g_out)
                grad[row, s:e] = g.div_(temperature) if temperature != 1.0 else g
        return grad, None, None, None


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, *, temperature: float = 1.0,
                   chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """log softmax(logits / temperature)[ids] per position, in float32.

    logits: [B, L, V] in any float dtype (bf16 under autocast), a view is fine (no copy is made);
    ids: [B, L] long (any value in [0, V) where the caller masks the result out) -> [B, L] float32.
    Keeps for backward only `logits` itself, `ids` and a [B, L] float32 logsumexp (see the module doc)."""
    if logits.dim() != 3 or ids.shape != logits.shape[:2]:
        raise ValueError(f"token_logprobs: logits {tuple(logits.shape)} must be [B, L, V] and ids "
                         f"{tuple(ids.shape)} [B, L]")
    if temperature <= 0:
        raise ValueError(f"token_logprobs: temperature must be > 0, got {temperature}")
    ids = ids.to(device=logits.device, dtype=torch.long)
    return _TokenLogProbs.apply(logits, ids, float(temperature), chunk_positions(logits.shape[-1], chunk_elements))


def saved_tensor_bytes(fn, *args, **kwargs) -> tuple[object, dict[torch.dtype, int]]:
    """(fn(*args, **kwargs), bytes of the distinct tensors autograd saves for backward while it runs, per
    dtype): what the graph keeps alive until backward (`torch.autograd.graph.saved_tensors_hooks`)."""
    seen: dict[tuple[int, torch.dtype], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), t.dtype)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn(*args, **kwargs)
    per_dtype: dict[torch.dtype, int] = {}
    for (_, dtype), nbytes in seen.items():
        per_dtype[dtype] = per_dtype.get(dtype, 0) + nbytes
    return result, per_dtype
