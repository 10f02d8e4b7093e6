"""What the families share: the vision special tokens, the chat template of the tiny models, the video
metadata of a pre-sampled clip and the tiny text-config sizes. Plain data and functions, no state."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
from transformers import ProcessorMixin
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

VISION_SPECIAL_TOKENS: tuple[str, ...] = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                                          "<|video_pad|>")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def chat_template(default_system_prompt: str | None, *, opens_think: bool = False) -> str:
    """A Qwen-style chat template (`<|im_start|>role\\n ... <|im_end|>\\n`, vision placeholders, generation
    prompt) that opens with a default system message when `default_system_prompt` is given (Qwen2-VL and
    Qwen2.5-VL do; Qwen3-VL does not). Newlines are emitted explicitly.

    `opens_think`: the generation prompt ends inside an open think block (`<|im_start|>assistant\\n<think>\\n`),
    as reported for Qwen3.5's (and thinking Qwen models') templates, so completions start with the reasoning
    and lack the opening tag; with `enable_thinking=False` it ends with an empty, closed block instead."""
    system = ("{%- if loop.first and message['role'] != 'system' -%}"
              "{{- '<|im_start|>system\\n" + default_system_prompt + "<|im_end|>\\n' -}}"
              "{%- endif -%}") if default_system_prompt is not None else ""
    think = ("{%- if enable_thinking is defined and enable_thinking is false -%}"
             "{{- '<think>\\n\\n</think>\\n\\n' -}}"
             "{%- else -%}"
             "{{- '<think>\\n' -}}"
             "{%- endif -%}") if opens_think else ""
    return (
        "{%- for message in messages -%}"
        + system +
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{%- if message['content'] is string -%}"
        "{{- message['content'] -}}"
        "{%- else -%}"
        "{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
        "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
        "{%- elif item['type'] == 'video' or 'video' in item -%}"
        "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
        "{%- elif 'text' in item -%}"
        "{{- item['text'] -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{- '<|im_start|>assistant\\n' -}}"
        + think +
        "{%- endif -%}"
    )


def sampled_fps_metadata(frames: np.ndarray, sample_fps: float) -> dict[str, Any]:
    """Metadata that makes transformers see the clip's real sample fps: the frames are taken as the whole
    video, so sampled_fps = len(frames_indices) / total_num_frames * fps = `sample_fps` (Qwen2/2.5-VL)."""
    n = int(frames.shape[0])
    return {"fps": float(sample_fps), "total_num_frames": n, "frames_indices": list(range(n))}


def check_sizes(hidden_size: int, num_heads: int, num_kv_heads: int, vision_hidden: int, vision_heads: int) -> int:
    """The text head_dim, after checking that heads divide the hidden sizes and head_dim suits M-RoPE."""
    if hidden_size % num_heads or num_heads % num_kv_heads or vision_hidden % vision_heads:
        raise ValueError(f"heads must divide hidden sizes: hidden {hidden_size}/{num_heads} heads "
                         f"({num_kv_heads} kv), vision {vision_hidden}/{vision_heads} heads")
    head_dim = hidden_size // num_heads
    if head_dim % 8:
        raise ValueError(f"head_dim {head_dim} must be a multiple of 8 for the M-RoPE sections")
    return head_dim


def mrope_section(head_dim: int) -> list[int]:
    """Temporal / height / width sections of the rotary half (Qwen2.5-VL's proportions for a tiny head)."""
    half = head_dim // 2
    return [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]


def thirds_section(rotary_dim: int) -> list[int]:
    """Temporal / height / width sections of the rotary half in near-equal thirds, the remainder going to
    time then height (Qwen3.5's [11, 11, 10] for its 64 rotary dims)."""
    half = rotary_dim // 2
    base, extra = divmod(half, 3)
    return [base + (extra > 0), base + (extra > 1), base]


def tiny_text_config(tokenizer: Any, *, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int,
                     vision_hidden: int, vision_heads: int, initializer_range: float, rope_theta: float,
                     interleaved: bool = False) -> dict[str, Any]:
    """The text_config of a tiny Qwen2-VL / Qwen2.5-VL / Qwen3-VL model: sizes checked (`check_sizes`),
    default M-RoPE sections (`mrope_section`), interleaved for Qwen3-VL."""
    head_dim = check_sizes(hidden_size, num_heads, num_kv_heads, vision_hidden, vision_heads)
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": rope_theta, "mrope_section": mrope_section(head_dim)}
    if interleaved:
        rope["mrope_interleaved"] = True
    return text_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                       num_kv_heads=num_kv_heads, initializer_range=initializer_range, rope=rope)


def token_ids(tokenizer: Any, tokens: tuple[str, ...]) -> dict[str, int]:
    """Id of each token; ValueError naming a token the tokenizer lacks."""
    ids = {}
    for token in tokens:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token} token")
        ids[token] = int(tid)
    return ids


def text_config(tokenizer: Any, *, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int,
                initializer_range: float, rope: dict[str, Any]) -> dict[str, Any]:
    """The text_config dict of a tiny model consistent with `tokenizer` (vocab size, eos / pad ids)."""
    ids = token_ids(tokenizer, ("<|endoftext|>", "<|im_end|>"))
    return dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096, initializer_range=initializer_range, rms_norm_eps=1e-6,
        rope_parameters=rope, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


def vision_token_config(tokenizer: Any) -> dict[str, int]:
    """The top-level config's image / video / vision start / end token ids."""
    ids = token_ids(tokenizer, VISION_SPECIAL_TOKENS)
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


WIDE_PIXELS = {"min_pixels": 28 * 28, "max_pixels": 16384 * 28 * 28}  # tiny processors never shrink our frames


def patch14_processor(processor_class: type[ProcessorMixin], tokenizer: Any, template: str) -> ProcessorMixin:
    """A Qwen2-VL-style processor (patch 14, merge 2) with wide-open pixel limits that neither resizes our
    (already resized) frames nor samples frames: Qwen2-VL's and Qwen2.5-VL's tiny processors."""
    image_processor = Qwen2VLImageProcessor(**WIDE_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(**WIDE_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2,
                                            do_sample_frames=False, cap_pixels_per_frame=False,
                                            min_frames=2, max_frames=4096)
    return processor_class(image_processor=image_processor, tokenizer=tokenizer,
                           video_processor=video_processor, chat_template=template)


def same_weights(pairs: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs as they are: a family whose in-memory state dict is its checkpoint layout."""
    yield from pairs
