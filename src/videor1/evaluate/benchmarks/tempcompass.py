"""`tempcompass`: TempCompass (llyx97/TempCompass), temporal perception in four task formats.

Files: the release's per-format question files, `multi-choice.json`, `yes_no.json`,
`caption_matching.json`, `captioning.json` (pass the folder or one file; the format is read from the
file name or its folder). Two layouts are read: the original nested JSON `{video_id: {dimension:
[{"question", "answer", ...}]}}`, and row tables (the lmms-lab parquet / JSONL) with `video_id`,
`question`, `answer`, `dim` (and `mc_question`, `mc_answer` for captioning). Dimensions: action, speed,
direction, order, attribute_change. Media: `<media_root>/<video_id>.mp4` (the release's `videos/`).

Three formats are cast to one record format (multiple choice) so one prompt serves:
* multi-choice: the "A. ..." lines of the question become the options; the answer's letter is the truth.
* yes_no: options "A. yes" / "B. no"; the truth is the answer word.
* caption_matching: the "Caption A: ..." / "Sentence A: ..." / "Option 1: ..." lines become options A, B, ...
The original question and answer lines are kept in the item's meta for the official rules.
* captioning (officially 2,004 of the 7,540 questions): an LLM judge reads the model's caption and answers a
  multi-choice question of the same video and dimension (`eval_captioning.py`; lmms-lab's rows repeat the
  caption question once per such `mc_question`, with its `mc_answer`). Each row is a `free-form` item asking
  for the caption (its reference-protocol answer is the `mc_answer` line, a placeholder), scored with
  `--judge` by `videor1.evaluate.judge` (the judge must answer with the truth's letter, and name one option
  only). Without a judge every captioning question is listed as not evaluated, with that reason, never asked
  as a duplicate of the multi-choice questions. A nested-JSON captioning entry has no `mc_question` and is
  listed as unusable (use the lmms-lab rows).
Official scoring, on the answer span: TempCompass's own rules (multi-choice: the answer line, a bare letter,
or "X." / "X)"; yes_no: starts with yes / no; caption_matching: `eval_rule`, where a bare letter of our
options is first read as the original label, e.g. "Option 1", since our prompt shows letters). Answers the
rules cannot match go to an LLM judge officially and score 0 here. Aggregation: accuracy by format and by
dimension; the headline is the item-level accuracy over all formats present.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from videor1.evaluate.benchmarks.base import BadFile, BadRow, Benchmark, Item, Row, RowSource, read_json, read_rows, require
from videor1.evaluate.judge import tempcompass_caption_messages, tempcompass_caption_verdict
from videor1.evaluate.scoring import (LETTERS, accuracy_summary, answer_span, group_scores, leading_letter,
                                      tempcompass_caption_matching, tempcompass_multi_choice, tempcompass_yes_no)

FORMATS = ("multi-choice", "yes_no", "caption_matching", "captioning")
DIMENSIONS = ("action", "speed", "direction", "order", "attribute_change")
_OPTION_LINE = re.compile(r"^\s*(?:(?:caption|option|sentence)\s+)?([A-H]|[1-8])\s*[\.:\)]\s*(.+?)\s*$",
                          re.IGNORECASE)


def option_index(label: str) -> int:
    """0 for "A" / "1", 1 for "B" / "2", ..."""
    return int(label) - 1 if label.isdigit() else LETTERS.index(label.upper())


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
        if m and option_index(m.group(1)) == len(options):
            options.append(f"{LETTERS[len(options)]}. {m.group(2)}")
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
    question, answer = entry.get("question"), entry.get("answer")
    if question is None or answer is None:
        raise BadRow("missing question / answer", "question", "answer")
    problem, options = split_options(str(question))
    m = _OPTION_LINE.match(str(answer))
    if len(options) < 2 or not m or option_index(m.group(1)) >= len(options):
        raise BadRow(f"cannot read options / answer letter from {str(answer)[:60]!r}", "question", "answer")
    return problem, options, LETTERS[option_index(m.group(1))]


def original_label(span: str, question: str) -> str:
    """A bare letter of our options ("B", "B.") as the release's own label of that option ("Option 2")."""
    letter = leading_letter(span, LETTERS[:8]) if len(span.strip()) <= 3 else ""
    lines = question.split("\n")[1:]
    if not letter or LETTERS.index(letter) >= len(lines):
        return span
    return lines[LETTERS.index(letter)].split(": ")[0]


class TempCompass(Benchmark):
    name = "tempcompass"
    description = "TempCompass: temporal perception; multi-choice, yes/no, caption matching, captioning"
    headline = "accuracy over all formats (also by format and dimension)"
    judge_source = "TempCompass eval_captioning.py"
    patterns = ("*.json", "*.jsonl", "*.parquet")

    def rows(self, file: Path) -> Iterator[Row]:
        if format_of(file) is None:
            raise BadFile(f"file {file}: format not in its name ({', '.join(FORMATS)}); skipped")
        return iter_entries(file)

    def row_id(self, row: Row, file: Path, index: int) -> str:
        return f"{format_of(file)}/{row['video_id']}/{row['dim']}/{index}"

    def row_to_item(self, row: Row, source: RowSource) -> Item:
        fmt = format_of(source.file)
        if fmt == "captioning":
            return self.caption_item(row, source)
        problem, options, truth = to_choice(fmt, row)
        return self.item(
            source, problem=problem, problem_type="multiple choice", options=options, answer=truth,
            path=f"{row['video_id']}.mp4",
            meta={"format": fmt, "dimension": row["dim"], "question_raw": str(row.get("question")),
                  "answer_raw": str(row.get("answer")).strip()})

    def caption_item(self, row: Row, source: RowSource) -> Item:
        """A captioning row as a judge-scored free-form item (see the module doc)."""
        require(row, ["question"])
        if not row.get("mc_question") or not row.get("mc_answer"):
            raise BadRow("captioning entry without mc_question / mc_answer (the judge's question); use the "
                         "lmms-lab rows", "mc_question")
        return self.item(
            source, problem=str(row["question"]).strip(), problem_type="free-form", answer=row["mc_answer"],
            path=f"{row['video_id']}.mp4",
            meta={"format": "captioning", "dimension": row["dim"], "judge": "TempCompass captioning",
                  "mc_question": str(row["mc_question"]), "mc_answer": str(row["mc_answer"]).strip()})

    def judge_messages(self, row: Mapping[str, Any], output: str) -> list[dict[str, str]]:
        return tempcompass_caption_messages(answer_span(output), row["meta"]["mc_question"])

    def judge_verdict(self, row: Mapping[str, Any], reply: str) -> tuple[float | None, str]:
        return tempcompass_caption_verdict(reply, row["meta"]["mc_answer"])

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        span = answer_span(output)
        meta = row["meta"]
        if meta.get("judge"):
            return 0.0   # scored by the judge (videor1.evaluate.judge), 0 until then
        fmt, question, answer = meta.get("format"), meta.get("question_raw", ""), meta.get("answer_raw", "")
        if fmt == "yes_no":
            rating = tempcompass_yes_no(span, answer.lower())
        elif fmt == "caption_matching":
            rating = tempcompass_caption_matching(span, question, answer)
            if rating is None:
                rating = tempcompass_caption_matching(original_label(span, question), question, answer)
        else:
            rating = tempcompass_multi_choice(span, answer)
        return rating or 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = accuracy_summary(rows, {"format": "format", "dimension": "dimension"})
        out["breakdowns"]["format x dimension"] = group_scores(
            rows, lambda r: f"{r['meta'].get('format')} / {r['meta'].get('dimension')}")
        return out
