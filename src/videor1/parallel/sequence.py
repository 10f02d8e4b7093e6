"""Sequence parallelism (SP) for the loss forwards, on DeepSpeed Ulysses (`UlyssesSPAttentionHF`).

`sequence_parallel_size: S` (RL and SFT configs) splits every loss forward's sequence over S processes. The S
ranks of one SP group are ONE data-parallel rank: they load the same prompts (`data_parallel`), use the
rollouts of the group's first rank (`SPRollouts` broadcasts them) and compute the same loss; DeepSpeed's engine
runs without an `mpu` (every process is a data-parallel rank to it), so `process_sum` and the metrics' gather
count each SP group once (`replicas`) and the gradient comes out as one process's over the same prompts.

One SP forward (`sp_logps`), the same on every rank of the group:
1. the whole sequence's `inputs_embeds` (token embeddings with the vision tower's output merged in; the tower's
   work split over the group by temporal patches, `vision_embeds` / `videor1.model.vision_shard`) and its
   global M-RoPE positions;
2. rank r keeps the r-th of S equal chunks (the sequence padded at its end to a multiple of S; causal
   attention never lets a real token see that padding) and runs the language model on it with 4-row
   positions [text; t; h; w] (the text row is what reaches the attention call, where Ulysses gathers it);
   Qwen3-VL's deepstack features go with the chunk's vision tokens;
3. in every text attention call, Ulysses trades the chunk for the whole sequence over H / S heads
   (all-to-all), runs the project's attention (`shared_sdpa`, the shared-prefix layout included) and trades
   back;
4. item 3 of issue 34: the hidden states of the positions whose logits the loss needs (all near the end of
   the sequence, i.e. on the last ranks) are redistributed evenly over the group (one all-to-all of hidden
   states), each rank runs lm_head + log-softmax on its share, and the per-token log-probs are all-gathered
   with an OWN-SLICE backward: every rank then computes the same loss, and each rank's backward carries only
   the gradient of its own share (an all-gather whose backward sums would multiply the gradient by S).

Attention dispatch. The model's text attention is switched to `SP_SDPA`, registered with transformers. A call
carrying the `SP_KWARG` keyword (only `sp_logps` passes it; transformers hands keywords down to every
attention call, and gradient checkpointing keeps them for the recomputation) goes through Ulysses; any other
call (HF `generate`, evaluation) runs `shared_sdpa` as before, so the HF rollout engine is not wrapped. The
attention mask is not used under SP (Ulysses drops it): padding is handled by the shared-prefix layout (RL
needs `shared_prefix: true`) or is at the right end of a row (SFT), where causal attention never reads it.

Refused with a one-line reason (`check_model`, `check_engine`): heads or KV heads not divisible by S, eager
or flash attention, families other than Qwen2.5-VL and Qwen3-VL (Qwen2-VL untested; Qwen3.5's linear
attention layers are not sequence-parallel), an engine other than DeepSpeed (FSDP2, DDP), a world size not
divisible by S. Ran only on CPU with gloo, in float32/float64 (tests/engines/test_engines_sp.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from videor1.config import ConfigError
from videor1.model.vision_shard import sharded_vision_embeds
from videor1.rl.algorithms import selective_log_softmax
from videor1.rl.shared_prefix import SHARED_SDPA, SP_SDPA, shared_sdpa

SP_KWARG = "videor1_sp_length"  # forward keyword: the unpadded sequence length; present = run through Ulysses
FAMILIES = ("qwen2_5_vl", "qwen3_vl")  # model types whose SP forward is tested exact
_PLAIN_ATTENTION = ("sdpa", SHARED_SDPA, SP_SDPA)


@dataclass
class _Group:
    size: int
    rank: int  # rank inside the SP group
    group: Any  # the torch ProcessGroup of this rank's SP group (DeepSpeed's parallel_state_sp)
    ulysses: dict  # (batch, heads, kv_heads, head_dim) -> UlyssesSPAttentionHF


_GROUP: _Group | None = None


def size() -> int:
    """The SP size in force (1: off)."""
    return _GROUP.size if _GROUP is not None else 1


def active() -> bool:
    return _GROUP is not None


def replicas() -> int:
    """How many processes hold each data-parallel rank's work (the SP size; 1 without SP)."""
    return size()


