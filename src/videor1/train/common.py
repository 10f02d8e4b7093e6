"""What both training loops (SFT and RL) share: seeding and RNG state, metrics, checkpoints, skip logs.

- Metrics: `MetricsLogger` appends one JSON line a step to `metrics.jsonl` (and mirrors numbers to
  TensorBoard). A resumed run passes the checkpoint's step: lines past it (written after the checkpoint by
  the interrupted run) are dropped, so the file reads as one uninterrupted run.
- Checkpoints: `save_checkpoint` writes `checkpoint-<step>.tmp/` (HF model directory in safetensors via
  `save_pretrained`, the processor, and `trainer_state.pt`: optimizer, scheduler, RNG states, data
  position, step, config) and then renames it to `checkpoint-<step>` with `os.replace`, so a kill never
  leaves a half-written checkpoint that `latest_checkpoint` would pick. Only the last N are kept.
- Distributed: pass the `accelerate.Accelerator`. Every rank must call `save_checkpoint` (gathering a
  sharded state dict, e.g. ZeRO-3, is collective); only the main process writes the model; each rank
  writes its own RNG state (`rng_state_<rank>.pt`) so each rank's sampling resumes exactly.
  With DeepSpeed or FSDP the optimizer is sharded: its state is saved with `accelerator.save_state`
  into `accelerator_state/` (every rank writes its shard) instead of in `trainer_state.pt` (the
  "optimizer" entry is dropped; the scheduler, not prepared by accelerate, stays in trainer_state.pt). That branch has
  not run here (no DeepSpeed on the CPU machine); the DDP / single-process branch is tested.
- `trainer_state.pt` is loaded with `torch.load(weights_only=True)`: only tensors and plain Python
  containers are stored (the numpy RNG state is converted to a tensor).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

METRICS_FILE = "metrics.jsonl"
SKIPPED_FILE = "skipped.jsonl"
STATE_FILE = "trainer_state.pt"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


# -------------------------------------------------------------------------------------- seeding / RNG
def seed_everything(seed: int) -> None:
    """Seed Python's `random`, numpy's global RNG and torch (CPU and every accelerator device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """The current states of Python, numpy and torch RNGs (and CUDA's, when available) as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the RNG states saved by `rng_state()`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------- metrics
class MetricsLogger:
    """One JSON line a step in `<out_dir>/metrics.jsonl`, mirrored to TensorBoard (`<out_dir>/tensorboard`).

    `resume_step=None` starts a fresh log (an existing metrics.jsonl is replaced). `resume_step=k` keeps
    the lines with step <= k and appends after them. `enabled=False` (non-main processes) makes every
    method a no-op.
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, *, resume_step: int | None = None,
                 enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / METRICS_FILE
        self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [row for row in read_metrics(self.path) if row["step"] <= resume_step] \
            if resume_step is not None and self.path.exists() else []
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append `{"step": step, **metrics}`; numbers also go to TensorBoard as scalars."""
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(key, value, global_step=int(step))
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file (a torn last line from a kill is ignored)."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def plot_curves(metrics_jsonl: str | Path, out_png: str | Path, keys: Sequence[str]) -> Path | None:
    """One subplot per key (those present in the log) against step; None when none is present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_jsonl)
    present = [k for k in keys if any(_is_number(r.get(k)) for r in rows)]
    if not present:
        return None
    cols = min(3, len(present))
    nrows = math.ceil(len(present) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
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
    plt.close(fig)
    return out_png


# --------------------------------------------------------------------------------------- skip log
def skip_log(out_dir: str | Path, sample_id: Any, reason: str, **extra: Any) -> None:
    """Append `{"id", "reason", ...}` to `<out_dir>/skipped.jsonl` (one short line; safe from any rank)."""
    path = Path(out_dir) / SKIPPED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"id": _plain(sample_id), "reason": str(reason), **{k: _plain(v) for k, v in extra.items()}}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def trim_skip_log(out_dir: str | Path, step: int) -> None:
    """On resume: drop skip-log lines whose "step" is past `step` (the resumed run writes them again)."""
    path = Path(out_dir) / SKIPPED_FILE
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row.get("step"), int) or row["step"] <= step:
            keep.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(out_dir: str | Path, step: int, model: Any, processor: Any, state: Mapping[str, Any], *,
                    accelerator: Any = None, save_total_limit: int | None = None) -> Path:
    """Atomically write `<out_dir>/checkpoint-<step>` and keep the last `save_total_limit` checkpoints.

    `state` holds what the loop needs to resume (optimizer / scheduler state dicts, data position, step,
    config); the RNG states of this process are added under "rng". Call on every rank when `accelerator`
    is given. Returns the checkpoint directory.
    """
    out_dir = Path(out_dir)
    final = out_dir / f"checkpoint-{step}"
    tmp = out_dir / f"checkpoint-{step}.tmp"
    main = accelerator is None or accelerator.is_main_process
    rank = 0 if accelerator is None else accelerator.process_index
    sharded = accelerator is not None and is_sharded(accelerator)
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(accelerator)
    state = dict(state)
    if sharded:
        accelerator.save_state(str(tmp / "accelerator_state"))
        state.pop("optimizer", None)
    # A sharded model (ZeRO-3 / FSDP) is gathered collectively; otherwise the module's own weights are saved.
    full_state_dict = accelerator.get_state_dict(model) if sharded else None
    if rank != 0:
        torch.save(rng_state(), tmp / f"rng_state_{rank}.pt")
    if main:
        unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
        unwrapped.save_pretrained(tmp, state_dict=full_state_dict)
        if processor is not None:
            processor.save_pretrained(tmp)
        torch.save({**state, "step": int(step), "rng": rng_state()}, tmp / STATE_FILE)
    _barrier(accelerator)
    if main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if save_total_limit is not None and save_total_limit > 0:
            for old in list_checkpoints(out_dir)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    _barrier(accelerator)
    return final


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories under `out_dir`, oldest step first (`.tmp` ones are ignored)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for child in out_dir.iterdir():
        m = _CKPT_RE.match(child.name)
        if m and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1] if ckpts else None


