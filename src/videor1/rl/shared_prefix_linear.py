"""The shared-prefix forward (`videor1.rl.shared_prefix`) in the linear-attention layers of hybrid decoders:
Qwen3.5's Gated DeltaNet (GDN), dense and MoE.

A packed row [left padding | prompt | slot 1 | ... | slot G] cannot run through a GDN layer as one
sequence: its recurrent state and its causal conv would carry slot j's tokens into slot j + 1. Here the
layer runs the prompt once, keeps its final recurrent state and its last (kernel - 1) conv inputs, and
starts every slot from them, as if each completion followed the prompt alone:

- projections (`in_proj_qkv`, `in_proj_z`, `in_proj_a`, `in_proj_b`) over the whole row, the prompt's
  left padding zeroed first (what the layer's 2D padding mask does in an unpacked row);
- the prompt's conv and chunked delta rule as the layer runs them, the final recurrent state kept;
- the slots reshaped to [K G, C]: the prompt's last (kernel - 1) conv inputs prepended to each slot
  (the conv's left context), and the delta rule started from the prompt's state, repeated G times;
- gated norm and `out_proj` over the whole row again.

The pieces are the model's own: its module's `causal_conv1d_fn` and `torch_chunk_gated_delta_rule` (which
transformers points at causal-conv1d / flash-linear-attention kernels when those are installed), its
conv weights, norm and projections (LoRA layers included). Backward sends every slot's gradient into the
one prompt computation through the repeated state and conv inputs.

The layer is switched (once, `install_shared_linear`) to a subclass whose forward, without the packed
layout, IS the class's forward (generation, unpacked loss forwards); with it, runs the above. The
route replaces what that forward does on a packed row, so it is tied to the transformers code it was
tested against: `check_linear_layers` refuses a GDN class whose forward signature, parameters or
source differ from the tested one (`TESTED_FORWARDS`), and any other linear-attention layer, with a clear
error naming the class. Tests: tests/test_shared_prefix_hybrid.py (log-probs and gradients equal the
unshared path).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import sys
from collections.abc import Callable
from types import ModuleType

import torch
import torch.nn.functional as F

from videor1.rl.shared_prefix import LAYOUT_KWARG, Layout

# GDN classes whose forward this route reproduces, with the sha256 of `inspect.getsource(cls.forward)` in
# the transformers versions the project admits (qwen3_5_moe's class is generated from qwen3_5's: same
# source). The three forwards differ only in their cache handling (unused here) and in where query and key
# heads are repeated to the value heads (5.23: inside the delta rule; before: in the forward; `_delta_rule`
# repeats them itself, which both delta rules accept).
_FORWARDS = frozenset({"bd25761e1031fff0f6b24115dff8175ee9c8fb585287a4026b73a12bb0b5d816",   # 5.17.0-5.20.2
                       "43718d6c3e7255e63fc7a79d60c242912b48dbe00f351b9d80814ca0fb603037",   # 5.21.0-5.22.2
                       "8f31ae7d35daf534a763d1ca92875c5c412e06a4488885e5126907a804b52878"})  # 5.23.0
TESTED_FORWARDS: dict[str, frozenset[str]] = {"Qwen3_5GatedDeltaNet": _FORWARDS, "Qwen3_5MoeGatedDeltaNet": _FORWARDS}
_FORWARD_PARAMS = ("self", "hidden_states", "cache_params", "attention_mask", "kwargs")
_LAYER_ATTRS = ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "conv1d", "A_log", "dt_bias", "norm",
                "out_proj", "key_dim", "value_dim", "head_k_dim", "head_v_dim", "num_k_heads", "num_v_heads",
                "conv_kernel_size", "activation")
_FUNCTIONS = {"causal_conv1d_fn": ("hidden_states", "weight", "bias", "activation"),
              "torch_chunk_gated_delta_rule": ("query", "key", "value", "g", "beta", "initial_state",
                                               "output_final_state", "use_qk_l2norm_in_kernel")}
_SHARED_CLASSES: dict[type, type] = {}


def linear_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The token mixers of `model`'s linear-attention decoder layers (the `linear_attn` of a Qwen3.5 decoder
    layer whose type is "linear_attention"; full-attention layers have none)."""
    return [m.linear_attn for m in model.modules() if hasattr(m, "linear_attn")]


