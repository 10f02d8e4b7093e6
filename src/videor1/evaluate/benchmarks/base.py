"""What every benchmark adapter shares: the evaluation item, the adapter base class (which owns the load
loop), the benchmark registry, file readers.

An adapter (one module per benchmark, in the lmms-eval / nanochat style) is a `Benchmark` subclass with a
`name`; defining it registers it in `BENCHMARKS` under that name. It supplies:

* `patterns`: the file names its release uses, for when `--data` is a folder (`data_files`; default: every
  .parquet / .jsonl / .json file), and `id_field`, the row field that names an item (default `id`).
* `row_to_item(row, source)`: one row of those files as an `Item`, a *pure* function of the row and where it
  sits (`RowSource`: file, position, id). The item carries a Video-R1 `Record` built in memory through
  `self.item(...)` (so the prompt is exactly the training prompt of `videor1.data.prompts`), the media path and
  optional start/end seconds, the ground truth, and the metadata its official aggregation needs. A row that
  cannot be used raises `BadRow` (naming the field); one the benchmark leaves out on purpose raises `SkipRow`.
  Optional hooks: `row_id` (what an item is called), `rows(file)` (how a file reads into rows).
* `official_score(row, output)`: the benchmark's own rule for one prediction, in [0, 1].
* `aggregate(rows)`: the benchmark's official headline number plus breakdowns.

`Benchmark.load` walks the files and rows, collects the items, checks each row and item against the input
limits in force (`videor1.limits`: `max_depth`, `max_prompt_chars`, `max_options`, before anything is
tokenised), and turns every `BadRow`, `SkipRow`, record error and passed limit into one problem line naming
the file and the entry, so no adapter repeats that loop. (The `videor1`
adapter, whose files are already records, overrides `load` with `read_records`.)

Scoring works on plain dict *rows* (what `Item.row()` returns, stored in predictions.jsonl) rather than on
items, so `videor1 score` can re-score saved predictions without the benchmark files or a model.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.parquet as pq

from videor1.data.records import Record, RecordError, parse_record
from videor1.evaluate.scoring import LETTERS
from videor1.limits import InputLimits, current_limits, json_depth, prompt_chars_problem
from videor1.registry import Registry

Row = Mapping[str, Any]   # one question as the benchmark's file states it (parsed JSON / a parquet row)


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


@dataclass(frozen=True)
class RowSource:
    """Where a row sits: its file, its 0-based position there, and the id it is known by (`row_id`)."""

    file: Path
    index: int
    item_id: str | int | None


class BadRow(ValueError):
    """A row that cannot become an item; `fields` names the field(s) at fault where one is."""

    def __init__(self, reason: str, *fields: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


class SkipRow(Exception):
    """A row the benchmark leaves out on purpose; load reports one count per file and reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadFile(ValueError):
    """A whole file that cannot be read as questions; the message is the problem line load reports."""


