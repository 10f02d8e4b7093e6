"""Shared-prefix loss forward: each prompt group's prompt, vision tower included, is computed once and its
G completions attend to it.

Today's path (`videor1.rl.step.loss_inputs` without `shared`) repeats each prompt row G times, pixels
included, so the vision tower and every LLM layer process G(P + C) tokens per group. Here a group is ONE
row, laid out in slots:

    [left padding | prompt (P_i real tokens) | slot 1 (C) | slot 2 (C) | ... | slot G (C)]

Lp is the longest prompt of the batch, C the longest completion of the step; completion j of the group
sits left aligned in slot j (right padded inside it). One forward over K rows of Lp + G C tokens replaces
K G rows of Lp + C tokens. A 4D attention mask lets every prompt token see the prompt causally and every
token of slot j see the prompt plus slot j causally, nothing else; padding sees only itself (a finite
output no loss reads). The positions of slot j continue from the prompt's exactly as in an unpacked
[prompt | completion j] row: text after the prompt starts at its largest M-RoPE position + 1 on all three
axes (`videor1.model.positions.text_after`; prompt positions from `positions.rope_index`, the rule the
model's own forward uses). So every completion token's log-prob is the same function of the weights as
in today's path, and backward sends each completion's gradient into the one prompt computation (the sum
the G copies of today's path accumulate), vision tower and Qwen3-VL's deepstack features included: the
model's forward embeds the prompt's vision tokens once, as for any batch.

The logits taken are those of the last prompt token (G times, one per slot: each completion's first
token is predicted from it) and of the first C - 1 positions of each slot: one index list shared by
every row (`logits_to_keep` as a 1D tensor, accepted by transformers 5.17-5.23), so the vocabulary
projection runs on K G C positions as today. The log-probs are returned in today's layout ([N, C], each
completion right aligned), so the loss, metrics and old/reference log-probs are unchanged.

Attention. With "sdpa" the model's text attention is switched (once, `install_shared_sdpa`) to
`shared_sdpa`, registered with transformers' AttentionInterface: without a layout it IS
`sdpa_attention_forward` (and its masks are sdpa's), so generation and other forwards are unchanged; given
the layout of a packed forward (a keyword argument transformers passes down to every attention call) it
computes the prompt's attention causally (SDPA's is_causal kernel when the prompt has no padding) and the
G slots' attention as G rows of C queries over [prompt keys | own slot keys] with a small mask: the same
masked softmax as the dense [P + G C]^2 pattern, without its G^2 C^2 + G C P masked-out work (on this
CPU a dense boolean mask also takes PyTorch's slow backward). With "eager", one dense additive 4D mask.
flash_attention_2 and flex_attention are refused with a clear error (`check_model`; `RLConfig.validate`
refuses the combination before training starts). The linear-attention (Gated DeltaNet) layers of a hybrid
decoder (Qwen3.5) get the same layout and run each slot from the prompt's recurrent state
(`videor1.rl.shared_prefix_linear`); other linear-attention layers are refused.

Departure from TRL / verl / EasyR1: they repeat the prompt per completion (today's path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import AttentionInterface, BatchFeature
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from videor1.model.families import check_prefix_sharing
from videor1.model.positions import _backbones, rope_index, rule_of_model, text_after
from videor1.rl.algorithms import selective_log_softmax

SEGMENTS = "shared_segments"  # [K, L] long: -1 padding, 0 prompt, j + 1 a token of completion j of the group
LENGTHS = "shared_lengths"  # [N] long: token count of each completion (prompt-major, as token_ids)
SHARED_SDPA = "videor1_shared_sdpa"  # our text attention: sdpa, plus the packed layout when given one
LAYOUT_KWARG = "shared_prefix_layout"  # the forward keyword that carries the `Layout` to every attention call
SP_SDPA = "videor1_ulysses_sdpa"  # shared_sdpa under DeepSpeed Ulysses when asked (videor1.parallel.sequence)
MASK_KINDS = ("sdpa", "eager", SHARED_SDPA, SP_SDPA)  # text attention implementations the packed forward runs on
_VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def is_shared(inputs: BatchFeature) -> bool:
    """Whether `inputs` were packed by `pack_groups`."""
    return SEGMENTS in inputs


def pack_groups(prompt_batch: BatchFeature, token_ids: Sequence[Sequence[int]], n: int, pad_id: int
                ) -> tuple[BatchFeature, torch.Tensor, torch.Tensor]:
    """K prompt rows (left padded, from `encode` / `select_rows`) and their K n completions (prompt-major)
    -> (packed inputs of K rows, completion ids [N, C], completion mask [N, C]).

    ids / mask have today's layout (`step.loss_inputs`: each completion right aligned in C columns; ids
    are pad_id where mask is 0). The packed inputs hold input_ids / mm_token_type_ids [K, Lp + n C], the
    prompt batch's vision tensors unchanged (one copy per prompt), SEGMENTS and LENGTHS."""
    ids, real = prompt_batch["input_ids"], prompt_batch["attention_mask"].bool()
    k, lp = ids.shape
    if n < 1 or len(token_ids) != k * n:
        raise ValueError(f"got {len(token_ids)} completions for {k} prompts x n={n}")
    c = max(1, max(len(t) for t in token_ids))
    length = lp + n * c
    packed = torch.full((k, length), pad_id, dtype=ids.dtype)
    packed[:, :lp] = ids
    segments = torch.full((k, length), -1, dtype=torch.long)
    segments[:, :lp] = torch.where(real, 0, -1)
    mm = torch.zeros((k, length), dtype=prompt_batch["mm_token_type_ids"].dtype)
    mm[:, :lp] = prompt_batch["mm_token_type_ids"]
    out_ids = torch.full((k * n, c), pad_id, dtype=ids.dtype)
    out_mask = torch.zeros((k * n, c), dtype=torch.long)
    for row, tokens in enumerate(token_ids):
        i, j = divmod(row, n)
        tokens_t = torch.as_tensor(list(tokens), dtype=ids.dtype)
        m, start = len(tokens_t), lp + j * c
        packed[i, start:start + m] = tokens_t
        segments[i, start:start + m] = j + 1
        out_ids[row, c - m:] = tokens_t
        out_mask[row, c - m:] = 1
    data = {key: prompt_batch[key] for key in _VISION_KEYS if key in prompt_batch}
    data.update({"input_ids": packed, "mm_token_type_ids": mm, SEGMENTS: segments,
                 LENGTHS: torch.tensor([len(t) for t in token_ids], dtype=torch.long)})
    return BatchFeature(data), out_ids, out_mask


