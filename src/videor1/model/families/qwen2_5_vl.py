"""Qwen2.5-VL (`model_type` "qwen2_5_vl"): the project's reference family (Video-R1 trains Qwen2.5-VL-7B).

Video: pre-sampled frames + metadata whose sampled fps is the clip's real sample fps, so the processor's
`second_per_grid_ts` = temporal_patch_size / sample_fps (absolute time in M-RoPE). Frames are multiples of
28 (patch 14 x merge 2), as `videor1.data.media` sizes them: the processor never resizes.

M-RoPE: positions by Qwen's original rule (`videor1.model.positions`, installed by `load_model`), which vLLM
also follows: the text after a video starts after the video's largest position. transformers 5.17-5.23
start it at `max(grid_h, grid_w) / merge` past the video's start whatever its temporal reach, so wherever
`(grid_t - 1) * second_per_grid_t * tokens_per_second` exceeds the merged spatial side (a 4:3 clip at 16
frames of 128x28x28, most clips at 32 / 64 frames) their positions are not those the model was trained with.
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from videor1.model.families.common import (DEFAULT_SYSTEM_PROMPT, VISION_SPECIAL_TOKENS, chat_template,  # noqa: F401
                                           patch14_processor, same_weights, sampled_fps_metadata, tiny_text_config,
                                           vision_token_config)

NAME = "qwen2_5_vl"
MODEL_TYPES: tuple[str, ...] = ("qwen2_5_vl",)
MODEL_CLASS = Qwen2_5_VLForConditionalGeneration
PROCESSOR_CLASS = Qwen2_5_VLProcessor
VISION_MODULE = "visual"  # the vision tower's attribute: every vision parameter name has it as a component
DECODER_LAYER_CLASS = "Qwen2_5_VLDecoderLayer"
VISION_BLOCK_CLASS = "Qwen2_5_VLVisionBlock"
FSDP_WRAP_CLASSES: tuple[str, ...] = (DECODER_LAYER_CLASS, VISION_BLOCK_CLASS)
SUPPRESSED_TOKENS = VISION_SPECIAL_TOKENS
ROUNDS_FRAME_SIZES = False  # frames must already be multiples of 28: the processor never resizes
FRAME_FACTOR = 28  # media frame / image sides are multiples of this (patch 14 x merge 2; videor1.data.media)
CHAT_TEMPLATE = chat_template(DEFAULT_SYSTEM_PROMPT)
MROPE = "time_scaled"  # videor1.model.positions: temporal positions scale with absolute time
HYBRID_LINEAR_ATTENTION = False  # every decoder layer is attention (no recurrent state)
TOKENIZER_REGEX = PRETOKENIZE_REGEX  # the tiny tokenizer's pre-tokenizer split (Qwen2's)
LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_EXPERT_PARAMETERS: tuple[str, ...] = ()  # 3-D MoE expert weights (peft target_parameters): none here
VLLM_ENGINE_KWARGS: tuple[tuple[str, object], ...] = ()  # vllm.LLM settings the family needs (user kwargs win)
VLLM_CPU_DTYPE: str | None = None  # the dtype vLLM must serve the family in on a CPU (None: the HF model's)
vllm_weights = same_weights  # policy state dict -> the checkpoint layout vLLM's loader takes (weight sync)


def video_metadata(clip: Any) -> dict[str, Any]:
    """Processor video metadata of a `Clip`: its real sample fps (see `sampled_fps_metadata`)."""
    return sampled_fps_metadata(clip.frames, clip.sample_fps)


def prompt_text(text: str) -> str:
    """The chat-template text as the processor needs it (unchanged for this family)."""
    return text


def tiny_config(tokenizer: Any, *, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                num_kv_heads: int = 2, vision_hidden: int = 64, vision_depth: int = 2, vision_heads: int = 4,
                initializer_range: float = 0.1) -> Qwen2_5_VLConfig:
    """A small `Qwen2_5_VLConfig` consistent with `tokenizer` (vocab size and special token ids)."""
    text = tiny_text_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                            num_kv_heads=num_kv_heads, vision_hidden=vision_hidden, vision_heads=vision_heads,
                            initializer_range=initializer_range, rope_theta=1000000.0)
    vision = dict(
        depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
        num_heads=vision_heads, in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        tokens_per_second=2, window_size=112, out_hidden_size=hidden_size,
        fullatt_block_indexes=[vision_depth - 1], initializer_range=initializer_range,
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                            **vision_token_config(tokenizer))


def tiny_processor(tokenizer: Any) -> Qwen2_5_VLProcessor:
    """A Qwen2_5_VLProcessor that neither resizes our (already resized) frames nor samples frames."""
    return patch14_processor(Qwen2_5_VLProcessor, tokenizer, CHAT_TEMPLATE)