class Benchmark:
    """Base class of the adapters; a subclass that sets `name` is registered in `BENCHMARKS` under it."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    headline: ClassVar[str] = "accuracy"             # what the official overall number is, in words
    patterns: ClassVar[tuple[str, ...]] = ("*.parquet", "*.jsonl", "*.json")   # data files in a folder
    id_field: ClassVar[str] = "id"                   # the row field that names an item (see `row_id`)
    judge_source: ClassVar[str] = ""                 # the official judge-scoring script, for messages

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            BENCHMARKS.register(cls.name)(cls)

    # ---------------------------------------------------------------------------------------- loading
    def load(self, data: Path, media_root: Path | None = None, *, judge: bool = False) -> LoadResult:
        """Every usable row of the files at `data` as an item, and one problem line per row or file that is not.

        Items the benchmark scores with an LLM judge (`meta["judge"]` names the format) are kept only with
        `judge=True`; otherwise each is one problem line saying so. `locate` may raise `BadRow` (media the
        release no longer ships, e.g. MVBench's NTU videos): that entry becomes a problem line too."""
        files, notes = self.files(Path(data))
        result = LoadResult(items=[], problems=list(notes))
        first_seen: dict[str, Path] = {}
        limits = current_limits()
        for file in files:
            try:
                rows = list(self.rows(file))
            except BadFile as exc:
                result.problems.append(str(exc))
                continue
            skipped: Counter[str] = Counter()
            for index, row in enumerate(rows):
                source = RowSource(file, index, self.row_id(row, file, index))
                try:
                    check_row_limits(row, limits)
                    item = self.row_to_item(row, source)
                    check_item_limits(item, limits)
                    if item.meta.get("judge") and not judge:
                        raise BadRow(f"{item.meta['judge']} is scored by an LLM judge reading the answer "
                                     f"({self.judge_source}); not evaluated without --judge URL --judge-model NAME")
                    if media_root is not None:
                        item = self.locate(item, media_root)
                except SkipRow as exc:
                    skipped[exc.reason] += 1
                    continue
                except BadRow as exc:
                    result.problems.append(bad_entry(file, index, source.item_id, exc.reason))
                    continue
                except RecordError as exc:   # from `item`: the record itself is invalid, already located
                    result.problems.append(str(exc))
                    continue
                if item.id in first_seen:
                    result.problems.append(bad_entry(file, index, item.id, f"duplicate id: already read from "
                                                     f"{first_seen[item.id]}; this entry is not evaluated"))
                    continue
                first_seen[item.id] = file
                result.items.append(item)
            result.problems.extend(f"file {file}: {n} {reason}" for reason, n in skipped.items())
        return result

    def files(self, data: Path) -> tuple[list[Path], list[str]]:
        """The data files to read at `data`, and one note per file there that is left out on purpose."""
        return data_files(data, self.patterns), []

    def locate(self, item: Item, media_root: Path) -> Item:
        """The item with its media path as found under `media_root` (hook for releases whose file names
        vary, e.g. `.mp4` / `.MP4` / `.mkv`); the default keeps the path as the row states it."""
        return item

    def rows(self, file: Path) -> Iterable[Row]:
        """The rows of one data file (raise `BadFile` to skip the file with a problem line)."""
        return read_rows(file)

    def row_id(self, row: Row, file: Path, index: int) -> str | int | None:
        """The id an item is known by: the row's `id_field`, else "<file stem>-<index>"."""
        return row.get(self.id_field, f"{file.stem}-{index}")

    def row_to_item(self, row: Row, source: RowSource) -> Item:
        raise NotImplementedError

    def item(self, source: RowSource, *, problem: str, problem_type: str, answer: object, path: str,
             options: Sequence[str] = (), start: float | None = None, end: float | None = None,
             temporal: bool | None = None, meta: Mapping[str, Any] | None = None) -> Item:
        """An Item built through `parse_record`, so a bad entry fails with the record's id, file and field."""
        obj: dict[str, Any] = {
            "problem_id": str(source.item_id),
            "problem": problem,
            "data_type": "video",
            "problem_type": problem_type,
            "options": list(options),
            "solution": f"<answer>{str(answer).strip()}</answer>",
            "path": path,
            "data_source": self.name,
        }
        if temporal is not None:
            obj["temporal"] = temporal
        record = parse_record(obj, file=str(source.file), index=source.index)
        return Item(id=str(source.item_id), record=record, answer=str(answer).strip(), start=start, end=end,
                    meta=dict(meta or {}))

    # ---------------------------------------------------------------------------------------- scoring
    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        raise NotImplementedError

    def judge_messages(self, row: Mapping[str, Any], output: str) -> list[dict[str, str]]:
        """The chat messages asking an LLM judge to score `output` (judge-scored items only)."""
        raise NotImplementedError(f"{self.name}: no judge-scored items")

    def judge_verdict(self, row: Mapping[str, Any], reply: str) -> tuple[float | None, str]:
        """(score in [0, 1], or None when the reply cannot be read; what was read) from a judge's reply."""
        raise NotImplementedError(f"{self.name}: no judge-scored items")

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError


BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark")


# ------------------------------------------------------------------------------------------- limits
def check_row_limits(row: Row, limits: InputLimits) -> None:
    """BadRow when a row is nested deeper than `max_depth` (checked before any adapter walks it)."""
    if json_depth(row, limits.max_depth) > limits.max_depth:
        raise BadRow(f"nested deeper than max_depth={limits.max_depth}")


def check_item_limits(item: Item, limits: InputLimits) -> None:
    """BadRow naming the field and the limit's key when an item's question is too long to tokenise
    (`max_prompt_chars`) or has too many options (`max_options`) -- the checks `read_records` makes, for
    every adapter however it builds its record."""
    too_long = prompt_chars_problem(item.record.problem, item.record.options, limits)
    if too_long:
        raise BadRow(too_long, "problem")
    if len(item.record.options) > limits.max_options:
        raise BadRow(f"{len(item.record.options)} options, more than max_options={limits.max_options}", "options")


# ------------------------------------------------------------------------------------- record helpers
def lettered(options: Sequence[str]) -> list[str]:
    """Options as "A. text" strings; options that already carry their letters are kept as they are."""
    opts = [str(o).strip() for o in options]
    if all(o.startswith(f"{LETTERS[i]}.") for i, o in enumerate(opts)):
        return opts
    return [f"{LETTERS[i]}. {o}" for i, o in enumerate(opts)]


def require(row: Row, keys: Sequence[str]) -> None:
    """Raise `BadRow` naming the keys missing (or None) in `row`."""
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        raise BadRow(f"missing field(s) {missing}", *missing)


def bad_entry(file: Path, index: int, item_id: str | int | None, reason: str) -> str:
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
                    except RecursionError:
                        raise ValueError(f"{path}: line {n} is nested too deep to parse (max_depth)") from None
        return rows
    if suffix == ".json":
        obj = read_json(path)
        if not isinstance(obj, list):
            raise ValueError(f"{path}: expected a JSON list of questions, got {type(obj).__name__}")
        return obj
    raise ValueError(f"{path}: unsupported file type {suffix!r} (expected .parquet, .json or .jsonl)")


def read_json(path: Path) -> Any:   # parsed JSON: any of its types
    """The parsed content of a JSON file; ValueError naming the file when it is not JSON."""
    with Path(path).open(encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
        except RecursionError:
            raise ValueError(f"{path}: nested too deep to parse (max_depth)") from None


def is_bookkeeping(path: Path, root: Path) -> bool:
    """`videor1 data download`'s `download.json`, or a file under a hidden folder (huggingface_hub's
    `.cache/`): never benchmark questions."""
    rel = path.relative_to(root).parts
    return path.name == "download.json" or any(part.startswith(".") for part in rel[:-1])


def data_files(data: Path, patterns: Iterable[str]) -> list[Path]:
    """`data` itself if it is a file, else the files under it matching any pattern (sorted), leaving out
    download bookkeeping (`is_bookkeeping`)."""
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise FileNotFoundError(f"no such benchmark file or directory: {data}")
    found = sorted({p for pat in patterns for p in data.rglob(pat) if p.is_file() and not is_bookkeeping(p, data)})
    if not found:
        raise FileNotFoundError(f"{data}: no files matching {', '.join(patterns)}")
    return found
