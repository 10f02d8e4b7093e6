"""Qwen3.5 (`model_type` "qwen3_5"): Qwen3-VL's processor, timestamps and M-RoPE rule with a hybrid decoder.

What it shares with Qwen3-VL (read from transformers 5.23's `models/qwen3_5`, `models/auto/*_auto.py`):
the processor class (`Qwen3VLProcessor`, `Qwen3VLVideoProcessor`), so prompts carry `<t seconds>`
timestamps and every frame is its own vision run; patch 16 x merge 2 (frame factor 32); the M-RoPE rule
(`get_rope_index` splits each video into one-frame grids), so `videor1.model.positions` treats it as
Qwen3-VL. A processor alone cannot tell the two families apart (same class): the family is read from the
checkpoint's config `model_type` (`videor1.model.families.family_of_processor`).

What is its own: the decoder. `layer_types` hold three Gated DeltaNet (`linear_attention`) layers for each
`full_attention` layer; full attention has a gated output and partial rotary (a quarter of head_dim,
interleaved M-RoPE sections). Its tokenizer (`Qwen3_5Tokenizer`, which transformers substitutes for any hub
tokenizer class of this model type) pre-tokenises with Qwen2's regex plus combining marks (`\\p{M}`), so the
tiny tokenizer is trained under that regex (`TOKENIZER_REGEX`). No deepstack in the vision tower.

The Gated DeltaNet layers carry a recurrent state and a causal conv over the sequence: they see padding only
through the 2D attention mask (a 4D mask reaches them as none), and packing several sequences in one row
leaks state between them. Hence `HYBRID_LINEAR_ATTENTION` (see `videor1.model.families.check_prefix_sharing`).
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration
from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX

from videor1.model.families.common import check_sizes, text_config, thirds_section, vision_token_config
from videor1.model.families.qwen3_vl import (CHAT_TEMPLATE, FRAME_FACTOR, MROPE, PROCESSOR_CLASS,  # noqa: F401
                                             ROUNDS_FRAME_SIZES, SUPPRESSED_TOKENS, VISION_MODULE, prompt_text,
                                             tiny_processor, video_metadata)

NAME = "qwen3_5"
MODEL_TYPES: tuple[str, ...] = ("qwen3_5",)
MODEL_CLASS = Qwen3_5ForConditionalGeneration
DECODER_LAYER_CLASS = "Qwen3_5DecoderLayer"
VISION_BLOCK_CLASS = "Qwen3_5VisionBlock"
FSDP_WRAP_CLASSES: tuple[str, ...] = (DECODER_LAYER_CLASS, VISION_BLOCK_CLASS)
HYBRID_LINEAR_ATTENTION = True  # Gated DeltaNet layers: recurrent state + causal conv over the sequence
TOKENIZER_REGEX = PRETOKENIZE_REGEX
PARTIAL_ROTARY = 0.25  # fraction of head_dim that rotates (Qwen3.5's published configs)
FULL_ATTENTION_INTERVAL = 4  # one full-attention layer after every three linear-attention ones


def layer_types(num_layers: int) -> list[str]:
    """Three linear-attention layers per full-attention one, the last layer of each block full; a model
    of fewer than four layers still ends in one full-attention layer (so tiny models have both kinds)."""
    interval = max(2, min(FULL_ATTENTION_INTERVAL, num_layers))
    return ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(num_layers)]


def tiny_text(tokenizer: Any, *, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int,
              vision_hidden: int, vision_heads: int, initializer_range: float) -> dict[str, Any]:
    """The text_config of a tiny Qwen3.5 (dense): hybrid layer types, partial interleaved M-RoPE, small
    Gated DeltaNet heads (2 key heads, 4 value heads of 16)."""
    head_dim = check_sizes(hidden_size, num_heads, num_kv_heads, vision_hidden, vision_heads)
    rope = {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": PARTIAL_ROTARY,
            "mrope_section": thirds_section(int(head_dim * PARTIAL_ROTARY)), "mrope_interleaved": True}
    text = text_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                       num_kv_heads=num_kv_heads, initializer_range=initializer_range, rope=rope)
    text.update(head_dim=head_dim, layer_types=layer_types(num_layers), linear_conv_kernel_dim=4,
                linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                linear_num_value_heads=4)
    return text


def tiny_vision(*, hidden_size: int, vision_hidden: int, vision_depth: int, vision_heads: int,
                initializer_range: float) -> dict[str, Any]:
    """The vision_config of a tiny Qwen3.5: Qwen3-VL's tower (patch 16, merge 2) without deepstack."""
    return dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                num_heads=vision_heads, in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                out_hidden_size=hidden_size, num_position_embeddings=256, initializer_range=initializer_range)


def tiny_config(tokenizer: Any, *, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                num_kv_heads: int = 2, vision_hidden: int = 64, vision_depth: int = 2, vision_heads: int = 4,
                initializer_range: float = 0.1) -> Qwen3_5Config:
    """A small `Qwen3_5Config` consistent with `tokenizer` (linear- and full-attention layers both present)."""
    text = tiny_text(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                     num_kv_heads=num_kv_heads, vision_hidden=vision_hidden, vision_heads=vision_heads,
                     initializer_range=initializer_range)
    vision = tiny_vision(hidden_size=hidden_size, vision_hidden=vision_hidden, vision_depth=vision_depth,
                         vision_heads=vision_heads, initializer_range=initializer_range)
    return Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=False,
                         **vision_token_config(tokenizer))
