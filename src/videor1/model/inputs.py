"""Turn samples (record + decoded media + chat messages) into Qwen2.5-VL / Qwen3-VL / Qwen2-VL model tensors.

What differs between model families (video metadata, prompt text, suppressed tokens) comes from the
processor's family module (`videor1.model.families.family_of_processor`); the rest is shared.

Shared by SFT, RL, evaluation, annotation and inference, so that every path builds the prompt and the
vision tensors in exactly one way.

Notation used in the shape docs below: B rows in the batch, L padded sequence length, P_img / P_vid the
total number of vision patches over all images / videos of the batch (each patch is
3 * temporal_patch 2 * 14 * 14 = 1176 values), N_img / N_vid the number of images / videos in the batch.

Where we depart from the reference (Video-R1's training scripts):

* The real sampled fps of every clip (`Clip.sample_fps`) is passed to the processor as video metadata,
  so `second_per_grid_ts` = temporal_patch_size / sample_fps. Frames handed over as arrays without
  metadata are taken as 24 fps by transformers, which collapses the temporal position ids; the
  reference also dropped `second_per_grid_ts` before its log-prob forward. We keep it everywhere.
* With `responses`, the prompt is tokenised by the processor exactly as for generation and the
  response is tokenised alone and appended after it (then `<|im_end|>`), so the training sequence is
  token-for-token what the model would have generated after that prompt. Labels cover the response
  only (the reference's SFT also trained on the prompt).
* The processor never resizes: wide pixel limits are passed on every call (a real checkpoint's processor
  config would otherwise upscale small frames) and the resulting grids are checked against the media.
  Exception: a family whose patch x merge is not 28 (Qwen3-VL: 32) rounds each side to its multiple; the
  grid check expects exactly that rounding.
* A response containing vision special tokens is refused with an error naming the record: such text
  would make the vision placeholders disagree with the pixel inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from videor1.data.media import Clip, ImageSpec, VideoSpec, load_media
from videor1.data.prompts import build_messages
from videor1.data.records import Record
from videor1.model.families import family_of_processor
from videor1.model.families.common import VISION_SPECIAL_TOKENS

IGNORE_INDEX = -100
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Pixel limits passed on every processor call so that no checkpoint's processor config (e.g. a video
# min_pixels of 128*28*28) resizes the frames that `videor1.data.media` already sized to the budget. Qwen2/2.5-VL
# read `longest_edge` per frame, Qwen3-VL's video processor per whole video (frames x H x W): 2**34 pixels lets
# 1,024 frames of 16 Mpx through (16384*28*28 shrank Qwen3-VL videos from 128 frames at 128*32*32 px on).
KEEP_PIXELS = {"shortest_edge": 28 * 28, "longest_edge": 1 << 34}
_KEEP_SIZE = {"size": KEEP_PIXELS}


class RecordLike(Protocol):
    """What a sample needs of its record here: the id, for error messages. A :class:`Record` has it; a
    rollout server's samples carry a stand-in holding only the id."""

    @property
    def problem_id(self) -> str | int | None: ...


@dataclass
class Sample:
    """One model input: the record, its decoded media and its chat messages.

    media: a `videor1.data.media.Clip` (uint8 frames [T, H, W, 3] + sample_fps) for a video record, or a
    uint8 array [H, W, 3] for an image record. messages: chat messages with one media item.
    """

    record: Record | RecordLike | None
    media: Clip | np.ndarray
    messages: list[dict]


def make_sample(record: Record, media_root: str | Path, video: VideoSpec, image: ImageSpec, *,
                system_prompt: str | None = None) -> Sample:
    """Decode the record's media (`load_media`) and build its messages (`build_messages`).

    Raises `MediaError` / `RecordError` from those modules for a bad record (never substitutes media).
    """
    media = load_media(record, media_root, video, image)
    messages = build_messages(record, system_prompt=system_prompt)
    return Sample(record=record, media=media, messages=messages)


def _record_id(sample: Sample) -> str | int | None:
    return getattr(sample.record, "problem_id", None)


def _media_kinds(messages: list[dict]) -> list[str]:
    """The media item kinds ("image" / "video") of the messages, in order."""
    kinds = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            continue
        for item in content or []:
            kind = item.get("type")
            if kind in ("image", "video"):
                kinds.append(kind)
    return kinds


