"""Metrics and skip logs, shared by the SFT and RL loops.

- `MetricsLogger` appends one JSON line a step to `metrics.jsonl` and mirrors its numbers to the trackers of
  `report_to` (TensorBoard, W&B: `videor1.trackers`). A resumed run passes the checkpoint's step: lines past
  it (written after the checkpoint by the interrupted run) are dropped, so the file reads as one
  uninterrupted run.
- `skip_log` appends one line per bad record / sample to `skipped.jsonl`; `trim_skip_log` drops, on resume,
  the lines the interrupted run wrote after the checkpoint (the resumed run writes them again).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure  # the object API: no pyplot, no GUI backend, no global figure state

from videor1.trackers import REPORT_TO_DEFAULT, RunInfo, Tracker, numbers, open_trackers

METRICS_FILE = "metrics.jsonl"
SKIPPED_FILE = "skipped.jsonl"


class MetricsLogger:
    """One JSON line a step in `<out_dir>/metrics.jsonl`, its numbers mirrored to the trackers of `report_to`
    (`videor1.trackers`: TensorBoard in `<out_dir>/tensorboard`, W&B).

    `resume_step=None` starts a fresh log (an existing metrics.jsonl is replaced, a new tracker run begins).
    `resume_step=k` keeps the lines with step <= k and appends after them (the trackers continue their run:
    TensorBoard purges the later steps, W&B continues the run id stored in the folder). `config` (the resolved
    config) and `command` go to the trackers. `enabled=False` (non-main processes) makes every method a no-op
    and opens no tracker.
    """

    def __init__(self, out_dir: str | Path, report_to: Sequence[str] = REPORT_TO_DEFAULT, *,
                 resume_step: int | None = None, enabled: bool = True, command: str = "train",
                 config: Mapping[str, Any] | None = None):
        self.enabled = enabled
        self.path = Path(out_dir) / METRICS_FILE
        self._trackers: list[Tracker] = []
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [row for row in read_metrics(self.path) if row["step"] <= resume_step] \
            if resume_step is not None and self.path.exists() else []
        _write_lines(self.path, [json.dumps(row) for row in kept])
        info = RunInfo(Path(out_dir), command, dict(config or {}), resume=resume_step is not None,
                       resume_step=resume_step)
        self._trackers = open_trackers(list(report_to), info)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append `{"step": step, **metrics}`; its numbers also go to every tracker."""
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        scalars = numbers({k: v for k, v in row.items() if k != "step"})
        for tracker in self._trackers:
            tracker.log(int(step), scalars)

    def images(self, images: Mapping[str, Path | None], step: int) -> None:
        """The run's plots (PNG files; None entries, plots not made, are left out) to every tracker."""
        present = {name: Path(p) for name, p in images.items() if p is not None and Path(p).is_file()}
        if self.enabled and present:
            for tracker in self._trackers:
                tracker.images(present, step)

    def close(self) -> None:
        for tracker in self._trackers:
            tracker.close()
        self._trackers = []


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file (a torn last line from a kill is ignored)."""
    return [row for row in _read_rows(Path(path)) if "step" in row]


def plot_curves(metrics_jsonl: str | Path, out_png: str | Path, keys: Sequence[str]) -> Path | None:
    """One subplot per key (those present in the log) against step; None when none is present."""
    rows = read_metrics(metrics_jsonl)
    present = [k for k in keys if any(_is_number(r.get(k)) for r in rows)]
    if not present:
        return None
    cols = min(3, len(present))
    nrows = math.ceil(len(present) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, key in zip(axes.flat, present):
        pts = [(r["step"], r[key]) for r in rows if _is_number(r.get(key))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


# --------------------------------------------------------------------------------------- skip log
def skip_log(out_dir: str | Path, sample_id: object, reason: str, **extra: object) -> None:
    """Append `{"id", "reason", ...}` to `<out_dir>/skipped.jsonl` (one short line; safe from any rank)."""
    path = Path(out_dir) / SKIPPED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"id": _plain(sample_id), "reason": str(reason), **{k: _plain(v) for k, v in extra.items()}}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def trim_skip_log(out_dir: str | Path, step: int) -> None:
    """On resume: drop skip-log lines whose "step" is past `step` (the resumed run writes them again).

    Lines without an integer "step" are kept; lines torn by a kill (not a JSON object) are dropped.
    """
    path = Path(out_dir) / SKIPPED_FILE
    if not path.exists():
        return
    keep = [json.dumps(row) for row in _read_rows(path)
            if not isinstance(row.get("step"), int) or row["step"] <= step]
    _write_lines(path, keep)


# ------------------------------------------------------------------------------------------ helpers
def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; lines that are not one (a line torn by a kill) are left out."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    """Replace `path` with `lines` atomically (a temp file renamed over it)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: object) -> object:
    """JSON-ready: tensors / numpy scalars to Python numbers, paths to strings."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
