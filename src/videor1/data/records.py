"""The Video-R1 record: load JSON / JSONL, validate every field, resolve media paths safely.

A dataset is a JSON list of records (the reference's form) or JSONL (one record a line; this project's
addition). The format is chosen by content: a file whose first non-blank character is ``[`` is a JSON list,
anything else is read as JSONL, whatever its suffix.

Where we depart from the reference:

* Every field is validated up front (the reference trusted the data and failed, or silently substituted a
  fallback video, deep inside training). A bad record becomes a :class:`RecordError` that names the record id,
  the file, the field (and the line, for JSONL); :func:`read_records` collects them and never raises for a bad
  record, so `videor1 data check` can list them all.
* Multiple-choice options must be ``"A. text"`` (or ``"A) text"``, which Video-R1-data also uses; kept verbatim in
  the prompt, as the reference does), ``"B. text"``, ... with letters in order, and the ground-truth answer must
  be one of those letters; numerical / regression answers must parse as finite numbers after their commas are
  dropped (the reference's ``normalize_number``: ``<answer>1,200</answer>`` is 1200; its reward also counts the
  comma as a decimal marker, see ``videor1.rewards``).
* Media paths are resolved against a media root and may not escape it (absolute paths, ``..``, or symlinks that
  point outside are refused). The reference's ``./dir/x.mp4`` form is accepted.
* Fields we do not know are kept in ``Record.extra`` and written back by :meth:`Record.to_dict`.

Whole-file problems (missing, unreadable, not UTF-8, a broken JSON list) raise :class:`DatasetFileError`, a
subclass of :class:`RecordError` with no record id.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from videor1.atomic import atomic_write_text
from videor1.limits import InputLimits, current_limits, json_depth, prompt_chars_problem

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")
DATA_TYPES = ("image", "video")

KNOWN_FIELDS = ("problem_id", "problem", "data_type", "problem_type", "options", "solution", "path",
                "data_source", "process", "temporal")
NUMERIC_TYPES = ("numerical", "regression")

_ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
_OPTION_RE = re.compile(r"^([A-Z])[.)]\s*(\S.*)$", re.DOTALL)


class RecordError(ValueError):
    """A bad record: names the record id, the file and the field (and the JSONL line when known)."""

    def __init__(self, reason: str, *, record_id: Any = None, file: Any = None, field: str | None = None,
                 line: int | None = None):
        self.reason = reason
        self.record_id = record_id
        self.file = str(file) if file is not None else None
        self.field = field
        self.line = line
        where = []
        if self.file is not None:
            where.append(f"file {self.file}" + (f" line {line}" if line is not None else ""))
        if record_id is not None:
            where.append(f"record {record_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class DatasetFileError(RecordError):
    """The dataset file as a whole cannot be used (missing, unreadable, not a JSON list / JSONL)."""


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

    def to_dict(self) -> dict[str, Any]:
        """The Video-R1 JSON form: known fields in the reference's order, optional ones only when set,
        then the extra fields (which never override a known field)."""
        out: dict[str, Any] = {
            "problem_id": self.problem_id,
            "problem": self.problem,
            "data_type": self.data_type,
            "problem_type": self.problem_type,
            "options": list(self.options),
            "solution": self.solution,
            "path": self.path,
        }
        for name in ("data_source", "process", "temporal"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for key, value in self.extra.items():
            if key not in KNOWN_FIELDS:
                out[key] = value
        return out

    @property
    def answer(self) -> str:
        """The ground-truth answer: the text inside ``<answer>...</answer>`` of ``solution``, stripped."""
        match = _ANSWER_RE.search(self.solution)
        return match.group(1) if match else ""


# ------------------------------------------------------------------------------------------ parsing
def _record_label(obj: Mapping[str, Any], index: int) -> Any:
    pid = obj.get("problem_id")
    if isinstance(pid, (int, str)) and not isinstance(pid, bool) and pid != "":
        return pid
    return f"#{index}"


def _check_sizes(obj: Mapping[str, Any], limits: InputLimits, err) -> None:
    """Option count and question length within the limits (before anything is tokenised)."""
    options = obj.get("options")
    if isinstance(options, list) and len(options) > limits.max_options:
        raise err("options", f"{len(options)} options, more than max_options={limits.max_options}")
    too_long = prompt_chars_problem(str(obj.get("problem") or ""), options if isinstance(options, list) else (),
                                    limits)
    if too_long:
        raise err("problem", too_long)


def _check_options(options: Any, problem_type: str, err) -> tuple[str, ...]:
    if options is None:
        options = []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise err("options", f"must be a list of strings, got {options!r:.80}")
    if problem_type != "multiple choice":
        return tuple(options)
    if not options:
        raise err("options", "multiple choice needs a non-empty list of options")
    for i, opt in enumerate(options):
        match = _OPTION_RE.match(opt.strip())
        expected = chr(ord("A") + i)
        if match is None or match.group(1) != expected:
            raise err("options", f"option {i + 1} must look like '{expected}. text' or '{expected}) text', "
                      f"got {opt!r:.80}")
    return tuple(options)


def _check_solution(solution: Any, problem_type: str, options: tuple[str, ...], err) -> str:
    if not isinstance(solution, str):
        raise err("solution", f"must be a string, got {type(solution).__name__}")
    match = _ANSWER_RE.search(solution)
    if match is None:
        raise err("solution", f"has no <answer>...</answer>: {solution!r:.80}")
    answer = match.group(1)
    if problem_type == "multiple choice":
        letters = [chr(ord("A") + i) for i in range(len(options))]
        if answer not in letters:
            raise err("solution", f"answer {answer!r:.40} is not one of the option letters {letters}")
    elif problem_type in NUMERIC_TYPES:
        try:
            value = float(answer.replace(",", ""))
        except ValueError:
            raise err("solution", f"{problem_type} answer {answer!r:.40} is not a number") from None
        if not math.isfinite(value):
            raise err("solution", f"{problem_type} answer {answer!r:.40} is not a finite number")
    return solution


def _check_choice(obj: Mapping[str, Any], name: str, allowed: tuple[str, ...], err) -> str:
    value = obj.get(name)
    if value not in allowed:
        raise err(name, f"must be one of {list(allowed)}, got {value!r:.60}")
    return value


def _check_optional(obj: Mapping[str, Any], err) -> dict[str, Any]:
    data_source = obj.get("data_source")
    if data_source is not None and not isinstance(data_source, str):
        raise err("data_source", f"must be a string, got {type(data_source).__name__}")
    process = obj.get("process")
    if isinstance(process, str) and not process.strip():
        process = None   # Video-R1-260k's RL rows and eval JSONs carry "process": "": no CoT (only SFT needs one)
    if process is not None and (not isinstance(process, str) or not _THINK_RE.search(process)):
        raise err("process", f"must contain <think>...</think>, got {process!r:.80}")
    temporal = obj.get("temporal")
    if temporal is not None and not isinstance(temporal, bool):
        raise err("temporal", f"must be true or false, got {temporal!r:.40}")
    return {"data_source": data_source, "process": process, "temporal": temporal}


def parse_record(obj: dict, *, file: str, index: int, line: int | None = None,
                 limits: InputLimits | None = None) -> Record:
    """Validate one raw record (a dict from JSON) and build a :class:`Record`; raise :class:`RecordError`.

    ``index`` is the record's position in the file (0-based); ``line`` its JSONL line number when known;
    ``limits``: the size checks (options, question length), by default the limits in force.
    """
    if not isinstance(obj, dict):
        raise RecordError(f"a record must be a JSON object, got {type(obj).__name__}",
                          record_id=f"#{index}", file=file, line=line)
    label = _record_label(obj, index)

    def err(name: str, reason: str) -> RecordError:
        return RecordError(reason, record_id=label, file=file, field=name, line=line)

    pid = obj.get("problem_id")
    if pid is None or isinstance(pid, bool) or not isinstance(pid, (int, str)) or pid == "":
        raise err("problem_id", f"must be a non-empty string or an integer, got {pid!r:.40}")
    problem = obj.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise err("problem", "must be a non-empty string")
    _check_sizes(obj, limits or current_limits(), err)
    data_type = _check_choice(obj, "data_type", DATA_TYPES, err)
    problem_type = _check_choice(obj, "problem_type", PROBLEM_TYPES, err)
    options = _check_options(obj.get("options"), problem_type, err)
    solution = _check_solution(obj.get("solution"), problem_type, options, err)
    path = obj.get("path")
    if not isinstance(path, str) or not path.strip():
        raise err("path", "must be a non-empty string")
    optional = _check_optional(obj, err)
    extra = {k: v for k, v in obj.items() if k not in KNOWN_FIELDS}
    return Record(problem_id=pid, problem=problem, data_type=data_type, problem_type=problem_type,
                  options=options, solution=solution, path=path, extra=extra, **optional)


# ------------------------------------------------------------------------------------------ paths
def resolve_media_path(media_root: str | os.PathLike, rel_path: str, *, record_id: Any = None,
                       file: Any = None) -> Path:
    """``media_root / rel_path``, resolved; refuse anything that lands outside the root.

    Absolute paths, ``..`` escapes and symlinks pointing outside the root raise :class:`RecordError`
    (field ``path``). ``./x/y.mp4`` is accepted. The file need not exist (callers check that).
    """
    def err(reason: str) -> RecordError:
        return RecordError(reason, record_id=record_id, file=file, field="path")

    if not isinstance(rel_path, str) or not rel_path.strip():
        raise err(f"must be a non-empty relative path, got {rel_path!r:.60}")
    if os.path.isabs(rel_path) or rel_path.startswith(("/", "\\")) or Path(rel_path).drive:
        raise err(f"absolute media path {rel_path!r} is refused (paths are relative to the media root)")
    root = Path(media_root).resolve()
    target = (root / rel_path).resolve()
    if not target.is_relative_to(root):
        raise err(f"media path {rel_path!r} escapes the media root {str(root)!r}")
    return target


# ------------------------------------------------------------------------------------------ reading
def _read_text(path: Path, limits: InputLimits) -> str:
    """The file's text (a UTF-8 byte-order mark is dropped); refused when it cannot hold records within
    the limits (`max_records` x `max_record_bytes`)."""
    try:
        size = path.stat().st_size
        if size > limits.max_records * limits.max_record_bytes:
            raise DatasetFileError(f"{size} bytes is more than max_records x max_record_bytes "
                                   f"({limits.max_records} x {limits.max_record_bytes}; see videor1.limits)",
                                   file=path)
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetFileError("no such dataset file", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFileError(f"cannot read the dataset file: {exc}", file=path) from None


def _loads(text: str) -> Any:
    """`json.loads`, with a document nested too deep for the parser reported as a ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep to parse (see max_depth in videor1.limits)") from None