def load_trainer_state(ckpt: str | Path, *, rank: int = 0) -> dict[str, Any]:
    """`trainer_state.pt` of a checkpoint; for rank > 0 its "rng" is that rank's own saved RNG state."""
    ckpt = Path(ckpt)
    path = ckpt / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt}: not a checkpoint (no {STATE_FILE})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if rank:
        rank_file = ckpt / f"rng_state_{rank}.pt"
        if not rank_file.is_file():
            raise FileNotFoundError(f"{ckpt}: no RNG state for rank {rank} ({rank_file.name}); "
                                    "was it saved with a different number of processes?")
        state["rng"] = torch.load(rank_file, map_location="cpu", weights_only=True)
    return state


# ------------------------------------------------------------------------------------------ helpers
def zero_stage(accelerator: Any) -> int:
    """DeepSpeed's ZeRO stage under `accelerate launch` with a DeepSpeed config; 0 without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return int(getattr(plugin, "zero_stage", 0) or 0) if plugin is not None else 0


def params_sharded(accelerator: Any) -> bool:
    """True when parameters themselves are split across processes (ZeRO-3 or FSDP), not only optimizer
    state (ZeRO-1/2): then no process holds the whole model without gathering it."""
    return zero_stage(accelerator) == 3 or "FSDP" in str(getattr(accelerator, "distributed_type", ""))


def is_sharded(accelerator: Any) -> bool:
    """True under DeepSpeed or FSDP (parameters / optimizer state split across processes)."""
    kind = str(getattr(accelerator, "distributed_type", ""))
    return "DEEPSPEED" in kind or "FSDP" in kind


def _barrier(accelerator: Any) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: Any) -> Any:
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