def start(sp_size: int) -> None:
    """Create the SP groups (consecutive ranks; DeepSpeed's `parallel_state_sp`, a collective every process
    enters) and register `SP_SDPA`. Idempotent for the same size."""
    global _GROUP
    if sp_size <= 1:
        return
    if _GROUP is not None:
        if _GROUP.size != sp_size:
            raise ConfigError(f"sequence_parallel_size {sp_size}: SP groups of size {_GROUP.size} already exist")
        return
    import deepspeed
    from deepspeed import comm
    from deepspeed.runtime.sequence_parallel import parallel_state_sp as mpu
    from deepspeed.sequence.layer import register_all_to_all_group

    if not comm.is_initialized():
        deepspeed.init_distributed(dist_backend=dist.get_backend())
    world = dist.get_world_size()
    if world % sp_size:
        raise ConfigError(f"sequence_parallel_size {sp_size} does not divide the {world} processes")
    mpu.initialize_sequence_parallel(sequence_parallel_size=sp_size)
    group = mpu.get_sequence_parallel_group()
    register_all_to_all_group(group)
    register()
    _GROUP = _Group(sp_size, dist.get_rank(group), group, {})


def register() -> None:
    """Register `SP_SDPA` (and sdpa's mask function under that name) with transformers."""
    AttentionInterface.register(SP_SDPA, _sp_attention)
    AttentionMaskInterface.register(SP_SDPA, sdpa_mask)


def data_parallel(accelerator: Any) -> tuple[int, int]:
    """(data-parallel rank, data-parallel world) of this process: its SP group's index and the number of
    groups; (process_index, num_processes) without SP."""
    s = size()
    return accelerator.process_index // s, accelerator.num_processes // s


