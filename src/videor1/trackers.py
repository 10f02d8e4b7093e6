"""Experiment trackers: where a run's numbers go besides `metrics.jsonl` (the `report_to` key of `train`, `sft`
and `eval`).

`metrics.jsonl` is always written (`videor1.train.metrics.MetricsLogger`); `report_to` lists the trackers that
mirror it, by name in `TRACKERS` (a `videor1.registry.Registry`, so a user can register another):

- ``tensorboard`` (the default): `<out>/tensorboard`, one scalar per number of a metrics line, the resolved
  config as text, eval scores as scalars, the run's plots (curves.png / scores.png) as images.
- ``wandb`` (optional extra: ``pip install 'videor1[wandb]'``; imported only when asked for): one W&B run per
  run folder, with the same scalars at the same steps, the resolved config plus the run's output directory as
  its config, eval scores in its summary and the plots as `wandb.Image`s. Project: `$WANDB_PROJECT` (default
  "videor1"); entity, mode (``WANDB_MODE=offline``) and key from W&B's own environment variables. Its files go
  to `<out>/wandb/`. The run id is kept in `<out>/wandb_run.json` (written atomically): a resumed training run,
  or an eval folder evaluated further, continues that W&B run (``resume="allow"``). A W&B run still open in
  the process (a run that raised before closing its trackers) is finished first (``reinit="finish_previous"``).

Where trackers differ on resume: TensorBoard purges the steps after the checkpoint (the resumed run writes them
again, as metrics.jsonl drops their lines); W&B cannot delete history, so the steps the interrupted run logged
after its checkpoint stay, and W&B ignores the resumed run's repeats of them (its steps must increase).

Only numbers go to trackers (metrics lines also hold strings such as the engine name; they stay in
metrics.jsonl). Trackers run on the main process only (the caller decides: `open_trackers` is not called
elsewhere).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from videor1 import __version__
from videor1.atomic import atomic_write_json
from videor1.config import ConfigError
from videor1.registry import Registry

REPORT_TO_DEFAULT: tuple[str, ...] = ("tensorboard",)
WANDB_RUN_FILE = "wandb_run.json"
WANDB_INSTALL_HINT = "pip install 'videor1[wandb]'"


@dataclass(frozen=True)
class RunInfo:
    """What a tracker is told about the run it mirrors."""

    out_dir: Path  # the run's output directory
    command: str  # "train", "sft" or "eval"
    config: Mapping[str, Any]  # the resolved config (config_to_dict)
    resume: bool = False  # continue this folder's earlier tracker run (a resumed training run, an eval folder)
    resume_step: int | None = None  # training resumed after this step (TensorBoard purges the later ones)


class Tracker:
    """One backend. Every method is optional (a no-op here); `log` gets the numbers of a metrics line."""

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """The numbers of one metrics line at `step`."""

    def summary(self, values: Mapping[str, float], step: int = 0) -> None:
        """Final numbers of the run (eval scores)."""

    def images(self, images: Mapping[str, Path], step: int = 0) -> None:
        """PNG files (the run's plots), by name."""

    def close(self) -> None:
        """Flush and finish."""


TRACKERS: Registry[Callable[[RunInfo], Tracker]] = Registry("tracker")


def check_report_to(names: Sequence[str]) -> None:
    """ConfigError (key report_to) for an unknown or repeated tracker, or one whose package is not installed."""
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker {name!r}; known: {', '.join(TRACKERS.names())}", key="report_to")
    if len(set(names)) != len(names):
        raise ConfigError(f"a tracker is named twice in {list(names)}", key="report_to")
    if "wandb" in names and importlib.util.find_spec("wandb") is None:
        raise ConfigError(f"wandb is not installed ({WANDB_INSTALL_HINT})", key="report_to")


def report_to_flag(flag: str | None) -> list[str] | None:
    """A command-line `--report-to tensorboard,wandb` as a list (None: not given; "none": no tracker)."""
    if flag is None:
        return None
    names = [name.strip() for name in flag.split(",") if name.strip()]
    return [] if names == ["none"] else names


def open_trackers(names: Sequence[str], info: RunInfo) -> list[Tracker]:
    """The trackers `names` for the run `info` (call on the main process only)."""
    check_report_to(names)
    return [TRACKERS.get(name)(info) for name in names]


def numbers(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite int / float values of a flat mapping (bools, strings, NaN and lists left out)."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def flatten_numbers(tree: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, float]:
    """The finite numbers of a nested mapping, keyed by their joined path (``official/breakdowns/task/x/score``)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_numbers(value, name, sep))
        else:
            flat.update(numbers({name: value}))
    return flat


def tracker_config(info: RunInfo) -> dict[str, Any]:
    """What a tracker records as the run's config: the resolved config, the command, the resolved output
    directory and the videor1 version."""
    return {**info.config, "command": info.command, "output_dir": str(Path(info.out_dir).resolve()),
            "videor1_version": __version__}


# -------------------------------------------------------------------------------------- tensorboard
@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """`<out>/tensorboard` through torch's SummaryWriter (purge_step on resume)."""

    def __init__(self, info: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if info.resume_step is None else info.resume_step + 1
        self._writer = SummaryWriter(str(Path(info.out_dir) / "tensorboard"), purge_step=purge)
        if info.resume_step is None:
            text = yaml.safe_dump(tracker_config(info), sort_keys=False)
            self._writer.add_text("config", "```\n" + text + "```", global_step=0)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, global_step=int(step))
        self._writer.flush()

    def summary(self, values: Mapping[str, float], step: int = 0) -> None:
        self.log(step, values)

    def images(self, images: Mapping[str, Path], step: int = 0) -> None:
        import numpy as np
        from PIL import Image

        for name, path in images.items():
            with Image.open(path) as img:
                self._writer.add_image(name, np.asarray(img.convert("RGB")), global_step=int(step),
                                       dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


# -------------------------------------------------------------------------------------------- wandb
def wandb_run_id(out_dir: Path, *, resume: bool) -> tuple[str | None, str | None]:
    """(the W&B run id stored in `out_dir` to continue, or None for a new run; a note to log, or None)."""
    path = Path(out_dir) / WANDB_RUN_FILE
    if not resume:
        return None, None
    if not path.is_file():
        return None, f"{path} not found (the earlier run did not report to W&B): starting a new W&B run"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))["id"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"{path}: not a W&B run file written by videor1 (expected {{\"id\": ...}})") from None
    return str(stored), None


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """One W&B run per run folder (module docstring); `wandb` imported here, not at import time."""

    def __init__(self, info: RunInfo) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError(f"wandb is not installed ({WANDB_INSTALL_HINT})", key="report_to") from None
        out = Path(info.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        run_id, note = wandb_run_id(out, resume=info.resume)
        if note:
            print(f"report_to wandb: {note}")
        self._wandb = wandb
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "videor1", name=out.resolve().name,
                               id=run_id, resume="allow", dir=str(out), reinit="finish_previous",
                               config=tracker_config(info), job_type=info.command)
        atomic_write_json(out / WANDB_RUN_FILE, {"id": self._run.id, "project": self._run.project}, indent=1)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self._run.log(dict(scalars), step=int(step))

    def summary(self, values: Mapping[str, float], step: int = 0) -> None:
        self._run.summary.update(dict(values))

    def images(self, images: Mapping[str, Path], step: int = 0) -> None:
        self._run.log({name: self._wandb.Image(str(path)) for name, path in images.items()}, step=int(step))

    def close(self) -> None:
        self._run.finish()


# --------------------------------------------------------------------------------------------- eval
def report_eval(names: Sequence[str], info: RunInfo, summary: Mapping[str, Any], plots: Mapping[str, Path]) -> None:
    """Send an evaluation's scores (the numbers of scores.json but its settings) and plots to `names`."""
    if not names:
        return
    scores = flatten_numbers({k: summary.get(k) for k in ("official", "reference", "counts", "format_reward",
                                                           "completion_tokens", "temporal_reliance")
                              if summary.get(k) is not None})
    present = {name: Path(p) for name, p in plots.items() if Path(p).is_file()}
    for tracker in open_trackers(names, info):
        try:
            tracker.summary(scores)
            if present:
                tracker.images(present)
        finally:
            tracker.close()
