"""Qwen3.5 MoE (`model_type` "qwen3_5_moe"): Qwen3.5 (`videor1.model.families.qwen3_5`) whose MLPs are
sparse mixtures of experts with a shared expert. The experts' weights are 3-D `nn.Parameter`s
(`gate_up_proj`, `down_proj` of `Qwen3_5MoeExperts`), not `nn.Linear` modules."""

from __future__ import annotations

from typing import Any

from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

from videor1.model.families.common import vision_token_config
from videor1.model.families.qwen3_5 import (CHAT_TEMPLATE, FRAME_FACTOR, HYBRID_LINEAR_ATTENTION,  # noqa: F401
                                            MROPE, PROCESSOR_CLASS, ROUNDS_FRAME_SIZES, SUPPRESSED_TOKENS,
                                            TOKENIZER_REGEX, VISION_MODULE, prompt_text, tiny_processor, tiny_text,
                                            tiny_vision, video_metadata)

NAME = "qwen3_5_moe"
MODEL_TYPES: tuple[str, ...] = ("qwen3_5_moe",)
MODEL_CLASS = Qwen3_5MoeForConditionalGeneration
DECODER_LAYER_CLASS = "Qwen3_5MoeDecoderLayer"
VISION_BLOCK_CLASS = "Qwen3_5MoeVisionBlock"
FSDP_WRAP_CLASSES: tuple[str, ...] = (DECODER_LAYER_CLASS, VISION_BLOCK_CLASS)


def tiny_config(tokenizer: Any, *, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                num_kv_heads: int = 2, vision_hidden: int = 64, vision_depth: int = 2, vision_heads: int = 4,
                initializer_range: float = 0.1) -> Qwen3_5MoeConfig:
    """A small `Qwen3_5MoeConfig`: the tiny Qwen3.5 decoder with 4 experts (2 per token) and a shared expert."""
    text = tiny_text(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                     num_kv_heads=num_kv_heads, vision_hidden=vision_hidden, vision_heads=vision_heads,
                     initializer_range=initializer_range)
    text.pop("intermediate_size")   # the MoE config sizes its experts instead
    text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden_size,
                shared_expert_intermediate_size=hidden_size)
    vision = tiny_vision(hidden_size=hidden_size, vision_hidden=vision_hidden, vision_depth=vision_depth,
                         vision_heads=vision_heads, initializer_range=initializer_range)
    return Qwen3_5MoeConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                            **vision_token_config(tokenizer))
