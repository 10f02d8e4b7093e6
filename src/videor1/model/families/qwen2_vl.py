"""Qwen2-VL (`model_type` "qwen2_vl"): Qwen2.5-VL's predecessor, declared as Qwen2.5-VL with its own classes.

Same tokens, chat template and patching (14 x merge 2, so frames are multiples of 28 and the processor never
resizes). Its M-RoPE counts temporal positions in grid steps (no `second_per_grid_ts`): the sample fps is
passed as metadata all the same, for the record, but does not change the positions.

M-RoPE: Qwen's original rule (`videor1.model.positions`): text after a video starts after its largest
position. transformers 5.17-5.23 start it at `max(grid_h, grid_w) / merge` past the video's start, which
differs as soon as a clip has more temporal steps than merged patches along its longer side.
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from videor1.model.families.common import patch14_processor, tiny_text_config, vision_token_config
from videor1.model.families.qwen2_5_vl import (CHAT_TEMPLATE, FRAME_FACTOR, HYBRID_LINEAR_ATTENTION,  # noqa: F401
                                               LORA_EXPERT_PARAMETERS, LORA_TARGETS, ROUNDS_FRAME_SIZES,
                                               SUPPRESSED_TOKENS, TOKENIZER_REGEX, VISION_MODULE, VLLM_CPU_DTYPE,
                                               VLLM_ENGINE_KWARGS, prompt_text, video_metadata, vllm_weights)

NAME = "qwen2_vl"
MODEL_TYPES: tuple[str, ...] = ("qwen2_vl",)
MODEL_CLASS = Qwen2VLForConditionalGeneration
PROCESSOR_CLASS = Qwen2VLProcessor
DECODER_LAYER_CLASS = "Qwen2VLDecoderLayer"
VISION_BLOCK_CLASS = "Qwen2VLVisionBlock"
FSDP_WRAP_CLASSES: tuple[str, ...] = (DECODER_LAYER_CLASS, VISION_BLOCK_CLASS)
MROPE = "grid_steps"  # videor1.model.positions: temporal positions count grid steps


def tiny_config(tokenizer: Any, *, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                num_kv_heads: int = 2, vision_hidden: int = 64, vision_depth: int = 2, vision_heads: int = 4,
                initializer_range: float = 0.1) -> Qwen2VLConfig:
    """A small `Qwen2VLConfig` consistent with `tokenizer`."""
    text = tiny_text_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                            num_kv_heads=num_kv_heads, vision_hidden=vision_hidden, vision_heads=vision_heads,
                            initializer_range=initializer_range, rope_theta=1000000.0)
    vision = dict(depth=vision_depth, embed_dim=vision_hidden, hidden_size=hidden_size, mlp_ratio=2,
                  num_heads=vision_heads, in_channels=3, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, initializer_range=initializer_range)
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                         **vision_token_config(tokenizer))


def tiny_processor(tokenizer: Any) -> Qwen2VLProcessor:
    """A Qwen2VLProcessor that neither resizes our (already resized) frames nor samples frames."""
    return patch14_processor(Qwen2VLProcessor, tokenizer, CHAT_TEMPLATE)
