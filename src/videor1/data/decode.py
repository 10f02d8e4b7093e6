"""PyAV decoding: open a video, index its packets (demuxed, not decoded), decode the wanted frames.

`videor1.data.media.load_video` is the public entry point; this module is its engine. Decoding seeks: for
each wanted frame we seek to the keyframe at or before it unless we are already decoding inside that GOP,
then decode forward, skipping frames no other frame references (``skip_frame = NONREF``). Frame identity is
by timestamp (the rank of a frame's pts among all packet pts), never by counting frames after a seek. In
``keyframe`` mode each wanted frame is replaced by its nearest keyframe (no decoding between keyframes).
Codec threads (``VIDEOR1_DECODE_THREADS``) change speed only, never the frames.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import numpy as np
from av.container import InputContainer
from av.video.stream import VideoStream
from PIL import Image

from videor1.config import ConfigError

DECODE_THREADS_ENV = "VIDEOR1_DECODE_THREADS"  # codec threads per decoder; 0: FFmpeg's choice (one per core)


class MediaError(RuntimeError):
    """A media file that cannot be used (missing, truncated, no frames, undecodable)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")




# ----------------------------------------------------------------------------------------- container
def check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "no such file")
    if not path.is_file():
        raise MediaError(path, "not a regular file")


def open_video(path: Path) -> tuple[InputContainer, VideoStream]:
    """(container, first video stream); MediaError for anything PyAV cannot open as a video."""
    check_file(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(path, f"not a readable media file ({exc.__class__.__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(path, "no video stream")
    return container, container.streams.video[0]


def stream_fps(stream: VideoStream, path: Path) -> float:
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
    container, stream = open_video(path)
    with container:
        fps = stream_fps(stream, path)
        duration = _duration_s(container, stream)
        frames = stream.frames if stream.frames and stream.frames > 0 else round(duration * fps)
        return {"duration": duration, "fps": fps, "frames": int(frames),
                "width": int(stream.codec_context.width), "height": int(stream.codec_context.height)}


@dataclass(frozen=True)
class PacketIndex:
    """From demuxing only: the frame count and, when packets carry timestamps, every frame's pts in
    display order and the indices of the keyframes (``pts`` is None for e.g. raw H.264 streams)."""

    count: int
    pts: list[int] | None
    keyframes: list[int]

    def keyframe_at_or_before(self, index: int) -> int:
        pos = bisect.bisect_right(self.keyframes, index) - 1
        return self.keyframes[max(pos, 0)]


def packet_index(container: InputContainer, stream: VideoStream, path: Path) -> PacketIndex:
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
        return PacketIndex(count=count, pts=None, keyframes=[])
    pts = sorted(set(pts))
    rank = {p: i for i, p in enumerate(pts)}
    keyframes = sorted({rank[p] for p in key_pts}) or [0]
    return PacketIndex(count=len(pts), pts=pts, keyframes=keyframes)


# ------------------------------------------------------------------------------------------ decoding
def resize_frame(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
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


def _decode_seeking(container: InputContainer, stream: VideoStream, index: PacketIndex, wanted: list[int],
                    path: Path, convert: Callable[[int, av.VideoFrame], Any]) -> dict[int, Any]:
    """`convert` of the decoded frames of the `wanted` indices (sorted, unique), seeking between GOPs."""
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
            if frame.pts in wanted_pts and i not in got:
                got[i] = convert(i, frame)
            if i > target and target not in got:
                raise MediaError(path, f"frame {target} was not produced by the decoder (got {i} after it)")
    return got


def _decode_in_order(path: Path, wanted: list[int], convert: Callable[[int, av.VideoFrame], Any]) -> dict[int, Any]:
    """For streams without packet timestamps (raw H.264 ...): decode from the start, index = output
    order. The only place we count frames, and only from the very first one. Such streams often
    cannot seek, so the file is opened afresh."""
    fresh, video = open_video(path)
    with fresh:
        wanted_set, got = set(wanted), {}
        for i, frame in enumerate(fresh.decode(video)):
            if i in wanted_set:
                got[i] = convert(i, frame)
            if i >= wanted[-1]:
                return got
    raise MediaError(path, f"truncated: the decoder ran out before frame {wanted[-1]}")


def nearest_keyframes(index: PacketIndex, wanted: list[int]) -> list[int]:
    """For each wanted frame, the keyframe nearest to it in time (the earlier one on a tie)."""
    out = []
    for target in wanted:
        before = index.keyframe_at_or_before(target)
        pos = bisect.bisect_right(index.keyframes, target)
        after = index.keyframes[pos] if pos < len(index.keyframes) else before
        t, tb, ta = index.pts[target], index.pts[before], index.pts[after]
        out.append(after if ta - t < t - tb else before)
    return out


def _decode_keyframes(container: InputContainer, stream: VideoStream, index: PacketIndex, keys: list[int],
                      path: Path, convert: Callable[[int, av.VideoFrame], Any]) -> dict[int, Any]:
    """Decoded frames of the keyframe indices `keys` (sorted, unique): per key one seek, one packet decoded
    and the decoder drained; every other packet is only demuxed."""
    got: dict[int, av.VideoFrame] = {}
    codec = stream.codec_context
    for key in keys:
        pts = index.pts[key]
        container.seek(pts, stream=stream, backward=True, any_frame=False)  # also flushes the decoder
        for packet in container.demux(stream):
            if packet.pts is None or packet.pts < pts:
                continue
            if packet.pts > pts or packet.size == 0:
                break
            frames = [f for f in (*codec.decode(packet), *codec.decode(None)) if f.pts == pts]
            if frames:
                got[key] = convert(key, frames[0])
            break
        if key not in got:
            raise MediaError(path, f"keyframe {key} (pts {pts}) was not produced by the decoder")
    return got


def decode_frames(container: InputContainer, stream: VideoStream, index: PacketIndex, wanted: list[int],
                  path: Path, *, keyframes_only: bool = False,
                  convert: Callable[[int, av.VideoFrame], Any] = lambda frame: frame) -> dict[int, Any]:
    """{index: convert(index, frame)} for the `wanted` frame indices, each converted as soon as it is decoded
    (in increasing index order), so that only converted frames are held (at 256 frames of a 720p clip the decoded
    frames alone take ~350 MB; resized to 128*28*28 px, 77 MB)."""
    unique = sorted(set(wanted))
    if unique[-1] >= index.count:
        raise MediaError(path, f"truncated: the file holds {index.count} frames, fewer than its header "
                               f"declares; frame {unique[-1]} is wanted")
    try:
        if index.pts is None:
            return _decode_in_order(path, unique, convert)
        if keyframes_only:
            return _decode_keyframes(container, stream, index, unique, path, convert)
        return _decode_seeking(container, stream, index, unique, path, convert)
    except av.FFmpegError as exc:
        raise MediaError(path, f"decoding failed ({exc.__class__.__name__}: {exc})") from None


def frame_timestamps(index: PacketIndex, stream: VideoStream, native_fps: float, wanted: list[int]) -> list[float]:
    """Seconds from the first frame: from the pts where known, else ``index / native_fps``."""
    if index.pts is None:
        return [i / native_fps for i in wanted]
    t0 = index.pts[0]
    return [float((index.pts[i] - t0) * stream.time_base) for i in wanted]


def decode_threads() -> int:
    """Codec threads per decoder: ``$VIDEOR1_DECODE_THREADS`` when set (0: one per core, 1: no threading),
    else min(4, cores). Threads change speed only, never the frames."""
    raw = os.environ.get(DECODE_THREADS_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"must be an integer >= 0, got {raw!r}", key=DECODE_THREADS_ENV) from None
        if value < 0:
            raise ConfigError(f"must be an integer >= 0, got {raw!r}", key=DECODE_THREADS_ENV)
        return value
    return min(4, os.cpu_count() or 1)


def use_threads(stream: VideoStream, threads: int) -> None:
    """Frame + slice threading in the decoder (set before the codec opens at the first decode)."""
    if threads != 1:
        stream.thread_type = "AUTO"
        stream.thread_count = threads
