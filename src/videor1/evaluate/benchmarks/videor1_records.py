"""`videor1`: files already in the Video-R1 record format (the reference's eval JSONs, the synthetic test set).

The official score *is* the reference protocol here (these files have no other owner). Breakdowns: by
problem type, by `data_source`, and by `temporal` (order-dependent vs not, the synthetic set's flag), which
is what the temporal-reliance diagnostic reads. Records that fail validation are reported and skipped;
a record whose media is missing or undecodable becomes an error item in the runner (counted, not dropped).
Duplicate `problem_id`s get a `#k` suffix so every item has its own line in predictions.jsonl.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from videor1.data.records import Record, read_records
from videor1.evaluate.benchmarks.base import Benchmark, Item, LoadResult
from videor1.evaluate.scoring import accuracy_summary, group_scores, reference_score
from videor1.rewards import extract_answer


def temporal_label(value: bool | None) -> str | None:
    if value is None:
        return None
    return "order-dependent" if value else "order-independent"


def items_from_records(records: Sequence[Record]) -> list[Item]:
    """Items for records already in memory (the in-process evaluation the demo uses)."""
    items: list[Item] = []
    seen: dict[str, int] = {}
    for rec in records:
        base = str(rec.problem_id)
        seen[base] = seen.get(base, 0) + 1
        item_id = base if seen[base] == 1 else f"{base}#{seen[base]}"
        meta = {"source": rec.data_source, "temporal": temporal_label(rec.temporal)}
        items.append(Item(id=item_id, record=rec, answer=extract_answer(rec.solution), meta=meta))
    return items


class VideoR1(Benchmark):
    name = "videor1"
    description = "Video-R1 record files (JSON list or JSONL), e.g. the reference eval sets or synthetic test set"
    headline = "reference-protocol accuracy (mean score over items)"

    def load(self, data: Path, media_root: Path | None = None) -> LoadResult:
        """Record files are validated by `read_records` as a whole, not row by row like the others."""
        records, errors = read_records(data)
        return LoadResult(items=items_from_records(records), problems=[str(e) for e in errors])

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        return reference_score(row["problem_type"], output, row["solution"])

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = accuracy_summary(rows, {"source": "source", "temporal": "temporal"})
        out["breakdowns"] = {"problem type": group_scores(rows, lambda r: r.get("problem_type")),
                             **out["breakdowns"]}
        return out
