"""The one room that knows which distributed engine runs: DDP, DeepSpeed ZeRO-2/3, FSDP2 or one process.

- `make_accelerator` builds the `Accelerator` from what `accelerate launch` put in the environment, so that a
  DeepSpeed or FSDP config is honoured on every device, a CPU included (gloo where there is no accelerator):
  accelerate 1.15 drops DeepSpeed when the Accelerator is built with `cpu=True` and turns FSDP on only for
  GPU-like device types, so on a CPU-only machine DeepSpeed gets `cpu=False` + a gloo process group, and FSDP2
  gets a gloo process group and accelerate's FSDP state set by hand (`_force_fsdp_on_cpu`, the one place
  where we go around accelerate; the engine tests assert that the parameters really are DTensors).
- `check_engine` refuses a run whose engine differs from the one the launcher asked for (no silent DDP).
- `engine_name` / `engine_info` state the engine in the log line, `engine.yaml` and every metrics row.
- The helpers below keep every process's collective calls in step (see `videor1.rl.trainer`'s docstring for
  the invariant): `any_process`, `max_over_processes`, `equal_vision_calls`.

`make_accelerator` also silences torch's FutureWarnings about the collectives DeepSpeed 0.19 still calls
(`all_gather_into_tensor`, `reduce_scatter_tensor` and their `_base` forms): libraries reset Python's
once-per-place warning registry, so each was printed again at every step (hundreds of lines a run).

The process-group timeout is `VIDEOR1_DIST_TIMEOUT_S` (seconds; default 1800, gloo's and NCCL's usual): the
engine tests set it short so that a collective-count mismatch fails in about a minute instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs

from videor1.atomic import atomic_write_text
from videor1.config import ConfigError
from videor1.model.vision_shard import dummy_pixels
from videor1.parallel.sequence import data_parallel, sequence_parallel  # noqa: F401 (the trainers' entry)
from videor1.parallel.sequence import size as sequence_parallel_size

TIMEOUT_ENV = "VIDEOR1_DIST_TIMEOUT_S"
ENGINE_FILE = "engine.yaml"
#: torch's deprecation messages of the collectives DeepSpeed calls (see the module doc)
DEPRECATED_COLLECTIVES = r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor|_all_gather_base|" \
                         r"_reduce_scatter_base)` (is|will be)"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def _has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def requested_engine() -> str:
    """The engine the launcher asked for: 'deepspeed', 'fsdp', 'ddp' (several processes) or 'single'."""
    if _env_flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if _env_flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    return "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "single"


def make_accelerator(**kwargs: Any) -> Accelerator:
    """The Accelerator for `accelerate launch` (or a plain `python` process), honouring a DeepSpeed / FSDP
    config on every device; `kwargs` go to `Accelerator` (mixed_precision, gradient_accumulation_steps).
    Raises ConfigError when the engine that would run is not the one asked for (see `check_engine`)."""
    wanted = requested_engine()
    warnings.filterwarnings("ignore", message=DEPRECATED_COLLECTIVES, category=FutureWarning)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
    gpu = _has_accelerator()
    if wanted == "fsdp" and int(os.environ.get("FSDP_VERSION", "1")) != 2:
        raise ConfigError("accelerate config: fsdp_version 1 is not supported; use fsdp_version: 2 "
                          "(configs/accelerate/fsdp2.yaml)")
    if wanted == "deepspeed" and not gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")   # DeepSpeed's CPU accelerator (gloo without oneCCL)
    init = InitProcessGroupKwargs(timeout=timeout) if gpu else InitProcessGroupKwargs(backend="gloo", timeout=timeout)
    # DDP on a CPU needs cpu=True (accelerate's MULTI_CPU over gloo); DeepSpeed needs cpu=False everywhere.
    # One plain process gets no process-group settings (accelerate would read a backend as "distributed").
    cpu = not gpu and wanted in ("ddp", "single", "fsdp")
    distributed = wanted != "single" or "LOCAL_RANK" in os.environ
    accelerator = Accelerator(cpu=cpu, kwargs_handlers=[init] if distributed else None, **kwargs)
    if wanted == "fsdp" and not gpu:
        _force_fsdp_on_cpu(accelerator)
    check_engine(accelerator, wanted)
    return accelerator


def _force_fsdp_on_cpu(accelerator: Accelerator) -> None:
    """Turn accelerate's FSDP2 on for a CPU process group (accelerate 1.15 enables FSDP only for GPU-like
    device types; torch's `fully_shard` itself runs on CPU with gloo). Writes the two fields of accelerate's
    shared state that its FSDP branch would have written; brittle across accelerate versions by nature,
    hence checked by the engine tests (DTensor parameters after `prepare`)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    state = accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        raise ConfigError(f"FSDP on a CPU needs several processes (accelerate launch --num_processes N); "
                          f"accelerate set up {state.distributed_type}")
    plugin = FullyShardedDataParallelPlugin()   # reads the FSDP_* variables accelerate launch exported
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    from accelerate.state import PartialState

    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def engine_name(accelerator: Accelerator) -> str:
    """What actually runs: 'zero1'/'zero2'/'zero3', 'fsdp2', 'ddp' or 'single'."""
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return f"zero{int(accelerator.state.deepspeed_plugin.zero_stage)}"
    if kind == DistributedType.FSDP:
        return f"fsdp{int(accelerator.state.fsdp_plugin.fsdp_version)}"
    return "ddp" if accelerator.num_processes > 1 else "single"