@functools.cache
def forward_digest(cls: type) -> str:
    """sha256 of the source of `cls.forward` (the code this route stands in for on packed rows)."""
    return hashlib.sha256(inspect.getsource(cls.forward).encode()).hexdigest()


def _original_class(layer: torch.nn.Module) -> type:
    """The layer's class before `install_shared_linear` switched it (its own class otherwise)."""
    cls = type(layer)
    return cls.__dict__.get("_videor1_original", cls)


def check_linear_layer(layer: torch.nn.Module) -> None:
    """ValueError unless `layer` is a GDN layer of a tested class whose forward is the tested code."""
    cls = _original_class(layer)
    name = cls.__name__
    advice = "set shared_prefix: false (or use the transformers version the route was tested with)"
    if name not in TESTED_FORWARDS:
        raise ValueError(f"shared_prefix has no exact path for the linear-attention layer {name}: {advice}")
    params = tuple(inspect.signature(cls.forward).parameters)
    if params != _FORWARD_PARAMS:
        raise ValueError(f"shared_prefix: {name}.forward takes {params}, the tested one {_FORWARD_PARAMS}: {advice}")
    missing = [a for a in _LAYER_ATTRS if not hasattr(layer, a)]
    if missing:
        raise ValueError(f"shared_prefix: {name} lacks {missing}, which the tested one has: {advice}")
    digest = forward_digest(cls)
    if digest not in TESTED_FORWARDS[name]:
        raise ValueError(f"shared_prefix: {name}.forward in {cls.__module__} is not the code the shared-prefix "
                         f"route was tested against (source sha256 {digest[:12]}): {advice}")
    module = sys.modules[cls.__module__]
    for fn, wanted in _FUNCTIONS.items():
        params = inspect.signature(getattr(module, fn)).parameters
        if not set(wanted) <= set(params):
            raise ValueError(f"shared_prefix: {cls.__module__}.{fn} lacks parameters "
                             f"{sorted(set(wanted) - set(params))}: {advice}")


def check_linear_layers(model: torch.nn.Module) -> None:
    """`check_linear_layer` on every linear-attention layer of `model` (none: nothing to check)."""
    for layer in linear_layers(model):
        check_linear_layer(layer)


def _shared_class(cls: type) -> type:
    """The subclass of a GDN class whose forward takes the packed layout (`shared_gdn`)."""
    if cls not in _SHARED_CLASSES:
        original: Callable = cls.forward

        def forward(self, hidden_states: torch.Tensor, cache_params=None, attention_mask=None, **kwargs):
            layout: Layout | None = kwargs.pop(LAYOUT_KWARG, None)
            if layout is None:
                return original(self, hidden_states, cache_params=cache_params, attention_mask=attention_mask,
                                **kwargs)
            if cache_params is not None:
                raise ValueError("shared_prefix: a packed forward takes no cache (use_cache=False)")
            return shared_gdn(self, sys.modules[cls.__module__], hidden_states, layout)

        _SHARED_CLASSES[cls] = type(cls.__name__, (cls,), {"forward": forward, "_videor1_original": cls,
                                                           "__module__": cls.__module__,
                                                           "__qualname__": cls.__qualname__})
    return _SHARED_CLASSES[cls]


def install_shared_linear(model: torch.nn.Module) -> None:
    """Check every linear-attention layer of `model` (`check_linear_layer`) and switch it to the class
    whose forward runs packed rows (`shared_gdn`). Idempotent; forwards without a layout are unchanged."""
    for layer in linear_layers(model):
        check_linear_layer(layer)
        cls = _original_class(layer)
        if type(layer) is cls:
            layer.__class__ = _shared_class(cls)


