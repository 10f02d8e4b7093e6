"""The model side of SFT: precision, the trainable model (full or LoRA), optimizer groups, DeepSpeed
settings and the final merged save.

- Full fine-tuning keeps weights in float32 by default (`model_dtype: auto`): bf16 runs as autocast, or
  as DeepSpeed's bf16 with fp32 master weights; a 1e-6 update would vanish in bf16 weights.
- LoRA (`peft`) adapts `lora_target_modules` of the language model; the vision tower is excluded by
  default (its MLP also has gate/up/down_proj, and vLLM serves no LoRA on it). With bf16 on, the frozen
  base is loaded in bf16 and peft keeps the adapters in float32. At the end the adapters are merged into
  the base weights and a plain HF directory is written (the reference had no LoRA; full 7B SFT ran out
  of memory on 80 GB cards for some of its users).
- LoRA needs whole weights on the main process to merge: ZeRO-3 / FSDP with LoRA is refused up front.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from videor1.config import ConfigError

VISION_EXCLUDE_REGEX = r"(.*\.)?visual\..*"  # peft `exclude_modules`: every module inside the vision tower


def mixed_precision(bf16: bool | str) -> str:
    """accelerate's mixed_precision for the `bf16` key (auto: bf16 where the GPU supports it)."""
    if bf16 == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return "bf16" if bf16 else "no"


def model_dtype(cfg: Any) -> torch.dtype:
    """The dtype the weights are loaded in (see the module doc)."""
    if cfg.model_dtype != "auto":
        return getattr(torch, cfg.model_dtype)
    if cfg.lora and mixed_precision(cfg.bf16) == "bf16":
        return torch.bfloat16
    return torch.float32


def check_lora_placement(cfg: Any, accelerator: Any) -> None:
    """Refuse LoRA with sharded parameters (ZeRO-3 / FSDP): the merge needs whole weights."""
    from videor1.train.common import params_sharded

    if cfg.lora and params_sharded(accelerator):
        raise ConfigError("lora: true is supported with DDP or DeepSpeed ZeRO-2, not ZeRO-3 / FSDP "
                          "(the adapter merge needs whole weights); use configs/accelerate/zero2.yaml")


def fill_deepspeed_auto(cfg: Any, accelerator: Any) -> None:
    """Under DeepSpeed, give the "auto" batch / accumulation / clipping entries this config's values (we
    prepare no DataLoader, from which accelerate would read the batch size, and it would clip at 1.0)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    micro, accum = cfg.per_device_batch_size, cfg.gradient_accumulation_steps
    values = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accum,
              "train_batch_size": micro * accum * accelerator.num_processes,
              "gradient_clipping": cfg.max_grad_norm}  # 0: no clipping
    for key, value in values.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value


def build_model(cfg: Any, ckpt: Path | None, device: torch.device) -> Any:
    """The model to train, in train mode: full weights (from `ckpt` when resuming) or base + LoRA adapters."""
    from videor1.model.load import load_model

    source = ckpt if ckpt is not None and not cfg.lora else cfg.model
    model = load_model(source, device=device, dtype=model_dtype(cfg))
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.lora:
        model = wrap_lora(cfg, model, ckpt)
    elif cfg.freeze_vision:
        for name, p in model.named_parameters():
            if is_vision(name):
                p.requires_grad_(False)
    model.train()
    return model


def wrap_lora(cfg: Any, model: Any, ckpt: Path | None) -> Any:
    """`model` with fresh LoRA adapters, or with the adapters saved in checkpoint `ckpt` (trainable)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if ckpt is not None:
        return PeftModel.from_pretrained(model, str(ckpt), is_trainable=True)
    lora_cfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.lora_target_modules), bias="none",
                          exclude_modules=None if cfg.lora_include_vision else VISION_EXCLUDE_REGEX)
    return get_peft_model(model, lora_cfg)


def is_vision(param_name: str) -> bool:
    """Whether a parameter name belongs to the vision tower."""
    return "visual" in param_name.split(".")


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: decay on matrices, none on biases and norm weights (1-D)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def save_final(model: Any, processor: Any, accelerator: Any, final: Path, *, lora: bool) -> Path:
    """Write the trained model as a plain HF directory (LoRA merged into the base weights), atomically.

    Called on every process; the main one writes `final.tmp` and renames it to `final`.
    """
    accelerator.wait_for_everyone()
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        if lora:
            unwrapped = unwrapped.merge_and_unload()
        unwrapped.config.use_cache = True
        unwrapped.save_pretrained(str(tmp), safe_serialization=True)
        processor.save_pretrained(str(tmp))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final
