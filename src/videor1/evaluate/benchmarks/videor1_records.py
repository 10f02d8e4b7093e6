"""`videor1`: files already in the Video-R1 record format (the reference's eval JSONs, the synthetic test set).

The official score *is* the reference protocol here (these files have no other owner). Breakdowns: by
problem type, by `data_source`, and by `temporal` (order-dependent vs not, the synthetic set's flag), which
is what the temporal-reliance diagnostic reads. Records that fail validation are reported and skipped;
a record whose media is missing or undecodable becomes an error item in the runner (counted, not dropped).
Duplicate `problem_id`s get a `#k` suffix so every item has its own line in predictions.jsonl.

Video-R1's own eval JSONs (`eval_vsibench.json`, `eval_mvbench.json`, `eval_videomme.json`, `eval_mmvu.json`,
`eval_videommmu.json`, `eval_tempcompass.json`: `"process": ""`, `"options": null` on numeric rows) load as
they are, and each record's benchmark is detected (`detect_benchmark`), first rule that applies:
`data_source` naming a benchmark (case, spaces, `-` and `_` ignored: "VSI-Bench", "MVBench", "Video-MME",
"MMVU", "VideoMMMU", "TempCompass"); `original_question_type` naming a VSI-Bench task; the file name
`eval_<benchmark>.json`. When every item has the same benchmark, the aggregation is that benchmark
adapter's own (`aggregate`: same breakdowns and headline rule), over this adapter's item scores (the
reference protocol of `src/eval_bench.py`), plus a `problem type` breakdown. The meta it needs comes from the
record (`BENCH_META`): VSI-Bench task / level from `original_question_type`, scene source from the path;
MVBench task from `original_question_type` (or a task-named `data_source`); Video-MME duration / domain /
task type from those fields or `original_question_type`; MMVU subject from the path (`videos/<Subject>/`);
Video-MMMU track from the path / `original_question_type`, discipline from the path or the id-named file;
TempCompass format / dimension from `original_question_type` or the path. What a record does not state is
grouped as "not stated" (counted, never dropped). To score with a benchmark's own official rule instead,
pass the file with `--bench vsibench` (that adapter reads Video-R1 records directly).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from videor1.data.records import Record, read_records
from videor1.evaluate.benchmarks.base import BENCHMARKS, Benchmark, Item, LoadResult
from videor1.evaluate.benchmarks.mmvu import discipline_of as mmvu_discipline
from videor1.evaluate.benchmarks.mvbench import TASKS as MVBENCH_TASKS
from videor1.evaluate.benchmarks.tempcompass import DIMENSIONS as TEMPCOMPASS_DIMENSIONS
from videor1.evaluate.benchmarks.tempcompass import FORMATS as TEMPCOMPASS_FORMATS
from videor1.evaluate.benchmarks.tempcompass import format_of
from videor1.evaluate.benchmarks.videomme import DURATIONS as VIDEOMME_DURATIONS
from videor1.evaluate.benchmarks.videommmu import _DISCIPLINE_OF as VIDEOMMMU_DISCIPLINE_OF
from videor1.evaluate.benchmarks.videommmu import DISCIPLINES as VIDEOMMMU_DISCIPLINES
from videor1.evaluate.benchmarks.videommmu import TRACKS as VIDEOMMMU_TRACKS
from videor1.evaluate.benchmarks.videommmu import subject_of as videommmu_subject
from videor1.evaluate.benchmarks.vsibench import TASKS as VSI_TASKS
from videor1.evaluate.benchmarks.vsibench import split_question_type
from videor1.evaluate.scoring import accuracy_summary, group_scores, reference_score
from videor1.rewards import extract_answer


def temporal_label(value: bool | None) -> str | None:
    if value is None:
        return None
    return "order-dependent" if value else "order-independent"


NOT_STATED = "not stated"
_BENCH_NAMES = {"vsibench": "vsibench", "mvbench": "mvbench", "videomme": "videomme", "mmvu": "mmvu",
                "videommmu": "videommmu", "tempcompass": "tempcompass"}


def squash(text: object) -> str:
    """"Video-MME" / "video_mme" / "VideoMME" -> "videomme"."""
    return re.sub(r"[^a-z0-9]", "", str(text or "").lower())


def question_type(rec: Record) -> str | None:
    kind = rec.extra.get("original_question_type")
    return kind if isinstance(kind, str) and kind else None


def detect_benchmark(rec: Record, file: Path | None = None) -> str | None:
    """The benchmark an eval-JSON record belongs to (see the module doc for the rules), or None."""
    if squash(rec.data_source) in _BENCH_NAMES:
        return _BENCH_NAMES[squash(rec.data_source)]
    kind = question_type(rec)
    if kind and split_question_type(kind)[0] in VSI_TASKS:
        return "vsibench"
    stem = squash(file.stem.removeprefix("eval_")) if file is not None else ""
    return _BENCH_NAMES.get(stem)


def path_parts(rec: Record) -> list[str]:
    return [p for p in rec.path.replace("\\", "/").split("/") if p not in ("", ".")]


def named_in(values: Sequence[str], names: Sequence[str]) -> str | None:
    """The first of `names` equal (case-insensitively) to one of `values`, as `names` spells it."""
    lowered = {str(v).lower() for v in values}
    return next((n for n in names if n.lower() in lowered), None)


def vsibench_meta(rec: Record) -> dict[str, Any]:
    task, level = split_question_type(question_type(rec) or NOT_STATED)
    parts = path_parts(rec)
    return {"task": task, "level": level, "question_type": question_type(rec),
            "dataset": parts[-2] if len(parts) >= 2 else NOT_STATED}


def mvbench_meta(rec: Record) -> dict[str, Any]:
    names = [name for name, _ in MVBENCH_TASKS.values()]
    kind = question_type(rec)
    stated = named_in([kind or "", rec.data_source or ""], names) or (MVBENCH_TASKS.get(kind or "", (None,))[0])
    return {"task": stated or kind or NOT_STATED}


def videomme_meta(rec: Record) -> dict[str, Any]:
    kind = question_type(rec)
    duration = rec.extra.get("duration") or named_in([kind or ""], VIDEOMME_DURATIONS)
    task_type = rec.extra.get("task_type") or (kind if kind and kind.lower() not in VIDEOMME_DURATIONS else None)
    return {"duration": duration or NOT_STATED, "domain": rec.extra.get("domain") or NOT_STATED,
            "task_type": task_type or NOT_STATED}


def mmvu_meta(rec: Record) -> dict[str, Any]:
    parts = path_parts(rec)
    subject = rec.extra.get("subject") or (parts[-2] if len(parts) >= 2 else None)
    return {"subject": subject or NOT_STATED, "discipline": mmvu_discipline(subject)}


def videommmu_meta(rec: Record) -> dict[str, Any]:
    parts = path_parts(rec)
    track = named_in([question_type(rec) or "", *parts], VIDEOMMMU_TRACKS)
    discipline = named_in(parts, list(VIDEOMMMU_DISCIPLINES)) or VIDEOMMMU_DISCIPLINE_OF.get(
        videommmu_subject(Path(parts[-1]).stem) if parts else "")
    return {"track": track or NOT_STATED, "discipline": discipline or NOT_STATED}


def tempcompass_meta(rec: Record) -> dict[str, Any]:
    kind = question_type(rec) or ""
    parts = path_parts(rec)
    fmt = named_in([kind.replace("_", "-"), kind], TEMPCOMPASS_FORMATS) or (format_of(Path(*parts)) if parts else None)
    dimension = named_in([kind, *parts], TEMPCOMPASS_DIMENSIONS)
    return {"format": fmt or NOT_STATED, "dimension": dimension or NOT_STATED}


BENCH_META: dict[str, Callable[[Record], dict[str, Any]]] = {
    "vsibench": vsibench_meta, "mvbench": mvbench_meta, "videomme": videomme_meta, "mmvu": mmvu_meta,
    "videommmu": videommmu_meta, "tempcompass": tempcompass_meta}


def benchmark_meta(rec: Record, file: Path | None = None) -> dict[str, Any]:
    """`bench` plus the meta that benchmark's aggregation needs, for an eval-JSON record; {} if none."""
    bench = detect_benchmark(rec, file)
    if bench is None:
        kind = question_type(rec)
        return {"task": kind} if kind else {}
    return {"bench": bench, **BENCH_META[bench](rec)}


