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
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from videor1.evaluate.benchmarks.base import LETTERS, Benchmark, LoadResult, bad_entry, data_files, make_item, read_json, read_rows
from videor1.evaluate.scoring import accuracy_summary, answer_span, group_scores, leading_letter, option_text

FORMATS = ("multi-choice", "yes_no", "caption_matching", "captioning")
_OPTION_LINE = re.compile(r"^\s*(?:(?:caption|option|sentence)\s+)?([A-H])\s*[\.:\)]\s*(.+?)\s*$", re.IGNORECASE)


def format_of(file: Path) -> str | None:
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


def iter_entries(file: Path) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(video_id, dimension, entry) for both the nested release JSON and row tables."""
    if file.suffix.lower() == ".json":
        obj = read_json(file)
        if isinstance(obj, Mapping):
            for video_id, dims in obj.items():
                for dim, entries in (dims or {}).items():
                    for entry in entries if isinstance(entries, list) else [entries]:
                        yield str(video_id), str(dim), dict(entry)
            return
    for row in read_rows(file):
        yield str(row.get("video_id")), str(row.get("dim") or row.get("dimension")), dict(row)


def to_choice(fmt: str, entry: Mapping[str, Any]) -> tuple[str, list[str], str]:
    """(problem, options, truth letter) of one entry cast to multiple choice; ValueError if it cannot be."""
    if fmt == "yes_no":
        truth = str(entry["answer"]).strip().lower()
        if truth not in ("yes", "no"):
            raise ValueError(f"yes_no answer {entry['answer']!r} is neither yes nor no")
        return str(entry["question"]).strip(), ["A. yes", "B. no"], "A" if truth == "yes" else "B"
    question, answer = (entry.get("mc_question"), entry.get("mc_answer")) if fmt == "captioning" else (
        entry.get("question"), entry.get("answer"))
    if question is None or answer is None:
        raise ValueError("missing question / answer" + (" (mc_question / mc_answer)" if fmt == "captioning" else ""))
    problem, options = split_options(str(question))
    m = _OPTION_LINE.match(str(answer))
    if len(options) < 2 or not m or m.group(1).upper() not in LETTERS[: len(options)]:
        raise ValueError(f"cannot read options / answer letter from {str(answer)[:60]!r}")
    return problem, options, m.group(1).upper()


class TempCompass(Benchmark):
    name = "tempcompass"
    description = "TempCompass: temporal perception; multi-choice, yes/no, caption matching, captioning"
    headline = "accuracy over all formats (also by format and dimension)"

    def load(self, data: Path, media_root: Path | None = None) -> LoadResult:
        result = LoadResult(items=[])
        for file in data_files(data, ["*.json", "*.jsonl", "*.parquet"]):
            fmt = format_of(file)
            if fmt is None:
                result.problems.append(f"file {file}: format not in its name ({', '.join(FORMATS)}); skipped")
                continue
            for i, (video_id, dim, entry) in enumerate(iter_entries(file)):
                item_id = f"{fmt}/{video_id}/{dim}/{i}"
                try:
                    problem, options, truth = to_choice(fmt, entry)
                    result.items.append(make_item(
                        item_id=item_id, problem=problem, problem_type="multiple choice", options=options,
                        answer=truth, file=file, index=i, source=self.name, path=f"{video_id}.mp4",
                        meta={"format": fmt if fmt != "captioning" else "captioning (as multi-choice)",
                              "dimension": dim}))
                except (KeyError, ValueError) as exc:
                    result.problems.append(bad_entry(file, i, item_id, str(exc)))
        return result

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
