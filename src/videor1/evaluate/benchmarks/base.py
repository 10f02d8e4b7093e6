"""What every benchmark adapter shares: the evaluation item, the adapter base class, file readers.

An adapter (one module per benchmark, in the lmms-eval / nanochat style) owns three things:

* `load(data, media_root)`: read the benchmark's own released files into `Item`s. Each item carries a
  Video-R1 `Record` built in memory (so the prompt is exactly the training prompt of
  `videor1.data.prompts`), the media path and optional start/end seconds, the ground truth, and the
  metadata its official aggregation needs (task, duration, format, dimension, ...).
* `official_score(row, output)`: the benchmark's own rule for one prediction, in [0, 1].
* `aggregate(rows)`: the benchmark's official headline number plus breakdowns.

Scoring works on plain dict *rows* (what `Item.row()` returns, stored in predictions.jsonl) rather than on
items, so `videor1 score` can re-score saved predictions without the benchmark files or a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from videor1.data.records import Record, RecordError, parse_record

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Item:
    """One benchmark question, ready to prompt and to score."""

    id: str
    record: Record                       # problem, options ("A. ..."), solution "<answer>X</answer>", media path
    answer: str                          # ground truth as the benchmark states it (letter, number, text)
    start: float | None = None           # clip window in seconds (MVBench); None = whole video
    end: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)   # task / duration / format / dimension / ...

    def row(self) -> dict[str, Any]:
        """The fields a prediction line carries so it can be re-scored with no benchmark file."""
        return {
            "id": self.id,
            "problem_type": self.record.problem_type,
            "problem": self.record.problem,
            "options": list(self.record.options),
            "solution": self.record.solution,
            "answer": self.answer,
            "path": self.record.path,
            "data_type": self.record.data_type,
            "start": self.start,
            "end": self.end,
            "temporal": self.record.temporal,
            "meta": dict(self.meta),
        }


@dataclass
class LoadResult:
    """Items read from a benchmark's files, plus one line per entry that could not be used."""

    items: list[Item]
    problems: list[str] = field(default_factory=list)


class Benchmark:
    """Base class of the adapters; subclasses set `name` and implement the three methods."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    headline: ClassVar[str] = "accuracy"   # what the official overall number is, in words

    def load(self, data: Path, media_root: Path | None = None) -> LoadResult:
        raise NotImplementedError

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        raise NotImplementedError

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError


# ------------------------------------------------------------------------------------- record helpers
def lettered(options: Sequence[str]) -> list[str]:
    """Options as "A. text" strings; options that already carry their letters are kept as they are."""
    opts = [str(o).strip() for o in options]
    if all(o.startswith(f"{LETTERS[i]}.") for i, o in enumerate(opts)):
        return opts
    return [f"{LETTERS[i]}. {o}" for i, o in enumerate(opts)]


def make_item(*, item_id: Any, problem: str, problem_type: str, answer: Any, path: str, source: str,
              file: Path, index: int, options: Sequence[str] = (), start: float | None = None,
              end: float | None = None, temporal: bool | None = None,
              meta: Mapping[str, Any] | None = None) -> Item:
    """Build an Item through `parse_record`, so a bad entry fails with the record's id, file and field."""
    obj: dict[str, Any] = {
        "problem_id": str(item_id),
        "problem": problem,
        "data_type": "video",
        "problem_type": problem_type,
        "options": list(options),
        "solution": f"<answer>{str(answer).strip()}</answer>",
        "path": path,
        "data_source": source,
    }
    if temporal is not None:
        obj["temporal"] = temporal
    record = parse_record(obj, file=str(file), index=index)
    return Item(id=str(item_id), record=record, answer=str(answer).strip(), start=start, end=end,
                meta=dict(meta or {}))


def bad_entry(file: Path, index: int, item_id: Any, reason: str) -> str:
    """One line naming the file, the entry and why it was skipped."""
    return str(RecordError(reason, record_id=item_id if item_id is not None else f"#{index}", file=file))


# --------------------------------------------------------------------------------------- file readers
def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .parquet, .jsonl or .json (a list of objects) file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such benchmark file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}: line {n} is not JSON: {exc}") from exc
        return rows
    if suffix == ".json":
        obj = read_json(path)
        if not isinstance(obj, list):
            raise ValueError(f"{path}: expected a JSON list of questions, got {type(obj).__name__}")
        return obj
    raise ValueError(f"{path}: unsupported file type {suffix!r} (expected .parquet, .json or .jsonl)")


def read_json(path: Path) -> Any:
    with Path(path).open(encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc


def data_files(data: Path, patterns: Iterable[str]) -> list[Path]:
    """`data` itself if it is a file, else the files under it matching any pattern (sorted)."""
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise FileNotFoundError(f"no such benchmark file or directory: {data}")
    found = sorted({p for pat in patterns for p in data.rglob(pat) if p.is_file()})
    if not found:
        raise FileNotFoundError(f"{data}: no files matching {', '.join(patterns)}")
    return found


def require(row: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """The keys missing (or None) in `row`."""
    return [k for k in keys if row.get(k) is None]
