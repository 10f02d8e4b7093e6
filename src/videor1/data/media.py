"""Decode videos (PyAV) and images, sample frames by the reference rule, resize to a pixel budget.

(Skeleton: the dataclasses are the shared contract, see docs/internals.md; the functions are being written.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class VideoSpec:
    """How a video becomes frames. Every field is configuration and is recorded in outputs."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 16
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 128 * 28 * 28


@dataclass(frozen=True)
class ImageSpec:
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 256 * 28 * 28


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