def text_attention(model: torch.nn.Module) -> str:
    """The attention implementation of the model's language model (what its decoder layers call)."""
    kinds = {str(m.language_model.config._attn_implementation) for m in _backbones(model)
             if hasattr(m, "language_model")}
    if len(kinds) != 1:
        raise ValueError(f"{type(model).__name__}: cannot tell its text attention implementation ({kinds})")
    return kinds.pop()


def check_model(model: torch.nn.Module) -> None:
    """ValueError unless the shared-prefix forward can run on `model` (M-RoPE installed, 4D-mask attention,
    a family whose prefix sharing is known exact, linear-attention layers only of the tested kinds:
    `videor1.rl.shared_prefix_linear`)."""
    from videor1.rl.shared_prefix_linear import check_linear_layers   # it imports this module

    inner = model
    while isinstance(getattr(inner, "module", None), torch.nn.Module):   # DDP / DeepSpeed wrappers (DeepSpeed's
        inner = inner.module                                           # engine has a `config` of its own)
    check_prefix_sharing(inner.config, "shared_prefix", "set shared_prefix: false")
    rule_of_model(model)
    check_linear_layers(model)
    kind = text_attention(model)
    if kind not in MASK_KINDS:
        raise ValueError(f"shared_prefix needs a text attention that takes a 4D mask ({', '.join(MASK_KINDS)}), "
                         f"the model uses {kind!r}: set attn_implementation: sdpa, or shared_prefix: false")


