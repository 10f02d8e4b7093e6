"""Load a policy / reference model and its processor from an HF directory (`from_pretrained`, remote code off).

The tiny checkpoint of `videor1.model.tiny` and a real Qwen2.5-VL-7B-Instruct (or Qwen3-VL-8B / Qwen2-VL)
directory take exactly this path; the model class is the family's (`videor1.model.families.family_of`, read
from the directory's config.json `model_type`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import torch
from transformers import AutoProcessor, PreTrainedModel, ProcessorMixin

from videor1.model.families import family_of_model_type
from videor1.model.positions import install_mrope


def pick_device() -> torch.device:
    """cuda if available, else mps if available, else cpu (never hard-coded)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on a CUDA device that supports it, float32 everywhere else."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def check_model_dir(path: str | Path) -> ModuleType:
    """The model family of HF directory `path`, or one error naming the path (before transformers sees it):
    missing (FileNotFoundError), not a directory (NotADirectoryError), empty or without config.json (e.g. a
    dataset folder), a config.json that is not JSON or has no / an unsupported `model_type` (ValueError)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model directory: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"model path is not a directory: {path}")
    config = path / "config.json"
    if not config.is_file():
        what = "is empty" if not any(path.iterdir()) else "has no config.json (not an HF model directory)"
        raise ValueError(f"model directory {path} {what}")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:   # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{config}: not a valid JSON model config ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f"{config}: no model_type (not an HF model config)")
    try:
        return family_of_model_type(data["model_type"])
    except ValueError as exc:
        raise ValueError(f"{config}: {exc}") from None


def frame_factor_of(path: str | Path) -> int | None:
    """The frame factor of the model family at `path` (what a media spec's ``factor: None`` means for it);
    None when `check_model_dir` refuses the directory (loading the model then reports why)."""
    try:
        return int(check_model_dir(path).FRAME_FACTOR)
    except (OSError, ValueError):
        return None


def load_processor(path: str | Path) -> ProcessorMixin:
    """`AutoProcessor.from_pretrained(path)` with remote code off (the family's processor class); a directory
    that is not a usable model gives one error naming it (`check_model_dir`)."""
    path = Path(path)
    check_model_dir(path)
    try:
        return AutoProcessor.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:   # missing / broken tokenizer or processor files
        raise ValueError(f"model directory {path}: cannot load its processor: {exc}") from None


def resolve_attn_implementation(name: str | None) -> str | None:
    """The attention kernel to ask transformers for: `flash_attention_2` (the reference's) only when the
    flash-attn package imports and CUDA is there, else `sdpa`; None or "auto" leaves transformers' default."""
    if name in (None, "auto"):
        return None
    if name == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
            return "sdpa"
    return name


def load_model(path: str | Path, *, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None, attn_implementation: str | None = None) -> PreTrainedModel:
    """The family's model class (`family_of(path).MODEL_CLASS`, e.g. Qwen2_5_VLForConditionalGeneration)
    `.from_pretrained(path)` on `device` (default `pick_device()`) in `dtype` (default `pick_dtype(device)`),
    remote code off, with the project's M-RoPE installed (`videor1.model.positions.install_mrope`).

    Under DeepSpeed ZeRO-3 (the HF DeepSpeed config live: `accelerate launch` with a ZeRO-3 config and the
    Accelerator built first) transformers builds the model inside `deepspeed.zero.Init`: each process keeps
    only its partition of every parameter (placed by DeepSpeed on its own device), and the model is left where
    DeepSpeed put it (`zero3_partitioned`), never moved whole. Only process 0 reads the checkpoint's values
    (host memory), the others read its key names and shapes."""
    path = Path(path)
    family = check_model_dir(path)
    device = torch.device(device) if device is not None else pick_device()
    dtype = dtype if dtype is not None else pick_dtype(device)
    kwargs = {}
    attn = resolve_attn_implementation(attn_implementation)
    if attn is not None:
        kwargs["attn_implementation"] = attn
    try:
        model = family.MODEL_CLASS.from_pretrained(str(path), dtype=dtype, trust_remote_code=False, **kwargs)
    except OSError as exc:   # no / unreadable weight files
        raise ValueError(f"model directory {path}: cannot load its weights: {exc}") from None
    if zero3_partitioned(model):
        _forget_zero3_conversions(model)
        return install_mrope(model)
    return install_mrope(model.to(device))


def _forget_zero3_conversions(model: PreTrainedModel) -> None:
    """Make `save_pretrained` write the published key names for a model loaded under ZeRO-3.

    transformers (5.23, `integrations/deepspeed.py::_load_state_dict_into_zero3_model`) records the whole
    conversion mapping it was given as the model's `_weight_conversions`, the legacy renamings and a prefix
    change included; `save_pretrained` reverses every one of them, and Qwen2.5-VL's `model.language_model.x`
    is then written as `model.model.x` (from_pretrained of such a directory misses every text weight). Without
    the record, `save_pretrained` reverses the model type's own mapping, as for a model built from its config:
    the checkpoint's key names (`model.x`, `visual.x`)."""
    model.__dict__.pop("_weight_conversions", None)


def zero3_partitioned(model: torch.nn.Module) -> bool:
    """Whether `model`'s parameters are DeepSpeed ZeRO-3 partitions (built under `deepspeed.zero.Init`)."""
    return any(hasattr(p, "ds_tensor") for p in model.parameters())


def local_numel(model: torch.nn.Module) -> int:
    """Parameter elements this process holds: its ZeRO-3 partition (`ds_tensor`), its FSDP2 shard (DTensor's
    local tensor) or the whole parameter."""
    total = 0
    for p in model.parameters():
        if hasattr(p, "ds_tensor"):
            total += p.ds_tensor.numel()
        elif hasattr(p, "to_local"):
            total += p.to_local().numel()
        else:
            total += p.numel()
    return total


def count_parameters(model: torch.nn.Module) -> int:
    """Total number of parameters (the full count of ZeRO-3 partitioned ones, `ds_numel`)."""
    return sum(int(getattr(p, "ds_numel", p.numel())) for p in model.parameters())