def check_engine(accelerator: Accelerator, wanted: str | None = None) -> None:
    """Raise ConfigError when the engine that runs is not the launcher's (e.g. a DeepSpeed config that
    accelerate would run as DDP)."""
    wanted = wanted or requested_engine()
    got = engine_name(accelerator)
    family = "deepspeed" if got.startswith("zero") else "fsdp" if got.startswith("fsdp") else got
    if family != wanted:
        raise ConfigError(f"accelerate config asks for {wanted} but the run would use {got} "
                          f"({accelerator.num_processes} process(es), {accelerator.distributed_type}); "
                          "refusing to fall back silently")


def engine_info(accelerator: Accelerator, optimizer: torch.optim.Optimizer | None = None,
                model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Plain data stating the engine (written to engine.yaml and every metrics row)."""
    info: dict[str, Any] = {"engine": engine_name(accelerator), "num_processes": accelerator.num_processes,
                            "sequence_parallel_size": sequence_parallel_size(),   # data-parallel ranks: the ratio
                            "distributed_type": str(accelerator.distributed_type).split(".")[-1],
                            "backend": str(getattr(accelerator.state, "backend", None)),
                            "device": str(accelerator.device)}
    if optimizer is not None:
        inner = getattr(optimizer, "optimizer", optimizer)   # accelerate's AcceleratedOptimizer wraps it
        info["optimizer"] = type(inner).__name__
    if model is not None:
        info["parameters"] = parameter_kind(model)
    return info


def parameter_kind(model: torch.nn.Module) -> str:
    """How the prepared model holds its parameters: 'dtensor' (FSDP2 shards), 'zero3' (DeepSpeed partitions,
    `ds_tensor`) or 'tensor' (whole on every process)."""
    from torch.distributed.tensor import DTensor

    params = [p for p in model.parameters()]
    if params and all(isinstance(p, DTensor) for p in params):
        return "dtensor"
    if params and all(hasattr(p, "ds_tensor") for p in params):
        return "zero3"
    return "tensor"


def announce_engine(accelerator: Accelerator, optimizer: torch.optim.Optimizer | None,
                    model: torch.nn.Module | None, out: Path, what: str) -> dict[str, Any]:
    """The log line + `<out>/engine.yaml` (main process); returns `engine_info`."""
    info = engine_info(accelerator, optimizer, model)
    if accelerator.is_main_process:
        sp = f", SP {info['sequence_parallel_size']}" if info["sequence_parallel_size"] > 1 else ""
        print(f"videor1 {what}: engine {info['engine']} ({info['num_processes']} process(es){sp}, "
              f"{info['distributed_type']}, backend {info['backend']}, device {info['device']}, "
              f"optimizer {info.get('optimizer')}, parameters {info.get('parameters')})", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / ENGINE_FILE, yaml.safe_dump(info, sort_keys=False))
    return info


# ----------------------------------------------------------------- keeping collective calls in step
def _reduce(accelerator: Accelerator, value: float, op: str) -> float:
    if accelerator.num_processes == 1:
        return float(value)
    local = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(local, reduction="sum").item()) if op == "sum" else \
        float(_all_max(local).item())


def _all_max(t: torch.Tensor) -> torch.Tensor:
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """Whether `flag` holds on any process (one all-reduce; the same answer everywhere)."""
    return _reduce(accelerator, float(bool(flag)), "max") > 0


def max_over_processes(accelerator: Accelerator, value: float) -> float:
    """The largest `value` of all processes (one all-reduce)."""
    return _reduce(accelerator, value, "max")


def vision_calls(inputs: Any) -> int:
    """How many times a Qwen-VL forward over `inputs` runs its vision tower: once per media kind present."""
    return int(inputs.get("pixel_values") is not None) + int(inputs.get("pixel_values_videos") is not None)


def _visual_module(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)               # DeepSpeed engine / DDP wrapper
    inner = getattr(inner, "base_model", inner)           # peft
    inner = getattr(inner, "model", inner)
    for candidate in (inner, getattr(inner, "model", None)):
        visual = getattr(candidate, "visual", None)
        if visual is not None:
            return visual
    raise TypeError(f"{type(model).__name__}: no vision tower (.visual) found")


@contextlib.contextmanager
def equal_vision_calls(accelerator: Accelerator, model: torch.nn.Module, inputs: Any) -> Iterator[list]:
    """Within this context, a forward of `model` over `inputs` runs the vision tower as many times as the
    process with the most media kinds in its batch does. Under ZeRO-3 (parameter all-gather per module call)
    and FSDP2 (vision blocks wrapped) every vision-tower call is a collective, and Qwen-VL runs the tower once
    per media kind, so [image, video] on one process and [video, video] on another deadlock.

    The extra calls run on a zero input right after this process's first real tower call (a forward hook on
    the tower), so every process issues the same sequence of module calls inside the same root forward (the
    tower's modules are the same for images and videos). Yields the list the extra outputs are put in: add
    `padding_loss(extra)` (0 x their sum) to a loss that is backpropagated, so that their backward (ZeRO-3 and
    FSDP2 gather again in backward) runs too. One all-reduce; a no-op unless parameters are sharded."""
    from videor1.train.common import params_sharded

    extra: list[torch.Tensor] = []
    missing = 0
    if accelerator.num_processes > 1 and params_sharded(accelerator):
        local = vision_calls(inputs)
        missing = int(max_over_processes(accelerator, local)) - local
    if not missing:
        yield extra
        return
    visual = _visual_module(model)
    pixels, grid = dummy_pixels(visual, accelerator.device)
    pending = [missing]

    def run_extra(module: torch.nn.Module, *_: Any) -> None:
        count, pending[0] = pending[0], 0
        for _ in range(count):
            extra.append(_first_tensor(module(pixels, grid_thw=grid)))

    if vision_calls(inputs) == 0:   # no real tower call to follow: run them before the forward
        run_extra(visual)
        yield extra
        return
    handle = visual.register_forward_hook(lambda module, args, output: run_extra(module) if pending[0] else None)
    try:
        yield extra
    finally:
        handle.remove()


def _first_tensor(out: Any) -> torch.Tensor:
    for key in ("pooler_output", "last_hidden_state"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"vision tower returned {type(out).__name__}")


def padding_loss(extra: list[torch.Tensor]) -> torch.Tensor | float:
    """0 x the extra vision outputs (a zero gradient that still runs their backward on this process)."""
    return sum((0.0 * t.float().sum() for t in extra), 0.0)


@contextlib.contextmanager
def zero3_generation(engine: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """ZeRO-3: gather the policy's parameters once for generation with DeepSpeed's
    `unwrap_model_for_generation` (collective: every process enters, prompts or not), and also take off the
    root module's start-of-forward hook it leaves on: while DeepSpeed's module trace is incomplete (the first
    step, or after the module order changed) that hook compares the trace across processes with a broadcast,
    so every `generate` step would be a collective and a process that generates fewer tokens, or none (no
    usable prompt), would deadlock the others. With it off, generation is local to each process."""
    from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

    with unwrap_model_for_generation(engine):
        offload = getattr(engine.optimizer, "parameter_offload", engine.optimizer)
        handle = getattr(offload, "fwd_pre_hook", None)
        module = offload.module
        hook = module._forward_pre_hooks.get(handle.id) if handle is not None else None
        if hook is not None:
            handle.remove()
        try:
            yield engine
        finally:
            if hook is not None:
                offload.fwd_pre_hook = module.register_forward_pre_hook(hook)


@contextlib.contextmanager
def fsdp2_generation(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """FSDP2: all-gather the policy's parameters once (every FSDP unit's `unshard`, a collective every process
    enters, prompts or not) and keep them whole until the context ends, so that `generate` (one forward per
    token, different counts on different processes, none on a process without a prompt) and any other forward
    inside run locally. FSDP2 would otherwise all-gather in each unit's pre-forward and free again after it,
    a collective per token. On exit every unit is resharded and gets back its own reshard-after-forward
    setting (the root's differs from the others'; `set_reshard_after_forward` has no getter, so the setting
    is saved from the units' state: torch 2.14's `_fsdp_param_groups[*].post_forward_mesh_info` and
    `_auto_reshard_after_forward`). Memory: the whole model on every process meanwhile, as ZeRO-3's
    `zero3_generation`."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    states = [unit._get_fsdp_state() for unit in units]
    if states:
        states[0]._lazy_init()   # the root's first-forward set-up (its own setting), before saving the settings
    saved = [(s._auto_reshard_after_forward, [g.post_forward_mesh_info for g in s._fsdp_param_groups])
             for s in states]
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for unit, state, (auto, infos) in zip(units, states, saved):
            state._auto_reshard_after_forward = auto
            for group, info in zip(state._fsdp_param_groups, infos):
                group.post_forward_mesh_info = info
            unit.reshard()


def whole_parameters(accelerator: Accelerator, model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """The context in which forwards of `model` (the prepared one) are local to each process: ZeRO-3
    (`zero3_generation`) and FSDP2 (`fsdp2_generation`) gather the parameters once on entry (a collective
    every process enters); other engines hold whole parameters already (nothing to do)."""
    from videor1.train.common import zero_stage

    if zero_stage(accelerator) == 3:
        return zero3_generation(model)
    if accelerator.distributed_type == DistributedType.FSDP:
        return fsdp2_generation(model)
    return contextlib.nullcontext(model)
