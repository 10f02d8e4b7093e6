"""Atomic output files and output-directory guards, shared by every command that writes results.

* `atomic_write_bytes` / `atomic_write_text` / `atomic_write_json` / `atomic_save_figure` (charts): a
  temporary file in the same directory, fsynced, then `os.replace`d over the target, so a kill leaves either
  the old file or the new one, never half of one.
* `replace_dir`: the same for a finished directory (the old one is moved aside first, then deleted).
* `model_fingerprint`: a short hash of a model directory's files (names, sizes and sampled content), so a
  resumed evaluation can tell that the weights at the same path changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20  # bytes hashed at each sampled position of a large file


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file in the same folder, fsync, rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """A matplotlib figure rendered in memory (PNG unless `format` says otherwise), then written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=savefig.pop("format", Path(path).suffix.lstrip(".") or "png"), **savefig)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> Path:
    """`json.dumps(obj, **dumps)` written atomically."""
    return atomic_write_text(path, json.dumps(obj, **dumps))


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished directory `tmp` to `final`: an older `final` is renamed aside first and removed
    only after the new one is in place, so `final` is at every moment either the old or the new tree."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _file_digest(path: Path, size: int) -> str:
    """sha256 of the whole file when small, else of its first, middle and last megabyte."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= 3 * _CHUNK:
            digest.update(handle.read())
        else:
            for offset in (0, size // 2, size - _CHUNK):
                handle.seek(offset)
                digest.update(handle.read(_CHUNK))
    return digest.hexdigest()


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """A 16-hex-digit hash of every file directly in `model_dir`: name, size, mtime and sampled content
    (a retrained model at the same path gives another fingerprint)."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        digest.update(_file_digest(path, stat.st_size).encode())
    return digest.hexdigest()[:16]
