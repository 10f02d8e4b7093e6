"""Load a policy / reference model and its processor from an HF directory (`from_pretrained`, remote code off).

The tiny checkpoint of `videor1.model.tiny` and a real Qwen2.5-VL-7B-Instruct directory take exactly this path.
"""

from __future__ import annotations

from pathlib import Path
import torch
from transformers import AutoProcessor, ProcessorMixin, Qwen2_5_VLForConditionalGeneration


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


def load_processor(path: str | Path) -> ProcessorMixin:
    """`AutoProcessor.from_pretrained(path)` with remote code off (a Qwen2_5_VLProcessor)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no such model directory: {path}")
    return AutoProcessor.from_pretrained(str(path), trust_remote_code=False)


def load_model(path: str | Path, *, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> Qwen2_5_VLForConditionalGeneration:
    """`Qwen2_5_VLForConditionalGeneration.from_pretrained(path)` on `device` (default `pick_device()`)
    in `dtype` (default `pick_dtype(device)`), remote code off."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no such model directory: {path}")
    device = torch.device(device) if device is not None else pick_device()
    dtype = dtype if dtype is not None else pick_dtype(device)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(path), dtype=dtype, trust_remote_code=False)
    return model.to(device)


def count_parameters(model: torch.nn.Module) -> int:
    """Total number of parameters."""
    return sum(p.numel() for p in model.parameters())