def attention_mask(segments: torch.Tensor, kind: str, dtype: torch.dtype) -> torch.Tensor:
    """The dense 4D mask [K, 1, L, L] of packed rows: query q sees key k <= q when k is a prompt token or a
    token of q's own slot; every token sees itself. Boolean (True: attend) for sdpa, additive for eager."""
    length = segments.shape[1]
    pos = torch.arange(length, device=segments.device)
    causal = pos[:, None] >= pos[None, :]
    seg_q, seg_k = segments[:, :, None], segments[:, None, :]
    allowed = causal & (seg_k >= 0) & ((seg_k == 0) | (seg_k == seg_q))
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=segments.device)
    allowed = allowed[:, None]
    if kind == "sdpa":
        return allowed
    zero = torch.zeros((), dtype=dtype, device=segments.device)
    return zero.masked_fill(~allowed, torch.finfo(dtype).min)


@dataclass(frozen=True)
class Layout:
    """What `shared_sdpa` needs of a packed batch: Lp prompt columns, n slots of c columns, and the masks
    (True: attend) of the dense pattern's two non-empty parts."""

    lp: int
    n: int
    c: int
    prompt_mask: torch.Tensor | None  # [K, 1, Lp, Lp] causal over real prompt tokens; None: no padding
    slot_mask: torch.Tensor  # [K n, 1, c, Lp + c] slot j's queries over [prompt keys | slot j keys]
    real: torch.Tensor  # [K, Lp] True on real prompt tokens (False: left padding)


def layout_of(segments: torch.Tensor, n: int, c: int) -> Layout:
    """The `Layout` of packed rows (`pack_groups`' SEGMENTS) with n slots of c tokens."""
    k, length = segments.shape
    lp, dev = length - n * c, segments.device
    real = segments[:, :lp] == 0                                          # [K, Lp]
    eye_p = torch.eye(lp, dtype=torch.bool, device=dev)
    prompt_mask = None
    if not bool(real.all()):
        prompt_mask = ((torch.tril(torch.ones(lp, lp, dtype=torch.bool, device=dev)) & real[:, None, :])
                       | eye_p)[:, None]
    slot_seg = segments[:, lp:].reshape(k, n, c)
    own = slot_seg == torch.arange(1, n + 1, device=dev)[None, :, None]   # [K, n, c] key is slot j's
    causal = torch.tril(torch.ones(c, c, dtype=torch.bool, device=dev))
    slot_part = causal[None, None] & own[:, :, :, None] & own[:, :, None, :]
    slot_part = slot_part | torch.eye(c, dtype=torch.bool, device=dev)
    prompt_part = real[:, None, None, :].expand(k, n, c, lp)
    slot_mask = torch.cat([prompt_part, slot_part], dim=-1).reshape(k * n, 1, c, lp + c)
    return Layout(lp, n, c, prompt_mask, slot_mask, real)


def shared_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' `sdpa_attention_forward`, or, given `shared_prefix_layout`, the packed rows' attention
    in two SDPA calls (see the module docstring). query [K, H, L, d], key / value [K, H_kv, L, d];
    returns [K, L, H, d] as transformers' attention functions do."""
    layout: Layout | None = kwargs.pop(LAYOUT_KWARG, None)
    if layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    k, heads, _, dim = query.shape
    kv_heads, lp, n, c = key.shape[1], layout.lp, layout.n, layout.c
    prompt, _ = sdpa_attention_forward(module, query[:, :, :lp], key[:, :, :lp], value[:, :, :lp],
                                       layout.prompt_mask, dropout=dropout, scaling=scaling, is_causal=True)

    def slots(x: torch.Tensor, h: int) -> torch.Tensor:   # [K, h, n c, d] -> [K n, h, c, d]
        return x[:, :, lp:].reshape(k, h, n, c, dim).transpose(1, 2).reshape(k * n, h, c, dim)

    keys = torch.cat([key[:, :, :lp].repeat_interleave(n, dim=0), slots(key, kv_heads)], dim=2)
    values = torch.cat([value[:, :, :lp].repeat_interleave(n, dim=0), slots(value, kv_heads)], dim=2)
    out, _ = sdpa_attention_forward(module, slots(query, heads), keys, values, layout.slot_mask, dropout=dropout,
                                    scaling=scaling, is_causal=False)
    return torch.cat([prompt, out.reshape(k, n * c, heads, dim)], dim=1), None