def _video_inputs(sample: Sample, family: ModuleType) -> tuple[np.ndarray, dict]:
    """Frames [T, H, W, 3] uint8 and the family's video metadata (Qwen2.5-VL: the real sample fps)."""
    clip = sample.media
    frames = getattr(clip, "frames", None)
    fps = getattr(clip, "sample_fps", None)
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"record {_record_id(sample)!r}: a video message needs a Clip with frames "
                         f"[T, H, W, 3], got {type(clip).__name__}")
    if fps is None or not float(fps) > 0:
        raise ValueError(f"record {_record_id(sample)!r}: clip sample_fps must be > 0, got {fps}")
    meta = family.video_metadata(clip)
    if not frames.flags.writeable:  # torch.from_numpy warns on read-only arrays
        frames = frames.copy()
    return frames, meta


def _image_input(sample: Sample) -> np.ndarray:
    image = sample.media
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"record {_record_id(sample)!r}: an image message needs a uint8 array [H, W, 3], "
                         f"got {type(image).__name__} {shape}")
    return image if image.flags.writeable else image.copy()


def _collect_media(samples: Sequence[Sample], family: ModuleType
                   ) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    images, videos, metadata = [], [], []
    for sample in samples:
        kinds = _media_kinds(sample.messages)
        if len(kinds) != 1:
            raise ValueError(f"record {_record_id(sample)!r}: messages must hold exactly one image or "
                             f"video item, found {len(kinds)}")
        if kinds[0] == "video":
            frames, meta = _video_inputs(sample, family)
            videos.append(frames)
            metadata.append(meta)
        else:
            images.append(_image_input(sample))
    return images, videos, metadata


def prompt_texts(processor: ProcessorMixin, samples: Sequence[Sample], *, add_generation_prompt: bool = True) -> list[str]:
    """The chat-template rendering of each sample's messages (vision placeholders not yet expanded)."""
    return [processor.apply_chat_template(s.messages, tokenize=False, add_generation_prompt=add_generation_prompt)
            for s in samples]


def think_opening(processor: ProcessorMixin) -> str:
    """What the generation prompt leaves open of a think block: its text from the last `<think>` on (e.g.
    `"<think>\\n"`) when the chat template ends the generation prompt inside `<think>` (Qwen3.5's official
    template is reported to; the tiny Qwen3.5's does), else "" (no think tag, or a closed, empty block).

    Completions generated after such a prompt lack the opening tag: the engines prefix their text with this
    opening (so rewards, answer extraction and reports see the whole `<think>...</think><answer>...`
    response), and `encode` drops the tag from SFT responses (`after_opening`), which the prompt already holds."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "?"}]}]
    bare = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    full = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = full[len(bare):] if full.startswith(bare) else full
    start = prompt.rfind(THINK_OPEN)
    if start < 0 or THINK_CLOSE in prompt[start:]:
        return ""
    return prompt[start:]


def after_opening(response: str, opening: str) -> str:
    """The part of a whole response (`<think>...</think><answer>...`) that follows a generation prompt ending
    with `opening` (`think_opening`): its leading `<think>` and the whitespace after it dropped. Unchanged
    when there is no opening or the response does not start with `<think>`."""
    text = response.lstrip()
    if not opening or not text.startswith(THINK_OPEN):
        return response
    return text[len(THINK_OPEN):].lstrip()


def encode(processor: ProcessorMixin, samples: Sequence[Sample], *, responses: Sequence[str] | None = None,
           add_generation_prompt: bool = True, padding_side: str = "left") -> BatchFeature:
    """Chat template + processor for a batch that may mix image and video samples.

    Returns a `BatchFeature` of torch tensors:

    - input_ids [B, L] long, attention_mask [B, L] long (0 on padding, on `padding_side`),
      mm_token_type_ids [B, L] int (0 text, 1 image token, 2 video token; the model needs it for M-RoPE);
    - if any image: pixel_values [P_img, 1176] float, image_grid_thw [N_img, 3] long;
    - if any video: pixel_values_videos [P_vid, 1176] float, video_grid_thw [N_vid, 3] long,
      second_per_grid_ts [N_vid] float (= 2 / Clip.sample_fps);
    - with `responses` (one per sample): each row is prompt + generation prompt + response + <|im_end|>,
      and labels [B, L] long: the token id on response tokens (incl. the closing <|im_end|>),
      -100 on every prompt, vision and padding token.

    Images and videos are passed in message order; rows of the same kind keep their order in the
    vision tensors (image i of the batch is the i-th image row).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not samples:
        raise ValueError("encode needs at least one sample")
    if responses is not None:
        if len(responses) != len(samples):
            raise ValueError(f"got {len(responses)} responses for {len(samples)} samples")
        if not add_generation_prompt:
            raise ValueError("responses are appended after the generation prompt: add_generation_prompt must be True")
    family = family_of_processor(processor)
    rendered = prompt_texts(processor, samples, add_generation_prompt=add_generation_prompt)
    texts = [family.prompt_text(t) for t in rendered]
    images, videos, metadata = _collect_media(samples, family)
    kwargs: dict[str, Any] = {"padding": True, "padding_side": padding_side, "return_tensors": "pt"}
    if videos:
        kwargs["videos_kwargs"] = {"video_metadata": metadata, "do_sample_frames": False, **_KEEP_SIZE}
    if images:
        kwargs["images_kwargs"] = dict(_KEEP_SIZE)
    batch = processor(text=texts, images=images or None, videos=videos or None, **kwargs)
    _check_grids(processor, batch, images, videos, samples)
    if responses is None:
        return batch
    opening = think_opening(processor)
    response_ids = [_response_ids(processor, after_opening(r, opening), s, family.SUPPRESSED_TOKENS)
                    for r, s in zip(responses, samples)]
    return append_tokens(batch, response_ids, pad_id=pad_token_id(processor), padding_side=padding_side)


