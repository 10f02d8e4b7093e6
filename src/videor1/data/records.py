"""The Video-R1 record: load JSON / JSONL, validate every field, resolve media paths safely.

(Skeleton: the dataclasses are the shared contract, see docs/internals.md; the functions are being written.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")
DATA_TYPES = ("image", "video")


class RecordError(ValueError):
    """A bad record: names the record id, the file and the field."""

    def __init__(self, reason: str, *, record_id: Any = None, file: Any = None, field: str | None = None):
        self.reason = reason
        self.record_id = record_id
        self.file = str(file) if file is not None else None
        self.field = field
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if record_id is not None:
            where.append(f"record {record_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


@dataclass(frozen=True)
class Record:
    problem_id: str | int
    problem: str
    data_type: str
    problem_type: str
    options: tuple[str, ...]
    solution: str
    path: str
    data_source: str | None = None
    process: str | None = None
    temporal: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
