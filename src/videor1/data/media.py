"""Decode videos and images, sample frames by the reference rule, resize to a pixel budget (the PyAV
engine, seeking and the packet index, is `videor1.data.decode`).

Frame sampling follows Video-R1 / ``qwen_vl_utils``: ``n = duration * fps`` clamped to
``[min_frames, max_frames]`` (and to the number of frames available), rounded *down* to an even count
(at least 2); the sampled indices are ``linspace(0, total - 1, n)`` rounded with numpy's ``round``
(half to even, the same rule as the reference's ``torch.round``). Every frame is resized with PIL's
antialiased BICUBIC filter to ``smart_resize`` of its size (multiples of the spec's ``factor`` within a
pixel budget: the model family's patch x merge, 28 for Qwen2/2.5-VL, 32 for Qwen3-VL, so the processor of
every family, HF's and vLLM's alike, takes the frames as they are; ``fit_to_family`` sets it).

Where we depart from the reference:

* Decoding seeks. A packet index (demuxed, not decoded) gives every frame's pts and the keyframes; for
  each wanted frame we seek to the keyframe at or before it unless we are already decoding inside that
  GOP, then decode forward. Packets of frames we do not want that no other frame references are not
  decoded at all (``skip_frame = NONREF``). The reference decodes every frame of the file.
* Frame identity is by timestamp: a frame's index is the rank of its pts among all packet pts of the
  stream. For constant-frame-rate files this equals ``round((pts - start) * time_base * fps)``; for
  variable-frame-rate files it is still the true frame number. We never count frames after a seek.
* ``total_frames`` is the header's frame count when it is positive, else the number of packets in the
  stream (exact, found by demuxing without decoding). If the file holds fewer packets than the header
  declares and a wanted frame lies beyond them, that is a truncated file and we raise. Streams whose
  packets carry no timestamps (raw H.264 ...) are decoded in order from the first frame instead.
* No silent fallback: a missing, truncated, frameless or undecodable file raises :class:`MediaError`
  naming the file; fewer frames than planned are never returned.
* ``start`` / ``end`` (seconds) restrict sampling to the frames whose time ``index / fps`` lies in
  ``[start, end]``; ``sample_fps`` is then computed over the window's frame count (the reference reads
  the window as a video of its own). ``Clip.total_frames`` stays the count of the whole file.
* Images with transparency are composited onto white (as ``qwen_vl_utils.to_rgb`` does); EXIF
  orientation and video rotation metadata are ignored, as in the reference.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from videor1.config import ConfigError
from videor1.data.decode import (DECODE_THREADS_ENV, MediaError, check_file, decode_frames,  # noqa: F401
                                  decode_threads, frame_timestamps, nearest_keyframes, open_video, packet_index,
                                  probe_video, resize_frame, stream_fps, use_threads)
# (MediaError, probe_video and DECODE_THREADS_ENV are part of this module's public interface too.)
from videor1.data.records import Record, resolve_media_path
from videor1.limits import InputLimits, current_limits

FACTOR = 28  # Qwen2/2.5-VL: patch 14 x spatial merge 2 (a spec's factor when it names none)
_EPS = 1e-6  # tolerance when turning seconds into frame indices
SEEK_MODES = ("exact", "keyframe")


@dataclass(frozen=True)
class VideoSpec:
    """How a video becomes frames. Every field is configuration and is recorded in outputs.

    The one video section of every config (SFT, RL, eval, annotate, infer): YAML ``video: {max_frames: 8}``
    becomes this class. It validates itself on construction (``validate``), so an invalid spec never exists;
    errors are :class:`~videor1.config.ConfigError` (a ``ValueError``) naming the field.
    """

    fps: float = 2.0  # sampling rate (frames per second of video) before clamping to [min_frames, max_frames]
    min_frames: int = 4  # fewest frames sampled from a video (even, >= 2: Qwen2.5-VL merges frame pairs)
    max_frames: int = 16  # most frames sampled from a video (even, >= min_frames)
    min_pixels: int = 4 * 28 * 28  # smallest H*W per frame after resizing (>= 1)
    max_pixels: int = 128 * 28 * 28  # largest H*W per frame after resizing (>= 28*28; the reference's training budget)
    # "exact": the sampled frames themselves (the reference's frames). "keyframe": for each sampled frame, the
    # keyframe nearest to it in time, decoding keyframes only (opt-in, for very long videos): each frame's
    # time is off by at most half the longest keyframe interval of the file (x264's default keyint 250 at
    # 25 fps: <= 5 s; a 2 s GOP: <= 1 s), or by the span after the last keyframe for samples past it; two
    # samples may map to the same keyframe (the frame repeats).
    seek: str = "exact"
    # Frame sides are multiples of this: the model family's patch x merge (28 Qwen2/2.5-VL, 32 Qwen3-VL). None:
    # the family's, set by the program from the model (`fit_to_family`); 28 where no model is involved.
    factor: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def side_factor(self) -> int:
        """The factor in effect (`factor`, or 28 when none is set)."""
        return self.factor or FACTOR

    def validate(self) -> None:
        """ConfigError naming the first bad field: fps > 0; 2 <= min_frames <= max_frames, both even; pixels;
        seek in SEEK_MODES."""
        if self.seek not in SEEK_MODES:
            raise ConfigError(f"must be one of {', '.join(SEEK_MODES)}, got {self.seek!r}", key="seek")
        if not self.fps > 0:
            raise ConfigError(f"must be > 0, got {self.fps}", key="fps")
        if self.min_frames < 2:
            raise ConfigError(f"must be >= 2, got {self.min_frames}", key="min_frames")
        if self.max_frames < self.min_frames:
            raise ConfigError(f"must be >= min_frames ({self.min_frames}), got {self.max_frames}", key="max_frames")
        for key in ("min_frames", "max_frames"):
            if getattr(self, key) % 2:
                raise ConfigError(f"must be even (Qwen2.5-VL merges frame pairs), got {getattr(self, key)}",
                                  key=key)
        _check_pixels(self.min_pixels, self.max_pixels, self.factor)


@dataclass(frozen=True)
class ImageSpec:
    """How an image is resized (the ``image`` section of every config); validates itself like VideoSpec."""

    min_pixels: int = 4 * 28 * 28  # smallest H*W after resizing (>= 1)
    max_pixels: int = 256 * 28 * 28  # largest H*W after resizing (>= factor^2)
    factor: int | None = None  # sides are multiples of this (None: the model family's; see VideoSpec.factor)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def side_factor(self) -> int:
        """The factor in effect (`factor`, or 28 when none is set)."""
        return self.factor or FACTOR

    def validate(self) -> None:
        """ConfigError naming the bad field: 1 <= min_pixels <= max_pixels, factor >= 1 and max_pixels >=
        factor^2."""
        _check_pixels(self.min_pixels, self.max_pixels, self.factor)


def fit_to_family(spec: VideoSpec | ImageSpec, factor: int) -> VideoSpec | ImageSpec:
    """`spec` with the model family's frame factor (`FRAME_FACTOR` of `videor1.model.families`); a spec
    that names another factor is refused (ConfigError), since the processor would resize its frames."""
    if spec.factor not in (None, factor):
        raise ConfigError(f"is {spec.factor}, but the model's processor needs multiples of {factor} "
                          "(leave it unset: it follows the model)", key="factor")
    return replace(spec, factor=factor)


def _check_pixels(min_pixels: int, max_pixels: int, factor: int | None = None) -> None:
    side = factor or FACTOR
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, int) or factor < 1):
        raise ConfigError(f"must be an integer >= 1 or unset, got {factor!r}", key="factor")
    if min_pixels < 1:
        raise ConfigError(f"must be >= 1, got {min_pixels}", key="min_pixels")
    if max_pixels < side * side:
        raise ConfigError(f"must be >= {side * side} (one {side}x{side} patch), got {max_pixels}", key="max_pixels")
    if max_pixels < min_pixels:
        raise ConfigError(f"must be >= min_pixels ({min_pixels}), got {max_pixels}", key="max_pixels")


@dataclass
class Clip:
    """Sampled, resized frames of one video plus the timing Qwen2.5-VL needs."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    sample_fps: float  # T / total_frames * native_fps
    timestamps: list[float]
    indices: list[int]
    total_frames: int
    native_fps: float
    path: str

    def permuted(self, perm: Sequence[int]) -> "Clip":
        """The same clip with its frames in the order `perm` (timing metadata unchanged)."""
        perm = list(perm)
        if sorted(perm) != list(range(len(self.frames))):
            raise ValueError(f"not a permutation of {len(self.frames)} frames: {perm}")
        return replace(self, frames=self.frames[perm])


