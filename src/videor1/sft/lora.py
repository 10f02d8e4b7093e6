"""LoRA for SFT (`peft`, imported only when LoRA is on).

LoRA adapts `lora_target_modules` of the language model, by default the family's `LORA_TARGETS` (attention and
MLP projections; for Qwen3.5 also the Gated DeltaNet projections `in_proj_qkv`, `in_proj_z`, `in_proj_a`,
`in_proj_b`, `out_proj`); the vision tower is excluded by default (its MLP also has gate/up/down_proj, and vLLM
serves no LoRA on it). A MoE family's routed experts are 3-D `nn.Parameter`s, not `nn.Linear`s: peft 0.21
adapts them as parameters (`target_parameters`, its `ParamWrapper`, which refuses LoRA dropout), so they are
adapted when `lora_dropout` is 0 and left out otherwise, with a log line either way (`lora_targets`).
With bf16 on, the frozen base is loaded in bf16 and peft keeps the adapters in float32. At the end the adapters are merged into the base weights and a
plain HF directory is written (`videor1.train.checkpoint.save_final`). The merge needs whole weights on the
main process: ZeRO-3 / FSDP with LoRA is refused up front.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import logging
from types import ModuleType

import torch
from accelerate import Accelerator

from videor1.config import ConfigError
from videor1.model.families import family_of, qwen2_5_vl, vision_exclude_regex
from videor1.train.common import params_sharded

if TYPE_CHECKING:
    from videor1.sft.config import SFTConfig

# peft `exclude_modules`: every module inside the vision tower (the model's family says which; this is
# Qwen2.5-VL's, which is also Qwen3-VL's and Qwen2-VL's: "visual").
VISION_EXCLUDE_REGEX = vision_exclude_regex(qwen2_5_vl)
LORA_DEFAULT_TARGETS = qwen2_5_vl.LORA_TARGETS   # the default family's (each family has its own LORA_TARGETS)
_log = logging.getLogger(__name__)


def lora_targets(cfg: SFTConfig, family: ModuleType) -> tuple[list[str], list[str]]:
    """(target module names, target parameter names) of a LoRA run on a model of `family`: the configured
    modules or the family's defaults, and the family's MoE expert parameters when peft can adapt them
    (lora_dropout 0); a log line says whether the experts are adapted."""
    modules = list(cfg.lora_target_modules or family.LORA_TARGETS)
    experts = list(family.LORA_EXPERT_PARAMETERS)
    if experts and cfg.lora_dropout > 0:
        _log.warning("LoRA: the MoE experts' 3-D parameters (%s) are left out: peft adapts them only with "
                     "lora_dropout 0 (got %s); the shared expert, attention and Gated DeltaNet projections are "
                     "adapted", ", ".join(experts), cfg.lora_dropout)
        experts = []
    elif experts:
        _log.warning("LoRA: the MoE experts' 3-D parameters (%s) are adapted as parameters (peft "
                     "target_parameters)", ", ".join(experts))
    return modules, experts


def check_lora_placement(cfg: SFTConfig, accelerator: Accelerator) -> None:
    """Refuse LoRA with sharded parameters (ZeRO-3 / FSDP): the merge needs whole weights."""
    if cfg.lora and params_sharded(accelerator):
        raise ConfigError("lora: true is supported with DDP or DeepSpeed ZeRO-2, not ZeRO-3 / FSDP "
                          "(the adapter merge needs whole weights); use configs/accelerate/zero2.yaml")


def wrap_lora(cfg: SFTConfig, model: torch.nn.Module, ckpt: Path | None) -> torch.nn.Module:
    """`model` with fresh LoRA adapters, or with the adapters saved in checkpoint `ckpt` (trainable)."""
    from peft import LoraConfig, PeftModel, get_peft_model  # optional at import time

    if ckpt is not None:
        return PeftModel.from_pretrained(model, str(ckpt), is_trainable=True)
    family = family_of(model.config)
    modules, experts = lora_targets(cfg, family)
    lora_cfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=modules, target_parameters=experts or None, bias="none",
                          exclude_modules=None if cfg.lora_include_vision else vision_exclude_regex(family))
    return get_peft_model(model, lora_cfg)