def _grid_side(pixels: int, patch: int, merge: int, rounds: bool) -> int:
    """Patches along a side of `pixels`: as given, or (`rounds`: the family's processor rounds sizes) once
    rounded to a multiple of patch x merge, the only resize a processor does within our wide pixel limits."""
    if not rounds:
        return pixels // patch
    factor = patch * merge
    return max(factor, round(pixels / factor) * factor) // patch


def _check_grids(processor: ProcessorMixin, batch: BatchFeature, images: list[np.ndarray],
                 videos: list[np.ndarray], samples: Sequence[Sample]) -> None:
    """Refuse a batch whose vision grids do not match the media (the processor must not resize, beyond
    rounding sides to its patch x merge multiple where the family says so)."""
    rounds = bool(family_of_processor(processor).ROUNDS_FRAME_SIZES)
    if images:
        patch, merge = processor.image_processor.patch_size, processor.image_processor.merge_size
        expected = [[1, _grid_side(im.shape[0], patch, merge, rounds),
                     _grid_side(im.shape[1], patch, merge, rounds)]
                    for im in images]
        if batch["image_grid_thw"].tolist() != expected:
            raise ValueError(f"processor changed image sizes: grids {batch['image_grid_thw'].tolist()} != "
                             f"{expected}; images must be multiples of {patch * merge} within the pixel budget "
                             f"(records {[_record_id(s) for s in samples]})")
    if not videos:
        return
    vp = processor.video_processor
    patch, merge, temporal = vp.patch_size, vp.merge_size, vp.temporal_patch_size
    expected = [[-(-v.shape[0] // temporal), _grid_side(v.shape[1], patch, merge, rounds),
                 _grid_side(v.shape[2], patch, merge, rounds)] for v in videos]
    if batch["video_grid_thw"].tolist() != expected:
        raise ValueError(f"processor changed video sizes: grids {batch['video_grid_thw'].tolist()} != "
                         f"{expected}; frames must be multiples of {patch * merge} within the pixel budget "
                         f"(records {[_record_id(s) for s in samples]})")


def _response_ids(processor: ProcessorMixin, response: str, sample: Sample,
                  refused: Sequence[str] = VISION_SPECIAL_TOKENS) -> list[int]:
    for token in refused:
        if token in response:
            raise ValueError(f"record {_record_id(sample)!r}: response contains the vision token {token}")
    tokenizer = processor.tokenizer
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return list(ids) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def pad_token_id(processor: ProcessorMixin) -> int:
    """The tokenizer's pad id (Qwen: <|endoftext|>)."""
    pad = processor.tokenizer.pad_token_id
    if pad is None:
        raise ValueError("the tokenizer has no pad token")
    return int(pad)


def append_tokens(batch: BatchFeature, token_ids: Sequence[Sequence[int]], *, pad_id: int,
                  padding_side: str = "left") -> BatchFeature:
    """Append `token_ids[i]` after the real tokens of row i; re-pad; add labels and a completion mask.

    `batch` is a prompt batch from `encode` (B rows). Returns a new `BatchFeature` with the same vision
    tensors and input_ids / attention_mask / mm_token_type_ids [B, L'] (L' = longest prompt+appended),
    labels [B, L'] (-100 except on appended tokens) and completion_mask [B, L'] (1 on appended tokens).
    Used for SFT labels and for the RL loss forward over generated completions (token ids as generated,
    never re-tokenised).
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if len(token_ids) != ids.shape[0]:
        raise ValueError(f"got {len(token_ids)} token lists for {ids.shape[0]} rows")
    mm = batch.get("mm_token_type_ids")
    rows = []
    for i, extra in enumerate(token_ids):
        keep = mask[i].bool()
        prompt = ids[i][keep]
        mm_row = mm[i][keep] if mm is not None else torch.zeros_like(prompt)
        extra_t = torch.as_tensor(list(extra), dtype=ids.dtype)
        rows.append((prompt, mm_row, extra_t))
    length = max(len(p) + len(e) for p, _, e in rows)
    out_ids = torch.full((len(rows), length), pad_id, dtype=ids.dtype)
    out_mask = torch.zeros((len(rows), length), dtype=mask.dtype)
    out_mm = torch.zeros((len(rows), length), dtype=mm.dtype if mm is not None else torch.int64)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    for i, (prompt, mm_row, extra) in enumerate(rows):
        n = len(prompt) + len(extra)
        start = length - n if padding_side == "left" else 0
        out_ids[i, start:start + n] = torch.cat([prompt, extra])
        out_mask[i, start:start + n] = 1
        out_mm[i, start:start + len(prompt)] = mm_row
        labels[i, start + len(prompt):start + n] = extra
    data = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    data.update(input_ids=out_ids, attention_mask=out_mask, labels=labels,
                completion_mask=(labels != IGNORE_INDEX).long())
    if mm is not None:
        data["mm_token_type_ids"] = out_mm
    return BatchFeature(data)


def select_rows(batch: BatchFeature, rows: Sequence[int]) -> BatchFeature:
    """A new batch made of `rows` of `batch` (in that order, repeats allowed), vision tensors included.

    The patches of each row's image / video go with it (located from the grid_thw products; every row
    holds exactly one image or video, as `encode` guarantees). Columns that are padding in every
    selected row are dropped. Token keys: input_ids, attention_mask, mm_token_type_ids and, when
    present, labels and completion_mask.
    """
    rows = [int(r) for r in rows]
    n_rows = batch["input_ids"].shape[0]
    if not rows or min(rows) < 0 or max(rows) >= n_rows:
        raise ValueError(f"rows must be non-empty indices in [0, {n_rows}), got {rows}")
    index = torch.as_tensor(rows, dtype=torch.long)
    keep_cols = batch["attention_mask"][index].bool().any(dim=0)
    data: dict[str, torch.Tensor] = {}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "labels", "completion_mask"):
        if key in batch:
            data[key] = batch[key][index][:, keep_cols]
    for kind_id, pixels, grid, extra in ((1, "pixel_values", "image_grid_thw", None),
                                         (2, "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")):
        if pixels not in batch:
            continue
        owner = _media_row_order(batch, kind_id, pixels)
        sizes = batch[grid].prod(dim=-1).tolist()
        chunks = torch.split(batch[pixels], sizes, dim=0)
        picked = [owner[r] for r in rows if r in owner]
        if not picked:
            continue
        data[pixels] = torch.cat([chunks[k] for k in picked], dim=0)
        data[grid] = batch[grid][picked]
        if extra is not None and extra in batch:
            data[extra] = torch.as_tensor(batch[extra])[picked]
    return BatchFeature(data)


def _media_row_order(batch: BatchFeature, kind_id: int, pixels: str) -> dict[int, int]:
    """Map row -> index of its image (kind 1) / video (kind 2) among the batch's images / videos."""
    mm = batch.get("mm_token_type_ids")
    if mm is None:
        raise ValueError(f"batch has {pixels} but no mm_token_type_ids to locate each row's media")
    has = (mm == kind_id).any(dim=1).tolist()
    owner, k = {}, 0
    for row, flag in enumerate(has):
        if flag:
            owner[row] = k
            k += 1
    return owner