# ------------------------------------------------------------------------------------------ checks
def _inner(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside DeepSpeed / DDP wrappers and peft (LoRA)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _text_configs(model: torch.nn.Module) -> list[Any]:
    from videor1.model.positions import _backbones

    return [b.language_model.config for b in _backbones(model) if hasattr(b, "language_model")]


def check_model(model: torch.nn.Module, sp_size: int) -> None:
    """ConfigError (one line) unless SP of `sp_size` can run on `model`."""
    config = _inner(model).config
    kind = getattr(config, "model_type", None)
    if kind not in FAMILIES:
        raise ConfigError(f"sequence_parallel_size > 1 supports model types {', '.join(FAMILIES)}; "
                          f"this model is {kind!r}" + (" (linear-attention layers are not sequence-parallel)"
                                                      if str(kind).startswith("qwen3_5") else ""))
    text = config.get_text_config()
    heads, kv = int(text.num_attention_heads), int(text.num_key_value_heads)
    if heads % sp_size or kv % sp_size:
        raise ConfigError(f"sequence_parallel_size {sp_size} must divide the attention heads ({heads}) and the "
                          f"KV heads ({kv}) of {kind}")
    for cfg in _text_configs(model):
        if cfg._attn_implementation not in _PLAIN_ATTENTION:
            raise ConfigError(f"sequence_parallel_size > 1 needs attn_implementation sdpa (or auto), the model "
                              f"uses {cfg._attn_implementation!r} (Ulysses drops the attention mask eager needs)")


def check_engine(accelerator: Any) -> None:
    """ConfigError unless the run's engine is DeepSpeed (SP is wired to DeepSpeed's Ulysses and engine)."""
    from videor1.train.engine import engine_name

    name = engine_name(accelerator)
    if not name.startswith("zero"):
        raise ConfigError(f"sequence_parallel_size > 1 needs the DeepSpeed engine (accelerate launch with "
                          f"configs/accelerate/zero2.yaml or zero3.yaml); this run uses {name}")


def install(model: torch.nn.Module) -> torch.nn.Module:
    """Switch the text attention of `model` to `SP_SDPA` (calls without `SP_KWARG` still run `shared_sdpa`,
    which without a shared-prefix layout is sdpa)."""
    for cfg in _text_configs(model):
        cfg._attn_implementation = SP_SDPA
    return model


def sequence_parallel(cfg: Any, accelerator: Any, models: Sequence[torch.nn.Module | None], engine_and_sync: tuple
           ) -> tuple:
    """The trainer's one call: with `cfg.sequence_parallel_size` > 1, check the engine and models, create the
    groups, install SP attention on `models` and wrap the rollout engine (`SPRollouts`). Returns
    (engine, sync) either way."""
    sp_size = int(getattr(cfg, "sequence_parallel_size", 1))
    if sp_size <= 1:
        return engine_and_sync
    check_engine(accelerator)
    for model in models:
        if model is not None:
            check_model(model, sp_size)
    start(sp_size)
    for model in models:
        if model is not None:
            install(model)
    engine, sync = engine_and_sync
    return (SPRollouts(engine) if engine is not None else None), sync


# --------------------------------------------------------------------------------------- attention
def _ulysses(batch: int, heads: int, kv_heads: int, head_dim: int) -> Any:
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

    key = (batch, heads, kv_heads, head_dim)
    if key not in _GROUP.ulysses:
        _GROUP.ulysses[key] = UlyssesSPAttentionHF(
            attn=_trimmed_attention, batch_size=batch, attn_head_count=heads, attn_head_size=head_dim,
            kv_head_count=kv_heads, num_hidden_layers=1, process_group=_GROUP.group, seq_length_is_variable=True)
    return _GROUP.ulysses[key]


def _sp_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """`SP_SDPA`: Ulysses around `shared_sdpa` when the call carries `SP_KWARG`, else `shared_sdpa`."""
    if kwargs.get(SP_KWARG) is None:
        kwargs.pop(SP_KWARG, None)
        return shared_sdpa(module, query, key, value, attention_mask, *args, **kwargs)
    ulysses = _ulysses(query.shape[0], query.shape[1], key.shape[1], query.shape[3])
    return ulysses(module, query, key, value, None, *args, **kwargs)


def _trimmed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The attention Ulysses calls on the whole (padded) sequence: the SP end padding cut off, `shared_sdpa`
    on the real tokens, zeros for the padding (no real token reads them)."""
    length = int(kwargs.pop(SP_KWARG))
    padded = query.shape[2]
    out, _ = shared_sdpa(module, query[:, :, :length], key[:, :, :length], value[:, :, :length], None, *args,
                         **kwargs)
    if padded > length:
        out = torch.cat([out, out.new_zeros(out.shape[0], padded - length, *out.shape[2:])], dim=1)
    return out, None


# ------------------------------------------------------------------------------------------ forward
def vision_embeds(visual: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor, group: Any) -> Any:
    """What `visual(pixel_values, grid_thw=grid_thw)` returns, the vision tower's work split over the SP
    `group` by temporal patches (`videor1.model.vision_shard`). Its backward sums the group's gradients of each
    rank's slice: under Ulysses a rank holds the gradient of its own sequence chunk's features only."""
    if group is None:
        return visual(pixel_values, grid_thw=grid_thw, return_dict=True)
    return sharded_vision_embeds(visual, pixel_values, grid_thw, group, grad="sum", with_last_hidden_state=False)


def full_embeddings(backbone: torch.nn.Module, inputs: Mapping[str, Any]
                    ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor] | None]:
    """(inputs_embeds [K, L, D] with the vision features merged in, the vision-token mask [K, L] and Qwen3-VL's
    deepstack features [n_vision_tokens, D] per layer in sequence order; None, None without deepstack).
    Images before videos, as the model's own forward."""
    ids = inputs["input_ids"]
    embeds = backbone.get_input_embeddings()(ids)
    visual, config = backbone.visual, backbone.config
    masks, stacks = [], []
    for pix, grid, token in (("pixel_values", "image_grid_thw", config.image_token_id),
                             ("pixel_values_videos", "video_grid_thw", config.video_token_id)):
        if inputs.get(pix) is None:
            continue
        out = vision_embeds(visual, inputs[pix].type(visual.dtype), inputs[grid], _GROUP.group if _GROUP else None)
        feats = out.pooler_output.to(embeds.dtype)
        mask = ids == token
        if int(mask.sum()) != feats.shape[0]:
            raise ValueError(f"{int(mask.sum())} vision placeholder tokens for {feats.shape[0]} vision features")
        embeds = embeds.masked_scatter(mask[..., None].expand_as(embeds), feats)
        masks.append(mask)
        stacks.append(getattr(out, "deepstack_features", None))
    if not masks or stacks[0] is None:
        return embeds, None, None
    visual_mask = masks[0] if len(masks) == 1 else masks[0] | masks[1]
    joint = []
    for layer in range(len(stacks[0])):
        table = embeds.new_zeros(int(visual_mask.sum()), embeds.shape[-1])
        for mask, stack in zip(masks, stacks):
            table = table.index_put((torch.nonzero(mask[visual_mask]).flatten(),), stack[layer].to(table.dtype))
        joint.append(table)
    return embeds, visual_mask, joint


def _pad_end(x: torch.Tensor, length: int, dim: int, value: float = 0) -> torch.Tensor:
    extra = length - x.shape[dim]
    if extra <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_full(shape, value)], dim=dim)


