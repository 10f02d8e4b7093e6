"""Model families: one module of plain constants and functions per family, registered by name in `FAMILIES`.

A family module provides:

    NAME: str; MODEL_TYPES: tuple[str, ...]          # the config `model_type` values it serves
    MODEL_CLASS; PROCESSOR_CLASS                     # transformers classes (from_pretrained, tiny builds)
    VISION_MODULE: str                               # the vision tower's attribute name ("visual")
    DECODER_LAYER_CLASS, VISION_BLOCK_CLASS: str     # gradient-checkpointing layers; FSDP_WRAP_CLASSES: both
    SUPPRESSED_TOKENS: tuple[str, ...]               # never generated (vision placeholders)
    ROUNDS_FRAME_SIZES: bool                         # the processor rounds frame sides to patch x merge
    FRAME_FACTOR: int                                # patch x merge: the multiple media sides are resized to
    CHAT_TEMPLATE: str                               # the tiny model's template
    video_metadata(clip) -> dict                     # processor video metadata of a pre-sampled Clip
    prompt_text(text) -> str                         # chat-template text -> the text the processor expands
    tiny_config(tokenizer, **sizes) -> config; tiny_processor(tokenizer) -> processor

The family of a checkpoint is read from its config's `model_type` (`family_of`), so `--model DIR` alone
picks it; a processor's family from its class (`family_of_processor`).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from videor1.model.families import qwen2_5_vl, qwen2_vl, qwen3_vl
from videor1.registry import Registry

FAMILIES: Registry[ModuleType] = Registry("model family")
DEFAULT_FAMILY = "qwen2_5_vl"
for _module in (qwen2_5_vl, qwen3_vl, qwen2_vl):
    FAMILIES.register(_module.NAME)(_module)


def get_family(name: str) -> ModuleType:
    """The family registered as `name`; KeyError listing the known families otherwise."""
    return FAMILIES.get(name)


def family_of_model_type(model_type: str) -> ModuleType:
    """The family serving a config `model_type`; ValueError naming the supported types otherwise."""
    for name in FAMILIES:
        if model_type in FAMILIES[name].MODEL_TYPES:
            return FAMILIES[name]
    known = ", ".join(t for n in FAMILIES for t in FAMILIES[n].MODEL_TYPES)
    raise ValueError(f"unsupported model_type {model_type!r}; supported: {known}")


def family_of(config: Any) -> ModuleType:
    """The family of a model config (or of an HF model directory, read from its config.json)."""
    if isinstance(config, (str, Path)):
        path = Path(config) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config.json in model directory {config}")
        model_type = json.loads(path.read_text()).get("model_type")
    else:
        model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str):
        raise ValueError(f"model config has no model_type: {config}")
    return family_of_model_type(model_type)


def family_of_processor(processor: Any) -> ModuleType:
    """The family whose processor class `processor` is an instance of; ValueError otherwise."""
    for name in FAMILIES:
        if isinstance(processor, FAMILIES[name].PROCESSOR_CLASS):
            return FAMILIES[name]
    raise ValueError(f"no model family for processor {type(processor).__name__}; "
                     f"known families: {', '.join(FAMILIES.names())}")


def vision_exclude_regex(family: ModuleType) -> str:
    """peft `exclude_modules` regex matching every module inside the family's vision tower."""
    return rf"(.*\.)?{family.VISION_MODULE}\..*"


def is_vision_param(param_name: str, family: ModuleType) -> bool:
    """Whether a parameter name belongs to the family's vision tower."""
    return family.VISION_MODULE in param_name.split(".")


def fit_media_specs(processor: Any, video: Any, image: Any) -> tuple[Any, Any]:
    """The video / image specs (`videor1.data.media`) with the processor's family's frame factor, so that the
    media come out at sizes the family's processor (HF's and vLLM's) keeps as they are."""
    from videor1.data.media import fit_to_family

    factor = family_of_processor(processor).FRAME_FACTOR
    return fit_to_family(video, factor), fit_to_family(image, factor)
