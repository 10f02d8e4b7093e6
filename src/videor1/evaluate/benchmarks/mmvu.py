"""`mmvu`: MMVU (yale-nlp/MMVU), expert-level video understanding, validation split: 625 multiple-choice
questions, scored by rule, and open-ended ones, scored by an LLM judge with `--judge`.

File: the release's `validation.json`, a list of `{"id", "question", "choices": {"A": ..., "E": ...},
"answer": <letter>, "question_type": "multiple-choice" | "open-ended", "video": <URL or path>,
"metadata": {"subject": ..., ...}}`. Video-R1 evaluates the `multiple-choice` questions. The open-ended
ones are `free-form` items scored by an LLM judge (`videor1.evaluate.judge`: question, reference answer and
the model's answer span in; "1" or "0" out, as MMVU's own scorer has GPT-4o judge them); without `--judge`
each is listed as not evaluated, with that reason. A `video_path` field, where an export has
one, is used as is; otherwise the path is the part of `video` from `videos/` on (the URL
`.../resolve/main/videos/Art/1.mp4` gives `videos/Art/1.mp4`), relative to media_root (the release folder).

Official scoring: MMVU's own `acc_evaluation.py` has GPT-4o extract and judge every answer; the published
deterministic scorer is the lmms-eval `mmvu_val` task, whose multiple-choice branch is rule-based only (it
calls no judge for multiple choice). That rule is the official protocol here (`mmvu_choice_correct`, on the
answer span): the first standalone letter A-E, or the answer letter standing alone anywhere, or the answer's
choice text in the prediction, or the answer letter anywhere plus a 3+-letter word of its choice text. A
question whose answer is not the letter of a non-empty choice is listed at load (it could never score).
Aggregation: accuracy, also by subject and by discipline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from videor1.evaluate.benchmarks.base import BadRow, Benchmark, Item, Row, RowSource, require
from videor1.evaluate.judge import mmvu_open_messages, mmvu_open_verdict
from videor1.evaluate.scoring import (accuracy_summary, answer_span, group_scores, meta_key, mmvu_choice_correct,
                                      option_text)

DISCIPLINES = {
    "Science": ("Biology", "Chemistry", "Modern_Physics", "Astronomy", "Geography", "Materials_Science",
                "Neurobiology", "Electromagnetism", "Thermodynamics", "Mechanics"),
    "Engineering": ("Civil_Engineering", "Electrical_Engineering", "Mechanical_Engineering",
                    "Biomedical_Engineering", "Electronics_and_Communication", "Computer_Science"),
    "Healthcare": ("Clinical_Medicine", "Basic_Medicine", "Preventive_Medicine", "Pharmacy", "Dentistry"),
    "Humanities and Social Science": ("Art", "Literature", "History", "Law", "Economics", "Management"),
}
_DISCIPLINE_OF = {s: d for d, subjects in DISCIPLINES.items() for s in subjects}
_DISCIPLINE_OF_LOWER = {s.lower(): d for s, d in _DISCIPLINE_OF.items()}


def media_path(row: Row) -> str | None:
    if row.get("video_path"):
        return str(row["video_path"])
    video = str(row.get("video") or "")
    m = re.search(r"(videos/.+)$", video)
    if m:
        return m.group(1)
    return video if video and "://" not in video else None


def subject_of(row: Row, path: str) -> str | None:
    meta = row.get("metadata") or {}
    if isinstance(meta, Mapping) and meta.get("subject"):
        return str(meta["subject"])
    parts = path.split("/")
    return parts[-2] if len(parts) >= 2 else None


def discipline_of(subject: str | None) -> str:
    """The discipline of a subject, spelled with spaces ("Computer Science", the release) or underscores
    (the table); "unlisted subject" when the table does not know it (kept in the breakdown, not dropped)."""
    key = (subject or "").strip().replace(" ", "_")
    return _DISCIPLINE_OF.get(key) or _DISCIPLINE_OF_LOWER.get(key.lower(), "unlisted subject")


def choice_text(row: Mapping[str, Any], letter: str) -> str | None:
    """The text of the option lettered `letter` in a prediction row's "X. text" options; None if absent."""
    for option in row.get("options") or []:
        if str(option).startswith(f"{letter}."):
            return option_text(str(option))
    return None


class MMVU(Benchmark):
    name = "mmvu"
    description = "MMVU validation split: multiple choice (rule), open-ended (LLM judge, with --judge)"
    headline = "accuracy"
    judge_source = "MMVU's GPT-4o judge"
    patterns = ("validation.json", "*.jsonl", "*.parquet")

    def row_to_item(self, row: Row, source: RowSource) -> Item:
        path = media_path(row)
        if row.get("question_type") != "multiple-choice":
            return self.open_item(row, source, path)
        require(row, ["question", "choices", "answer"])
        if path is None:
            raise BadRow("missing field(s) ['video']", "video")
        choices = row["choices"]
        if not isinstance(choices, Mapping):
            raise BadRow("choices is not a letter -> text mapping", "choices")
        letters = sorted(str(k) for k, v in choices.items() if v not in (None, ""))
        if str(row["answer"]).strip() not in letters:
            raise BadRow(f"answer {row['answer']!r} is not the letter of a choice ({', '.join(letters)})", "answer")
        subject = subject_of(row, path)
        return self.item(
            source, problem=str(row["question"]), problem_type="multiple choice", answer=row["answer"], path=path,
            options=[f"{k}. {v}" for k, v in sorted(choices.items()) if v not in (None, "")],
            meta={"subject": subject, "discipline": discipline_of(subject), "question_type": "multiple-choice"})

    def open_item(self, row: Row, source: RowSource, path: str | None) -> Item:
        """An open-ended question as a judge-scored free-form item."""
        require(row, ["question", "answer"])
        if path is None:
            raise BadRow("missing field(s) ['video']", "video")
        subject = subject_of(row, path)
        return self.item(source, problem=str(row["question"]), problem_type="free-form", answer=row["answer"],
                         path=path, meta={"subject": subject, "discipline": discipline_of(subject),
                                          "judge": "MMVU open-ended", "question_type": "open-ended"})

    def judge_messages(self, row: Mapping[str, Any], output: str) -> list[dict[str, str]]:
        return mmvu_open_messages(str(row["problem"]), str(row["answer"]), answer_span(output))

    def judge_verdict(self, row: Mapping[str, Any], reply: str) -> tuple[float | None, str]:
        return mmvu_open_verdict(reply)

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        if (row.get("meta") or {}).get("judge"):
            return 0.0   # scored by the judge (videor1.evaluate.judge), 0 until then
        answer = str(row["answer"])
        return 1.0 if mmvu_choice_correct(answer_span(output), answer, choice_text(row, answer)) else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = accuracy_summary(rows, {"discipline": "discipline", "subject": "subject"})
        kinds = group_scores(rows, meta_key("question_type"))
        if kinds:   # the release's rows say; Video-R1's eval JSON does not
            out["breakdowns"]["question type"] = kinds
        return out
