"""The prefetching input pipeline shared by evaluation, SFT, RL and annotation, and the optional frame cache.

- :func:`prefetch` maps a function over items *in order*, computing the next items in `num_workers` worker
  processes (a torch DataLoader, fork start method on Linux) while the caller works on the current one. With
  ``num_workers=0`` it is a plain lazy map in the calling process (what every stage did before). The function
  must turn the item's expected failures into values (every caller returns its skip reason), so a bad item is
  still logged and skipped by the caller, in order, whatever the worker count. ``Prefetcher.wait_s`` is the
  time the caller spent blocked waiting for the next item (the "model waits for data" time).
- :func:`make_loader` is the DataLoader every stage builds (SFT passes its own batch sampler and collate).
- :class:`FrameCache` stores decoded clips on disk, keyed by (file, size, mtime, video spec, window), so that
  RL epochs after the first skip decoding. Off by default (``frame_cache: null`` in the RL config). Worker
  processes share it through the file system; :func:`cached_load_video` reports hit or miss per call so
  that the caller can sum the hit rate in the main process.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from videor1.data.media import Clip, VideoSpec, load_video

T = TypeVar("T")
R = TypeVar("R")


# ------------------------------------------------------------------------------------------ prefetch
def _identity(x: Any) -> Any:
    return x


class _Mapped(torch.utils.data.Dataset, Generic[T, R]):
    """Item `i` -> fn(items[i]); inherited by the forked workers (nothing is pickled but the results)."""

    def __init__(self, fn: Callable[[T], R], items: Sequence[T]):
        self.fn, self.items = fn, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> R:
        return self.fn(self.items[i])


def _context() -> str | None:
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def make_loader(dataset: torch.utils.data.Dataset, *, num_workers: int, ahead: int = 2,
                **kwargs: Any) -> torch.utils.data.DataLoader:
    """A DataLoader with `num_workers` processes keeping about `ahead` batches in flight (in order)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers:
        kwargs.update(prefetch_factor=max(1, math.ceil(ahead / num_workers)), multiprocessing_context=_context(),
                      persistent_workers=False)
    return torch.utils.data.DataLoader(dataset, num_workers=num_workers, **kwargs)


class Prefetcher(Iterator[R]):
    """The results of `fn` over the items, in order; `wait_s`: seconds `__next__` blocked."""

    def __init__(self, source: Iterable[R]):
        self._it = iter(source)
        self.wait_s = 0.0

    def __iter__(self) -> "Prefetcher[R]":
        return self

    def __next__(self) -> R:
        t0 = time.perf_counter()
        try:
            return next(self._it)
        finally:
            self.wait_s += time.perf_counter() - t0


def prefetch(fn: Callable[[T], R], items: Sequence[T], *, num_workers: int = 0, ahead: int = 2) -> Prefetcher[R]:
    """fn(item) for each item in order; with workers, about `ahead` items are computed ahead in other processes."""
    if num_workers == 0:
        return Prefetcher(fn(item) for item in items)
    loader = make_loader(_Mapped(fn, items), num_workers=min(num_workers, max(1, len(items))), ahead=ahead,
                         batch_size=None, shuffle=False, collate_fn=_identity)
    return Prefetcher(loader)


def take(it: Iterator[R], n: int) -> list[R]:
    """The next `n` results (fewer at the end)."""
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


# --------------------------------------------------------------------------------------- frame cache
@dataclass
class CacheStats:
    hits: int = 0
    lookups: int = 0

    def add(self, other: "CacheStats") -> None:
        self.hits += other.hits
        self.lookups += other.lookups

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


class FrameCache:
    """Decoded clips on disk under `root`: one ``<key>.npz`` per (file, size, mtime, spec, window)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(path: str | os.PathLike, spec: VideoSpec, start: float | None, end: float | None) -> str:
        st = os.stat(path)
        ident = {"file": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                 "spec": asdict(spec), "start": start, "end": end}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> Clip | None:
        try:
            with np.load(self.root / f"{key}.npz", allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                return Clip(frames=data["frames"], **meta)
        except (OSError, ValueError, KeyError):  # absent, or a partial / foreign file: decode again
            return None

    def put(self, key: str, clip: Clip) -> None:
        meta = {"sample_fps": clip.sample_fps, "timestamps": clip.timestamps, "indices": clip.indices,
                "total_frames": clip.total_frames, "native_fps": clip.native_fps, "path": clip.path}
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, frames=clip.frames, meta=np.array(json.dumps(meta)))
            os.replace(tmp, self.root / f"{key}.npz")  # atomic: readers never see half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def cached_load_video(cache: FrameCache | None, path: str | os.PathLike, spec: VideoSpec, *,
                      start: float | None = None, end: float | None = None) -> tuple[Clip, CacheStats]:
    """``load_video`` through `cache` (None: straight through); the stats count this one lookup."""
    if cache is None:
        return load_video(path, spec, start=start, end=end), CacheStats()
    try:
        key = FrameCache.key(path, spec, start, end)
    except OSError:  # missing / unreadable: load_video raises the MediaError naming the file
        return load_video(path, spec, start=start, end=end), CacheStats()
    clip = cache.get(key)
    if clip is not None:
        return clip, CacheStats(hits=1, lookups=1)
    clip = load_video(path, spec, start=start, end=end)
    cache.put(key, clip)
    return clip, CacheStats(hits=0, lookups=1)
