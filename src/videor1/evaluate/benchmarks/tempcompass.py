"""`tempcompass`: TempCompass (llyx97/TempCompass), temporal perception in four task formats.

Files: the release's per-format question files, `multi-choice.json`, `yes_no.json`,
`caption_matching.json`, `captioning.json` (pass the folder or one file; the format is read from the
file name or its folder). Two layouts are read: the original nested JSON `{video_id: {dimension:
[{"question", "answer", ...}]}}`, and row tables (the lmms-lab parquet / JSONL) with `video_id`,
`question`, `answer`, `dim` (and `mc_question`, `mc_answer` for captioning). Dimensions: action, speed,
direction, order, attribute_change. Media: `<media_root>/<video_id>.mp4` (the release's `videos/`).

Like the reference, every format is cast to one record format (multiple choice) so one prompt serves:
* multi-choice: the "A. ..." lines of the question become the options; the answer's letter is the truth.
* yes_no: options "A. yes" / "B. no"; the official rule (the answer's yes/no) also accepts the letter.
* caption_matching: the "Caption A: ..." lines become the options.
* captioning: officially an LLM judge reads the caption and answers `mc_question`; without a judge we
  ask `mc_question` directly as multiple choice. Its numbers are therefore not the official captioning
  numbers, and the report labels the format `captioning (as multi-choice)`.
Official scoring: TempCompass's matching rules (exact answer, a leading letter, yes/no); answers they
cannot match go to an LLM judge officially and score 0 here. Aggregation: accuracy by format and by
dimension; the headline is the item-level accuracy over all formats present.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from videor1.evaluate.benchmarks.base import BadFile, BadRow, Benchmark, Item, Row, RowSource, read_json, read_rows, require
from videor1.evaluate.scoring import LETTERS, accuracy_summary, answer_span, group_scores, leading_letter, option_text

FORMATS = ("multi-choice", "yes_no", "caption_matching", "captioning")
_OPTION_LINE = re.compile(r"^\s*(?:(?:caption|option|sentence)\s+)?([A-H])\s*[\.:\)]\s*(.+?)\s*$", re.IGNORECASE)


def format_of(file: Path) -> str | None:
    """The question format a file holds, read from its name or a folder's; None when none is named."""
    for part in reversed([p.lower().replace("-", "_") for p in file.with_suffix("").parts]):
        for fmt in ("caption_matching", "captioning", "yes_no", "multi_choice"):
            if fmt in part:
                return "multi-choice" if fmt == "multi_choice" else fmt
    return None


def split_options(question: str) -> tuple[str, list[str]]:
    """Question text without its option lines, and the options as "A. text"."""
    stem, options = [], []
    for line in question.splitlines():
        m = _OPTION_LINE.match(line)
        if m and m.group(1).upper() == LETTERS[len(options)]:
            options.append(f"{m.group(1).upper()}. {m.group(2)}")
        elif not options:
            stem.append(line)
    return "\n".join(stem).strip(), options


def iter_entries(file: Path) -> Iterator[Row]:
    """The entries of the nested release JSON or of a row table, each with its `video_id` and `dim`."""
    if file.suffix.lower() == ".json":
        obj = read_json(file)
        if isinstance(obj, Mapping):
            for video_id, dims in obj.items():
                for dim, entries in (dims or {}).items():
                    for entry in entries if isinstance(entries, list) else [entries]:
                        yield {**dict(entry), "video_id": str(video_id), "dim": str(dim)}
            return
    for row in read_rows(file):
        yield {**row, "video_id": str(row.get("video_id")), "dim": str(row.get("dim") or row.get("dimension"))}


def to_choice(fmt: str, entry: Row) -> tuple[str, list[str], str]:
    """(problem, options, truth letter) of one entry cast to multiple choice; BadRow if it cannot be."""
    if fmt == "yes_no":
        require(entry, ["answer", "question"])
        truth = str(entry["answer"]).strip().lower()
        if truth not in ("yes", "no"):
            raise BadRow(f"yes_no answer {entry['answer']!r} is neither yes nor no", "answer")
        return str(entry["question"]).strip(), ["A. yes", "B. no"], "A" if truth == "yes" else "B"
    keys = ("mc_question", "mc_answer") if fmt == "captioning" else ("question", "answer")
    question, answer = entry.get(keys[0]), entry.get(keys[1])
    if question is None or answer is None:
        raise BadRow("missing question / answer" + (" (mc_question / mc_answer)" if fmt == "captioning" else ""),
                     *keys)
    problem, options = split_options(str(question))
    m = _OPTION_LINE.match(str(answer))
    if len(options) < 2 or not m or m.group(1).upper() not in LETTERS[: len(options)]:
        raise BadRow(f"cannot read options / answer letter from {str(answer)[:60]!r}", *keys)
    return problem, options, m.group(1).upper()


class TempCompass(Benchmark):
    name = "tempcompass"
    description = "TempCompass: temporal perception; multi-choice, yes/no, caption matching, captioning"
    headline = "accuracy over all formats (also by format and dimension)"
    patterns = ("*.json", "*.jsonl", "*.parquet")

    def rows(self, file: Path) -> Iterator[Row]:
        if format_of(file) is None:
            raise BadFile(f"file {file}: format not in its name ({', '.join(FORMATS)}); skipped")
        return iter_entries(file)

    def row_id(self, row: Row, file: Path, index: int) -> str:
        return f"{format_of(file)}/{row['video_id']}/{row['dim']}/{index}"

    def row_to_item(self, row: Row, source: RowSource) -> Item:
        fmt = format_of(source.file)
        problem, options, truth = to_choice(fmt, row)
        return self.item(
            source, problem=problem, problem_type="multiple choice", options=options, answer=truth,
            path=f"{row['video_id']}.mp4",
            meta={"format": fmt if fmt != "captioning" else "captioning (as multi-choice)", "dimension": row["dim"]})

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        span = answer_span(output)
        options = row.get("options") or []
        truth = str(row["answer"])
        if row["meta"].get("format") == "yes_no":
            word = re.sub(r"[^a-z]", "", (span.split() or [""])[0].lower())
            said = {"yes": "A", "no": "B"}.get(word) or leading_letter(span, "AB")
            return 1.0 if said == truth else 0.0
        truth_option = options[LETTERS.index(truth)] if truth in LETTERS[: len(options)] else ""
        if truth_option and span.strip().lower() in {option_text(truth_option).lower(), truth_option.lower()}:
            return 1.0   # the whole answer written out ("B. fast" or "fast")
        said = leading_letter(re.sub(r"(?i)^\s*(caption|option|sentence)\s+", "", span), LETTERS[: len(options)])
        return 1.0 if said == truth else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = accuracy_summary(rows, {"format": "format", "dimension": "dimension"})
        out["breakdowns"]["format x dimension"] = group_scores(
            rows, lambda r: f"{r['meta'].get('format')} / {r['meta'].get('dimension')}")
        return out
