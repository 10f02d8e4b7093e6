"""The published architectures our projections and GPU probes are built from (shapes only, never weights).

`QWEN25_VL_7B`: the `config.json` of Qwen/Qwen2.5-VL-7B-Instruct, text and vision parts (8.29 B parameters).
`qwen25_vl_7b_config()` turns it into a `Qwen2_5_VLConfig` for a random-init or meta-device model.
"""

from __future__ import annotations

from typing import Any

QWEN25_VL_7B: dict[str, dict[str, Any]] = {
    "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, rms_norm_eps=1e-6, rope_theta=1000000.0,
                 max_position_embeddings=128000, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                 tie_word_embeddings=False),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2, window_size=112,
                   out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu"),
    "tokens": dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                   vision_end_token_id=151653),
}


def qwen25_vl_7b_config(text: dict[str, Any] | None = None, vision: dict[str, Any] | None = None,
                        **overrides: Any) -> Any:
    """A `Qwen2_5_VLConfig` of the 7B's architecture. `text` / `vision` replace entries of its text / vision
    config (a scaled copy); `overrides` set top-level attributes (e.g. `_attn_implementation`)."""
    from transformers import Qwen2_5_VLConfig

    arch = QWEN25_VL_7B
    cfg = Qwen2_5_VLConfig(text_config={**arch["text"], **(text or {})},
                           vision_config={**arch["vision"], **(vision or {})}, **arch["tokens"],
                           tie_word_embeddings=False)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg
