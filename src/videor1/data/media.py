"""Decode videos (PyAV) and images, sample frames by the reference rule, resize to a pixel budget.

Frame sampling follows Video-R1 / ``qwen_vl_utils``: ``n = duration * fps`` clamped to
``[min_frames, max_frames]`` (and to the number of frames available), rounded *down* to an even count
(at least 2); the sampled indices are ``linspace(0, total - 1, n)`` rounded with numpy's ``round``
(half to even, the same rule as the reference's ``torch.round``). Every frame is resized with PIL's
antialiased BICUBIC filter to ``smart_resize`` of its size (multiples of 28 within a pixel budget).

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

import bisect
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from av.container import InputContainer
from av.video.stream import VideoStream
from PIL import Image, UnidentifiedImageError

from videor1.config import ConfigError
from videor1.data.records import Record, resolve_media_path

FACTOR = 28  # Qwen2.5-VL: patch 14 x spatial merge 2
_EPS = 1e-6  # tolerance when turning seconds into frame indices


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ConfigError naming the first bad field: fps > 0; 2 <= min_frames <= max_frames, both even; pixels."""
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
        _check_pixels(self.min_pixels, self.max_pixels)


@dataclass(frozen=True)
class ImageSpec:
    """How an image is resized (the ``image`` section of every config); validates itself like VideoSpec."""

    min_pixels: int = 4 * 28 * 28  # smallest H*W after resizing (>= 1)
    max_pixels: int = 256 * 28 * 28  # largest H*W after resizing (>= 28*28)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ConfigError naming the bad field: 1 <= min_pixels <= max_pixels and max_pixels >= 28*28."""
        _check_pixels(self.min_pixels, self.max_pixels)


def _check_pixels(min_pixels: int, max_pixels: int) -> None:
    if min_pixels < 1:
        raise ConfigError(f"must be >= 1, got {min_pixels}", key="min_pixels")
    if max_pixels < FACTOR * FACTOR:
        raise ConfigError(f"must be >= {FACTOR * FACTOR} (one 28x28 patch), got {max_pixels}", key="max_pixels")
    if max_pixels < min_pixels:
        raise ConfigError(f"must be >= min_pixels ({min_pixels}), got {max_pixels}", key="max_pixels")