def _item_problem(obj: Any, limits: InputLimits, nbytes: int | None) -> str | None:
    """Why a decoded record passes the limits (None when it does not)."""
    if nbytes is not None and nbytes > limits.max_record_bytes:
        return f"the record is {nbytes} bytes, more than max_record_bytes={limits.max_record_bytes}"
    if json_depth(obj, limits.max_depth) > limits.max_depth:
        return f"nested deeper than max_depth={limits.max_depth}"
    return None


def _list_items(text: str, path: Path, limits: InputLimits) -> list[tuple[int | None, Any, str | None]]:
    try:
        data = _loads(text)
    except ValueError as exc:
        raise DatasetFileError(f"not a valid JSON list: {exc}", file=path) from None
    if not isinstance(data, list):
        raise DatasetFileError("top level must be a JSON list of records", file=path)
    if len(data) > limits.max_records:
        raise DatasetFileError(f"{len(data)} records, more than max_records={limits.max_records}", file=path)
    return [(None, obj, _item_problem(obj, limits, None)) for obj in data]


def _jsonl_item(number: int, line: str, limits: InputLimits) -> tuple[int | None, Any, str | None]:
    nbytes = len(line.encode("utf-8"))
    if nbytes > limits.max_record_bytes:  # refused before parsing: a 50 MB line is never decoded
        return number, None, _item_problem(None, limits, nbytes)
    try:
        obj = _loads(line)
    except ValueError as exc:
        return number, None, f"invalid JSON: {exc}"
    return number, obj, _item_problem(obj, limits, None)


