"""The policy's full weights as (HF name, tensor) pairs, for engines that hold their own copy (vLLM).

`full_state_items(model, accelerator)` works on the prepared model of any set-up: plain / DDP (the state
dict's tensors), DeepSpeed ZeRO-3 (each parameter gathered with `deepspeed.zero.GatheredParameters` and
copied out: outside that context the local tensor is an empty placeholder), FSDP2 (each DTensor parameter's
`full_tensor()`). Under ZeRO-3 and FSDP2 gathering is collective: every rank must iterate the pairs fully, in
the same order (they do: names come from the same module on every rank).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch


def _unwrap(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    if accelerator is not None:
        return accelerator.unwrap_model(model)
    return getattr(model, "module", model)


def _is_zero3(param: torch.nn.Parameter) -> bool:
    return hasattr(param, "ds_id") and hasattr(param, "ds_shape")


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "full_tensor") and hasattr(tensor, "placements")


def full_state_items(model: torch.nn.Module, accelerator: Any = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every parameter and persistent buffer of the (unwrapped) model, in state dict
    order with HF names. Tensors of an unsharded model are the live ones (detached, not copied)."""
    module = _unwrap(model, accelerator)
    params = dict(module.named_parameters(remove_duplicate=False))  # tied weights: every name
    sharded = any(_is_zero3(p) or _is_dtensor(p) for p in params.values())
    if not sharded:
        for name, tensor in module.state_dict().items():
            yield name, tensor.detach()
        return
    names = list(module.state_dict().keys())  # placeholders under ZeRO-3 / DTensors under FSDP2: cheap
    buffers = dict(module.named_buffers())
    for name in names:
        if name in params:
            yield name, _full(params[name])
        elif name in buffers:
            buf = buffers[name]
            yield name, (buf.full_tensor() if _is_dtensor(buf) else buf).detach()


def _full(param: torch.nn.Parameter) -> torch.Tensor:
    if _is_zero3(param):
        import deepspeed  # lazily: optional extra

        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            return param.data.detach().clone()
    if _is_dtensor(param):
        return param.full_tensor().detach()
    return param.detach()
