"""What the SFT and RL loops share besides checkpoints (`videor1.train.checkpoint`) and metrics
(`videor1.train.metrics`): seeding and RNG state, distributed helpers, precision, the training records,
vision freezing and the optimizer's parameter groups.
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping

import numpy as np
import torch
from accelerate import Accelerator

from videor1.config import ConfigError
from videor1.data.records import DatasetFileError, Record, read_records
from videor1.model.families import family_of, is_vision_param, qwen2_5_vl
from videor1.train.metrics import SKIPPED_FILE, skip_log


# -------------------------------------------------------------------------------------- seeding / RNG
def seed_everything(seed: int) -> None:
    """Seed Python's `random`, numpy's global RNG and torch (CPU and every accelerator device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """The current states of Python, numpy and torch RNGs (and CUDA's, when available) as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the RNG states saved by `rng_state()`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -------------------------------------------------------------------------------------- distributed
def zero_stage(accelerator: Accelerator) -> int:
    """DeepSpeed's ZeRO stage under `accelerate launch` with a DeepSpeed config; 0 without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return int(getattr(plugin, "zero_stage", 0) or 0) if plugin is not None else 0


def params_sharded(accelerator: Accelerator) -> bool:
    """True when parameters themselves are split across processes (ZeRO-3 or FSDP), not only optimizer
    state (ZeRO-1/2): then no process holds the whole model without gathering it."""
    return zero_stage(accelerator) == 3 or "FSDP" in str(getattr(accelerator, "distributed_type", ""))


def is_sharded(accelerator: Accelerator) -> bool:
    """True under DeepSpeed or FSDP (parameters / optimizer state split across processes)."""
    kind = str(getattr(accelerator, "distributed_type", ""))
    return "DEEPSPEED" in kind or "FSDP" in kind


def process_sum(accelerator: Accelerator, value: float) -> float:
    """`value` summed over every data-parallel rank (one all-reduce; the same float on every process). The
    ranks of one sequence-parallel group hold the same work, so it is counted once
    (`videor1.parallel.sequence.replicas`)."""
    from videor1.parallel.sequence import replicas

    local = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(local, reduction="sum").item()) / replicas()


def advance_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> None:
    """Step the learning-rate schedule `steps` times without an optimizer step (a step that makes no update
    keeps the schedule aligned), without torch's warning about that order, which assumes a mistake."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        for _ in range(steps):
            scheduler.step()


def barrier(accelerator: Accelerator | None) -> None:
    """Wait for every process (nothing to wait for without an accelerator)."""
    if accelerator is not None:
        accelerator.wait_for_everyone()


def fill_deepspeed_auto(accelerator: Accelerator, *, micro_batch: int, accumulation: int,
                        max_grad_norm: float, model: torch.nn.Module | None = None) -> None:
    """Under DeepSpeed, give the "auto" batch / accumulation / clipping entries these values (the trainers
    prepare no DataLoader, from which accelerate would read the batch size, and DeepSpeed would clip at 1.0
    instead of the configured norm). With `model`, also the ZeRO bucket sizes accelerate derives from
    `config.hidden_size`, which Qwen2.5-VL's config only has in its text_config. No-op without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    values = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": accumulation,
              "train_batch_size": micro_batch * accumulation * accelerator.num_processes,
              "gradient_clipping": max_grad_norm}  # 0: no clipping
    for key, value in values.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    if model is not None:
        _fill_hidden_size_auto(ds, model)


def _text_hidden_size(config: Any) -> int | None:
    """hidden_size of a model config, or of its text config (transformers 5's Qwen2.5-VL config has no top-level
    hidden_size, which accelerate 1.15 reads to fill the ZeRO bucket "auto" entries and raises without)."""
    for cfg in (config, getattr(config, "text_config", None)):
        size = getattr(cfg, "hidden_size", None) if cfg is not None else None
        if isinstance(size, int):
            return size
    return None


def _fill_hidden_size_auto(ds: dict, model: torch.nn.Module) -> None:
    """The ZeRO bucket "auto" entries accelerate derives from hidden_size, with the values it would use."""
    zero = ds.get("zero_optimization")
    hidden = _text_hidden_size(getattr(model, "config", None))
    if not isinstance(zero, dict) or hidden is None:
        return
    values = {"reduce_bucket_size": hidden * hidden, "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
              "stage3_param_persistence_threshold": 10 * hidden}
    for key, value in values.items():
        if zero.get(key) == "auto":
            zero[key] = value