def _raw_items(path: Path, limits: InputLimits) -> list[tuple[int | None, Any, str | None]]:
    """(JSONL line or None, decoded object or None, error or None) for every record in the file."""
    text = _read_text(path, limits)
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _list_items(text, path, limits)
    items = [_jsonl_item(number, line, limits) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip()]
    if len(items) > limits.max_records:
        raise DatasetFileError(f"{len(items)} records, more than max_records={limits.max_records}", file=path)
    if stripped and all(obj is None and "invalid JSON" in (why or "") for _, obj, why in items):
        raise DatasetFileError("neither a JSON list nor JSONL (no line parses as JSON)", file=path)
    return items


def _check_media(record: Record, media_root: str | os.PathLike, file: str) -> None:
    target = resolve_media_path(media_root, record.path, record_id=record.problem_id, file=file)
    if not target.is_file():
        raise RecordError(f"media file not found: {target}", record_id=record.problem_id, file=file,
                          field="path")


def read_records(path: str | os.PathLike, media_root: str | os.PathLike | None = None, *,
                 limits: InputLimits | None = None) -> tuple[list[Record], list[RecordError]]:
    """All good records and one :class:`RecordError` per bad one, in file order.

    Never raises for a bad record or a bad JSONL line; raises :class:`DatasetFileError` when the file as a
    whole is unusable. With ``media_root``, each record's media path must stay inside the root and exist.
    """
    path = Path(path)
    file = str(path)
    good: list[Record] = []
    errors: list[RecordError] = []
    limits = limits or current_limits()
    for index, (line, obj, json_error) in enumerate(_raw_items(path, limits)):
        try:
            if json_error is not None:
                label = _record_label(obj, index) if isinstance(obj, dict) else f"#{index}"
                raise RecordError(json_error, record_id=label, file=file, line=line)
            record = parse_record(obj, file=file, index=index, line=line, limits=limits)
            if media_root is not None:
                _check_media(record, media_root, file)
        except RecordError as exc:
            if exc.line is None and line is not None:
                exc.line = line
            errors.append(exc)
            continue
        good.append(record)
    return good, errors


def load_records(path: str | os.PathLike, media_root: str | os.PathLike | None = None, *,
                 limits: InputLimits | None = None) -> list[Record]:
    """Every record of the file; raise the first :class:`RecordError` if any record is bad."""
    good, errors = read_records(path, media_root, limits=limits)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.args = (f"{first.args[0]} (and {len(errors) - 1} more bad records; run "
                          f"`videor1 data check` to list them)",)
        raise first
    return good


# ------------------------------------------------------------------------------------------ writing
def _as_dict(item: Record | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, Record):
        return item.to_dict()
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"write_records takes Records or dicts, got {type(item).__name__}")


def write_records(path: str | os.PathLike, records: Iterable[Record | Mapping[str, Any]]) -> Path:
    """Write records atomically (temporary file, then ``os.replace``): ``.json`` as an indented JSON list,
    ``.jsonl`` as one record a line. Returns the path."""
    path = Path(path)
    rows = [_as_dict(r) for r in records]
    if path.suffix == ".json":
        text = json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    elif path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        raise ValueError(f"{path}: dataset files end in .json or .jsonl")
    return atomic_write_text(path, text)
