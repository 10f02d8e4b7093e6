"""Qwen3-VL (`model_type` "qwen3_vl"): timestamps in the prompt, patch 16, its own video processor.

What differs from Qwen2.5-VL (read from transformers 5.23's `processing_qwen3_vl.py`,
`video_processing_qwen3_vl.py` and `modeling_qwen3_vl.py`):

* Time is text, not a position scale: the processor writes `<t seconds>` before every temporal patch of
  frames, t computed from the video metadata (`frames_indices / fps`, averaged over each pair of frames).
  Without metadata it falls back to 24 fps (wrong timestamps, and older processors dropped the video).
  We pass the clip's real source metadata (native fps, source frame indices, source frame count), so the
  timestamps are the frames' real times in the video. A shuffled clip (T-GRPO) keeps its metadata: the
  same timestamps label the permuted frames.
* Each temporal patch is wrapped in its own `<|vision_start|> ... <|vision_end|>` by the processor, which
  replaces only `<|video_pad|>`: `prompt_text` therefore reduces the template's
  `<|vision_start|><|video_pad|><|vision_end|>` to `<|video_pad|>` so that no frame block is nested in a
  second pair of vision markers.
* Patch 16 x merge 2: the processor rounds frame sides to multiples of 32, so our media are resized to
  multiples of 32 (`FRAME_FACTOR`, applied by `fit_media_specs`): the processor (HF's and vLLM's) then keeps
  the frames as they are and both engines see the same pixels. `videor1.model.inputs` still checks the
  grids against the processor's rounding (for media made without the family's factor).
* No default system prompt in the chat template.
* M-RoPE: every temporal patch is its own vision run of one step, so transformers 5.x's rule (text after a
  run at `max(h, w) / merge` past its start) and Qwen's original one (after the largest position) coincide;
  `videor1.model.positions` computes them all the same and the tests check the equality.
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from videor1.model.families.common import (WIDE_PIXELS, chat_template, sampled_fps_metadata, tiny_text_config,
                                           vision_token_config)
from videor1.model.families.qwen2_5_vl import (HYBRID_LINEAR_ATTENTION, LORA_EXPERT_PARAMETERS,  # noqa: F401
                                               LORA_TARGETS, SUPPRESSED_TOKENS, TOKENIZER_REGEX, VISION_MODULE,
                                               VLLM_CPU_DTYPE, VLLM_ENGINE_KWARGS, vllm_weights)

NAME = "qwen3_vl"
MODEL_TYPES: tuple[str, ...] = ("qwen3_vl",)
MODEL_CLASS = Qwen3VLForConditionalGeneration
PROCESSOR_CLASS = Qwen3VLProcessor
DECODER_LAYER_CLASS = "Qwen3VLTextDecoderLayer"
VISION_BLOCK_CLASS = "Qwen3VLVisionBlock"
FSDP_WRAP_CLASSES: tuple[str, ...] = (DECODER_LAYER_CLASS, VISION_BLOCK_CLASS)
ROUNDS_FRAME_SIZES = True  # the processor rounds frame sides to multiples of 32 (FRAME_FACTOR: media give 32s)
FRAME_FACTOR = 32  # media frame / image sides are multiples of this (patch 16 x merge 2; videor1.data.media)
CHAT_TEMPLATE = chat_template(None)
MROPE = "frame_runs"  # videor1.model.positions: each temporal patch of a video is its own vision run
_VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
_MEAN_STD = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def video_metadata(clip: Any) -> dict[str, Any]:
    """The clip's source metadata (native fps, source frame indices and count) so that the prompt's
    timestamps are the frames' real times; the sample fps (frames from 0 s) when the clip lacks them."""
    n = int(clip.frames.shape[0])
    indices = [int(i) for i in getattr(clip, "indices", None) or []]
    native_fps = float(getattr(clip, "native_fps", 0) or 0)
    total = int(getattr(clip, "total_frames", 0) or 0)
    if len(indices) != n or not native_fps > 0 or total < 1:
        return sampled_fps_metadata(clip.frames, clip.sample_fps)
    return {"fps": native_fps, "total_num_frames": max(total, max(indices) + 1), "frames_indices": indices}


def prompt_text(text: str) -> str:
    """The template text with each video placeholder reduced to `<|video_pad|>` (see the module doc)."""
    return text.replace(_VIDEO_PLACEHOLDER, "<|video_pad|>")


def tiny_config(tokenizer: Any, *, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                num_kv_heads: int = 2, vision_hidden: int = 64, vision_depth: int = 2, vision_heads: int = 4,
                initializer_range: float = 0.1) -> Qwen3VLConfig:
    """A small `Qwen3VLConfig` consistent with `tokenizer`: interleaved M-RoPE, patch 16, one deepstack layer."""
    text = tiny_text_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                            num_kv_heads=num_kv_heads, vision_hidden=vision_hidden, vision_heads=vision_heads,
                            initializer_range=initializer_range, rope_theta=5000000.0, interleaved=True)
    text["head_dim"] = hidden_size // num_heads
    vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                  num_heads=vision_heads, in_channels=3, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=hidden_size, num_position_embeddings=256,
                  deepstack_visual_indexes=[0], initializer_range=initializer_range)
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                         **vision_token_config(tokenizer))


def tiny_processor(tokenizer: Any) -> Qwen3VLProcessor:
    """A Qwen3VLProcessor that never samples frames and only rounds frame sizes to multiples of 32."""
    return tiny_processor_with(tokenizer, CHAT_TEMPLATE)


def tiny_processor_with(tokenizer: Any, template: str) -> Qwen3VLProcessor:
    """`tiny_processor` with another chat template (Qwen3.5's)."""
    image_processor = Qwen2VLImageProcessor(**WIDE_PIXELS, patch_size=16, temporal_patch_size=2, merge_size=2,
                                            **_MEAN_STD)
    size = {"shortest_edge": WIDE_PIXELS["min_pixels"], "longest_edge": WIDE_PIXELS["max_pixels"]}
    video_processor = Qwen3VLVideoProcessor(size=size, patch_size=16, temporal_patch_size=2, merge_size=2,
                                            do_sample_frames=False, cap_pixels_per_frame=False,
                                            min_frames=2, max_frames=4096, **_MEAN_STD)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            video_processor=video_processor, chat_template=template)