def items_from_records(records: Sequence[Record], file: Path | None = None) -> list[Item]:
    """Items for records already in memory (the in-process evaluation the demo uses); `file` names the
    file they were read from (its name is one of the benchmark-detection rules)."""
    items: list[Item] = []
    seen: dict[str, int] = {}
    for rec in records:
        base = str(rec.problem_id)
        seen[base] = seen.get(base, 0) + 1
        item_id = base if seen[base] == 1 else f"{base}#{seen[base]}"
        meta = {"source": rec.data_source, "temporal": temporal_label(rec.temporal), **benchmark_meta(rec, file)}
        items.append(Item(id=item_id, record=rec, answer=extract_answer(rec.solution), meta=meta))
    return items


class VideoR1(Benchmark):
    name = "videor1"
    description = "Video-R1 record files (JSON list or JSONL), e.g. the reference eval sets or synthetic test set"
    headline = "reference-protocol accuracy (mean score over items)"

    def load(self, data: Path, media_root: Path | None = None, *, judge: bool = False) -> LoadResult:
        """Record files are validated by `read_records` as a whole, not row by row like the others."""
        records, errors = read_records(data)
        file = Path(data) if Path(data).is_file() else None
        return LoadResult(items=items_from_records(records, file), problems=[str(e) for e in errors])

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        return reference_score(row["problem_type"], output, row["solution"])

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        benches = {(r.get("meta") or {}).get("bench") for r in rows}
        if len(benches) == 1 and None not in benches:
            adapter = BENCHMARKS.get(benches.pop())()
            out = adapter.aggregate(rows)
            out["headline_rule"] = f"{adapter.name}: {adapter.headline}"
            out["breakdowns"]["problem type"] = group_scores(rows, lambda r: r.get("problem_type"))
            return out
        out = accuracy_summary(rows, {"source": "source", "temporal": "temporal", "task": "task",
                                      "benchmark": "bench"})
        out["breakdowns"] = {"problem type": group_scores(rows, lambda r: r.get("problem_type")),
                             **out["breakdowns"]}
        return out