def install_shared_sdpa(model: torch.nn.Module) -> None:
    """Register `shared_sdpa` (with sdpa's mask function) and switch every text model of `model` whose
    attention is "sdpa" to it. Idempotent; forwards without a layout are unchanged (they run sdpa)."""
    AttentionInterface.register(SHARED_SDPA, shared_sdpa)
    AttentionMaskInterface.register(SHARED_SDPA, sdpa_mask)
    for backbone in _backbones(model):
        config = backbone.language_model.config
        if config._attn_implementation == "sdpa":
            config._attn_implementation = SHARED_SDPA


def packed_positions(model: torch.nn.Module, inputs: BatchFeature, n: int, c: int) -> torch.Tensor:
    """M-RoPE positions [3, K, L] of packed rows (n slots of c tokens after Lp prompt columns): the prompt's
    by `rope_index` (the model's rule), each slot's continuing from the prompt's largest position + 1 (every
    slot the same: each completion follows the prompt alone). Padding gets positions too; nothing reads
    them."""
    prompt = inputs[SEGMENTS] == 0
    lp = prompt.shape[1] - n * c
    pos, _ = rope_index(rule_of_model(model), inputs["input_ids"], inputs["mm_token_type_ids"],
                        inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
                        inputs.get("second_per_grid_ts"), attention_mask=prompt.long())
    pos[:, :, lp:] = text_after(pos, prompt, c).repeat(1, 1, n)
    return pos


def logit_indices(lp: int, n: int, c: int, device: torch.device) -> torch.Tensor:
    """Positions [n C] whose logits predict slot j's tokens: the last prompt position, then the slot's
    first C - 1 positions, for j = 1..n."""
    steps = torch.arange(c - 1, device=device)
    parts = [torch.cat([torch.tensor([lp - 1], device=device), lp + j * c + steps]) for j in range(n)]
    return torch.cat(parts)


def shared_logps(model: torch.nn.Module, inputs: BatchFeature, ids: torch.Tensor, temperature: float
                 ) -> torch.Tensor:
    """Per-token log-probs [N, C] of packed completions under `model`, in today's layout (`pack_groups`'s
    ids): 0 where the mask is 0. One forward for all K groups, vision tower called once per media kind."""
    check_model(model)
    segments, lengths = inputs[SEGMENTS], inputs[LENGTHS]
    k, length = segments.shape
    n_rows, c = ids.shape
    n = n_rows // k
    lp = length - n * c
    if text_attention(model) == "sdpa":
        install_shared_sdpa(model)
    from videor1.parallel import sequence
    from videor1.rl.shared_prefix_linear import install_shared_linear

    install_shared_linear(model)
    extra: dict = {"attention_mask": None, LAYOUT_KWARG: layout_of(segments, n, c)}   # the layout also
    if text_attention(model) == "eager":                        # reaches linear-attention layers, if any
        extra["attention_mask"] = attention_mask(segments, "eager", _float_dtype(model))
    positions = packed_positions(model, inputs, n, c)
    model_inputs = {key: v for key, v in inputs.items() if key not in (SEGMENTS, LENGTHS)}
    keep = logit_indices(lp, n, c, segments.device)
    slot_ids = inputs["input_ids"][:, lp:].reshape(n_rows, c)
    if sequence.active():   # the same log-probs, sequence-parallel
        left = sequence.sp_logps(model, model_inputs, positions, keep, slot_ids.reshape(k, n * c), temperature,
                                 **extra).reshape(n_rows, c)
    else:
        logits = model(**model_inputs, **extra, position_ids=positions, logits_to_keep=keep, use_cache=False).logits
        logits = logits.reshape(n_rows, c, logits.shape[-1])
        if temperature != 1.0:
            logits = logits / temperature
        left = selective_log_softmax(logits, slot_ids.to(logits.device))  # completion j left aligned
    col = torch.arange(c, device=left.device)[None, :] - (c - lengths.to(left.device))[:, None]
    taken = torch.gather(left, 1, col.clamp(min=0))
    return torch.where(col >= 0, taken, torch.zeros((), dtype=taken.dtype, device=taken.device))


def _float_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's floating parameters (the additive mask's dtype, as transformers makes it)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
