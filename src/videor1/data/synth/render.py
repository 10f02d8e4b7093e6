"""Drawing and encoding for the synthetic dataset: plain canvases, coloured shapes, rendered words, mp4 / PNG.

Everything here is deterministic: shapes are numpy masks, text uses Pillow's embedded default font
(``ImageFont.load_default(size=...)``, no system fonts), and videos are encoded with libx264 losslessly
(``qp 0``, ``yuv420p``, one thread): a decoded frame is the 4:2:0 conversion of the drawn one whatever
choices the encoder makes. (With lossy crf 12, one clip of ~4,700 was once seen to decode one level apart
between two runs of the same seed, enough to change a tiny model's training; lossless clips are also
smaller here, flat shapes compress well.) Shapes are placed on
even pixel coordinates with even sizes so that 4:2:0 chroma subsampling does not bleed colours: a decoded
frame's colours stay within a few levels of the drawn ones (tested in ``tests/test_synth.py``).
"""

from __future__ import annotations

import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Strong, well separated colours (names are what questions and answers use).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 240),
    "yellow": (240, 220, 30),
    "magenta": (220, 40, 220),
    "cyan": (30, 210, 220),
}
BACKGROUND: tuple[int, int, int] = (16, 16, 16)
TEXT_COLOUR: tuple[int, int, int] = (245, 245, 245)
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")

#: Encoder settings (recorded here, in one place): lossless, so decoded content never depends on the encoder.
VIDEO_CODEC = "libx264"
VIDEO_PIX_FMT = "yuv420p"
VIDEO_OPTIONS = {"qp": "0", "preset": "fast", "threads": "1"}


def canvas(size: int, background: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """A plain ``size`` x ``size`` RGB frame (uint8 [H, W, 3])."""
    frame = np.empty((size, size, 3), dtype=np.uint8)
    frame[:] = background
    return frame


@lru_cache(maxsize=None)
def shape_mask(kind: str, size: int) -> np.ndarray:
    """Boolean [size, size] mask of a square, circle or upward triangle filling its box."""
    if kind not in SHAPES:
        raise ValueError(f"unknown shape {kind!r}; known: {list(SHAPES)}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    if kind == "square":
        return np.ones((size, size), dtype=bool)
    if kind == "circle":
        r = size / 2.0
        return (xx - r) ** 2 + (yy - r) ** 2 <= r * r
    # triangle: apex at the top centre, base along the bottom row
    half_width = (yy / size) * (size / 2.0)
    return np.abs(xx - size / 2.0) <= half_width


def draw_shape(frame: np.ndarray, kind: str, x: int, y: int, size: int, colour: str) -> None:
    """Draw a shape with its box's top-left corner at (x, y), in place. The box must lie inside the frame."""
    h, w = frame.shape[:2]
    if x < 0 or y < 0 or x + size > w or y + size > h:
        raise ValueError(f"shape box ({x}, {y}, size {size}) does not fit a {w}x{h} frame")
    mask = shape_mask(kind, size)
    region = frame[y:y + size, x:x + size]
    region[mask] = PALETTE[colour]


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_box(text: str, font_size: int) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` rendered with the default font at ``font_size``."""
    left, top, right, bottom = _font(font_size).getbbox(text)
    return right - left, bottom - top


def draw_text(frame: np.ndarray, text: str, x: int, y: int, font_size: int,
              colour: tuple[int, int, int] = TEXT_COLOUR) -> np.ndarray:
    """A copy of ``frame`` with ``text`` drawn so that its ink box starts at (x, y)."""
    image = Image.fromarray(frame)
    font = _font(font_size)
    left, top, _, _ = font.getbbox(text)
    ImageDraw.Draw(image).text((x - left, y - top), text, fill=colour, font=font)
    return np.asarray(image, dtype=np.uint8).copy()


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int) -> Path:
    """Encode uint8 [T, H, W, 3] RGB frames (H, W even) as an H.264 mp4 at ``fps`` frames per second."""
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"{path}: {VIDEO_PIX_FMT} needs even frame sizes, got {w}x{h}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(VIDEO_CODEC, rate=Fraction(fps, 1), options=dict(VIDEO_OPTIONS))
        stream.width, stream.height, stream.pix_fmt = w, h, VIDEO_PIX_FMT
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_png(path: str | os.PathLike, frame: np.ndarray) -> Path:
    """Save one uint8 [H, W, 3] RGB frame as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, format="PNG")
    return path