# ---------------------------------------------------------------------------------------- precision
def mixed_precision(bf16: bool | str) -> str:
    """accelerate's mixed_precision for the `bf16` key (auto: bf16 where the GPU supports it)."""
    if bf16 == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return "bf16" if bf16 else "no"


# ------------------------------------------------------------------------------------------ records
def media_root(train_data: str | Path, root: str | Path | None) -> str:
    """The directory record paths are relative to: `root`, or the records file's own directory."""
    return str(root) if root is not None else str(Path(train_data).parent)


def load_records(train_data: str | Path, root: str | Path | None, out: Path, *, write_log: bool,
                 reject: Callable[[Record], str | None] | None = None,
                 max_bad_fraction: float | None = None) -> tuple[list[Record], int]:
    """The usable records of `train_data` and how many were not usable.

    Bad records (and those `reject` gives a reason for) are left out; with `write_log` (the main process
    of a fresh run) `<out>/skipped.jsonl` is started anew and lists them with step 0. Raises ConfigError,
    naming the key `train_data` and the path, when the file is missing or unreadable, when no record is
    usable, or when more than `max_bad_fraction` of them are not.
    """
    try:
        good, errors = read_records(train_data, media_root(train_data, root))
    except DatasetFileError as exc:
        raise ConfigError(f"train_data: {exc}") from None
    reasons = [(e.record_id, str(e)) for e in errors]
    records = []
    for rec in good:
        why = reject(rec) if reject is not None else None
        if why:
            reasons.append((rec.problem_id, why))
        else:
            records.append(rec)
    if write_log:
        _start_skip_log(out, reasons)
        if reasons:
            print(f"{train_data}: {len(reasons)} bad records skipped (see {out / SKIPPED_FILE})")
    n_all = len(good) + len(errors)
    too_many = max_bad_fraction is not None and len(reasons) > max_bad_fraction * n_all
    if not records or too_many:
        shown = "; ".join(r for _, r in reasons[:3])
        limit = f" (max_skipped_fraction {max_bad_fraction})" if max_bad_fraction is not None else ""
        raise ConfigError(f"train_data: {train_data}: {len(reasons)} of {n_all} records are unusable{limit}"
                          + (f": {shown}" if shown else ""))
    return records, len(reasons)


def _start_skip_log(out: Path, reasons: list[tuple[object, str]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / SKIPPED_FILE).unlink(missing_ok=True)  # a fresh run starts a fresh skip log (as metrics.jsonl)
    for rid, reason in reasons:
        skip_log(out, rid, reason, step=0)


# ------------------------------------------------------------------------------------------ the model
def is_vision(param_name: str, family: ModuleType = qwen2_5_vl) -> bool:
    """Whether a parameter name belongs to the vision tower of `family` (all three: "visual")."""
    return is_vision_param(param_name, family)


def freeze_vision(model: torch.nn.Module) -> None:
    """Keep the vision tower's parameters fixed (requires_grad off); the tower is the model's family's."""
    family = family_of(model.config)
    for name, p in model.named_parameters():
        if is_vision(name, family):
            p.requires_grad_(False)


def set_fsdp_wrap_classes(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Under FSDP, wrap the model family's decoder layers and vision blocks (`FSDP_WRAP_CLASSES`), whatever
    class names the accelerate config lists (configs/accelerate/fsdp2.yaml names Qwen2.5-VL's). Call
    before `accelerator.prepare`. No-op without FSDP."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is not None:
        plugin.transformer_cls_names_to_wrap = list(family_of(model.config).FSDP_WRAP_CLASSES)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: decay on matrices, none on biases and norm weights (1-D);
    only the non-empty ones.

    Decided by the parameter's real shape: under DeepSpeed ZeRO-3 `zero.Init` (from_pretrained with
    `zero3_init_flag`) every local tensor is an empty 1-D placeholder and the shape lives in `p.ds_shape`."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if param_ndim(p) >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # no empty group: DeepSpeed deletes empty groups in place, and a scheduler built before `prepare` with one
    # lr per group then fails at its first step (LoRA has no 1-D trainable parameter)
    return [g for g in groups if g["params"]]


def param_ndim(p: torch.Tensor) -> int:
    """Number of dimensions of a parameter's full shape (ZeRO-3's `ds_shape` when partitioned)."""
    shape = getattr(p, "ds_shape", None)
    return len(shape) if shape is not None else p.ndim


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing, across the supported transformers range: 5.21+ names it
    `activation_checkpointing_enable(activation_checkpointing_kwargs=...)`, <= 5.20 only has
    `gradient_checkpointing_enable(gradient_checkpointing_kwargs=...)`. Turns the KV cache off."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