def _conv(module: ModuleType, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's causal depthwise conv + activation over x [B, channels, T] (zero left context)."""
    return module.causal_conv1d_fn(x, layer.conv1d.weight.squeeze(1), layer.conv1d.bias, activation=layer.activation)


def _delta_rule(module: ModuleType, layer: torch.nn.Module, qkv: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's chunked gated delta rule over conv outputs qkv [B, T, channels] with gate inputs a, b
    [B, T, heads], from `state` (None: zero); returns (output [B, T, heads, head_v_dim], final state)."""
    batch, length, _ = qkv.shape
    query, key, value = torch.split(qkv, [layer.key_dim, layer.key_dim, layer.value_dim], dim=-1)
    query = query.reshape(batch, length, -1, layer.head_k_dim)
    key = key.reshape(batch, length, -1, layer.head_k_dim)
    value = value.reshape(batch, length, -1, layer.head_v_dim)
    if layer.num_v_heads != layer.num_k_heads:    # each query / key head serves consecutive value heads
        query = query.repeat_interleave(layer.num_v_heads // layer.num_k_heads, dim=2)
        key = key.repeat_interleave(layer.num_v_heads // layer.num_k_heads, dim=2)
    beta = b.sigmoid()
    g = -layer.A_log.float().exp() * F.softplus(a.float() + layer.dt_bias)
    return module.torch_chunk_gated_delta_rule(query, key, value, g=g, beta=beta, initial_state=state,
                                               output_final_state=True, use_qk_l2norm_in_kernel=True)


def shared_gdn(layer: torch.nn.Module, module: ModuleType, hidden: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A GDN layer's output [K, Lp + G C, hidden] on packed rows: the prompt once, each slot from the
    prompt's recurrent state and conv context (see the module docstring)."""
    k, length, _ = hidden.shape
    lp, n, c, width = layout.lp, layout.n, layout.c, layer.conv_kernel_size - 1
    real = torch.ones(length, dtype=hidden.dtype, device=hidden.device).repeat(k, 1)
    real[:, :lp] = layout.real.to(hidden.dtype)
    hidden = hidden * real[:, :, None]
    mixed = layer.in_proj_qkv(hidden).transpose(1, 2)                     # [K, channels, L]
    z, a, b = layer.in_proj_z(hidden), layer.in_proj_a(hidden), layer.in_proj_b(hidden)
    prompt_in = mixed[:, :, :lp]
    padded = F.pad(prompt_in, (width, 0))                                 # the conv's zero left context
    context = padded[:, :, padded.shape[2] - width:]                      # the prompt's last kernel - 1 inputs
    slots_in = mixed[:, :, lp:].reshape(k, -1, n, c).transpose(1, 2).reshape(k * n, -1, c)
    slots_in = torch.cat([context.repeat_interleave(n, dim=0), slots_in], dim=2)
    prompt_out, state = _delta_rule(module, layer, _conv(module, layer, prompt_in).transpose(1, 2),
                                    a[:, :lp], b[:, :lp], None)
    slots_qkv = _conv(module, layer, slots_in)[:, :, width:].transpose(1, 2)   # [K n, C, channels]
    heads = a.shape[-1]
    slots_out, _ = _delta_rule(module, layer, slots_qkv, a[:, lp:].reshape(k * n, c, heads),
                               b[:, lp:].reshape(k * n, c, heads), state.repeat_interleave(n, dim=0))
    core = torch.cat([prompt_out, slots_out.reshape(k, n * c, *slots_out.shape[2:])], dim=1)
    core = layer.norm(core.reshape(-1, layer.head_v_dim), z.reshape(-1, layer.head_v_dim))
    return layer.out_proj(core.reshape(k, length, -1))