# --------------------------------------------------------------------------------------- pure rules
def num_samples(total_frames: int, native_fps: float, *, fps: float, min_frames: int, max_frames: int) -> int:
    """How many frames to sample: duration x fps, clamped, rounded down to even, at least 2."""
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if not native_fps > 0 or not fps > 0:
        raise ValueError(f"native_fps and fps must be > 0, got {native_fps} and {fps}")
    n = total_frames / native_fps * fps
    n = min(max(n, min_frames), max_frames, total_frames)
    return max(2, int(math.floor(n / 2)) * 2)


def sample_indices(total_frames: int, native_fps: float, *, fps: float, min_frames: int,
                   max_frames: int) -> list[int]:
    """Frame indices to sample: ``linspace(0, total - 1, n)`` rounded half-to-even (numpy ``round``).

    Indices are non-decreasing; they repeat only when the video has a single frame (n is at least 2).
    """
    n = num_samples(total_frames, native_fps, fps=fps, min_frames=min_frames, max_frames=max_frames)
    return [int(i) for i in np.round(np.linspace(0, total_frames - 1, n))]


def smart_resize(height: int, width: int, *, factor: int = FACTOR, min_pixels: int,
                 max_pixels: int) -> tuple[int, int]:
    """(h, w): each side rounded to a multiple of `factor`, then scaled (keeping aspect) into the budget.

    Over ``max_pixels`` the sides are scaled down and floored to multiples; under ``min_pixels`` scaled
    up and ceiled. No side is ever below `factor`. Python's ``round`` (half to even) does the first
    rounding, as in ``qwen_vl_utils``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be at most 200, got {height}x{width}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def window_range(total_frames: int, native_fps: float, start: float | None, end: float | None,
                 path: str | os.PathLike = "<video>") -> tuple[int, int]:
    """First and last frame index whose time ``index / native_fps`` lies in ``[start, end]``."""
    if start is not None and start < 0:
        raise MediaError(path, f"start={start} s is negative")
    if start is not None and end is not None and start >= end:
        raise MediaError(path, f"start={start} s must be before end={end} s")
    first = 0 if start is None else math.ceil(start * native_fps - _EPS)
    last = total_frames - 1 if end is None else min(total_frames - 1, math.floor(end * native_fps + _EPS))
    if first > last:
        raise MediaError(path, f"the window [{start}, {end}] s holds no frame of the "
                               f"{total_frames / native_fps:.3f} s video")
    return first, last


class _FrameSink:
    """Decoded frame -> its rows of the clip's uint8 [T, H, W, 3] array (allocated at the first frame), at
    `smart_resize` of the first frame it is given (the first sampled frame: the decoders convert in increasing
    index order), whose geometry it checks. Frames are resized as they are decoded and written in place: at
    256 frames only the clip itself is held, not the decoded frames nor a second copy."""

    def __init__(self, path: Path, spec: VideoSpec, wanted: list[int]):
        self.path, self.spec, self.out = path, spec, None
        self.rows: dict[int, list[int]] = {}
        for row, index in enumerate(wanted):
            self.rows.setdefault(index, []).append(row)

    def __call__(self, index: int, frame: av.VideoFrame) -> None:
        if self.out is None:
            check_geometry(self.path, frame.height, frame.width)
            size = smart_resize(frame.height, frame.width, factor=self.spec.side_factor,
                                min_pixels=self.spec.min_pixels, max_pixels=self.spec.max_pixels)
            self.out = np.empty((sum(map(len, self.rows.values())), *size, 3), dtype=np.uint8)
        self.out[self.rows[index]] = resize_frame(frame, self.out.shape[1:3])


def load_video(path: str | os.PathLike, spec: VideoSpec = VideoSpec(), *, start: float | None = None,
               end: float | None = None, threads: int | None = None) -> Clip:
    """Sample and resize frames of `path` per `spec`, optionally within ``[start, end]`` seconds.

    ``threads``: codec threads (default :func:`decode_threads`); they change the speed only. With
    ``spec.seek == "keyframe"`` each sampled frame is replaced by its nearest keyframe (``indices`` and
    ``timestamps`` are the keyframes'; ``sample_fps`` stays the nominal rate of the sampled positions).

    Raises :class:`MediaError` (naming the file) for a missing file, a file without a video stream or
    without frames, an empty window, and a truncated or undecodable file.
    """
    path = Path(path)
    container, stream = open_video(path)
    use_threads(stream, decode_threads() if threads is None else threads)
    with container:
        native_fps = stream_fps(stream, path)
        index = packet_index(container, stream, path)
        if index.count == 0:
            raise MediaError(path, "the video stream has no frames")
        total = stream.frames if stream.frames and stream.frames > 0 else index.count
        first, last = window_range(total, native_fps, start, end, path)
        count = last - first + 1
        rel = sample_indices(count, native_fps, fps=spec.fps, min_frames=spec.min_frames,
                             max_frames=spec.max_frames)
        wanted = [first + i for i in rel]
        keyframes_only = spec.seek == "keyframe" and index.pts is not None
        if keyframes_only:
            wanted = nearest_keyframes(index, wanted)
        check_geometry(path, stream.codec_context.height or 1, stream.codec_context.width or 1)
        sink = _FrameSink(path, spec, wanted)
        decode_frames(container, stream, index, wanted, path, keyframes_only=keyframes_only, convert=sink)
        stamps = frame_timestamps(index, stream, native_fps, wanted)
    return Clip(frames=sink.out, sample_fps=len(wanted) / count * native_fps,
                timestamps=stamps, indices=wanted, total_frames=int(total), native_fps=native_fps,
                path=str(path))


# -------------------------------------------------------------------------------------------- images
def check_geometry(path: str | os.PathLike, height: int, width: int, limits: InputLimits | None = None) -> None:
    """MediaError naming the file when an image / frame of `height` x `width` passes `max_aspect_ratio` or
    `max_decoded_pixels` (`videor1.limits`; the limits in force by default)."""
    limits = limits or current_limits()
    if height < 1 or width < 1:
        raise MediaError(path, f"image size must be positive, got {height}x{width}")
    ratio = max(height, width) / min(height, width)
    if ratio > limits.max_aspect_ratio:
        raise MediaError(path, f"aspect ratio {ratio:.0f} ({width}x{height}) is more than "
                               f"max_aspect_ratio={limits.max_aspect_ratio:g}")
    if height * width > limits.max_decoded_pixels:
        raise MediaError(path, f"{width}x{height} = {height * width} pixels is more than "
                               f"max_decoded_pixels={limits.max_decoded_pixels}")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[3])
        return background
    return image.convert("RGB")


def load_image(path: str | os.PathLike, spec: ImageSpec = ImageSpec()) -> np.ndarray:
    """uint8 [H, W, 3] RGB, resized (BICUBIC) to ``smart_resize`` of its size within the budget."""
    path = Path(path)
    check_file(path)
    try:
        with Image.open(path) as image:
            check_geometry(path, image.height, image.width)  # from the header, before decoding
            image.load()
            rgb = _to_rgb(image)
    except UnidentifiedImageError:
        raise MediaError(path, "not an image PIL can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise MediaError(path, f"cannot decode the image ({exc})") from None
    h, w = smart_resize(rgb.height, rgb.width, factor=spec.side_factor, min_pixels=spec.min_pixels,
                        max_pixels=spec.max_pixels)
    if rgb.size != (w, h):
        rgb = rgb.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def load_media(record: Record, media_root: str | os.PathLike, video: VideoSpec = VideoSpec(),
               image: ImageSpec = ImageSpec()) -> Clip | np.ndarray:
    """The record's media: a :class:`Clip` for ``data_type == "video"``, an image array for "image"."""
    path = resolve_media_path(media_root, record.path, record_id=record.problem_id)
    if record.data_type == "video":
        return load_video(path, video)
    if record.data_type == "image":
        return load_image(path, image)
    raise MediaError(path, f"record {record.problem_id!r}: unknown data_type {record.data_type!r}")
