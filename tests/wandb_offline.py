"""Read back what `wandb` wrote in offline mode (`WANDB_MODE=offline`): the `run-<id>.wandb` files of
`<dir>/wandb/offline-run-*`. wandb >= 0.20 no longer ships a Python reader for them, so this parses the
format itself: a 7-byte header (":W&B", magic, version), then LevelDB-log records (32 KiB blocks; each chunk
has crc32 (4 bytes), length (2, little-endian) and type: 1 full, 2 first, 3 middle, 4 last), each record a
`wandb_internal_pb2.Record` protobuf."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32 * 1024
HEADER = 7


@dataclass
class OfflineRun:
    run_id: str
    project: str
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per logged step (with "_step")
    summary: dict[str, Any] = field(default_factory=dict)  # the run's summary (last value of each key)
    config: dict[str, Any] = field(default_factory=dict)


def _chunks(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a .wandb file")
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # the block's trailer: too short for a chunk header
            pos += left
            continue
        size, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        body, pos = data[pos + 7:pos + 7 + size], pos + 7 + size
        if kind == 1:
            yield body
        elif kind == 2:
            pending = body
        elif kind == 3:
            pending += body
        elif kind == 4:
            yield pending + body


def _items(items) -> dict[str, Any]:
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in items}


def read_run(path: Path) -> OfflineRun:
    """The run, history, summary and config records of one `run-<id>.wandb` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun("", "")
    for chunk in _chunks(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(chunk)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project = record.run.run_id, record.run.project
            run.config.update(_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update({k: v for k, v in _items(record.summary.update).items() if k})
    return run


def offline_runs(out_dir: Path) -> list[OfflineRun]:
    """Every offline run under `<out_dir>/wandb`, oldest first."""
    return [read_run(p) for p in sorted(Path(out_dir).glob("wandb/offline-run-*/run-*.wandb"))]