class MediaError(RuntimeError):
    """A media file that cannot be used (missing, truncated, no frames, undecodable)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


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


# ----------------------------------------------------------------------------------------- container
def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "no such file")
    if not path.is_file():
        raise MediaError(path, "not a regular file")


def _open_video(path: Path) -> tuple[InputContainer, VideoStream]:
    """(container, first video stream); MediaError for anything PyAV cannot open as a video."""
    _check_file(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(path, f"not a readable media file ({exc.__class__.__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(path, "no video stream")
    return container, container.streams.video[0]


def _native_fps(stream: VideoStream, path: Path) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise MediaError(path, "the video stream declares no frame rate")
    return float(rate)


def _duration_s(container: InputContainer, stream: VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def probe_video(path: str | os.PathLike) -> dict:
    """Header facts, no decoding: ``duration`` (s), ``fps``, ``frames``, ``width``, ``height``.

    ``frames`` is the header's count; where the container has none (0) it is estimated as
    ``round(duration * fps)``.
    """
    path = Path(path)
    container, stream = _open_video(path)
    with container:
        fps = _native_fps(stream, path)
        duration = _duration_s(container, stream)
        frames = stream.frames if stream.frames and stream.frames > 0 else round(duration * fps)
        return {"duration": duration, "fps": fps, "frames": int(frames),
                "width": int(stream.codec_context.width), "height": int(stream.codec_context.height)}


@dataclass(frozen=True)
class _PacketIndex:
    """From demuxing only: the frame count and, when packets carry timestamps, every frame's pts in
    display order and the indices of the keyframes (``pts`` is None for e.g. raw H.264 streams)."""

    count: int
    pts: list[int] | None
    keyframes: list[int]

    def keyframe_at_or_before(self, index: int) -> int:
        pos = bisect.bisect_right(self.keyframes, index) - 1
        return self.keyframes[max(pos, 0)]


def _packet_index(container: InputContainer, stream: VideoStream, path: Path) -> _PacketIndex:
    """Demux the whole stream without decoding (cheap: no pixel work)."""
    count, timed = 0, True
    pts: list[int] = []
    key_pts: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet at end of stream
            count += 1
            timed = timed and packet.pts is not None
            if timed:
                pts.append(packet.pts)
                if packet.is_keyframe:
                    key_pts.append(packet.pts)
    except av.FFmpegError as exc:
        raise MediaError(path, f"cannot demux the video stream ({exc})") from None
    if not timed:
        return _PacketIndex(count=count, pts=None, keyframes=[])
    pts = sorted(set(pts))
    rank = {p: i for i, p in enumerate(pts)}
    keyframes = sorted({rank[p] for p in key_pts}) or [0]
    return _PacketIndex(count=len(pts), pts=pts, keyframes=keyframes)


# ------------------------------------------------------------------------------------------ decoding
def _resize_frame(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    # to_ndarray + fromarray: PyAV's own to_image() is ~30x slower (it copies row by row).
    image = Image.fromarray(frame.to_ndarray(format="rgb24"))
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _frames_from(container: InputContainer, stream: VideoStream, wanted_pts: set[int]) -> Iterator[av.VideoFrame]:
    """Decoded frames from the current demux position; packets of unwanted frames skip non-reference
    work (``skip_frame = NONREF``), so those frames may not come out at all."""
    codec = stream.codec_context
    for packet in container.demux(stream):
        codec.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
        yield from codec.decode(packet)
    codec.skip_frame = "DEFAULT"


def _decode_seeking(container: InputContainer, stream: VideoStream, index: _PacketIndex, wanted: list[int],
                    path: Path) -> dict[int, av.VideoFrame]:
    """Decoded frames for the `wanted` indices (sorted, unique), seeking between GOPs."""
    wanted_pts = {index.pts[i] for i in wanted}
    rank = {p: i for i, p in enumerate(index.pts)}
    got: dict[int, av.VideoFrame] = {}
    frames: Iterator[av.VideoFrame] | None = None
    cur = -1  # highest frame index decoded since the last seek
    for target in wanted:
        key = index.keyframe_at_or_before(target)
        if frames is None or key > cur:
            container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
            frames, cur = _frames_from(container, stream, wanted_pts), -1
        while target not in got:
            frame = next(frames, None)
            if frame is None:
                raise MediaError(path, f"truncated: the decoder ran out before frame {target}")
            i = rank.get(frame.pts)
            if i is None:
                raise MediaError(path, f"decoded a frame with pts {frame.pts}, not in the stream's packets")
            cur = max(cur, i)
            if frame.pts in wanted_pts:
                got[i] = frame
            if i > target and target not in got:
                raise MediaError(path, f"frame {target} was not produced by the decoder (got {i} after it)")
    return got


def _decode_in_order(path: Path, wanted: list[int]) -> dict[int, av.VideoFrame]:
    """For streams without packet timestamps (raw H.264 ...): decode from the start, index = output
    order. The only place we count frames, and only from the very first one. Such streams often
    cannot seek, so the file is opened afresh."""
    fresh, video = _open_video(path)
    with fresh:
        wanted_set, got = set(wanted), {}
        for i, frame in enumerate(fresh.decode(video)):
            if i in wanted_set:
                got[i] = frame
            if i >= wanted[-1]:
                return got
    raise MediaError(path, f"truncated: the decoder ran out before frame {wanted[-1]}")


def _decode(container: InputContainer, stream: VideoStream, index: _PacketIndex, wanted: list[int],
            path: Path) -> dict[int, av.VideoFrame]:
    unique = sorted(set(wanted))
    if unique[-1] >= index.count:
        raise MediaError(path, f"truncated: the file holds {index.count} frames, fewer than its header "
                               f"declares; frame {unique[-1]} is wanted")
    try:
        if index.pts is None:
            return _decode_in_order(path, unique)
        return _decode_seeking(container, stream, index, unique, path)
    except av.FFmpegError as exc:
        raise MediaError(path, f"decoding failed ({exc.__class__.__name__}: {exc})") from None


def _timestamps(index: _PacketIndex, stream: VideoStream, native_fps: float, wanted: list[int]) -> list[float]:
    """Seconds from the first frame: from the pts where known, else ``index / native_fps``."""
    if index.pts is None:
        return [i / native_fps for i in wanted]
    t0 = index.pts[0]
    return [float((index.pts[i] - t0) * stream.time_base) for i in wanted]


def load_video(path: str | os.PathLike, spec: VideoSpec = VideoSpec(), *, start: float | None = None,
               end: float | None = None) -> Clip:
    """Sample and resize frames of `path` per `spec`, optionally within ``[start, end]`` seconds.

    Raises :class:`MediaError` (naming the file) for a missing file, a file without a video stream or
    without frames, an empty window, and a truncated or undecodable file.
    """
    path = Path(path)
    container, stream = _open_video(path)
    with container:
        native_fps = _native_fps(stream, path)
        index = _packet_index(container, stream, path)
        if index.count == 0:
            raise MediaError(path, "the video stream has no frames")
        total = stream.frames if stream.frames and stream.frames > 0 else index.count
        first, last = window_range(total, native_fps, start, end, path)
        count = last - first + 1
        rel = sample_indices(count, native_fps, fps=spec.fps, min_frames=spec.min_frames,
                             max_frames=spec.max_frames)
        wanted = [first + i for i in rel]
        decoded = _decode(container, stream, index, wanted, path)
        probe = decoded[wanted[0]]
        size = smart_resize(probe.height, probe.width, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
        resized = {i: _resize_frame(frame, size) for i, frame in decoded.items()}
        stamps = _timestamps(index, stream, native_fps, wanted)
    return Clip(frames=np.stack([resized[i] for i in wanted]), sample_fps=len(wanted) / count * native_fps,
                timestamps=stamps, indices=wanted, total_frames=int(total), native_fps=native_fps,
                path=str(path))


# -------------------------------------------------------------------------------------------- images
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
    _check_file(path)
    try:
        with Image.open(path) as image:
            image.load()
            rgb = _to_rgb(image)
    except UnidentifiedImageError:
        raise MediaError(path, "not an image PIL can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaError(path, f"cannot decode the image ({exc})") from None
    h, w = smart_resize(rgb.height, rgb.width, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
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
