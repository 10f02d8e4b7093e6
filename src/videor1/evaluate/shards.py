"""Evaluation on several processes: which items each process evaluates, where it writes them, and the merge.

`accelerate launch --num_processes N -m videor1.cli eval ...` (or torchrun) starts N copies of `videor1 eval`;
each reads RANK / WORLD_SIZE / LOCAL_RANK, builds its own engine (on GPU `LOCAL_RANK`), evaluates its shard and
appends its rows to its own file, `shards/predictions.<rank>-of-<N>.jsonl` (a line at a time, fsynced). When all
are done the main process merges the shard files into `predictions.jsonl` and writes the scores.

* Shards: item i (in the benchmark's item order) belongs to process (i // block) % N, block = the batch size, so
  every generation batch holds the very items (same padding) a one-process run batches together, and greedy
  predictions and scores are identical to a one-process run's.
* Resume: every process skips the items already in `predictions.jsonl` or in *any* shard file, whatever number
  of processes wrote it, then shards what is left by the rule above; so a run killed with 2 processes resumes
  with 1 or 4. A half-written last line is cut off its file by the process that owns the file; the lines of
  other files are read up to their last complete line.
* The merge (main process, after every process reached the barrier): the rows of `predictions.jsonl` and of
  every shard file, one per (item, pass), in the order a one-process run writes them (ordered pass then
  shuffled pass, each in item order; rows of items no longer evaluated after them), written atomically; then
  the shard files are deleted. A kill between the two leaves rows that are in both, which the next merge reads once.
* Coordination is a key-value store (`torch.distributed.rendezvous("env://")`: the launcher's own store under
  torchrun / accelerate, else one hosted by rank 0), not a process group: nothing runs on a GPU, and an
  in-process vLLM engine (which sets up its own default process group) is not disturbed. A barrier waits as
  long as some process still works (each sends a heartbeat while it evaluates); it fails after
  `VIDEOR1_DIST_TIMEOUT_S` seconds (default 1800) without a sign of life from any.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from videor1.atomic import atomic_write_text

T = TypeVar("T")
PREDICTIONS = "predictions.jsonl"   # the merged predictions of a run (the one file of a one-process run)
SHARD_DIR = "shards"
TIMEOUT_ENV = "VIDEOR1_DIST_TIMEOUT_S"
_CALLS = itertools.count()   # a fresh key prefix for each run in one set of processes


# ------------------------------------------------------------------------------------------ sharding
def shard_of(index: int, block: int, num_processes: int) -> int:
    """The process that evaluates item `index`: blocks of `block` consecutive items dealt round-robin."""
    return (index // block) % num_processes


def shard(items: Sequence[T], rank: int, num_processes: int, block: int) -> list[T]:
    """The items of process `rank` (of `num_processes`), in order."""
    return [it for i, it in enumerate(items) if shard_of(i, block, num_processes) == rank]


def shard_file(out: Path, rank: int, num_processes: int) -> Path:
    return out / SHARD_DIR / f"predictions.{rank}-of-{num_processes}.jsonl"


def shard_files(out: Path) -> list[Path]:
    """Every shard file in `out`, whatever number of processes wrote it, sorted by name."""
    folder = out / SHARD_DIR
    return sorted(folder.glob("predictions.*-of-*.jsonl")) if folder.is_dir() else []


def has_predictions(out: Path) -> bool:
    """Whether `out` holds predictions: the merged file or any shard file."""
    return (out / PREDICTIONS).is_file() or bool(shard_files(out))


# ------------------------------------------------------------------------------------------ the merge
def row_key(row: Mapping[str, Any]) -> tuple[str, bool]:
    return str(row["id"]), bool(row.get("shuffled"))


def merge_rows(rows: Iterable[Mapping[str, Any]], item_ids: Sequence[str]) -> list[Mapping[str, Any]]:
    """One row per (item, pass), the first seen, in a one-process run's order: ordered pass then shuffled pass,
    each in `item_ids` order; rows of other items after them, in the order given."""
    position = {str(i): n for n, i in enumerate(item_ids)}
    unique: dict[tuple[str, bool], Mapping[str, Any]] = {}
    for row in rows:
        unique.setdefault(row_key(row), row)
    order = {key: n for n, key in enumerate(unique)}

    def sort_key(key: tuple[str, bool]) -> tuple[int, int, int]:
        known = key[0] in position
        return (0, int(key[1]), position[key[0]]) if known else (1, 0, order[key])

    return [unique[k] for k in sorted(unique, key=sort_key)]


def merge_shards(out: Path, item_ids: Sequence[str],
                 read: Callable[[Path], list[dict[str, Any]]]) -> int:
    """Merge the shard files into `out/predictions.jsonl` (atomically), then delete them; returns the rows
    merged from shards (0: nothing to merge, the file is left as it is). `read` reads a predictions file."""
    files = shard_files(out)
    if not files:
        return 0
    from_shards = [row for f in files for row in read(f)]
    rows = merge_rows([*read(out / PREDICTIONS), *from_shards], item_ids)
    atomic_write_text(out / PREDICTIONS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for f in files:
        f.unlink()
    return len(from_shards)


# ------------------------------------------------------------------------------------ the processes
def timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "1800"))


@dataclass
class Processes:
    """This process's place among the evaluation processes, and their store (None with one process)."""

    rank: int = 0
    num_processes: int = 1
    local_rank: int = 0
    store: Any = None
    prefix: str = "videor1-eval"
    _progress: int = field(default=0, repr=False)

    @classmethod
    def from_env(cls) -> "Processes":
        """RANK / WORLD_SIZE / LOCAL_RANK as torchrun and `accelerate launch` set them; one process without."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        store, rank, world = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout_s())))
        return cls(rank=rank, num_processes=world, local_rank=int(os.environ.get("LOCAL_RANK", rank)),
                   store=dist.PrefixStore(f"videor1-eval/{next(_CALLS)}", store))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """While inside, a thread tells the others every few seconds that this process is alive (a barrier
        waits as long as some process is; one vLLM call over a whole shard can take hours)."""
        if self.store is None:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(min(10.0, timeout_s() / 4)):
                self.store.add("progress", 1)

        thread = threading.Thread(target=beat, name="videor1-eval-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def barrier(self, name: str, poll_s: float = 0.2) -> None:
        """Wait until every process arrived at `name`; TimeoutError after `timeout_s()` without a heartbeat."""
        if self.store is None:
            return
        self.store.add(f"arrived/{name}", 1)
        limit, last, since = timeout_s(), None, time.monotonic()
        while True:
            arrived = self.store.add(f"arrived/{name}", 0)
            if arrived >= self.num_processes:
                return
            progress = self.store.add("progress", 0)
            if progress != last:
                last, since = progress, time.monotonic()
            elif time.monotonic() - since > limit:
                raise TimeoutError(f"evaluation process {self.rank}: {arrived} of {self.num_processes} processes "
                                   f"reached '{name}' and none sent a heartbeat for {limit:.0f} s ({TIMEOUT_ENV})")
            time.sleep(poll_s)


def visible_device(local_rank: int, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES entry a process of local rank `local_rank` takes (its own GPU for vLLM)."""
    devices = [d for d in (visible or "").split(",") if d.strip()]
    return devices[local_rank % len(devices)].strip() if devices else str(local_rank)