def chunk_positions(positions: torch.Tensor, padded: int) -> torch.Tensor:
    """4-row positions [4, K, padded] = [text; t; h; w] of the whole padded sequence from M-RoPE positions
    [3, K, L]: the text row counts 0..padded-1 (what reaches the attention call, where Ulysses gathers it); the
    end padding continues each row's last positions."""
    length = positions.shape[2]
    steps = torch.arange(1, padded - length + 1, device=positions.device, dtype=positions.dtype)
    mrope = torch.cat([positions, positions[:, :, -1:] + steps], dim=2)
    text = torch.arange(padded, device=positions.device, dtype=positions.dtype).expand(1, positions.shape[1], -1)
    return torch.cat([text, mrope], dim=0)


def sp_logps(model: torch.nn.Module, inputs: Mapping[str, Any], positions: torch.Tensor, keep: torch.Tensor,
             targets: torch.Tensor, temperature: float, **attention_kwargs: Any) -> torch.Tensor:
    """Log-probs [K, n] of `targets` [K, n] predicted at sequence positions `keep` [n] (the same for every row)
    of the rows of `inputs` (input_ids [K, L] + vision tensors), under global M-RoPE `positions` [3, K, L],
    computed sequence-parallel (see the module docstring); the same full result on every rank of the group.
    `attention_kwargs` reach every attention call (the shared-prefix layout)."""
    inner = _inner(model)
    backbone = inner.model
    embeds, visual_mask, deepstack = full_embeddings(backbone, inputs)
    k, length = inputs["input_ids"].shape
    chunk = math.ceil(length / _GROUP.size)
    padded, lo = chunk * _GROUP.size, _GROUP.rank * chunk
    hi = lo + chunk
    extra: dict[str, Any] = {}
    if deepstack is not None:
        order = (visual_mask.flatten().cumsum(0) - 1).reshape(visual_mask.shape)
        local = _pad_end(visual_mask, padded, 1, False)[:, lo:hi]
        index = _pad_end(order, padded, 1, 0)[:, lo:hi][local]
        extra = {"visual_pos_masks": local, "deepstack_visual_embeds": [d[index] for d in deepstack]}
    attention_kwargs.pop("attention_mask", None)
    hidden = backbone.language_model(
        input_ids=None, inputs_embeds=_pad_end(embeds, padded, 1)[:, lo:hi],
        position_ids=chunk_positions(positions, padded)[:, :, lo:hi], attention_mask=None, use_cache=False,
        **extra, **attention_kwargs, **{SP_KWARG: length}).last_hidden_state
    return spread_logps(inner.lm_head, hidden, keep, targets, temperature, chunk)


# --------------------------------------------------------------------------------- lm_head spread
def share_plan(n_items: int, owners: torch.Tensor, sp_size: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Even split of `n_items` logit positions (owner rank of each: `owners` [M]) over `sp_size` ranks:
    (share size S, destination rank [M] = item // S, slot [M] = the item's index among the items going from its
    owner to its destination, in item order)."""
    share = math.ceil(n_items / sp_size)
    dest = torch.arange(n_items, device=owners.device) // share
    pair = owners * sp_size + dest
    slot = torch.zeros_like(pair)
    for p in torch.unique(pair).tolist():
        where = torch.nonzero(pair == p).flatten()
        slot[where] = torch.arange(where.numel(), device=owners.device)
    return share, dest, slot


def spread_logps(lm_head: torch.nn.Module, hidden: torch.Tensor, keep: torch.Tensor, targets: torch.Tensor,
                 temperature: float, chunk: int) -> torch.Tensor:
    """Item 3: the log-probs [K, n] of `targets` at global positions `keep` [n] of every row, from this rank's
    chunk of final hidden states [K, chunk, D] (rank r holds positions r*chunk .. (r+1)*chunk - 1), with the
    lm_head + log-softmax work split evenly over the SP ranks (an all-to-all of the needed hidden states,
    differentiable), and the result gathered to every rank with an own-slice backward."""
    from deepspeed.sequence.layer import _dim_zero_all_to_all   # Ulysses' own differentiable exchange

    sp_size, rank, group = _GROUP.size, _GROUP.rank, _GROUP.group
    k, n = targets.shape
    m = k * n
    if m == 0:   # nothing to predict (the same on every rank of the group): a zero that still backpropagates
        return hidden.sum() * 0 + hidden.new_zeros(k, n, dtype=torch.float32)
    keep = keep.to(hidden.device)
    pos = keep.repeat(k)                                                         # item f = row * n + j
    row = torch.arange(k, device=hidden.device).repeat_interleave(n)
    owners = pos // chunk
    share, dest, slot = share_plan(m, owners, sp_size)
    width = int(torch.bincount(owners * sp_size + dest, minlength=sp_size * sp_size).max())
    pieces = []
    for d in range(sp_size):
        sel = torch.nonzero((owners == rank) & (dest == d)).flatten()
        piece = hidden[row[sel], pos[sel] - rank * chunk]
        pieces.append(_pad_end(piece, width, 0))
    send = torch.stack(pieces)                                                   # [S, width, D]
    received = _dim_zero_all_to_all(group, send)                                # [S, width, D] from each rank
    mine = torch.nonzero(dest == rank).flatten()
    states = received.reshape(sp_size * width, -1)[owners[mine] * width + slot[mine]]
    logits = lm_head(states)[None]
    logp = selective_log_softmax(logits, targets.reshape(-1)[mine].to(logits.device)[None], temperature)[0]
    return _GatherOwnSlice.apply(logp, share, m).reshape(k, n)


class _GatherOwnSlice(torch.autograd.Function):
    """All-gather of each rank's share (rank r: items r*share .. , fewer on the last) into the whole [M];
    backward: each rank keeps the gradient of its own share (every rank computes the same loss from the
    whole, so summing the ranks' gradients, as an all-gather's usual backward does, would count it S times)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, share: int, total: int) -> torch.Tensor:
        ctx.count = local.shape[0]
        parts = [local.new_empty(share) for _ in range(_GROUP.size)]
        dist.all_gather(parts, _pad_end(local.contiguous(), share, 0), group=_GROUP.group)
        ctx.start = _GROUP.rank * share
        return torch.cat(parts)[:total]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad[ctx.start:ctx.start + ctx.count].contiguous(), None, None