def repeat_rows(batch: BatchFeature, n: int) -> BatchFeature:
    """Repeat every row n times consecutively (row i -> rows i*n .. i*n+n-1), vision tensors included.

    Used to generate or score n completions per prompt: the result is a valid model input of B*n rows.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    b = batch["input_ids"].shape[0]
    return select_rows(batch, [i for i in range(b) for _ in range(n)])


def move_batch(batch: BatchFeature, device: torch.device | str, dtype: torch.dtype | None = None) -> BatchFeature:
    """Move every tensor to `device`; cast the pixel tensors (only) to `dtype` when given."""
    data = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if dtype is not None and key in ("pixel_values", "pixel_values_videos"):
                value = value.to(dtype)
        data[key] = value
    return BatchFeature(data)


def vision_token_ids(processor: ProcessorMixin) -> list[int]:
    """Ids of the processor's family's `SUPPRESSED_TOKENS` (all three families: <|vision_start|>,
    <|vision_end|>, <|vision_pad|>, <|image_pad|>, <|video_pad|>).

    Generation must never emit them: a sampled placeholder breaks the next forward with pixel inputs.
    """
    tokenizer = processor.tokenizer
    ids = []
    for token in family_of_processor(processor).SUPPRESSED_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token} token")
        ids.append(int(tid))
    return ids
