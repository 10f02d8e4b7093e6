"""The policy's full weights as a stream of (HF name, tensor) pairs, for engines that hold their own copy (vLLM,
a rollout server).

`full_state_items(model, accelerator, dtype=...)` works on the prepared model of any set-up and never holds more
than one module's weights at a time beyond the model itself:

* plain / DDP: the state dict's tensors, cast to `dtype` one at a time (the live tensor when it already has it,
  or when `cast_unsharded` is off: a consumer in this process that copies each tensor into its own, such as an
  in-process vLLM engine, casts while copying, so no cast copy is made at all);
* DeepSpeed ZeRO-3: the parameters of one module at a time gathered with `deepspeed.zero.GatheredParameters`
  (outside that context the local tensor is an empty placeholder), each copied out in `dtype`, the gather
  released before the next module's;
* FSDP2: each DTensor parameter's `full_tensor()`, cast to `dtype`, the full-precision copy dropped at once.

Names come in state-dict order, so the pieces of one module come together and a consumer that buffers per layer
(vLLM's layerwise reload) completes each layer before the next starts. Under ZeRO-3 and FSDP2 gathering is
collective: every rank must iterate the pairs fully, in the same order (they do: the names come from the same
module on every rank), and must not stop half-way.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch


def _unwrap(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    if accelerator is not None:
        return accelerator.unwrap_model(model)
    return getattr(model, "module", model)


def _is_zero3(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id") and hasattr(param, "ds_shape")


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "full_tensor") and hasattr(tensor, "placements")


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None, *, copy: bool = False) -> torch.Tensor:
    """`tensor` detached in `dtype` (floating tensors only); a copy when `copy` or when the dtype changes."""
    tensor = tensor.detach()
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(dtype)
    return tensor.clone() if copy else tensor


def cast_items(pairs: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype | None
               ) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs with floating tensors in `dtype` (None: as given), cast one at a time."""
    for name, tensor in pairs:
        yield name, _cast(tensor, dtype)


def module_groups(names: list[str]) -> list[list[str]]:
    """Consecutive state-dict names grouped by the module that owns them (the prefix before the last dot)."""
    groups: list[list[str]] = []
    for name in names:
        owner = name.rpartition(".")[0]
        if groups and groups[-1][0].rpartition(".")[0] == owner:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def full_state_items(model: torch.nn.Module, accelerator: Any = None, *, dtype: torch.dtype | None = None,
                     cast_unsharded: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every parameter and persistent buffer of the (unwrapped) model, in state dict
    order with HF names, floating tensors in `dtype` (None: as stored). Unsharded tensors already in `dtype`
    (or any unsharded tensor, without `cast_unsharded`) are the live ones (detached, not copied); gathered ones
    are copies (see the module doc)."""
    module = _unwrap(model, accelerator)
    params = dict(module.named_parameters(remove_duplicate=False))  # tied weights: every name
    state = module.state_dict()  # placeholders under ZeRO-3 / DTensors under FSDP2: no copies
    if any(_is_zero3(p) for p in params.values()):
        buffers = dict(module.named_buffers(remove_duplicate=False))
        yield from _zero3_items([n for n in state if n in params or n in buffers], params, buffers, dtype)
        return
    for name in list(state):
        tensor = state.pop(name)
        if _is_dtensor(tensor):
            full = tensor.full_tensor()
            yield name, _cast(full, dtype)
            del full
        else:
            yield name, _cast(tensor, dtype if cast_unsharded else None)


def _zero3_items(names: list[str], params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 dtype: torch.dtype | None) -> Iterator[tuple[str, torch.Tensor]]:
    """One module's parameters gathered at a time, copied out (the gathered buffers are released and reused
    when the context ends), then the gather released."""
    import deepspeed  # lazily: optional extra

    for group in module_groups(names):
        gathered = list({id(params[n]): params[n] for n in group if n in params}.values())
        with deepspeed.zero.GatheredParameters(gathered, modifier_rank=None):
            pieces = [(n, _cast(params[n] if n in params else buffers[n], dtype, copy=True)) for n in group]
        yield from pieces
        del pieces


# ------------------------------------------------------------------------------- streamed safetensors
_SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
                       torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                       torch.uint8: "U8", torch.bool: "BOOL"}


def write_safetensors(path: str | Path, pairs: list[tuple[str, torch.Tensor]], dtype: torch.dtype | None = None,
                      metadata: dict[str, str] | None = None) -> int:
    """Write (name, tensor) pairs as a safetensors file, floating tensors in `dtype`, one tensor at a time: the
    header is computed from shapes first, then each tensor is cast, copied to the CPU and written, so no more
    than one cast tensor is held (`safetensors.torch.save_file` needs them all at once). Tensors sharing
    storage (tied weights) are simply written twice. Returns the bytes written."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, tensor in pairs:
        out = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        size = tensor.numel() * torch.empty((), dtype=out).element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[out], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for name, tensor in pairs:
            data = _cast(tensor, dtype).to("cpu").contiguous().reshape(-1)
            handle.write(memoryview(data.view(torch.uint8).numpy()))
            del data
    return 8 + len(text) + offset
