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
    MROPE: str                                       # videor1.model.positions rule: time_scaled, grid_steps, frame_runs
    HYBRID_LINEAR_ATTENTION: bool                    # decoder has linear-attention (recurrent) layers: Qwen3.5
    TOKENIZER_REGEX: str                             # pre-tokenizer split regex the tiny tokenizer is trained under
    LORA_TARGETS: tuple[str, ...]                    # default LoRA target module names (language model)
    LORA_EXPERT_PARAMETERS: tuple[str, ...]          # 3-D MoE expert weights LoRA may adapt as parameters
    VLLM_ENGINE_KWARGS: tuple[tuple[str, Any], ...]  # vllm.LLM settings the family needs (Qwen3.5: cache mode)
    VLLM_CPU_DTYPE: str | None                       # dtype vLLM must serve it in on a CPU (Qwen3.5: bfloat16)
    vllm_weights(pairs) -> pairs                     # state dict -> the checkpoint layout vLLM loads (MoE experts)
    video_metadata(clip) -> dict                     # processor video metadata of a pre-sampled Clip
    prompt_text(text) -> str                         # chat-template text -> the text the processor expands
    tiny_config(tokenizer, **sizes) -> config; tiny_processor(tokenizer) -> processor

A family module declares only what is its own and imports the rest from the family it derives from
(Qwen2-VL from Qwen2.5-VL, Qwen3.5 from Qwen3-VL, Qwen3.5 MoE from Qwen3.5).

The family of a checkpoint is read from its config's `model_type` (`family_of`), so `--model DIR` alone
picks it. A processor's family (`family_of_processor`) too: several families share a processor class
(Qwen3-VL and both Qwen3.5s use `Qwen3VLProcessor`), so the `model_type` of the directory the processor was
loaded from decides, and the class only when it is unambiguous.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from types import ModuleType
from typing import Any

from videor1.model.families import qwen2_5_vl, qwen2_vl, qwen3_5, qwen3_5_moe, qwen3_vl
from videor1.registry import Registry

FAMILIES: Registry[ModuleType] = Registry("model family")
DEFAULT_FAMILY = "qwen2_5_vl"
for _module in (qwen2_5_vl, qwen3_vl, qwen2_vl, qwen3_5, qwen3_5_moe):
    FAMILIES.register(_module.NAME)(_module)
_PROCESSOR_FAMILY: "weakref.WeakKeyDictionary[Any, ModuleType]" = weakref.WeakKeyDictionary()


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


def set_processor_family(processor: Any, family: ModuleType) -> Any:
    """Record `family` as the family of `processor` (one built in memory, not loaded from a model
    directory); returns `processor`. ValueError when the processor is not of the family's class."""
    if not isinstance(processor, family.PROCESSOR_CLASS):
        raise ValueError(f"processor {type(processor).__name__} is not the {family.NAME} family's "
                         f"{family.PROCESSOR_CLASS.__name__}")
    _PROCESSOR_FAMILY[processor] = family
    return processor


def _loaded_from(processor: Any) -> Path | None:
    """The model directory a processor was loaded from (its tokenizer's `name_or_path`), if it has a config."""
    source = getattr(getattr(processor, "tokenizer", None), "name_or_path", None)
    if not source or not (Path(str(source)) / "config.json").is_file():
        return None
    return Path(str(source))


def family_of_processor(processor: Any) -> ModuleType:
    """The family of `processor`: recorded (`set_processor_family`), else the `model_type` of the directory it
    was loaded from, else the one family whose processor class it is. ValueError when none fits or the class
    is shared by several families and no model directory tells them apart."""
    matching = [FAMILIES[n] for n in FAMILIES if isinstance(processor, FAMILIES[n].PROCESSOR_CLASS)]
    if not matching:
        raise ValueError(f"no model family for processor {type(processor).__name__}; "
                         f"known families: {', '.join(FAMILIES.names())}")
    known = _PROCESSOR_FAMILY.get(processor)
    if known is not None:
        return known
    source = _loaded_from(processor)
    family = family_of(source) if source is not None else None
    if family is None and len(matching) == 1:
        family = matching[0]
    if family is None or family not in matching:
        raise ValueError(f"processor {type(processor).__name__} serves families {[f.NAME for f in matching]}: "
                         "load it from its model directory (videor1.model.load.load_processor) or record its "
                         "family with set_processor_family")
    _PROCESSOR_FAMILY[processor] = family
    return family


# Hybrid families whose prefix sharing is exact and tested: the shared-prefix loss runs their Gated DeltaNet
# layers from the prompt's state (`videor1.rl.shared_prefix_linear`), prefill-once repeats their conv and
# recurrent states (`videor1.generation.engines.repeat_cache`); tests/test_shared_prefix_hybrid.py.
PREFIX_EXACT_HYBRIDS = frozenset({"qwen3_5", "qwen3_5_moe"})


def shares_prefix_exactly(config: Any) -> bool:
    """Whether running one prompt's prefix once for several completions is known exact for the model's family
    (see `check_prefix_sharing`)."""
    family = family_of(config)
    return not family.HYBRID_LINEAR_ATTENTION or family.NAME in PREFIX_EXACT_HYBRIDS


def check_prefix_sharing(config: Any, what: str, remedy: str) -> None:
    """ValueError when `what` (a path that runs one prompt's prefix once for several completions: the
    shared-prefix loss, the HF rollout's prefill-once) is not yet known exact for the model's family.

    The one place that decides it: families whose decoder has linear-attention layers
    (`HYBRID_LINEAR_ATTENTION`) carry a recurrent state and a causal conv through a packed row, so plain
    packing leaks one completion into the next (measured on Qwen3.5: log-probs off by up to 2.45); they
    are refused unless their exact route is tested (`PREFIX_EXACT_HYBRIDS`)."""
    if not shares_prefix_exactly(config):
        family = family_of(config)
        raise ValueError(f"{what} is not exact yet for {family.NAME} (its Gated DeltaNet layers carry state "
                         f"across packed completions): {remedy}")


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