# ------------------------------------------------------------------------------------- the callers
def plain_logps(model: torch.nn.Module, inputs: Mapping[str, Any], ids: torch.Tensor, temperature: float
                ) -> torch.Tensor:
    """Per-token log-probs [N, C] of completion ids at the end of unpacked rows (`videor1.rl.step.loss_inputs`
    without `shared`, the dummy batch), sequence-parallel. Rows must have no padding (Ulysses drops the mask)."""
    from videor1.model.positions import rope_index, rule_of_model

    mask = inputs.get("attention_mask")
    if mask is not None and not bool(mask.bool().all()):
        raise ValueError("sequence parallelism over padded rows needs shared_prefix: true (Ulysses drops the "
                         "attention mask)")
    positions, _ = rope_index(rule_of_model(model), inputs["input_ids"], inputs.get("mm_token_type_ids"),
                              inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
                              inputs.get("second_per_grid_ts"))
    length, c = inputs["input_ids"].shape[1], ids.shape[1]
    keep = torch.arange(length - c - 1, length - 1, device=ids.device)
    return sp_logps(model, inputs, positions, keep, ids, temperature)


def token_nll(model: torch.nn.Module, inputs: Mapping[str, Any], labels: torch.Tensor, keep: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """SFT: `videor1.sft.data.token_nll` of `model(**inputs, logits_to_keep=keep)` and `labels[:, -keep:]`,
    sequence-parallel: (summed next-token NLL over the target positions, their number). Rows are right padded,
    and causal attention never lets a real token see what follows it, so no mask is needed."""
    from videor1.model.positions import rope_index, rule_of_model
    from videor1.sft.data import IGNORE_INDEX

    positions, _ = rope_index(rule_of_model(model), inputs["input_ids"], inputs.get("mm_token_type_ids"),
                              inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
                              inputs.get("second_per_grid_ts"), attention_mask=inputs.get("attention_mask"))
    length = inputs["input_ids"].shape[1]
    shifted = labels[:, length - keep + 1:]
    target = shifted != IGNORE_INDEX
    where = torch.arange(length - keep, length - 1, device=labels.device)
    logp = sp_logps(model, inputs, positions, where, torch.where(target, shifted, 0), 1.0)
    total = -torch.where(target, logp, torch.zeros((), dtype=logp.dtype, device=logp.device)).sum()
    return total, target.sum()


class SPRollouts:
    """A rollout engine whose `generate` returns the completions of the SP group's first rank on every rank of
    the group (one broadcast), so that the group's ranks train on the same rollouts even where generation is
    not bit-reproducible across processes. Every rank still runs the engine (a collective under ZeRO-3)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, samples: list, params: Any) -> list:
        out = self._engine.generate(samples, params)
        box = [out]
        dist.broadcast_object_list(box, src=dist.get_global_rank(_GROUP.group, 0), group=_GROUP.group)
        return box[0]

